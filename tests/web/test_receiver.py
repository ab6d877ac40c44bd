"""Every rung of the receiver ladder, for both webhook routes."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import sqlalchemy as sa

from connector.models import AuditEntry, WebhookEvent
from connector.zoho.webhooks import sign_zoho_webhook
from tests.harness import world
from web import create_app


@pytest.fixture
def env(tmp_path, redis_url):
    with world(f"sqlite:///{tmp_path / 'c.db'}", redis_url) as w:
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
            zoho_secret = store.webhook_secret(store.get("zoho-us"))["secret"]
            basic = store.webhook_secret(store.get("pipedrive"))
        yield w, app.test_client(), queued, zoho_secret, basic


def _events(w):
    with w.context.session() as session:
        return list(session.scalars(sa.select(WebhookEvent).order_by(WebhookEvent.id)))


def _zoho_post(
    client,
    secret,
    body: dict[str, Any],
    *,
    query="event_type=invoice.updated",
    connection="zoho-us",
    signature=None,
):
    raw = json.dumps(body).encode()
    params = dict(p.split("=", 1) for p in query.split("&")) if query else {}
    if signature is None:
        signature = sign_zoho_webhook(secret, params=params, raw_body=raw)
    return client.post(
        f"/webhooks/zoho/{connection}?{query}",
        data=raw,
        content_type="application/json",
        headers={"X-Zoho-Webhook-Signature": signature} if signature else {},
    )


def _invoice_body(w, invoice_id="4600001", modified="2026-03-02T10:00:00+0000"):
    return {
        "invoice": {"invoice_id": invoice_id, "last_modified_time": modified, "customer_id": "1"}
    }


def test_signed_zoho_webhook_is_stored_and_queued_after_commit(env):
    w, client, queued, secret, _ = env
    answer = _zoho_post(client, secret, _invoice_body(w))
    assert answer.status_code == 202
    (event,) = _events(w)
    assert (event.source, event.entity, event.entity_id, event.status) == (
        "zoho",
        "invoice",
        "4600001",
        "queued",
    )
    assert queued == [("workers.tasks.process_webhook_event", [event.id], "webhooks")]


@pytest.mark.parametrize(
    "signature",
    ["", "0" * 64, "deadbeef", "not-hex-at-all"],
    ids=["unsigned", "forged", "truncated", "malformed"],
)
def test_bad_zoho_signature_is_401_and_nothing_stored_or_queued(env, signature):
    w, client, queued, secret, _ = env
    answer = _zoho_post(client, secret, _invoice_body(w), signature=signature or "")
    assert answer.status_code == 401
    assert _events(w) == []
    assert queued == []


def test_signature_over_other_body_is_rejected(env):
    w, client, queued, secret, _ = env
    good = sign_zoho_webhook(secret, params={"event_type": "invoice.updated"}, raw_body=b"{}")
    answer = _zoho_post(client, secret, _invoice_body(w), signature=good)
    assert answer.status_code == 401
    assert queued == []


def test_unknown_connection_is_401(env):
    w, client, queued, secret, _ = env
    answer = _zoho_post(client, secret, _invoice_body(w), connection="zoho-nowhere")
    assert answer.status_code == 401
    assert queued == []


def test_payload_too_large_is_413(env):
    w, client, queued, secret, _ = env
    big = {"invoice": {"invoice_id": "1", "notes": "x" * (300 * 1024)}}
    answer = _zoho_post(client, secret, big)
    assert answer.status_code == 413
    assert _events(w) == []
    assert queued == []


def test_signed_garbage_is_accepted_with_the_reason_audited(env):
    # Authenticated deliveries are never refused: Zoho stops retrying and Pipedrive disables
    # webhooks that answer 4xx, so the reason goes to the audit trail instead.
    w, client, queued, secret, _ = env
    raw = b"this is not json"
    signature = sign_zoho_webhook(secret, params={}, raw_body=raw)
    answer = client.post(
        "/webhooks/zoho/zoho-us",
        data=raw,
        content_type="application/json",
        headers={"X-Zoho-Webhook-Signature": signature},
    )
    assert answer.status_code == 202
    assert "bad payload" in answer.get_json()["message"]
    assert _events(w) == []
    assert queued == []
    with w.context.session() as session:
        reasons = [r.reason for r in session.scalars(sa.select(AuditEntry))]
    assert any(r.startswith("not synced: bad payload") for r in reasons)


def test_duplicate_delivery_is_acknowledged_not_queued_and_audited(env):
    w, client, queued, secret, _ = env
    assert _zoho_post(client, secret, _invoice_body(w)).status_code == 202
    again = _zoho_post(client, secret, _invoice_body(w))
    assert again.status_code == 200
    assert len(_events(w)) == 1
    assert len(queued) == 1
    with w.context.session() as session:
        reasons = [r.reason for r in session.scalars(sa.select(AuditEntry))]
    assert any(r.startswith("duplicate delivery") for r in reasons)


@pytest.mark.parametrize("entity", ["bill", "purchaseorder", "vendorpayment"])
def test_bills_and_vendor_documents_are_stored_audited_and_not_synced(env, entity):
    w, client, queued, secret, _ = env
    writes = w.pd_writes()
    id_key = {
        "bill": "bill_id",
        "purchaseorder": "purchaseorder_id",
        "vendorpayment": "payment_id",
    }[entity]
    answer = _zoho_post(
        client, secret, {entity: {id_key: "77"}}, query=f"event_type={entity}.created"
    )
    assert answer.status_code == 202
    assert queued == []
    (event,) = _events(w)
    assert (event.entity, event.entity_id, event.status) == (entity, "77", "skipped")
    with w.context.session() as session:
        (row,) = session.scalars(sa.select(AuditEntry)).all()
    assert (row.entity, row.reason) == (entity, "not synced, by configuration")
    assert w.pd_writes() == writes


def test_backlog_above_limit_stores_and_answers_429(env, monkeypatch):
    from connector.sync import service

    w, client, queued, secret, _ = env
    monkeypatch.setattr(service, "BACKPRESSURE_CACHE_SECONDS", 0.0)  # react to the very next event
    monkeypatch.setattr(
        w.context,
        "settings",
        type(w.context.settings)(**{**w.context.settings.__dict__, "webhook_backlog_limit": 1}),
    )
    assert _zoho_post(client, secret, _invoice_body(w, "1")).status_code == 202
    answer = _zoho_post(client, secret, _invoice_body(w, "2"))
    assert answer.status_code == 429
    assert int(answer.headers["Retry-After"]) > 0
    statuses = [e.status for e in _events(w)]
    assert statuses == ["queued", "parked"]
    assert len(queued) == 1
    # The queued event is sent again if no worker claims it in time; the parked one waits.
    leased = [e.lease_expires_at is not None for e in _events(w)]
    assert leased == [True, False]


def _pd_body(
    w,
    entity="organization",
    entity_id=5,
    event_id="ea17c64f-ec7e-4e47-a321-5d84b7735fef",
    action="change",
):
    company_id = str(w.connection("pipedrive").options["company_id"])
    return {
        "data": {"id": entity_id, "name": "Acme", "update_time": "2026-03-02T10:00:00Z"},
        "previous": {"name": "Old"},
        "meta": {
            "action": action,
            "entity": entity,
            "entity_id": str(entity_id),
            "id": event_id,
            "company_id": company_id,
            "timestamp": "2026-03-02T10:00:00.000Z",
            "version": "2.0",
            "webhook_id": "1",
            "change_source": "app",
            "attempt": 1,
            "user_id": "1",
        },
    }


def _basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_pipedrive_webhook_with_basic_auth_is_queued(env):
    w, client, queued, _, basic = env
    answer = client.post(
        "/webhooks/pipedrive/pipedrive",
        json=_pd_body(w),
        headers={"Authorization": _basic(basic["username"], basic["password"])},
    )
    assert answer.status_code == 202, answer.get_json()
    (event,) = _events(w)
    assert (event.source, event.entity, event.entity_id) == ("pipedrive", "organization", "5")
    assert len(queued) == 1


@pytest.mark.parametrize("which", ["missing", "wrong-password", "wrong-user", "other-connection"])
def test_pipedrive_bad_credentials_are_401(env, which):
    w, client, queued, zoho_secret, basic = env
    headers = {
        "missing": {},
        "wrong-password": {"Authorization": _basic(basic["username"], "nope")},
        "wrong-user": {"Authorization": _basic("nobody", basic["password"])},
        # The Zoho connection's secret does not open the Pipedrive route.
        "other-connection": {"Authorization": _basic("zoho-us", zoho_secret)},
    }[which]
    answer = client.post("/webhooks/pipedrive/pipedrive", json=_pd_body(w), headers=headers)
    assert answer.status_code == 401
    assert _events(w) == []
    assert queued == []


def test_pipedrive_redelivery_is_processed_once(env):
    w, client, queued, _, basic = env
    auth = {"Authorization": _basic(basic["username"], basic["password"])}
    assert (
        client.post("/webhooks/pipedrive/pipedrive", json=_pd_body(w), headers=auth).status_code
        == 202
    )
    assert (
        client.post("/webhooks/pipedrive/pipedrive", json=_pd_body(w), headers=auth).status_code
        == 200
    )
    assert len(queued) == 1


def test_pipedrive_unknown_entity_is_202_and_not_queued(env):
    w, client, queued, _, basic = env
    auth = {"Authorization": _basic(basic["username"], basic["password"])}
    answer = client.post(
        "/webhooks/pipedrive/pipedrive", json=_pd_body(w, entity="activity"), headers=auth
    )
    assert answer.status_code == 202
    assert queued == []


def test_health_and_readiness(env):
    _, client, *_ = env
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.get_json()
    assert ready.get_json()["checks"] == {
        "database": "ok",
        "connections": "ok",
        "redis": "ok",
        "broker": "ok",
    }


def test_pipedrive_event_from_another_company_is_accepted_not_queued(env):
    w, client, queued, _, basic = env
    body = _pd_body(w)
    body["meta"]["company_id"] = "999999"
    auth = {"Authorization": _basic(basic["username"], basic["password"])}
    answer = client.post("/webhooks/pipedrive/pipedrive", json=body, headers=auth)
    assert answer.status_code == 202
    assert "company_id" in answer.get_json()["message"]
    assert queued == []
    with w.context.session() as session:
        reasons = [r.reason for r in session.scalars(sa.select(AuditEntry))]
    assert any("company_id does not match" in r for r in reasons)


def test_relay_signature_is_required_once_configured(env):
    from connector.pipedrive.webhooks import RELAY_SIGNATURE_HEADER, sign_relay_body

    w, client, queued, _, basic = env
    with w.context.session() as session:
        store = w.context.store(session)
        connection = store.get("pipedrive")
        store.set_webhook_secret(connection, {**basic, "relay_secret": "relay-secret-value-123"})
    raw = json.dumps(_pd_body(w)).encode()
    auth = {
        "Authorization": _basic(basic["username"], basic["password"]),
        "Content-Type": "application/json",
    }
    unsigned = client.post("/webhooks/pipedrive/pipedrive", data=raw, headers=auth)
    assert unsigned.status_code == 401
    wrong = client.post(
        "/webhooks/pipedrive/pipedrive",
        data=raw,
        headers={**auth, RELAY_SIGNATURE_HEADER: sign_relay_body("another-secret-value", raw)},
    )
    assert wrong.status_code == 401
    assert queued == []
    signed = client.post(
        "/webhooks/pipedrive/pipedrive",
        data=raw,
        headers={**auth, RELAY_SIGNATURE_HEADER: sign_relay_body("relay-secret-value-123", raw)},
    )
    assert signed.status_code == 202
    assert len(queued) == 1


def test_spent_pipedrive_budget_stores_zoho_webhooks_and_answers_429_until_reset(env):
    from connector.pipedrive.service import build_pipedrive_client

    w, client, queued, secret, _ = env
    with w.context.session() as session:
        pd = w.context.store(session).get("pipedrive")
    # Pipedrive says the daily budget is gone: every process's limiter learns it from the header.
    limiter = build_pipedrive_client(w.context, pd).limiter
    assert limiter is not None
    limiter.observe(
        429, {"x-daily-ratelimit-token-remaining": "0", "x-daily-ratelimit-token-limit": "60000"}
    )
    answer = _zoho_post(client, secret, _invoice_body(w, "5"))
    assert answer.status_code == 429
    assert int(answer.headers["Retry-After"]) > 60
    assert "budget" in answer.get_json()["message"]
    (event,) = _events(w)
    assert event.status == "parked"  # stored: nothing is lost
    assert queued == []


def test_database_down_is_503_with_retry_after(env, monkeypatch):
    import sqlalchemy as sqla

    w, client, queued, secret, _ = env

    def broken(*args, **kwargs):
        raise sqla.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr("web.webhooks.receive_zoho", broken)
    answer = _zoho_post(client, secret, _invoice_body(w))
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "30"
    assert queued == []


def test_redis_down_still_stores_the_event(env, monkeypatch):
    import redis as redis_lib

    from connector.sync import service

    w, client, queued, secret, _ = env

    def no_redis(*args, **kwargs):
        raise redis_lib.ConnectionError("Redis is restarting")

    monkeypatch.setattr(service, "_pipedrive_budget_spent", no_redis)
    answer = _zoho_post(client, secret, _invoice_body(w, "77"))
    assert answer.status_code == 202
    (event,) = _events(w)
    assert event.entity_id == "77"
    assert len(queued) == 1
