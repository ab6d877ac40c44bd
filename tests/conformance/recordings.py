"""The recorded real payloads in ``../shared/recordings/``, discovered, never listed by hand.

A file added there is tested the day it is added: its kind comes from the folder's README table
(or, for webhook deliveries, from its folder), and a kind no check knows fails naming the file.
The folder is never copied into the project; when it is absent the suite fails and says so, as
the spec loaders do (a conformance suite that skips proves nothing).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

RECORDINGS_DIR = Path(
    os.environ.get(
        "CONNECTOR_RECORDINGS_DIR",
        Path(__file__).resolve().parents[3] / "shared" / "recordings",
    )
)
_TABLE_ROW = re.compile(r"^\|\s*`(?P<file>[^`]+)`\s*\|\s*(?P<kind>[a-z0-9_]+)\s*\|")
_FOLDER_KINDS = {"pipedrive_webhooks": "pipedrive_webhook", "zoho_webhooks": "zoho_webhook"}


@dataclass(frozen=True)
class Recording:
    """One recorded file: its path relative to the folder, its kind and its JSON content."""

    name: str
    kind: str
    path: Path

    def json(self) -> Any:
        with self.path.open(encoding="utf-8") as handle:
            return json.load(handle)

    def raw(self) -> bytes:
        return self.path.read_bytes()


def _kinds_from_readme() -> dict[str, str]:
    readme = RECORDINGS_DIR / "README.md"
    if not readme.is_file():
        return {}
    kinds = {}
    for line in readme.read_text(encoding="utf-8").splitlines():
        match = _TABLE_ROW.match(line.strip())
        if match:
            kinds[match["file"]] = match["kind"]
    return kinds


def discover() -> list[Recording]:
    """Every JSON file of the recordings folder, with its kind ("" when nothing says it)."""
    if not RECORDINGS_DIR.is_dir():
        return []
    kinds = _kinds_from_readme()
    found = []
    for path in sorted(RECORDINGS_DIR.rglob("*.json")):
        name = path.relative_to(RECORDINGS_DIR).as_posix()
        kind = kinds.get(name) or _FOLDER_KINDS.get(path.parent.name, "")
        found.append(Recording(name=name, kind=kind, path=path))
    return found


def params(system: str, *, webhooks: bool) -> list[Any]:
    """pytest parameters for the recordings of ``system`` (webhook deliveries or API answers).

    With no recordings folder, one parameter that fails the test with the reason.
    """
    recordings = discover()
    if not recordings:
        return [pytest.param(None, id="recordings-folder-missing")]
    chosen = [
        pytest.param(r, id=r.name)
        for r in recordings
        if r.kind.startswith(f"{system}_") and r.kind.endswith("_webhook") == webhooks
    ]
    if chosen:
        return chosen
    what = "webhook deliveries" if webhooks else "API answers"
    reason = f"no recorded {system} {what} in {RECORDINGS_DIR} yet: nothing to check against"
    return [pytest.param(None, id=f"no-{system}-recordings", marks=pytest.mark.skip(reason=reason))]


def require(recording: Recording | None) -> Recording:
    """The recording, or a failure naming the missing folder."""
    if recording is None:
        pytest.fail(
            f"no recordings in {RECORDINGS_DIR}: the shared recordings folder must be present "
            "(set CONNECTOR_RECORDINGS_DIR to point elsewhere)"
        )
    return recording
