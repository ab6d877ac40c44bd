"""How a Zoho Books answer becomes an error: one table of (HTTP status, Zoho ``code``) → class.

Reference §6: branch on the HTTP status first, then on Zoho's numeric ``code``. A ``None`` in
the table is a wildcard. Lookup order for a response: ``(status, code)``, ``(status, None)``,
``(status class, None)`` (e.g. ``(500, None)`` for every 5xx), ``(None, code)`` (for errors
reported in a 2xx envelope), then a default by status class.

A 401 means "refresh once, retry once" (:class:`InvalidTokenError`); the same answer for a
token that was just refreshed is a missing scope (:class:`PermissionDeniedError`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import requests

from connector.errors import (
    ApiError,
    BudgetExhaustedError,
    ConcurrencyLimitError,
    InvalidTokenError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    ValidationError,
    WrongOrganizationError,
)

__all__ = [
    "CODE_CONCURRENCY",
    "CODE_DAILY_LIMIT",
    "CODE_INTERNAL",
    "CODE_NOT_AUTHORIZED",
    "CODE_NOT_FOUND",
    "CODE_NOT_WELL_FORMED",
    "CODE_PER_MINUTE",
    "CODE_WRONG_ORGANIZATION",
    "ERROR_TABLE",
    "PER_MINUTE_RETRY_AFTER",
    "error_from_response",
    "error_from_status",
    "next_daily_reset",
    "parse_envelope",
]

SYSTEM = "zoho"

CODE_PER_MINUTE = 44
CODE_DAILY_LIMIT = 45
CODE_NOT_AUTHORIZED = 57
CODE_INTERNAL = 1000
CODE_NOT_FOUND = 1002
CODE_NOT_WELL_FORMED = 1038
CODE_CONCURRENCY = 1070
CODE_WRONG_ORGANIZATION = 6041

# Zoho sends no Retry-After (reference §6.3); the per-minute window is the natural wait.
PER_MINUTE_RETRY_AFTER = 60.0

ERROR_TABLE: dict[tuple[int | None, int | None], type[ApiError]] = {
    # 401: the token is bad or lacks the scope; the client refreshes once before believing scope.
    (401, None): InvalidTokenError,
    (403, None): PermissionDeniedError,
    (400, CODE_WRONG_ORGANIZATION): WrongOrganizationError,
    (400, CODE_NOT_FOUND): NotFoundError,
    (400, CODE_NOT_AUTHORIZED): PermissionDeniedError,
    (400, None): ValidationError,  # includes 1038 "JSON is not well formed"
    (404, None): NotFoundError,
    (405, None): ValidationError,
    (429, CODE_PER_MINUTE): RateLimitError,
    (429, CODE_DAILY_LIMIT): BudgetExhaustedError,
    (429, CODE_CONCURRENCY): ConcurrencyLimitError,
    (429, None): RateLimitError,
    (500, None): ServerError,  # every 5xx, code 1000 included
    # Errors inside a 2xx envelope (code != 0): the code alone decides.
    (None, CODE_PER_MINUTE): RateLimitError,
    (None, CODE_DAILY_LIMIT): BudgetExhaustedError,
    (None, CODE_CONCURRENCY): ConcurrencyLimitError,
    (None, CODE_NOT_AUTHORIZED): InvalidTokenError,
    (None, CODE_INTERNAL): ServerError,
    (None, CODE_NOT_FOUND): NotFoundError,
    (None, CODE_WRONG_ORGANIZATION): WrongOrganizationError,
}


def next_daily_reset(now: dt.datetime | None = None, timezone: str = "UTC") -> dt.datetime:
    """The next midnight in ``timezone`` (Zoho's daily budget reset; the zone is UNCONFIRMED)."""
    zone = ZoneInfo(timezone)
    current = (now or dt.datetime.now(dt.UTC)).astimezone(zone)
    tomorrow = (current + dt.timedelta(days=1)).date()
    return dt.datetime.combine(tomorrow, dt.time(0, 0), tzinfo=zone).astimezone(dt.UTC)


def _lookup(status: int | None, code: int | None) -> type[ApiError]:
    candidates: list[tuple[int | None, int | None]] = []
    if status is not None and 200 <= status < 300:
        # A 2xx carrying an error code is decided by the code alone.
        candidates.append((None, code))
    elif status is not None:
        candidates += [(status, code), (status, None), (status // 100 * 100, None)]
        candidates.append((None, code))
    for key in candidates:
        if key in ERROR_TABLE:
            return ERROR_TABLE[key]
    if status is not None and status >= 500:
        return ServerError
    return ValidationError


def error_from_status(
    status: int | None,
    code: int | None,
    message: str,
    *,
    token_was_fresh: bool = False,
    request_id: str | None = None,
    body: str | None = None,
    now: Callable[[], dt.datetime] | None = None,
    reset_timezone: str = "UTC",
) -> ApiError:
    """Build the error for an answer with ``status`` and Zoho ``code``.

    Args:
        status: HTTP status.
        code: Zoho's numeric ``code`` from the body, when there is one.
        message: Zoho's ``message`` (never contains our secrets).
        token_was_fresh: the request carried a token refreshed for this very request, so an
            authorization failure is about scope, not about the token.
        request_id: response request id, if any.
        body: raw body, kept (truncated) on the error for the audit trail.
        now: clock for the daily reset time.
        reset_timezone: zone whose midnight resets the daily budget.
    """
    error_class = _lookup(status, code)
    kwargs: dict[str, Any] = {
        "system": SYSTEM,
        "status": status,
        "code": code,
        "request_id": request_id,
        "body": body,
    }
    if error_class is InvalidTokenError and token_was_fresh:
        return PermissionDeniedError(
            f"{message} (a freshly refreshed token was refused: the connection is probably "
            "missing an OAuth scope; reconnect with the needed ZohoBooks.* scopes)",
            **kwargs,
        )
    if error_class is BudgetExhaustedError:
        current = now() if now else dt.datetime.now(dt.UTC)
        reset_at = next_daily_reset(current, reset_timezone)
        return BudgetExhaustedError(
            message,
            reset_at=reset_at,
            retry_after=(reset_at - current).total_seconds(),
            **kwargs,
        )
    if error_class is RateLimitError:
        return RateLimitError(message, retry_after=PER_MINUTE_RETRY_AFTER, **kwargs)
    if error_class is WrongOrganizationError:
        message = (
            f"{message} (the organization_id is not visible to this token: check the "
            "organization id and the data center; `connector zoho connect` lists the ones it can see)"
        )
    return error_class(message, **kwargs)


def parse_envelope(text: str) -> tuple[int | None, str | None]:
    """Return ``(code, message)`` from a Zoho JSON envelope, or ``(None, None)`` if not JSON."""
    try:
        document = json.loads(text)
    except ValueError:
        return None, None
    if not isinstance(document, dict):
        return None, None
    raw_code = document.get("code")
    code: int | None
    try:
        code = int(raw_code) if raw_code is not None else None
    except (TypeError, ValueError):
        code = None
    message = document.get("message")
    return code, str(message) if message is not None else None


def error_from_response(
    response: requests.Response,
    *,
    token_was_fresh: bool = False,
    now: Callable[[], dt.datetime] | None = None,
    reset_timezone: str = "UTC",
) -> ApiError:
    """Classify an error response (non-2xx, or a 2xx whose envelope code is not 0)."""
    text = response.text or ""
    code, message = parse_envelope(text)
    if message is None:
        reason = response.reason or "error"
        message = f"HTTP {response.status_code} {reason} (body is not Zoho JSON)"
    request_id = response.headers.get("X-Request-Id") or response.headers.get("X-Zoho-Request-Id")
    return error_from_status(
        response.status_code,
        code,
        message,
        token_was_fresh=token_was_fresh,
        request_id=request_id,
        body=text,
        now=now,
        reset_timezone=reset_timezone,
    )
