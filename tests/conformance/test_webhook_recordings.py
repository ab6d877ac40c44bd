"""Recorded webhook deliveries through the real receiver, intake and task into the engine.

Every delivery is sent byte for byte, authenticated as its route wants, and must be answered 2xx.
The sandbox is first given the records the delivery talks about (with the delivery's own ids and
names), so the engine's re-read finds what the live API would have had. Then each queued event is
processed like the worker does: it must end processed or skipped, never failed, with a row in the
audit trail; a synced organization must have become a linked Zoho contact of the same name, and
an entity we do not sync must carry its audited "not synced" reason.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from connector.models import AuditEntry, Link, WebhookEvent
from connector.sandbox.pipedrive_store import entity_name
from connector.sync import service
from connector.zoho.webhooks import sign_zoho_webhook
from tests.conformance.recordings import Recording, params, require
from tests.harness import COMPANY, World, world
from web import create_app

SYNCED_PIPEDRIVE = {"organization", "person", "deal"}


@dataclass
class Receiver:
    world: World
    client: Any
    queued: list[tuple[str, list[Any], str]]
    basic: dict[str, str]
    zoho_secret: str


@pytest.fixture
def receiver(postgres_url: str, redis_url: str) -> Iterator[Receiver]:
    with world(postgres_url, redis_url) as w:
        queued: list[tuple[str, list[Any], str]] = []
        app = create_app(
            {
                "TESTING": True,
                "CONNECTOR_CONTEXT": w.context,
                "CONNECTOR_ENQUEUE": lambda task, args, queue: queued.append((task, args, queue)),
            }
        )
        with w.context.session() as session:
            store = w.context.store(session)
            basic = store.webhook_secret(store.get("pipedrive"))
            zoho_secret = store.webhook_secret(store.get("zoho-us"))["secret"]
        yield Receiver(w, app.test_client(), queued, basic, zoho_secret)


def _seed_at(w: World, entity: str, record_id: int, body: dict[str, Any]) -> None:
    """Put a record into the sandbox under the id the delivery names."""
    table = w.pipedrive.company(COMPANY).data.tables[entity_name(entity)]
    if record_id in table.records:
        return
    table.next_id = record_id
    w.pipedrive.seed(COMPANY, entity, [body])


def _stage(w: World, delivery: dict[str, Any]) -> None:
    """Give the sandbox what the delivery describes: its record and the records it points to."""
    meta = delivery["meta"]
    state = delivery.get("data") or delivery.get("previous") or {}
    entity, record_id = meta["entity"], int(meta["entity_id"])
    if entity not in SYNCED_PIPEDRIVE:
        return
    if state.get("org_id"):
        _seed_at(w, "organization", int(state["org_id"]), {"name": f"Org {state['org_id']}"})
    if entity == "deal" and state.get("person_id"):
        _seed_at(w, "person", int(state["person_id"]), {"name": f"Person {state['person_id']}"})
    body: dict[str, Any] = {"name": state.get("name") or f"Recorded {entity} {record_id}"}
    if entity == "person" and state.get("org_id"):
        body["org_id"] = int(state["org_id"])
    if entity == "deal":
        body = {"title": state.get("title") or f"Deal {record_id}"}
        body.update({k: int(state[k]) for k in ("org_id", "person_id") if state.get(k)})
    _seed_at(w, entity, record_id, body)
    if meta["action"] == "delete":
        w.pipedrive.app_delete(COMPANY, entity, record_id)


def _post(r: Receiver, raw: bytes) -> Any:
    credentials = f"{r.basic['username']}:{r.basic['password']}".encode()
    return r.client.post(
        "/webhooks/pipedrive/pipedrive",
        data=raw,
        headers={
            "Authorization": "Basic " + base64.b64encode(credentials).decode(),
            "Content-Type": "application/json",
        },
    )


def _audit_reasons(w: World, pipedrive_id: str) -> list[tuple[str, str, str]]:
    with w.context.session() as session:
        rows = session.scalars(sa.select(AuditEntry).where(AuditEntry.pipedrive_id == pipedrive_id))
        return [(row.action, row.outcome, row.reason) for row in rows]


@pytest.mark.integration
@pytest.mark.parametrize("recording", params("pipedrive", webhooks=True))
def test_pipedrive_delivery_is_accepted_and_handled(
    receiver: Receiver, recording: Recording | None
) -> None:
    recording = require(recording)
    w, delivery = receiver.world, recording.json()
    meta = delivery["meta"]
    with w.context.session() as session:
        store = w.context.store(session)
        store.set_options(store.get("pipedrive"), company_id=str(meta["company_id"]))
    _stage(w, delivery)

    answer = _post(receiver, recording.raw())

    assert 200 <= answer.status_code < 300, f"{recording.name}: {answer.get_json()}"
    entity, entity_id = meta["entity"], str(meta["entity_id"])
    if entity not in SYNCED_PIPEDRIVE:
        assert receiver.queued == []
        reasons = [reason for _a, _o, reason in _audit_reasons(w, entity_id)]
        assert any(reason.startswith("not synced:") for reason in reasons), reasons
        return
    assert len(receiver.queued) == 1, f"{recording.name} was not queued"
    (_task, (event_id,), _queue) = receiver.queued[0]
    service.process_webhook_event(w.context, event_id)
    with w.context.session() as session:
        event = session.get(WebhookEvent, event_id)
        assert event is not None
        assert event.status in {"processed", "skipped"}, event.error
    assert _audit_reasons(w, entity_id), f"{recording.name} left nothing in the audit trail"
    if entity == "organization" and meta["action"] != "delete":
        _assert_linked_contact(w, entity_id, delivery["data"]["name"])


def _assert_linked_contact(w: World, organization_id: str, name: str) -> None:
    with w.context.session() as session:
        link = session.scalars(
            sa.select(Link).where(
                Link.pipedrive_entity == "organization", Link.pipedrive_id == organization_id
            )
        ).one()
    contact = w.zoho.get_record(w.zoho_orgs["us"], "contacts", link.zoho_id)
    assert contact["contact_name"] == name


@pytest.mark.integration
@pytest.mark.parametrize("recording", params("zoho", webhooks=True))
def test_zoho_delivery_is_accepted_and_handled(
    receiver: Receiver, recording: Recording | None
) -> None:
    recording = require(recording)
    w, raw = receiver.world, recording.raw()
    signature = sign_zoho_webhook(receiver.zoho_secret, params={}, raw_body=raw)
    answer = receiver.client.post(
        "/webhooks/zoho/zoho-us",
        data=raw,
        content_type="application/json",
        headers={"X-Zoho-Webhook-Signature": signature},
    )
    assert 200 <= answer.status_code < 300, f"{recording.name}: {answer.get_json()}"
    for _task, (event_id,), _queue in receiver.queued:
        service.process_webhook_event(w.context, event_id)
        with w.context.session() as session:
            event = session.get(WebhookEvent, event_id)
            assert event is not None
            assert event.status in {"processed", "skipped"}, event.error
    with w.context.session() as session:
        assert session.scalars(sa.select(AuditEntry)).first(), "nothing in the audit trail"
