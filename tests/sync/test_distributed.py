"""The distributed backfill: chunks run in-process give the single-process backfill's result,
and a chunk that runs twice or overlaps another writes nothing twice."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from connector.errors import BudgetExhaustedError, RateLimitError
from connector.models import InvoiceLink, Link
from connector.sync import engine as engine_module
from connector.sync import lookup as lookup_module
from connector.sync.distributed import (
    BackfillRun,
    _patiently,
    plan_backfill_chunks,
    run_backfill_chunk,
)
from connector.sync.engine import BackfillProgress, engine_session
from connector.sync.lookup import IndexedLookup
from tests.harness import COMPANY, World, contact, invoice, world

CUSTOMERS = 24


def _seed(w: World) -> None:
    """Half the customers exist in Pipedrive with a deal; two or three invoices each."""
    org = w.zoho_orgs["us"]
    names = [f"Customer {i:03d} Ltd" for i in range(CUSTOMERS)]
    ids = w.zoho.bulk_create(org, "contacts", [contact(n, persons=1) for n in names])
    existing = w.pipedrive.seed(
        COMPANY, "organizations", [{"name": n} for n in names[: CUSTOMERS // 2]]
    )
    w.pipedrive.seed(
        COMPANY,
        "deals",
        [
            {"title": f"Deal {i}", "org_id": o, "status": "open", "currency": "USD"}
            for i, o in enumerate(existing)
        ],
    )
    bodies = [
        invoice(customer, 100 + i * 10 + j, number_hint=f"{i}-{j}")
        for i, customer in enumerate(ids)
        for j in range(2 + i % 2)
    ]
    w.zoho.bulk_create(org, "invoices", bodies)


def _outcome(w: World) -> dict[str, Any]:
    """What a backfill leaves behind, independent of ids and order."""
    total_key = w.pd_key("deal", "Zoho Invoice Total")
    deals = {
        d["title"]: str(
            Decimal(str(((d.get("custom_fields") or {}).get(total_key) or {}).get("value") or 0))
        )
        for d in w.pd_records("deals")
    }
    with w.context.session() as session:
        links = session.scalar(sa.select(sa.func.count()).select_from(Link))
        invoices = session.execute(
            sa.select(InvoiceLink.invoice_number, InvoiceLink.deal_id.is_not(None))
        ).all()
    return {
        "organizations": sorted(o["name"] for o in w.pd_records("organizations")),
        "persons": sorted(p["name"] for p in w.pd_records("persons")),
        "deal_totals": deals,
        "links": links,
        "invoices": sorted((str(n), bool(linked)) for n, linked in invoices),
    }


def _run_all(w: World, chunks: list[dict[str, Any]]) -> list[BackfillProgress]:
    """Contacts first, then invoices, each phase in a shuffled order (as workers would)."""
    rng = random.Random(7)
    contacts = [c for c in chunks if c["phase"] == "contacts"]
    invoices = [c for c in chunks if c["phase"] == "invoices"]
    rng.shuffle(contacts)
    rng.shuffle(invoices)
    return [
        run_backfill_chunk(w.context, c, task_id=f"t{c['number']}") for c in contacts + invoices
    ]


def test_chunks_give_the_single_process_result(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    with world(f"sqlite:///{tmp_path}/single.db", redis_url) as w:
        _seed(w)
        with engine_session(w.context, trigger="backfill", indexed=True) as engine:
            single_state = engine.backfill()
        single = _outcome(w)
    redis.Redis.from_url(redis_url).flushdb()
    with world(postgres_url, redis_url) as w:
        _seed(w)
        chunks = plan_backfill_chunks(w.context, chunk_size=7)
        states = _run_all(w, chunks)
        distributed = _outcome(w)
    assert single_state.failed == 0
    assert sum(s.failed for s in states) == 0
    assert sum(s.done for s in states) == single_state.done == CUSTOMERS + CUSTOMERS * 5 // 2
    assert len(single["organizations"]) == CUSTOMERS
    assert sum(1 for v in single["deal_totals"].values() if Decimal(v) > 0) == CUSTOMERS // 2
    assert distributed == single


def _spy_lookups(monkeypatch: pytest.MonkeyPatch, records_kept: int) -> list[IndexedLookup]:
    """Every IndexedLookup the engine sessions make, each holding at most ``records_kept``."""
    made: list[IndexedLookup] = []

    class Spy(IndexedLookup):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(lookup_module, "RECORDS_KEPT", records_kept)
    monkeypatch.setattr(engine_module, "IndexedLookup", Spy)
    return made


def test_chunks_in_one_process_share_keys_and_hold_a_bounded_number_of_records(
    postgres_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with world(f"sqlite:///{tmp_path}/single.db", redis_url) as w:
        _seed(w)
        with engine_session(w.context, trigger="backfill", indexed=True) as engine:
            engine.backfill()
        single = _outcome(w)
    redis.Redis.from_url(redis_url).flushdb()
    lookups = _spy_lookups(monkeypatch, records_kept=3)
    with world(postgres_url, redis_url) as w:
        _seed(w)
        chunks = plan_backfill_chunks(w.context, chunk_size=5)
        states = _run_all(w, chunks)
        distributed = _outcome(w)
    assert sum(s.failed for s in states) == 0
    # Matching through keys and reads by id finds what the full listing found: no duplicates.
    assert distributed == single
    assert len(lookups) == len(chunks)
    # One index of keys for the process; each chunk holds at most 3 full records per entity,
    # whatever the earlier chunks listed or wrote.
    assert len({id(lookup.index) for lookup in lookups}) == 1
    for lookup in lookups:
        for entity in ("organization", "person", "deal"):
            assert len(lookup.held(entity)) <= 3
    # The company is listed in full once; later chunks list only what changed since.
    full = [lookup for lookup in lookups if lookup.listings.get("organization") == "full"]
    assert len(full) == 1
    assert lookups[-1].stats()["organizations"] >= CUSTOMERS


def test_a_record_created_elsewhere_between_chunks_is_matched_not_duplicated(
    postgres_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = _spy_lookups(monkeypatch, records_kept=1)
    with world(postgres_url, redis_url) as w:
        names = [f"Client {i:02d} GmbH" for i in range(9)]
        ids = w.zoho.bulk_create(w.zoho_orgs["us"], "contacts", [contact(n) for n in names])
        w.pipedrive.seed(COMPANY, "organizations", [{"name": "Unrelated Ltd"}])
        chunks = plan_backfill_chunks(w.context, chunk_size=3, include_invoices=False)
        run_backfill_chunk(w.context, chunks[0])
        # Another worker (or a user) creates the organization of a later chunk's contact.
        later = chunks[2]["records"][0][0]
        name = names[[str(i) for i in ids].index(later)]
        (made_elsewhere,) = w.pipedrive.seed(COMPANY, "organizations", [{"name": name}])
        for chunk in chunks[1:]:
            run_backfill_chunk(w.context, chunk)
        organizations = [o["name"] for o in w.pd_records("organizations")]
        with w.context.session() as session:
            linked = session.scalar(
                sa.select(Link.pipedrive_id).where(
                    Link.zoho_entity == "contact", Link.zoho_id == later
                )
            )
    assert sorted(organizations) == sorted([*names, "Unrelated Ltd"])
    assert linked == str(made_elsewhere)
    assert [lookup.listings.get("organization") for lookup in lookups[1:]] == ["changes"] * 2


def test_plan_puts_contacts_first_and_a_customers_invoices_together(
    postgres_url: str, redis_url: str
) -> None:
    with world(postgres_url, redis_url) as w:
        _seed(w)
        chunks = plan_backfill_chunks(w.context, chunk_size=5)
    phases = [c["phase"] for c in chunks]
    assert phases == sorted(phases, key=lambda p: p != "contacts")
    assert [c["number"] for c in chunks] == list(range(len(chunks)))
    contact_ids = [r[0] for c in chunks if c["phase"] == "contacts" for r in c["records"]]
    assert len(contact_ids) == len(set(contact_ids)) == CUSTOMERS
    assert all(len(c["records"]) <= 5 for c in chunks if c["phase"] == "contacts")
    chunk_of_customer: dict[str, set[int]] = {}
    for chunk in chunks:
        if chunk["phase"] == "invoices":
            for item in chunk["records"]:
                chunk_of_customer.setdefault(item["customer_id"], set()).add(chunk["number"])
    assert len(chunk_of_customer) == CUSTOMERS
    assert all(len(numbers) == 1 for numbers in chunk_of_customer.values())


def test_a_chunk_run_twice_or_overlapping_writes_nothing_more(
    postgres_url: str, redis_url: str
) -> None:
    with world(postgres_url, redis_url) as w:
        _seed(w)
        chunks = plan_backfill_chunks(w.context, chunk_size=6)
        _run_all(w, chunks)
        before = _outcome(w)
        writes = w.pd_writes()
        contacts = [c for c in chunks if c["phase"] == "contacts"]
        invoices = [c for c in chunks if c["phase"] == "invoices"]
        overlap = {
            "phase": "contacts",
            "number": 99,
            "zoho_connection_id": contacts[0]["zoho_connection_id"],
            "records": contacts[0]["records"][2:] + contacts[1]["records"][:3],
        }
        again = [
            run_backfill_chunk(w.context, c)
            for c in (contacts[0], overlap, invoices[0], invoices[0])
        ]
        assert w.pd_writes() == writes
        assert _outcome(w) == before
        assert len(before["organizations"]) == len(set(before["organizations"])) == CUSTOMERS
        assert all(s.applied == 0 for s in again)
        assert again[0].unchanged == len(contacts[0]["records"])


@pytest.fixture(params=["fake", "real"])
def run_context(request: pytest.FixtureRequest) -> SimpleNamespace:
    client = (
        request.getfixturevalue("fake_redis")
        if request.param == "fake"
        else request.getfixturevalue("real_redis")
    )
    return SimpleNamespace(redis=client)


def _chunks(contacts: int, invoices: int) -> list[dict[str, Any]]:
    chunks = [{"phase": "contacts", "zoho_connection_id": 1, "records": [["c", ""]]}] * contacts
    chunks += [{"phase": "invoices", "zoho_connection_id": 1, "records": [{}]}] * invoices
    return [{**c, "number": n} for n, c in enumerate(chunks)]


def test_last_contact_chunk_releases_the_invoices_once(run_context: Any) -> None:
    run, first = BackfillRun.start(run_context, _chunks(3, 2))
    assert [c["phase"] for c in first] == ["contacts"] * 3
    done = BackfillProgress(done=1, applied=1)
    assert run.finish(first[0], done) == []
    # The same chunk delivered again is not counted twice.
    assert run.finish(first[0], done) == []
    assert run.finish(first[1], done) == []
    released = run.finish(first[2], done)
    assert [c["number"] for c in released] == [3, 4]
    assert run.release_invoices() == []
    assert not run.status()["complete"]
    for chunk in released:
        assert run.finish(chunk, done) == []
    status = run.status()
    assert status["complete"]
    assert status["finished_chunks"] == 5
    assert status["applied"] == 5


def test_a_run_without_contacts_starts_with_the_invoices(run_context: Any) -> None:
    _, first = BackfillRun.start(run_context, _chunks(0, 2))
    assert [c["phase"] for c in first] == ["invoices", "invoices"]


def test_rate_limit_waits_are_slept_through_but_spent_budgets_raise() -> None:
    slept: list[float] = []
    answers: list[Exception | str] = [
        RateLimitError("minute", retry_after=3.0),
        RateLimitError("minute", retry_after=1.0),
        "ok",
    ]

    def call() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert _patiently(call, sleep=slept.append) == "ok"
    assert len(slept) == 2
    assert slept[0] >= 3.0

    def spent() -> str:
        raise BudgetExhaustedError("day", reset_at=None, retry_after=3600)

    with pytest.raises(BudgetExhaustedError):
        _patiently(spent, sleep=slept.append)
    with pytest.raises(RateLimitError):
        _patiently(lambda: call_long(), sleep=slept.append)


def call_long() -> str:
    raise RateLimitError("cooldown", retry_after=3600)


def test_cli_flag_hands_the_run_to_the_workers_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from click.testing import CliRunner

    from connector.cli import main

    calls: list[list[str]] = []

    def fake_run(command: list[str], check: bool) -> SimpleNamespace:
        calls.append(command)
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    result = CliRunner().invoke(
        main, ["backfill", "--distributed", "--chunk-size", "50", "--zoho", "zoho-us", "--wait"]
    )
    assert result.exit_code == 0, result.output
    (command,) = calls
    assert command[1:] == [
        "-m",
        "workers.backfill",
        "--chunk-size",
        "50",
        "--zoho",
        "zoho-us",
        "--wait",
    ]
