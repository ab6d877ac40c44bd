"""Storage models: connections, links, cursors, webhook events, audit, parked work, review."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from connector.db import Base, DecimalText, UTCDateTime

__all__ = [
    "AuditEntry",
    "BackfillChunk",
    "Connection",
    "DeadLetter",
    "DealSnapshot",
    "InvoiceLink",
    "Link",
    "ParkedJob",
    "ReviewItem",
    "SyncCursor",
    "UiSession",
    "WebhookEvent",
    "utcnow",
]


def utcnow() -> dt.datetime:
    """The current time, aware, in UTC."""
    return dt.datetime.now(dt.UTC)


class Connection(Base):
    """One Zoho Books organization or one Pipedrive company, with encrypted credentials."""

    __tablename__ = "connections"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100), unique=True)
    system: Mapped[str] = mapped_column(sa.String(20))  # "zoho" | "pipedrive"
    # Zoho organization_id, or the Pipedrive company id (or domain until the id is known).
    external_id: Mapped[str] = mapped_column(sa.String(100))
    display_name: Mapped[str] = mapped_column(sa.String(255), default="")
    # Zoho data center code (us, eu, in, ...); empty for Pipedrive.
    data_center: Mapped[str] = mapped_column(sa.String(10), default="")
    # Zoho: where tokens are exchanged and refreshed. Pipedrive OAuth: the OAuth server.
    accounts_server: Mapped[str] = mapped_column(sa.String(255), default="")
    # Zoho: api_domain from the token response. Pipedrive: the company's API base URL.
    api_base: Mapped[str] = mapped_column(sa.String(255), default="")
    auth_kind: Mapped[str] = mapped_column(sa.String(20))  # "oauth" | "api_token"
    # MultiFernet ciphertext of a JSON object (refresh token, API token, ...). Never clear text.
    credentials_ciphertext: Mapped[str] = mapped_column(sa.Text)
    # Ciphertext of the webhook secret (Zoho HMAC key) or Basic credentials (Pipedrive).
    webhook_secret_ciphertext: Mapped[str | None] = mapped_column(sa.Text, default=None)
    options: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    status: Mapped[str] = mapped_column(sa.String(30), default="active")
    status_reason: Mapped[str] = mapped_column(sa.Text, default="")
    last_success_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    last_error_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    last_webhook_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"Connection(id={self.id!r}, name={self.name!r}, system={self.system!r})"


class Link(Base):
    """A one-to-one link between a Zoho record and a Pipedrive record.

    Unique on each side, so applying the same plan twice cannot link twice. The hashes are of the
    mapped fields as last written or applied on each side: an inbound change whose mapped view
    hashes the same is our own write coming back (echo) and is skipped.
    """

    __tablename__ = "links"
    __table_args__ = (
        sa.UniqueConstraint("zoho_connection_id", "zoho_entity", "zoho_id"),
        sa.UniqueConstraint("pipedrive_connection_id", "pipedrive_entity", "pipedrive_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    zoho_connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id"))
    zoho_entity: Mapped[str] = mapped_column(sa.String(30))  # contact | contact_person
    zoho_id: Mapped[str] = mapped_column(sa.String(64))
    pipedrive_connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id"))
    pipedrive_entity: Mapped[str] = mapped_column(sa.String(30))  # organization | person
    pipedrive_id: Mapped[str] = mapped_column(sa.String(64))
    # The Zoho contact a contact person belongs to, so persons can be found per contact.
    zoho_parent_id: Mapped[str | None] = mapped_column(sa.String(64), default=None, index=True)
    zoho_hash: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    pipedrive_hash: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    zoho_modified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    pipedrive_modified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    # The mapped fields of the Pipedrive record as last written or read (v2 shape, with id and
    # update_time), so a change from Zoho is planned against it without reading the record
    # first. None when unknown: links made before it existed, or after Pipedrive reported a
    # change we have not reconciled; the next write then reads first.
    pipedrive_snapshot: Mapped[dict[str, Any] | None] = mapped_column(
        sa.JSON(none_as_null=True), default=None
    )
    state: Mapped[str] = mapped_column(sa.String(20), default="active")  # active | deleted
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class InvoiceLink(Base):
    """A Zoho invoice, the deal it counts towards, and the invoice values last applied.

    Keeping the values lets a change to one invoice recompute its deal's sums without reading
    every other invoice of the deal again.
    """

    __tablename__ = "invoice_links"
    __table_args__ = (sa.UniqueConstraint("zoho_connection_id", "invoice_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    zoho_connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id"))
    invoice_id: Mapped[str] = mapped_column(sa.String(64))
    customer_id: Mapped[str] = mapped_column(sa.String(64), default="", index=True)
    pipedrive_connection_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("connections.id"), default=None
    )
    deal_id: Mapped[str | None] = mapped_column(sa.String(64), default=None, index=True)
    match_method: Mapped[str] = mapped_column(sa.String(30), default="")
    invoice_number: Mapped[str] = mapped_column(sa.String(100), default="")
    status: Mapped[str] = mapped_column(sa.String(30), default="")
    invoice_date: Mapped[str] = mapped_column(sa.String(10), default="")
    due_date: Mapped[str] = mapped_column(sa.String(10), default="")
    total: Mapped[Decimal] = mapped_column(DecimalText, default=Decimal(0))
    balance: Mapped[Decimal] = mapped_column(DecimalText, default=Decimal(0))
    currency_code: Mapped[str] = mapped_column(sa.String(10), default="")
    exchange_rate: Mapped[Decimal] = mapped_column(DecimalText, default=Decimal(1))
    last_payment_date: Mapped[str] = mapped_column(sa.String(10), default="")
    zoho_modified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class DealSnapshot(Base):
    """What we last know of a Pipedrive deal: its currency and the invoice fields we write.

    Kept from our own writes' answers (a v2 PATCH returns the whole deal) and from reads, so an
    invoice change is written without reading the deal first. Dropped when Pipedrive reports a
    change to the deal that is not ours; the next write then reads the deal.
    """

    __tablename__ = "deal_snapshots"
    __table_args__ = (sa.UniqueConstraint("pipedrive_connection_id", "deal_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pipedrive_connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id"))
    deal_id: Mapped[str] = mapped_column(sa.String(64))
    title: Mapped[str] = mapped_column(sa.Text, default="")
    currency: Mapped[str] = mapped_column(sa.String(10), default="")
    # Custom field key -> value as Pipedrive returned it, for the invoice fields only.
    custom_fields: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    pipedrive_modified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SyncCursor(Base):
    """How far an incremental read has got, per connection and entity.

    Advanced only after a batch is applied. ``seen_ids`` holds the ids already applied at exactly
    ``position`` because Pipedrive's ``updated_since`` is inclusive.
    """

    __tablename__ = "sync_cursors"
    __table_args__ = (sa.UniqueConstraint("connection_id", "entity"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id"))
    entity: Mapped[str] = mapped_column(sa.String(50))
    position: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    # Opaque resume state for long reads (a page number or a cursor), for resumable backfills.
    resume_token: Mapped[str | None] = mapped_column(sa.Text, default=None)
    seen_ids: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    last_run_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class WebhookEvent(Base):
    """A received, authenticated webhook, stored before anything is queued.

    ``dedupe_key`` makes a second delivery of the same event a no-op.
    """

    __tablename__ = "webhook_events"
    __table_args__ = (sa.UniqueConstraint("source", "connection_id", "dedupe_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(sa.String(20))  # zoho | pipedrive
    connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id"))
    dedupe_key: Mapped[str] = mapped_column(sa.String(200))
    event_kind: Mapped[str] = mapped_column(sa.String(60), default="")
    entity: Mapped[str] = mapped_column(sa.String(40), default="")
    entity_id: Mapped[str] = mapped_column(sa.String(64), default="")
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    status: Mapped[str] = mapped_column(sa.String(20), default="received", index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str] = mapped_column(sa.Text, default="")
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    processed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    # The worker process running it ("host:pid") and until when; see connector/leases.py.
    lease_owner: Mapped[str | None] = mapped_column(sa.String(200), default=None)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(
        UTCDateTime, default=None, index=True
    )


class BackfillChunk(Base):
    """One chunk of a distributed backfill, as claimed by the worker process that runs it.

    The phase counter and tally of the run live in Redis (connector/sync/distributed.py); this
    row is the chunk's lease, with the chunk itself so the reaper can send it again when its
    owner dies.
    """

    __tablename__ = "backfill_chunks"
    __table_args__ = (sa.UniqueConstraint("run_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(sa.String(40))
    number: Mapped[int] = mapped_column()
    chunk: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    status: Mapped[str] = mapped_column(sa.String(20), default="running", index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(200), default=None)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(
        UTCDateTime, default=None, index=True
    )
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class AuditEntry(Base):
    """One considered record, one row: what was decided, what it cost, how it ended."""

    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    trigger: Mapped[str] = mapped_column(sa.String(20))  # webhook|schedule|backfill|manual|...
    direction: Mapped[str] = mapped_column(sa.String(30), default="")
    zoho_connection_id: Mapped[int | None] = mapped_column(default=None, index=True)
    pipedrive_connection_id: Mapped[int | None] = mapped_column(default=None, index=True)
    entity: Mapped[str] = mapped_column(sa.String(40), default="", index=True)
    zoho_id: Mapped[str] = mapped_column(sa.String(64), default="", index=True)
    pipedrive_id: Mapped[str] = mapped_column(sa.String(64), default="", index=True)
    action: Mapped[str] = mapped_column(sa.String(30), default="")
    outcome: Mapped[str] = mapped_column(sa.String(20), default="", index=True)
    reason: Mapped[str] = mapped_column(sa.Text, default="")
    diff: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    error: Mapped[str] = mapped_column(sa.Text, default="")
    tokens_spent: Mapped[int] = mapped_column(default=0)
    api_calls: Mapped[int] = mapped_column(default=0)
    task_id: Mapped[str] = mapped_column(sa.String(64), default="")
    request_id: Mapped[str] = mapped_column(sa.String(64), default="")
    duration_ms: Mapped[int] = mapped_column(default=0)


class ParkedJob(Base):
    """Work parked durably until ``not_before`` (a spent Pipedrive budget resets)."""

    __tablename__ = "parked_jobs"
    __table_args__ = (sa.UniqueConstraint("dedupe_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task_name: Mapped[str] = mapped_column(sa.String(200))
    args: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    dedupe_key: Mapped[str] = mapped_column(sa.String(200))
    connection_id: Mapped[int | None] = mapped_column(default=None, index=True)
    reason: Mapped[str] = mapped_column(sa.Text, default="")
    not_before: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    status: Mapped[str] = mapped_column(sa.String(20), default="parked", index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    released_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)


class DeadLetter(Base):
    """A task that failed for good; ``connector retry`` replays it."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(primary_key=True)
    task_name: Mapped[str] = mapped_column(sa.String(200))
    args: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    error: Mapped[str] = mapped_column(sa.Text, default="")
    attempts: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(sa.String(20), default="failed", index=True)
    failed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    retried_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)


class ReviewItem(Base):
    """Something a human must decide: an unmatched invoice, an ambiguous match."""

    __tablename__ = "review_items"
    __table_args__ = (sa.UniqueConstraint("kind", "connection_id", "entity", "record_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(40))  # unmatched_invoice | ambiguous_match | ...
    connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id"))
    entity: Mapped[str] = mapped_column(sa.String(40))
    record_id: Mapped[str] = mapped_column(sa.String(64))
    summary: Mapped[str] = mapped_column(sa.Text, default="")
    candidates: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON, default=list)
    status: Mapped[str] = mapped_column(sa.String(20), default="open", index=True)
    resolution: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)


class UiSession(Base):
    """A signed-in status-page session, so that logging out ends it on every process.

    Only a hash of the session id is stored: a read of this table cannot be replayed as a cookie.
    """

    __tablename__ = "ui_sessions"

    id_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
