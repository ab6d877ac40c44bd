"""How times and durations are shown to people, the same on the command line and the web pages."""

from __future__ import annotations

import datetime as dt

from connector.models import utcnow

__all__ = ["ago", "duration", "when"]


def duration(seconds: float | None) -> str:
    """``95`` → ``1 min 35 s``; ``None`` → an em dash."""
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def ago(moment: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """How long ago ``moment`` was ("in ..." for the future), or "never"."""
    if moment is None:
        return "never"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    seconds = ((now or utcnow()) - moment).total_seconds()
    if seconds < 0:
        return f"in {duration(-seconds)}"
    return f"{duration(seconds)} ago"


def when(moment: dt.datetime | None) -> str:
    """A UTC timestamp to the second."""
    if moment is None:
        return "—"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
