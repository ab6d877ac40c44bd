"""PipedriveLimiter: burst and search windows, daily budget with reserve, header corrections."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from connector.errors import BlockedError, BudgetExhaustedError, RateLimitError
from connector.pipedrive.limiter import (
    PipedriveLimiter,
    burst_limit_for,
    daily_budget_for,
    token_key_for,
)
from connector.ratelimit import Priority
from tests.unit.ratelimit.helpers import FakeClock

SECRET_TOKEN = "0123456789abcdef0123456789abcdef01234567"


def make(rds, clock: FakeClock, **overrides) -> PipedriveLimiter:
    options = {
        "redis": rds,
        "company_key": "acme",
        "token_key": token_key_for(SECRET_TOKEN),
        "plan": "lite",
        "auth_kind": "api_token",
        "now": clock,
        "sleep": clock.sleep,
    }
    options.update(overrides)
    return PipedriveLimiter(**options)


def test_plan_tables():
    assert daily_budget_for("growth", 5) == 300_000
    assert daily_budget_for("Ultimate") == 210_000
    assert burst_limit_for("growth", "api_token") == 40
    assert burst_limit_for("premium", "oauth") == 400
    with pytest.raises(ValueError, match="plan"):
        daily_budget_for("platinum")


def test_burst_grants_up_to_the_plan_limit_then_waits(rds, clock):
    limiter = make(rds, clock)  # lite API token: 20 per 2 s
    assert limiter.burst_limit == 20
    for _ in range(20):
        assert limiter.try_acquire(1).granted
    denied = limiter.try_acquire(1)
    assert (denied.granted, denied.reason) == (False, "burst")
    # Pipedrive's 2 s window plus the margin for the time a request takes to arrive there.
    assert 0 < denied.wait_seconds <= 2.1


def test_burst_margin_lengthens_our_window_beyond_pipedrives(rds, clock):
    exact = make(rds, clock, burst_margin_seconds=0.0, token_key="exact")
    padded = make(rds, clock, burst_margin_seconds=0.25, token_key="padded")
    for limiter in (exact, padded):
        for _ in range(20):
            assert limiter.try_acquire(1).granted
    assert exact.try_acquire(1).wait_seconds == pytest.approx(2.0)
    assert padded.try_acquire(1).wait_seconds == pytest.approx(2.25)


def test_a_refused_request_spends_nothing(rds, clock):
    limiter = make(rds, clock)
    for _ in range(20):
        limiter.try_acquire(5)
    assert limiter.spent_today() == 100
    assert not limiter.try_acquire(5).granted
    assert limiter.spent_today() == 100
    assert limiter.status().burst_used == 20


def test_search_counts_against_both_windows(rds, clock):
    limiter = make(rds, clock, burst_limit=12)
    for _ in range(10):
        assert limiter.try_acquire(20, search=True).granted
    refused = limiter.try_acquire(20, search=True)
    assert refused.reason == "search_burst"
    # Non-search requests only need the general window, which the 10 searches also used.
    assert limiter.try_acquire(1).granted
    assert limiter.try_acquire(1).granted
    assert limiter.try_acquire(1).reason == "burst"
    status = limiter.status()
    assert (status.search_used, status.burst_used) == (10, 12)


def test_scheduled_work_stops_at_the_reserve_and_webhooks_use_it(rds, clock):
    limiter = make(rds, clock, daily_budget=100, reserve_fraction=0.10)
    for _ in range(9):
        assert limiter.try_acquire(10).granted
        clock.advance(1)
    refused = limiter.try_acquire(10, priority=Priority.SCHEDULED)
    assert refused.reason == "reserve"
    with pytest.raises(BudgetExhaustedError) as raised:
        limiter.acquire(10, priority=Priority.BACKFILL)
    assert raised.value.reset_at == dt.datetime(2025, 6, 3, tzinfo=dt.UTC)
    assert raised.value.system == "pipedrive"
    assert limiter.try_acquire(10, priority=Priority.WEBHOOK).granted
    assert limiter.try_acquire(1, priority=Priority.WEBHOOK).reason == "budget"
    assert limiter.spent_today() == 100


def test_budget_resets_at_local_midnight_of_the_configured_zone(rds):
    tokyo = ZoneInfo("Asia/Tokyo")
    # 23:59:59 in Tokyo is 14:59:59 UTC: a UTC-based day would not reset a second later.
    clock = FakeClock(dt.datetime(2025, 6, 2, 23, 59, 59, tzinfo=tokyo).timestamp())
    limiter = make(rds, clock, daily_budget=50, reserve_fraction=0, timezone="Asia/Tokyo")
    assert limiter.try_acquire(50).granted
    refused = limiter.try_acquire(1)
    assert refused.reason == "budget"
    assert refused.reset_at == dt.datetime(2025, 6, 3, tzinfo=tokyo)
    assert refused.wait_seconds == pytest.approx(1.0)
    clock.advance(1.0)
    fresh = limiter.try_acquire(1)
    assert fresh.granted
    assert fresh.remaining == 49
    assert limiter.status().reset_at == dt.datetime(2025, 6, 4, tzinfo=tokyo)


def test_header_corrects_the_spent_counter_up_never_down(rds, clock):
    limiter = make(rds, clock, daily_budget=1000)
    limiter.try_acquire(10)
    limiter.observe(200, {"x-daily-ratelimit-token-remaining": "950"})
    assert limiter.spent_today() == 50  # other integrations spent 40 more
    limiter.observe(200, {"X-Daily-Ratelimit-Token-Remaining": "980"})
    assert limiter.spent_today() == 50
    limiter.observe(200, {})
    limiter.observe(200, {"x-daily-ratelimit-token-remaining": "not a number"})
    assert limiter.spent_today() == 50


def test_header_saying_zero_parks_everyone_until_the_reset(rds, clock, redis_factory):
    limiter = make(rds, clock, daily_budget=1000)
    other = make(redis_factory(), clock, daily_budget=1000, token_key="another-user")
    limiter.observe(429, {"x-daily-ratelimit-token-remaining": "0", "x-ratelimit-remaining": "5"})
    refused = other.try_acquire(1, priority=Priority.WEBHOOK)
    assert refused.reason == "budget"
    assert limiter.status().cooldown_until is None  # a budget 429 is not a burst cooldown


def test_429_sets_a_cooldown_seen_by_another_process(rds, clock, redis_factory):
    first = make(rds, clock)
    second = make(redis_factory(), clock)  # same token, another client: another "process"
    first.observe(429, {"x-ratelimit-reset": "3", "x-ratelimit-remaining": "0"})
    refused = second.try_acquire(1)
    assert (refused.reason, refused.wait_seconds) == ("cooldown", 3.0)
    assert second.spent_today() == 0
    with pytest.raises(RateLimitError) as raised:
        second.acquire(1, max_wait=1.0)
    assert raised.value.retry_after == 3.0
    decision = second.acquire(1, max_wait=5.0)  # sleeps (on the fake clock) through the cooldown
    assert decision.granted
    assert sum(clock.slept) >= 3.0


def test_429_without_headers_escalates(rds, clock):
    limiter = make(rds, clock)
    limiter.observe(429, {})
    assert limiter.try_acquire(1).wait_seconds == 2.0
    clock.advance(2)
    limiter.observe(429, {})
    assert limiter.try_acquire(1).wait_seconds == 4.0


def test_empty_window_header_closes_the_gate_for_the_reset_time(rds, clock):
    limiter = make(rds, clock)
    limiter.observe(200, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1"})
    assert limiter.try_acquire(1).reason == "cooldown"
    clock.advance(1)
    assert limiter.try_acquire(1).granted


def test_html_403_blocks_the_token(rds, clock):
    limiter = make(rds, clock, blocked_seconds=600)
    limiter.observe(403, {}, body_is_html=False)  # a JSON 403 is a permission problem, not a block
    assert limiter.try_acquire(1).granted
    limiter.observe(403, {"content-type": "text/html"}, body_is_html=True)
    refused = limiter.try_acquire(1)
    assert (refused.reason, refused.wait_seconds) == ("blocked", 600.0)
    with pytest.raises(BlockedError):
        limiter.acquire(1)
    assert limiter.status().blocked_until == dt.datetime.fromtimestamp(clock() + 600, dt.UTC)


def test_acquire_waits_out_a_short_burst(rds, clock):
    limiter = make(rds, clock)
    for _ in range(20):
        limiter.try_acquire(1)
    decision = limiter.acquire(1, max_wait=5.0)
    assert decision.granted
    assert 2.1 <= sum(clock.slept) <= 2.2


def test_keys_hold_no_secret_and_are_namespaced(rds, clock):
    limiter = make(rds, clock)
    limiter.try_acquire(1, search=True)
    limiter.observe(429, {})
    limiter.observe(403, {}, body_is_html=True)
    keys = [key.decode() for key in rds.keys("*")]
    assert keys
    assert all(key.startswith("connector:rl:pd:{acme}:") for key in keys)
    assert not any(SECRET_TOKEN in key for key in keys)


def test_refuses_a_token_as_token_key(rds, clock):
    with pytest.raises(ValueError, match="token_key"):
        make(rds, clock, token_key=SECRET_TOKEN)


def test_status_snapshot(rds, clock):
    limiter = make(rds, clock, plan="growth", seats=2)
    limiter.try_acquire(20, search=True)
    status = limiter.status()
    assert (status.budget, status.reserve, status.spent_today, status.remaining) == (
        120_000,
        12_000,
        20,
        119_980,
    )
    assert (status.burst_used, status.burst_limit, status.search_used) == (1, 40, 1)
    assert status.reset_at == dt.datetime(2025, 6, 3, tzinfo=dt.UTC)
    assert status.cooldown_until is None
    assert status.blocked_until is None
