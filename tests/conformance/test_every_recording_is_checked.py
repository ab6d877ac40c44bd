"""A recording nobody checks is a recording that proves nothing: each must have its check."""

from __future__ import annotations

import pytest

from tests.conformance.recordings import RECORDINGS_DIR, discover
from tests.conformance.test_api_recordings import PIPEDRIVE_KINDS, ZOHO_PATHS, _route

WEBHOOK_KINDS = {"pipedrive_webhook", "zoho_webhook"}


def test_every_recording_has_a_conformance_check() -> None:
    recordings = discover()
    if not recordings:
        pytest.fail(f"no recordings found in {RECORDINGS_DIR}")
    unchecked = []
    for recording in recordings:
        if recording.kind in WEBHOOK_KINDS or recording.kind in PIPEDRIVE_KINDS:
            continue
        if recording.kind.startswith("zoho_"):
            recorded = recording.json().get("recorded") or [{}]
            if _route(recorded[0].get("path", "")) in ZOHO_PATHS:
                continue
        unchecked.append(f"{recording.name} (kind {recording.kind or 'unknown'!r})")
    assert not unchecked, "recordings without a conformance check: " + ", ".join(unchecked)
