"""The real clients against the strict simulators: every request passes the official specs and
every simulator answer is validated against them too (openapi-core response validation, with the
exceptions of connector/sandbox/spec_exceptions.py). A failure names the operation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.cli.common import set_context
from tests.harness import COMPANY, World, contact, invoice, routed_world
from tests.specs import ResponseAudit

# Operations a two-way backfill with invoices must have exercised (and so validated).
EXPECTED = {
    "GET /books/v3/organizations",
    "GET /books/v3/contacts",
    "GET /books/v3/contacts/{id}",
    "GET /books/v3/invoices",
    "PUT /books/v3/contacts",
    "GET /api/v2/organizations",
    "POST /api/v2/organizations",
    "PATCH /api/v2/organizations/{id}",
    "POST /api/v2/persons",
    "GET /api/v2/persons",
    "GET /api/v2/deals",
    "POST /api/v2/dealFields",
    "GET /v1/users/me",
}


@pytest.fixture
def audited(tmp_path: Path, redis_url: str) -> Iterator[tuple[World, ResponseAudit]]:
    audit = ResponseAudit()
    with routed_world(tmp_path, redis_url, audit) as built:
        set_context(built.context)
        yield built, audit
        set_context(None)


def _backfill() -> dict[str, Any]:
    result = CliRunner().invoke(main, ["backfill", "--json"])
    assert result.exit_code == 0, result.output
    state: dict[str, Any] = json.loads(result.output[result.output.index("{") :])
    return state


def test_a_two_way_backfill_fits_the_specs_both_ways(audited):
    w, audit = audited
    us = w.zoho_orgs["us"]
    customers = [contact(f"Strict{i:02d} Trading", persons=1 + i % 2) for i in range(20)]
    ids = w.zoho.bulk_create(us, "contacts", customers)
    w.zoho.bulk_create(us, "invoices", [invoice(cid, 100 + n) for n, cid in enumerate(ids[:5])])
    for name, country in (("Bergmann GmbH", "Germany"), ("Acme Inc", "United States")):
        w.pipedrive.app_create(
            COMPANY,
            "organizations",
            {"name": name, "address": {"value": f"1 Street, {country}", "country": country}},
        )

    first = _backfill()
    second = _backfill()

    assert first["failed"] == 0
    assert (second["applied"], second["failed"]) == (0, 0)
    assert len(w.pd_records("persons")) == 30
    audit.assert_clean()
    missing = EXPECTED - set(audit.checked)
    assert not missing, f"not exercised: {sorted(missing)}; seen {sorted(audit.checked)}"
