"""Pipedrive responses → parsed bodies or errors: one table, one place (reference §6).

Pipedrive answers errors with an envelope (``{"success": false, "error": ..., "error_info": ...}``),
sometimes with a ``code`` (feature capping), and in one case not with JSON at all: the Cloudflare
HTML 403 sent to API tokens that ignore their 429s (§1.7). Every body shape is handled here, and
no message ever carries a token (Pipedrive does not echo them, and we never add request URLs).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import requests

from connector.errors import (
    ApiError,
    AuthError,
    BlockedError,
    BudgetExhaustedError,
    FatalError,
    InvalidTokenError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    ValidationError,
)

__all__ = [
    "DEFAULT_BURST_RETRY_AFTER",
    "STATUS_TO_ERROR",
    "classify_response",
    "error_for_response",
    "is_html",
    "next_utc_midnight",
]

SYSTEM = "pipedrive"

#: Seconds to wait after a burst 429 that carries no ``x-ratelimit-reset`` (the window is 2 s).
DEFAULT_BURST_RETRY_AFTER = 2.0

#: Status → (error class, fallback message). 401, 403 and 429 get refined by the body/headers.
STATUS_TO_ERROR: dict[int, tuple[type[ApiError], str]] = {
    400: (ValidationError, "request refused as invalid"),
    401: (InvalidTokenError, "unauthorized: token invalid or expired"),
    402: (FatalError, "company account not open (trial expired or payment missing)"),
    403: (PermissionDeniedError, "request not allowed"),
    404: (NotFoundError, "resource not found"),
    405: (FatalError, "method not allowed"),
    410: (NotFoundError, "resource gone"),
    415: (FatalError, "feature not enabled"),
    422: (ValidationError, "webhooks limit reached"),
    429: (RateLimitError, "rate limit exceeded"),
    500: (ServerError, "server error"),
    501: (FatalError, "functionality does not exist"),
    502: (ServerError, "bad gateway"),
    503: (ServerError, "service unavailable (maintenance?)"),
    504: (ServerError, "gateway timeout"),
}


def next_utc_midnight(now: dt.datetime | None = None) -> dt.datetime:
    """The next midnight UTC: the budget-reset guess when the limiter cannot tell."""
    now = now or dt.datetime.now(dt.UTC)
    return dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(0), tzinfo=dt.UTC)


def is_html(response: requests.Response) -> bool:
    """Whether the body is an HTML page (Cloudflare, or the web app answering a bad path)."""
    content_type = response.headers.get("content-type", "").lower()
    if "html" in content_type:
        return True
    head = response.content[:200].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _body(response: requests.Response) -> dict[str, Any] | None:
    try:
        value = response.json()
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _message(body: dict[str, Any] | None, fallback: str) -> str:
    if not body:
        return fallback
    parts: list[str] = []
    for key in ("error", "message"):
        value = body.get(key)
        if isinstance(value, str) and value:
            parts.append(value)
            break
    errors = body.get("errors")
    if isinstance(errors, dict) and errors:
        parts.append(json.dumps(errors, sort_keys=True)[:300])
    info = body.get("error_info")
    if isinstance(info, str) and info and "developers.pipedrive.com" not in info:
        parts.append(info)
    return "; ".join(parts) or fallback


def _float_header(response: requests.Response, name: str) -> float | None:
    raw = response.headers.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None


def error_for_response(
    response: requests.Response,
    *,
    auth_kind: str = "api_token",
    reset_at: Callable[[], dt.datetime | None] | None = None,
) -> ApiError:
    """The error a non-2xx Pipedrive response stands for.

    Args:
        response: the failed response.
        auth_kind: ``"api_token"`` or ``"oauth"``; a 401 is only refreshable with OAuth.
        reset_at: asked for the budget reset instant on a budget 429 (the limiter knows the
            server's day); next midnight UTC when absent or when it returns ``None``.
    """
    status = response.status_code
    body = _body(response)
    html = body is None and is_html(response)
    error_class, fallback = STATUS_TO_ERROR.get(
        status, (ServerError if status >= 500 else FatalError, f"unexpected status {status}")
    )
    message = _message(body, fallback)
    code = body.get("code") if body else None
    kwargs: dict[str, Any] = {
        "system": SYSTEM,
        "status": status,
        "code": code,
        "request_id": response.headers.get("x-request-id")
        or response.headers.get("x-correlation-id"),
        # An HTML page is noise in an audit row; a JSON envelope is worth keeping.
        "body": None if html else response.text,
    }
    if status == 401:
        if auth_kind == "oauth":
            return InvalidTokenError(message, **kwargs)
        return AuthError(f"API token rejected: {message}", **kwargs)
    if status == 403 and html:
        return BlockedError(
            "blocked by Cloudflare after ignored 429s (HTML 403); stop all traffic for this token",
            retry_after=None,
            **kwargs,
        )
    if status == 429:
        remaining = _float_header(response, "x-daily-ratelimit-token-remaining")
        if remaining is not None and remaining <= 0:
            when = reset_at() if reset_at else None
            return BudgetExhaustedError(
                f"daily token budget spent: {message}",
                reset_at=when or next_utc_midnight(),
                retry_after=None,
                **kwargs,
            )
        retry_after = _float_header(response, "x-ratelimit-reset")
        if retry_after is None:
            retry_after = _float_header(response, "retry-after")
        return RateLimitError(
            f"burst limit: {message}",
            retry_after=retry_after if retry_after is not None else DEFAULT_BURST_RETRY_AFTER,
            **kwargs,
        )
    if html and status == 404:
        message = "no such API path (the web app answered with HTML)"
    return error_class(message, **kwargs)


def classify_response(
    response: requests.Response,
    *,
    auth_kind: str = "api_token",
    reset_at: Callable[[], dt.datetime | None] | None = None,
) -> Any:
    """Return the parsed JSON body of a 2xx response, or raise the matching error.

    A 2xx whose body is not JSON (an HTML page served for an unknown path) or whose envelope
    says ``success: false`` is an error too.
    """
    if not 200 <= response.status_code < 300:
        raise error_for_response(response, auth_kind=auth_kind, reset_at=reset_at)
    if response.status_code == 204 or not response.content:
        return {}
    try:
        body = response.json()
    except ValueError:
        raise NotFoundError(
            "expected JSON but got another content type (wrong API path?)",
            system=SYSTEM,
            status=response.status_code,
        ) from None
    if isinstance(body, dict) and body.get("success") is False:
        raise ValidationError(
            _message(body, "request refused"),
            system=SYSTEM,
            status=response.status_code,
            code=body.get("code"),
            body=response.text,
        )
    return body
