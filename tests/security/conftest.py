"""Fixtures shared by the attack tests."""

from __future__ import annotations

from tests.security.attacker import attacker

__all__ = ["attacker"]
