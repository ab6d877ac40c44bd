"""Writes planned on what we last wrote or read of a Pipedrive record, without reading it first.

Each test counts the reads the Pipedrive simulator saw: a change from Zoho to a linked record
must cost its write only, unless there is no snapshot, the configuration asks to read first, or
Pipedrive reported a change we have not reconciled.
"""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from connector.mapping.config import parse_config
from connector.models import DealSnapshot, InvoiceLink, Link, ReviewItem
from connector.sync.engine import engine_session
from tests.harness import COMPANY, contact, invoice, world

READ_FIRST = parse_config({"sync": {"read_before_write": True}})
_IDS = re.compile(r"/\d+(?=/|$)")


@pytest.fixture
def w(tmp_path, redis_url):
    with world(f"sqlite:///{tmp_path / 'c.db'}", redis_url) as built:
        yield built


class Calls:
    """Pipedrive requests from now on, as ``METHOD /path`` with ids folded to ``{id}``."""

    def __init__(self, w) -> None:
        self.w = w
        self.start = len(w.pipedrive.request_log(COMPANY))

    def all(self) -> list[str]:
        log = self.w.pipedrive.request_log(COMPANY)[self.start :]
        return [f"{r.method} {_IDS.sub('/{id}', r.path.split('?', 1)[0])}" for r in log]

    def count(self, call: str) -> int:
        return self.all().count(call)

    def reads(self) -> list[str]:
        return [c for c in self.all() if c.startswith("GET ")]


def _linked(w, *, persons: int = 0, name: str = "Initech"):
    org, zc = w.zoho_orgs["us"], w.zoho_connections["us"]
    (cid,) = w.zoho.bulk_create(org, "contacts", [contact(name, persons=persons)])
    with engine_session(w.context, trigger="webhook") as engine:
        assert engine.sync_zoho_contact(zc, cid) == "ok"
    (pd_org,) = w.pd_records("organizations")
    return org, zc, cid, pd_org


def _rename(w, org, cid, name):
    w.clock.advance(60)
    w.zoho.update_record(org, "contacts", cid, {"contact_name": name})


def _link(w, zoho_entity="contact"):
    with w.context.session() as session:
        return session.scalars(sa.select(Link).where(Link.zoho_entity == zoho_entity)).one()


def _sync_contact(w, zc, cid, config=None) -> str:
    with engine_session(w.context, trigger="webhook", config=config) as engine:
        return engine.sync_zoho_contact(zc, cid)


# Organizations --------------------------------------------------------------------------


def test_zoho_rename_of_a_linked_organization_writes_without_reading(w):
    org, zc, cid, pd_org = _linked(w)
    assert _link(w).pipedrive_snapshot["name"] == "Initech"
    _rename(w, org, cid, "Initech Global")
    calls = Calls(w)
    assert _sync_contact(w, zc, cid) == "ok"
    assert calls.reads() == []
    assert calls.all() == ["PATCH /api/v2/organizations/{id}"]
    assert (
        w.pipedrive.get_record(COMPANY, "organizations", pd_org["id"])["name"] == "Initech Global"
    )
    # The write's answer is the new snapshot, and our own change does not come back.
    snapshot = _link(w).pipedrive_snapshot
    assert snapshot["name"] == "Initech Global"
    assert snapshot["update_time"] == w.pd_records("organizations")[0]["update_time"]
    calls = Calls(w)
    assert _sync_contact(w, zc, cid) == "skipped"
    assert calls.all() == []


def test_a_plan_uses_the_snapshot_and_writes_nothing(w):
    org, zc, cid, _ = _linked(w)
    _rename(w, org, cid, "Initech Global")
    calls = Calls(w)
    with engine_session(w.context, dry_run=True) as engine:
        engine.sync_zoho_contact(zc, cid)
        (change,) = engine.changes
    assert (change.action, change.outcome) == ("update", "planned")
    assert change.diff == {"name": ("Initech", "Initech Global")}
    assert calls.all() == []
    assert _link(w).pipedrive_snapshot["name"] == "Initech"


def test_read_before_write_option_reads_the_organization_first(w):
    org, zc, cid, _ = _linked(w)
    _rename(w, org, cid, "Initech Global")
    calls = Calls(w)
    assert _sync_contact(w, zc, cid, config=READ_FIRST) == "ok"
    assert calls.all() == ["GET /api/v2/organizations/{id}", "PATCH /api/v2/organizations/{id}"]


def test_a_link_without_snapshot_reads_first_then_keeps_one(w):
    org, zc, cid, _ = _linked(w)
    with w.context.session() as session:
        session.execute(sa.update(Link).values(pipedrive_snapshot=None))
        session.commit()
    _rename(w, org, cid, "Initech Global")
    calls = Calls(w)
    assert _sync_contact(w, zc, cid) == "ok"
    assert calls.all() == ["GET /api/v2/organizations/{id}", "PATCH /api/v2/organizations/{id}"]
    assert _link(w).pipedrive_snapshot["name"] == "Initech Global"
    _rename(w, org, cid, "Initech Worldwide")
    calls = Calls(w)
    assert _sync_contact(w, zc, cid) == "ok"
    assert calls.reads() == []


def test_organization_deleted_in_pipedrive_is_created_again_and_relinked(w):
    org, zc, cid, pd_org = _linked(w)
    w.pipedrive.app_delete(COMPANY, "organizations", pd_org["id"])
    _rename(w, org, cid, "Initech Global")
    with engine_session(w.context, trigger="webhook") as engine:
        assert engine.sync_zoho_contact(zc, cid) == "ok"
        (change,) = engine.changes
    assert change.action == "create"
    assert "gone from Pipedrive; matching again" in change.reason
    (alive,) = w.pd_records("organizations")
    assert alive["id"] != pd_org["id"]
    assert alive["name"] == "Initech Global"
    link = _link(w)
    assert link.pipedrive_id == str(alive["id"])
    assert link.pipedrive_snapshot["id"] == alive["id"]
    # The next change goes to the new organization, with no read and no second create.
    _rename(w, org, cid, "Initech Worldwide")
    calls = Calls(w)
    assert _sync_contact(w, zc, cid) == "ok"
    assert calls.all() == ["PATCH /api/v2/organizations/{id}"]
    assert [o["name"] for o in w.pd_records("organizations")] == ["Initech Worldwide"]


def test_organization_deleted_in_pipedrive_is_matched_again_by_cross_reference(w):
    org, zc, cid, pd_org = _linked(w)
    key = w.pd_key("organization", "Zoho Contact ID")
    twin = w.pipedrive.app_create(
        COMPANY, "organizations", {"name": "Initech (new)", "custom_fields": {key: cid}}
    )
    w.pipedrive.app_delete(COMPANY, "organizations", pd_org["id"])
    _rename(w, org, cid, "Initech Global")
    with engine_session(w.context, trigger="webhook") as engine:
        assert engine.sync_zoho_contact(zc, cid) == "ok"
        (change,) = engine.changes
    assert change.action == "update"
    assert "matched by cross-reference" in change.reason
    assert _link(w).pipedrive_id == str(twin["id"])
    assert w.pipedrive.get_record(COMPANY, "organizations", twin["id"])["name"] == (
        "Initech Global"
    )


def test_address_change_reads_first_because_pipedrive_replaces_it_whole(w):
    org, zc, cid, pd_org = _linked(w)
    # A part no mapping holds, set in Pipedrive after our last write.
    record = w.pipedrive.get_record(COMPANY, "organizations", pd_org["id"])
    address = {k: v for k, v in record["address"].items() if k != "formatted_address"}
    w.pipedrive.app_update(
        COMPANY,
        "organizations",
        pd_org["id"],
        {"address": {**address, "sublocality": "Old Town"}},
    )
    w.clock.advance(60)
    w.zoho.update_record(
        org,
        "contacts",
        cid,
        {"billing_address": {"address": "2 Main St", "city": "Springfield", "zip": "12345"}},
    )
    calls = Calls(w)
    assert _sync_contact(w, zc, cid) == "ok"
    assert calls.all() == ["GET /api/v2/organizations/{id}", "PATCH /api/v2/organizations/{id}"]
    address = w.pipedrive.get_record(COMPANY, "organizations", pd_org["id"])["address"]
    assert address["route"] == "2 Main St"
    assert address["sublocality"] == "Old Town"


def test_pipedrive_change_seen_by_the_poll_refreshes_the_snapshot(w):
    org, _, cid, pd_org = _linked(w)
    w.clock.advance(60)
    w.pipedrive.app_update(COMPANY, "organizations", pd_org["id"], {"name": "Initech Corp"})
    with engine_session(w.context, trigger="schedule") as engine:
        engine.pull_pipedrive(w.pipedrive_connection)
    assert w.zoho.get_record(org, "contacts", cid)["contact_name"] == "Initech Corp"
    assert _link(w).pipedrive_snapshot["name"] == "Initech Corp"


def test_deleted_organization_webhook_drops_the_snapshot(w):
    _, _, _, pd_org = _linked(w)
    with engine_session(w.context, trigger="webhook") as engine:
        engine.handle_pipedrive_event(
            "organization", str(pd_org["id"]), {"action": "delete", "update_time": None}
        )
    assert _link(w).pipedrive_snapshot is None


# Persons ---------------------------------------------------------------------------------


def _person_event(w, person, **overrides):
    payload = {
        "action": "change",
        "update_time": person["update_time"],
        "change_source": "app",
        "user_id": "1",
    }
    payload.update(overrides)
    with engine_session(w.context, trigger="webhook") as engine:
        return engine.handle_pipedrive_event("person", str(person["id"]), payload)


def _rename_person(w, org, cid, first_name):
    w.clock.advance(60)
    current = w.zoho.get_record(org, "contacts", cid)
    persons = [dict(p, first_name=first_name) for p in current["contact_persons"]]
    w.zoho.update_record(org, "contacts", cid, {"contact_persons": persons})


def test_person_rename_writes_without_reading(w):
    org, zc, cid, _ = _linked(w, persons=1)
    _rename_person(w, org, cid, "Patricia")
    calls = Calls(w)
    assert _sync_contact(w, zc, cid) == "skipped"  # the organization: nothing mapped changed
    assert calls.all() == ["PATCH /api/v2/persons/{id}"]
    (person,) = w.pd_records("persons")
    assert person["first_name"] == "Patricia"


def test_person_changed_in_pipedrive_is_read_again_and_newest_wins(w):
    org, zc, cid, _ = _linked(w, persons=1)
    _rename_person(w, org, cid, "Patricia")  # Zoho, at T
    (person,) = w.pd_records("persons")
    w.clock.advance(60)
    renamed = f"Pat {person['last_name']}"
    w.pipedrive.app_update(COMPANY, "persons", person["id"], {"name": renamed})  # later
    person = w.pipedrive.get_record(COMPANY, "persons", person["id"])
    _person_event(w, person)
    assert _link(w, "contact_person").pipedrive_snapshot is None
    calls = Calls(w)
    _sync_contact(w, zc, cid)
    assert calls.all() == ["GET /api/v2/persons/{id}"]
    assert w.pipedrive.get_record(COMPANY, "persons", person["id"])["first_name"] == "Pat"


def test_our_own_person_write_coming_back_keeps_the_snapshot(w):
    org, zc, cid, _ = _linked(w, persons=1)
    _rename_person(w, org, cid, "Patricia")
    _sync_contact(w, zc, cid)
    (person,) = w.pd_records("persons")
    ours = w.connection("pipedrive").options["integration_user_id"]
    _person_event(w, person, change_source="api", user_id=ours)
    assert _link(w, "contact_person").pipedrive_snapshot is not None
    # The same second, by someone else: we cannot tell it is included.
    _person_event(w, person, change_source="app", user_id="999")
    assert _link(w, "contact_person").pipedrive_snapshot is None


def test_email_change_reads_first_and_keeps_other_emails(w):
    org, zc, cid, _ = _linked(w, persons=1)
    (person,) = w.pd_records("persons")
    w.pipedrive.app_update(
        COMPANY,
        "persons",
        person["id"],
        {"emails": [*person["emails"], {"value": "home@example.com", "primary": False}]},
    )
    w.clock.advance(60)
    current = w.zoho.get_record(org, "contacts", cid)
    persons = [dict(p, email="new@initech.example.com") for p in current["contact_persons"]]
    w.zoho.update_record(org, "contacts", cid, {"contact_persons": persons})
    calls = Calls(w)
    _sync_contact(w, zc, cid)
    assert calls.all() == ["GET /api/v2/persons/{id}", "PATCH /api/v2/persons/{id}"]
    emails = [
        e["value"] for e in w.pipedrive.get_record(COMPANY, "persons", person["id"])["emails"]
    ]
    assert emails == ["new@initech.example.com", "home@example.com"]


# Deals -----------------------------------------------------------------------------------


def _with_deal(w, currency="USD"):
    org, zc, cid, pd_org = _linked(w, name="Paying Customer Inc")
    (deal,) = w.pipedrive.seed(
        COMPANY,
        "deals",
        [{"title": "Deal", "org_id": pd_org["id"], "status": "open", "currency": currency}],
    )
    (inv,) = w.zoho.bulk_create(org, "invoices", [invoice(cid, 1000)])
    with engine_session(w.context, trigger="webhook") as engine:
        assert engine.sync_zoho_invoice(zc, inv) == "ok"
    return org, zc, cid, pd_org, deal, inv


def _total(w, deal):
    fields = w.pipedrive.get_record(COMPANY, "deals", deal)["custom_fields"]
    return (fields.get(w.pd_key("deal", "Zoho Invoice Total")) or {}).get("value")


def _change_invoice(w, org, inv, amount):
    w.clock.advance(60)
    w.zoho.update_record(
        org, "invoices", inv, {"line_items": [{"name": "Changed", "rate": amount, "quantity": 1}]}
    )


def _sync_invoice(w, zc, inv, config=None) -> str:
    with engine_session(w.context, trigger="webhook", config=config) as engine:
        return engine.sync_zoho_invoice(zc, inv)


def test_invoice_change_on_a_linked_deal_writes_without_reading_the_deal(w):
    org, zc, _, _, deal, inv = _with_deal(w)
    assert _total(w, deal) == 1000
    with w.context.session() as session:
        held = session.scalars(sa.select(DealSnapshot)).one()
        assert (held.deal_id, held.currency) == (str(deal), "USD")
    _change_invoice(w, org, inv, 777)
    calls = Calls(w)
    assert _sync_invoice(w, zc, inv) == "ok"
    assert calls.all() == ["PATCH /api/v2/deals/{id}"]
    assert _total(w, deal) == 777


def test_read_before_write_option_reads_the_deal_first(w):
    org, zc, _, _, deal, inv = _with_deal(w)
    _change_invoice(w, org, inv, 777)
    calls = Calls(w)
    assert _sync_invoice(w, zc, inv, config=READ_FIRST) == "ok"
    assert "GET /api/v2/deals/{id}" in calls.reads()
    assert calls.count("PATCH /api/v2/deals/{id}") == 1
    assert _total(w, deal) == 777


def test_a_deal_without_snapshot_is_read_first(w):
    org, zc, _, _, deal, inv = _with_deal(w)
    with w.context.session() as session:
        session.execute(sa.delete(DealSnapshot))
        session.commit()
    _change_invoice(w, org, inv, 777)
    calls = Calls(w)
    assert _sync_invoice(w, zc, inv) == "ok"
    assert "GET /api/v2/deals/{id}" in calls.reads()
    assert _total(w, deal) == 777
    _change_invoice(w, org, inv, 555)
    calls = Calls(w)
    assert _sync_invoice(w, zc, inv) == "ok"
    assert calls.all() == ["PATCH /api/v2/deals/{id}"]


@pytest.mark.parametrize("config", [None, READ_FIRST], ids=["snapshot", "read-first"])
def test_deal_deleted_in_pipedrive_sends_the_invoice_to_the_organizations_other_deal(w, config):
    org, zc, _, pd_org, deal, inv = _with_deal(w)
    w.pipedrive.app_delete(COMPANY, "deals", deal)
    (other,) = w.pipedrive.seed(
        COMPANY,
        "deals",
        [{"title": "Other", "org_id": pd_org["id"], "status": "open", "currency": "USD"}],
    )
    _change_invoice(w, org, inv, 777)
    assert _sync_invoice(w, zc, inv, config=config) == "ok"
    assert _total(w, other) == 777
    with w.context.session() as session:
        stored = session.scalars(sa.select(InvoiceLink)).one()
        assert (stored.deal_id, stored.match_method) == (str(other), "organization_deals")
        assert (
            session.scalars(sa.select(DealSnapshot).where(DealSnapshot.deal_id == str(deal))).all()
            == []
        )


def test_deal_deleted_in_pipedrive_with_no_other_deal_sends_the_invoice_to_review(w):
    org, zc, _, _, deal, inv = _with_deal(w)
    w.pipedrive.app_delete(COMPANY, "deals", deal)
    _change_invoice(w, org, inv, 777)
    assert _sync_invoice(w, zc, inv) == "review"
    with w.context.session() as session:
        assert session.scalars(sa.select(InvoiceLink)).one().deal_id is None
        (item,) = session.scalars(sa.select(ReviewItem)).all()
        assert item.kind == "unmatched_invoice"


@pytest.mark.parametrize("config", [None, READ_FIRST], ids=["snapshot", "read-first"])
def test_deal_currency_changed_behind_our_back_is_seen_in_the_writes_answer(w, config):
    """Without the deal's webhook, the PATCH answer shows the new currency: the sums are
    computed again in it, ending where a read before the write ends."""
    org, zc, _, _, deal, inv = _with_deal(w)
    w.pipedrive.app_update(COMPANY, "deals", deal, {"currency": "EUR"})
    _change_invoice(w, org, inv, 777)
    outcome = _sync_invoice(w, zc, inv, config=config)
    with w.context.session() as session:
        kinds = [i.kind for i in session.scalars(sa.select(ReviewItem))]
    assert outcome == "review"
    assert kinds == ["currency_mismatch"]
    # Monetary fields are left as they were (their sums would be wrong in EUR), the rest written.
    assert _total(w, deal) == 1000
    fields = w.pipedrive.get_record(COMPANY, "deals", deal)["custom_fields"]
    assert fields[w.pd_key("deal", "Zoho Invoice Balance")] == {"value": 1000, "currency": "USD"}
    assert fields[w.pd_key("deal", "Zoho Invoice Number")] == "INV-000001"
    with w.context.session() as session:
        assert session.scalars(sa.select(DealSnapshot)).one().currency == "EUR"


def test_deal_changed_in_pipedrive_drops_its_snapshot_unless_it_is_our_write(w):
    org, zc, _, _, deal, inv = _with_deal(w)
    record = w.pipedrive.get_record(COMPANY, "deals", deal)
    ours = w.connection("pipedrive").options["integration_user_id"]
    with engine_session(w.context, trigger="webhook") as engine:
        engine.handle_pipedrive_event(
            "deal",
            str(deal),
            {
                "action": "change",
                "update_time": record["update_time"],
                "change_source": "api",
                "user_id": ours,
            },
        )
    with w.context.session() as session:
        assert session.scalars(sa.select(DealSnapshot)).one_or_none() is not None
    w.clock.advance(60)
    record = w.pipedrive.app_update(COMPANY, "deals", deal, {"title": "Renamed deal"})
    with engine_session(w.context, trigger="webhook") as engine:
        engine.handle_pipedrive_event(
            "deal",
            str(deal),
            {"action": "change", "update_time": record["update_time"], "change_source": "app"},
        )
    with w.context.session() as session:
        assert session.scalars(sa.select(DealSnapshot)).one_or_none() is None
    _change_invoice(w, org, inv, 777)
    calls = Calls(w)
    assert _sync_invoice(w, zc, inv) == "ok"
    assert "GET /api/v2/deals/{id}" in calls.reads()
    assert _total(w, deal) == 777
