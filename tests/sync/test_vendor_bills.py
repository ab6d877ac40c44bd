"""Vendor bill totals: a vendor synced as an organization gets the sums of its bills."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from connector.errors import ConfigError
from connector.intake import vendor_totals_enabled
from connector.mapping.config import parse_config
from connector.models import AuditEntry, ReviewItem, WebhookEvent
from connector.sync import service
from connector.sync.engine import engine_session
from connector.zoho.webhooks import sign_zoho_webhook
from tests.harness import COMPANY, contact, world
from web import create_app

CONFIG = """
[contacts]
vendor_rule = "organization"
vendor_totals = true
"""
TOTAL, BALANCE = "Zoho Bills Total", "Zoho Bills Balance"


@pytest.fixture
def vendor(tmp_path, redis_url):
    """A vendor synced as a Pipedrive organization, with vendor totals on in the mapping file."""
    config = tmp_path / "connector.toml"
    config.write_text(CONFIG)
    with world(
        f"sqlite:///{tmp_path / 'c.db'}",
        redis_url,
        settings_extra={"CONNECTOR_CONFIG": str(config)},
    ) as w:
        org, zc = w.zoho_orgs["us"], w.zoho_connections["us"]
        (vid,) = w.zoho.bulk_create(
            org, "contacts", [contact("Paper Supplies Ltd", persons=0, contact_type="vendor")]
        )
        with engine_session(w.context) as engine:
            assert engine.sync_zoho_contact(zc, vid) == "ok"
        (pd_org,) = w.pd_records("organizations")
        yield w, org, zc, vid, str(pd_org["id"])


def _bill(w, org, vid, amount, **extra: Any) -> str:
    body = {
        "vendor_id": vid,
        "date": "2026-03-01",
        "due_date": "2026-12-31",
        "line_items": [{"name": "Paper", "rate": amount, "quantity": 1}],
        **extra,
    }
    return str(w.zoho.create_record(org, "bills", body)["bill_id"])


def _totals(w, pd_org) -> tuple[Any, Any]:
    fields = w.pipedrive.get_record(COMPANY, "organizations", int(pd_org))["custom_fields"]

    def amount(name: str) -> Any:
        value = fields.get(w.pd_key("organization", name))
        return (value["value"], value["currency"]) if value else None

    return amount(TOTAL), amount(BALANCE)


def _event(w, zc, entity: str, entity_id: str, payload: dict[str, Any] | None = None) -> str:
    with engine_session(w.context, trigger="webhook") as engine:
        return engine.handle_event("zoho", zc, entity, entity_id, payload or {})


def _audit(w) -> list[AuditEntry]:
    with w.context.session() as session:
        return list(session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)))


def test_bills_sum_onto_the_vendors_organization(vendor):
    w, org, zc, vid, pd_org = vendor
    assert _totals(w, pd_org) == (None, None)
    first = _bill(w, org, vid, 200)
    rows = len(_audit(w))
    assert _event(w, zc, "bill", first, {"vendor_id": vid}) == "ok"
    assert _totals(w, pd_org) == ((200, "USD"), (200, "USD"))
    (row,) = _audit(w)[rows:]
    assert (row.entity, row.action, row.outcome, row.zoho_id, row.pipedrive_id) == (
        "organization",
        "update",
        "ok",
        vid,
        pd_org,
    )
    assert set(row.diff) == {TOTAL, BALANCE}

    second = _bill(w, org, vid, 50.5)
    assert _event(w, zc, "bill", second, {"vendor_id": vid}) == "ok"
    assert _totals(w, pd_org) == ((250.5, "USD"), (250.5, "USD"))


def test_vendor_payment_lowers_the_balance_and_a_repeat_writes_nothing(vendor):
    w, org, zc, vid, pd_org = vendor
    bill = _bill(w, org, vid, 300)
    _event(w, zc, "bill", bill, {"vendor_id": vid})
    payment = w.zoho.create_record(
        org,
        "vendorpayments",
        {"vendor_id": vid, "amount": 120, "bills": [{"bill_id": bill, "amount_applied": 120}]},
    )
    # A placeholder webhook names no vendor: the payment is read to find it.
    assert _event(w, zc, "vendorpayment", str(payment["payment_id"])) == "ok"
    assert _totals(w, pd_org) == ((300, "USD"), (180, "USD"))
    writes = w.pd_writes()
    assert _event(w, zc, "vendorpayment", str(payment["payment_id"])) == "skipped"
    assert w.pd_writes() == writes
    assert "already up to date" in _audit(w)[-1].reason


def test_void_and_deleted_bills_drop_out(vendor):
    w, org, zc, vid, pd_org = vendor
    keep, void, gone = _bill(w, org, vid, 100), _bill(w, org, vid, 40), _bill(w, org, vid, 7)
    _event(w, zc, "bill", keep, {"vendor_id": vid})
    assert _totals(w, pd_org)[0] == (147, "USD")
    w.zoho.update_record(org, "bills", void, {"status": "void"})
    assert _event(w, zc, "bill", void, {"vendor_id": vid}) == "ok"
    assert _totals(w, pd_org) == ((107, "USD"), (107, "USD"))
    w.zoho.delete_record(org, "bills", gone)
    # Deleted: only the webhook's vendor_id says whose totals to recompute.
    assert _event(w, zc, "bill", gone, {"vendor_id": vid}) == "ok"
    assert _totals(w, pd_org) == ((100, "USD"), (100, "USD"))


def test_bill_in_another_currency_goes_to_review_and_writes_nothing(vendor):
    w, org, zc, vid, pd_org = vendor
    _event(w, zc, "bill", _bill(w, org, vid, 100), {"vendor_id": vid})
    odd = _bill(w, org, vid, 55)
    # The simulator copies the vendor's currency; a bill entered in another one is set by hand.
    w.zoho.store.orgs[org].bills[odd]["currency_code"] = "EUR"
    writes = w.pd_writes()
    assert _event(w, zc, "bill", odd, {"vendor_id": vid}) == "review"
    assert w.pd_writes() == writes
    assert _totals(w, pd_org)[0] == (100, "USD")
    with w.context.session() as session:
        (item,) = session.scalars(sa.select(ReviewItem)).all()
        assert (item.kind, item.entity, item.record_id, item.status) == (
            "currency_mismatch",
            "contact",
            vid,
            "open",
        )
        assert item.candidates == [{"bill_id": odd}]
    w.zoho.update_record(org, "bills", odd, {"status": "void"})
    assert _event(w, zc, "bill", odd, {"vendor_id": vid}) == "skipped"  # sums unchanged
    with w.context.session() as session:
        assert session.scalars(sa.select(ReviewItem.status)).all() == ["resolved"]


def test_unlinked_vendor_is_skipped(vendor):
    w, org, zc, _vid, _pd_org = vendor
    (other,) = w.zoho.bulk_create(
        org, "contacts", [contact("Unsynced Vendor", persons=0, contact_type="vendor")]
    )
    writes = w.pd_writes()
    assert _event(w, zc, "bill", _bill(w, org, other, 9), {"vendor_id": other}) == "skipped"
    assert w.pd_writes() == writes
    assert "not linked to a Pipedrive organization" in _audit(w)[-1].reason


def test_with_vendor_totals_off_a_bill_changes_nothing(vendor):
    w, org, zc, vid, pd_org = vendor
    off = parse_config({"contacts": {"vendor_rule": "organization"}})
    bill = _bill(w, org, vid, 100)
    writes, rows = w.pd_writes(), len(_audit(w))
    with engine_session(w.context, trigger="webhook", config=off) as engine:
        outcome = engine.handle_event("zoho", zc, "bill", bill, {"vendor_id": vid})
    assert outcome == "skipped"
    assert w.pd_writes() == writes
    assert _totals(w, pd_org) == (None, None)
    (row,) = _audit(w)[rows:]
    assert (row.entity, row.reason) == ("bill", "not synced, by configuration")


def test_receiver_queues_bill_webhooks_when_vendor_totals_are_on(vendor):
    w, org, _zc, vid, pd_org = vendor
    queued: list[Any] = []
    app = create_app(
        {
            "TESTING": True,
            "CONNECTOR_CONTEXT": w.context,
            "CONNECTOR_ENQUEUE": lambda task, args, queue: queued.append(args),
        }
    )
    with w.context.session() as session:
        store = w.context.store(session)
        secret = store.webhook_secret(store.get("zoho-us"))["secret"]
    bill_id = _bill(w, org, vid, 80)
    raw = json.dumps({"bill": w.zoho.get_record(org, "bills", bill_id)}).encode()
    answer = app.test_client().post(
        "/webhooks/zoho/zoho-us?event_type=bill.created",
        data=raw,
        content_type="application/json",
        headers={
            "X-Zoho-Webhook-Signature": sign_zoho_webhook(
                secret, params={"event_type": "bill.created"}, raw_body=raw
            )
        },
    )
    assert answer.status_code == 202
    with w.context.session() as session:
        (event,) = session.scalars(sa.select(WebhookEvent)).all()
        assert (event.entity, event.status, event.payload["vendor_id"]) == ("bill", "queued", vid)
        event_id = event.id
    assert queued == [[event_id]]
    assert service.process_webhook_event(w.context, event_id) == "ok"
    assert _totals(w, pd_org) == ((80, "USD"), (80, "USD"))


def test_vendor_totals_enabled_reads_the_mapping_file(tmp_path):
    file = tmp_path / "connector.toml"
    assert vendor_totals_enabled(None) is False
    assert vendor_totals_enabled(str(file)) is False  # missing
    file.write_text(CONFIG)
    assert vendor_totals_enabled(str(file)) is True
    file.write_text('[contacts]\nvendor_rule = "organization"\n')
    assert vendor_totals_enabled(str(file)) is False
    file.write_text("[contacts]\nvendor_totals = true\n")  # invalid: vendors are skipped
    assert vendor_totals_enabled(str(file)) is False


def test_vendor_totals_options_are_validated_all_at_once():
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "contacts": {"vendor_totals": True, "vendor_rule": "person"},
                "fields": {"vendor_bills_total": "", "vendor_bills_balance": {"enabled": False}},
            }
        )
    assert caught.value.problems == [
        'contacts: vendor_totals = true needs vendor_rule = "organization" (vendors synced as '
        "organizations)",
        "contacts: vendor_totals = true needs fields.vendor_bills_total or "
        "fields.vendor_bills_balance (a Pipedrive field name)",
    ]
    with pytest.raises(ConfigError, match=r"contacts.vendor_totals: must be true or false"):
        parse_config({"contacts": {"vendor_totals": "yes"}})


def test_vendor_fields_are_required_only_when_totals_are_on():
    def org_fields(data: dict[str, Any]) -> dict[str, str]:
        specs = parse_config(data).required_custom_fields()["organization"]
        return {s.name: s.field_type for s in specs}

    assert TOTAL not in org_fields({"contacts": {"vendor_rule": "organization"}})
    on = org_fields({"contacts": {"vendor_rule": "organization", "vendor_totals": True}})
    assert (on[TOTAL], on[BALANCE]) == ("monetary", "monetary")
    renamed = org_fields(
        {
            "contacts": {"vendor_rule": "organization", "vendor_totals": True},
            "fields": {"vendor_bills_total": "Owed Total", "vendor_bills_balance": ""},
        }
    )
    assert renamed["Owed Total"] == "monetary"
    assert BALANCE not in renamed
