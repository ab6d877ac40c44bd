"""Zoho Books: client, limiter and mapping helpers."""

from __future__ import annotations
