"""The generic Lua limiter: windows, budgets, gates, semaphores and the budget day."""

from __future__ import annotations

import datetime as dt
import math
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.ratelimit import (
    ConcurrencyLimit,
    ConcurrencySemaphore,
    DailyBudget,
    Gate,
    LimiterEngine,
    Priority,
    SlidingWindow,
    budget_day,
)

WINDOW = SlidingWindow("t:win", limit=3, seconds=2.0, reason="burst")
BUDGET = DailyBudget("t:budget", limit=100, reserve=10, timezone="Europe/Berlin")


def test_window_grants_up_to_its_limit_then_advises_the_oldest_expiry(rds, clock):
    engine = LimiterEngine(rds, now=clock)
    for _ in range(3):
        assert engine.acquire(windows=[WINDOW]).granted
        clock.advance(0.1)
    denied = engine.acquire(windows=[WINDOW])
    assert (denied.granted, denied.reason) == (False, "burst")
    # The first grant was 0.3 s ago, so it leaves the 2 s window in 1.7 s.
    assert denied.wait_seconds == pytest.approx(1.7, abs=0.002)
    clock.advance(denied.wait_seconds)
    assert engine.acquire(windows=[WINDOW]).granted


def test_refusal_by_a_window_spends_no_budget(rds, clock):
    engine = LimiterEngine(rds, now=clock)
    for _ in range(3):
        assert engine.acquire(windows=[WINDOW], budget=BUDGET, cost=7).granted
    assert engine.spent(BUDGET, clock()) == 21
    denied = engine.acquire(windows=[WINDOW], budget=BUDGET, cost=7)
    assert not denied.granted
    assert engine.spent(BUDGET, clock()) == 21


def test_refusal_by_the_budget_takes_no_window_slot(rds, clock):
    engine = LimiterEngine(rds, now=clock)
    assert engine.acquire(windows=[WINDOW], budget=BUDGET, cost=85).granted
    denied = engine.acquire(windows=[WINDOW], budget=BUDGET, cost=10)
    assert denied.reason == "reserve"
    assert engine.window_count(WINDOW, clock()) == 1


def test_budget_reserve_is_for_webhooks_only(rds, clock):
    engine = LimiterEngine(rds, now=clock)
    assert engine.acquire(budget=BUDGET, cost=90).remaining == 10
    assert engine.acquire(budget=BUDGET, cost=1, priority=Priority.BACKFILL).reason == "reserve"
    webhook = engine.acquire(budget=BUDGET, cost=10, priority=Priority.WEBHOOK)
    assert webhook.granted
    assert webhook.remaining == 0
    refused = engine.acquire(budget=BUDGET, cost=1, priority=Priority.WEBHOOK)
    assert refused.reason == "budget"
    # Berlin is UTC+2 in June: the reset is local midnight, 22:00 UTC.
    assert refused.reset_at == dt.datetime(2025, 6, 3, tzinfo=ZoneInfo("Europe/Berlin"))
    assert refused.wait_seconds == pytest.approx(12 * 3600, abs=0.002)


def test_gates_refuse_until_they_open_and_never_move_earlier(rds, clock):
    engine = LimiterEngine(rds, now=clock)
    gate = Gate("t:gate", "cooldown")
    engine.close_gate(gate, 5)
    engine.close_gate(gate, 1)  # must not shorten the 5 s already set
    denied = engine.acquire(gates=[gate], budget=BUDGET, cost=1)
    assert (denied.reason, denied.wait_seconds) == ("cooldown", 5.0)
    assert engine.spent(BUDGET, clock()) == 0
    clock.advance(5)
    assert engine.acquire(gates=[gate], budget=BUDGET, cost=1).granted


def test_the_redis_clock_decides_the_budget_day_even_when_the_local_guess_is_wrong(rds):
    engine = LimiterEngine(rds)  # Redis TIME
    engine._offset = 3 * 86400.0  # a local guess three days ahead: the script must correct it
    decision = engine.acquire(budget=BUDGET, cost=4)
    assert decision.granted
    assert decision.at is not None
    redis_day = budget_day(decision.at, BUDGET.timezone).day_id
    assert int(rds.get(f"{BUDGET.key_prefix}:{redis_day}")) == 4
    assert len(rds.keys(f"{BUDGET.key_prefix}:*")) == 1
    assert engine.spent(BUDGET, engine.server_now()) == 4


def test_semaphore_lease_of_a_crashed_holder_lapses(rds, clock):
    semaphore = ConcurrencySemaphore(rds, key="t:sem", limit=2, lease_seconds=30, now=clock)
    first = semaphore.acquire()
    second = semaphore.acquire()
    assert first
    assert second
    assert first != second
    assert semaphore.acquire() is None
    assert semaphore.release(first)
    assert not semaphore.release(first)
    third = semaphore.acquire()
    assert third is not None
    # Both holders "crash": nobody releases; after the lease time the slots are free again.
    clock.advance(30.001)
    assert semaphore.held() == 0
    assert semaphore.acquire() is not None


def test_semaphore_refusal_advises_a_short_poll(rds, clock):
    engine = LimiterEngine(rds, now=clock)
    limit = ConcurrencyLimit("t:sem", limit=1, lease_seconds=60, poll_seconds=0.05)
    assert engine.acquire(semaphore=limit).granted
    denied = engine.acquire(semaphore=limit)
    assert (denied.reason, denied.wait_seconds) == ("concurrency", 0.05)


def test_budget_day_across_a_dst_change():
    # Europe/Berlin springs forward on 2025-03-30: that day has 23 hours.
    day = budget_day(dt.datetime(2025, 3, 30, 12, tzinfo=dt.UTC).timestamp(), "Europe/Berlin")
    assert day.day_id == "20250330"
    assert day.end - day.start == 23 * 3600
    assert day.reset_at == dt.datetime(2025, 3, 31, tzinfo=ZoneInfo("Europe/Berlin"))


@settings(max_examples=300, deadline=None)
@given(
    now=st.floats(min_value=946684800, max_value=2524608000, allow_nan=False),
    zone=st.sampled_from(
        [
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "Asia/Tokyo",
            "America/Santiago",
            "Australia/Lord_Howe",
            "Asia/Kolkata",
        ]
    ),
)
def test_budget_day_contains_now_and_adjacent_days_differ(now, zone):
    day = budget_day(now, zone)
    as_seen_by_the_script = math.floor(now * 1000) / 1000
    assert day.start <= as_seen_by_the_script < day.end
    assert budget_day(day.start, zone).day_id == day.day_id
    assert budget_day(day.end, zone).day_id != day.day_id
    assert day.reset_at.timestamp() == day.end
