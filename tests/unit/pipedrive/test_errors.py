"""The one status → error table of the Pipedrive client (reference §6)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
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
from connector.pipedrive.errors import classify_response, error_for_response

TOKEN = "0123456789abcdef0123456789abcdef01234567"
ENVELOPE = {
    "success": False,
    "error": "Something failed",
    "error_info": "Please check developers.pipedrive.com",
    "data": None,
    "additional_data": None,
}
CLOUDFLARE = "<!DOCTYPE html><html><body>This error is produced by Cloudflare.</body></html>"


def make_response(
    status: int, body: object = None, headers: dict[str, str] | None = None
) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    if isinstance(body, str):
        response._content = body.encode()
        response.headers["content-type"] = "text/html; charset=UTF-8"
    else:
        response._content = json.dumps(ENVELOPE if body is None else body).encode()
        response.headers["content-type"] = "application/json"
    response.headers.update(headers or {})
    return response


@pytest.mark.parametrize(
    ("status", "body", "headers", "auth_kind", "expected"),
    [
        (400, None, {}, "api_token", ValidationError),
        (
            401,
            {"success": False, "error": "unauthorized access", "errorCode": 401},
            {},
            "oauth",
            InvalidTokenError,
        ),
        (402, None, {}, "api_token", FatalError),
        (
            403,
            {**ENVELOPE, "code": "feature_capping_deals_limit"},
            {},
            "api_token",
            PermissionDeniedError,
        ),
        (403, CLOUDFLARE, {}, "api_token", BlockedError),
        (404, None, {}, "api_token", NotFoundError),
        (404, "<html>web app</html>", {}, "api_token", NotFoundError),
        (410, None, {}, "api_token", NotFoundError),
        (415, None, {}, "api_token", FatalError),
        (422, None, {}, "api_token", ValidationError),
        (429, None, {"x-ratelimit-reset": "1"}, "api_token", RateLimitError),
        (429, None, {"x-daily-ratelimit-token-remaining": "0"}, "api_token", BudgetExhaustedError),
        (500, "<html>oops</html>", {}, "api_token", ServerError),
        (501, None, {}, "api_token", FatalError),
        (502, None, {}, "api_token", ServerError),
        (503, "", {}, "api_token", ServerError),
        (504, None, {}, "api_token", ServerError),
    ],
)
def test_status_table(status, body, headers, auth_kind, expected):
    error = error_for_response(make_response(status, body, headers), auth_kind=auth_kind)
    assert type(error) is expected
    assert error.system == "pipedrive"
    assert error.status == status
    with pytest.raises(expected):
        classify_response(make_response(status, body, headers), auth_kind=auth_kind)


def test_401_with_api_token_is_final_auth_error():
    error = error_for_response(
        make_response(401, {"success": False, "error": "unauthorized access"})
    )
    assert isinstance(error, AuthError)
    assert not isinstance(error, InvalidTokenError)


def test_feature_capping_code_is_kept():
    error = error_for_response(
        make_response(
            403,
            {
                **ENVELOPE,
                "error": "Open deals limit reached.",
                "code": "feature_capping_deals_limit",
            },
        )
    )
    assert error.code == "feature_capping_deals_limit"
    assert "Open deals limit reached." in str(error)


def test_burst_429_uses_ratelimit_reset_or_defaults_to_two_seconds():
    with_header = error_for_response(
        make_response(
            429, None, {"x-ratelimit-reset": "1.5", "x-daily-ratelimit-token-remaining": "120"}
        )
    )
    assert type(with_header) is RateLimitError
    assert with_header.retry_after == 1.5
    without = error_for_response(make_response(429, None, {}))
    assert type(without) is RateLimitError
    assert without.retry_after == 2.0


def test_budget_429_reset_from_limiter_else_next_utc_midnight():
    when = dt.datetime(2030, 1, 2, tzinfo=dt.UTC)
    error = error_for_response(
        make_response(429, None, {"x-daily-ratelimit-token-remaining": "0"}), reset_at=lambda: when
    )
    assert isinstance(error, BudgetExhaustedError)
    assert error.reset_at == when
    fallback = error_for_response(
        make_response(429, None, {"x-daily-ratelimit-token-remaining": "0"})
    )
    assert isinstance(fallback, BudgetExhaustedError)
    assert fallback.reset_at is not None
    assert fallback.reset_at.tzinfo is dt.UTC
    assert (fallback.reset_at.hour, fallback.reset_at.minute) == (0, 0)
    assert fallback.reset_at > dt.datetime.now(dt.UTC)


def test_html_403_message_is_short_and_has_no_html():
    error = error_for_response(make_response(403, CLOUDFLARE))
    assert isinstance(error, BlockedError)
    assert "<html" not in str(error).lower()
    assert error.body is None


def test_webhook_error_shape_is_readable():
    body = {
        "status": "error",
        "success": False,
        "errors": {"subscription_url": ["invalid or non-reachable URL"]},
    }
    error = error_for_response(make_response(400, body))
    assert "subscription_url" in str(error)


def test_success_false_in_a_200_is_an_error():
    with pytest.raises(ValidationError):
        classify_response(make_response(200, {"success": False, "error": "nope"}))


def test_html_200_is_not_taken_for_data():
    with pytest.raises(NotFoundError):
        classify_response(make_response(200, "<html>the web app</html>"))


def test_messages_never_contain_tokens():
    for status in (400, 401, 403, 429, 500):
        error = error_for_response(make_response(status, None, {"x-api-token": TOKEN}))
        assert isinstance(error, ApiError)
        assert TOKEN not in str(error)
        assert TOKEN not in repr(error)
