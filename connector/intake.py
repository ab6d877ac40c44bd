"""Webhook intake: the receiver's ladder, independent of the web framework.

size limit -> authenticate -> parse and validate -> store durably with a dedupe key -> (after
commit) enqueue. Nothing here calls Zoho or Pipedrive. The web layer maps :class:`IntakeResult`
to an HTTP answer and does the enqueue only after the database commit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from connector.connections import ConnectionStore
from connector.errors import ConfigError, InvalidSignatureError, PayloadError
from connector.leases import delivery_lease
from connector.models import Connection, WebhookEvent, utcnow
from connector.sync.audit import AuditLog, Trigger

__all__ = [
    "Backpressure",
    "ConnectionCache",
    "IntakeConnection",
    "IntakeResult",
    "receive_pipedrive",
    "receive_zoho",
    "vendor_totals_enabled",
]

logger = logging.getLogger(__name__)

QUEUED = "queued"
PARKED = "parked"
OPEN_STATUSES = ("received", QUEUED, PARKED)


@dataclasses.dataclass(frozen=True)
class Backpressure:
    """Why new work should wait, and until when."""

    reason: str
    retry_after_seconds: int
    until: dt.datetime | None = None


@dataclasses.dataclass(frozen=True)
class IntakeResult:
    """What the receiver answers and whether an event must be enqueued after commit."""

    status: int
    message: str
    event_id: int | None = None
    enqueue: bool = False
    retry_after: int | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)


BackpressureCheck = Callable[[Session, Any], Backpressure | None]

CONNECTION_CACHE_SECONDS = 5.0
"""How long a process trusts what it read of a connection (name, organization, options).

A changed webhook secret is seen at once (a failed check re-reads the connection); other
changes, such as a removed connection, reach every receiver process within this time.
"""
LAST_WEBHOOK_EVERY_SECONDS = 10.0
"""``last_webhook_at`` is a status-page figure: one write per connection and process this
often, instead of every request updating (and locking) the same row."""


@dataclasses.dataclass(frozen=True)
class IntakeConnection:
    """What the receiver needs of a connection; the secret stays in this process's memory."""

    id: int
    name: str
    system: str
    external_id: str
    options: Mapping[str, Any]
    secret: Mapping[str, Any] = dataclasses.field(repr=False)


class ConnectionCache:
    """Per-process cache of connections and their decrypted webhook secrets.

    Every webhook used to cost a SELECT and a decryption before its signature could be checked;
    they change rarely, so each process keeps them for :data:`CONNECTION_CACHE_SECONDS`. A
    signature that fails against a cached secret older than a second is checked once more
    against a fresh read, so a rotated secret works at once while forged requests cannot make
    every request read the database.
    """

    def __init__(
        self,
        ttl_seconds: float = CONNECTION_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        # name -> (when it was read, the connection or None for an unknown name)
        self._entries: dict[str, tuple[float, IntakeConnection | None]] = {}
        self._webhook_marked: dict[int, float] = {}
        self._lock = threading.Lock()

    def get(
        self, store: ConnectionStore, name: str, *, fresh: bool = False
    ) -> IntakeConnection | None:
        """The connection named ``name`` (``None`` when there is none), from cache when recent."""
        now = self.clock()
        with self._lock:
            cached = self._entries.get(name)
        if not fresh and cached is not None and now - cached[0] < self.ttl_seconds:
            return cached[1]
        try:
            row = store.get(name)
        except ConfigError:
            entry = None
        else:
            entry = IntakeConnection(
                id=row.id,
                name=row.name,
                system=row.system,
                external_id=row.external_id,
                options=dict(row.options or {}),
                secret=store.webhook_secret(row),
            )
        with self._lock:
            # Unknown names are cached too (a flood of them must not reach the database), but
            # only a bounded number: the name comes from the URL.
            if entry is None and len(self._entries) > 1000:
                self._entries = {k: v for k, v in self._entries.items() if v[1] is not None}
            self._entries[name] = (now, entry)
        return entry

    def may_reload(self, name: str) -> bool:
        """Whether a failed check against the cached entry deserves a fresh read (once a second)."""
        with self._lock:
            cached = self._entries.get(name)
        return cached is None or self.clock() - cached[0] >= 1.0

    def should_mark_webhook(self, connection_id: int) -> bool:
        """Whether this process should write ``last_webhook_at`` now (and note that it did)."""
        now = self.clock()
        with self._lock:
            if now - self._webhook_marked.get(connection_id, -1e9) < LAST_WEBHOOK_EVERY_SECONDS:
                return False
            self._webhook_marked[connection_id] = now
            return True


def _authenticate(
    store: ConnectionStore,
    cache: ConnectionCache,
    name: str,
    system: str,
    check: Callable[[IntakeConnection], str | None],
) -> tuple[IntakeConnection | None, str | None]:
    """The connection and why its check failed (``None`` when it passed).

    A failure against cached data is tried once more against a fresh read: the secret may have
    been rotated, or the connection created, since this process cached it.
    """

    def attempt(fresh: bool) -> tuple[IntakeConnection | None, str | None]:
        connection = cache.get(store, name, fresh=fresh)
        if connection is None or connection.system != system:
            return None, "unknown-connection"
        return connection, check(connection)

    connection, reason = attempt(fresh=False)
    if reason is not None and cache.may_reload(name):
        connection, reason = attempt(fresh=True)
    if reason is not None:
        logger.warning(
            "webhook.%s.rejected reason=%s connection=%s",
            system,
            reason,
            connection.name if connection else "-",
        )
    return connection, reason


_INSERT_EVENT = sa.text(
    # Text, not an insert() construct: the dialects' ON CONFLICT constructs are not cached by
    # SQLAlchemy, and compiling one on every webhook cost more than the round trip. PostgreSQL
    # and SQLite (3.35+) both run this statement as it is.
    "INSERT INTO webhook_events (source, connection_id, dedupe_key, event_kind, entity, entity_id,"
    " payload, status, attempts, error, received_at, lease_expires_at)"
    " VALUES (:source, :connection_id, :dedupe_key, :event_kind, :entity, :entity_id, :payload,"
    " :status, 0, '', :received_at, :lease_expires_at)"
    " ON CONFLICT (source, connection_id, dedupe_key) DO NOTHING RETURNING id"
).bindparams(
    sa.bindparam("payload", type_=WebhookEvent.__table__.c.payload.type),
    sa.bindparam("received_at", type_=WebhookEvent.__table__.c.received_at.type),
    sa.bindparam("lease_expires_at", type_=WebhookEvent.__table__.c.lease_expires_at.type),
)


def _store_event(
    session: Session,
    cache: ConnectionCache,
    connection: IntakeConnection,
    *,
    source: str,
    dedupe_key: str,
    event_kind: str,
    entity: str,
    entity_id: str,
    payload: dict[str, Any],
    status: str,
) -> int | None:
    """Insert the event; its id, or ``None`` when the same event was already stored (a redelivery).

    One ``INSERT ... ON CONFLICT DO NOTHING RETURNING id``: a redelivery costs no savepoint and
    no error round trip.
    """
    now = utcnow()
    values = {
        "source": source,
        "connection_id": connection.id,
        "dedupe_key": dedupe_key[:200],
        "event_kind": event_kind,
        "entity": entity,
        "entity_id": entity_id,
        "payload": payload,
        "status": status,
        "received_at": now,
        # Queued: sent again by the reaper if no worker claims it in time (connector/leases.py).
        "lease_expires_at": delivery_lease(now) if status == QUEUED else None,
    }
    event_id = session.connection().execute(_INSERT_EVENT, values).scalar()
    if event_id is None:
        return None
    if cache.should_mark_webhook(connection.id):
        session.execute(
            sa.update(Connection)
            .where(Connection.id == connection.id)
            .values(last_webhook_at=utcnow())
        )
    return int(event_id)


def _jsonable(event: Any) -> dict[str, Any]:
    """A webhook event as plain JSON (datetimes as ISO strings)."""
    if dataclasses.is_dataclass(event) and not isinstance(event, type):
        document = dataclasses.asdict(event)
    else:
        document = dict(event)
    result: dict[str, Any] = json.loads(json.dumps(document, default=str))
    return result


SYNCED_ZOHO_ENTITIES = frozenset({"invoice", "contact", "customerpayment", "creditnote"})
VENDOR_ENTITIES = frozenset({"bill", "vendorpayment"})
"""Synced only when the configuration writes vendor bill totals to organizations."""


def vendor_totals_enabled(config_path: str | None) -> bool:
    """Whether the mapping file at ``config_path`` syncs vendor bill totals.

    An unreadable or invalid file counts as off here: the receiver still stores the event, and
    the worker reports the configuration problem.
    """
    if not config_path:
        return False
    try:
        stamp = os.stat(config_path).st_mtime_ns
    except OSError:
        return False
    return _vendor_totals_enabled(config_path, stamp)


@functools.lru_cache(maxsize=8)
def _vendor_totals_enabled(config_path: str, stamp: int) -> bool:
    # Keyed by modification time so an edited file is read again, and only then.
    from connector.mapping.config import load_config

    try:
        return bool(load_config(config_path).vendor_total_fields)
    except ConfigError:
        return False


def _invoice_ids(record: Mapping[str, Any]) -> list[str]:
    """Invoice ids a payment or credit note applies to (empty for other records)."""
    ids = []
    for item in record.get("invoices") or []:
        if isinstance(item, Mapping) and item.get("invoice_id"):
            ids.append(str(item["invoice_id"]))
    return ids


def backlog_size(session: Session) -> int:
    """Stored events not processed yet."""
    return int(
        session.scalar(
            sa.select(sa.func.count())
            .select_from(WebhookEvent)
            .where(WebhookEvent.status.in_(OPEN_STATUSES))
        )
        or 0
    )


def _duplicate(
    session: Session,
    connection: IntakeConnection,
    source: str,
    entity: str,
    entity_id: str,
    key: str,
) -> IntakeResult:
    direction = "zoho->pipedrive" if source == "zoho" else "pipedrive->zoho"
    AuditLog(session, Trigger.WEBHOOK).record(
        direction=direction,
        entity=entity,
        action="skip",
        outcome="skipped",
        zoho_connection_id=connection.id if source == "zoho" else None,
        pipedrive_connection_id=connection.id if source == "pipedrive" else None,
        zoho_id=entity_id if source == "zoho" else "",
        pipedrive_id=entity_id if source == "pipedrive" else "",
        reason=f"duplicate delivery of an event already received ({key[:80]})",
    )
    logger.info("webhook.duplicate source=%s entity=%s id=%s", source, entity, entity_id)
    return IntakeResult(200, "duplicate: already received")


def _not_synced(
    session: Session,
    connection: IntakeConnection,
    source: str,
    entity: str,
    entity_id: str,
    why: str,
) -> IntakeResult:
    """Answer an authenticated delivery we do not sync with 202, and say why in the audit trail.

    Pipedrive disables a webhook after repeated non-2xx answers and Zoho gives up retrying, so
    once a delivery has authenticated nothing about its body may cost the later events.
    """
    reason = f"not synced: {why}"[:500]
    zoho = source == "zoho"
    AuditLog(session, Trigger.WEBHOOK).record(
        direction="zoho->pipedrive" if zoho else "pipedrive->zoho",
        entity=(entity or "unknown")[:40],
        action="skip",
        outcome="skipped",
        zoho_connection_id=connection.id if zoho else None,
        pipedrive_connection_id=None if zoho else connection.id,
        zoho_id=entity_id[:64] if zoho else "",
        pipedrive_id="" if zoho else entity_id[:64],
        reason=reason,
    )
    logger.info("webhook.%s.not-synced entity=%s", source, entity)
    return IntakeResult(202, f"accepted; {reason}")


def receive_zoho(
    session: Session,
    store: ConnectionStore,
    connection_name: str,
    *,
    raw_body: bytes,
    content_type: str,
    query: Iterable[tuple[str, str]],
    signature: str | None,
    backpressure: BackpressureCheck | None = None,
    sync_vendor_bills: bool = False,
    cache: ConnectionCache | None = None,
) -> IntakeResult:
    """Authenticate, parse and store a Zoho Books webhook.

    ``sync_vendor_bills`` queues bill and vendor payment events (vendor totals are configured);
    otherwise they are stored and recorded as not synced. ``query`` is the URL's pairs,
    URL-decoded, repeated keys kept; a form-encoded body is read from ``raw_body``.
    """
    from connector.zoho.schemas import UnknownEventError, parse_zoho_webhook
    from connector.zoho.webhooks import signature_inputs, verify_zoho_signature

    cache = cache or ConnectionCache()
    query_pairs = list(query)
    # Zoho signs the query and form pairs and then only a JSON body: a form body is signed as
    # its decoded pairs, never as its raw bytes (reference section 7.3).
    signed_pairs, signed_body = signature_inputs(query_pairs, content_type, raw_body)

    def check(connection: IntakeConnection) -> str | None:
        if not connection.secret.get("secret"):
            return "no-secret"
        try:
            verify_zoho_signature(
                str(connection.secret["secret"]),
                params=signed_pairs,
                raw_body=signed_body,
                signature_header=signature,
                algorithm=str(connection.options.get("webhook_algorithm", "sha256")),
                encoding=str(connection.options.get("webhook_encoding", "hex")),
            )
        except InvalidSignatureError as exc:
            return exc.reason
        return None

    connection, reason = _authenticate(store, cache, connection_name, "zoho", check)
    if connection is None or reason is not None:
        if reason == "no-secret":
            return IntakeResult(401, "not authenticated: no webhook secret configured")
        return IntakeResult(401, "not authenticated")
    try:
        event = parse_zoho_webhook(raw_body, content_type, dict(query_pairs))
    except UnknownEventError as exc:
        return _not_synced(session, connection, "zoho", exc.entity, exc.entity_id, str(exc))
    except PayloadError as exc:
        return _not_synced(session, connection, "zoho", "unknown", "", f"bad payload: {exc}")
    if event.organization_id and str(event.organization_id) != connection.external_id:
        return _not_synced(
            session,
            connection,
            "zoho",
            event.entity or "unknown",
            event.entity_id or "",
            "organization_id does not match this connection",
        )
    synced = SYNCED_ZOHO_ENTITIES | (VENDOR_ENTITIES if sync_vendor_bills else frozenset())
    if not event.entity_id or event.entity not in synced:
        # Bills, purchase orders, vendor payments and anything new: accepted, stored, recorded.
        stored = _store_event(
            session,
            cache,
            connection,
            source="zoho",
            dedupe_key=event.dedupe_key,
            event_kind=event.event_kind,
            entity=event.entity or "unknown",
            entity_id=event.entity_id or "",
            payload={"entity": event.entity, "entity_id": event.entity_id},
            status="skipped",
        )
        if stored is not None:
            AuditLog(session, Trigger.WEBHOOK).record(
                direction="zoho->pipedrive",
                entity=event.entity or "unknown",
                action="skip",
                outcome="skipped",
                zoho_connection_id=connection.id,
                zoho_id=event.entity_id or "",
                reason="not synced, by configuration",
            )
        logger.info("webhook.zoho.not-synced entity=%s", event.entity)
        return IntakeResult(202, f"accepted: {event.entity or 'unknown'} events are not synced")
    pressure = backpressure(session, connection) if backpressure else None
    stored = _store_event(
        session,
        cache,
        connection,
        source="zoho",
        dedupe_key=event.dedupe_key,
        event_kind=event.event_kind,
        entity=event.entity,
        entity_id=event.entity_id,
        payload={
            "entity": event.entity,
            "entity_id": event.entity_id,
            "event_kind": event.event_kind,
            "last_modified_time": (
                event.last_modified_time.isoformat() if event.last_modified_time else None
            ),
            # Which invoices a payment or credit note touches: a deleted one cannot be re-read,
            # so this is how the worker knows which invoices to re-read through the API.
            "invoice_ids": _invoice_ids(event.record),
            # A deleted bill or vendor payment cannot be re-read: this says whose totals changed.
            **(
                {"vendor_id": str(event.record.get("vendor_id") or "")}
                if event.entity in VENDOR_ENTITIES
                else {}
            ),
        },
        status=PARKED if pressure else QUEUED,
    )
    if stored is None:
        return _duplicate(
            session, connection, "zoho", event.entity, event.entity_id, event.dedupe_key
        )
    if pressure:
        # Stored, so nothing is lost; the 429 tells Zoho to slow down and retry later.
        return IntakeResult(
            429,
            f"stored; processing paused: {pressure.reason}",
            event_id=stored,
            retry_after=pressure.retry_after_seconds,
        )
    return IntakeResult(202, "accepted", event_id=stored, enqueue=True)


def receive_pipedrive(
    session: Session,
    store: ConnectionStore,
    connection_name: str,
    *,
    raw_body: bytes,
    authorization: str | None,
    relay_signature: str | None,
    backpressure: BackpressureCheck | None = None,
    cache: ConnectionCache | None = None,
) -> IntakeResult:
    """Authenticate (HTTP Basic, plus an optional relay HMAC), parse and store a Pipedrive webhook."""
    from connector.pipedrive.webhooks import (
        parse_pipedrive_webhook,
        verify_basic_auth,
        verify_relay_signature,
    )

    cache = cache or ConnectionCache()

    def check(connection: IntakeConnection) -> str | None:
        secret = connection.secret
        if not secret.get("username") or not secret.get("password"):
            return "no-credentials"
        try:
            verify_basic_auth(
                authorization, username=str(secret["username"]), password=str(secret["password"])
            )
            if secret.get("relay_secret"):
                verify_relay_signature(str(secret["relay_secret"]), raw_body, relay_signature)
        except InvalidSignatureError as exc:
            return exc.reason
        return None

    connection, reason = _authenticate(store, cache, connection_name, "pipedrive", check)
    if connection is None or reason is not None:
        if reason == "no-credentials":
            return IntakeResult(401, "not authenticated: no webhook credentials configured")
        return IntakeResult(401, "not authenticated", headers={"WWW-Authenticate": "Basic"})
    try:
        event = parse_pipedrive_webhook(raw_body)
    except PayloadError as exc:
        return _not_synced(session, connection, "pipedrive", "unknown", "", f"bad payload: {exc}")
    entity_id = str(event.entity_id or "")
    company_id = str(connection.options.get("company_id") or "")
    if company_id and event.company_id and str(event.company_id) != company_id:
        return _not_synced(
            session,
            connection,
            "pipedrive",
            event.entity,
            entity_id,
            "company_id does not match this connection",
        )
    if event.entity not in {"organization", "person", "deal"}:
        return _not_synced(
            session, connection, "pipedrive", event.entity, entity_id, f"{event.entity} events"
        )
    pressure = backpressure(session, connection) if backpressure else None
    stored = _store_event(
        session,
        cache,
        connection,
        source="pipedrive",
        dedupe_key=event.dedupe_key,
        event_kind=event.action,
        entity=event.entity,
        entity_id=str(event.entity_id or ""),
        payload=_jsonable(event),
        status=PARKED if pressure else QUEUED,
    )
    if stored is None:
        return _duplicate(
            session, connection, "pipedrive", event.entity, str(event.entity_id), event.dedupe_key
        )
    if pressure:
        # Pipedrive counts non-2xx answers towards a ban that loses events, so it gets a 202:
        # the event is stored and processed when the budget allows.
        return IntakeResult(202, f"stored; processing paused: {pressure.reason}", event_id=stored)
    return IntakeResult(202, "accepted", event_id=stored, enqueue=True)
