"""Issue "sync engine", done-when: a backfill of 500 contacts with 1,000 invoices on PostgreSQL.

Half of the customers already exist in Pipedrive (same name, with an open deal); the other half
are created. Invoices of new customers either name a deal in their reference number or end up
in review. Everything is counted at the simulators.
"""

from __future__ import annotations

import os
from collections import Counter
from decimal import Decimal

import pytest
import sqlalchemy as sa

from connector.models import AuditEntry, InvoiceLink, Link, ReviewItem
from connector.sync.engine import engine_session
from tests.harness import COMPANY, contact, invoice, world

CONTACTS = 500


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory):
    """Run the first backfill once for the module (it is the expensive part)."""
    import uuid

    import redis

    from tests.conftest import POSTGRES_URL

    # Its own Redis database: this module-wide fixture outlives single tests, and the per-test
    # fixtures flush database 15.
    redis_url = os.environ.get("TEST_BACKFILL_REDIS_URL", "redis://127.0.0.1:6379/10")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    redis.Redis.from_url(redis_url).flushdb()
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with world(url, redis_url) as w:
        org = w.zoho_orgs["us"]
        zc = w.zoho_connections["us"]
        names = [f"Customer {i:03d} Ltd" for i in range(CONTACTS)]
        contact_ids = w.zoho.bulk_create(org, "contacts", [contact(n, persons=1) for n in names])
        existing = w.pipedrive.seed(
            COMPANY, "organizations", [{"name": n} for n in names[: CONTACTS // 2]]
        )
        org_deals = w.pipedrive.seed(
            COMPANY,
            "deals",
            [
                {"title": f"Deal {i}", "org_id": o, "status": "open", "currency": "USD"}
                for i, o in enumerate(existing)
            ],
        )
        standalone = w.pipedrive.seed(
            COMPANY,
            "deals",
            [{"title": f"Standalone {i}", "status": "open", "currency": "USD"} for i in range(150)],
        )
        invoices = []
        expected: dict[str, Decimal] = {}
        for i, cid in enumerate(contact_ids):
            for j in range(2):
                amount = 100 + i + j * 1000
                extra = {}
                deal = None
                if i < CONTACTS // 2:
                    deal = str(org_deals[i])
                elif i < CONTACTS // 2 + 150:
                    deal = str(standalone[i - CONTACTS // 2])
                    extra["reference_number"] = f"Deal #{deal}"
                invoices.append(invoice(cid, amount, **extra))
                if deal:
                    expected[deal] = expected.get(deal, Decimal(0)) + Decimal(amount)
        w.zoho.bulk_create(org, "invoices", invoices)
        writes_before = w.pd_writes()
        with engine_session(w.context, trigger="backfill", indexed=True) as engine:
            state = engine.backfill()
        yield w, zc, state, expected, writes_before
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def test_backfill_produces_exactly_the_expected_records(backfilled):
    w, _, state, expected, _ = backfilled
    assert state.total == CONTACTS * 3
    assert state.failed == 0
    orgs = w.pd_records("organizations")
    assert len(orgs) == CONTACTS  # 250 matched by name, 250 created: no duplicates
    assert len({o["name"] for o in orgs}) == CONTACTS
    persons = w.pd_records("persons")
    assert len(persons) == CONTACTS
    assert all(p["org_id"] for p in persons)
    key = w.pd_key("organization", "Zoho Contact ID")
    assert sum(1 for o in orgs if o["custom_fields"].get(key)) == CONTACTS
    total_key = w.pd_key("deal", "Zoho Invoice Total")
    deals = {str(d["id"]): d for d in w.pd_records("deals")}
    with_fields = {i: d for i, d in deals.items() if d["custom_fields"].get(total_key)}
    assert set(with_fields) == set(expected)
    for deal_id, amount in expected.items():
        assert Decimal(str(with_fields[deal_id]["custom_fields"][total_key]["value"])) == amount
    with w.context.session() as session:
        reviews = session.scalars(sa.select(ReviewItem).where(ReviewItem.status == "open")).all()
        links = session.scalar(sa.select(sa.func.count()).select_from(Link))
        matched = session.scalar(
            sa.select(sa.func.count())
            .select_from(InvoiceLink)
            .where(InvoiceLink.deal_id.is_not(None))
        )
    assert {r.kind for r in reviews} == {"unmatched_invoice"}
    assert len(reviews) == 200
    assert links == CONTACTS * 2
    assert matched == 800


def test_every_considered_record_is_audited(backfilled):
    w, *_ = backfilled
    with w.context.session() as session:
        rows = session.execute(
            sa.select(AuditEntry.entity, AuditEntry.action, AuditEntry.reason)
        ).all()
    counts = Counter((e, a) for e, a, _ in rows)
    assert counts[("organization", "create")] == CONTACTS // 2
    # Existing organizations are matched by name, then given the Zoho fields they lack.
    matched = [r for e, a, r in rows if e == "organization" and a == "update"]
    assert len(matched) == CONTACTS // 2
    assert all(r.startswith("matched by name") for r in matched)
    assert counts[("person", "create")] == CONTACTS
    assert counts[("deal", "review")] == 200


def test_running_it_again_writes_nothing(backfilled):
    w, *_ = backfilled
    pd_writes = w.pd_writes()
    tokens_before = w.pipedrive.tokens_spent(COMPANY)
    with engine_session(w.context, trigger="backfill", indexed=True) as engine:
        state = engine.backfill()
    assert w.pd_writes() == pd_writes
    assert (state.applied, state.failed) == (0, 0)
    # Contacts and matched invoices are recognised as applied without any API call; the 200
    # unmatched invoices are looked at again (and stay in review).
    assert state.unchanged == CONTACTS + 800
    assert state.review == 200
    # Only the one listing of deals needed to re-check them is spent.
    assert w.pipedrive.tokens_spent(COMPANY) - tokens_before <= 20
    writes = [r for r in w.zoho.request_log if r.method != "GET"]
    assert not writes, writes[:3]


def test_timeout_after_create_does_not_create_twice(tmp_path, redis_url):
    with world(f"sqlite:///{tmp_path / 'c.db'}", redis_url) as w:
        org = w.zoho_orgs["us"]
        (cid,) = w.zoho.bulk_create(org, "contacts", [contact("Lost Answer GmbH", persons=0)])
        w.pipedrive.faults.configure(timeout_rate=1.0, only_paths=r"^/c/acme/api/v2/organizations$")
        w.pipedrive.configure(faults_after_write=True)
        with engine_session(w.context) as engine:
            w.pipedrive.faults.configure(timeout_rate=1.0)
            outcome = engine.sync_zoho_contact(w.zoho_connections["us"], cid)
        assert outcome == "ok"
        orgs = w.pd_records("organizations")
        assert [o["name"] for o in orgs] == ["Lost Answer GmbH"]
        assert w.pipedrive.faults.injected.get("timeout", 0) >= 1
