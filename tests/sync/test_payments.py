"""Payments move a deal's balance and payment status, through webhooks and through reconciliation."""

from __future__ import annotations

import pytest

from connector.sync.engine import engine_session
from tests.harness import COMPANY, contact, invoice, world


@pytest.fixture
def paid(tmp_path, redis_url):
    """A customer with one 1,000 USD invoice counted on its open deal."""
    with world(f"sqlite:///{tmp_path / 'c.db'}", redis_url) as w:
        org, zc = w.zoho_orgs["us"], w.zoho_connections["us"]
        (cid,) = w.zoho.bulk_create(org, "contacts", [contact("Paying Customer Inc", persons=0)])
        with engine_session(w.context) as engine:
            engine.sync_zoho_contact(zc, cid)
        (pd_org,) = w.pd_records("organizations")
        (deal,) = w.pipedrive.seed(
            COMPANY,
            "deals",
            [{"title": "Paying deal", "org_id": pd_org["id"], "status": "open", "currency": "USD"}],
        )
        (inv,) = w.zoho.bulk_create(org, "invoices", [invoice(cid, 1000, due_date="2026-12-31")])
        with engine_session(w.context, trigger="webhook") as engine:
            assert engine.sync_zoho_invoice(zc, inv) == "ok"
        yield w, org, zc, cid, inv, deal


def _fields(w, deal):
    record = w.pipedrive.get_record(COMPANY, "deals", deal)["custom_fields"]
    key = lambda name: w.pd_key("deal", name)  # noqa: E731 - local shorthand
    return {
        "balance": (record.get(key("Zoho Invoice Balance")) or {}).get("value"),
        "status": record.get(key("Zoho Payment Status")),
        "last_payment": record.get(key("Zoho Last Payment Date")),
        "expected": record.get(key("Zoho Expected Payment Date")),
    }


def _pay(w, org, cid, inv, amount, date="2026-03-10"):
    return w.zoho.create_record(
        org,
        "customerpayments",
        {
            "customer_id": cid,
            "amount": amount,
            "date": date,
            "payment_mode": "banktransfer",
            "invoices": [{"invoice_id": inv, "amount_applied": amount}],
        },
    )


def _payment_event(engine, zc, payment, invoice_ids):
    return engine.handle_event(
        "zoho", zc, "customerpayment", str(payment["payment_id"]), {"invoice_ids": invoice_ids}
    )


def test_partial_then_full_payment_step_by_step(paid):
    w, org, zc, cid, inv, deal = paid
    assert _fields(w, deal) == {
        "balance": 1000,
        "status": "unpaid",
        "last_payment": None,
        "expected": "2026-12-31",
    }
    first = _pay(w, org, cid, inv, 400, date="2026-03-10")
    with engine_session(w.context, trigger="webhook") as engine:
        assert _payment_event(engine, zc, first, [inv]) == "ok"
    assert _fields(w, deal) == {
        "balance": 600,
        "status": "partially_paid",
        "last_payment": "2026-03-10",
        "expected": "2026-12-31",
    }
    second = _pay(w, org, cid, inv, 600, date="2026-03-20")
    with engine_session(w.context, trigger="webhook") as engine:
        assert _payment_event(engine, zc, second, [inv]) == "ok"
    after = _fields(w, deal)
    assert (after["balance"], after["status"], after["last_payment"]) == (0, "paid", "2026-03-20")
    assert after["expected"] is None


def test_deleting_a_payment_restores_balance_and_status(paid):
    w, org, zc, cid, inv, deal = paid
    first = _pay(w, org, cid, inv, 400)
    with engine_session(w.context, trigger="webhook") as engine:
        _payment_event(engine, zc, first, [inv])
    assert _fields(w, deal)["status"] == "partially_paid"
    w.zoho.delete_record(org, "customerpayments", str(first["payment_id"]))
    # The payment is gone from the API: the invoice ids from its webhook say what to re-read.
    with engine_session(w.context, trigger="webhook") as engine:
        assert _payment_event(engine, zc, first, [inv]) == "ok"
    restored = _fields(w, deal)
    assert (restored["balance"], restored["status"]) == (1000, "unpaid")


def test_dropped_payment_webhook_is_caught_by_reconciliation(paid):
    w, org, zc, cid, inv, deal = paid
    with engine_session(w.context, trigger="reconcile") as engine:
        engine.reconcile_zoho(zc)  # sets the cursors
    w.clock.advance(120)
    w.zoho.webhooks_dropped = True
    _pay(w, org, cid, inv, 250)
    assert _fields(w, deal)["balance"] == 1000  # nothing told us yet
    w.clock.advance(60)
    with engine_session(w.context, trigger="reconcile") as engine:
        assert engine.reconcile_zoho(zc) >= 1
    assert _fields(w, deal)["balance"] == 750
    assert _fields(w, deal)["status"] == "partially_paid"
