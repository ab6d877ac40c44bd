"""The engine against both simulators: contacts, persons, invoices, echoes, staleness."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from connector.models import AuditEntry, Link, ReviewItem
from connector.sync.engine import engine_session
from tests.harness import COMPANY, contact, invoice, world


@pytest.fixture
def w(tmp_path, redis_url):
    with world(f"sqlite:///{tmp_path / 'c.db'}", redis_url) as built:
        yield built


def _audit(w, **filters):
    with w.context.session() as session:
        query = sa.select(AuditEntry).order_by(AuditEntry.id)
        for key, value in filters.items():
            query = query.where(getattr(AuditEntry, key) == value)
        return list(session.scalars(query))


def test_contact_becomes_organization_with_persons(w):
    org = w.zoho_orgs["us"]
    (cid,) = w.zoho.bulk_create(org, "contacts", [contact("Bowman and Co", persons=2)])
    with engine_session(w.context, trigger="manual") as engine:
        assert engine.sync_zoho_contact(w.zoho_connections["us"], cid) == "ok"
    orgs = w.pd_records("organizations")
    assert [o["name"] for o in orgs] == ["Bowman and Co"]
    key = w.pd_key("organization", "Zoho Contact ID")
    assert orgs[0]["custom_fields"][key] == cid
    persons = w.pd_records("persons")
    assert sorted(p["name"] for p in persons) == ["First0 Bowman", "First1 Bowman"]
    assert {p["org_id"] for p in persons} == {orgs[0]["id"]}
    primary = next(p for p in persons if p["name"] == "First0 Bowman")
    assert primary["emails"][0]["value"] == "person0@bowmanandco.example.com"
    assert primary["emails"][0]["label"] == "work"
    rows = _audit(w)
    assert [(r.entity, r.action, r.outcome) for r in rows] == [
        ("organization", "create", "ok"),
        ("person", "create", "ok"),
        ("person", "create", "ok"),
    ]
    assert rows[0].tokens_spent >= 5
    assert rows[0].diff["name"]["after"] == "Bowman and Co"


def test_second_sync_writes_nothing_and_audits_a_skip(w):
    org = w.zoho_orgs["us"]
    (cid,) = w.zoho.bulk_create(org, "contacts", [contact("Globex", persons=1)])
    with engine_session(w.context) as engine:
        engine.sync_zoho_contact(w.zoho_connections["us"], cid)
    writes = w.pd_writes()
    with engine_session(w.context) as engine:
        assert engine.sync_zoho_contact(w.zoho_connections["us"], cid) == "skipped"
    assert w.pd_writes() == writes
    last = _audit(w)[-2:]
    assert all(r.outcome == "skipped" for r in last)


def test_name_change_in_zoho_propagates_once_and_does_not_come_back(w):
    org = w.zoho_orgs["us"]
    (cid,) = w.zoho.bulk_create(org, "contacts", [contact("Initech", persons=1)])
    zc = w.zoho_connections["us"]
    with engine_session(w.context) as engine:
        engine.sync_zoho_contact(zc, cid)
    w.zoho.update_record(org, "contacts", cid, {"contact_name": "Initech Global"})
    with engine_session(w.context, trigger="webhook") as engine:
        assert engine.sync_zoho_contact(zc, cid) == "ok"
    (pd_org,) = w.pd_records("organizations")
    assert pd_org["name"] == "Initech Global"
    # Pipedrive's webhook for our own write comes back: it must not write to Zoho.
    before = w.zoho.get_record(org, "contacts", cid)["last_modified_time"]
    with engine_session(w.context, trigger="webhook") as engine:
        outcome = engine.handle_pipedrive_event(
            "organization",
            str(pd_org["id"]),
            {"action": "change", "update_time": pd_org["update_time"]},
        )
    assert outcome == "skipped"
    assert w.zoho.get_record(org, "contacts", cid)["last_modified_time"] == before
    reasons = [r.reason for r in _audit(w, direction="pipedrive->zoho")]
    assert any("no mapped field changed" in r for r in reasons)


def test_pipedrive_rename_reaches_zoho_and_its_echo_is_skipped(w):
    org = w.zoho_orgs["us"]
    (cid,) = w.zoho.bulk_create(org, "contacts", [contact("Umbrella", persons=0)])
    zc = w.zoho_connections["us"]
    with engine_session(w.context) as engine:
        engine.sync_zoho_contact(zc, cid)
    (pd_org,) = w.pd_records("organizations")
    w.clock.advance(60)
    w.pipedrive.app_update(COMPANY, "organizations", pd_org["id"], {"name": "Umbrella Corp"})
    with engine_session(w.context, trigger="webhook") as engine:
        assert engine.sync_pipedrive_organization(str(pd_org["id"])) == "ok"
    assert w.zoho.get_record(org, "contacts", cid)["contact_name"] == "Umbrella Corp"
    writes = w.pd_writes()
    # Zoho's webhook for our write comes back: nothing is written to Pipedrive.
    with engine_session(w.context, trigger="webhook") as engine:
        assert engine.sync_zoho_contact(zc, cid) == "skipped"
    assert w.pd_writes() == writes


def test_new_pipedrive_organization_creates_zoho_contact_and_writes_back_reference(w):
    created = w.pipedrive.app_create(COMPANY, "organizations", {"name": "Stark Industries"})
    with engine_session(w.context, trigger="webhook") as engine:
        assert engine.sync_pipedrive_organization(str(created["id"])) == "ok"
    org = w.zoho_orgs["us"]
    with w.context.session() as session:
        link = session.scalars(sa.select(Link).where(Link.pipedrive_id == str(created["id"]))).one()
    zoho_contact = w.zoho.get_record(org, "contacts", link.zoho_id)
    assert zoho_contact["contact_name"] == "Stark Industries"
    assert any(f.get("value") == str(created["id"]) for f in zoho_contact["custom_fields"])
    pd_org = w.pipedrive.get_record(COMPANY, "organizations", created["id"])
    assert pd_org["custom_fields"][w.pd_key("organization", "Zoho Contact ID")] == link.zoho_id
    # Running it again is harmless: no new contact, no new write.
    with engine_session(w.context, trigger="schedule") as engine:
        assert engine.sync_pipedrive_organization(str(created["id"])) == "skipped"
    assert w.zoho.state_counts()["organizations"][org]["contacts"] == 1


def test_invoice_sets_deal_fields_and_change_updates_sums(w):
    org = w.zoho_orgs["us"]
    zc = w.zoho_connections["us"]
    (cid,) = w.zoho.bulk_create(org, "contacts", [contact("Hooli", persons=0)])
    with engine_session(w.context) as engine:
        engine.sync_zoho_contact(zc, cid)
    (pd_org,) = w.pd_records("organizations")
    (deal_id,) = w.pipedrive.seed(
        COMPANY,
        "deals",
        [{"title": "Hooli deal", "org_id": pd_org["id"], "status": "open", "currency": "USD"}],
    )
    first, second = w.zoho.bulk_create(org, "invoices", [invoice(cid, 100), invoice(cid, 250)])
    with engine_session(w.context, trigger="webhook") as engine:
        assert engine.sync_zoho_invoice(zc, first) == "ok"
        assert engine.sync_zoho_invoice(zc, second) == "ok"
    deal = w.pipedrive.get_record(COMPANY, "deals", deal_id)
    total_key = w.pd_key("deal", "Zoho Invoice Total")
    balance_key = w.pd_key("deal", "Zoho Invoice Balance")
    assert deal["custom_fields"][total_key] == {"value": 350, "currency": "USD"}
    assert deal["custom_fields"][balance_key] == {"value": 350, "currency": "USD"}
    assert deal["custom_fields"][w.pd_key("deal", "Zoho Invoice Number")] in {
        "INV-000001",
        "INV-000002",
    }
    w.zoho.update_record(
        org, "invoices", second, {"line_items": [{"name": "x", "rate": 300, "quantity": 1}]}
    )
    with engine_session(w.context, trigger="webhook") as engine:
        assert engine.sync_zoho_invoice(zc, second) == "ok"
    deal = w.pipedrive.get_record(COMPANY, "deals", deal_id)
    assert deal["custom_fields"][total_key]["value"] == 400
    # A void invoice drops out of the sums.
    w.zoho.update_record(org, "invoices", first, {"status": "void"})
    with engine_session(w.context, trigger="webhook") as engine:
        assert engine.sync_zoho_invoice(zc, first) == "ok"
    deal = w.pipedrive.get_record(COMPANY, "deals", deal_id)
    assert deal["custom_fields"][total_key]["value"] == 300
    assert deal["custom_fields"][balance_key]["value"] == 300


def test_stale_invoice_event_is_skipped_with_reason(w):
    import datetime as dt

    org = w.zoho_orgs["us"]
    zc = w.zoho_connections["us"]
    (cid,) = w.zoho.bulk_create(org, "contacts", [contact("Vandelay", persons=0)])
    with engine_session(w.context) as engine:
        engine.sync_zoho_contact(zc, cid)
    (pd_org,) = w.pd_records("organizations")
    w.pipedrive.seed(
        COMPANY,
        "deals",
        [{"title": "V", "org_id": pd_org["id"], "status": "open", "currency": "USD"}],
    )
    (inv,) = w.zoho.bulk_create(org, "invoices", [invoice(cid, 100)])
    with engine_session(w.context) as engine:
        engine.sync_zoho_invoice(zc, inv)
    old = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    writes = w.pd_writes()
    with engine_session(w.context, trigger="webhook") as engine:
        assert engine.sync_zoho_invoice(zc, inv, event_time=old) == "skipped"
    assert w.pd_writes() == writes
    assert "stale event" in _audit(w)[-1].reason


def test_unmatched_invoice_goes_to_review(w):
    org = w.zoho_orgs["us"]
    zc = w.zoho_connections["us"]
    (cid,) = w.zoho.bulk_create(org, "contacts", [contact("Nobody Inc", persons=0)])
    (inv,) = w.zoho.bulk_create(org, "invoices", [invoice(cid, 10)])
    with engine_session(w.context) as engine:
        assert engine.sync_zoho_invoice(zc, inv) == "review"
    with w.context.session() as session:
        item = session.scalars(sa.select(ReviewItem)).one()
    assert item.kind == "unmatched_invoice"
    assert item.record_id == inv


def test_currency_mismatch_keeps_sums_and_opens_a_review(w):
    org = w.zoho_orgs["us"]  # base currency USD
    zc = w.zoho_connections["us"]
    (cid,) = w.zoho.bulk_create(org, "contacts", [contact("Euro Kunde GmbH", persons=0)])
    with engine_session(w.context) as engine:
        engine.sync_zoho_contact(zc, cid)
    (pd_org,) = w.pd_records("organizations")
    (deal_id,) = w.pipedrive.seed(
        COMPANY,
        "deals",
        [{"title": "EUR deal", "org_id": pd_org["id"], "status": "open", "currency": "GBP"}],
    )
    (inv,) = w.zoho.bulk_create(org, "invoices", [invoice(cid, 500)])
    with engine_session(w.context, trigger="webhook") as engine:
        assert engine.sync_zoho_invoice(zc, inv) == "review"
    deal = w.pipedrive.get_record(COMPANY, "deals", deal_id)
    fields = deal["custom_fields"]
    # No sum in the wrong currency, but the date and number still arrive.
    assert fields.get(w.pd_key("deal", "Zoho Invoice Total")) is None
    assert fields[w.pd_key("deal", "Zoho Invoice Date")] == "2026-03-01"
    with w.context.session() as session:
        item = session.scalars(
            sa.select(ReviewItem).where(ReviewItem.kind == "currency_mismatch")
        ).one()
    assert item.record_id == str(deal_id)
    assert "cannot be converted" in _audit(w)[-1].reason


def test_pipedrive_merge_repoints_the_link_instead_of_duplicating(w):
    org = w.zoho_orgs["us"]
    zc = w.zoho_connections["us"]
    (cid,) = w.zoho.bulk_create(org, "contacts", [contact("Merge Me Ltd", persons=0)])
    with engine_session(w.context) as engine:
        engine.sync_zoho_contact(zc, cid)
    (linked,) = w.pd_records("organizations")
    survivor = w.pipedrive.app_create(COMPANY, "organizations", {"name": "Merge Me Limited"})
    w.pipedrive.app_merge(COMPANY, "organizations", linked["id"], survivor["id"])
    with engine_session(w.context, trigger="webhook") as engine:
        outcome = engine.handle_pipedrive_event(
            "organization", str(linked["id"]), {"action": "delete", "merged_to_id": survivor["id"]}
        )
    assert outcome == "ok"
    with w.context.session() as session:
        link = session.scalars(sa.select(Link).where(Link.zoho_id == cid)).one()
    assert link.pipedrive_id == str(survivor["id"])
    # The next change in Zoho updates the survivor; nothing new is created.
    w.zoho.update_record(org, "contacts", cid, {"contact_name": "Merge Me Group"})
    with engine_session(w.context, trigger="webhook") as engine:
        assert engine.sync_zoho_contact(zc, cid) == "ok"
    names = sorted(o["name"] for o in w.pd_records("organizations"))
    assert names == ["Merge Me Group"]


def test_lost_answer_to_a_person_create_does_not_duplicate_the_person(w):
    org = w.zoho_orgs["us"]
    (cid,) = w.zoho.bulk_create(org, "contacts", [contact("Lost Person AG", persons=2)])
    w.pipedrive.faults.configure(timeout_rate=1.0, only_paths=r"/api/v2/persons$")
    w.pipedrive.configure(faults_after_write=True)
    with engine_session(w.context) as engine:
        assert engine.sync_zoho_contact(w.zoho_connections["us"], cid) == "ok"
    w.pipedrive.faults.configure(timeout_rate=0.0)
    persons = w.pd_records("persons")
    assert sorted(p["name"] for p in persons) == ["First0 Lost", "First1 Lost"]
    assert w.pipedrive.faults.injected.get("timeout", 0) >= 2


def test_contact_matches_the_organization_of_a_known_email_through_search(w):
    org = w.zoho_orgs["us"]
    existing = w.pipedrive.app_create(COMPANY, "organizations", {"name": "Totally Different Name"})
    w.pipedrive.app_create(
        COMPANY,
        "persons",
        {
            "name": "First0 Emailco",
            "org_id": existing["id"],
            "emails": [{"value": "person0@emailco.example.com"}],
        },
    )
    (cid,) = w.zoho.bulk_create(
        org, "contacts", [contact("Emailco", persons=1, email_domain="emailco.example.com")]
    )
    with engine_session(w.context, trigger="webhook") as engine:  # RemoteLookup: the search path
        assert engine.sync_zoho_contact(w.zoho_connections["us"], cid) == "ok"
    assert len(w.pd_records("organizations")) == 1  # matched, not duplicated
    assert len(w.pd_records("persons")) == 1
    rows = _audit(w, entity="organization")
    assert rows[-1].reason.startswith("matched by email")
