"""Four real processes share one PipedriveLimiter on the real Redis and never break its limits."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import random
import time
from collections import Counter

import pytest
import redis

from connector.pipedrive.limiter import PipedriveLimiter
from connector.ratelimit import Priority

PROCESSES = 4
BURST = 40  # Growth plan, API token
BUDGET = 300
RESERVE_FRACTION = 0.10
# Long enough to reach the reserve with room to spare on a loaded machine: the burst lets about
# 66 tokens a second through, so 5 s were barely 330 tokens for a 300-token budget.
RUN_SECONDS = 8.0
STARTUP_SLACK = 2.5  # spawned interpreters need time to import before the common start
COSTS = [1, 1, 1, 2, 5, 10]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _zone_far_from_midnight() -> str:
    # Keeps a run from straddling a budget reset, which would make "spent == granted" ambiguous.
    utc_hour = dt.datetime.now(dt.UTC).hour
    return "UTC" if 1 <= utc_hour <= 22 else "Asia/Tokyo"


def _limiter(url: str, zone: str) -> PipedriveLimiter:
    return PipedriveLimiter(
        redis=redis.Redis.from_url(url),
        company_key="proc-test",
        token_key="token-1",
        plan="growth",
        auth_kind="api_token",
        daily_budget=BUDGET,
        reserve_fraction=RESERVE_FRACTION,
        timezone=zone,
    )


def hammer(
    url: str, zone: str, priority: str, seed: int, start_at: float, stop_at: float
) -> tuple[list[tuple[int, int, int]], dict[str, int]]:
    """Acquire as fast as allowed; return (grant ms on the Redis clock, cost, remaining) and refusals."""
    limiter = _limiter(url, zone)
    rng = random.Random(seed)
    grants: list[tuple[int, int, int]] = []
    refusals: Counter[str] = Counter()
    while time.time() < start_at:
        time.sleep(0.002)
    while time.time() < stop_at:
        cost = rng.choice(COSTS)
        decision = limiter.try_acquire(cost, priority=Priority(priority))
        if decision.granted:
            assert decision.at is not None
            assert decision.remaining is not None
            grants.append((round(decision.at * 1000), cost, decision.remaining))
            continue
        refusals[decision.reason] += 1
        # Budget refusals may still let a cheaper request through: retry soon with another cost.
        pause = 0.005 if decision.reason in ("budget", "reserve") else decision.wait_seconds
        time.sleep(min(pause + rng.uniform(0, 0.005), max(0.0, stop_at - time.time())))
    return grants, dict(refusals)


def test_four_processes_never_exceed_burst_or_budget(redis_url):
    zone = _zone_far_from_midnight()
    start_at = time.time() + STARTUP_SLACK
    stop_at = start_at + RUN_SECONDS
    priorities = [Priority.WEBHOOK] + [Priority.SCHEDULED] * (PROCESSES - 1)
    context = multiprocessing.get_context("spawn")
    with context.Pool(PROCESSES) as pool:
        results = pool.starmap(
            hammer,
            [
                (redis_url, zone, str(p), seed, start_at, stop_at)
                for seed, p in enumerate(priorities)
            ],
        )

    grants = sorted(grant for process_grants, _ in results for grant in process_grants)
    refusals: Counter[str] = Counter()
    for _, process_refusals in results:
        refusals.update(process_refusals)
    stamps = [stamp for stamp, _, _ in grants]

    # No rolling 2 s window (the script's own ms clock, (t-2000, t]) holds more than the burst limit.
    busiest = 0
    low = 0
    for high, stamp in enumerate(stamps):
        while stamps[low] <= stamp - 2000:
            low += 1
        busiest = max(busiest, high - low + 1)
    assert busiest <= BURST
    assert busiest == BURST, "the processes never filled the burst window: the test proved nothing"
    assert refusals["burst"] > 0

    spent = _limiter(redis_url, zone).spent_today()
    assert spent == sum(cost for _, cost, _ in grants)
    assert spent <= BUDGET
    reserve = int(BUDGET * RESERVE_FRACTION)
    # Scheduled processes stopped at the reserve line; the webhook process went past it.
    for process_grants, _ in results[1:]:
        assert all(remaining >= reserve for _, _, remaining in process_grants)
    assert spent > BUDGET - reserve
    assert refusals["reserve"] > 0
