"""A contact's persons are never left behind by a contact that counts as applied.

Both cases were found by the budget-reset fault-injection scenario: the backfill skips contacts
already applied and not modified since, so whatever marked a contact applied before its persons
reached Pipedrive lost those persons for good.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from connector.errors import RateLimitError
from connector.sync.engine import SyncEngine, engine_session
from tests.harness import COMPANY, World, contact, world


@pytest.fixture
def w(tmp_path: Any, redis_url: str) -> Iterator[World]:
    with world(f"sqlite:///{tmp_path / 'c.db'}", redis_url) as built:
        yield built


def _person_emails(w: World) -> set[str]:
    return {e["value"] for p in w.pd_records("persons") for e in p.get("emails") or []}


def test_organization_linked_by_a_pipedrive_pull_still_gets_the_contacts_persons(w: World) -> None:
    org = w.zoho_orgs["us"]
    (cid,) = w.zoho.bulk_create(org, "contacts", [contact("Initech", persons=2)])
    w.pipedrive.seed(COMPANY, "organizations", [{"name": "Initech"}])
    with engine_session(w.context, trigger="schedule") as engine:
        engine.pull_pipedrive(w.pipedrive_connection)  # links the organization by name
    assert _person_emails(w) == set()
    with engine_session(w.context, trigger="backfill") as engine:
        progress = engine.backfill()
    assert not progress.stopped
    assert _person_emails(w) == {
        "person0@initech.example.com",
        "person1@initech.example.com",
    }
    (organization,) = w.pd_records("organizations")
    assert {p["org_id"] for p in w.pd_records("persons")} == {organization["id"]}
    # And now it does count as applied: a further backfill writes nothing.
    writes = w.pd_writes()
    with engine_session(w.context, trigger="backfill") as engine:
        engine.backfill()
    assert w.pd_writes() == writes
    assert cid


def test_a_backfill_stopped_between_organization_and_persons_comes_back_for_them(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = w.zoho_orgs["us"]
    w.zoho.bulk_create(org, "contacts", [contact("Hooli", persons=1)])
    real = SyncEngine._contact_person
    calls = {"n": 0}

    def budget_runs_out_once(self: SyncEngine, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RateLimitError("daily token budget spent", system="pipedrive")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SyncEngine, "_contact_person", budget_runs_out_once)
    with engine_session(w.context, trigger="backfill") as engine:
        first = engine.backfill()
    assert first.stopped
    assert [o["name"] for o in w.pd_records("organizations")] == ["Hooli"]
    assert _person_emails(w) == set()
    with engine_session(w.context, trigger="backfill") as engine:
        second = engine.backfill()
    assert not second.stopped
    assert _person_emails(w) == {"person0@hooli.example.com"}
    assert [o["name"] for o in w.pd_records("organizations")] == ["Hooli"]
