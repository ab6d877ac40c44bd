"""Record schemas and inbound webhook parsing."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from urllib.parse import parse_qsl, urlencode

import pytest

from connector.errors import PayloadError
from connector.zoho.schemas import ContactSchema, InvoiceSchema, load_record, parse_zoho_webhook

INVOICE = {
    "invoice_id": 982000000567114,
    "customer_id": "982000000567001",
    "status": "draft",
    "invoice_number": "INV-00003",
    "date": "2013-11-17",
    "total": 10000.0,
    "balance": 40.6,
    "created_time": "2013-11-18T02:17:40-0800",
    "last_modified_time": "2013-11-18T02:02:51-0800",
    "custom_fields": [{"customfield_id": "46000000012845", "value": "Normal"}],
    "unknown_edition_field": {"gst": 1},
}


def test_invoice_loads_ids_as_strings_money_as_decimal_and_drops_unknown_keys():
    loaded = load_record(InvoiceSchema(), INVOICE)
    assert loaded["invoice_id"] == "982000000567114"
    assert loaded["balance"] == Decimal("40.6")
    assert loaded["last_modified_time"] == dt.datetime(2013, 11, 18, 10, 2, 51, tzinfo=dt.UTC)
    assert "unknown_edition_field" not in loaded


def test_contact_requires_its_id():
    with pytest.raises(PayloadError, match="contact_id"):
        load_record(ContactSchema(), {"contact_name": "x"})


def test_default_payload_with_event_in_the_query():
    body = json.dumps({"invoice": INVOICE}).encode()
    event = parse_zoho_webhook(
        body, "application/json", {"event_type": "invoice.updated", "organization_id": "42"}
    )
    assert event.entity == "invoice"
    assert event.entity_id == "982000000567114"
    assert event.event_kind == "invoice.updated"
    assert event.organization_id == "42"
    assert event.last_modified_time == dt.datetime(2013, 11, 18, 10, 2, 51, tzinfo=dt.UTC)
    assert event.dedupe_key == "invoice:982000000567114:updated:20131118T100251Z"
    assert event.record["total"] == Decimal("10000.0")


def test_same_change_redelivered_has_the_same_key_and_a_newer_change_does_not():
    body = json.dumps(
        {"contact": {"contact_id": "1", "last_modified_time": "2024-01-01T00:00:00+0000"}}
    ).encode()
    again = json.dumps(
        {"contact": {"last_modified_time": "2024-01-01T00:00:00+0000", "contact_id": "1"}}
    ).encode()
    newer = json.dumps(
        {"contact": {"contact_id": "1", "last_modified_time": "2024-01-01T00:00:01+0000"}}
    ).encode()
    keys = [parse_zoho_webhook(b, "application/json", {}).dedupe_key for b in (body, again, newer)]
    assert keys[0] == keys[1] != keys[2]
    assert parse_zoho_webhook(body, "application/json", {}).event_kind == "contact.changed"


def test_customer_payment_payload():
    body = json.dumps({"customerpayment": {"payment_id": "77", "amount": 10.57}}).encode()
    event = parse_zoho_webhook(body, "application/json; charset=utf-8", {})
    assert (event.entity, event.entity_id) == ("customerpayment", "77")
    assert event.last_modified_time is None
    assert event.dedupe_key.startswith("customerpayment:77:changed:sha256-")


def test_placeholder_json_and_form_payloads():
    placeholder = {
        "event": "invoice.deleted",
        "entity": "invoice",
        "entity_id": "5",
        "organization_id": "9",
    }
    from_json = parse_zoho_webhook(json.dumps(placeholder).encode(), "application/json", {})
    from_form = parse_zoho_webhook(
        urlencode(placeholder).encode(), "application/x-www-form-urlencoded", {}
    )
    for event in (from_json, from_form):
        assert (event.entity, event.entity_id, event.event_kind, event.organization_id) == (
            "invoice",
            "5",
            "invoice.deleted",
            "9",
        )
    # No timestamp in a placeholder body: the key falls back to a hash of the body.
    assert from_json.dedupe_key.startswith("invoice:5:deleted:sha256-")
    assert from_form.dedupe_key.startswith("invoice:5:deleted:sha256-")


@pytest.mark.parametrize("field", ["JSONString", "payload", "invoice", "Invoice", "data"])
def test_form_field_carrying_the_entity_json_is_read_whatever_its_name(field):
    # Zoho's form body option puts the document in a field the user names; an entity-named
    # field may hold the entity itself ({"invoice_id": ...}) rather than {"invoice": {...}}.
    record = {"invoice_id": "5", "last_modified_time": "2024-01-01T00:00:00+0000"}
    inner = record if field.lower() == "invoice" else {"invoice": record}
    body = urlencode({field: json.dumps(inner), "source": "zoho"}).encode()
    event = parse_zoho_webhook(body, "application/x-www-form-urlencoded", {})
    assert (event.entity, event.entity_id) == ("invoice", "5")
    assert event.last_modified_time == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def test_delete_and_update_with_the_same_timestamp_do_not_collide():
    body = json.dumps(
        {"invoice": {"invoice_id": "5", "last_modified_time": "2024-01-01T00:00:00+0000"}}
    ).encode()
    updated = parse_zoho_webhook(body, "application/json", {"event_type": "invoice.updated"})
    deleted = parse_zoho_webhook(body, "application/json", {"event_type": "invoice.deleted"})
    assert updated.dedupe_key != deleted.dedupe_key


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"", "application/json", "empty"),
        (b"not json", "application/json", "not JSON"),
        (b"[1, 2]", "application/json", "JSON object"),
        (b'{"hello": "world"}', "application/json", "entity"),
        (b'{"invoice": {"total": 1}}', "application/json", "invoice_id"),
        (b'{"entity": "deal", "entity_id": "1"}', "application/json", "unknown Zoho entity"),
        (b'{"entity": "invoice", "entity_id": ""}', "application/json", "entity_id"),
        (b'{"entity": "invoice", "entity_id": {"a": 1}}', "application/json", "entity_id"),
        (b"\xff\xfe", "application/json", "UTF-8"),
    ],
)
def test_garbage_is_a_payload_error_with_a_clear_message(body, content_type, message):
    with pytest.raises(PayloadError, match=message):
        parse_zoho_webhook(body, content_type, {})


def test_an_unreadable_timestamp_is_dropped_and_the_body_hash_dedupes_instead():
    # The timestamp only orders deliveries; refusing the event for it would lose the change.
    event = parse_zoho_webhook(
        b'{"invoice": {"invoice_id": "1", "last_modified_time": "yesterday"}}',
        "application/json",
        {},
    )
    assert event.entity_id == "1"
    assert event.last_modified_time is None
    assert event.dedupe_key.startswith("invoice:1:changed:sha256-")


def test_every_printed_event_url_parses_as_its_event():
    # `connector webhooks` prints these; an event it prints must never be "unknown".
    from connector.zoho.schemas import _ID_KEYS, URL_EVENT_ACTIONS
    from connector.zoho.webhooks import WEBHOOK_MODULES, webhook_event_urls

    for row in webhook_event_urls("https://x/webhooks/zoho/z", WEBHOOK_MODULES, URL_EVENT_ACTIONS):
        entity = row["event"].split(".", 1)[0]
        body = json.dumps({entity: {_ID_KEYS[entity]: "7"}}).encode()
        query = dict(parse_qsl(row["url"].split("?", 1)[1]))
        assert parse_zoho_webhook(body, "application/json", query).event_kind == row["event"]
