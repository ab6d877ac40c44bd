"""Token endpoint parsing, and the shared token manager (cache, 55-minute refresh, single flight)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import requests
import responses

from connector.crypto import SecretBox
from connector.errors import AuthError, NetworkError, RateLimitError, ReauthorizationRequired
from connector.settings import Secret
from connector.zoho.auth import (
    REFRESH_AFTER,
    TokenResponse,
    ZohoAuth,
    ZohoTokenManager,
    exchange_grant_code,
    refresh_access_token,
)
from tests.unit.zoho.conftest import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, FakeZoho

EU = "https://accounts.zoho.eu"


def _answer(rsps: Any, body: Any, status: int = 200) -> None:
    rsps.add(responses.POST, f"{EU}/oauth/v2/token", json=body, status=status)


def _refresh() -> TokenResponse:
    return refresh_access_token(
        None,
        EU,
        refresh_token=Secret(REFRESH_TOKEN),
        client_id=CLIENT_ID,
        client_secret=Secret(CLIENT_SECRET),
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"access_token": "a", "api_domain": "https://www.zohoapis.eu", "expires_in": 3600}, 3600),
        (
            {"access_token": "a", "api_domain": "x", "expires_in_sec": 3600, "expires_in": 3600000},
            3600,
        ),
        ({"access_token": "a", "api_domain": "x", "expires_in": 3600000}, 3600),
        ({"access_token": "a", "api_domain": "x"}, 3600),
        (
            {
                "access_token": "a",
                "api_domain": "x",
                "expires_in": "1800",
                "scope": "s",
                "new_key": 1,
            },
            1800,
        ),
    ],
)
def test_expires_in_is_parsed_leniently(rsps, body, expected):
    _answer(rsps, body)
    token = _refresh()
    assert token.expires_in == expected
    assert token.access_token == "a"


def test_refresh_sends_a_form_body_to_the_accounts_server(rsps):
    _answer(rsps, {"access_token": "a", "api_domain": "https://www.zohoapis.eu"})
    _refresh()
    sent = rsps.calls[0].request
    assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "grant_type=refresh_token" in sent.body
    assert "?" not in sent.url  # credentials never in the URL


def test_exchange_returns_the_refresh_token_but_repr_hides_tokens(rsps):
    _answer(
        rsps,
        {
            "access_token": "1000.secret-access",
            "refresh_token": "1000.secret-refresh",
            "api_domain": "https://www.zohoapis.eu",
        },
    )
    token = exchange_grant_code(
        None, EU, code="c", client_id=CLIENT_ID, client_secret=CLIENT_SECRET
    )
    assert token.refresh_token == "1000.secret-refresh"
    assert "secret" not in repr(token)
    assert "grant_type=authorization_code" in rsps.calls[0].request.body


@pytest.mark.parametrize("status", [200, 400])
def test_invalid_code_on_refresh_needs_reauthorization(rsps, status):
    _answer(rsps, {"error": "invalid_code"}, status)
    with pytest.raises(ReauthorizationRequired):
        _refresh()


def test_invalid_code_on_exchange_is_an_auth_error_not_reauth(rsps):
    _answer(rsps, {"error": "invalid_code"})
    with pytest.raises(AuthError) as info:
        exchange_grant_code(None, EU, code="c", client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    assert not isinstance(info.value, ReauthorizationRequired)
    assert "60 seconds" in str(info.value)


def test_invalid_client_points_at_the_data_center(rsps):
    _answer(rsps, {"error": "invalid_client"})
    with pytest.raises(AuthError) as info:
        _refresh()
    assert "data center" in str(info.value)
    assert CLIENT_SECRET not in str(info.value)


def test_access_denied_is_a_token_endpoint_throttle(rsps):
    _answer(
        rsps,
        {
            "error": "Access Denied",
            "error_description": "You have made too many requests continuously.",
        },
    )
    with pytest.raises(RateLimitError) as info:
        _refresh()
    assert info.value.retry_after is not None
    assert info.value.retry_after >= 60


def test_missing_access_token_is_an_error_without_the_body(rsps):
    _answer(rsps, {"weird": "1000.maybe-a-token"})
    with pytest.raises(AuthError) as info:
        _refresh()
    assert "maybe-a-token" not in str(info.value)


def test_token_endpoint_down_is_a_network_error(rsps):
    rsps.add(responses.POST, f"{EU}/oauth/v2/token", body=requests.ConnectionError("down"))
    with pytest.raises(NetworkError):
        _refresh()


# The manager ------------------------------------------------------------------------------


class Clock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def _manager(redis_client: Any, box: SecretBox, clock: Any, **kwargs: Any) -> ZohoTokenManager:
    defaults = {
        "connection_id": 7,
        "accounts_server": "https://accounts.zoho.com",
        "client_id": CLIENT_ID,
        "client_secret": Secret(CLIENT_SECRET),
        "refresh_token": Secret(REFRESH_TOKEN),
        "timeout": 5,
        "clock": clock,
    }
    defaults.update(kwargs)
    return ZohoTokenManager(redis_client, box, **defaults)


def _refresh_grants(fake: FakeZoho) -> int:
    return sum(1 for g in fake.grants if g.get("grant_type") == "refresh_token")


def test_refresh_happens_at_55_minutes_not_before(rsps, any_redis, box):
    fake = FakeZoho(rsps).install()
    clock = Clock()
    manager = _manager(any_redis, box, clock)
    first = manager.get_access_token()
    assert _refresh_grants(fake) == 1
    clock.now += 54 * 60
    assert manager.refresh_if_due() is False
    assert manager.get_access_token() == first
    assert _refresh_grants(fake) == 1
    clock.now += 60 + 1  # 55 min 1 s after issue
    assert manager.refresh_if_due() is True
    assert _refresh_grants(fake) == 2
    assert manager.refresh_if_due() is False
    second = manager.get_access_token()
    assert second != first
    assert _refresh_grants(fake) == 2
    assert manager.token_age() == 0
    assert manager.next_refresh_at() == clock.now + REFRESH_AFTER


def test_cached_token_is_encrypted_in_redis(rsps, any_redis, box):
    FakeZoho(rsps).install()
    manager = _manager(any_redis, box, Clock())
    token = manager.get_access_token()
    raw = any_redis.get(manager.token_key)
    assert raw is not None
    assert token.encode() not in raw
    for key in any_redis.keys("*"):
        value = any_redis.get(key) if any_redis.type(key) == b"string" else b""
        assert token.encode() not in (value or b"")
        assert REFRESH_TOKEN.encode() not in (value or b"")
    assert json.loads(box.decrypt(raw.decode()))["access_token"] == token


def test_two_managers_share_one_token(rsps, any_redis, box):
    fake = FakeZoho(rsps).install()
    clock = Clock()
    one = _manager(any_redis, box, clock)
    two = _manager(any_redis, box, clock)
    assert one.get_access_token() == two.get_access_token()
    assert _refresh_grants(fake) == 1


def test_invalidate_refreshes_only_when_the_rejected_token_is_still_stored(rsps, any_redis, box):
    fake = FakeZoho(rsps).install()
    clock = Clock()
    one = _manager(any_redis, box, clock)
    two = _manager(any_redis, box, clock)
    old = one.get_access_token()
    new = one.invalidate(old)
    assert new != old
    assert _refresh_grants(fake) == 2
    # The other worker was rejected with the old token too: it finds the new one, no call.
    assert two.invalidate(old) == new
    assert _refresh_grants(fake) == 2


def test_threads_racing_on_an_expired_token_refresh_once(rsps, any_redis, box):
    fake = FakeZoho(rsps).install()
    clock = Clock()
    managers = [_manager(any_redis, box, clock) for _ in range(6)]
    managers[0].get_access_token()
    clock.now += 2 * 3600
    results: list[str] = []
    barrier = threading.Barrier(len(managers))

    def work(m):
        barrier.wait()
        results.append(m.get_access_token())

    threads = [threading.Thread(target=work, args=(m,)) for m in managers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _refresh_grants(fake) == 2
    assert len(set(results)) == 1


def test_revoked_refresh_token_calls_back_once_and_stops_everyone(rsps, any_redis, box):
    fake = FakeZoho(rsps, token_error="invalid_code").install()
    reasons: list[str] = []
    clock = Clock()
    one = _manager(any_redis, box, clock, on_reauth_required=reasons.append)
    two = _manager(any_redis, box, clock, on_reauth_required=reasons.append)
    with pytest.raises(ReauthorizationRequired):
        one.get_access_token()
    with pytest.raises(ReauthorizationRequired):
        one.get_access_token()
    with pytest.raises(ReauthorizationRequired):
        two.refresh_if_due()
    assert len(fake.grants) == 1  # never retried
    assert len(reasons) == 1
    # A reconnect brings another refresh token: the memory does not apply to it.
    fake.token_error = None
    three = _manager(any_redis, box, clock, refresh_token=Secret("1000.other"))
    with pytest.raises(ReauthorizationRequired):
        three.get_access_token()  # the fake does not know it: it is revoked too
    assert len(fake.grants) == 2


def test_failed_refresh_cools_down_for_every_worker(rsps, any_redis, box):
    fake = FakeZoho(rsps, token_status=500, token_error="server_down").install()
    rsps.replace(responses.POST, f"{fake.accounts}/oauth/v2/token", body="oops", status=503)
    clock = Clock()
    one = _manager(any_redis, box, clock)
    two = _manager(any_redis, box, clock)
    with pytest.raises(Exception) as first:
        one.get_access_token()
    assert first.type.__name__ == "ServerError"
    with pytest.raises(Exception) as second:
        two.get_access_token()
    assert "cooling down" in str(second.value)
    assert len(rsps.calls) == 1


def test_throttled_refresh_keeps_using_a_token_that_is_still_valid(rsps, any_redis, box):
    fake = FakeZoho(rsps).install()
    clock = Clock()
    manager = _manager(any_redis, box, clock)
    token = manager.get_access_token()
    clock.now += 56 * 60
    fake.token_error = "Access Denied"
    assert manager.get_access_token() == token  # 4 minutes left: better than failing
    clock.now += 5 * 60
    with pytest.raises(RateLimitError):
        manager.get_access_token()  # expired now, and the throttle cooldown still holds


def test_api_domain_changes_are_reported(rsps, any_redis, box):
    FakeZoho(rsps, dc="us").install()
    seen: list[str] = []
    manager = _manager(
        any_redis, box, Clock(), on_api_domain=seen.append, api_domain="https://www.zohoapis.eu"
    )
    manager.get_access_token()
    assert seen == ["https://www.zohoapis.com"]
    manager.invalidate(manager.get_access_token())
    assert seen == ["https://www.zohoapis.com"]  # unchanged: not reported again
    assert manager.current_api_domain() == "https://www.zohoapis.com"


def test_unreadable_cache_costs_one_refresh(rsps, any_redis, box, secret_key):
    fake = FakeZoho(rsps).install()
    manager = _manager(any_redis, box, Clock())
    manager.get_access_token()
    other = _manager(
        any_redis, SecretBox([__import__("connector.crypto").crypto.generate_key()]), Clock()
    )
    other.get_access_token()
    assert _refresh_grants(fake) == 2


def test_store_token_and_auth_header(rsps, any_redis, box):
    manager = _manager(any_redis, box, Clock())
    manager.store_token(
        TokenResponse(access_token="1000.abc", api_domain="https://www.zohoapis.in")
    )
    prepared = requests.Request("GET", "https://www.zohoapis.in/books/v3/contacts").prepare()
    ZohoAuth(manager)(prepared)
    assert prepared.headers["Authorization"] == "Zoho-oauthtoken 1000.abc"
    assert "1000.abc" not in (prepared.url or "")
    assert "refresh" not in repr(manager)
