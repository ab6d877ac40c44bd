"""OAuth for Pipedrive: token requests, the shared token cache, refresh on 401, api_domain."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs

import pytest
import responses

from connector.errors import AuthError, InvalidTokenError, ReauthorizationRequired, ServerError
from connector.pipedrive.auth import (
    ApiTokenAuth,
    OAuthToken,
    PipedriveOAuth,
    PipedriveTokenManager,
    exchange_code,
    refresh,
    token_cache_key,
)
from connector.pipedrive.client import PipedriveClient

OAUTH = "https://oauth.pipedrive.com"
TOKEN_URL = f"{OAUTH}/oauth/token"
CLIENT_ID, CLIENT_SECRET = "client-1", "client-secret-xyz"


def token_body(
    access: str,
    refresh_token: str | None = "rt-2",  # noqa: S107 - a fake token
    domain: str = "https://acme.pipedrive.com",
    **extra,
):
    body = {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": 3599,
        "scope": "base",
        "api_domain": domain,
        **extra,
    }
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    return body


def form(body: Any) -> dict[str, list[str]]:
    return parse_qs(body)


@pytest.fixture(params=["fake", "real"])
def redis_client(request):
    return request.getfixturevalue("fake_redis" if request.param == "fake" else "real_redis")


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_manager(redis_client, box, clock=None, **kwargs) -> PipedriveTokenManager:
    options = {
        "connection_id": 7,
        "redis": redis_client,
        "box": box,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": "rt-1",
        "sleep": lambda _s: None,
        "clock": clock or Clock(),
        **kwargs,
    }
    return PipedriveTokenManager(**options)


@responses.activate
def test_refresh_sends_basic_auth_and_a_form_and_keeps_rotated_refresh_token():
    responses.post(TOKEN_URL, json=token_body("at-1", refresh_token="rt-2"))
    token = refresh(
        refresh_token="rt-1", client_id=CLIENT_ID, client_secret=CLIENT_SECRET, now=lambda: 100.0
    )
    request = responses.calls[0].request
    assert (
        request.headers["Authorization"]
        == "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    )
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert form(request.body) == {"grant_type": ["refresh_token"], "refresh_token": ["rt-1"]}
    assert token.access_token == "at-1"
    assert token.refresh_token == "rt-2"
    assert token.api_domain == "https://acme.pipedrive.com"
    assert token.expires_at == 100.0 + 3599
    assert "at-1" not in repr(token)
    assert "rt-2" not in repr(token)


@responses.activate
def test_refresh_without_rotation_or_expiry_keeps_what_it_had():
    body = token_body("at-1", refresh_token=None)
    del body["expires_in"]
    responses.post(TOKEN_URL, json=body)
    token = refresh(
        refresh_token="rt-1", client_id=CLIENT_ID, client_secret=CLIENT_SECRET, now=lambda: 0.0
    )
    assert token.refresh_token == "rt-1"
    assert token.expires_at == 3600.0


@responses.activate
def test_exchange_code_form():
    responses.post(TOKEN_URL, json=token_body("at-1", refresh_token="rt-1"))
    token = exchange_code(
        code="abc",
        redirect_uri="https://app.example.com/cb",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )
    assert form(responses.calls[0].request.body) == {
        "grant_type": ["authorization_code"],
        "code": ["abc"],
        "redirect_uri": ["https://app.example.com/cb"],
    }
    assert token.refresh_token == "rt-1"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            {
                "error": "invalid_grant",
                "error_description": "Invalid grant: refresh token is invalid",
            },
            ReauthorizationRequired,
        ),
        (401, {"error": "invalid_client"}, AuthError),
        (503, None, ServerError),
    ],
)
@responses.activate
def test_token_errors(status, body, expected):
    responses.post(TOKEN_URL, status=status, json=body) if body else responses.post(
        TOKEN_URL, status=status, body="down"
    )
    with pytest.raises(expected) as info:
        refresh(refresh_token="rt-secret-1", client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    assert "rt-secret-1" not in str(info.value)
    assert CLIENT_SECRET not in str(info.value)


@responses.activate
def test_manager_caches_the_token_encrypted_and_shares_it(redis_client, box):
    responses.post(TOKEN_URL, json=token_body("at-1"))
    first = make_manager(redis_client, box)
    assert first.access_token() == "at-1"
    raw = redis_client.get(token_cache_key(7))
    assert raw is not None
    assert b"at-1" not in raw
    assert b"rt-2" not in raw
    # Another process: no network call, same token.
    second = make_manager(redis_client, box)
    assert second.access_token() == "at-1"
    assert second.api_domain() == "https://acme.pipedrive.com"
    assert len(responses.calls) == 1
    assert first.refreshes == 1
    assert second.refreshes == 0


@responses.activate
def test_manager_refreshes_before_expiry_with_the_latest_refresh_token(redis_client, box):
    responses.post(TOKEN_URL, json=token_body("at-1", refresh_token="rt-2"))
    responses.post(TOKEN_URL, json=token_body("at-2", refresh_token="rt-3"))
    clock = Clock()
    changed: list[OAuthToken] = []
    manager = make_manager(redis_client, box, clock=clock, on_credentials_changed=changed.append)
    assert manager.access_token() == "at-1"
    clock.now += 3599 - 200  # inside the 300-second margin
    assert manager.access_token() == "at-2"
    bodies = [form(c.request.body)["refresh_token"] for c in responses.calls]
    assert bodies == [["rt-1"], ["rt-2"]]
    assert [t.refresh_token for t in changed] == ["rt-2", "rt-3"]


@responses.activate
def test_401_with_a_token_someone_already_replaced_needs_no_refresh(redis_client, box):
    responses.post(TOKEN_URL, json=token_body("at-1"))
    responses.post(TOKEN_URL, json=token_body("at-2"))
    worker_a = make_manager(redis_client, box)
    worker_b = make_manager(redis_client, box)
    assert worker_a.access_token() == "at-1"
    assert worker_b.access_token() == "at-1"
    worker_a.invalidate("at-1")  # A saw a 401 and refreshed
    assert len(responses.calls) == 2
    # B's request with at-1 also fails; B finds at-2 in the cache instead of refreshing again.
    assert worker_b.invalidate("at-1").access_token == "at-2"
    assert len(responses.calls) == 2


@responses.activate
def test_invalid_grant_marks_reauth_once_and_cools_down(redis_client, box):
    responses.post(TOKEN_URL, status=400, json={"error": "invalid_grant"})
    reasons: list[str] = []
    manager = make_manager(redis_client, box, on_reauth_required=reasons.append)
    with pytest.raises(ReauthorizationRequired):
        manager.access_token()
    with pytest.raises(ReauthorizationRequired, match="cooling down"):
        make_manager(redis_client, box, on_reauth_required=reasons.append).access_token()
    assert len(responses.calls) == 1
    assert len(reasons) == 1


@responses.activate
def test_client_refreshes_once_on_401_retries_once_and_follows_api_domain(redis_client, box):
    responses.post(TOKEN_URL, json=token_body("at-1", domain="https://old.pipedrive.com"))
    responses.post(TOKEN_URL, json=token_body("at-2", domain="https://new.pipedrive.com"))
    responses.get(
        "https://old.pipedrive.com/api/v2/deals/1",
        status=401,
        json={"success": False, "error": "unauthorized access", "errorCode": 401},
    )
    responses.get(
        "https://new.pipedrive.com/api/v2/deals/1", json={"success": True, "data": {"id": 1}}
    )
    responses.get(
        "https://new.pipedrive.com/api/v2/deals/2", json={"success": True, "data": {"id": 2}}
    )
    manager = make_manager(redis_client, box)
    client = PipedriveClient(PipedriveOAuth(manager), sleep=lambda _s: None)
    assert client.deals.get(1) == {"id": 1}
    assert client.deals.get(2) == {"id": 2}
    urls = [c.request.url for c in responses.calls]
    assert urls == [
        TOKEN_URL,
        "https://old.pipedrive.com/api/v2/deals/1",
        TOKEN_URL,
        # The retry right after the refresh was addressed before the refresh: old host, 401.
        "https://old.pipedrive.com/api/v2/deals/1",
        "https://new.pipedrive.com/api/v2/deals/1",
        "https://new.pipedrive.com/api/v2/deals/2",
    ]
    api_calls = [c for c in responses.calls if c.request.url != TOKEN_URL]
    auth_headers = [c.request.headers.get("Authorization") for c in api_calls]
    assert auth_headers == ["Bearer at-1", "Bearer at-2", "Bearer at-2", "Bearer at-2"]
    for call in api_calls:
        assert "x-api-token" not in call.request.headers
    assert manager.refreshes == 2


@responses.activate
def test_client_401_then_success_after_refresh(redis_client, box):
    responses.post(TOKEN_URL, json=token_body("at-1"))
    responses.post(TOKEN_URL, json=token_body("at-2"))
    url = "https://acme.pipedrive.com/api/v2/persons/5"
    responses.get(
        url,
        status=401,
        json={"success": False, "error": "unauthorized access"},
        match=[responses.matchers.header_matcher({"Authorization": "Bearer at-1"})],
    )
    responses.get(
        url,
        json={"success": True, "data": {"id": 5}},
        match=[responses.matchers.header_matcher({"Authorization": "Bearer at-2"})],
    )
    client = PipedriveClient(PipedriveOAuth(make_manager(redis_client, box)), sleep=lambda _s: None)
    assert client.persons.get(5) == {"id": 5}
    assert len(responses.calls) == 4


@responses.activate
def test_api_token_401_is_final():
    responses.get(
        "https://acme.pipedrive.com/v1/users/me",
        status=401,
        json={"success": False, "error": "unauthorized access"},
    )
    client = PipedriveClient(
        ApiTokenAuth("t" * 40), base_url="https://acme.pipedrive.com", sleep=lambda _s: None
    )
    with pytest.raises(AuthError) as info:
        client.users.me()
    assert not isinstance(info.value, InvalidTokenError)
    assert len(responses.calls) == 1
    assert "t" * 40 not in str(info.value)


def test_empty_api_token_is_refused():
    with pytest.raises(AuthError):
        ApiTokenAuth("")


def test_cache_entry_is_json_encrypted_with_the_box(fake_redis, box):
    manager = make_manager(fake_redis, box)
    manager.store(
        OAuthToken(
            access_token="at-9",
            refresh_token="rt-9",
            expires_at=1_800_003_600.0,
            api_domain="https://x.pipedrive.com",
        )
    )
    raw = fake_redis.get(token_cache_key(7)).decode()
    assert json.loads(box.decrypt(raw))["access_token"] == "at-9"
    assert manager.access_token() == "at-9"
