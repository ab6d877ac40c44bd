"""Rate-limit bookkeeping of the Pipedrive simulator: daily token budget, burst windows, blocks.

Numbers follow reference §1: budget = 30,000 x plan multiplier x seats per company and day; a
rolling 2-second window of request counts per token (API token and OAuth limits differ by plan);
an extra 10 per 2 s for search; a Cloudflare-style 403 for API tokens that ignore their 429s.
Everything here is pure bookkeeping on timestamps from the simulator's clock; the caller holds the
simulator lock.
"""

from __future__ import annotations

import datetime as dt
import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple
from zoneinfo import ZoneInfo

__all__ = [
    "BASE_DAILY_TOKENS",
    "PLANS",
    "BudgetState",
    "Plan",
    "RequestRecord",
    "TokenWindow",
    "max_in_window",
]

BASE_DAILY_TOKENS = 30_000


@dataclass(frozen=True)
class Plan:
    """What a subscription plan changes: budget multiplier, burst limits, custom-field cap."""

    multiplier: int
    api_burst: int
    oauth_burst: int
    field_limit: int | None


# Current names first, then the legacy names the support article still lists (reference §1.2,
# §1.5, §4.1). A field limit of None means unlimited (legacy Enterprise).
PLANS: dict[str, Plan] = {
    "lite": Plan(1, 20, 80, 30),
    "growth": Plan(2, 40, 160, 100),
    "premium": Plan(5, 100, 400, 300),
    "ultimate": Plan(7, 120, 480, 500),
    "essential": Plan(1, 20, 80, 30),
    "advanced": Plan(2, 40, 160, 100),
    "professional": Plan(3, 80, 320, 300),
    "power": Plan(5, 100, 400, 500),
    "enterprise": Plan(7, 120, 480, None),
}


class RequestRecord(NamedTuple):
    """One request a company's API saw. ``granted`` means it passed the rate limiter."""

    timestamp: float
    token_id: str | None
    method: str
    path: str
    status: int
    cost: int
    granted: bool


@dataclass
class BudgetState:
    """A company's daily token budget, reset at midnight of its time zone."""

    limit: int
    timezone: str = "UTC"
    spent: int = 0
    day: dt.date | None = None

    def roll(self, now: float) -> None:
        """Start a new day's budget when the company's local date has changed."""
        today = dt.datetime.fromtimestamp(now, tz=ZoneInfo(self.timezone)).date()
        if today != self.day:
            self.day = today
            self.spent = 0

    def remaining(self, now: float) -> int:
        """Tokens left today."""
        self.roll(now)
        return max(0, self.limit - self.spent)

    def reset_at(self, now: float) -> dt.datetime:
        """The next local midnight, as an aware datetime in UTC."""
        zone = ZoneInfo(self.timezone)
        local = dt.datetime.fromtimestamp(now, tz=zone)
        midnight = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(), tzinfo=zone)
        return midnight.astimezone(dt.UTC)


@dataclass
class TokenWindow:
    """Rolling windows of one token: granted requests, granted searches and recent 429s."""

    granted: deque[float] = field(default_factory=deque)
    searches: deque[float] = field(default_factory=deque)
    rejections: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0

    @staticmethod
    def _trim(window: deque[float], now: float, width: float) -> None:
        while window and window[0] <= now - width:
            window.popleft()

    def count(self, now: float, width: float, *, search: bool = False) -> int:
        """Requests granted in ``(now - width, now]``."""
        window = self.searches if search else self.granted
        self._trim(window, now, width)
        return len(window)

    def reset_after(self, now: float, width: float, *, search: bool = False) -> int:
        """Whole seconds (≥ 1) until the oldest request leaves the window and frees a slot."""
        window = self.searches if search else self.granted
        self._trim(window, now, width)
        if not window:
            return 1
        return max(1, math.ceil(window[0] + width - now))

    def note_rejection(self, now: float, period: float) -> int:
        """Remember a 429 and return how many this token got within ``period`` seconds."""
        self.rejections.append(now)
        self._trim(self.rejections, now, period)
        return len(self.rejections)


def max_in_window(timestamps: list[float], window: float) -> int:
    """The largest number of ``timestamps`` (sorted) inside any half-open window of ``window`` s."""
    best = 0
    start = 0
    for end, stamp in enumerate(timestamps):
        while timestamps[start] <= stamp - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def count_since(timestamps: list[float], since: float) -> int:
    """How many sorted timestamps are later than ``since``."""
    return len(timestamps) - bisect_right(timestamps, since)
