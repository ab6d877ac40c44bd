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

from connector.errors import InvalidSignatureError, PayloadError
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


MAX_DEPTH = 64
"""Deeper documents are refused: no Pipedrive record nests like that, and storing or copying one
would recurse without bound."""


def _nan_as_none(_: str) -> None:
    # NaN and Infinity are not JSON; a field we never read must not cost the event.
    return None


def _too_deep(document: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``document`` nests deeper than ``limit`` (iterative: no recursion on input)."""
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(value, dict):
            stack.extend((child, depth + 1) for child in value.values())
        elif isinstance(value, list):
            stack.extend((child, depth + 1) for child in value)
    return False


def _text(value: Any) -> str | None:
    """An id or name as text: strings and integers are both seen in real deliveries."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    if isinstance(value, str):
        return value.strip() or None
    return None


def _count(value: Any, default: int) -> int:
    """A small counter (attempt, retry) given as a number or numeric string; else ``default``."""
    text = _text(value)
    if text is None or not text.isdecimal() or len(text) > 6:
        return default
    return int(text)


def _load(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body, parse_constant=_nan_as_none)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise PayloadError("webhook body is not JSON") from exc
    if not isinstance(document, dict):
        raise PayloadError("webhook body is not a JSON object")
    if _too_deep(document):
        raise PayloadError(f"webhook body nests deeper than {MAX_DEPTH} levels")
    if not isinstance(document.get("meta"), dict):
        raise PayloadError("webhook body has no meta object")
    return document


def parse_pipedrive_webhook(body: bytes) -> PipedriveWebhookEvent:
    """Parse a webhook body (v2 or v1), reading only the fields the connector uses.

    Everything else is kept as received (in ``data``/``previous``) and not validated: real
    deliveries send ``meta.timestamp`` and ids as numbers or strings, and a field we never read
    must not make Pipedrive count a failed delivery.

    Raises:
        PayloadError: not a JSON object with ``meta``, or a used field is missing or unusable.
    """
    document = _load(body)
    meta = document["meta"]
    is_v1 = document.get("v") == 1 or meta.get("v") == 1 or "object" in meta
    event = _parse_v1(document, body) if is_v1 else _parse_v2(document, body)
    if len(event.entity_id) > 64 or not event.entity_id.isprintable():
        raise PayloadError("webhook payload invalid: meta.entity_id")
    if len(event.entity) > 40 or not event.entity.isprintable():
        raise PayloadError("webhook payload invalid: meta.entity")
    return event


def _required(meta: dict[str, Any], key: str) -> str:
    value = _text(meta.get(key))
    if value is None:
        raise PayloadError(f"webhook payload invalid: meta.{key}")
    return value


def _parse_v2(document: dict[str, Any], body: bytes) -> PipedriveWebhookEvent:
    meta = document["meta"]
    action = _required(meta, "action")
    if action not in _V2_ACTIONS:
        raise PayloadError(f"unknown webhook action {action[:40]!r}")
    data = _record(document.get("data"))
    previous = _record(document.get("previous"))
    source = data if data is not None else previous
    entity_id = _text(meta.get("entity_id")) or _text((source or {}).get("id"))
    if entity_id is None:
        raise PayloadError("webhook payload invalid: meta.entity_id")
    merged_from = _text(meta.get("merged_from_id"))
    if action == "change" and merged_from:
        action = "merge"
    event_id = _text(meta.get("id"))
    return PipedriveWebhookEvent(
        version="2.0",
        action=action,
        entity=_required(meta, "entity"),
        entity_id=entity_id,
        update_time=_parse_time((source or {}).get("update_time")),
        change_source=_text(meta.get("change_source")),
        user_id=_text(meta.get("user_id")),
        company_id=_text(meta.get("company_id")),
        webhook_id=_text(meta.get("webhook_id")),
        merged_to_id=_text(meta.get("merged_to_id")),
        merged_from_id=merged_from,
        dedupe_key=f"v2:{event_id}" if event_id else _body_hash(body),
        data=data,
        previous=previous,
        host=_text(meta.get("host")),
        attempt=_count(meta.get("attempt"), 1),
    )


def _parse_v1(document: dict[str, Any], body: bytes) -> PipedriveWebhookEvent:
    meta = document["meta"]
    raw_action = _required(meta, "action")
    action = _V1_ACTIONS.get(raw_action)
    if action is None:
        raise PayloadError(f"unknown webhook action {raw_action[:40]!r}")
    entity = _required(meta, "object")
    current = _record(document.get("current"))
    previous = _record(document.get("previous"))
    source = current if current is not None else previous
    entity_id = _text(meta.get("id")) or _text((source or {}).get("id"))
    if not entity_id:
        raise PayloadError("webhook payload invalid: meta.id")
    merged_from = None
    previous_id = _text(previous.get("id")) if previous else None
    if action == "merge" and previous_id is not None and previous_id != entity_id:
        merged_from = previous_id
    micro = _text(meta.get("timestamp_micro"))
    dedupe = (
        f"v1:{raw_action}.{entity}:{entity_id}:{micro}"
        if micro is not None and micro.isdecimal()
        else _body_hash(body)
    )
    return PipedriveWebhookEvent(
        version="1.0",
        action=action,
        entity=entity,
        entity_id=entity_id,
        update_time=_parse_time((source or {}).get("update_time")),
        change_source=_text(meta.get("change_source")),
        user_id=_text(meta.get("user_id")),
        company_id=_text(meta.get("company_id")),
        webhook_id=_text(meta.get("webhook_id")),
        merged_to_id=_text(meta.get("merged_to_id")),
        merged_from_id=merged_from,
        dedupe_key=dedupe,
        data=current,
        previous=previous,
        host=_text(meta.get("host")),
        attempt=_count(document.get("retry"), 0) + 1,
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
