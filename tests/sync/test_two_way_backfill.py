"""``connector backfill`` runs both ways: Pipedrive-only organizations reach their Zoho org."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from connector.cli import main
from connector.cli.common import set_context
from connector.models import AuditEntry, Link, ReviewItem
from tests.harness import COMPANY, World, contact, routed_world
from tests.specs import ResponseAudit

PIPEDRIVE_ONLY = [
    ("Bergmann GmbH", "Germany", "eu"),
    ("Schulz KG", "Germany", "eu"),
    ("Acme Inc", "United States", "us"),
    ("Initrode LLC", "United States", "us"),
]


@pytest.fixture
def w(tmp_path: Path, redis_url: str) -> Iterator[World]:
    # The simulators are strict (every request checked against the official specs); the audit
    # checks every answer against them too.
    audit = ResponseAudit()
    with routed_world(tmp_path, redis_url, audit) as built:
        built.zoho.bulk_create(
            built.zoho_orgs["us"], "contacts", [contact(f"Zoho Customer {i}") for i in range(3)]
        )
        for name, country, _ in PIPEDRIVE_ONLY:
            built.pipedrive.app_create(
                COMPANY,
                "organizations",
                {"name": name, "address": {"value": f"1 Street, {country}", "country": country}},
            )
        set_context(built.context)
        yield built
        set_context(None)
    audit.assert_clean()


def _contacts(w: World, dc: str) -> list[str]:
    contacts = w.zoho.store.orgs[w.zoho_orgs[dc]].contacts.values()
    return sorted(str(c["contact_name"]) for c in contacts)


def _zoho_writes(w: World) -> int:
    return sum(1 for r in w.zoho.request_log if r.method in {"POST", "PUT", "DELETE"})


def _writes_audited(w: World, after_id: int) -> list[Any]:
    with w.context.session() as session:
        return list(
            session.scalars(
                sa.select(AuditEntry).where(
                    AuditEntry.id > after_id, AuditEntry.action.in_(["create", "update"])
                )
            )
        )


def _last_audit_id(w: World) -> int:
    with w.context.session() as session:
        return int(session.scalar(sa.select(sa.func.max(AuditEntry.id))) or 0)


def _backfill(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["backfill", "--json", *args])
    assert result.exit_code == 0, result.output
    state: dict[str, Any] = json.loads(result.output[result.output.index("{") :])
    return state


def test_pipedrive_only_organizations_are_created_once_in_their_routed_zoho_org(w):
    state = _backfill()
    assert state["failed"] == 0
    expected_eu = sorted(n for n, _, dc in PIPEDRIVE_ONLY if dc == "eu")
    expected_us = sorted(
        [f"Zoho Customer {i}" for i in range(3)] + [n for n, _, dc in PIPEDRIVE_ONLY if dc == "us"]
    )
    assert _contacts(w, "eu") == expected_eu
    assert _contacts(w, "us") == expected_us
    with w.context.session() as session:
        links = list(session.scalars(sa.select(Link).where(Link.zoho_entity == "contact")))
    assert len(links) == 7
    # Each Pipedrive organization is linked to one contact and carries its id back.
    key = w.pd_key("organization", "Zoho Contact ID")
    by_org = {link.pipedrive_id: link.zoho_id for link in links}
    for org in w.pd_records("organizations"):
        assert org["custom_fields"][key] == by_org[str(org["id"])]


def test_a_second_backfill_writes_nothing(w):
    _backfill()
    pd_writes, zoho_writes, audit_id = w.pd_writes(), _zoho_writes(w), _last_audit_id(w)
    state = _backfill()
    assert (state["applied"], state["failed"]) == (0, 0)
    assert w.pd_writes() == pd_writes
    assert _zoho_writes(w) == zoho_writes
    assert _writes_audited(w, audit_id) == []


def test_no_pipedrive_skips_the_second_half(w):
    _backfill("--no-pipedrive")
    assert _contacts(w, "eu") == []
    assert _contacts(w, "us") == [f"Zoho Customer {i}" for i in range(3)]


def test_an_unroutable_organization_becomes_a_routing_review_item(w):
    w.pipedrive.app_create(COMPANY, "organizations", {"name": "Nowhere Ltd"})
    state = _backfill()
    assert (state["review"], state["failed"]) == (1, 0)
    with w.context.session() as session:
        (item,) = session.scalars(sa.select(ReviewItem))
        assert item.kind == "routing"
        assert "Nowhere Ltd" in item.summary
    assert "Nowhere Ltd" not in _contacts(w, "eu") + _contacts(w, "us")


def test_sixty_customers_every_contact_person_becomes_a_person_and_twice_writes_nothing(w):
    # Issue 13's done-when on the sandbox that follows the v2 write schema ("name" required,
    # first_name/last_name refused): 0 of 90 persons were created when the client sent parts.
    us = w.zoho_orgs["us"]
    customers = [contact(f"Sixty{i:02d} Trading", persons=1 + i % 2) for i in range(60)]
    w.zoho.bulk_create(us, "contacts", customers)
    expected = sorted(
        f"{p['first_name']} {p['last_name']}" for c in customers for p in c["contact_persons"]
    )
    assert len(expected) == 90
    state = _backfill()
    assert state["failed"] == 0
    persons = w.pd_records("persons")
    sixty = sorted(p["name"] for p in persons if p["name"].split()[-1].startswith("Sixty"))
    assert sixty == expected
    assert all(p["org_id"] for p in persons)
    assert len(_contacts(w, "eu")) == 2  # the Pipedrive-only organizations, once each
    pd_writes, zoho_writes, audit_id = w.pd_writes(), _zoho_writes(w), _last_audit_id(w)
    again = _backfill()
    assert (again["applied"], again["failed"]) == (0, 0)
    assert (w.pd_writes(), _zoho_writes(w)) == (pd_writes, zoho_writes)
    assert _writes_audited(w, audit_id) == []
