"""One table: (HTTP status, Zoho code) → exception, as the client raises it."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import responses

from connector.errors import (
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
from connector.http import RetryPolicy
from connector.zoho.client import StaticTokens, ZohoBooksClient
from connector.zoho.errors import error_from_status, next_daily_reset

API = "https://www.zohoapis.com"
URL = f"{API}/books/v3/contacts/1"
NOW = dt.datetime(2024, 5, 1, 15, 30, tzinfo=dt.UTC)


def _client(tokens: Any = None) -> ZohoBooksClient:
    return ZohoBooksClient(
        tokens or StaticTokens("1000.t"),
        organization_id="1",
        api_domain=API,
        retry=RetryPolicy(max_retries=0),
        sleep=lambda _s: None,
        now=lambda: NOW,
    )


CASES = [
    (
        400,
        {
            "code": 6041,
            "message": "This user is not associated with the CompanyID/CompanyName:104.",
        },
        WrongOrganizationError,
    ),
    (400, {"code": 1038, "message": "JSON is not well formed"}, ValidationError),
    (400, {"code": 2, "message": "Invalid value"}, ValidationError),
    (400, {"code": 1002, "message": "Contact does not exist."}, NotFoundError),
    (404, {"code": 1002, "message": "Contact does not exist."}, NotFoundError),
    (404, "<html>not found</html>", NotFoundError),
    (405, {"code": 0, "message": "Method Not Allowed"}, ValidationError),
    (403, {"code": 57, "message": "forbidden"}, PermissionDeniedError),
    (429, {"code": 44, "message": "per minute"}, RateLimitError),
    (429, {"code": 45, "message": "daily"}, BudgetExhaustedError),
    (429, {"code": 1070, "message": "too many in process"}, ConcurrencyLimitError),
    (429, "rate limited", RateLimitError),
    (500, {"code": 1000, "message": "Internal error"}, ServerError),
    (502, "<html>bad gateway</html>", ServerError),
    (503, "", ServerError),
    (200, {"code": 1002, "message": "Invoice does not exist."}, NotFoundError),
    (200, {"code": 1000, "message": "Internal error"}, ServerError),
    (200, {"code": 9999, "message": "something odd"}, ValidationError),
    (200, "<html>login page</html>", ServerError),
    (418, {"code": 1, "message": "teapot"}, ValidationError),
]


@pytest.mark.parametrize(("status", "body", "expected"), CASES)
def test_status_and_code_map_to_one_error(rsps, status, body, expected):
    if isinstance(body, dict):
        rsps.add(responses.GET, URL, json=body, status=status)
    else:
        rsps.add(responses.GET, URL, body=body, status=status)
    with pytest.raises(expected) as info:
        _client().contacts.get("1")
    assert type(info.value) is expected
    assert info.value.system == "zoho"
    assert info.value.status == status


def test_per_minute_limit_waits_a_minute_and_daily_limit_resets_at_midnight(rsps):
    rsps.add(responses.GET, URL, json={"code": 44, "message": "m"}, status=429)
    with pytest.raises(RateLimitError) as minute:
        _client().contacts.get("1")
    assert minute.value.retry_after == 60
    rsps.replace(responses.GET, URL, json={"code": 45, "message": "d"}, status=429)
    with pytest.raises(BudgetExhaustedError) as daily:
        _client().contacts.get("1")
    assert daily.value.reset_at == dt.datetime(2024, 5, 2, tzinfo=dt.UTC)


def test_daily_reset_timezone_is_configurable():
    reset = next_daily_reset(NOW, "Asia/Kolkata")
    assert reset == dt.datetime(2024, 5, 1, 18, 30, tzinfo=dt.UTC)  # midnight IST


def test_401_is_invalid_token_then_permission_denied_after_a_fresh_token():
    assert type(error_from_status(401, 57, "no")) is InvalidTokenError
    assert type(error_from_status(401, 57, "no", token_was_fresh=True)) is PermissionDeniedError
    assert type(error_from_status(401, None, "no")) is InvalidTokenError
