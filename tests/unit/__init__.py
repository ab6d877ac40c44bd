"""Unit tests."""

from __future__ import annotations
