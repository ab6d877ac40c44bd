"""Zoho's timestamp format: ISO 8601 with an offset that has no colon (``2016-06-11T17:38:06-0700``)."""

from __future__ import annotations

import datetime as dt

__all__ = ["ZOHO_TIME_FORMAT", "format_zoho_time", "parse_zoho_time"]

ZOHO_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def parse_zoho_time(value: str) -> dt.datetime:
    """Parse a Zoho timestamp into an aware datetime.

    Accepts the documented ``-0700`` offset and, leniently, ``-07:00`` and ``Z``.

    Raises:
        ValueError: the value is not a Zoho timestamp (no offset, wrong shape).
    """
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+0000"
    parsed = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z")
    if parsed.tzinfo is None:  # pragma: no cover - %z always yields an aware datetime
        raise ValueError(f"timestamp {value!r} has no UTC offset")
    return parsed


def format_zoho_time(moment: dt.datetime) -> str:
    """Format an aware datetime the way Zoho's filters expect, in UTC (``...+0000``).

    Raises:
        ValueError: ``moment`` is naive (its zone would be a guess).
    """
    if moment.tzinfo is None:
        raise ValueError("naive datetimes are ambiguous; pass an aware datetime")
    return moment.astimezone(dt.UTC).strftime(ZOHO_TIME_FORMAT)
