"""Inbound Pipedrive webhooks: authentication and parsing into one event shape.

Pipedrive does not sign webhooks (reference §5.4); the only mechanism is HTTP Basic credentials
set on the subscription, so :func:`verify_basic_auth` compares both parts in constant time and
says nothing about which part failed. Deployments that put a signing relay in front can use
:func:`verify_relay_signature` (HMAC-SHA256 of the raw body in ``X-Connector-Signature``).

:func:`parse_pipedrive_webhook` accepts v2 bodies (the default since 2025-03-17) and v1 bodies,
and returns a :class:`PipedriveWebhookEvent` with a ``dedupe_key`` that stays the same across
Pipedrive's retries (``meta.id`` in v2).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from marshmallow import ValidationError as SchemaError

from connector.errors import InvalidSignatureError, PayloadError
from connector.pipedrive.schemas import WebhookV1Schema, WebhookV2Schema
from connector.settings import Secret

__all__ = [
    "RELAY_SIGNATURE_HEADER",
    "PipedriveWebhookEvent",
    "parse_pipedrive_webhook",
    "sign_relay_body",
    "verify_basic_auth",
    "verify_relay_signature",
]

RELAY_SIGNATURE_HEADER = "X-Connector-Signature"

_V1_ACTIONS = {"added": "create", "updated": "change", "deleted": "delete", "merged": "merge"}
_V2_ACTIONS = {"create", "change", "delete"}


@dataclass(frozen=True)
class PipedriveWebhookEvent:
    """One Pipedrive webhook, whatever its version.

    Attributes:
        version: ``"2.0"`` or ``"1.0"``.
        action: ``create``, ``change``, ``delete`` or ``merge`` (v2: a ``change`` carrying
            ``merged_from_id``; the merged-away record arrives as a ``delete`` with
            ``merged_to_id``).
        entity: ``organization``, ``person``, ``deal``, ...
        entity_id: the record's id, as a string.
        update_time: the record's ``update_time`` when the payload has one.
        change_source: ``app`` or ``api`` (our own writes come back as ``api``).
        user_id: who made the change (compare with the integration user to drop echoes).
        company_id: the Pipedrive company; check it against the connection's.
        webhook_id: the subscription that delivered it.
        merged_to_id: survivor of a merge (on the merged-away record's delete).
        merged_from_id: the merged-away record (on the survivor's event).
        dedupe_key: stable across retries of the same event.
        data: the record after the change (``None`` on delete).
        previous: the record (or v2: only changed fields) before the change.
        host: the company host the event came from.
        attempt: delivery attempt (1-based).
    """

    version: str
    action: str
    entity: str
    entity_id: str
    update_time: dt.datetime | None
    change_source: str | None
    user_id: str | None
    company_id: str | None
    webhook_id: str | None
    merged_to_id: str | None
    merged_from_id: str | None
    dedupe_key: str
    data: dict[str, Any] | None = field(default=None, repr=False)
    previous: dict[str, Any] | None = field(default=None, repr=False)
    host: str | None = None
    attempt: int = 1


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    try:
        if "T" in text:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        else:
            # v1 timestamps are "YYYY-MM-DD HH:MM:SS" in UTC (reference §3.2).
            parsed = dt.datetime.strptime(text + " +0000", "%Y-%m-%d %H:%M:%S %z")
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:
        return None


def _record(value: Any) -> dict[str, Any] | None:
    # The v1 "user" object arrives as a one-item list.
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, dict) else None


def _body_hash(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_pipedrive_webhook(body: bytes) -> PipedriveWebhookEvent:
    """Parse a webhook body (v2 or v1).

    Raises:
        PayloadError: not JSON, not an object, or not a Pipedrive webhook payload.
    """
    try:
        document = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise PayloadError("webhook body is not JSON") from exc
    if not isinstance(document, dict) or not isinstance(document.get("meta"), dict):
        raise PayloadError("webhook body has no meta object")
    meta = document["meta"]
    is_v1 = document.get("v") == 1 or meta.get("v") == 1 or "object" in meta
    try:
        if is_v1:
            event = _parse_v1(WebhookV1Schema().load(document), body)
        else:
            event = _parse_v2(WebhookV2Schema().load(document), body)
    except SchemaError as exc:
        problems = ", ".join(sorted(_flatten(exc.messages)))
        raise PayloadError(f"webhook payload invalid: {problems}") from exc
    if len(event.entity_id) > 64 or not event.entity_id.isprintable():
        raise PayloadError("webhook payload invalid: meta.entity_id")
    return event


def _flatten(messages: Any, prefix: str = "") -> list[str]:
    if isinstance(messages, dict):
        out: list[str] = []
        for key, value in messages.items():
            out.extend(_flatten(value, f"{prefix}{key}."))
        return out
    return [prefix.rstrip(".")]


def _parse_v2(loaded: dict[str, Any], body: bytes) -> PipedriveWebhookEvent:
    meta = loaded["meta"]
    action = meta["action"]
    if action not in _V2_ACTIONS:
        raise PayloadError(f"unknown webhook action {action!r}")
    data = _record(loaded.get("data"))
    previous = _record(loaded.get("previous"))
    merged_from = meta.get("merged_from_id")
    if action == "change" and merged_from:
        action = "merge"
    source = data if data is not None else previous
    return PipedriveWebhookEvent(
        version="2.0",
        action=action,
        entity=meta["entity"],
        entity_id=meta["entity_id"],
        update_time=_parse_time((source or {}).get("update_time")),
        change_source=meta.get("change_source"),
        user_id=meta.get("user_id"),
        company_id=meta.get("company_id"),
        webhook_id=meta.get("webhook_id"),
        merged_to_id=meta.get("merged_to_id"),
        merged_from_id=merged_from,
        dedupe_key=f"v2:{meta['id']}" if meta.get("id") else _body_hash(body),
        data=data,
        previous=previous,
        host=meta.get("host"),
        attempt=meta.get("attempt") or 1,
    )


def _parse_v1(loaded: dict[str, Any], body: bytes) -> PipedriveWebhookEvent:
    meta = loaded["meta"]
    action = _V1_ACTIONS.get(meta["action"])
    if action is None:
        raise PayloadError(f"unknown webhook action {meta['action']!r}")
    current = _record(loaded.get("current"))
    previous = _record(loaded.get("previous"))
    source = current if current is not None else previous
    entity_id = meta.get("id") or (str(source["id"]) if source and source.get("id") else None)
    if not entity_id:
        raise PayloadError("webhook payload invalid: meta.id")
    merged_from = None
    previous_id = previous.get("id") if previous else None
    if action == "merge" and previous_id is not None and str(previous_id) != entity_id:
        merged_from = str(previous_id)
    micro = meta.get("timestamp_micro")
    dedupe = (
        f"v1:{meta['action']}.{meta['object']}:{entity_id}:{micro}"
        if micro is not None
        else _body_hash(body)
    )
    retry = loaded.get("retry")
    return PipedriveWebhookEvent(
        version="1.0",
        action=action,
        entity=meta["object"],
        entity_id=entity_id,
        update_time=_parse_time((source or {}).get("update_time")),
        change_source=meta.get("change_source"),
        user_id=meta.get("user_id"),
        company_id=meta.get("company_id"),
        webhook_id=meta.get("webhook_id"),
        merged_to_id=meta.get("merged_to_id"),
        merged_from_id=merged_from,
        dedupe_key=dedupe,
        data=current,
        previous=previous,
        host=meta.get("host"),
        attempt=(retry or 0) + 1,
    )


def _reveal(value: Secret | str | bytes) -> bytes:
    if isinstance(value, Secret):
        return value.reveal().encode()
    return value.encode() if isinstance(value, str) else value


def verify_basic_auth(
    authorization_header: str | None,
    *,
    username: Secret | str,
    password: Secret | str,
) -> None:
    """Check the Basic credentials Pipedrive sends with every delivery.

    Both parts are compared with :func:`hmac.compare_digest`, and both comparisons always run,
    so neither timing nor the error says which part was wrong.

    Raises:
        InvalidSignatureError: reason ``"missing"``, ``"malformed"`` or ``"mismatch"``.
    """
    if not authorization_header or not authorization_header.strip():
        raise InvalidSignatureError("missing")
    scheme, _, encoded = authorization_header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise InvalidSignatureError("malformed")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSignatureError("malformed") from None
    given_user, colon, given_password = decoded.partition(b":")
    if not colon:
        raise InvalidSignatureError("malformed")
    expected_user, expected_password = _reveal(username), _reveal(password)
    user_ok = hmac.compare_digest(given_user, expected_user)
    password_ok = hmac.compare_digest(given_password, expected_password)
    # Empty configured credentials never authenticate anyone.
    configured = bool(expected_user) and bool(expected_password)
    if not (user_ok & password_ok & configured):
        raise InvalidSignatureError("mismatch")


def sign_relay_body(secret: Secret | str | bytes, raw_body: bytes) -> str:
    """The ``X-Connector-Signature`` value a signing relay sends: ``sha256=<hex>``."""
    digest = hmac.new(_reveal(secret), raw_body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_relay_signature(
    secret: Secret | str | bytes, raw_body: bytes, header_value: str | None
) -> None:
    """Check an HMAC-SHA256 signature added by a signing relay in front of the receiver.

    Raises:
        InvalidSignatureError: reason ``"missing"``, ``"malformed"`` or ``"mismatch"``.
    """
    if not header_value or not header_value.strip():
        raise InvalidSignatureError("missing")
    scheme, _, given = header_value.strip().partition("=")
    given = given.strip().lower()
    if scheme.strip().lower() != "sha256" or len(given) != 64:
        raise InvalidSignatureError("malformed")
    try:
        bytes.fromhex(given)
    except ValueError:
        raise InvalidSignatureError("malformed") from None
    if not _reveal(secret):
        raise InvalidSignatureError("mismatch")
    expected = sign_relay_body(secret, raw_body).removeprefix("sha256=")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise InvalidSignatureError("mismatch")
