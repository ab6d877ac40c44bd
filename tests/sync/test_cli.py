"""The sync commands as a user runs them: plan writes nothing, backfill syncs, audit reads."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.cli.common import set_context
from tests.harness import contact, invoice, world


@pytest.fixture
def w(tmp_path, redis_url):
    with world(f"sqlite:///{tmp_path / 'c.db'}", redis_url) as built:
        org = built.zoho_orgs["us"]
        ids = built.zoho.bulk_create(
            org, "contacts", [contact(f"Cli Customer {i}", persons=1) for i in range(3)]
        )
        built.zoho.bulk_create(org, "invoices", [invoice(ids[0], 10)])
        set_context(built.context)
        yield built
        set_context(None)


def test_plan_shows_the_changes_and_writes_nothing(w):
    writes = w.pd_writes()
    result = CliRunner().invoke(main, ["plan", "--json"])
    assert result.exit_code == 0, result.output
    changes = json.loads(result.output[result.output.index("[") :])
    creates = [c for c in changes if c["action"] == "create"]
    assert {c["entity"] for c in creates} == {"organization", "person"}
    assert len([c for c in creates if c["entity"] == "organization"]) == 3
    assert all(c["outcome"] == "planned" for c in creates)
    assert w.pd_writes() == writes
    assert w.pd_records("organizations") == []


def test_backfill_then_audit(w):
    result = CliRunner().invoke(main, ["backfill", "--json"])
    assert result.exit_code == 0, result.output
    state = json.loads(result.output[result.output.index("{") :])
    assert (state["total"], state["done"], state["failed"]) == (4, 4, 0)
    assert len(w.pd_records("organizations")) == 3
    audit = CliRunner().invoke(main, ["audit", "--entity", "organization", "--json"])
    assert audit.exit_code == 0
    rows = json.loads(audit.output)
    assert len(rows) == 3
    assert {r["action"] for r in rows} == {"create"}
    again = CliRunner().invoke(main, ["backfill"])
    assert again.exit_code == 0
    assert "0 changed" in again.output


def test_review_lists_the_unmatched_invoice(w):
    CliRunner().invoke(main, ["backfill"])
    result = CliRunner().invoke(main, ["review", "--json"])
    assert result.exit_code == 0
    (item,) = json.loads(result.output)
    assert item["kind"] == "unmatched_invoice"
