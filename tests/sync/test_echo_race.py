"""The backfill's echo race: an organization's webhook outruns the commit of its link.

The backfill creates a Pipedrive organization from a Zoho contact (with the contact's id in
``Zoho Contact ID``) and stores the link only when its transaction commits; Pipedrive's webhook
for that create can be handled first, by another worker. The reference is what ties them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connector.models import AuditEntry, Link, ReviewItem
from connector.sync.engine import SyncEngine, engine_session
from tests.harness import World, contact, world


@pytest.fixture
def w(postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[World]:
    # Two Zoho organizations and rules only: an organization without a country is unroutable,
    # so nothing but the reference can say which contact it came from.
    mapping = tmp_path / "mapping.toml"
    mapping.write_text('[routing]\nrules = { "Germany" = "zoho-eu" }\n')
    with world(
        postgres_url,
        redis_url,
        data_centers=("us", "eu"),
        settings_extra={"CONNECTOR_CONFIG": str(mapping)},
    ) as built:
        yield built


def _contact_count(w: World, dc: str) -> int:
    return len(w.zoho.store.orgs[w.zoho_orgs[dc]].contacts)


def test_webhook_before_the_link_is_stored_links_and_never_creates(
    w: World, monkeypatch: pytest.MonkeyPatch
):
    body = contact("Hausmann", persons=0)
    body["billing_address"] = {"address": "1 Weg", "city": "Bern"}
    (cid,) = w.zoho.bulk_create(w.zoho_orgs["us"], "contacts", [body])
    outcomes: list[str] = []
    original = SyncEngine._create

    def create_then_deliver_webhook(self: SyncEngine, entity: str, *args: Any) -> Any:
        created = original(self, entity, *args)
        if entity == "organization":
            # Another worker handles organization.added while this transaction is still open.
            with engine_session(w.context, trigger="webhook") as other:
                outcomes.append(
                    other.handle_pipedrive_event(
                        "organization", str(created["id"]), {"action": "create"}
                    )
                )
        return created

    monkeypatch.setattr(SyncEngine, "_create", create_then_deliver_webhook)
    with engine_session(w.context, trigger="backfill") as engine:
        state = engine.backfill(include_invoices=False)
    assert state.failed == 0
    assert outcomes == ["ok"]
    assert (_contact_count(w, "us"), _contact_count(w, "eu")) == (1, 0)
    (org,) = w.pd_records("organizations")
    with w.context.session() as session:
        (link,) = session.scalars(sa.select(Link).where(Link.pipedrive_entity == "organization"))
        assert (link.zoho_id, link.pipedrive_id) == (cid, str(org["id"]))
        assert link.zoho_connection_id == w.zoho_connections["us"]
        assert session.scalars(sa.select(ReviewItem)).all() == []
        failed = session.scalars(sa.select(AuditEntry).where(AuditEntry.outcome == "failed"))
        assert failed.all() == []
