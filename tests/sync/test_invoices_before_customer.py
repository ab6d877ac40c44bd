"""An invoice whose webhook comes before its customer is linked is synced once the link exists.

During a first backfill (or after a worker died holding the customer's sync) the invoice's event
finds no organization and becomes a "not linked yet" review item. Before, nothing brought it back
until the invoice's next edit or the hourly reconciliation: the deal showed a wrong total.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from connector.models import ReviewItem
from connector.sync.engine import engine_session
from tests.harness import COMPANY, World, contact, invoice, world


@pytest.fixture
def waiting(tmp_path, redis_url):
    """A Zoho customer not linked yet, a Pipedrive organization of the same name with an open
    deal, and a 700 USD invoice of the customer whose webhook was handled already."""
    with world(f"sqlite:///{tmp_path / 'c.db'}", redis_url) as w:
        org, zc = w.zoho_orgs["us"], w.zoho_connections["us"]
        (cid,) = w.zoho.bulk_create(org, "contacts", [contact("Early Invoice Ltd", persons=1)])
        (pd_org,) = w.pipedrive.seed(COMPANY, "organizations", [{"name": "Early Invoice Ltd"}])
        (deal,) = w.pipedrive.seed(
            COMPANY,
            "deals",
            [{"title": "Early deal", "org_id": pd_org, "status": "open", "currency": "USD"}],
        )
        (inv,) = w.zoho.bulk_create(org, "invoices", [invoice(cid, 700)])
        with engine_session(w.context, trigger="webhook") as engine:
            assert engine.sync_zoho_invoice(zc, inv) == "review"
        assert _total(w, deal) is None
        assert _reviews(w) == [("unmatched_invoice", inv, "open")]
        yield w, zc, cid, inv, deal, pd_org


def _total(w: World, deal: int) -> Any:
    fields = w.pipedrive.get_record(COMPANY, "deals", deal)["custom_fields"]
    value = fields.get(w.pd_key("deal", "Zoho Invoice Total"))
    return value.get("value") if isinstance(value, dict) else value


def _reviews(w: World) -> list[tuple[str, str, str]]:
    with w.context.session() as session:
        items = session.scalars(sa.select(ReviewItem).order_by(ReviewItem.id)).all()
        return [(i.kind, i.record_id, i.status) for i in items]


def test_linking_the_customer_from_zoho_syncs_its_waiting_invoice(waiting):
    w, zc, cid, inv, deal, _pd_org = waiting
    with engine_session(w.context, trigger="webhook") as engine:
        engine.sync_zoho_contact(zc, cid)
    assert _total(w, deal) == 700
    assert _reviews(w) == [("unmatched_invoice", inv, "resolved")]
    # A second sync of the customer has nothing waiting: no deal write.
    writes = w.pd_writes()
    with engine_session(w.context, trigger="webhook") as engine:
        engine.sync_zoho_contact(zc, cid)
    assert w.pd_writes() == writes


def test_linking_the_customer_from_pipedrive_syncs_its_waiting_invoice(waiting):
    w, _zc, _cid, inv, deal, pd_org = waiting
    with engine_session(w.context, trigger="webhook") as engine:
        engine.sync_pipedrive_organization(str(pd_org))
    assert _total(w, deal) == 700
    assert _reviews(w) == [("unmatched_invoice", inv, "resolved")]


def test_a_customer_linked_while_the_invoice_is_matched_is_seen(waiting, monkeypatch):
    """The race: the customer's sync commits its link after the invoice found none, before the
    invoice records its wait. The invoice side looks again under the customer's lock."""
    w, zc, cid, _inv, deal, _pd_org = waiting
    (late,) = w.zoho.bulk_create(w.zoho_orgs["us"], "invoices", [invoice(cid, 300)])
    from connector.sync.engine import SyncEngine

    original = SyncEngine._match_deal
    linked: list[bool] = []

    def match_then_link(self: SyncEngine, *args: Any, **kwargs: Any) -> Any:
        found = original(self, *args, **kwargs)
        if not linked:
            linked.append(True)
            with engine_session(w.context, trigger="webhook") as other:
                other.sync_zoho_contact(zc, cid)
        return found

    monkeypatch.setattr(SyncEngine, "_match_deal", match_then_link)
    with engine_session(w.context, trigger="webhook") as engine:
        assert engine.sync_zoho_invoice(zc, late) == "ok"
    assert _total(w, deal) == 1000
