"""The sync engine: Zoho contacts -> Pipedrive, Pipedrive organizations -> Zoho, invoices -> deals.

Every operation reads what changed, decides (matching, conflict rules, compare-before-write),
and then writes only what differs; a dry run stops before the writes and keeps the decisions as
a plan. Each considered record produces exactly one audit row with its field diff, tokens spent
and outcome.

Compare before write, without reading Pipedrive first: each link keeps the mapped fields of its
Pipedrive record as last written or read (``Link.pipedrive_snapshot``), and each deal its
currency and invoice fields (``DealSnapshot``); a change from Zoho is planned on those and only
the differing fields are sent, the write's answer (the whole v2 record) becoming the new
snapshot. The record is read first when there is no snapshot, when a Pipedrive webhook told of a
change that is not ours (the snapshot was dropped), when the update would send a field Pipedrive
replaces whole (address, emails, phones), or with ``[sync] read_before_write = true``. A write
that finds the record gone matches again, as the read would have made it do.

Idempotence and loops:
- links are unique per side, so a plan applied twice links once;
- each link keeps a hash of the mapped fields as last synced on each side: an inbound change
  whose mapped view hashes the same is our own write coming back (or an unmapped change) and is
  skipped, in both directions, whether it arrives by webhook or by polling;
- an event older than what was already applied is skipped as stale;
- a create whose answer was lost (timeout) is looked up by its cross-reference before retrying.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from decimal import Decimal
from typing import Any, Literal

import redis
from sqlalchemy.orm import Session

from connector.context import AppContext
from connector.errors import (
    BusyError,
    ConfigError,
    ConnectorError,
    FatalError,
    NotFoundError,
    RetryableError,
    SyncError,
    UncertainWriteError,
    ValidationError,
)
from connector.logs import bound
from connector.mapping.config import SyncConfig, load_config
from connector.mapping.contacts import (
    classify_contact,
    individual_to_person,
    order_contact_persons,
    pipedrive_org_to_zoho_contact,
    route_organization,
    zoho_contact_to_organization,
    zoho_person_to_pipedrive,
)
from connector.mapping.deals import choose_deal, find_deal_id_in_invoice
from connector.mapping.fields import (
    fields_hash,
    mapped_view,
    needs_whole_record,
    pipedrive_snapshot,
    plan_update,
)
from connector.mapping.invoices import (
    InvoiceSnapshot,
    aggregate_deal_invoices,
    deal_fields_payload,
    invoice_snapshot,
)
from connector.mapping.normalize import normalize_email, normalize_name
from connector.mapping.vendors import sum_vendor_bills, vendor_totals_payload
from connector.models import Connection, DealSnapshot, InvoiceLink, Link
from connector.sync.audit import AuditLog, Trigger
from connector.sync.links import LinkRepository
from connector.sync.lookup import IndexedLookup, PipedriveLookup, RemoteLookup
from connector.zoho.times import parse_zoho_time

__all__ = ["BackfillProgress", "PlannedChange", "SyncEngine", "engine_session"]

logger = logging.getLogger(__name__)
_NOT_LINKED = "the customer is not linked to a Pipedrive organization yet"

Z2P = "zoho->pipedrive"
P2Z = "pipedrive->zoho"

SKIPPED = "skipped"
APPLIED = "ok"
PLANNED = "planned"
REVIEW = "review"
FAILED = "failed"


RecordLocks = Callable[[str], AbstractContextManager[None]]
"""Given a record key, a context manager that holds that record against other workers."""

RECORD_LOCK_SECONDS = 60
"""A record lock expires on its own after this long: a worker killed while holding one (SIGKILL,
out of memory) must not block its record for long. Syncing one record takes seconds; a sync that
outlives its lock only loses the protection against a second worker arriving meanwhile."""
RECORD_LOCK_WAIT_SECONDS = 65.0
"""How long a worker waits for a held record before retrying later: a little over the lock's
life, so a lock left behind by a dead worker is always waited out."""


def redis_record_locks(
    client: redis.Redis,
    *,
    hold_seconds: float = RECORD_LOCK_SECONDS,
    wait_seconds: float = RECORD_LOCK_WAIT_SECONDS,
) -> RecordLocks:
    """Record locks shared by every process through Redis (redis-py's ``Lock``)."""

    @contextmanager
    def hold(key: str) -> Iterator[None]:
        lock = client.lock(
            f"connector:lock:record:{key}", timeout=hold_seconds, blocking_timeout=wait_seconds
        )
        if not lock.acquire():
            raise BusyError(f"another worker is syncing {key}", system="connector")
        try:
            yield
        finally:
            with suppress(redis.exceptions.LockError):  # expired while held: nothing to free
                lock.release()

    return hold


class _GoneError(Exception):
    """A record our snapshot said exists is gone from Pipedrive (its write answered 404)."""


@dataclasses.dataclass
class PlannedChange:
    """One decision of the engine, kept for ``connector plan`` and for tests."""

    action: str
    direction: str
    entity: str
    zoho_id: str = ""
    pipedrive_id: str = ""
    reason: str = ""
    diff: dict[str, Any] = dataclasses.field(default_factory=dict)
    outcome: str = ""


@dataclasses.dataclass
class BackfillProgress:
    """Where a backfill is: records done of total, outcomes, tokens spent."""

    total: int = 0
    done: int = 0
    applied: int = 0
    skipped: int = 0
    unchanged: int = 0
    review: int = 0
    failed: int = 0
    tokens: int = 0
    deals_written: int = 0
    token_cap: int | None = None
    stopped: str = ""

    def count(self, outcome: str) -> None:
        """Tally one record's outcome."""
        if outcome in (APPLIED, PLANNED):
            self.applied += 1
        elif outcome == REVIEW:
            self.review += 1
        elif outcome == FAILED:
            self.failed += 1
        else:
            self.skipped += 1


@dataclasses.dataclass
class ZohoSide:
    """A connected Zoho organization and its client."""

    connection: Connection
    client: Any


@dataclasses.dataclass
class PipedriveSide:
    """The connected Pipedrive company, its client, its field registry and our own user id."""

    connection: Connection
    client: Any
    fields: Any

    @property
    def user_id(self) -> str:
        """The Pipedrive user our API token or OAuth grant acts as."""
        options = self.connection.options
        return str(options.get("integration_user_id") or options.get("user_id") or "")


def _pd_time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _zoho_time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        return parse_zoho_time(str(value))
    except (ValueError, ConnectorError):
        return None


def _same_value(current: Any, desired: Any) -> bool:
    """Compare deal custom field values the way Pipedrive stores them."""
    if isinstance(desired, dict) and "value" in desired:
        if not isinstance(current, dict):
            return False
        try:
            same_amount = Decimal(str(current.get("value"))) == Decimal(str(desired.get("value")))
        except ArithmeticError:
            same_amount = current.get("value") == desired.get("value")
        return same_amount and (current.get("currency") or None) == (
            desired.get("currency") or None
        )
    if isinstance(current, dict) and "value" in current:
        current = current.get("value")
    if current in ("", None) and desired in ("", None):
        return True
    return bool(current == desired) or str(current) == str(desired)


class SyncEngine:
    """Decides and applies changes between one Pipedrive company and its Zoho organizations.

    Args:
        session: the unit of work; the caller commits (or rolls back a dry run).
        audit: where audit rows go.
        config: the validated mapping configuration.
        pipedrive: the Pipedrive side.
        zoho_side: builds the Zoho side of a Zoho connection id (clients are made on demand).
        zoho_connections: every connected Zoho organization (for routing).
        lookup: how Pipedrive records are found; a RemoteLookup by default.
        dry_run: decide but do not write.
        today: the date payment status is computed against (injectable for tests).
        locks: one worker at a time per record, across processes (see :func:`redis_record_locks`);
            ``None`` when nothing else can sync at the same time (tests, one process).
    """

    def __init__(
        self,
        *,
        session: Session,
        audit: AuditLog,
        config: SyncConfig,
        pipedrive: PipedriveSide,
        zoho_side: Callable[[int], ZohoSide],
        zoho_connections: list[Connection],
        lookup: PipedriveLookup | None = None,
        dry_run: bool = False,
        today: Callable[[], dt.date] | None = None,
        locks: RecordLocks | None = None,
    ) -> None:
        self.session = session
        self._locks = locks
        self._held: set[str] = set()
        self.audit = audit
        self.config = config
        self.pd = pipedrive
        self._zoho_side = zoho_side
        self._zoho_cache: dict[int, ZohoSide] = {}
        self.zoho_connections = zoho_connections
        self.links = LinkRepository(session)
        self.dry_run = dry_run
        self.changes: list[PlannedChange] = []
        # Organizations this engine created: their only persons are the ones it created too.
        self._created_orgs: set[str] = set()
        # Deals a write of this engine found gone: never written to or matched again.
        self._gone_deals: set[str] = set()
        self._today = today or (lambda: dt.datetime.now(dt.UTC).date())
        self.lookup: PipedriveLookup = lookup or RemoteLookup(
            pipedrive.client,
            org_reference_key=self._key_or_none("organization", config.fields.zoho_contact_id),
            person_reference_key=self._key_or_none("person", config.fields.zoho_contact_id),
        )

    # Helpers -----------------------------------------------------------------------------

    def zoho(self, connection_id: int) -> ZohoSide:
        """The Zoho side of a connection (built once per engine)."""
        if connection_id not in self._zoho_cache:
            self._zoho_cache[connection_id] = self._zoho_side(connection_id)
        return self._zoho_cache[connection_id]

    @contextmanager
    def _exclusive(self, key: str) -> Iterator[None]:
        """Sync one record at a time across workers, and commit before letting the next in.

        Without it two workers handed the same record (a webhook during a backfill chunk, two
        quick edits) both find no link and both create. The commit comes before the release:
        the next holder must see the link the first one made.
        """
        if self._locks is None or self.dry_run or key in self._held:
            yield
            return
        with self._locks(key):
            self._held.add(key)
            try:
                yield
                self.session.commit()
            finally:
                self._held.discard(key)

    def _deal_key(self, deal_id: str) -> str:
        return f"pipedrive:{self.pd.connection.id}:deal:{deal_id}"

    def keys(self, entity: str) -> dict[str, str]:
        """Pipedrive custom field name -> key for ``entity``."""
        return dict(self.pd.fields.keys(entity))

    def _key_or_none(self, entity: str, name: str | None) -> str | None:
        if not name:
            return None
        try:
            return str(self.pd.fields.key_for(entity, name))
        except ConfigError:
            return None

    def _counters(self) -> tuple[int, int]:
        calls = self.pd.client.stats.calls + sum(
            z.client.stats.calls for z in self._zoho_cache.values()
        )
        return self.pd.client.stats.tokens, calls

    @contextmanager
    def _record(self, **fields: Any) -> Iterator[dict[str, Any]]:
        """Collect one audit row around a block; the block fills in action/outcome/diff."""
        tokens0, calls0 = self._counters()
        started = dt.datetime.now(dt.UTC)
        row: dict[str, Any] = dict(fields)
        row.setdefault("action", "skip")
        row.setdefault("outcome", SKIPPED)
        try:
            yield row
        except ConnectorError as exc:
            row["outcome"] = FAILED
            row["error"] = str(exc)
            row["action"] = row.get("action") or "error"
            self._write_row(row, tokens0, calls0, started)
            raise
        self._write_row(row, tokens0, calls0, started)

    def _write_row(
        self, row: dict[str, Any], tokens0: int, calls0: int, started: dt.datetime
    ) -> None:
        tokens, calls = self._counters()
        if self.dry_run and row.get("outcome") == APPLIED:
            row["outcome"] = PLANNED
        self.changes.append(
            PlannedChange(
                action=row["action"],
                direction=row.get("direction", ""),
                entity=row.get("entity", ""),
                zoho_id=str(row.get("zoho_id") or ""),
                pipedrive_id=str(row.get("pipedrive_id") or ""),
                reason=row.get("reason", ""),
                diff=dict(row.get("diff") or {}),
                outcome=row["outcome"],
            )
        )
        if self.dry_run:
            return
        self.audit.record(
            direction=row.get("direction", ""),
            entity=row.get("entity", ""),
            action=row["action"],
            outcome=row["outcome"],
            zoho_connection_id=row.get("zoho_connection_id"),
            pipedrive_connection_id=self.pd.connection.id,
            zoho_id=str(row.get("zoho_id") or ""),
            pipedrive_id=str(row.get("pipedrive_id") or ""),
            reason=row.get("reason", ""),
            diff=_diff_json(row.get("diff") or {}),
            error=row.get("error", ""),
            tokens_spent=tokens - tokens0,
            api_calls=calls - calls0,
            duration_ms=(dt.datetime.now(dt.UTC) - started).total_seconds() * 1000,
        )

    # Events ------------------------------------------------------------------------------

    def handle_event(
        self,
        source: str,
        connection_id: int,
        entity: str,
        entity_id: str,
        payload: Mapping[str, Any],
    ) -> str:
        """Dispatch a stored webhook event to the right sync operation."""
        if source == "zoho":
            event_time = _aware(payload.get("last_modified_time"))
            if entity == "invoice":
                return self.sync_zoho_invoice(connection_id, entity_id, event_time=event_time)
            if entity == "contact":
                return self.sync_zoho_contact(connection_id, entity_id, event_time=event_time)
            if entity in {"customerpayment", "creditnote"}:
                return self.sync_zoho_payment(
                    connection_id,
                    entity_id,
                    known_invoice_ids=list(payload.get("invoice_ids") or []),
                    entity=entity,
                )
            if entity in {"bill", "vendorpayment"} and self.config.vendor_total_fields:
                return self.sync_vendor_bills(
                    connection_id,
                    entity_id,
                    entity=entity,
                    vendor_id=str(payload.get("vendor_id") or "") or None,
                )
        if source == "pipedrive":
            return self.handle_pipedrive_event(entity, entity_id, payload)
        with self._record(direction=Z2P if source == "zoho" else P2Z, entity=entity) as row:
            row["reason"] = "not synced, by configuration"
        return SKIPPED

    def handle_pipedrive_event(
        self, entity: str, entity_id: str, payload: Mapping[str, Any]
    ) -> str:
        """A Pipedrive webhook: merges re-point links, organizations sync to Zoho."""
        action = str(payload.get("action") or "")
        merged_to = payload.get("merged_to_id")
        if merged_to and entity in {"organization", "person"}:
            with self._record(direction=P2Z, entity=entity, pipedrive_id=entity_id) as row:
                moved = (
                    0
                    if self.dry_run
                    else self.links.repoint(
                        self.pd.connection.id, entity, entity_id, str(merged_to)
                    )
                )
                row["action"] = "relink"
                row["outcome"] = APPLIED
                row["reason"] = f"merged into {merged_to}; {moved} link(s) re-pointed"
            return APPLIED
        if entity != "organization":
            with self._record(direction=P2Z, entity=entity, pipedrive_id=entity_id) as row:
                row["reason"] = f"Pipedrive {entity} changes are not synced to Zoho Books"
                if self._drop_unreconciled(entity, entity_id, payload):
                    row["reason"] += "; what we knew of it is dropped (next write reads it)"
            return SKIPPED
        if action == "delete":
            with self._record(direction=P2Z, entity=entity, pipedrive_id=entity_id) as row:
                row["reason"] = "deleted in Pipedrive; the Zoho contact is kept (never deleted)"
                self._drop_unreconciled(entity, entity_id, payload)
            return SKIPPED
        return self.sync_pipedrive_organization(
            entity_id, event_time=_aware(payload.get("update_time"))
        )

    def _drop_unreconciled(self, entity: str, entity_id: str, payload: Mapping[str, Any]) -> bool:
        """Drop our snapshot of a record a webhook says changed after it (not by our own write).

        Webhook data has another shape than the REST records, so it is not kept: the next write
        to the record reads it first. Returns whether a snapshot was dropped.
        """
        if self.dry_run:
            return False
        held: dt.datetime | None
        if entity == "deal":
            deal = self.links.deal_snapshot(self.pd.connection.id, entity_id)
            if deal is None:
                return False
            held = deal.pipedrive_modified_at
        elif entity in {"organization", "person"}:
            link = self.links.by_pipedrive(self.pd.connection.id, entity, entity_id)
            if link is None or not link.pipedrive_snapshot:
                return False
            held = _pd_time(link.pipedrive_snapshot.get("update_time"))
        else:
            return False
        changed = _aware(payload.get("update_time"))
        ours = (
            str(payload.get("change_source") or "") == "api"
            and bool(self.pd.user_id)
            and str(payload.get("user_id") or "") == self.pd.user_id
        )
        if (
            str(payload.get("action") or "") != "delete"
            and changed is not None
            and held is not None
            and (changed < held or (changed == held and ours))
        ):
            return False  # what we hold already includes it (our write's answer, or later)
        if entity == "deal":
            self.links.forget_deal_snapshot(self.pd.connection.id, entity_id)
        else:
            self._forget(self.links.by_pipedrive(self.pd.connection.id, entity, entity_id))
        return True

    def sync_one(self, connection_id: int, entity: str, record_id: str) -> str:
        """Sync one record of either system by id."""
        if connection_id == self.pd.connection.id:
            if entity != "organization":
                raise ConfigError(
                    [f"only Pipedrive organizations are synced to Zoho, not {entity}"]
                )
            return self.sync_pipedrive_organization(record_id)
        if entity == "contact":
            return self.sync_zoho_contact(connection_id, record_id)
        if entity == "invoice":
            return self.sync_zoho_invoice(connection_id, record_id)
        if entity == "customerpayment":
            return self.sync_zoho_payment(connection_id, record_id)
        raise ConfigError([f"cannot sync a Zoho {entity}"])

    # Zoho contact -> Pipedrive -----------------------------------------------------------

    def sync_zoho_contact(
        self,
        zoho_connection_id: int,
        contact_id: str,
        *,
        event_time: dt.datetime | None = None,
        contact: Mapping[str, Any] | None = None,
    ) -> str:
        """Bring one Zoho contact (and its contact persons) to Pipedrive."""
        with self._exclusive(self._contact_key(zoho_connection_id, contact_id)):
            was_linked = self.links.by_zoho(zoho_connection_id, "contact", contact_id) is not None
            outcome = self._sync_zoho_contact(
                zoho_connection_id, contact_id, event_time=event_time, contact=contact
            )
            if not was_linked:
                self._sync_waiting_invoices(zoho_connection_id, contact_id)
            return outcome

    def _link_organization(self, zoho: ZohoSide, contact_id: str, org_id: str) -> Link:
        """The link of a Zoho contact to its Pipedrive organization (created when missing)."""
        return self.links.link(
            zoho_connection_id=zoho.connection.id,
            zoho_entity="contact",
            zoho_id=contact_id,
            pipedrive_connection_id=self.pd.connection.id,
            pipedrive_entity="organization",
            pipedrive_id=org_id,
        )

    def _contact_key(self, zoho_connection_id: int, contact_id: str) -> str:
        return f"zoho:{zoho_connection_id}:contact:{contact_id}"

    def _sync_waiting_invoices(self, zoho_connection_id: int, contact_id: str) -> None:
        """The invoices that arrived before their customer was linked, synced now it is.

        Their webhooks were answered with a review item ("not linked yet"); nothing else
        would bring them back before the next edit or the hourly reconciliation. Called under
        the contact's lock, which the invoice side takes too before recording such a wait.
        """
        if self.dry_run or self.links.by_zoho(zoho_connection_id, "contact", contact_id) is None:
            return
        for invoice_id in self.links.invoices_waiting_for_customer(zoho_connection_id, contact_id):
            try:
                self.sync_zoho_invoice(zoho_connection_id, invoice_id)
            except (FatalError, SyncError) as exc:
                logger.warning("invoice.waiting-failed id=%s error=%s", invoice_id, exc)

    def _sync_zoho_contact(
        self,
        zoho_connection_id: int,
        contact_id: str,
        *,
        event_time: dt.datetime | None,
        contact: Mapping[str, Any] | None,
    ) -> str:
        zoho = self.zoho(zoho_connection_id)
        base = {"direction": Z2P, "zoho_connection_id": zoho_connection_id, "zoho_id": contact_id}
        link = self.links.by_zoho(zoho_connection_id, "contact", contact_id)
        with bound(zoho_connection=zoho.connection.name, entity="contact", zoho_id=contact_id):
            if event_time and link and link.zoho_modified_at and event_time < link.zoho_modified_at:
                with self._record(entity="organization", **base) as row:
                    row["pipedrive_id"] = link.pipedrive_id
                    row["reason"] = (
                        f"stale event: changed at {event_time.isoformat()}, already applied "
                        f"{link.zoho_modified_at.isoformat()}"
                    )
                return SKIPPED
            if contact is None:
                try:
                    contact = zoho.client.contacts.get(contact_id)
                except NotFoundError:
                    with self._record(entity="organization", **base) as row:
                        row["pipedrive_id"] = link.pipedrive_id if link else ""
                        row["reason"] = "deleted in Zoho Books; Pipedrive records are kept"
                    return SKIPPED
            assert contact is not None
            plan = classify_contact(contact, self.config)
            target_entity = "person" if plan.kind == "person" else "organization"
            if plan.kind == "skip" or (plan.inactive and plan.inactive_action == "record"):
                with self._record(entity=target_entity, **base) as row:
                    row["pipedrive_id"] = link.pipedrive_id if link else ""
                    row["reason"] = plan.reason
                return SKIPPED
            if plan.kind == "person":
                return self._contact_as_person(zoho, contact, link, base)
            return self._contact_as_organization(zoho, contact, link, base, plan.reason)

    def _contact_as_organization(
        self,
        zoho: ZohoSide,
        contact: Mapping[str, Any],
        link: Link | None,
        base: dict[str, Any],
        why: str,
    ) -> str:
        keys = self.keys("organization")
        contact_id = str(contact["contact_id"])
        modified = _zoho_time(contact.get("last_modified_time"))
        zoho_hash = fields_hash(
            mapped_view(
                contact, entity="organization", side="zoho", config=self.config, field_keys=keys
            )
        )
        desired = zoho_contact_to_organization(contact, self.config, keys)
        outcome = SKIPPED
        org_id = ""
        persons = (
            order_contact_persons(contact.get("contact_persons") or [])
            if self.config.contacts.sync_contact_persons
            else []
        )
        # The contact counts as applied (a later backfill skips it) only once its persons are
        # too: a run stopped between the organization and its persons (a spent budget, a crash)
        # must come back for them.
        applied_at = None if persons else modified
        with self._record(entity="organization", **base) as row:
            # Nothing mapped changed since the last sync: no need to read Pipedrive at all.
            unchanged = link is not None and link.zoho_hash == zoho_hash
            if unchanged and link is not None:
                row["pipedrive_id"] = link.pipedrive_id
                row["reason"] = (
                    "no mapped field changed (our own write coming back, or unmapped change)"
                )
                org_id = link.pipedrive_id
                self._advance_link(link, zoho_hash=zoho_hash, zoho_modified=applied_at)
            else:
                org, known = self._linked_record("organization", link, row)
                method = "link" if org is not None else ""
                while True:
                    if org is None:
                        match = self._match_organization(contact)
                        if match.ambiguous:
                            row["action"] = "review"
                            row["outcome"] = REVIEW
                            row["reason"] = row.get("reason", "") + match.reason
                            self._review(
                                "ambiguous_match",
                                zoho.connection.id,
                                "contact",
                                contact_id,
                                f"{contact.get('contact_name')}: {match.reason}",
                                match.candidates,
                            )
                            return REVIEW
                        org, method = match.record, match.method
                    if org is None:
                        org = self._create(
                            "organization",
                            desired,
                            lambda remote: remote.organizations_by_reference(contact_id),
                        )
                        self._created_orgs.add(str(org.get("id") or ""))
                        row["action"] = "create"
                        row["outcome"] = APPLIED
                        row["diff"] = {k: (None, v) for k, v in _flat(desired).items()}
                        row["reason"] = row.get("reason", "") + why
                        break
                    update = plan_update(
                        org,
                        desired,
                        entity="organization",
                        target="pipedrive",
                        config=self.config,
                        field_keys=keys,
                        source_modified=modified,
                        target_modified=_pd_time(org.get("update_time")),
                    )
                    if known and needs_whole_record(update.payload, "organization", self.config):
                        org, known = self._read_linked("organization", link, row), False
                        continue
                    if update.payload:
                        try:
                            written = self._update_linked(
                                "organization", str(org["id"]), update.payload, known=known
                            )
                        except _GoneError:
                            self._gone(link, "organization", row)
                            org, known = None, False
                            continue
                        org = written or org
                        row["action"] = "update"
                        row["outcome"] = APPLIED
                        row["diff"] = update.changes
                    else:
                        relinked = link is None or method != "link"
                        row["action"] = "link" if relinked else "skip"
                        row["outcome"] = APPLIED if relinked else SKIPPED
                    reasons = [f"matched by {method}"] if method != "link" else []
                    reasons += [f"{k}: {v}" for k, v in update.skipped.items()]
                    row["reason"] = row.get("reason", "") + "; ".join(reasons or ["up to date"])
                    break
                org_id = str(org.get("id") or "")
                row["pipedrive_id"] = org_id
                if not self.dry_run and org_id:
                    link = self._link_organization(zoho, contact_id, org_id)
                    if link.zoho_id == contact_id and link.pipedrive_id != org_id:
                        self.links.relink(link, org_id)
                    self._advance_link(
                        link,
                        zoho_hash=zoho_hash,
                        pipedrive_hash=self._pd_hash("organization", org, keys),
                        zoho_modified=applied_at,
                        pipedrive_modified=_pd_time(org.get("update_time")),
                        pipedrive_record=org,
                    )
            outcome = str(row["outcome"])
        for person in persons:
            self._contact_person(zoho, contact, person, org_id or None)
        if persons and link is not None and org_id and link.pipedrive_id == org_id:
            self._advance_link(link, zoho_modified=modified)
        return outcome

    def _contact_as_person(
        self, zoho: ZohoSide, contact: Mapping[str, Any], link: Link | None, base: dict[str, Any]
    ) -> str:
        keys = self.keys("person")
        contact_id = str(contact["contact_id"])
        desired = individual_to_person(contact, self.config, keys)
        view_source = dict(contact)
        return self._upsert_person(
            zoho,
            zoho_entity="contact",
            zoho_id=contact_id,
            parent_id=None,
            desired=desired,
            view_source=view_source,
            modified=_zoho_time(contact.get("last_modified_time")),
            link=link,
            org_id=None,
            reference=contact_id,
            email=self._primary_email(contact),
            name=str(contact.get("contact_name") or ""),
            base=base,
        )

    def _contact_person(
        self,
        zoho: ZohoSide,
        contact: Mapping[str, Any],
        person: Mapping[str, Any],
        org_id: str | None,
    ) -> str:
        keys = self.keys("person")
        person_id = str(person.get("contact_person_id") or "")
        if not person_id:
            return SKIPPED
        contact_id = str(contact["contact_id"])
        desired = zoho_person_to_pipedrive(
            person,
            org_id=int(org_id) if org_id and org_id.isdigit() else None,
            zoho_contact_id=contact_id,
            config=self.config,
            field_keys=keys,
            contact_status=contact.get("status"),
        )
        view_source = dict(person)
        view_source["contact_id"] = contact_id
        view_source["status"] = contact.get("status")
        name = " ".join(str(person.get(k) or "") for k in ("first_name", "last_name")).strip()
        return self._upsert_person(
            zoho,
            zoho_entity="contact_person",
            zoho_id=person_id,
            parent_id=contact_id,
            desired=desired,
            view_source=view_source,
            modified=_zoho_time(contact.get("last_modified_time")),
            link=self.links.by_zoho(zoho.connection.id, "contact_person", person_id),
            org_id=org_id,
            reference=None,
            email=str(person.get("email") or ""),
            name=name,
            base={"direction": Z2P, "zoho_connection_id": zoho.connection.id, "zoho_id": person_id},
        )

    def _upsert_person(
        self,
        zoho: ZohoSide,
        *,
        zoho_entity: str,
        zoho_id: str,
        parent_id: str | None,
        desired: dict[str, Any],
        view_source: Mapping[str, Any],
        modified: dt.datetime | None,
        link: Link | None,
        org_id: str | None,
        reference: str | None,
        email: str,
        name: str,
        base: dict[str, Any],
    ) -> str:
        keys = self.keys("person")
        zoho_hash = fields_hash(
            mapped_view(
                view_source, entity="person", side="zoho", config=self.config, field_keys=keys
            )
        )
        with self._record(entity="person", **base) as row:
            unchanged = link is not None and link.zoho_hash == zoho_hash
            if unchanged and link is not None:
                row["pipedrive_id"] = link.pipedrive_id
                row["reason"] = "no mapped field changed"
                self._advance_link(link, zoho_hash=zoho_hash, zoho_modified=modified)
                return SKIPPED
            current, known = self._linked_record("person", link, row)
            method = "link" if current is not None else ""
            while True:
                if current is None:
                    candidates = self._match_person(reference, email, name, org_id)
                    if len(candidates) > 1:
                        row["action"] = "review"
                        row["outcome"] = REVIEW
                        row["reason"] = (
                            f"{len(candidates)} Pipedrive persons match {email or name!r}"
                        )
                        self._review(
                            "ambiguous_match",
                            zoho.connection.id,
                            zoho_entity,
                            zoho_id,
                            f"{name or email}: {row['reason']}",
                            [{"id": c.get("id"), "name": c.get("name")} for c in candidates],
                        )
                        return REVIEW
                    if candidates:
                        current, method = candidates[0], "email or name"
                if current is None:
                    current = self._create(
                        "person",
                        desired,
                        lambda remote: self._persons_like(remote, reference, email, name, org_id),
                    )
                    row["action"] = "create"
                    row["outcome"] = APPLIED
                    row["diff"] = {k: (None, v) for k, v in _flat(desired).items()}
                    break
                update = plan_update(
                    current,
                    desired,
                    entity="person",
                    target="pipedrive",
                    config=self.config,
                    field_keys=keys,
                    source_modified=modified,
                    target_modified=_pd_time(current.get("update_time")),
                )
                payload = dict(update.payload)
                if desired.get("org_id") and not current.get("org_id"):
                    payload["org_id"] = desired["org_id"]
                if known and needs_whole_record(payload, "person", self.config):
                    current, known = self._read_linked("person", link, row), False
                    continue
                if payload:
                    try:
                        written = self._update_linked(
                            "person", str(current["id"]), payload, known=known
                        )
                    except _GoneError:
                        self._gone(link, "person", row)
                        current, known = None, False
                        continue
                    current = written or current
                    row["action"] = "update"
                    row["outcome"] = APPLIED
                    row["diff"] = update.changes
                else:
                    relinked = link is None or method != "link"
                    row["action"] = "link" if relinked else "skip"
                    row["outcome"] = APPLIED if relinked else SKIPPED
                row["reason"] = row.get("reason", "") + (
                    f"matched by {method}" if method != "link" else "up to date"
                )
                break
            person_id = str(current.get("id") or "")
            row["pipedrive_id"] = person_id
            if not self.dry_run and person_id:
                new_link = self.links.link(
                    zoho_connection_id=zoho.connection.id,
                    zoho_entity=zoho_entity,
                    zoho_id=zoho_id,
                    pipedrive_connection_id=self.pd.connection.id,
                    pipedrive_entity="person",
                    pipedrive_id=person_id,
                    zoho_parent_id=parent_id,
                )
                if new_link.zoho_id == zoho_id and new_link.pipedrive_id != person_id:
                    self.links.relink(new_link, person_id)
                self._advance_link(
                    new_link,
                    zoho_hash=zoho_hash,
                    pipedrive_hash=self._pd_hash("person", current, keys),
                    zoho_modified=modified,
                    pipedrive_modified=_pd_time(current.get("update_time")),
                    pipedrive_record=current,
                )
            return str(row["outcome"])

    # Matching ----------------------------------------------------------------------------

    @dataclasses.dataclass
    class Match:
        """The outcome of matching one record."""

        record: dict[str, Any] | None = None
        method: str = ""
        ambiguous: bool = False
        reason: str = ""
        candidates: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def _unlinked(self, entity: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            r
            for r in records
            if self.links.by_pipedrive(self.pd.connection.id, entity, str(r["id"])) is None
        ]

    def _match_organization(self, contact: Mapping[str, Any]) -> SyncEngine.Match:
        """Cross-reference field, then email of a contact person, then normalised name."""
        contact_id = str(contact["contact_id"])
        steps: list[tuple[str, Callable[[], list[dict[str, Any]]]]] = [
            ("cross-reference", lambda: self.lookup.organizations_by_reference(contact_id)),
            ("email", lambda: self._orgs_by_person_email(contact)),
            (
                "name",
                lambda: self.lookup.organizations_by_name(str(contact.get("contact_name") or "")),
            ),
        ]
        for method, find in steps:
            found = self._unlinked("organization", find())
            if len(found) == 1:
                return SyncEngine.Match(record=found[0], method=method)
            if len(found) > 1:
                return SyncEngine.Match(
                    ambiguous=True,
                    method=method,
                    reason=f"{len(found)} Pipedrive organizations match by {method}; not guessing",
                    candidates=[{"id": o.get("id"), "name": o.get("name")} for o in found],
                )
        return SyncEngine.Match()

    def _orgs_by_person_email(self, contact: Mapping[str, Any]) -> list[dict[str, Any]]:
        email = self._primary_email(contact)
        if not email:
            return []
        org_ids = {
            str(p.get("org_id")) for p in self.lookup.persons_by_email(email) if p.get("org_id")
        }
        found = [self.lookup.organization(org_id) for org_id in sorted(org_ids)]
        return [o for o in found if o is not None]

    @staticmethod
    def _primary_email(contact: Mapping[str, Any]) -> str:
        persons = order_contact_persons(contact.get("contact_persons") or [])
        for person in persons:
            if person.get("email"):
                return normalize_email(str(person["email"]))
        return normalize_email(str(contact.get("email") or ""))

    def _match_person(
        self, reference: str | None, email: str, name: str, org_id: str | None
    ) -> list[dict[str, Any]]:
        if reference:
            found = self._unlinked("person", self.lookup.persons_by_reference(reference))
            if found:
                return found
        if email:
            by_email = self._unlinked("person", self.lookup.persons_by_email(email))
            if org_id:
                in_org = [p for p in by_email if str(p.get("org_id")) == str(org_id)]
                by_email = in_org or [p for p in by_email if not p.get("org_id")]
            if by_email:
                return by_email
        if org_id and name and str(org_id) not in self._created_orgs:
            wanted = normalize_name(name)
            return self._unlinked(
                "person",
                [
                    p
                    for p in self.lookup.persons_of_organization(org_id)
                    if normalize_name(str(p.get("name") or "")) == wanted
                ],
            )
        return []

    @staticmethod
    def _persons_like(
        lookup: PipedriveLookup, reference: str | None, email: str, name: str, org_id: str | None
    ) -> list[dict[str, Any]]:
        """Persons that a lost create of this person would have made."""
        if reference:
            return lookup.persons_by_reference(reference)
        wanted = normalize_name(name)
        candidates = lookup.persons_by_email(email) if email else []
        if not candidates and org_id:
            candidates = lookup.persons_of_organization(org_id)
        return [
            p
            for p in candidates
            if (not org_id or str(p.get("org_id")) == str(org_id))
            and (not wanted or normalize_name(str(p.get("name") or "")) == wanted)
        ]

    # Writes ------------------------------------------------------------------------------

    def _resource(self, entity: str) -> Any:
        return {
            "organization": self.pd.client.organizations,
            "person": self.pd.client.persons,
            "deal": self.pd.client.deals,
        }[entity]

    def _create(
        self,
        entity: str,
        body: dict[str, Any],
        find_existing: Callable[[RemoteLookup], list[dict[str, Any]]],
    ) -> dict[str, Any]:
        """Create a Pipedrive record; after a lost answer, look for it before creating again."""
        if self.dry_run:
            return {"id": "", **body}
        resource = self._resource(entity)
        try:
            created = dict(resource.create(body))
        except UncertainWriteError:
            # The create may have happened. Ask the API (the run's index cannot know about it).
            remote = RemoteLookup(
                self.pd.client,
                org_reference_key=self._key_or_none(
                    "organization", self.config.fields.zoho_contact_id
                ),
                person_reference_key=self._key_or_none(
                    "person", self.config.fields.zoho_contact_id
                ),
            )
            found = self._unlinked(entity, find_existing(remote))
            if found:
                logger.info("sync.uncertain-create.found entity=%s id=%s", entity, found[0]["id"])
                created = dict(found[0])
            else:
                created = dict(resource.create(body))
        except ValidationError as exc:
            if self.pd.fields.refresh_on_unknown_key(exc):
                raise FatalError(
                    "Pipedrive refused a custom field key; field definitions were reloaded, "
                    "the next attempt uses the new keys",
                    system="pipedrive",
                ) from exc
            raise
        self.lookup.remember(entity, created)
        return created

    def _update(self, entity: str, record_id: str, body: dict[str, Any]) -> dict[str, Any] | None:
        if self.dry_run or not record_id:
            return None
        updated = dict(self._resource(entity).update(record_id, body))
        self.lookup.remember(entity, updated)
        return updated

    def _update_linked(
        self, entity: str, record_id: str, body: dict[str, Any], *, known: bool
    ) -> dict[str, Any] | None:
        """Update a record; raises :class:`_GoneError` when it is gone and ``known``.

        ``known``: the update was planned on our snapshot, so the record's absence is news and
        the caller matches again, as a read before the write would have made it do.
        """
        try:
            written = self._update(entity, record_id, body)
        except NotFoundError:
            if not known:
                raise
            raise _GoneError(entity, record_id) from None
        if known and written is not None and written.get("is_deleted"):
            # A soft-deleted record may still accept a write: it is gone all the same.
            raise _GoneError(entity, record_id)
        return written

    # Snapshots of linked records -----------------------------------------------------------

    def _known(self, link: Link | None) -> dict[str, Any] | None:
        """Our snapshot of a linked record, when updates may be planned on it."""
        if link is None or self.config.sync.read_before_write or not link.pipedrive_snapshot:
            return None
        snapshot = copy.deepcopy(dict(link.pipedrive_snapshot))
        if str(snapshot.get("id") or "") != link.pipedrive_id:
            return None
        return snapshot

    def _linked_record(
        self, entity: Literal["organization", "person"], link: Link | None, row: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, bool]:
        """The linked record to plan on, and whether it is our snapshot (not read just now)."""
        if link is None:
            return None, False
        known = self._known(link)
        if known is not None:
            return known, True
        return self._read_linked(entity, link, row), False

    def _read_linked(
        self, entity: Literal["organization", "person"], link: Link | None, row: dict[str, Any]
    ) -> dict[str, Any] | None:
        if link is None:
            return None
        if entity == "organization":
            record = self.lookup.organization(link.pipedrive_id)
        else:
            record = self.lookup.person(link.pipedrive_id)
        if record is None:
            self._gone(link, entity, row)
        return record

    def _gone(self, link: Link | None, entity: str, row: dict[str, Any]) -> None:
        row["reason"] = f"linked {entity} is gone from Pipedrive; matching again. "
        if link is not None and not self.dry_run:
            link.pipedrive_snapshot = None

    def _forget(self, link: Link | None) -> None:
        """Drop a link's snapshot: Pipedrive changed the record and we have not reconciled it."""
        if link is not None and link.pipedrive_snapshot is not None and not self.dry_run:
            link.pipedrive_snapshot = None
            self.session.flush()

    def _pd_hash(
        self,
        entity: Literal["organization", "person"],
        record: Mapping[str, Any],
        keys: Mapping[str, str],
    ) -> str:
        return fields_hash(
            mapped_view(
                record, entity=entity, side="pipedrive", config=self.config, field_keys=keys
            )
        )

    def _advance_link(
        self,
        link: Link,
        *,
        zoho_hash: str | None = None,
        pipedrive_hash: str | None = None,
        zoho_modified: dt.datetime | None = None,
        pipedrive_modified: dt.datetime | None = None,
        pipedrive_record: Mapping[str, Any] | None = None,
    ) -> None:
        if self.dry_run:
            return
        if zoho_hash is not None:
            link.zoho_hash = zoho_hash
        if pipedrive_hash is not None:
            link.pipedrive_hash = pipedrive_hash
        if pipedrive_record is not None:
            self._remember(link, pipedrive_record)
        if zoho_modified and (
            link.zoho_modified_at is None or zoho_modified > link.zoho_modified_at
        ):
            link.zoho_modified_at = zoho_modified
        if pipedrive_modified and (
            link.pipedrive_modified_at is None or pipedrive_modified > link.pipedrive_modified_at
        ):
            link.pipedrive_modified_at = pipedrive_modified
        self.session.flush()

    def _remember(self, link: Link, record: Mapping[str, Any]) -> None:
        """Keep the mapped fields of a record just written or read as the link's snapshot."""
        if str(record.get("id") or "") != link.pipedrive_id or record.get("is_deleted"):
            return
        entity: Literal["organization", "person"] = (
            "person" if link.pipedrive_entity == "person" else "organization"
        )
        held = _pd_time((link.pipedrive_snapshot or {}).get("update_time"))
        seen = _pd_time(record.get("update_time"))
        if held is not None and seen is not None and seen < held:
            return  # older than what we already hold (a listing read before our last write)
        link.pipedrive_snapshot = pipedrive_snapshot(
            record, entity=entity, config=self.config, field_keys=self.keys(entity)
        )

    def _review(
        self,
        kind: str,
        connection_id: int,
        entity: str,
        record_id: str,
        summary: str,
        candidates: list[dict[str, Any]],
    ) -> None:
        if self.dry_run:
            return
        self.links.open_review(
            kind=kind,
            connection_id=connection_id,
            entity=entity,
            record_id=record_id,
            summary=summary,
            candidates=candidates,
        )

    # Pipedrive organization -> Zoho ------------------------------------------------------

    def sync_pipedrive_organization(
        self,
        org_id: str,
        *,
        event_time: dt.datetime | None = None,
        org: Mapping[str, Any] | None = None,
        zoho_connection_id: int | None = None,
    ) -> str:
        """Create or update the Zoho contact of one Pipedrive organization.

        ``zoho_connection_id`` places a new organization in that Zoho connection instead of
        routing it (a human's choice in review).
        """
        with self._exclusive(f"pipedrive:{self.pd.connection.id}:organization:{org_id}"):
            return self._sync_pipedrive_organization(
                org_id, event_time=event_time, org=org, placed_in=zoho_connection_id
            )

    def _sync_pipedrive_organization(
        self,
        org_id: str,
        *,
        event_time: dt.datetime | None,
        org: Mapping[str, Any] | None,
        placed_in: int | None = None,
    ) -> str:
        keys = self.keys("organization")
        link = self.links.by_pipedrive(self.pd.connection.id, "organization", org_id)
        base = {"direction": P2Z, "entity": "contact", "pipedrive_id": org_id}
        with bound(entity="organization", pipedrive_id=org_id), self._record(**base) as row:
            if link is not None:
                row["zoho_connection_id"] = link.zoho_connection_id
                row["zoho_id"] = link.zoho_id
            if (
                event_time
                and link
                and link.pipedrive_modified_at
                and event_time < link.pipedrive_modified_at
            ):
                row["reason"] = (
                    f"stale event: changed at {event_time.isoformat()}, already applied "
                    f"{link.pipedrive_modified_at.isoformat()}"
                )
                return SKIPPED
            if org is None:
                org = (
                    self.lookup.organization(org_id)
                    if isinstance(self.lookup, IndexedLookup)
                    else None
                )
                if org is None:
                    try:
                        org = self.pd.client.organizations.get(org_id)
                    except NotFoundError:
                        org = None
            if not org or org.get("is_deleted"):
                row["reason"] = "gone from Pipedrive; the Zoho contact is kept (never deleted)"
                self._forget(link)
                # Nothing is left to place: a routing item for it would be retried forever.
                self._close_routing_review(org_id)
                return SKIPPED
            pd_hash = self._pd_hash("organization", org, keys)
            modified = _pd_time(org.get("update_time"))
            if link is not None and link.pipedrive_hash == pd_hash:
                row["reason"] = (
                    "no mapped field changed (our own write coming back, or unmapped change)"
                )
                self._advance_link(
                    link, pipedrive_hash=pd_hash, pipedrive_modified=modified, pipedrive_record=org
                )
                return SKIPPED
            desired = pipedrive_org_to_zoho_contact(org, self.config, keys)
            if link is not None:
                zoho = self.zoho(link.zoho_connection_id)
                try:
                    contact: dict[str, Any] | None = dict(zoho.client.contacts.get(link.zoho_id))
                except NotFoundError:
                    contact = None
                method = "link"
            else:
                referenced = self._referenced_contact(org, keys, placed_in)
                if referenced is not None:
                    zoho, contact = referenced
                    method = "its Zoho Contact ID"
                    candidates: list[dict[str, Any]] = []
                else:
                    try:
                        zoho = self._place(org, keys, placed_in)
                    except ConfigError as exc:
                        return self._unroutable(row, org_id, org, exc)
                    contact, method, candidates = self._match_zoho_contact(zoho, org)
                row["zoho_connection_id"] = zoho.connection.id
                self._close_routing_review(org_id)
                if candidates:
                    row["action"] = "review"
                    row["outcome"] = REVIEW
                    row["reason"] = f"{len(candidates)} Zoho contacts have this name; not guessing"
                    self._review(
                        "ambiguous_match",
                        self.pd.connection.id,
                        "organization",
                        org_id,
                        f"{org.get('name')}: {row['reason']}",
                        candidates,
                    )
                    return REVIEW
            if contact is None:
                contact = self._create_zoho_contact(zoho, org_id, desired)
                row["action"] = "create"
                row["outcome"] = APPLIED
                row["diff"] = {k: (None, v) for k, v in _flat(desired).items()}
            else:
                update = plan_update(
                    contact,
                    desired,
                    entity="organization",
                    target="zoho",
                    config=self.config,
                    field_keys=keys,
                    source_modified=modified,
                    target_modified=_zoho_time(contact.get("last_modified_time")),
                )
                payload = dict(update.payload)
                id_field = self.config.fields.zoho_pipedrive_id
                if id_field and not _has_custom_field(contact, id_field, org_id):
                    payload["custom_fields"] = [{"api_name": id_field, "value": str(org_id)}]
                if payload and not self.dry_run:
                    # Books requires contact_name on every PUT /contacts/{id} (official spec,
                    # update-a-contact-request), also when only a custom field changes.
                    payload.setdefault("contact_name", contact.get("contact_name"))
                    contact = dict(zoho.client.contacts.update(str(contact["contact_id"]), payload))
                if update.payload:
                    row["action"] = "update"
                    row["outcome"] = APPLIED
                    row["diff"] = update.changes
                else:
                    row["action"] = "link" if link is None else "skip"
                    row["outcome"] = APPLIED if link is None else SKIPPED
                row["reason"] = (
                    f"matched by {method}"
                    if link is None
                    else "; ".join(f"{k}: {v}" for k, v in update.skipped.items()) or "up to date"
                )
            contact_id = str(contact.get("contact_id") or "")
            row["zoho_id"] = contact_id
            if self.dry_run or not contact_id:
                return str(row["outcome"])
            zoho_keys = self.keys("organization")
            with self._exclusive(self._contact_key(zoho.connection.id, contact_id)):
                new_link = self._link_organization(zoho, contact_id, org_id)
                if link is None:
                    self._sync_waiting_invoices(zoho.connection.id, contact_id)
            org = self._write_back_reference(org, contact_id, keys)
            self._advance_link(
                new_link,
                zoho_hash=fields_hash(
                    mapped_view(
                        contact,
                        entity="organization",
                        side="zoho",
                        config=self.config,
                        field_keys=zoho_keys,
                    )
                ),
                pipedrive_hash=self._pd_hash("organization", org, keys),
                # A contact first linked from this side has not had its contact persons brought
                # to Pipedrive: not marked as applied, so the next Zoho sync or backfill comes
                # back for them (its organization then compares equal and costs nothing).
                zoho_modified=_zoho_time(contact.get("last_modified_time")) if link else None,
                pipedrive_modified=_pd_time(org.get("update_time")),
                pipedrive_record=org,
            )
            return str(row["outcome"])

    def _place(
        self, org: Mapping[str, Any], keys: Mapping[str, str], placed_in: int | None
    ) -> ZohoSide:
        if placed_in is None:
            return self._route(org, keys)
        if not any(c.id == placed_in for c in self.zoho_connections):
            raise ConfigError([f"connection {placed_in} is not a connected Zoho organization"])
        return self.zoho(placed_in)

    def _referenced_contact(
        self, org: Mapping[str, Any], keys: Mapping[str, str], placed_in: int | None
    ) -> tuple[ZohoSide, dict[str, Any]] | None:
        """The existing Zoho contact an unlinked organization names in its ``Zoho Contact ID``.

        That field is the cross-reference we write on every organization we create from Zoho:
        an organization carrying it was made from that contact, even when its link is not
        stored yet (its webhook can outrun the backfill's commit). Linking to it, never
        creating, is what keeps that race from duplicating the contact.
        """
        name = self.config.fields.zoho_contact_id
        key = keys.get(name) if name else None
        value = (org.get("custom_fields") or {}).get(key) if key else None
        if isinstance(value, Mapping):
            value = value.get("value")
        contact_id = str(value or "").strip()
        if not contact_id:
            return None
        for connection in self._reference_order(org, keys, placed_in):
            linked = self.links.by_zoho(connection.id, "contact", contact_id)
            if linked is not None and linked.pipedrive_id != str(org.get("id")):
                continue  # a copied value: that contact belongs to another organization
            zoho = self.zoho(connection.id)
            try:
                return zoho, dict(zoho.client.contacts.get(contact_id))
            except NotFoundError:
                continue
        return None

    def _reference_order(
        self, org: Mapping[str, Any], keys: Mapping[str, str], placed_in: int | None
    ) -> list[Connection]:
        """Zoho connections to look for a referenced contact in, likeliest first."""
        first: int | None = placed_in
        if first is None:
            with suppress(ConfigError):
                first = self._route(org, keys).connection.id
        return sorted(self.zoho_connections, key=lambda c: c.id != first)

    def _routing_fingerprint(self) -> str:
        """Changes when ``[routing]`` or the set of Zoho connections does."""
        import hashlib

        routing = self.config.routing
        text = repr(
            (
                routing.default,
                routing.field,
                routing.rules,
                sorted(c.name for c in self.zoho_connections),
            )
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _unroutable(
        self, row: dict[str, Any], org_id: str, org: Mapping[str, Any], error: ConfigError
    ) -> str:
        """One organization no rule places: a review item, nothing written to Zoho."""
        reason = "; ".join(error.problems)
        row["action"] = "review"
        row["outcome"] = REVIEW
        row["reason"] = f"not created in Zoho: {reason}"
        fingerprint = self._routing_fingerprint()
        self._review(
            "routing",
            self.pd.connection.id,
            "organization",
            org_id,
            f"{org.get('name')}: {reason}; choose the Zoho organization to create it in",
            [{"zoho": c.name, "routing": fingerprint} for c in self.zoho_connections],
        )
        return REVIEW

    def _close_routing_review(self, org_id: str) -> None:
        if not self.dry_run:
            self.links.close_review(
                kind="routing",
                connection_id=self.pd.connection.id,
                entity="organization",
                record_id=org_id,
            )

    def _retry_unroutable(self) -> int:
        """Organizations waiting in routing review are placed again once ``[routing]`` changed.

        The pull's cursor has moved past them; without this only their next edit in
        Pipedrive would bring them back.
        """
        fingerprint = self._routing_fingerprint()
        retried = 0
        for item in self.links.open_reviews("routing", self.pd.connection.id):
            if any(c.get("routing") == fingerprint for c in item.candidates):
                continue
            retried += 1
            try:
                self.sync_pipedrive_organization(item.record_id)
            except (FatalError, SyncError) as exc:
                logger.warning("pull.organization-failed id=%s error=%s", item.record_id, exc)
        return retried

    def _route(self, org: Mapping[str, Any], keys: Mapping[str, str]) -> ZohoSide:
        names = [c.name for c in self.zoho_connections]
        chosen = route_organization(org, self.config, keys, names)
        for connection in self.zoho_connections:
            if connection.name == chosen:
                return self.zoho(connection.id)
        raise ConfigError([f"routing chose {chosen!r}, which is not a connected Zoho organization"])

    def _match_zoho_contact(
        self, zoho: ZohoSide, org: Mapping[str, Any]
    ) -> tuple[dict[str, Any] | None, str, list[dict[str, Any]]]:
        name = str(org.get("name") or "").strip()
        wanted = normalize_name(name)
        if not wanted:
            return None, "", []
        found = []
        for item in zoho.client.contacts.iter(search_text=name, contact_type="customer"):
            if normalize_name(str(item.get("contact_name") or "")) != wanted:
                continue
            if (
                self.links.by_zoho(zoho.connection.id, "contact", str(item["contact_id"]))
                is not None
            ):
                continue
            found.append(item)
        if len(found) == 1:
            return dict(zoho.client.contacts.get(str(found[0]["contact_id"]))), "name", []
        if len(found) > 1:
            return (
                None,
                "name",
                [{"id": c.get("contact_id"), "name": c.get("contact_name")} for c in found],
            )
        return None, "", []

    def _create_zoho_contact(
        self, zoho: ZohoSide, org_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        if self.dry_run:
            return {"contact_id": "", **body}
        id_field = self.config.fields.zoho_pipedrive_id
        if id_field:
            # Upsert keyed by the Pipedrive id: a repeated or uncertain create finds its contact.
            return dict(zoho.client.contacts.upsert_by_custom_field(id_field, str(org_id), body))
        return dict(zoho.client.contacts.create(body))

    def _write_back_reference(
        self, org: Mapping[str, Any], contact_id: str, keys: Mapping[str, str]
    ) -> Mapping[str, Any]:
        name = self.config.fields.zoho_contact_id
        key = keys.get(name) if name else None
        if not key:
            return org
        current = (org.get("custom_fields") or {}).get(key)
        if isinstance(current, dict):
            current = current.get("value")
        if str(current or "") == contact_id:
            return org
        updated = self._update("organization", str(org["id"]), {"custom_fields": {key: contact_id}})
        return updated or org

    # Invoices -> deals -------------------------------------------------------------------

    def sync_zoho_invoice(
        self,
        zoho_connection_id: int,
        invoice_id: str,
        *,
        event_time: dt.datetime | None = None,
        invoice: Mapping[str, Any] | None = None,
        defer_deal_update: set[str] | None = None,
    ) -> str:
        """Record one invoice and bring its deal's invoice fields up to date.

        With ``defer_deal_update`` (a backfill), the deal id is added to the set instead of
        being written, so each deal is written once after all its invoices are known.
        """
        zoho = self.zoho(zoho_connection_id)
        row_base = {
            "direction": Z2P,
            "entity": "deal",
            "zoho_connection_id": zoho_connection_id,
            "zoho_id": invoice_id,
        }
        stored = self.links.invoice(zoho_connection_id, invoice_id)
        with (
            bound(zoho_connection=zoho.connection.name, entity="invoice", zoho_id=invoice_id),
            self._record(**row_base) as row,
        ):
            if stored is not None:
                row["pipedrive_id"] = stored.deal_id or ""
            if (
                event_time
                and stored
                and stored.zoho_modified_at
                and event_time < stored.zoho_modified_at
            ):
                row["reason"] = (
                    f"stale event: changed at {event_time.isoformat()}, already applied "
                    f"{stored.zoho_modified_at.isoformat()}"
                )
                return SKIPPED
            if invoice is None:
                try:
                    invoice = zoho.client.invoices.get(invoice_id)
                except NotFoundError:
                    invoice = None
            if invoice is None:
                if stored is None or stored.status == "deleted":
                    row["reason"] = "deleted in Zoho Books before it was synced"
                    return SKIPPED
                old_deal = stored.deal_id
                if not self.dry_run:
                    stored.status = "deleted"
                    stored.total = stored.balance = Decimal(0)
                row["action"] = "update"
                row["outcome"] = APPLIED
                row["reason"] = "invoice deleted in Zoho Books; removed from its deal's sums"
                if old_deal:
                    row["diff"] = self._refresh_deal(old_deal, defer_deal_update)
                return APPLIED
            snapshot = invoice_snapshot(invoice)
            if stored is not None and stored.deal_id and _snapshot_unchanged(stored, snapshot):
                row["reason"] = "invoice unchanged since it was applied"
                return SKIPPED
            previous_deal = stored.deal_id if stored is not None else None
            # Outside a backfill a deal we hold a snapshot of is trusted to exist; a write that
            # finds it gone matches the invoice again, reading this time.
            trust = defer_deal_update is None
            while True:
                deal_id, method, problem = self._match_deal(zoho, invoice, stored, trust=trust)
                customer_id = str(invoice.get("customer_id") or "")
                if deal_id is None and problem.startswith(_NOT_LINKED) and not self.dry_run:
                    # The customer's sync may be linking it right now: wait for its lock, so
                    # either we see its link or it sees the snapshot we record (and syncs us).
                    with self._exclusive(self._contact_key(zoho_connection_id, customer_id)):
                        if self.links.by_zoho(zoho_connection_id, "contact", customer_id) is None:
                            return self._invoice_review(row, zoho, invoice, snapshot, problem)
                    continue
                if deal_id is None:
                    return self._invoice_review(row, zoho, invoice, snapshot, problem)
                row["pipedrive_id"] = deal_id
                if not self.dry_run:
                    stored = self._store_snapshot(
                        zoho_connection_id, invoice, snapshot, deal_id, method
                    )
                    self.links.close_review(
                        kind="unmatched_invoice",
                        connection_id=zoho_connection_id,
                        entity="invoice",
                        record_id=invoice_id,
                    )
                if defer_deal_update is not None:
                    diff = self._refresh_deal(deal_id, defer_deal_update)
                    break
                try:
                    with self._exclusive(self._deal_key(deal_id)):
                        diff = self._write_deal_fields(
                            deal_id, extra=None if not self.dry_run else snapshot
                        )
                except _GoneError:
                    trust = False
                    continue
                break
            if previous_deal and previous_deal != deal_id and previous_deal not in self._gone_deals:
                self._refresh_deal(previous_deal, defer_deal_update)
            review_note = diff.pop("(review)", None) if isinstance(diff, dict) else None
            row["diff"] = diff
            if review_note:
                row["action"] = "update" if diff else "review"
                row["outcome"] = REVIEW
                row["reason"] = f"matched by {_METHOD_TEXT.get(method, method)}; {review_note}"
            elif diff or defer_deal_update is not None:
                row["action"] = "update"
                row["outcome"] = APPLIED
                row["reason"] = f"matched by {_METHOD_TEXT.get(method, method)}" + (
                    f" ({problem})" if problem else ""
                )
            else:
                row["reason"] = (
                    f"matched by {_METHOD_TEXT.get(method, method)}; deal fields already up to date"
                )
            return str(row["outcome"])

    def _invoice_review(
        self,
        row: dict[str, Any],
        zoho: ZohoSide,
        invoice: Mapping[str, Any],
        snapshot: InvoiceSnapshot,
        problem: str,
    ) -> str:
        row["action"] = "review"
        row["outcome"] = REVIEW
        row["reason"] = problem
        if not self.dry_run:
            self._store_snapshot(zoho.connection.id, invoice, snapshot, None, "")
        self._review(
            "unmatched_invoice",
            zoho.connection.id,
            "invoice",
            snapshot.invoice_id,
            f"{snapshot.number} ({invoice.get('customer_name', '')}, "
            f"{snapshot.total} {snapshot.currency_code}): {problem}",
            self._deal_candidates(zoho, invoice),
        )
        return REVIEW

    def _store_snapshot(
        self,
        zoho_connection_id: int,
        invoice: Mapping[str, Any],
        snapshot: InvoiceSnapshot,
        deal_id: str | None,
        method: str,
    ) -> InvoiceLink:
        row = self.links.invoice_or_new(zoho_connection_id, snapshot.invoice_id)
        row.customer_id = str(invoice.get("customer_id") or "")
        row.pipedrive_connection_id = (
            self.pd.connection.id if deal_id else row.pipedrive_connection_id
        )
        row.deal_id = deal_id
        row.match_method = method
        row.invoice_number = snapshot.number
        row.status = snapshot.status
        row.invoice_date = snapshot.date.isoformat() if snapshot.date else ""
        row.due_date = snapshot.due_date.isoformat() if snapshot.due_date else ""
        row.total = snapshot.total
        row.balance = snapshot.balance
        row.currency_code = snapshot.currency_code
        row.exchange_rate = snapshot.exchange_rate
        row.last_payment_date = (
            snapshot.last_payment_date.isoformat() if snapshot.last_payment_date else ""
        )
        if snapshot.last_modified_time:
            row.zoho_modified_at = snapshot.last_modified_time
        self.session.flush()
        return row

    def _match_deal(
        self,
        zoho: ZohoSide,
        invoice: Mapping[str, Any],
        stored: InvoiceLink | None,
        *,
        trust: bool = False,
    ) -> tuple[str | None, str, str]:
        """An existing link, a deal id on the invoice, then the customer's organization's deals.

        With ``trust``, a deal we hold a snapshot of is taken to exist without reading it.
        """
        if stored is not None and stored.deal_id and self._deal_exists(stored.deal_id, trust):
            return stored.deal_id, "existing_link", ""
        written = find_deal_id_in_invoice(invoice, self.config)
        if written is not None and self._deal_exists(str(written), trust):
            return str(written), "invoice_reference", ""
        customer_id = str(invoice.get("customer_id") or "")
        org_link = self.links.by_zoho(zoho.connection.id, "contact", customer_id)
        if org_link is None:
            return (
                None,
                "",
                (
                    _NOT_LINKED
                    + (
                        f" and deal {written} named on the invoice does not exist"
                        if written
                        else ""
                    )
                ),
            )
        deals = [
            d
            for d in self.lookup.deals_of_organization(org_link.pipedrive_id)
            if str(d.get("status")) in self.config.deals.statuses
        ]
        choice = choose_deal(deals, self.config)
        if choice.kind == "chosen" and choice.deal_id is not None:
            return str(choice.deal_id), "organization_deals", choice.reason
        return None, "", choice.reason or "no open or won deal on the customer's organization"

    def _deal_exists(self, deal_id: str, trust: bool) -> bool:
        if deal_id in self._gone_deals:
            return False
        if trust and self._known_deal(deal_id) is not None:
            return True
        return self.lookup.deal(deal_id) is not None

    def _deal_gone(self, deal_id: str) -> None:
        self._gone_deals.add(deal_id)
        if not self.dry_run:
            self.links.forget_deal_snapshot(self.pd.connection.id, deal_id)

    def _known_deal(self, deal_id: str) -> DealSnapshot | None:
        """Our snapshot of a deal, when its invoice fields may be written without reading it."""
        if self.config.sync.read_before_write:
            return None
        return self.links.deal_snapshot(self.pd.connection.id, deal_id)

    def _remember_deal(self, deal: Mapping[str, Any]) -> None:
        """Keep a deal's currency and invoice fields, as just written or read."""
        if self.dry_run or not deal.get("id") or deal.get("is_deleted"):
            return
        deal_id = str(deal["id"])
        seen = _pd_time(deal.get("update_time"))
        held = self.links.deal_snapshot(self.pd.connection.id, deal_id)
        if (
            held is not None
            and held.pipedrive_modified_at
            and seen
            and seen < held.pipedrive_modified_at
        ):
            return  # older than what we already hold
        current = deal.get("custom_fields") or {}
        self.links.save_deal_snapshot(
            self.pd.connection.id,
            deal_id,
            title=str(deal.get("title") or ""),
            currency=str(deal.get("currency") or ""),
            custom_fields={key: current.get(key) for key in self.keys("deal").values()},
            modified=seen,
        )

    def _deal_candidates(self, zoho: ZohoSide, invoice: Mapping[str, Any]) -> list[dict[str, Any]]:
        org_link = self.links.by_zoho(
            zoho.connection.id, "contact", str(invoice.get("customer_id") or "")
        )
        if org_link is None:
            return []
        return [
            {
                "id": d.get("id"),
                "title": d.get("title"),
                "status": d.get("status"),
                "value": d.get("value"),
            }
            for d in self.lookup.deals_of_organization(org_link.pipedrive_id)
        ][:20]

    def _refresh_deal(
        self,
        deal_id: str,
        deferred: set[str] | None,
        extra: InvoiceSnapshot | None = None,
    ) -> dict[str, Any]:
        """Recompute a deal's invoice fields from the stored invoices; write what differs."""
        if deferred is not None:
            deferred.add(deal_id)
            return {}
        return self.write_deal_fields(deal_id, extra=extra)

    def write_deal_fields(
        self, deal_id: str, *, extra: InvoiceSnapshot | None = None
    ) -> dict[str, Any]:
        """Write a deal's invoice sums; returns the field diff (empty when up to date).

        When some invoices cannot be converted to the deal's currency, the monetary fields are
        left alone, the rest is written, and the deal goes to review: the key ``(review)`` of the
        returned diff carries the reason. A deal that is gone gives an empty diff.
        """
        # Two invoices of one deal synced at once would each sum what the other has not
        # committed yet; one at a time, the later one sums both.
        with self._exclusive(self._deal_key(deal_id)):
            try:
                return self._write_deal_fields(deal_id, extra=extra)
            except _GoneError:
                return {}

    def _write_deal_fields(
        self,
        deal_id: str,
        *,
        extra: InvoiceSnapshot | None = None,
        undo: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """:meth:`write_deal_fields`; raises :class:`_GoneError` when a deal known by its snapshot
        turns out to be gone.

        The deal's currency and current invoice fields come from our snapshot when we hold one
        (no read); the write's answer refreshes it. A currency changed behind our back shows
        there: the fields are then written again as a read first would have left them (``undo``
        holds the values our first write replaced, restored where this pass writes nothing).
        """
        if deal_id in self._gone_deals:
            return {}
        held = self._known_deal(deal_id)
        deal: dict[str, Any] | None
        if held is not None:
            deal = {
                "id": deal_id,
                "title": held.title,
                "currency": held.currency,
                "custom_fields": dict(held.custom_fields or {}),
            }
        else:
            deal = self.lookup.deal(deal_id)
            if deal is None:
                try:
                    deal = dict(self.pd.client.deals.get(deal_id))
                except NotFoundError:
                    deal = None
            if deal is None or deal.get("is_deleted"):
                # A read by id still answers for a deleted deal, which refuses writes.
                self._deal_gone(deal_id)
                return {}
            self._remember_deal(deal)
        rows = self.links.invoices_of_deal(self.pd.connection.id, deal_id)
        snapshots = [_row_snapshot(r) for r in rows if r.status != "deleted"]
        if extra is not None:
            snapshots = [s for s in snapshots if s.invoice_id != extra.invoice_id] + [extra]
        base_currency = None
        if rows:
            options = self.zoho(rows[0].zoho_connection_id).connection.options
            base_currency = str(options.get("currency_code") or "") or None
        deal_currency = str(deal.get("currency") or "") or None
        summary = aggregate_deal_invoices(
            snapshots,
            deal_currency,
            base_currency,
            include_drafts=self.config.deals.include_draft_invoices,
        )
        keys = self.keys("deal")
        desired = deal_fields_payload(summary, self.config, keys, as_of=self._today())[
            "custom_fields"
        ]
        for key, value in (undo or {}).items():
            desired.setdefault(key, value)
        current = deal.get("custom_fields") or {}
        changed = {k: v for k, v in desired.items() if not _same_value(current.get(k), v)}
        names = {v: k for k, v in keys.items()}
        diff: dict[str, Any] = {names.get(k, k): (current.get(k), v) for k, v in changed.items()}
        if changed:
            try:
                written = self._update_linked(
                    "deal", deal_id, {"custom_fields": changed}, known=held is not None
                )
            except _GoneError:
                self._deal_gone(deal_id)
                raise
            if written is not None:
                self._remember_deal(written)
                if (
                    held is not None
                    and undo is None
                    and (written.get("currency") or None) != deal_currency
                ):
                    # Changed in Pipedrive since our snapshot: sum again in the deal's currency.
                    replaced = {k: current.get(k) for k in changed}
                    again = self._write_deal_fields(deal_id, extra=extra, undo=replaced)
                    return _merge_diffs(diff, again)
        if summary.currency_mismatch:
            currencies = sorted(
                {
                    s.currency_code
                    for s in snapshots
                    if s.invoice_id in summary.mismatched_invoice_ids
                }
            )
            reason = (
                f"invoices in {', '.join(currencies) or 'another currency'} cannot be converted to the "
                f"deal's currency {deal_currency or '(none)'} (Zoho base currency "
                f"{base_currency or 'unknown'}); monetary fields left unchanged"
            )
            diff["(review)"] = reason
            self._review(
                "currency_mismatch",
                self.pd.connection.id,
                "deal",
                deal_id,
                f"{deal.get('title') or deal_id}: {reason}",
                [{"invoice_id": i} for i in summary.mismatched_invoice_ids],
            )
        return diff

    def flush_deals(self, deal_ids: set[str]) -> int:
        """Write the invoice fields of every deal a backfill touched; returns deals written."""
        written = 0
        for deal_id in sorted(deal_ids, key=lambda d: int(d) if d.isdigit() else 0):
            with self._record(direction=Z2P, entity="deal", pipedrive_id=deal_id) as row:
                diff = self.write_deal_fields(deal_id)
                review_note = diff.pop("(review)", None)
                if review_note:
                    row["action"] = "update" if diff else "review"
                    row["outcome"] = REVIEW
                    row["diff"] = diff
                    row["reason"] = str(review_note)
                elif diff:
                    written += 1
                    row["action"] = "update"
                    row["outcome"] = APPLIED
                    row["diff"] = diff
                    row["reason"] = "invoice sums after backfill"
                else:
                    row["reason"] = "deal invoice fields already up to date"
        return written

    def sync_zoho_payment(
        self,
        zoho_connection_id: int,
        payment_id: str,
        *,
        known_invoice_ids: list[str] | None = None,
        entity: str = "customerpayment",
    ) -> str:
        """A payment (or credit note) changes invoices: re-read each one it applies to.

        The invoices are re-read through the API; the webhook's list of invoice ids is only used
        to know which ones, and is the only source left once the payment itself is deleted.
        """
        zoho = self.zoho(zoho_connection_id)
        invoice_ids = list(known_invoice_ids or [])
        if entity == "customerpayment":
            try:
                payment = zoho.client.payments.get(payment_id)
                invoice_ids += [
                    str(i.get("invoice_id"))
                    for i in payment.get("invoices") or []
                    if i.get("invoice_id")
                ]
            except NotFoundError:
                pass  # deleted: the ids from the webhook are what is left
        invoice_ids = list(dict.fromkeys(invoice_ids))
        if not invoice_ids:
            with self._record(
                direction=Z2P,
                entity="deal",
                zoho_connection_id=zoho_connection_id,
                zoho_id=payment_id,
            ) as row:
                row["reason"] = f"{entity} applies to no invoice"
            return SKIPPED
        outcomes = [self.sync_zoho_invoice(zoho_connection_id, i) for i in invoice_ids]
        return APPLIED if APPLIED in outcomes else outcomes[0]

    # Vendor bills -> organization totals ---------------------------------------------------

    def sync_vendor_bills(
        self,
        zoho_connection_id: int,
        entity_id: str,
        *,
        entity: str = "bill",
        vendor_id: str | None = None,
    ) -> str:
        """A bill or vendor payment changed: write the vendor's bill sums on its organization.

        The sums come from re-reading every bill of the vendor through the API, never from the
        webhook: a payload tells which vendor, not what it is owed. ``vendor_id`` (from the
        webhook) saves reading the bill or payment itself and is all that is left once it is
        deleted.
        """
        zoho = self.zoho(zoho_connection_id)
        base = {
            "direction": Z2P,
            "entity": "organization",
            "zoho_connection_id": zoho_connection_id,
            "zoho_id": entity_id,
        }
        with (
            bound(zoho_connection=zoho.connection.name, entity=entity, zoho_id=entity_id),
            self._record(**base) as row,
        ):
            vendor_id = vendor_id or self._vendor_of(zoho, entity, entity_id)
            if not vendor_id:
                row["reason"] = f"{entity} is gone from Zoho Books and names no vendor"
                return SKIPPED
            row["zoho_id"] = vendor_id
            link = self.links.by_zoho(zoho_connection_id, "contact", vendor_id)
            if link is None or link.pipedrive_entity != "organization":
                row["reason"] = f"{entity}: the vendor is not linked to a Pipedrive organization"
                return SKIPPED
            row["pipedrive_id"] = link.pipedrive_id
            try:
                vendor = zoho.client.contacts.get(vendor_id)
            except NotFoundError:
                row["reason"] = f"{entity}: the vendor is deleted in Zoho Books"
                return SKIPPED
            currency = str(
                vendor.get("currency_code") or zoho.connection.options.get("currency_code") or ""
            )
            totals = sum_vendor_bills(zoho.client.bills.iter(vendor_id=vendor_id), currency)
            if totals.currency_mismatch or not totals.currency:
                reason = (
                    f"bills in another currency than the vendor's {totals.currency or '(unknown)'} "
                    "cannot be summed; bill totals left unchanged"
                )
                row["action"] = "review"
                row["outcome"] = REVIEW
                row["reason"] = f"{entity}: {reason}"
                self._review(
                    "currency_mismatch",
                    zoho_connection_id,
                    "contact",
                    vendor_id,
                    f"{vendor.get('contact_name', vendor_id)}: {reason}",
                    [{"bill_id": bill_id} for bill_id in totals.mismatched_bill_ids],
                )
                return REVIEW
            if not self.dry_run:
                self.links.close_review(
                    kind="currency_mismatch",
                    connection_id=zoho_connection_id,
                    entity="contact",
                    record_id=vendor_id,
                )
            org = self.lookup.organization(link.pipedrive_id)
            if org is None:
                row["reason"] = f"{entity}: the vendor's organization is gone from Pipedrive"
                return SKIPPED
            keys = self.keys("organization")
            desired = vendor_totals_payload(totals, self.config, keys)
            current = org.get("custom_fields") or {}
            changed = {k: v for k, v in desired.items() if not _same_value(current.get(k), v)}
            names = {v: k for k, v in keys.items()}
            summary = f"{totals.counted} bill(s) of the vendor, void ones left out"
            if not changed:
                row["reason"] = f"{entity}: bill totals already up to date ({summary})"
                return SKIPPED
            self._update("organization", link.pipedrive_id, {"custom_fields": changed})
            row["action"] = "update"
            row["outcome"] = APPLIED
            row["diff"] = {names.get(k, k): (current.get(k), v) for k, v in changed.items()}
            row["reason"] = f"{entity}: bill totals from {summary}"
            return APPLIED

    @staticmethod
    def _vendor_of(zoho: ZohoSide, entity: str, entity_id: str) -> str | None:
        """The vendor of a bill or vendor payment, read through the API (``None`` when gone)."""
        try:
            if entity == "bill":
                record = zoho.client.bills.get(entity_id)
            else:
                record = zoho.client.vendor_payments.get(entity_id)
        except NotFoundError:
            return None
        return str(record.get("vendor_id") or "") or None

    # Backfill ----------------------------------------------------------------------------

    def backfill(
        self,
        *,
        zoho_connection_ids: list[int] | None = None,
        token_cap: int | None = None,
        include_contacts: bool = True,
        include_invoices: bool = True,
        include_pipedrive: bool = True,
        progress: Callable[[BackfillProgress], None] | None = None,
    ) -> BackfillProgress:
        """Sync everything from the connected Zoho organizations, then back, resumably.

        Records already applied (linked, and not modified since) cost nothing on the Pipedrive
        side, so a backfill that stopped (token cap, budget, crash) is simply run again. Deals
        are written once each, after all their invoices are known. With ``include_pipedrive``
        the Pipedrive organizations still without a link afterwards are created (or matched) in
        their routed Zoho organization.
        """
        ids = zoho_connection_ids or [c.id for c in self.zoho_connections]
        state = BackfillProgress(token_cap=token_cap)
        work: list[tuple[int, str, str, dt.datetime | None, Mapping[str, Any] | None]] = []
        for connection_id in ids:
            zoho = self.zoho(connection_id)
            if include_contacts:
                for item in zoho.client.contacts.iter():
                    work.append(
                        (
                            connection_id,
                            "contact",
                            str(item["contact_id"]),
                            _zoho_time(item.get("last_modified_time")),
                            None,
                        )
                    )
            if include_invoices:
                for item in zoho.client.invoices.iter():
                    work.append(
                        (
                            connection_id,
                            "invoice",
                            str(item["invoice_id"]),
                            _zoho_time(item.get("last_modified_time")),
                            item,
                        )
                    )
        state.total = len(work)
        deferred: set[str] = set()
        tokens0 = self.pd.client.stats.tokens
        for connection_id, entity, record_id, modified, item in work:
            state.tokens = self.pd.client.stats.tokens - tokens0
            if token_cap is not None and state.tokens >= token_cap:
                state.stopped = f"token cap of {token_cap} reached; run backfill again to resume"
                break
            try:
                if entity == "contact":
                    link = self.links.by_zoho(connection_id, "contact", record_id)
                    if (
                        link is not None
                        and link.zoho_modified_at
                        and modified
                        and modified <= link.zoho_modified_at
                    ):
                        state.unchanged += 1
                    else:
                        outcome = self.sync_zoho_contact(connection_id, record_id)
                        state.count(outcome)
                else:
                    stored = self.links.invoice(connection_id, record_id)
                    if (
                        stored is not None
                        and stored.zoho_modified_at
                        and modified
                        and modified <= stored.zoho_modified_at
                        and stored.deal_id
                    ):
                        state.unchanged += 1
                    else:
                        outcome = self.sync_zoho_invoice(
                            connection_id, record_id, invoice=item, defer_deal_update=deferred
                        )
                        state.count(outcome)
            except RetryableError as exc:
                state.stopped = f"stopped: {exc}; run backfill again to resume"
                break
            except (FatalError, SyncError) as exc:
                # One bad record must not stop the others; its audit row says what failed.
                logger.warning(
                    "backfill.record-failed entity=%s id=%s error=%s", entity, record_id, exc
                )
                state.failed += 1
            state.done += 1
            if progress is not None:
                progress(state)
            if not self.dry_run and state.done % 200 == 0:
                # Commit in batches: a crash loses at most one batch, and links make redoing it harmless.
                self.session.commit()
                # Committed rows are in the audit log: holding a PlannedChange for each of
                # 100,000 records would grow the process with the backfill (a dry run keeps them).
                self.changes.clear()
        state.deals_written = self.flush_deals(deferred)
        if include_pipedrive and not state.stopped:
            self._backfill_pipedrive(state, token_cap, tokens0, progress)
        state.tokens = self.pd.client.stats.tokens - tokens0
        if progress is not None:
            progress(state)
        return state

    def _backfill_pipedrive(
        self,
        state: BackfillProgress,
        token_cap: int | None,
        tokens0: int,
        progress: Callable[[BackfillProgress], None] | None,
    ) -> None:
        """The second half: Pipedrive organizations without a link -> their routed Zoho org.

        Organizations the first half created or matched are linked by now, so they are not
        even counted; a second backfill finds every organization linked and writes nothing.
        """
        pd_id = self.pd.connection.id
        unlinked = [
            org
            for org in self.pd.client.organizations.iter()
            if self.links.by_pipedrive(pd_id, "organization", str(org["id"])) is None
        ]
        state.total += len(unlinked)
        for org in unlinked:
            state.tokens = self.pd.client.stats.tokens - tokens0
            if token_cap is not None and state.tokens >= token_cap:
                state.stopped = f"token cap of {token_cap} reached; run backfill again to resume"
                return
            try:
                state.count(self.sync_pipedrive_organization(str(org["id"]), org=org))
            except RetryableError as exc:
                state.stopped = f"stopped: {exc}; run backfill again to resume"
                return
            except (FatalError, SyncError) as exc:
                logger.warning("backfill.organization-failed id=%s error=%s", org["id"], exc)
                state.failed += 1
            state.done += 1
            if progress is not None:
                progress(state)

    # Scheduled work ----------------------------------------------------------------------

    def pull_pipedrive(self, connection_id: int) -> int:
        """Organizations changed since the cursor (with an overlap window), applied in order."""
        if connection_id != self.pd.connection.id:
            raise ConfigError(
                [f"connection {connection_id} is not this engine's Pipedrive company"]
            )
        cursor = self.links.cursor(connection_id, "organization")
        overlap = dt.timedelta(seconds=self.config.sync.overlap_seconds)
        since = (
            (cursor.position - overlap)
            if cursor.position
            else dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
        )
        seen = 0
        position = cursor.position
        ids_at_position: set[str] = set(cursor.seen_ids or [])
        for org in self.pd.client.organizations.iter_updated_since(since):
            org_id = str(org["id"])
            updated = _pd_time(org.get("update_time"))
            if (
                cursor.position
                and updated
                and updated <= cursor.position
                and (updated < cursor.position or org_id in set(cursor.seen_ids or []))
            ):
                link = self.links.by_pipedrive(connection_id, "organization", org_id)
                if (
                    link is not None
                    and link.pipedrive_modified_at
                    and updated <= link.pipedrive_modified_at
                ):
                    continue
            seen += 1
            try:
                self.sync_pipedrive_organization(org_id, org=org)
            except (FatalError, SyncError) as exc:
                # One refused organization (say a duplicate name in Zoho) must not stop the
                # others; its audit row says what failed and its next change is tried again.
                logger.warning("pull.organization-failed id=%s error=%s", org_id, exc)
            if updated and (position is None or updated > position):
                position, ids_at_position = updated, {org_id}
            elif updated and updated == position:
                ids_at_position.add(org_id)
        if not self.dry_run:
            self.links.advance(cursor, position, ids_at_position)
            seen += self._retry_unroutable()
        return seen

    def reconcile_zoho(self, connection_id: int) -> int:
        """Invoices modified since the cursor, and a periodic full read of contacts."""
        zoho = self.zoho(connection_id)
        synced = 0
        cursor = self.links.cursor(connection_id, "invoice")
        overlap = dt.timedelta(seconds=self.config.sync.overlap_seconds)
        since = (cursor.position - overlap) if cursor.position else None
        newest = cursor.position
        for invoice in zoho.client.invoices.iter(last_modified_since=since):
            modified = _zoho_time(invoice.get("last_modified_time"))
            stored = self.links.invoice(connection_id, str(invoice["invoice_id"]))
            if (
                stored is not None
                and stored.zoho_modified_at
                and modified
                and modified <= stored.zoho_modified_at
            ):
                continue
            self.sync_zoho_invoice(connection_id, str(invoice["invoice_id"]))
            synced += 1
            if modified and (newest is None or modified > newest):
                newest = modified
        if not self.dry_run:
            self.links.advance(cursor, newest)
        synced += self._reconcile_payments(connection_id)
        contacts_cursor = self.links.cursor(connection_id, "contact")
        period = dt.timedelta(hours=self.config.sync.contacts_full_read_hours)
        due = (
            contacts_cursor.last_run_at is None
            or contacts_cursor.last_run_at < dt.datetime.now(dt.UTC) - period
        )
        if due:
            synced += self._contacts_full_diff(connection_id)
            if not self.dry_run:
                self.links.advance(contacts_cursor, None)
        return synced

    def _reconcile_payments(self, connection_id: int) -> int:
        """Payments changed since the cursor re-read their invoices (catches dropped webhooks).

        On the first run the cursor only records where we are: the invoice reconciliation has
        already read every invoice's current balance.
        """
        zoho = self.zoho(connection_id)
        cursor = self.links.cursor(connection_id, "customerpayment")
        newest = cursor.position
        synced = 0
        for payment in zoho.client.payments.iter():
            modified = _zoho_time(payment.get("last_modified_time")) or _zoho_time(
                payment.get("created_time")
            )
            if modified is None:
                continue
            if cursor.position is not None and modified > cursor.position:
                self.sync_zoho_payment(connection_id, str(payment["payment_id"]))
                synced += 1
            if newest is None or modified > newest:
                newest = modified
        if not self.dry_run:
            self.links.advance(cursor, newest)
        return synced

    def _contacts_full_diff(
        self, connection_id: int, trigger_filter: Callable[[Mapping[str, Any]], bool] | None = None
    ) -> int:
        zoho = self.zoho(connection_id)
        synced = 0
        for item in zoho.client.contacts.iter():
            if trigger_filter is not None and not trigger_filter(item):
                continue
            link = self.links.by_zoho(connection_id, "contact", str(item["contact_id"]))
            modified = _zoho_time(item.get("last_modified_time"))
            if (
                link is not None
                and link.zoho_modified_at
                and modified
                and modified <= link.zoho_modified_at
            ):
                continue
            self.sync_zoho_contact(connection_id, str(item["contact_id"]))
            synced += 1
        return synced


_METHOD_TEXT = {
    "existing_link": "its existing link",
    "invoice_reference": "the deal id written on the invoice",
    "organization_deals": "the customer's organization's deals",
    "review": "a choice made in review",
}


def _has_custom_field(contact: Mapping[str, Any], api_name: str, value: str) -> bool:
    for field in contact.get("custom_fields") or []:
        if field.get("api_name") == api_name or field.get("label") == api_name:
            return str(field.get("value") or "") == str(value)
    return False


def _snapshot_unchanged(stored: InvoiceLink, snapshot: InvoiceSnapshot) -> bool:
    return (
        stored.status == snapshot.status
        and stored.total == snapshot.total
        and stored.balance == snapshot.balance
        and stored.invoice_number == snapshot.number
        and stored.invoice_date == (snapshot.date.isoformat() if snapshot.date else "")
        and stored.due_date == (snapshot.due_date.isoformat() if snapshot.due_date else "")
        and stored.currency_code == snapshot.currency_code
        and stored.last_payment_date
        == (snapshot.last_payment_date.isoformat() if snapshot.last_payment_date else "")
    )


def _row_snapshot(row: InvoiceLink) -> InvoiceSnapshot:
    return InvoiceSnapshot(
        invoice_id=row.invoice_id,
        number=row.invoice_number,
        status=row.status,
        date=dt.date.fromisoformat(row.invoice_date) if row.invoice_date else None,
        due_date=dt.date.fromisoformat(row.due_date) if row.due_date else None,
        total=row.total,
        balance=row.balance,
        currency_code=row.currency_code,
        exchange_rate=row.exchange_rate,
        last_modified_time=row.zoho_modified_at,
        last_payment_date=dt.date.fromisoformat(row.last_payment_date)
        if row.last_payment_date
        else None,
    )


def _aware(value: Any) -> dt.datetime | None:
    if not value:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return _pd_time(value) or _zoho_time(value)


def _flat(body: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in body.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and key != "custom_fields":
            flat.update(_flat(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def _merge_diffs(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """Two successive field diffs as one: before of the first, after of the last write."""
    merged = dict(first)
    for name, change in second.items():
        earlier = merged.get(name)
        if isinstance(change, tuple) and isinstance(earlier, tuple):
            merged[name] = (earlier[0], change[1])
        else:
            merged[name] = change
    return {
        name: change
        for name, change in merged.items()
        if not (isinstance(change, tuple) and _same_value(change[0], change[1]))
    }


def _diff_json(diff: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, change in diff.items():
        if isinstance(change, tuple) and len(change) == 2:
            result[str(key)] = {"before": change[0], "after": change[1]}
        else:
            result[str(key)] = change
    return result


# Building an engine from stored connections ------------------------------------------------


@contextmanager
def engine_session(
    context: AppContext,
    *,
    trigger: str = Trigger.MANUAL,
    task_id: str = "",
    dry_run: bool = False,
    indexed: bool = False,
    pipedrive_connection: str | int | None = None,
    config: SyncConfig | None = None,
) -> Iterator[SyncEngine]:
    """An engine over the stored connections, in one database transaction.

    Commits at the end (rolls back in a dry run or on error, keeping only what the error path
    recorded in its own transaction).
    """
    from connector.pipedrive.service import build_pipedrive_client, field_registry
    from connector.ratelimit import Priority
    from connector.zoho.service import build_zoho_client

    config = config or load_config(context.settings.config_path or None)
    session = context.sessions()
    try:
        store = context.store(session)
        pipedrives = store.list("pipedrive")
        if pipedrive_connection is not None:
            pipedrives = [store.get(pipedrive_connection)]
        if not pipedrives:
            raise ConfigError(["no Pipedrive connection: run `connector pipedrive connect` first"])
        pd_connection = pipedrives[0]
        priority = {
            Trigger.WEBHOOK: Priority.WEBHOOK,
            Trigger.BACKFILL: Priority.BACKFILL,
        }.get(trigger, Priority.SCHEDULED)
        client = build_pipedrive_client(context, pd_connection, priority=priority)
        fields = field_registry(context, pd_connection, client)
        pipedrive = PipedriveSide(connection=pd_connection, client=client, fields=fields)
        zoho_connections = store.list("zoho")

        def zoho_side(connection_id: int) -> ZohoSide:
            connection = store.get(connection_id)
            return ZohoSide(connection=connection, client=build_zoho_client(context, connection))

        audit = AuditLog(session, trigger, task_id=task_id)
        lookup = None
        if indexed:
            lookup = IndexedLookup(
                client,
                org_reference_key=_key(fields, "organization", config.fields.zoho_contact_id),
                person_reference_key=_key(fields, "person", config.fields.zoho_contact_id),
            )
        engine = SyncEngine(
            session=session,
            audit=audit,
            config=config,
            pipedrive=pipedrive,
            zoho_side=zoho_side,
            zoho_connections=zoho_connections,
            lookup=lookup,
            dry_run=dry_run,
            locks=redis_record_locks(context.redis),
        )
        yield engine
        if dry_run:
            session.rollback()
        else:
            session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _key(fields: Any, entity: str, name: str | None) -> str | None:
    if not name:
        return None
    try:
        return str(fields.key_for(entity, name))
    except ConfigError:
        return None
