"""Rate limiter unit tests."""

from __future__ import annotations
