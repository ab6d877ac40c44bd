"""Parsing Pipedrive webhook payloads (v2 and v1) and authenticating deliveries."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest

from connector.errors import InvalidSignatureError, PayloadError
from connector.pipedrive.webhooks import (
    RELAY_SIGNATURE_HEADER,
    parse_pipedrive_webhook,
    sign_relay_body,
    verify_basic_auth,
    verify_relay_signature,
)

# Reference §5.3, verbatim.
V2_CHANGE: dict[str, Any] = {
    "data": {
        "add_time": "2022-11-24T13:18:55Z",
        "address": None,
        "country_code": None,
        "custom_fields": {
            "bdd479c3cfdb9c50bae4fa4929ae944980da55d7": {"type": "double", "value": 978}
        },
        "id": 1,
        "label": None,
        "name": "Sample Org",
        "owner_id": 12415231,
        "picture_id": None,
        "update_time": "2022-11-24T15:21:23Z",
        "visible_to": "3",
    },
    "previous": {"custom_fields": {"bdd479c3cfdb9c50bae4fa4929ae944980da55d7": None}},
    "meta": {
        "action": "change",
        "company_id": "8087566",
        "correlation_id": "40659b32-1677-4ec5-b83c-1852670aa19f",
        "entity_id": "1",
        "entity": "organization",
        "id": "ea17c64f-ec7e-4e47-a321-5d84b7735fef",
        "is_bulk_edit": False,
        "timestamp": "2022-11-24T15:21:23.152Z",
        "type": "general",
        "user_id": "12415231",
        "version": "2.0",
        "webhook_id": "4710827",
        "webhook_owner_id": "12094821",
        "change_source": "app",
        "attempt": 1,
        "host": "pd-us.pipedrive.com",
    },
}

# Reference §5.2 (filled-in template).
V1_UPDATE: dict[str, Any] = {
    "v": 1,
    "matches_filters": {"current": [], "previous": []},
    "meta": {
        "v": 1,
        "action": "updated",
        "object": "organization",
        "change_source": "api",
        "id": 123,
        "company_id": 456,
        "user_id": 789,
        "host": "company.pipedrive.com",
        "timestamp": 1523440213,
        "timestamp_micro": 1523440213384700,
        "permitted_user_ids": [],
        "trans_pending": False,
        "is_bulk_update": False,
        "pipedrive_service_name": False,
        "matches_filters": {"current": [], "previous": []},
        "webhook_id": 42,
    },
    "retry": 0,
    "current": {"id": 123, "name": "Acme", "update_time": "2018-04-11 09:50:13"},
    "previous": {"id": 123, "name": "Acme Ltd", "update_time": "2018-04-10 08:00:00"},
    "event": "updated.organization",
}


def dumps(value: object) -> bytes:
    return json.dumps(value).encode()


def test_v2_change():
    event = parse_pipedrive_webhook(dumps(V2_CHANGE))
    assert event.version == "2.0"
    assert event.action == "change"
    assert event.entity == "organization"
    assert event.entity_id == "1"
    assert event.update_time == dt.datetime(2022, 11, 24, 15, 21, 23, tzinfo=dt.UTC)
    assert event.change_source == "app"
    assert event.user_id == "12415231"
    assert event.company_id == "8087566"
    assert event.webhook_id == "4710827"
    assert event.dedupe_key == "v2:ea17c64f-ec7e-4e47-a321-5d84b7735fef"
    assert event.merged_to_id is None
    assert event.merged_from_id is None
    assert event.data is not None
    assert event.data["custom_fields"]["bdd479c3cfdb9c50bae4fa4929ae944980da55d7"]["value"] == 978


def test_v2_retry_keeps_the_dedupe_key():
    retry = json.loads(json.dumps(V2_CHANGE))
    retry["meta"]["attempt"] = 3
    assert (
        parse_pipedrive_webhook(dumps(retry)).dedupe_key
        == parse_pipedrive_webhook(dumps(V2_CHANGE)).dedupe_key
    )
    assert parse_pipedrive_webhook(dumps(retry)).attempt == 3


def test_v2_delete_takes_update_time_from_previous_and_merge_ids():
    body = {
        "data": None,
        "previous": {"id": 5, "name": "Gone", "update_time": "2024-01-01T00:00:00Z"},
        "meta": {**V2_CHANGE["meta"], "action": "delete", "entity_id": "5", "merged_to_id": "9"},
    }
    event = parse_pipedrive_webhook(dumps(body))
    assert event.action == "delete"
    assert event.data is None
    assert event.merged_to_id == "9"
    assert event.update_time == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def test_v2_change_with_merged_from_is_a_merge():
    body = {**V2_CHANGE, "meta": {**V2_CHANGE["meta"], "merged_from_id": "5"}}
    event = parse_pipedrive_webhook(dumps(body))
    assert event.action == "merge"
    assert event.merged_from_id == "5"


def test_v2_numeric_ids_are_accepted_as_strings():
    body = {**V2_CHANGE, "meta": {**V2_CHANGE["meta"], "entity_id": 1, "company_id": 8087566}}
    event = parse_pipedrive_webhook(dumps(body))
    assert event.entity_id == "1"
    assert event.company_id == "8087566"


def test_v1_update():
    event = parse_pipedrive_webhook(dumps(V1_UPDATE))
    assert event.version == "1.0"
    assert event.action == "change"
    assert event.entity == "organization"
    assert event.entity_id == "123"
    assert event.change_source == "api"
    assert event.user_id == "789"
    assert event.company_id == "456"
    assert event.webhook_id == "42"
    assert event.update_time == dt.datetime(2018, 4, 11, 9, 50, 13, tzinfo=dt.UTC)
    assert event.dedupe_key == "v1:updated.organization:123:1523440213384700"


@pytest.mark.parametrize(
    ("v1_action", "action"), [("added", "create"), ("deleted", "delete"), ("merged", "merge")]
)
def test_v1_actions(v1_action, action):
    body = json.loads(json.dumps(V1_UPDATE))
    body["meta"]["action"] = v1_action
    if v1_action == "deleted":
        body["current"] = None
    event = parse_pipedrive_webhook(dumps(body))
    assert event.action == action


def test_v1_user_object_is_a_list():
    body = json.loads(json.dumps(V1_UPDATE))
    body["meta"]["object"] = "user"
    body["current"] = [{"id": 123, "name": "U", "update_time": "2020-01-01 00:00:00"}]
    event = parse_pipedrive_webhook(dumps(body))
    assert event.data == {"id": 123, "name": "U", "update_time": "2020-01-01 00:00:00"}


def test_v1_without_timestamp_micro_dedupes_on_the_body():
    body = json.loads(json.dumps(V1_UPDATE))
    del body["meta"]["timestamp_micro"]
    event = parse_pipedrive_webhook(dumps(body))
    assert event.dedupe_key.startswith("sha256:")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'"string"',
        b"{}",
        b'{"meta": "x"}',
        dumps({"meta": {"action": "change"}}),
        dumps({"meta": {**V2_CHANGE["meta"], "action": "exploded"}}),
        dumps({"meta": {**V2_CHANGE["meta"], "entity_id": None}}),
        dumps({"meta": {**V2_CHANGE["meta"], "entity_id": True}}),
        dumps({"v": 1, "meta": {"action": "poked", "object": "deal", "id": 1}}),
        dumps({"v": 1, "meta": {"action": "updated", "object": "deal"}}),
    ],
)
def test_garbage_is_a_payload_error(raw):
    with pytest.raises(PayloadError):
        parse_pipedrive_webhook(raw)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth_right_credentials_pass():
    verify_basic_auth(
        basic("pd-user", "s3cret:with:colons"), username="pd-user", password="s3cret:with:colons"
    )


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        (basic("intruder", "s3cret"), "mismatch"),
        (basic("pd-user", "wrong"), "mismatch"),
        (basic("intruder", "wrong"), "mismatch"),
        ("Bearer abc", "malformed"),
        ("Basic", "malformed"),
        ("Basic !!!notbase64", "malformed"),
        ("Basic " + base64.b64encode(b"no-colon").decode(), "malformed"),
    ],
)
def test_basic_auth_failures(header, reason):
    with pytest.raises(InvalidSignatureError) as info:
        verify_basic_auth(header, username="pd-user", password="s3cret")
    assert info.value.reason == reason
    assert "s3cret" not in str(info.value)


def test_basic_auth_never_accepts_empty_configured_credentials():
    with pytest.raises(InvalidSignatureError) as info:
        verify_basic_auth(basic("", ""), username="", password="")
    assert info.value.reason == "mismatch"


def test_relay_signature():
    body = dumps(V2_CHANGE)
    header = sign_relay_body("relay-secret", body)
    assert RELAY_SIGNATURE_HEADER == "X-Connector-Signature"
    assert header.startswith("sha256=")
    verify_relay_signature("relay-secret", body, header)
    for bad, reason in [
        (None, "missing"),
        ("md5=abc", "malformed"),
        ("sha256=xyz", "malformed"),
        (sign_relay_body("other", body), "mismatch"),
        (sign_relay_body("relay-secret", body + b" "), "mismatch"),
    ]:
        with pytest.raises(InvalidSignatureError) as info:
            verify_relay_signature("relay-secret", body, bad)
        assert info.value.reason == reason
