"""``connector webhooks``: what to paste into Zoho Books, one URL per workflow rule event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from connector.cli.common import set_context
from connector.cli.webhooks import webhooks
from connector.context import AppContext
from tests.unit.web.seed import make_context


def _context(tmp_path: Path, fake_redis: Any, extra: dict[str, str] | None = None) -> AppContext:
    context = make_context(f"sqlite:///{tmp_path / 'cli.db'}", fake_redis, extra=extra)
    with context.session() as session:
        context.store(session).upsert(
            name="zoho-eu",
            system="zoho",
            external_id="20071234",
            auth_kind="oauth",
            credentials={"refresh_token": "1000.refresh"},
            webhook_secret={"secret": "s3cretS3cret42"},
        )
    set_context(context)
    return context


@pytest.fixture
def context(tmp_path: Path, fake_redis: Any) -> Iterator[AppContext]:
    ctx = _context(tmp_path, fake_redis)
    yield ctx
    set_context(None)
    ctx.close()


def test_one_url_per_event_grouped_by_module_with_the_secret(context: AppContext):
    result = CliRunner().invoke(webhooks, [])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "  secret:   s3cretS3cret42" in lines
    base = f"{context.settings.public_url}/webhooks/zoho/zoho-eu"
    urls = [line.split()[-1] for line in lines if line.startswith("    ")]
    assert urls == [
        f"{base}?event={entity}.{action}"
        for entity in ("contact", "invoice", "customerpayment", "creditnote")
        for action in ("created", "updated", "deleted")
    ]
    # Grouped: each module's header, then its three events.
    contacts = lines.index("  Contacts:")
    assert lines[contacts + 1 : contacts + 4] == [
        f"    created  {base}?event=contact.created",
        f"    updated  {base}?event=contact.updated",
        f"    deleted  {base}?event=contact.deleted",
    ]
    assert "  Customer Payments:" in lines


def test_json_lists_the_events(context: AppContext):
    result = CliRunner().invoke(webhooks, ["--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["secret"] == "s3cretS3cret42"
    assert {
        "module": "Invoices",
        "event": "invoice.deleted",
        "url": row["url"] + "?event=invoice.deleted",
    } in row["events"]
    assert len(row["events"]) == 12


def test_vendor_events_are_printed_when_vendor_totals_are_on(tmp_path: Path, fake_redis: Any):
    config = tmp_path / "mapping.toml"
    config.write_text('[contacts]\nvendor_rule = "organization"\nvendor_totals = true\n')
    context = _context(tmp_path, fake_redis, {"CONNECTOR_CONFIG": str(config)})
    try:
        result = CliRunner().invoke(webhooks, ["--json"])
    finally:
        set_context(None)
        context.close()
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    events = {event["event"] for event in row["events"]}
    assert {"bill.deleted", "vendorpayment.created"} <= events
    assert len(events) == 18
