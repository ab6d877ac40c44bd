"""Integration tests against the real services."""

from __future__ import annotations
