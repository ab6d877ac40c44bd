"""Distributed rate limiting on Redis: one atomic Lua script per acquisition.

Every worker process, on every machine, asks the same Redis before each API call. One
``EVALSHA`` checks, in this order, and spends only if everything passes:

1. **gates**: "closed until" keys (a shared cooldown after a 429, a block after an HTML 403);
2. **a daily budget**: a counter per budget day, checked against ``limit - reserve`` (the
   reserve is kept for webhook-driven work) with a per-request cost;
3. **sliding windows**: one ZSET per window, members unique per request, scored in ms;
4. **a concurrency semaphore**: a ZSET of leases scored by their expiry, so a crashed
   process cannot hold a slot forever.

A rejected acquisition spends nothing and says how long to wait.

Time:
    By default the script reads Redis ``TIME``, so all machines share one clock. Tests may inject
    ``now`` (epoch seconds); it is then passed to the script instead (time-machine cannot freeze
    Redis). The budget *day* depends on an IANA time zone, which Lua cannot evaluate, so Python
    computes the day (its key and its ``[start, end)`` instants) from its best estimate of the
    Redis clock (the local clock corrected by the offset seen in the previous reply). The script
    then checks that its own ``TIME`` falls inside ``[start, end)``; if not (first call, or a call
    straddling midnight) it answers ``"clock"`` with its time and Python recomputes the day and
    tries again. So the day a request is charged to is always decided by the Redis clock, and two
    processes acquiring at the same instant always agree, at the cost of a rare second round trip.

Keys of one limited resource should share a Redis Cluster hash tag (``{...}``) so the script can
touch them together.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import redis

__all__ = [
    "BudgetDay",
    "ConcurrencyLimit",
    "ConcurrencySemaphore",
    "DailyBudget",
    "Decision",
    "Gate",
    "LimiterEngine",
    "Priority",
    "SlidingWindow",
    "budget_day",
]

Clock = Callable[[], float]


class Priority(enum.StrEnum):
    """Who is asking. Webhook-driven work may dip into the reserve; the others stop short of it."""

    WEBHOOK = "webhook"
    SCHEDULED = "scheduled"
    BACKFILL = "backfill"


@dataclass(frozen=True)
class Decision:
    """The answer to one acquisition.

    Attributes:
        granted: whether the request may be sent now (and its cost was spent).
        wait_seconds: how long to wait before asking again; 0 when granted.
        reason: ``"ok"`` or what refused: ``"burst"``, ``"search_burst"``, ``"budget"``,
            ``"reserve"``, ``"cooldown"``, ``"blocked"``, ``"per_minute"``, ``"daily"``,
            ``"concurrency"``.
        remaining: budget left after this grant (or before, on a refusal); ``None`` without a budget.
        reset_at: when the daily budget resets (aware, in the budget's time zone).
        at: the limiter clock (Redis ``TIME`` unless injected) when the script ran, epoch seconds.
        lease: the concurrency lease held by a granted acquisition, if a semaphore was involved.
    """

    granted: bool
    wait_seconds: float
    reason: str
    remaining: int | None = None
    reset_at: dt.datetime | None = None
    at: float | None = None
    lease: str | None = None


@dataclass(frozen=True)
class Gate:
    """A key holding "closed until" (epoch ms); while in the future, acquisitions are refused."""

    key: str
    reason: str


@dataclass(frozen=True)
class SlidingWindow:
    """At most ``limit`` requests in any rolling ``seconds``."""

    key: str
    limit: int
    seconds: float
    reason: str


@dataclass(frozen=True)
class DailyBudget:
    """A budget of ``limit`` units per calendar day in ``timezone``, reset at local midnight.

    ``reserve`` units are kept for :attr:`Priority.WEBHOOK` work. Counters live at
    ``{key_prefix}:{YYYYMMDD}``.
    """

    key_prefix: str
    limit: int
    reserve: int = 0
    timezone: str = "UTC"
    reason: str = "budget"
    reserve_reason: str = "reserve"

    def ceiling(self, priority: Priority) -> int:
        """The highest spent total this priority may reach."""
        if priority is Priority.WEBHOOK:
            return self.limit
        return max(0, self.limit - self.reserve)


@dataclass(frozen=True)
class ConcurrencyLimit:
    """At most ``limit`` leases held at once; a lease lapses after ``lease_seconds``."""

    key: str
    limit: int
    lease_seconds: float = 120.0
    poll_seconds: float = 0.05
    reason: str = "concurrency"


@dataclass(frozen=True)
class BudgetDay:
    """One budget day: its id (``YYYYMMDD`` local date) and its ``[start, end)`` instants."""

    day_id: str
    start: float
    end: float
    reset_at: dt.datetime


def budget_day(now: float, timezone: str) -> BudgetDay:
    """The budget day containing ``now`` (epoch seconds) in the IANA ``timezone``.

    A day runs from local midnight to the next local midnight, so it is 23 or 25 hours long
    across a DST change. ``now`` is truncated to the millisecond first, as the script sees it.
    """
    zone = ZoneInfo(timezone)
    now = math.floor(now * 1000) / 1000
    local_date = dt.datetime.fromtimestamp(now, zone).date()
    start = dt.datetime.combine(local_date, dt.time(0), tzinfo=zone)
    reset_at = dt.datetime.combine(local_date + dt.timedelta(days=1), dt.time(0), tzinfo=zone)
    return BudgetDay(
        day_id=local_date.strftime("%Y%m%d"),
        start=start.timestamp(),
        end=reset_at.timestamp(),
        reset_at=reset_at,
    )


# KEYS: gates, then [budget], then windows, then [semaphore] (counts in ARGV).
# ARGV: now_ms ('' = Redis TIME), n_gates, n_windows, has_budget, has_sem, member, then per
# gate: reason; budget: limit, ceiling, cost, start_ms, end_ms, keep_ms, reason, reserve_reason;
# per window: limit, length_ms, reason; semaphore: limit, lease_ms, poll_ms, reason.
# Returns {granted, wait_ms, reason, remaining (-1: none), now_ms, lease ('' = none)}.
_ACQUIRE_LUA = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[1])
end
local n_gates = tonumber(ARGV[2])
local n_windows = tonumber(ARGV[3])
local has_budget = ARGV[4] == '1'
local has_sem = ARGV[5] == '1'
local member = ARGV[6]
local a = 7
local k = 1

for i = 1, n_gates do
  local closed_until = tonumber(redis.call('GET', KEYS[k]) or '0')
  if closed_until > now then
    return {0, closed_until - now, ARGV[a], -1, now, ''}
  end
  k = k + 1
  a = a + 1
end

local bkey, blimit, bcost, bkeep
if has_budget then
  bkey = KEYS[k]
  blimit = tonumber(ARGV[a])
  local ceiling = tonumber(ARGV[a + 1])
  bcost = tonumber(ARGV[a + 2])
  local start_ms = tonumber(ARGV[a + 3])
  local end_ms = tonumber(ARGV[a + 4])
  bkeep = tonumber(ARGV[a + 5])
  if now < start_ms or now >= end_ms then
    return {0, 0, 'clock', -1, now, ''}
  end
  local spent = tonumber(redis.call('GET', bkey) or '0')
  local left = math.max(0, blimit - spent)
  if spent + bcost > blimit then
    return {0, end_ms - now, ARGV[a + 6], left, now, ''}
  end
  if spent + bcost > ceiling then
    return {0, end_ms - now, ARGV[a + 7], left, now, ''}
  end
  bkeep = end_ms - now + bkeep
  k = k + 1
  a = a + 8
end

local wkeys = {}
local wlengths = {}
local worst_wait = -1
local worst_reason = ''
for i = 1, n_windows do
  local key = KEYS[k]
  local limit = tonumber(ARGV[a])
  local length = tonumber(ARGV[a + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - length)
  local count = redis.call('ZCARD', key)
  if count >= limit then
    local wait = length
    if count > 0 and limit > 0 then
      local entry = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
      wait = tonumber(entry[2]) + length - now
    end
    if wait > worst_wait then
      worst_wait = wait
      worst_reason = ARGV[a + 2]
    end
  end
  wkeys[i] = key
  wlengths[i] = length
  k = k + 1
  a = a + 3
end
if worst_wait >= 0 then
  return {0, math.max(1, worst_wait), worst_reason, -1, now, ''}
end

local skey, slease
if has_sem then
  skey = KEYS[k]
  local limit = tonumber(ARGV[a])
  slease = tonumber(ARGV[a + 1])
  local poll = tonumber(ARGV[a + 2])
  redis.call('ZREMRANGEBYSCORE', skey, '-inf', now)
  local count = redis.call('ZCARD', skey)
  if count >= limit then
    local wait = poll
    if count > 0 then
      local first = redis.call('ZRANGE', skey, 0, 0, 'WITHSCORES')
      wait = math.min(poll, tonumber(first[2]) - now)
    end
    return {0, math.max(1, wait), ARGV[a + 3], -1, now, ''}
  end
end

local remaining = -1
if has_budget then
  local spent = redis.call('INCRBY', bkey, bcost)
  redis.call('PEXPIRE', bkey, bkeep)
  remaining = math.max(0, blimit - spent)
end
for i = 1, n_windows do
  redis.call('ZADD', wkeys[i], now, member)
  redis.call('PEXPIRE', wkeys[i], wlengths[i])
end
local lease = ''
if has_sem then
  redis.call('ZADD', skey, now + slease, member)
  if redis.call('PTTL', skey) < slease then
    redis.call('PEXPIRE', skey, slease)
  end
  lease = member
end
return {1, 0, 'ok', remaining, now, lease}
"""

# Push a gate's "closed until" to now + ARGV[2] ms, never pulling it earlier.
# Returns {closed_until_ms, now_ms}.
_EXTEND_GATE_LUA = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[1])
end
local target = now + tonumber(ARGV[2])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current >= target then
  return {current, now}
end
redis.call('SET', KEYS[1], string.format('%d', target), 'PX', math.max(1, target - now))
return {target, now}
"""

# Raise a budget counter to at least ARGV[1], never lowering it. ARGV[2] is its lifetime in ms.
# Returns the counter after the call.
_RAISE_COUNTER_LUA = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if current >= floor then
  return current
end
redis.call('SET', KEYS[1], string.format('%d', floor), 'PX', tonumber(ARGV[2]))
return floor
"""

# A day is kept this long past its reset, so late header corrections still find it.
_KEEP_AFTER_RESET_MS = 86_400_000
_MAX_CLOCK_RETRIES = 3


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class LimiterEngine:
    """Runs the acquisition script and the small helper scripts on one Redis.

    Args:
        redis: the shared Redis client (bytes or decoded responses both work).
        now: an injected clock (epoch seconds) for tests; ``None`` uses Redis ``TIME``.
    """

    def __init__(self, redis: redis.Redis, *, now: Clock | None = None) -> None:
        self._redis = redis
        self._now = now
        # Estimated (Redis clock - local clock), learnt from every reply; only used to guess the
        # budget day, which the script then verifies against its own TIME.
        self._offset = 0.0
        self._acquire = redis.register_script(_ACQUIRE_LUA)
        self._extend_gate = redis.register_script(_EXTEND_GATE_LUA)
        self._raise_counter = redis.register_script(_RAISE_COUNTER_LUA)

    @property
    def redis(self) -> redis.Redis:
        """The Redis client in use."""
        return self._redis

    def server_now(self) -> float:
        """The limiter clock now: the injected one, or Redis ``TIME`` (one round trip)."""
        if self._now is not None:
            return self._now()
        seconds, micros = self._redis.time()
        now = float(seconds) + float(micros) / 1e6
        self._offset = now - time.time()
        return now

    def acquire(
        self,
        *,
        gates: Sequence[Gate] = (),
        budget: DailyBudget | None = None,
        windows: Sequence[SlidingWindow] = (),
        semaphore: ConcurrencyLimit | None = None,
        cost: int = 0,
        priority: Priority = Priority.SCHEDULED,
    ) -> Decision:
        """Check everything atomically; spend ``cost`` and one window slot each only if all pass.

        Args:
            gates: cooldown/blocked keys, checked first, in order.
            budget: the daily budget to charge ``cost`` to, if any.
            windows: sliding windows; each grant adds one request to each.
            semaphore: a concurrency limit; a grant holds a lease (:attr:`Decision.lease`).
            cost: budget units this request spends.
            priority: decides whether the budget's reserve may be used.

        Returns:
            The decision; on a refusal, nothing was spent.
        """
        if cost < 0:
            raise ValueError("cost must not be negative")
        member = uuid.uuid4().hex
        injected = self._now() if self._now is not None else None
        guess = injected if injected is not None else time.time() + self._offset
        for _ in range(_MAX_CLOCK_RETRIES):
            day = budget_day(guess, budget.timezone) if budget is not None else None
            keys: list[str] = [gate.key for gate in gates]
            args: list[str | int] = [
                "" if injected is None else int(injected * 1000),
                len(gates),
                len(windows),
                1 if budget is not None else 0,
                1 if semaphore is not None else 0,
                member,
            ]
            args.extend(gate.reason for gate in gates)
            if budget is not None and day is not None:
                keys.append(f"{budget.key_prefix}:{day.day_id}")
                args.extend(
                    [
                        budget.limit,
                        budget.ceiling(priority),
                        cost,
                        int(day.start * 1000),
                        int(day.end * 1000),
                        _KEEP_AFTER_RESET_MS,
                        budget.reason,
                        budget.reserve_reason,
                    ]
                )
            for window in windows:
                keys.append(window.key)
                args.extend([window.limit, int(window.seconds * 1000), window.reason])
            if semaphore is not None:
                keys.append(semaphore.key)
                args.extend(
                    [
                        semaphore.limit,
                        int(semaphore.lease_seconds * 1000),
                        int(semaphore.poll_seconds * 1000),
                        semaphore.reason,
                    ]
                )
            granted, wait_ms, reason, remaining, now_ms, lease = self._acquire(keys=keys, args=args)
            server_now = int(now_ms) / 1000
            if injected is None:
                self._offset = server_now - time.time()
            reason = _text(reason)
            if reason == "clock":
                guess = server_now
                continue
            return Decision(
                granted=bool(granted),
                wait_seconds=int(wait_ms) / 1000,
                reason=reason,
                remaining=None if int(remaining) < 0 else int(remaining),
                reset_at=day.reset_at if day is not None else None,
                at=server_now,
                lease=_text(lease) or None,
            )
        # Only reachable if the Redis clock jumps across midnight on every attempt.
        raise RuntimeError("could not agree on the budget day with the Redis clock")

    def close_gate(self, gate: Gate, seconds: float) -> float:
        """Keep ``gate`` closed for at least ``seconds`` from now; returns "closed until" (epoch s)."""
        now_arg = "" if self._now is None else int(self._now() * 1000)
        until_ms, _now_ms = self._extend_gate(
            keys=[gate.key], args=[now_arg, max(1, int(seconds * 1000))]
        )
        return int(until_ms) / 1000

    def gate_until(self, gate: Gate, now: float) -> float | None:
        """When ``gate`` opens (epoch seconds), or ``None`` if it is open at ``now``."""
        raw = self._redis.get(gate.key)
        if raw is None:
            return None
        until = int(_text(raw)) / 1000
        return until if until > now else None

    def spent(self, budget: DailyBudget, now: float) -> int:
        """Units spent on the budget day containing ``now``."""
        day = budget_day(now, budget.timezone)
        raw = self._redis.get(f"{budget.key_prefix}:{day.day_id}")
        return 0 if raw is None else int(_text(raw))

    def raise_spent(self, budget: DailyBudget, now: float, at_least: int) -> int:
        """Move the spent counter of ``now``'s day up to ``at_least`` (never down); returns it."""
        day = budget_day(now, budget.timezone)
        keep_ms = max(1, int((day.end - now) * 1000) + _KEEP_AFTER_RESET_MS)
        result = self._raise_counter(
            keys=[f"{budget.key_prefix}:{day.day_id}"], args=[max(0, at_least), keep_ms]
        )
        return int(result)

    def window_count(self, window: SlidingWindow, now: float) -> int:
        """Requests counted in ``window`` during the ``seconds`` before ``now``."""
        low = int(now * 1000) - int(window.seconds * 1000)
        return int(self._redis.zcount(window.key, f"({low}", "+inf"))

    def leases_held(self, semaphore: ConcurrencyLimit, now: float) -> int:
        """Leases of ``semaphore`` not yet expired at ``now``."""
        return int(self._redis.zcount(semaphore.key, f"({int(now * 1000)}", "+inf"))

    def release(self, semaphore: ConcurrencyLimit, lease: str) -> bool:
        """Give a lease back; ``False`` if it had already lapsed or been released."""
        return bool(self._redis.zrem(semaphore.key, lease))


class ConcurrencySemaphore:
    """A stand-alone distributed semaphore whose leases expire.

    Args:
        redis: the shared Redis client.
        key: the ZSET holding the leases.
        limit: how many leases may be held at once.
        lease_seconds: after this, a lease that was never released (crashed holder) lapses.
        now: an injected clock for tests; ``None`` uses Redis ``TIME``.
    """

    def __init__(
        self,
        redis: redis.Redis,
        *,
        key: str,
        limit: int,
        lease_seconds: float = 120.0,
        now: Clock | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._engine = LimiterEngine(redis, now=now)
        self._limit = ConcurrencyLimit(key=key, limit=limit, lease_seconds=lease_seconds)

    def acquire(self) -> str | None:
        """Take a slot without waiting: the lease id, or ``None`` when all slots are held."""
        return self._engine.acquire(semaphore=self._limit).lease

    def release(self, lease: str) -> bool:
        """Free the slot held by ``lease``; ``False`` if it had already lapsed or been released."""
        return self._engine.release(self._limit, lease)

    def held(self) -> int:
        """Leases currently held."""
        return self._engine.leases_held(self._limit, self._engine.server_now())
