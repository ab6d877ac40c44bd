"""ZohoLimiter: per-minute window, daily limit, concurrency leases and error-code reactions."""

from __future__ import annotations

from typing import Any

import pytest

from connector.errors import BudgetExhaustedError, RateLimitError
from connector.zoho.limiter import ZohoLimiter, daily_limit_for_plan
from tests.unit.ratelimit.helpers import FakeClock


def make(rds, clock: FakeClock, **overrides) -> ZohoLimiter:
    options: dict[str, Any] = {"org_key": "org-601", "now": clock, "sleep": clock.sleep}
    options.update(overrides)
    return ZohoLimiter(rds, **options)


def test_daily_limit_for_plan():
    assert [
        daily_limit_for_plan(p)
        for p in ("free", "standard", "Professional", "premium", "elite", "ultimate")
    ] == [
        1000,
        2000,
        5000,
        10000,
        10000,
        10000,
    ]
    with pytest.raises(ValueError, match="plan"):
        daily_limit_for_plan("gold")


def test_per_minute_window(rds, clock):
    limiter = make(rds, clock, per_minute=5)
    for _ in range(5):
        with limiter.acquire():
            clock.advance(1)
    refused = limiter.try_acquire()
    assert refused.reason == "per_minute"
    # 60 s after the first grant, plus a second for the request's transit to Zoho.
    assert refused.wait_seconds == pytest.approx(56.0)
    with pytest.raises(RateLimitError) as raised:
        limiter.acquire(max_wait=5)
    assert raised.value.system == "zoho"
    assert raised.value.retry_after == pytest.approx(56.0)
    assert limiter.spent_today() == 5
    clock.advance(55)
    with limiter.acquire() as permit:
        assert permit.decision.granted


def test_daily_limit_parks_until_the_reset(rds, clock):
    limiter = make(rds, clock, daily_limit=3, timezone="Europe/Berlin")
    for _ in range(3):
        limiter.acquire().release()
    with pytest.raises(BudgetExhaustedError) as raised:
        limiter.acquire()
    assert raised.value.reset_at is not None
    assert raised.value.reset_at.isoformat() == "2025-06-03T00:00:00+02:00"
    assert limiter.spent_today() == 3


def test_concurrency_slots(rds, clock):
    limiter = make(rds, clock, concurrency=2)
    first = limiter.acquire()
    second = limiter.acquire()
    assert limiter.in_flight() == 2
    refused = limiter.try_acquire()
    assert refused.reason == "concurrency"
    assert limiter.spent_today() == 2  # the refusal spent nothing
    first.release()
    first.release()  # harmless
    with limiter.acquire():
        assert limiter.in_flight() == 2
    assert limiter.in_flight() == 1
    second.release()
    assert limiter.in_flight() == 0


def test_acquire_waits_for_a_slot_freed_by_another_holder(rds, clock):
    holder = make(rds, clock, concurrency=1)
    permit = holder.acquire()

    def sleep_while_the_holder_finishes(seconds: float) -> None:
        clock.sleep(seconds)
        permit.release()

    waiter = make(rds, clock, concurrency=1, sleep=sleep_while_the_holder_finishes)
    with waiter.acquire(max_wait=1) as second:
        assert second.decision.granted
    assert 0 < sum(clock.slept) < 0.2


def test_lease_of_a_crashed_holder_lapses(rds, clock):
    limiter = make(rds, clock, concurrency=1, lease_seconds=30)
    limiter.acquire()  # the holder "crashes" and never releases
    assert limiter.try_acquire().reason == "concurrency"
    clock.advance(30.5)
    assert limiter.try_acquire().granted


def test_code_44_pauses_the_whole_org(rds, clock, redis_factory):
    limiter = make(rds, clock)
    other = make(redis_factory(), clock)
    limiter.observe(429, 44)
    refused = other.try_acquire()
    assert (refused.reason, refused.wait_seconds) == ("cooldown", 60.0)


def test_code_45_marks_the_day_spent(rds, clock):
    limiter = make(rds, clock, daily_limit=1000)
    limiter.observe(429, 45)
    assert limiter.spent_today() == 1000
    assert limiter.try_acquire().reason == "daily"


def test_code_1070_backs_off_briefly(rds, clock):
    limiter = make(rds, clock, concurrency_backoff=2.0)
    limiter.observe(429, 1070)
    assert limiter.try_acquire().wait_seconds == 2.0
    permit = limiter.acquire(max_wait=5)
    assert permit.decision.granted
    assert 2.0 <= sum(clock.slept) < 2.1


def test_other_responses_change_nothing(rds, clock):
    limiter = make(rds, clock)
    limiter.observe(200, 0)
    limiter.observe(400, 1038)
    limiter.observe(429, None)
    assert limiter.try_acquire().granted
    assert limiter.spent_today() == 1
