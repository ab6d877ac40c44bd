"""The receiver's rules after authentication (issues 13 and 14).

* Once a delivery authenticates it is answered 2xx, whatever its body: Pipedrive disables a
  webhook after repeated failures, and Zoho gives up on it. What is not synced, and why, goes to
  the audit trail. Only authentication failures get 401 and only oversize bodies 413 (and Zoho
  the 429 of backpressure).
* Zoho webhooks carry their event in the URL (``?event=invoice.deleted``), which is signed.
* A database that is down: 503, not 500.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import pathlib
from typing import Any
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa

from connector.context import AppContext
from connector.models import AuditEntry, WebhookEvent
from connector.settings import Settings
from connector.zoho.webhooks import sign_zoho_webhook
from tests.harness import invoice, make_settings, world
from web import create_app

RECORDINGS = pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "recordings"


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
            zoho_secret = str(store.webhook_secret(store.get("zoho-us"))["secret"])
            basic = store.webhook_secret(store.get("pipedrive"))
        yield w, app.test_client(), queued, zoho_secret, basic


def _events(w) -> list[WebhookEvent]:
    with w.context.session() as session:
        return list(session.scalars(sa.select(WebhookEvent).order_by(WebhookEvent.id)))


def _audits(w) -> list[AuditEntry]:
    with w.context.session() as session:
        return list(session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)))


def _auth(basic) -> dict[str, str]:
    raw = f"{basic['username']}:{basic['password']}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def _pd_post(client, basic, raw: bytes, content_type="application/json"):
    return client.post(
        "/webhooks/pipedrive/pipedrive", data=raw, content_type=content_type, headers=_auth(basic)
    )


def _zoho_post(client, secret, raw: bytes, *, query: list[tuple[str, str]] | None = None):
    query = query or []
    signature = sign_zoho_webhook(secret, params=query, raw_body=raw)
    return client.post(
        "/webhooks/zoho/zoho-us?" + urlencode(query),
        data=raw,
        content_type="application/json",
        headers={"X-Zoho-Webhook-Signature": signature},
    )


# Pipedrive: 2xx after authentication ---------------------------------------------------------


def _pd_org_body(w, **meta: Any) -> dict[str, Any]:
    company_id = w.connection("pipedrive").options["company_id"]
    return {
        "data": {"id": 5, "name": "Acme", "update_time": "2026-03-02T10:00:00Z"},
        "previous": {"name": "Old"},
        "meta": {
            "action": "change",
            "entity": "organization",
            "entity_id": "5",
            "id": "ea17c64f-ec7e-4e47-a321-5d84b7735fef",
            "company_id": str(company_id),
            "timestamp": "2026-03-02T10:00:00.000Z",
            "version": "2.0",
            **meta,
        },
    }


def test_pipedrive_numeric_timestamp_and_ids_in_meta_are_accepted_and_queued(env):
    w, client, queued, _, basic = env
    company_id = int(w.connection("pipedrive").options["company_id"])
    body = _pd_org_body(
        w, timestamp=1669304542, entity_id=5, company_id=company_id, user_id=7, webhook_id=12
    )
    answer = _pd_post(client, basic, json.dumps(body).encode())
    assert answer.status_code == 202, answer.get_json()
    (event,) = _events(w)
    assert (event.entity, event.entity_id, event.status) == ("organization", "5", "queued")
    assert len(queued) == 1


def test_recorded_delivery_with_an_integer_timestamp_is_accepted_and_audited(env):
    path = RECORDINGS / "pipedrive_webhooks" / "v2_user_change_int_timestamp.json"
    if not path.exists():
        pytest.skip(f"recording {path} is absent (../shared/recordings is not checked out)")
    w, client, queued, _, basic = env
    answer = _pd_post(client, basic, path.read_bytes())
    assert answer.status_code == 202, answer.get_json()
    assert queued == []
    (row,) = _audits(w)
    assert row.entity == "user"
    assert "not synced" in row.reason


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"",
        b"[" * 50_000,
        b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
        b"\x00\x00\x00",
        b'{"meta": {"action": "change", "entity": "organization", "id": "x",'
        b' "entity_id": "5\\u0000"}}',
        b"\xff\xfe{\xc3",
        b"[1, 2]",
        b'{"meta": "no"}',
        b'{"meta": {"action": "explode", "entity": "organization", "id": "y", "entity_id": "5"}}',
    ],
    ids=[
        "not-json",
        "empty",
        "deep-list",
        "deep-object",
        "nul-bytes",
        "nul-in-entity-id",
        "invalid-utf8",
        "not-an-object",
        "meta-not-an-object",
        "unknown-action",
    ],
)
def test_authenticated_pipedrive_garbage_is_202_with_an_audited_reason(env, raw):
    w, client, queued, _, basic = env
    answer = _pd_post(client, basic, raw)
    assert answer.status_code == 202, answer.get_json()
    assert queued == []
    (row,) = _audits(w)
    assert row.outcome == "skipped"
    assert row.reason.startswith("not synced: ")


def test_pipedrive_unsynced_entity_is_202_and_audited(env):
    w, client, queued, _, basic = env
    body = _pd_org_body(w, entity="activity")
    answer = _pd_post(client, basic, json.dumps(body).encode())
    assert answer.status_code == 202
    assert queued == []
    (row,) = _audits(w)
    assert (row.entity, row.outcome) == ("activity", "skipped")
    assert "activity" in row.reason
    assert "not synced" in row.reason


def test_pipedrive_event_from_another_company_is_202_and_audited(env):
    w, client, queued, _, basic = env
    body = _pd_org_body(w, company_id="999999")
    answer = _pd_post(client, basic, json.dumps(body).encode())
    assert answer.status_code == 202
    assert queued == []
    (row,) = _audits(w)
    assert "company_id" in row.reason


def test_unauthenticated_pipedrive_garbage_is_still_401(env):
    w, client, _queued, _, _ = env
    answer = client.post("/webhooks/pipedrive/pipedrive", data=b"[" * 500)
    assert answer.status_code == 401
    assert _audits(w) == []
    assert _events(w) == []


# Zoho: validate only what is used --------------------------------------------------------------


def test_zoho_contact_with_an_unused_field_of_another_type_is_accepted(env):
    w, client, queued, secret, _ = env
    contact = {
        "contact_id": 460000000026049,  # a number
        "last_modified_time": "2026-03-02T10:00:00+0000",
        "contact_name": "Bowman and Co",
        "payment_terms": "Net 15",  # a string where the API schema has a number
        "notes": 12345,  # a number where the API schema has a string
        "billing_address": {"zip": 94588, "city": None},
        "contact_persons": "none",
        "custom_fields": [{"index": "one", "value": {"nested": True}}],
    }
    answer = _zoho_post(client, secret, json.dumps({"contact": contact}).encode())
    assert answer.status_code == 202, answer.get_json()
    (event,) = _events(w)
    assert (event.entity, event.entity_id, event.status) == ("contact", "460000000026049", "queued")
    assert len(queued) == 1


def test_zoho_payment_invoice_ids_may_be_numbers(env):
    w, client, _queued, secret, _ = env
    payment = {
        "payment_id": 77,
        "amount": "10.50",
        "invoices": [{"invoice_id": 9001, "amount_applied": "x"}, "junk", {"invoice_id": None}],
    }
    answer = _zoho_post(client, secret, json.dumps({"customerpayment": payment}).encode())
    assert answer.status_code == 202, answer.get_json()
    (event,) = _events(w)
    assert event.payload["invoice_ids"] == ["9001"]


@pytest.mark.parametrize(
    "raw",
    [
        b"this is not json",
        b"",
        b"[" * 50_000,
        b'{"hello": "world"}',
        b'{"invoice": {"total": 1}}',
        b'{"invoice": {"invoice_id": "1\\u0000"}}',
        b"\xff\xfe",
    ],
    ids=["not-json", "empty", "deep", "no-entity", "no-id", "nul-in-id", "invalid-utf8"],
)
def test_authenticated_zoho_garbage_is_202_with_an_audited_reason(env, raw):
    w, client, queued, secret, _ = env
    answer = _zoho_post(client, secret, raw)
    assert answer.status_code == 202, answer.get_json()
    assert queued == []
    (row,) = _audits(w)
    assert row.outcome == "skipped"
    assert row.reason.startswith("not synced: ")


def test_zoho_event_from_another_organization_is_202_and_audited(env):
    w, client, queued, secret, _ = env
    body = {"invoice": {"invoice_id": "5", "organization_id": "424242"}}
    answer = _zoho_post(client, secret, json.dumps(body).encode())
    assert answer.status_code == 202
    assert queued == []
    (row,) = _audits(w)
    assert "organization_id" in row.reason


def test_unauthenticated_zoho_garbage_is_still_401(env):
    w, client, _queued, _, _ = env
    answer = client.post("/webhooks/zoho/zoho-us", data=b"[" * 500)
    assert answer.status_code == 401
    assert _audits(w) == []
    assert _events(w) == []


# Zoho: the event in the URL ----------------------------------------------------------------------


def test_zoho_delete_with_the_edit_timestamp_is_stored_and_processed_as_a_delete(env):
    from connector.models import InvoiceLink
    from connector.sync import service
    from tests.harness import contact as contact_record

    w, client, queued, secret, _ = env
    org = w.zoho_orgs["us"]
    (customer,) = w.zoho.bulk_create(org, "contacts", [contact_record("Deleting Co")])
    (invoice_id,) = w.zoho.bulk_create(org, "invoices", [invoice(customer, 40)])
    record = w.zoho.get_record(org, "invoices", invoice_id)
    body = json.dumps({"invoice": record}).encode()
    edited = _zoho_post(client, secret, body, query=[("event", "invoice.updated")])
    assert edited.status_code == 202, edited.get_json()
    service.process_webhook_event(w.context, queued[-1][1][0])
    w.zoho.delete_record(org, "invoices", invoice_id)
    deleted = _zoho_post(client, secret, body, query=[("event", "invoice.deleted")])
    assert deleted.status_code == 202, deleted.get_json()
    kinds = [e.event_kind for e in _events(w)]
    assert kinds == ["invoice.updated", "invoice.deleted"]
    assert service.process_webhook_event(w.context, queued[-1][1][0]) == "ok"
    with w.context.session() as session:
        (link,) = session.scalars(sa.select(InvoiceLink)).all()
        reasons = [r.reason for r in session.scalars(sa.select(AuditEntry))]
    assert link.status == "deleted"
    assert "invoice deleted in Zoho Books; removed from its deal's sums" in reasons


@pytest.mark.parametrize(
    "event",
    ["invoice.voided", "invoice.", "invoice", "", "contact.deleted", "deal.deleted", "x" * 90],
    ids=[
        "unknown-action",
        "no-action",
        "no-dot",
        "empty",
        "other-entity",
        "unknown-entity",
        "long",
    ],
)
def test_unknown_url_event_is_202_audited_and_not_queued(env, event):
    # An authenticated delivery is never refused: Zoho would stop retrying the webhook.
    w, client, queued, secret, _ = env
    raw = json.dumps({"invoice": {"invoice_id": "5"}}).encode()
    answer = _zoho_post(client, secret, raw, query=[("event", event)])
    assert answer.status_code == 202, answer.get_json()
    assert "not synced: unknown event" in answer.get_json()["message"]
    assert _events(w) == []
    assert queued == []
    (audit,) = _audits(w)
    assert audit.reason.startswith("not synced: unknown event")
    assert (audit.entity, audit.zoho_id) == ("invoice", "5")


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        ("invoice.created", "invoice.created"),
        ("invoice.updated", "invoice.updated"),
        ("Invoice.Edited", "invoice.updated"),
        ("invoice.deleted", "invoice.deleted"),
        ("invoices.deleted", "invoice.deleted"),
    ],
)
def test_url_event_names_the_event_kind(env, event, kind):
    w, client, queued, secret, _ = env
    raw = json.dumps({"invoice": {"invoice_id": "5"}}).encode()
    answer = _zoho_post(client, secret, raw, query=[("event", event)])
    assert answer.status_code == 202, answer.get_json()
    assert [e.event_kind for e in _events(w)] == [kind]
    assert len(queued) == 1


def test_url_event_wins_over_an_event_in_the_body(env):
    # The URL is what `connector webhooks` printed for this workflow rule; a body template
    # copied between rules may still say "updated".
    w, client, _queued, secret, _ = env
    body = {"event": "invoice.updated", "entity": "invoice", "entity_id": "5"}
    answer = _zoho_post(
        client, secret, json.dumps(body).encode(), query=[("event", "invoice.deleted")]
    )
    assert answer.status_code == 202, answer.get_json()
    assert [e.event_kind for e in _events(w)] == ["invoice.deleted"]


def test_payment_delete_with_the_edit_timestamp_is_not_a_duplicate(env):
    w, client, queued, secret, _ = env
    record = {
        "payment_id": "880001",
        "last_modified_time": "2026-03-02T10:00:00+0000",
        "invoices": [{"invoice_id": "4600001"}],
    }
    raw = json.dumps({"customerpayment": record}).encode()
    for event in ("payment.updated", "customerpayment.deleted"):
        answer = _zoho_post(client, secret, raw, query=[("event", event)])
        assert answer.status_code == 202, answer.get_json()
    assert [e.event_kind for e in _events(w)] == [
        "customerpayment.updated",
        "customerpayment.deleted",
    ]
    assert len(queued) == 2


def test_zoho_contact_delete_with_the_edit_timestamp_is_processed_as_a_delete(env):
    from connector.sync import service
    from tests.harness import contact as contact_record

    w, client, queued, secret, _ = env
    org = w.zoho_orgs["us"]
    (contact_id,) = w.zoho.bulk_create(org, "contacts", [contact_record("Gone Co")])
    body = json.dumps({"contact": w.zoho.get_record(org, "contacts", contact_id)}).encode()
    edited = _zoho_post(client, secret, body, query=[("event", "contact.updated")])
    assert edited.status_code == 202, edited.get_json()
    service.process_webhook_event(w.context, queued[-1][1][0])
    w.zoho.delete_record(org, "contacts", contact_id)
    deleted = _zoho_post(client, secret, body, query=[("event", "contact.deleted")])
    assert deleted.status_code == 202, deleted.get_json()
    assert len(queued) == 2
    # The engine re-reads the contact: its 404 is the delete (Pipedrive records are kept).
    assert service.process_webhook_event(w.context, queued[-1][1][0]) == "skipped"
    reasons = [a.reason for a in _audits(w)]
    assert reasons[-1] == "deleted in Zoho Books; Pipedrive records are kept"


def test_zoho_event_query_is_signed(env):
    _w, client, _queued, secret, _ = env
    raw = json.dumps({"invoice": {"invoice_id": "5"}}).encode()
    signature = sign_zoho_webhook(secret, params={"event": "invoice.updated"}, raw_body=raw)
    answer = client.post(
        "/webhooks/zoho/zoho-us?event=invoice.deleted",
        data=raw,
        content_type="application/json",
        headers={"X-Zoho-Webhook-Signature": signature},
    )
    assert answer.status_code == 401


# Zoho: form-encoded bodies --------------------------------------------------------------------


def test_form_encoded_zoho_webhook_with_a_wrong_signature_is_401(env):
    w, client, _queued, _secret, _ = env
    form = {"JSONString": json.dumps({"invoice": {"invoice_id": "1"}})}
    signature = sign_zoho_webhook("another-secret-123", params=form, raw_body=b"")
    answer = client.post(
        "/webhooks/zoho/zoho-us",
        data=urlencode(form),
        content_type="application/x-www-form-urlencoded",
        headers={"X-Zoho-Webhook-Signature": signature},
    )
    assert answer.status_code == 401
    assert _events(w) == []


def _zoho_form_post(
    client,
    secret: str,
    form: list[tuple[str, str]],
    *,
    query: list[tuple[str, str]] | None = None,
    signed: list[tuple[str, str]] | None = None,
):
    """A form-encoded delivery signed as Zoho does: query and form pairs, no body (section 7.3)."""
    query = query or []
    signature = sign_zoho_webhook(
        secret, params=signed if signed is not None else query + form, raw_body=b""
    )
    return client.post(
        "/webhooks/zoho/zoho-us?" + urlencode(query),
        data=urlencode(form),
        content_type="application/x-www-form-urlencoded; charset=utf-8",
        headers={"X-Zoho-Webhook-Signature": signature},
    )


def test_signed_form_encoded_zoho_webhook_is_accepted_and_queued(env):
    w, client, queued, secret, _ = env
    record = {"invoice_id": "4600007", "last_modified_time": "2026-03-02T10:00:00+0000"}
    form = [("JSONString", json.dumps({"invoice": record})), ("note", "a+b c&d")]
    answer = _zoho_form_post(client, secret, form, query=[("event", "invoice.updated")])
    assert answer.status_code == 202, answer.get_json()
    (event,) = _events(w)
    assert (event.entity, event.entity_id, event.event_kind, event.status) == (
        "invoice",
        "4600007",
        "invoice.updated",
        "queued",
    )
    assert queued == [("workers.tasks.process_webhook_event", [event.id], "webhooks")]


def test_signed_form_encoded_placeholder_fields_are_accepted(env):
    w, client, queued, secret, _ = env
    form = [("entity", "contact"), ("entity_id", "460000000012"), ("event", "contact.created")]
    answer = _zoho_form_post(client, secret, form)
    assert answer.status_code == 202, answer.get_json()
    (event,) = _events(w)
    assert (event.entity, event.entity_id, event.event_kind) == (
        "contact",
        "460000000012",
        "contact.created",
    )
    assert len(queued) == 1


def test_form_and_query_pairs_of_the_same_key_are_both_signed(env):
    # A merge of query and form into one mapping lost one of them, so the signature never fit.
    w, client, queued, secret, _ = env
    org = w.connection("zoho-us").external_id
    form = [("organization_id", org), ("entity", "invoice"), ("entity_id", "77")]
    answer = _zoho_form_post(client, secret, form, query=[("organization_id", org)])
    assert answer.status_code == 202, answer.get_json()
    assert len(queued) == 1


@pytest.mark.parametrize(
    "tamper",
    ["changed-value", "added-pair", "signed-as-raw-body"],
)
def test_tampered_form_encoded_zoho_webhook_is_401(env, tamper):
    w, client, queued, secret, _ = env
    form = [("entity", "invoice"), ("entity_id", "77"), ("event", "invoice.updated")]
    if tamper == "changed-value":
        answer = _zoho_form_post(
            client, secret, [*form[:1], ("entity_id", "78"), *form[2:]], signed=form
        )
    elif tamper == "added-pair":
        answer = _zoho_form_post(client, secret, [*form, ("extra", "1")], signed=form)
    else:
        signature = sign_zoho_webhook(secret, params=form, raw_body=urlencode(form).encode())
        answer = client.post(
            "/webhooks/zoho/zoho-us",
            data=urlencode(form),
            content_type="application/x-www-form-urlencoded",
            headers={"X-Zoho-Webhook-Signature": signature},
        )
    assert answer.status_code == 401
    assert _events(w) == []
    assert queued == []


@pytest.mark.parametrize("body_format", ["form", "default", "placeholder"])
def test_simulator_deliveries_to_a_per_event_url_verify(env, body_format):
    # The simulator signs with its own code (connector/sandbox), not the receiver's.
    from connector.sandbox.zoho_webhooks import WebhookConfig, WebhookSender

    w, client, queued, secret, _ = env
    org = w.connection("zoho-us").external_id
    config = WebhookConfig(
        organization_id=org,
        url="http://receiver/webhooks/zoho/zoho-us?event=invoice.deleted",
        secret=secret,
        body_format=body_format,
        event_param=None,
    )
    record = {"invoice_id": "4600009", "last_modified_time": "2026-03-02T10:00:00+0000"}
    delivery = WebhookSender().build(
        config,
        entity="invoice",
        action="deleted",
        entity_id="4600009",
        record=record,
        now=dt.datetime(2026, 3, 2, tzinfo=dt.UTC),
    )
    answer = client.post(
        delivery.url.removeprefix("http://receiver"), data=delivery.body, headers=delivery.headers
    )
    assert answer.status_code == 202, answer.get_json()
    (event,) = _events(w)
    assert (event.entity_id, event.event_kind) == ("4600009", "invoice.deleted")
    assert len(queued) == 1


def test_json_webhook_signed_with_its_event_query_is_accepted(env):
    _w, client, queued, secret, _ = env
    raw = json.dumps({"invoice": {"invoice_id": "5"}}).encode()
    answer = _zoho_post(client, secret, raw, query=[("event", "invoice.deleted")])
    assert answer.status_code == 202, answer.get_json()
    assert len(queued) == 1


def test_json_webhook_signed_without_its_event_query_is_401(env):
    w, client, _queued, secret, _ = env
    raw = json.dumps({"invoice": {"invoice_id": "5"}}).encode()
    answer = client.post(
        "/webhooks/zoho/zoho-us?event=invoice.deleted",
        data=raw,
        content_type="application/json",
        headers={"X-Zoho-Webhook-Signature": sign_zoho_webhook(secret, params={}, raw_body=raw)},
    )
    assert answer.status_code == 401
    assert _events(w) == []


# 503 instead of 500 ----------------------------------------------------------------------------


def _app_over(settings: Settings):
    context = AppContext(settings=settings)
    return context, create_app(
        {"TESTING": True, "CONNECTOR_CONTEXT": context, "CONNECTOR_ENQUEUE": lambda *a: None}
    )


def test_database_down_is_503_for_webhooks_and_readyz(redis_url):
    context, app = _app_over(
        make_settings("postgresql+psycopg2://postgres@127.0.0.1:1/test", redis_url)
    )
    try:
        client = app.test_client()
        zoho = client.post("/webhooks/zoho/zoho-us", data=b"{}", content_type="application/json")
        assert zoho.status_code == 503
        assert "Retry-After" in zoho.headers
        pipedrive = client.post("/webhooks/pipedrive/pipedrive", data=b"{}")
        assert pipedrive.status_code == 503
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.get_json()["checks"]["database"].startswith("error")
        assert client.get("/healthz").status_code == 200
    finally:
        context.close()
