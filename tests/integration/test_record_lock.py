"""Two workers handed the same record at once (real PostgreSQL and Redis): one creates, the other
finds its link. Without the record lock both would find no link and both would create."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from connector.errors import BusyError
from connector.models import Link
from connector.sync.engine import SyncEngine, engine_session, redis_record_locks
from tests.harness import World, contact, world


@pytest.fixture
def w(postgres_url: str, redis_url: str) -> Iterator[World]:
    with world(postgres_url, redis_url) as built:
        yield built


@pytest.fixture
def both_reach_create(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Hold each create until a second worker reaches it too, or 2 s pass.

    Without the lock both workers arrive and both create; with it the second is still waiting
    for the lock, so the first goes on alone after the timeout.
    """
    barrier = threading.Barrier(2, timeout=2.0)
    created: list[str] = []
    original = SyncEngine._create

    def create(self: SyncEngine, entity: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if entity == "organization":
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()
            created.append(entity)
        return original(self, entity, *args, **kwargs)

    monkeypatch.setattr(SyncEngine, "_create", create)
    return created


def _race(target: Any, count: int = 2) -> list[BaseException]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # reported to the test, not swallowed
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def test_one_contact_synced_by_two_workers_at_once_creates_one_organization(
    w: World, both_reach_create: list[str]
) -> None:
    (cid,) = w.zoho.bulk_create(w.zoho_orgs["us"], "contacts", [contact("Race Ltd", persons=0)])

    def sync() -> None:
        with engine_session(w.context, trigger="webhook") as engine:
            engine.sync_zoho_contact(w.zoho_connections["us"], cid)

    assert _race(sync) == []
    assert [o["name"] for o in w.pd_records("organizations")] == ["Race Ltd"]
    assert both_reach_create == ["organization"]
    with w.context.session() as session:
        links = list(session.scalars(sa.select(Link).where(Link.zoho_id == cid)))
    assert len(links) == 1


def test_without_the_lock_the_same_race_duplicates(w: World, both_reach_create: list[str]) -> None:
    """The control: proves the race above is real, so its test can fail."""
    (cid,) = w.zoho.bulk_create(w.zoho_orgs["us"], "contacts", [contact("Race Ltd", persons=0)])

    def sync() -> None:
        with engine_session(w.context, trigger="webhook") as engine:
            engine._locks = None
            engine.sync_zoho_contact(w.zoho_connections["us"], cid)

    _race(sync)
    assert [o["name"] for o in w.pd_records("organizations")] == ["Race Ltd", "Race Ltd"]


def test_a_record_held_too_long_is_retried_later_not_waited_for(w: World) -> None:
    locks = redis_record_locks(w.context.redis, wait_seconds=0.2)
    with locks("zoho:1:contact:42"), pytest.raises(BusyError), locks("zoho:1:contact:42"):
        pass  # pragma: no cover - the second acquisition must not succeed
    with locks("zoho:1:contact:42"):  # released: free again
        pass


def test_a_pipedrive_record_linked_by_another_worker_is_not_returned_as_ours(w: World) -> None:
    """Two Zoho customers matched the same Pipedrive organization at once: the second link
    attempt must not come back with the first customer's link."""
    from connector.sync.links import LinkRepository

    pd_id = w.pipedrive_connection
    zoho_id = w.zoho_connections["us"]
    with w.context.session() as session:
        LinkRepository(session).link(
            zoho_connection_id=zoho_id,
            zoho_entity="contact",
            zoho_id="first",
            pipedrive_connection_id=pd_id,
            pipedrive_entity="organization",
            pipedrive_id="77",
        )
    with w.context.session() as session, pytest.raises(BusyError):
        LinkRepository(session).link(
            zoho_connection_id=zoho_id,
            zoho_entity="contact",
            zoho_id="second",
            pipedrive_connection_id=pd_id,
            pipedrive_entity="organization",
            pipedrive_id="77",
        )


def test_a_lock_left_by_a_dead_worker_is_waited_out(w: World) -> None:
    dead = w.context.redis.lock("connector:lock:record:zoho:1:contact:7", timeout=0.5)
    assert dead.acquire()  # never released: its holder was SIGKILLed
    locks = redis_record_locks(w.context.redis, wait_seconds=2.0)
    with locks("zoho:1:contact:7"):
        pass
