"""Celery workers: thin adapters that load state and call one connector function per task."""

from __future__ import annotations
