"""Pipedrive's two limits, shared by every process through Redis.

* A **daily token budget per company**: ``30000 * plan multiplier * seats``, reset at midnight of
  the (unnamed, hence configurable) server time zone. Each operation costs its spec's
  ``x-token-cost`` (:mod:`connector.pipedrive.costs`). A reserve (10 % by default) is kept for
  webhook-driven work so scheduled pulls and backfills cannot starve it.
* A **burst limit per token**: requests in a rolling 2-second window (20 to 120 for an API token,
  80 to 480 for OAuth), plus 10 per 2 s for search endpoints. A search counts against both
  windows (UNCONFIRMED whether Pipedrive does; counting it twice is the safe reading).

Our Redis ledger is the primary accounting because the rate-limit headers are optional. It is
corrected from them when they are present (:meth:`PipedriveLimiter.observe`): the budget counter
only ever moves up, and a 429 or an exhausted window closes a cooldown gate seen by every process
using the same token.

Keys (no secret in any of them; ``company_key`` is the Redis Cluster hash tag)::

    connector:rl:pd:{company}:budget:YYYYMMDD      spent tokens that day
    connector:rl:pd:{company}:tok:<token>:burst    ZSET, 2 s window
    connector:rl:pd:{company}:tok:<token>:search   ZSET, 2 s search window
    connector:rl:pd:{company}:tok:<token>:cooldown closed-until (ms) after a 429
    connector:rl:pd:{company}:tok:<token>:blocked  closed-until (ms) after an HTML 403
    connector:rl:pd:{company}:tok:<token>:strikes  recent 429 count, for escalation
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import redis

from connector.errors import BlockedError, BudgetExhaustedError, RateLimitError
from connector.ratelimit import (
    DailyBudget,
    Decision,
    Gate,
    LimiterEngine,
    Priority,
    SlidingWindow,
    budget_day,
)

__all__ = [
    "BASE_DAILY_TOKENS",
    "BURST_LIMITS",
    "PLAN_MULTIPLIERS",
    "BudgetStatus",
    "PipedriveLimiter",
    "burst_limit_for",
    "daily_budget_for",
    "token_key_for",
]

logger = logging.getLogger(__name__)

BASE_DAILY_TOKENS = 30_000
PLAN_MULTIPLIERS: Mapping[str, int] = {"lite": 1, "growth": 2, "premium": 5, "ultimate": 7}
BURST_LIMITS: Mapping[str, Mapping[str, int]] = {
    "api_token": {"lite": 20, "growth": 40, "premium": 100, "ultimate": 120},
    "oauth": {"lite": 80, "growth": 160, "premium": 400, "ultimate": 480},
}
BURST_SECONDS = 2.0
SEARCH_LIMIT = 10

_SYSTEM = "pipedrive"
_KEY_PART = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_API_TOKEN_SHAPE = re.compile(r"^[0-9a-fA-F]{40}$")
# A 429 without x-ratelimit-reset: 2 s, doubling per repeated 429, up to this cap.
_FIRST_COOLDOWN = 2.0
_MAX_COOLDOWN = 60.0
_STRIKE_MEMORY_SECONDS = 60
# Headers arriving this soon after our midnight may describe the previous day's budget.
_RESET_GRACE_SECONDS = 5.0
_JITTER_SECONDS = 0.02


def daily_budget_for(plan: str, seats: int = 1) -> int:
    """``30000 * multiplier(plan) * seats`` (pipedrive.md §1.2)."""
    try:
        multiplier = PLAN_MULTIPLIERS[plan.lower()]
    except KeyError:
        raise ValueError(f"unknown Pipedrive plan {plan!r}") from None
    if seats < 1:
        raise ValueError("seats must be at least 1")
    return BASE_DAILY_TOKENS * multiplier * seats


def burst_limit_for(plan: str, auth_kind: str) -> int:
    """Requests per rolling 2 s for one token (pipedrive.md §1.5)."""
    try:
        return BURST_LIMITS[auth_kind][plan.lower()]
    except KeyError:
        raise ValueError(f"unknown Pipedrive plan/auth kind {plan!r}/{auth_kind!r}") from None


def token_key_for(token: str) -> str:
    """A stable, non-secret id for a token: the first 16 hex digits of its sha256."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BudgetStatus:
    """A snapshot of one company's budget and one token's burst windows."""

    spent_today: int
    budget: int
    reserve: int
    remaining: int
    burst_used: int
    burst_limit: int
    search_used: int
    search_limit: int
    reset_at: dt.datetime
    cooldown_until: dt.datetime | None
    blocked_until: dt.datetime | None


class PipedriveLimiter:
    """The shared budget and burst limiter for one Pipedrive company and token.

    Args:
        redis: the shared Redis client.
        company_key: identifies the company (the budget is per company); not a secret.
        token_key: a stable, non-secret id of the token (see :func:`token_key_for`).
        plan: ``"lite"``, ``"growth"``, ``"premium"`` or ``"ultimate"``.
        seats: paid seats, multiplying the budget.
        auth_kind: ``"api_token"`` or ``"oauth"``; decides the burst limit.
        timezone: IANA zone whose midnight resets the budget (Pipedrive's is UNCONFIRMED).
        reserve_fraction: share of the budget kept for webhook-driven work.
        daily_budget: overrides the plan formula (e.g. with purchased top-ups).
        burst_limit: overrides the plan's burst limit.
        search_limit: search requests per 2 s.
        blocked_seconds: how long to stop after an HTML 403 (Cloudflare block).
        burst_margin_seconds: added to the 2-second windows, for the time between our grant and
            the request reaching Pipedrive (without it the server can count one request too many).
        now: injected clock (epoch seconds) for tests; ``None`` uses Redis ``TIME``.
        sleep: how :meth:`acquire` waits.
    """

    def __init__(
        self,
        *,
        redis: redis.Redis,
        company_key: str,
        token_key: str,
        plan: str,
        seats: int = 1,
        auth_kind: str,
        timezone: str = "UTC",
        reserve_fraction: float = 0.10,
        daily_budget: int | None = None,
        burst_limit: int | None = None,
        search_limit: int = SEARCH_LIMIT,
        blocked_seconds: float = 600.0,
        burst_margin_seconds: float = 0.1,
        now: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        problems = []
        if not _KEY_PART.match(company_key):
            problems.append("company_key must be 1-64 characters of [A-Za-z0-9_.-]")
        if not _KEY_PART.match(token_key) or _API_TOKEN_SHAPE.match(token_key):
            # A 40-hex token_key is most likely the API token itself, which must never be a key.
            problems.append("token_key must be a short non-secret id, e.g. token_key_for(token)")
        if auth_kind not in BURST_LIMITS:
            problems.append(f"auth_kind must be one of {sorted(BURST_LIMITS)}")
        if not 0 <= reserve_fraction < 1:
            problems.append("reserve_fraction must be in [0, 1)")
        if problems:
            raise ValueError("; ".join(problems))
        ZoneInfo(timezone)  # fail now on a bad zone, not at the first request
        budget = daily_budget if daily_budget is not None else daily_budget_for(plan, seats)
        burst = burst_limit if burst_limit is not None else burst_limit_for(plan, auth_kind)
        if budget < 1 or burst < 1 or search_limit < 1:
            raise ValueError("daily_budget, burst_limit and search_limit must be positive")

        self._engine = LimiterEngine(redis, now=now)
        self._sleep = sleep
        self._blocked_seconds = blocked_seconds
        self._timezone = timezone
        company = f"connector:rl:pd:{{{company_key}}}"
        token = f"{company}:tok:{token_key}"
        self._budget = DailyBudget(
            key_prefix=f"{company}:budget",
            limit=budget,
            reserve=int(budget * reserve_fraction),
            timezone=timezone,
            reason="budget",
            reserve_reason="reserve",
        )
        # Our window is a little longer than Pipedrive's: a request is counted here when it is
        # granted but there when it arrives, and the few milliseconds between them would otherwise
        # let the server see one request too many in its window (measured: 41 of 40 without headers).
        window = BURST_SECONDS + burst_margin_seconds
        self._burst = SlidingWindow(f"{token}:burst", burst, window, "burst")
        self._search = SlidingWindow(f"{token}:search", search_limit, window, "search_burst")
        self._blocked = Gate(f"{token}:blocked", "blocked")
        self._cooldown = Gate(f"{token}:cooldown", "cooldown")
        self._strikes_key = f"{token}:strikes"

    @property
    def budget(self) -> int:
        """Tokens per day."""
        return self._budget.limit

    @property
    def reserve(self) -> int:
        """Tokens kept for webhook-driven work."""
        return self._budget.reserve

    @property
    def burst_limit(self) -> int:
        """Requests per rolling 2 s for this token."""
        return self._burst.limit

    def try_acquire(
        self, cost: int, *, search: bool = False, priority: Priority = Priority.SCHEDULED
    ) -> Decision:
        """Ask once, without waiting: spend ``cost`` tokens and a burst slot, or nothing.

        Args:
            cost: the operation's token cost (:func:`connector.pipedrive.costs.cost_for`).
            search: the request hits a search endpoint (also counts against the search window).
            priority: ``WEBHOOK`` may use the reserve; others stop at ``budget - reserve``.
        """
        windows = [self._search, self._burst] if search else [self._burst]
        return self._engine.acquire(
            gates=[self._blocked, self._cooldown],
            budget=self._budget,
            windows=windows,
            cost=cost,
            priority=priority,
        )

    def acquire(
        self,
        cost: int,
        *,
        search: bool = False,
        priority: Priority = Priority.SCHEDULED,
        max_wait: float = 5.0,
    ) -> Decision:
        """Wait (at most ``max_wait`` seconds in total) until the request may be sent.

        Raises:
            BudgetExhaustedError: the budget (or, below webhook priority, the reserve line)
                cannot cover ``cost`` before the reset; park the work until ``reset_at``.
            BlockedError: the token is blocked after an HTML 403; stop for ``retry_after``.
            RateLimitError: a burst or cooldown wait would exceed ``max_wait``.
        """
        waited = 0.0
        while True:
            decision = self.try_acquire(cost, search=search, priority=priority)
            if decision.granted:
                return decision
            if decision.reason in ("budget", "reserve"):
                what = (
                    "daily token budget"
                    if decision.reason == "budget"
                    else "budget outside the reserve"
                )
                raise BudgetExhaustedError(
                    f"{what} cannot cover {cost} tokens until the reset",
                    reset_at=decision.reset_at,
                    retry_after=decision.wait_seconds,
                    system=_SYSTEM,
                    code=decision.reason,
                )
            if decision.reason == "blocked":
                raise BlockedError(
                    "token blocked after an HTML 403; traffic paused",
                    retry_after=decision.wait_seconds,
                    system=_SYSTEM,
                    code="blocked",
                )
            if waited + decision.wait_seconds > max_wait:
                raise RateLimitError(
                    f"{decision.reason} limit: next slot in {decision.wait_seconds:.3f} s",
                    retry_after=decision.wait_seconds,
                    system=_SYSTEM,
                    code=decision.reason,
                )
            # Jitter keeps the processes woken by the same expiry from colliding again.
            pause = min(
                decision.wait_seconds + random.uniform(0, _JITTER_SECONDS), max_wait - waited
            )
            self._sleep(pause)
            waited += pause

    def observe(
        self, status: int, headers: Mapping[str, str], *, body_is_html: bool = False
    ) -> None:
        """Correct the shared state from a response. Missing headers change nothing.

        * ``x-daily-ratelimit-token-remaining`` lower than our ledger: move spent up, never down;
          0 marks the budget spent until the reset.
        * ``x-ratelimit-remaining: 0``: cooldown of ``x-ratelimit-reset`` seconds for the token.
        * 429: daily header 0 means the budget is gone; otherwise a cooldown for every process on
          the token (``x-ratelimit-reset`` s, else 2 s doubling on repeated 429s, up to 60 s).
        * 403 with an HTML body: the token is blocked for ``blocked_seconds``.
        """
        lowered = {name.lower(): value for name, value in headers.items()}
        daily_left = _header_int(lowered, "x-daily-ratelimit-token-remaining")
        window_left = _header_int(lowered, "x-ratelimit-remaining")
        window_reset = _header_float(lowered, "x-ratelimit-reset")

        if daily_left is not None:
            self._correct_budget(daily_left)
        if status == 403 and body_is_html:
            until = self._engine.close_gate(self._blocked, self._blocked_seconds)
            logger.warning("pipedrive token blocked (HTML 403) until %s", _stamp(until))
            return
        if status == 429:
            if daily_left == 0:
                return  # the budget correction above already parks everyone until the reset
            strikes = self._strike()
            if window_reset is not None and window_reset > 0:
                seconds = window_reset
            else:
                seconds = min(_MAX_COOLDOWN, _FIRST_COOLDOWN * 2 ** (strikes - 1))
            self._engine.close_gate(self._cooldown, seconds)
            logger.info("pipedrive 429: cooldown %.1f s (strike %d)", seconds, strikes)
            return
        if window_left == 0 and window_reset is not None and window_reset > 0:
            self._engine.close_gate(self._cooldown, window_reset)

    def spent_today(self) -> int:
        """Tokens spent (by our ledger, corrected by headers) in the current budget day."""
        return self._engine.spent(self._budget, self._engine.server_now())

    def status(self) -> BudgetStatus:
        """A snapshot for dashboards and logs."""
        now = self._engine.server_now()
        spent = self._engine.spent(self._budget, now)
        cooldown = self._engine.gate_until(self._cooldown, now)
        blocked = self._engine.gate_until(self._blocked, now)
        zone = ZoneInfo(self._timezone)
        return BudgetStatus(
            spent_today=spent,
            budget=self._budget.limit,
            reserve=self._budget.reserve,
            remaining=max(0, self._budget.limit - spent),
            burst_used=self._engine.window_count(self._burst, now),
            burst_limit=self._burst.limit,
            search_used=self._engine.window_count(self._search, now),
            search_limit=self._search.limit,
            reset_at=budget_day(now, self._timezone).reset_at,
            cooldown_until=None if cooldown is None else dt.datetime.fromtimestamp(cooldown, zone),
            blocked_until=None if blocked is None else dt.datetime.fromtimestamp(blocked, zone),
        )

    def _correct_budget(self, daily_left: int) -> None:
        now = self._engine.server_now()
        if now - budget_day(now, self._timezone).start < _RESET_GRACE_SECONDS:
            return
        floor = self._budget.limit - max(0, daily_left)
        self._engine.raise_spent(self._budget, now, floor)
        if daily_left <= 0:
            logger.warning("pipedrive daily token budget reported spent; parking until reset")

    def _strike(self) -> int:
        pipe = self._engine.redis.pipeline()
        pipe.incr(self._strikes_key)
        pipe.expire(self._strikes_key, _STRIKE_MEMORY_SECONDS)
        count, _ = pipe.execute()
        return int(count)


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    value = _header_float(headers, name)
    return None if value is None else int(value)


def _header_float(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return float(raw.strip())
    except ValueError:
        return None


def _stamp(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")
