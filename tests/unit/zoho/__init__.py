"""Unit tests of connector.zoho."""

from __future__ import annotations
