"""Leases on claimed webhook events and backfill chunks, on the real PostgreSQL and Redis.

A worker that dies with its whole process group leaves rows marked running; the reaper
(:func:`connector.sync.service.reap_expired_leases`) hands them out again once their lease runs
out, never while a heartbeat keeps it alive, and a chunk run again writes nothing twice.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from connector import leases
from connector.context import AppContext
from connector.db import upgrade
from connector.models import BackfillChunk, Connection, WebhookEvent, utcnow
from connector.sync.distributed import (
    chunk_done,
    plan_backfill_chunks,
    queue_chunks,
    run_leased_chunk,
)
from connector.sync.service import process_webhook_event, reap_expired_leases
from tests.harness import COMPANY, contact, make_settings, world

pytestmark = pytest.mark.integration

GONE = "worker-host-that-died:4242"


@pytest.fixture
def context(postgres_url: str, redis_url: str) -> Iterator[AppContext]:
    settings = make_settings(postgres_url, redis_url)
    upgrade(settings.database_url)
    ctx = AppContext(settings=settings)
    yield ctx
    ctx.close()


def _event(context: AppContext, **values: object) -> int:
    with context.session() as session:
        connection = Connection(
            name=f"zoho-{time.monotonic_ns()}",
            system="zoho",
            external_id="1",
            auth_kind="oauth",
            credentials_ciphertext="x",
        )
        session.add(connection)
        session.flush()
        event = WebhookEvent(
            source="zoho",
            connection_id=connection.id,
            dedupe_key=f"k{time.monotonic_ns()}",
            **values,
        )
        session.add(event)
        session.flush()
        return event.id


def _chunk_row(context: AppContext, **values: object) -> int:
    chunk = {"phase": "contacts", "number": 3, "zoho_connection_id": 1, "records": [["c1", ""]]}
    with context.session() as session:
        row = BackfillChunk(run_id="run1", number=3, chunk=chunk, **values)
        session.add(row)
        session.flush()
        return row.id


def test_an_expired_lease_is_reaped_and_sent_again_once(context: AppContext) -> None:
    past = utcnow() - dt.timedelta(seconds=5)
    event_id = _event(context, status="running", lease_owner=GONE, lease_expires_at=past)
    _chunk_row(context, status="running", lease_owner=GONE, lease_expires_at=past)

    sent = reap_expired_leases(context)

    assert (leases.EVENT_TASK, {"args": [event_id], "kwargs": {}}) in sent
    chunk_task = next(args for task, args in sent if task == leases.CHUNK_TASK)
    assert chunk_task["args"][0] == "run1"
    assert chunk_task["args"][1]["records"] == [["c1", ""]]
    with context.session() as session:
        event = session.get(WebhookEvent, event_id)
        assert event is not None
        assert (event.status, event.lease_owner) == ("queued", None)
        # The message sent again has a delivery lease: if it is lost too, it is sent once more.
        assert event.lease_expires_at is not None
        assert event.lease_expires_at > utcnow() + dt.timedelta(seconds=leases.lease_seconds())
    # The rows were reset with the same transaction: a second reaper finds nothing.
    assert reap_expired_leases(context) == []


def test_work_sent_but_never_claimed_is_sent_again_when_its_delivery_lease_runs_out(
    context: AppContext,
) -> None:
    """A message the dead worker had received but not started (no claim, so no owner) comes
    back from the broker only after its visibility timeout; the delivery lease is shorter."""
    past = utcnow() - dt.timedelta(seconds=1)
    lost = _event(context, status="queued", lease_expires_at=past)
    _event(context, status="queued", lease_expires_at=leases.delivery_lease())
    queue_chunks(context, "run2", [{"phase": "contacts", "number": 0, "records": [["c9", ""]]}])
    assert reap_expired_leases(context) == [(leases.EVENT_TASK, {"args": [lost], "kwargs": {}})]
    with context.session() as session:
        session.execute(sa.update(BackfillChunk).values(lease_expires_at=past))
    (chunk_task,) = reap_expired_leases(context)
    assert chunk_task[0] == leases.CHUNK_TASK
    assert chunk_task[1]["args"] == [
        "run2",
        {"phase": "contacts", "number": 0, "records": [["c9", ""]]},
    ]


def test_queued_chunks_are_recorded_once_with_a_delivery_lease(context: AppContext) -> None:
    chunk = {"phase": "contacts", "number": 5, "records": [["c1", ""]]}
    queue_chunks(context, "run3", [chunk])
    queue_chunks(context, "run3", [chunk])  # a second sender (a redelivered chunk) adds nothing
    with context.session() as session:
        (row,) = session.scalars(sa.select(BackfillChunk).where(BackfillChunk.run_id == "run3"))
        assert (row.status, row.lease_owner, row.attempts) == ("queued", None, 0)
        assert row.lease_expires_at is not None
        assert row.lease_expires_at > utcnow()


def test_finished_released_and_unexpired_rows_are_not_reaped(context: AppContext) -> None:
    past = utcnow() - dt.timedelta(seconds=5)
    future = utcnow() + dt.timedelta(seconds=60)
    _event(context, status="processed", lease_owner=GONE, lease_expires_at=past)
    _event(context, status="queued")  # waiting in the broker, nobody's lease
    _event(context, status="running", lease_owner=GONE, lease_expires_at=future)
    assert reap_expired_leases(context) == []


def test_a_heartbeating_lease_is_not_reaped_and_one_that_stopped_is(
    context: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONNECTOR_LEASE_SECONDS", "1.5")
    event_id = _event(context, status="queued")
    me = leases.owner()
    with context.session() as session:
        event = session.get(WebhookEvent, event_id)
        assert event is not None
        assert leases.take(session, event, me, utcnow())
    with leases.Heartbeat(context.engine, WebhookEvent, event_id, me, interval=0.3) as beat:
        time.sleep(3.0)  # twice the lease
        assert reap_expired_leases(context) == []
    assert beat.beats >= 5
    time.sleep(2.0)  # the heartbeat stopped, as if the process had died
    assert reap_expired_leases(context) == [(leases.EVENT_TASK, {"args": [event_id], "kwargs": {}})]


def test_a_second_delivery_of_a_running_event_does_nothing(context: AppContext) -> None:
    future = utcnow() + dt.timedelta(seconds=60)
    event_id = _event(context, status="running", lease_owner="elsewhere:1", lease_expires_at=future)
    assert process_webhook_event(context, event_id) == "claimed"
    with context.session() as session:
        event = session.get(WebhookEvent, event_id)
        assert event is not None
        assert (event.status, event.lease_owner, event.attempts) == ("running", "elsewhere:1", 0)


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(
    context: AppContext,
) -> None:
    # A pool process SIGKILLed under a living parent: the parent requeues its message at once.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    owner = f"{leases.owner().rpartition(':')[0]}:{dead}"
    future = utcnow() + dt.timedelta(seconds=60)
    event_id = _event(context, status="running", lease_owner=owner, lease_expires_at=future)
    with context.session() as session:
        event = session.get(WebhookEvent, event_id)
        assert event is not None
        assert leases.owner_is_dead(owner)
        assert leases.claimable(event, utcnow())
        assert not leases.owner_is_dead(leases.owner())


def test_a_chunk_whose_worker_died_is_run_again_and_writes_once(
    postgres_url: str, redis_url: str
) -> None:
    with world(postgres_url, redis_url) as w:
        org = w.zoho_orgs["us"]
        w.zoho.bulk_create(org, "contacts", [contact(f"Customer {i} Ltd") for i in range(6)])
        (chunk,) = plan_backfill_chunks(w.context, chunk_size=50, include_invoices=False)
        first = run_leased_chunk(w.context, "run-x", chunk)
        assert first is not None
        assert first.applied == 6
        writes = w.pd_writes()
        # The worker dies before counting the chunk: its lease is left to run out.
        with w.context.session() as session:
            session.execute(
                sa.update(BackfillChunk).values(lease_expires_at=utcnow() - dt.timedelta(seconds=1))
            )
        ((task, args),) = reap_expired_leases(w.context)
        assert task == leases.CHUNK_TASK
        again = run_leased_chunk(w.context, *args["args"])
        assert again is not None
        assert (again.applied, again.unchanged) == (0, 6)
        assert w.pd_writes() == writes
        chunk_done(w.context, "run-x", chunk["number"])
        # Delivered once more after it was done: not even run.
        assert run_leased_chunk(w.context, "run-x", chunk) is None
        assert len(w.pd_records("organizations")) == 6
        assert COMPANY
