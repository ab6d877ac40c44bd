"""Zoho Books' limits per organization, shared by every process through Redis.

Zoho allows 100 requests per rolling minute per organization, a daily total that depends on the
plan, and about 10 requests in flight at once (zoho-books.md §6.3). One acquisition takes a
concurrency lease, one slot of the minute window and one request of the day, atomically, or
nothing. Zoho sends no rate-limit headers, so :meth:`ZohoLimiter.observe` reacts to the error
codes instead (44 per minute, 45 daily, 1070 concurrency).

Keys (``org_key`` is the Redis Cluster hash tag; it is an id, not a secret)::

    connector:rl:zoho:{org}:minute          ZSET, 60 s window
    connector:rl:zoho:{org}:day:YYYYMMDD    requests that day
    connector:rl:zoho:{org}:inflight        ZSET of leases scored by expiry
    connector:rl:zoho:{org}:cooldown        closed-until (ms) after a 429
"""

from __future__ import annotations

import logging
import random
import re
import time
import types
from collections.abc import Callable, Mapping
from zoneinfo import ZoneInfo

import redis

from connector.errors import BudgetExhaustedError, RateLimitError
from connector.ratelimit import (
    ConcurrencyLimit,
    DailyBudget,
    Decision,
    Gate,
    LimiterEngine,
    SlidingWindow,
)

__all__ = ["DAILY_LIMITS", "ZohoLimiter", "ZohoPermit", "daily_limit_for_plan"]

logger = logging.getLogger(__name__)

DAILY_LIMITS: Mapping[str, int] = {
    "free": 1000,
    "standard": 2000,
    "professional": 5000,
    "premium": 10000,
    "elite": 10000,
    "ultimate": 10000,
}

_SYSTEM = "zoho"
_KEY_PART = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_JITTER_SECONDS = 0.02


def daily_limit_for_plan(plan: str) -> int:
    """Requests per day for a Zoho Books plan (zoho-books.md §6.3)."""
    try:
        return DAILY_LIMITS[plan.lower()]
    except KeyError:
        raise ValueError(f"unknown Zoho Books plan {plan!r}") from None


class ZohoPermit:
    """A granted acquisition: holds a concurrency lease until released (or its lease lapses).

    Use it as a context manager around the HTTP call; releasing twice is harmless.
    """

    def __init__(self, limiter: ZohoLimiter, decision: Decision) -> None:
        self._limiter = limiter
        self.decision = decision
        self._released = False

    @property
    def lease(self) -> str | None:
        """The concurrency lease id."""
        return self.decision.lease

    def release(self) -> None:
        """Free the concurrency slot now."""
        if not self._released and self.decision.lease is not None:
            self._limiter.release(self.decision.lease)
        self._released = True

    def __enter__(self) -> ZohoPermit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        self.release()


class ZohoLimiter:
    """The shared limiter for one Zoho Books organization.

    Args:
        redis: the shared Redis client.
        org_key: identifies the organization (e.g. its organization_id); not a secret.
        per_minute: requests per rolling 60 s.
        daily_limit: requests per day (see :func:`daily_limit_for_plan`).
        concurrency: requests in flight at once.
        timezone: IANA zone whose midnight resets the daily count (Zoho's is UNCONFIRMED).
        lease_seconds: a lease never released (crashed process) lapses after this.
        per_minute_cooldown: pause for the org after a code 44 (Zoho names no duration).
        window_margin_seconds: added to the 60 s window, for the time between our grant and the
            request reaching Zoho (without it Zoho can count 101 in its minute and block the org).
        concurrency_backoff: pause for the org after a code 1070.
        now: injected clock (epoch seconds) for tests; ``None`` uses Redis ``TIME``.
        sleep: how :meth:`acquire` waits.
    """

    def __init__(
        self,
        redis: redis.Redis,
        *,
        org_key: str,
        per_minute: int = 100,
        daily_limit: int = 10000,
        concurrency: int = 10,
        timezone: str = "UTC",
        lease_seconds: float = 120.0,
        per_minute_cooldown: float = 60.0,
        window_margin_seconds: float = 1.0,
        concurrency_backoff: float = 2.0,
        now: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not _KEY_PART.match(org_key):
            raise ValueError("org_key must be 1-64 characters of [A-Za-z0-9_.-]")
        if min(per_minute, daily_limit, concurrency) < 1:
            raise ValueError("per_minute, daily_limit and concurrency must be positive")
        ZoneInfo(timezone)
        self._engine = LimiterEngine(redis, now=now)
        self._sleep = sleep
        self._per_minute_cooldown = per_minute_cooldown
        self._concurrency_backoff = concurrency_backoff
        org = f"connector:rl:zoho:{{{org_key}}}"
        self._cooldown = Gate(f"{org}:cooldown", "cooldown")
        self._daily = DailyBudget(
            key_prefix=f"{org}:day", limit=daily_limit, timezone=timezone, reason="daily"
        )
        self._minute = SlidingWindow(
            f"{org}:minute", per_minute, 60.0 + window_margin_seconds, "per_minute"
        )
        self._inflight = ConcurrencyLimit(
            key=f"{org}:inflight", limit=concurrency, lease_seconds=lease_seconds
        )

    def try_acquire(self) -> Decision:
        """Ask once: on a grant, one request is spent and :attr:`Decision.lease` is held."""
        return self._engine.acquire(
            gates=[self._cooldown],
            budget=self._daily,
            windows=[self._minute],
            semaphore=self._inflight,
            cost=1,
        )

    def acquire(self, *, max_wait: float = 5.0) -> ZohoPermit:
        """Wait (at most ``max_wait`` s in total) for a slot; use the result as a context manager.

        Raises:
            BudgetExhaustedError: the day's requests are spent; park until ``reset_at``.
            RateLimitError: the minute window, a cooldown or the concurrency slots would need a
                longer wait than ``max_wait``.
        """
        waited = 0.0
        while True:
            decision = self.try_acquire()
            if decision.granted:
                return ZohoPermit(self, decision)
            if decision.reason == "daily":
                raise BudgetExhaustedError(
                    "daily API request limit reached for the organization",
                    reset_at=decision.reset_at,
                    retry_after=decision.wait_seconds,
                    system=_SYSTEM,
                    code="daily",
                )
            if waited + decision.wait_seconds > max_wait:
                raise RateLimitError(
                    f"{decision.reason} limit: next slot in {decision.wait_seconds:.3f} s",
                    retry_after=decision.wait_seconds,
                    system=_SYSTEM,
                    code=decision.reason,
                )
            pause = min(
                decision.wait_seconds + random.uniform(0, _JITTER_SECONDS), max_wait - waited
            )
            self._sleep(pause)
            waited += pause

    def release(self, lease: str) -> bool:
        """Free a concurrency slot; ``False`` if the lease had already lapsed."""
        return self._engine.release(self._inflight, lease)

    def observe(self, status: int, code: int | None) -> None:
        """Correct the shared state from a Zoho error.

        * 44 (per-minute limit): the whole org pauses ``per_minute_cooldown`` seconds.
        * 45 (daily limit): the day is marked spent until the reset.
        * 1070 (too many in flight): the org pauses ``concurrency_backoff`` seconds.
        """
        if status != 429:
            return
        if code == 44:
            self._engine.close_gate(self._cooldown, self._per_minute_cooldown)
            logger.warning("zoho per-minute limit hit (44); org paused")
        elif code == 45:
            now = self._engine.server_now()
            self._engine.raise_spent(self._daily, now, self._daily.limit)
            logger.warning("zoho daily limit hit (45); parking until reset")
        elif code == 1070:
            self._engine.close_gate(self._cooldown, self._concurrency_backoff)

    def spent_today(self) -> int:
        """Requests counted today."""
        return self._engine.spent(self._daily, self._engine.server_now())

    def in_flight(self) -> int:
        """Leases currently held."""
        return self._engine.leases_held(self._inflight, self._engine.server_now())

    def minute_used(self) -> int:
        """Requests in the last 60 s."""
        return self._engine.window_count(self._minute, self._engine.server_now())
