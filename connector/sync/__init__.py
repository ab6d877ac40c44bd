"""The sync engine: plan, then apply; idempotent; every considered record audited."""

from __future__ import annotations
