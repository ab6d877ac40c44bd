"""A backfill split into chunks that several worker processes run in parallel.

:meth:`SyncEngine.backfill <connector.sync.engine.SyncEngine.backfill>` walks every record in
one process. For a large first sync the work is split instead:

1. :func:`plan_backfill_chunks` lists the Zoho contacts and invoices of every Zoho connection
   (ids and ``last_modified_time`` only; invoices keep their list item, which is all the sync
   needs) and groups them into chunks. Contacts come first. Invoices are grouped by customer,
   so every invoice of a customer, and so of its deal, lands in one chunk and each deal is
   written once, by one process.
2. :func:`run_backfill_chunk` syncs exactly one chunk through the engine's public methods,
   skipping records already applied and not modified since (as the single-process backfill
   does). Running a chunk twice, or two chunks that overlap, is harmless: links make the second
   pass a no-op. The chunks that one worker process runs share its compact index of the
   Pipedrive company (:func:`connector.sync.lookup.process_index`): a chunk lists only what
   changed since the previous one (10 tokens per 500 changed records per entity) instead of
   the whole company, and holds at most ``RECORDS_KEPT`` full records per entity, so neither
   its tokens nor the worker's memory grow with the company (about 16 bytes per known key).
3. The phases are ordered by a counter in Redis (:class:`BackfillRun`): invoice chunks need the
   organization links that the contact chunks create, so they are stored at the start and
   released by whichever contact chunk finishes last. Each chunk is counted once (a set of
   finished chunk numbers guards the counter against a chunk delivered twice). A contact chunk
   that ends in the dead letters holds the invoice phase back until ``connector retry`` replays
   it; ``BackfillRun.release_invoices`` forces the phase by hand.

This module only decides and syncs; sending the chunks to workers is the caller's business
(``python -m workers.backfill`` enqueues them as Celery tasks).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any, TypeVar

import sqlalchemy as sa

from connector import leases
from connector.context import AppContext
from connector.errors import (
    BudgetExhaustedError,
    ConnectorError,
    FatalError,
    RateLimitError,
    RetryableError,
    SyncError,
)
from connector.models import BackfillChunk, utcnow
from connector.sync.audit import Trigger
from connector.sync.engine import BackfillProgress, engine_session
from connector.sync.lookup import IndexedLookup, process_index
from connector.zoho.pagination import PagePaginator
from connector.zoho.times import parse_zoho_time

__all__ = [
    "BackfillRun",
    "chunk_done",
    "hold_chunk",
    "plan_backfill_chunks",
    "release_chunk",
    "run_backfill_chunk",
    "run_leased_chunk",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

CONTACTS = "contacts"
INVOICES = "invoices"
# A chunk waits out Zoho's per-minute window instead of failing: a backfill is bulk work whose
# pace is the limit. Longer waits (a spent daily budget) are raised so the task is parked.
MAX_RATE_WAIT = 120.0
MAX_RATE_WAITS = 50
COMMIT_EVERY = 50
RUN_TTL = 7 * 24 * 3600


def _patiently(
    call: Callable[[], T],
    *,
    sleep: Callable[[float], None] = time.sleep,
    max_wait: float = MAX_RATE_WAIT,
    attempts: int = MAX_RATE_WAITS,
) -> T:
    """Run ``call``, sleeping through short rate-limit waits (not spent budgets)."""
    for _ in range(attempts - 1):
        try:
            return call()
        except BudgetExhaustedError:
            raise
        except RateLimitError as exc:
            wait = float(exc.retry_after or 1.0)
            if wait > max_wait:
                raise
            sleep(min(max_wait, wait + 0.05))
    return call()


def _iter_list(client: Any, path: str, node: str) -> Iterator[dict[str, Any]]:
    """Every item of a Zoho list, each page retried through rate-limit waits."""
    paginator = PagePaginator()
    while not paginator.finished:
        params = paginator.params()
        body: dict[str, Any] = _patiently(partial(client.call, "GET", path, params=params))
        items = body.get(node) or []
        paginator.advance(body, len(items))
        yield from items


def _modified(item: Mapping[str, Any]) -> str:
    return str(item.get("last_modified_time") or "")


def _pack(groups: list[list[Any]], chunk_size: int) -> list[list[Any]]:
    """Pack groups into chunks of about ``chunk_size`` items without splitting a group."""
    chunks: list[list[Any]] = []
    current: list[Any] = []
    for group in groups:
        if current and len(current) + len(group) > chunk_size:
            chunks.append(current)
            current = []
        current.extend(group)
    if current:
        chunks.append(current)
    return chunks


def plan_backfill_chunks(
    context: AppContext,
    *,
    chunk_size: int = 200,
    zoho_connection_ids: list[int] | None = None,
    include_contacts: bool = True,
    include_invoices: bool = True,
) -> list[dict[str, Any]]:
    """List the Zoho records to backfill and group them into chunks.

    Args:
        context: the process context.
        chunk_size: records per chunk (a customer with more invoices gets a bigger chunk).
        zoho_connection_ids: only these Zoho connections (default: all).
        include_contacts: plan contact chunks.
        include_invoices: plan invoice chunks.

    Returns:
        Chunks, contacts first. Each is a JSON-safe dict: ``phase`` (``contacts`` or
        ``invoices``), ``number`` (position in the plan), ``zoho_connection_id`` and
        ``records``: ``[id, last_modified_time]`` pairs for contacts, the Zoho list items for
        invoices.
    """
    from connector.zoho.service import build_zoho_client

    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    with context.session() as session:
        store = context.store(session)
        connections = [
            c
            for c in store.list("zoho")
            if zoho_connection_ids is None or c.id in zoho_connection_ids
        ]
        clients = {c.id: build_zoho_client(context, c) for c in connections}
    contact_chunks: list[dict[str, Any]] = []
    invoice_chunks: list[dict[str, Any]] = []
    for connection_id, client in clients.items():
        if include_contacts:
            pairs = [
                [str(item["contact_id"]), _modified(item)]
                for item in _iter_list(client, "/contacts", "contacts")
            ]
            for start in range(0, len(pairs), chunk_size):
                contact_chunks.append(
                    {
                        "phase": CONTACTS,
                        "zoho_connection_id": connection_id,
                        "records": pairs[start : start + chunk_size],
                    }
                )
        if include_invoices:
            by_customer: dict[str, list[dict[str, Any]]] = {}
            for item in _iter_list(client, "/invoices", "invoices"):
                by_customer.setdefault(str(item.get("customer_id") or ""), []).append(dict(item))
            for records in _pack(list(by_customer.values()), chunk_size):
                invoice_chunks.append(
                    {"phase": INVOICES, "zoho_connection_id": connection_id, "records": records}
                )
    chunks = contact_chunks + invoice_chunks
    for number, chunk in enumerate(chunks):
        chunk["number"] = number
    return chunks


def _unchanged(stored_modified: dt.datetime | None, modified: dt.datetime | None) -> bool:
    return bool(stored_modified and modified and modified <= stored_modified)


def _parse(value: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        return parse_zoho_time(value)
    except (ValueError, ConnectorError):
        return None


def run_backfill_chunk(
    context: AppContext,
    chunk: Mapping[str, Any],
    *,
    task_id: str = "",
    sleep: Callable[[float], None] = time.sleep,
) -> BackfillProgress:
    """Sync exactly the records of one chunk; safe to run twice.

    Short Zoho or Pipedrive rate-limit waits are slept through, record by record. Work done is
    committed every few records, so an error that ends the chunk (a spent budget, a server
    error) keeps it and the chunk's next run skips it.

    Raises:
        RetryableError: the chunk could not finish now (run it again later).
    """
    state = BackfillProgress(total=len(chunk["records"]))
    connection_id = int(chunk["zoho_connection_id"])
    deferred: set[str] = set()
    with engine_session(context, trigger=Trigger.BACKFILL, task_id=task_id, indexed=True) as engine:
        if isinstance(engine.lookup, IndexedLookup):
            # A worker runs chunk after chunk: they share the process's compact index of the
            # company, so a chunk lists only what changed since the last one instead of everything.
            pd = engine.pd.connection
            scope = f"{pd.id}:{pd.external_id}:{pd.api_base}"
            engine.lookup.use_shared(process_index(context.cache, scope))
        tokens0 = engine.pd.client.stats.tokens
        try:
            for record in chunk["records"]:
                if chunk["phase"] == CONTACTS:
                    record_id, modified = str(record[0]), _parse(str(record[1]))
                    link = engine.links.by_zoho(connection_id, "contact", record_id)
                    if link is not None and _unchanged(link.zoho_modified_at, modified):
                        state.unchanged += 1
                        state.done += 1
                        continue
                    work: Callable[[], str] = partial(
                        engine.sync_zoho_contact, connection_id, record_id
                    )
                else:
                    item = dict(record)
                    record_id, modified = str(item["invoice_id"]), _parse(_modified(item))
                    stored = engine.links.invoice(connection_id, record_id)
                    if (
                        stored is not None
                        and stored.deal_id
                        and _unchanged(stored.zoho_modified_at, modified)
                    ):
                        state.unchanged += 1
                        state.done += 1
                        continue
                    work = partial(
                        engine.sync_zoho_invoice,
                        connection_id,
                        record_id,
                        invoice=item,
                        defer_deal_update=deferred,
                    )
                try:
                    state.count(_patiently(work, sleep=sleep))
                except (FatalError, SyncError) as exc:
                    # One bad record must not stop the others; its audit row says what failed.
                    logger.warning(
                        "backfill.record-failed chunk=%s id=%s error=%s",
                        chunk.get("number"),
                        record_id,
                        exc,
                    )
                    state.failed += 1
                state.done += 1
                if state.done % COMMIT_EVERY == 0:
                    engine.session.commit()
                    # Committed work is in the audit log; a big chunk must not hold it twice.
                    engine.changes.clear()
            state.deals_written = _patiently(partial(engine.flush_deals, deferred), sleep=sleep)
        except RetryableError:
            # Keep what is done; the deals of this chunk are written on its next run.
            engine.session.commit()
            raise
        state.tokens = engine.pd.client.stats.tokens - tokens0
    return state


def queue_chunks(context: AppContext, run_id: str, chunks: list[dict[str, Any]]) -> None:
    """Record chunks about to be sent, each with a delivery lease.

    A chunk's message that a dying worker had received but not started would otherwise exist
    nowhere but in the broker's unacknowledged set until the visibility timeout: the reaper
    sends it again once the delivery lease runs out.
    """
    with context.session() as session:
        for chunk in chunks:
            number = int(chunk.get("number", -1))
            exists = session.scalar(
                sa.select(BackfillChunk.id).where(
                    BackfillChunk.run_id == run_id, BackfillChunk.number == number
                )
            )
            if exists is None:
                session.add(
                    BackfillChunk(
                        run_id=run_id,
                        number=number,
                        chunk=dict(chunk),
                        status="queued",
                        lease_expires_at=leases.delivery_lease(),
                    )
                )


def _chunk_row(session: Any, run_id: str, chunk: Mapping[str, Any]) -> BackfillChunk:
    """The chunk's lease row, created by its first delivery."""
    number = int(chunk.get("number", -1))
    query = sa.select(BackfillChunk).where(
        BackfillChunk.run_id == run_id, BackfillChunk.number == number
    )
    row = session.scalars(query).first()
    if row is not None:
        return row  # type: ignore[no-any-return]
    try:
        with session.begin_nested():
            session.add(
                BackfillChunk(run_id=run_id, number=number, chunk=dict(chunk), status="queued")
            )
    except sa.exc.IntegrityError:
        pass  # a second delivery created it at the same moment; its claim decides below
    return session.scalars(query).one()  # type: ignore[no-any-return]


def run_leased_chunk(
    context: AppContext,
    run_id: str,
    chunk: Mapping[str, Any],
    *,
    task_id: str = "",
    sleep: Callable[[float], None] = time.sleep,
) -> BackfillProgress | None:
    """Claim the chunk, run it under a heartbeat; None when it is done or running elsewhere.

    The lease row stays ``running`` until :func:`chunk_done`: the caller counts the chunk in the
    run first, so a worker dying in between leaves a lease that runs out and the chunk is run
    (as a no-op) and counted again, never lost.
    """
    me, now = leases.owner(), utcnow()
    with context.session() as session:
        row = _chunk_row(session, run_id, chunk)
        if not leases.claimable(row, now) or not leases.take(session, row, me, now):
            logger.info(
                "backfill.chunk-claimed-elsewhere run=%s chunk=%s status=%s owner=%s",
                run_id,
                chunk.get("number"),
                row.status,
                row.lease_owner,
            )
            return None
        row_id = row.id
    with leases.Heartbeat(context.engine, BackfillChunk, row_id, me):
        try:
            return run_backfill_chunk(context, chunk, task_id=task_id, sleep=sleep)
        except Exception:
            # Keep the lease one more period: the task's retry extends it, a dead letter or
            # parking releases it, and if this process dies first the reaper takes over.
            with context.session() as session:
                leases.hold(session, BackfillChunk, row_id, me, 0)
            raise


def _chunk_update(context: AppContext, run_id: str, number: int, **values: Any) -> None:
    with context.session() as session:
        session.execute(
            sa.update(BackfillChunk)
            .where(
                BackfillChunk.run_id == run_id,
                BackfillChunk.number == number,
                BackfillChunk.lease_owner == leases.owner(),
            )
            .values(**values)
        )


def chunk_done(context: AppContext, run_id: str, number: int) -> None:
    """The chunk ran and was counted: its lease ends."""
    _chunk_update(context, run_id, number, status="done", lease_owner=None, lease_expires_at=None)


def hold_chunk(context: AppContext, run_id: str, number: int, seconds: float) -> None:
    """The chunk's task retries in ``seconds``: keep this process's lease until then."""
    with context.session() as session:
        row = session.scalars(
            sa.select(BackfillChunk).where(
                BackfillChunk.run_id == run_id, BackfillChunk.number == number
            )
        ).first()
        if row is not None:
            leases.hold(session, BackfillChunk, row.id, leases.owner(), seconds)


def release_chunk(context: AppContext, run_id: str, number: int, status: str) -> None:
    """The chunk was parked (``queued``) or dead-lettered (``dead``): nobody owns it now."""
    _chunk_update(context, run_id, number, status=status, lease_owner=None, lease_expires_at=None)


def dead_chunks(context: AppContext, run_id: str) -> int:
    """How many chunks of the run ended in the dead letters."""
    with context.session() as session:
        return int(
            session.scalar(
                sa.select(sa.func.count())
                .select_from(BackfillChunk)
                .where(BackfillChunk.run_id == run_id, BackfillChunk.status == "dead")
            )
            or 0
        )


class BackfillRun:
    """The Redis state of one distributed backfill: phase counter, stored invoice chunks, tally.

    Keys live under ``connector:backfill:{run_id}:`` and expire after a week.
    """

    def __init__(self, context: AppContext, run_id: str) -> None:
        self.redis = context.redis
        self.run_id = run_id
        self.prefix = f"connector:backfill:{run_id}:"

    @classmethod
    def start(
        cls, context: AppContext, chunks: list[dict[str, Any]]
    ) -> tuple[BackfillRun, list[dict[str, Any]]]:
        """Record a new run; returns it and the chunks to enqueue now.

        Those are the contact chunks, or the invoice chunks at once when there are no contacts.
        """
        run = cls(context, uuid.uuid4().hex[:12])
        contacts = [c for c in chunks if c["phase"] == CONTACTS]
        invoices = [c for c in chunks if c["phase"] != CONTACTS]
        pipe = run.redis.pipeline()
        pipe.hset(
            run.prefix + "info",
            mapping={
                "chunks": len(chunks),
                "contact_chunks": len(contacts),
                "invoice_chunks": len(invoices),
                "records": sum(len(c["records"]) for c in chunks),
                "started": time.time(),
            },
        )
        pipe.set(run.prefix + "contacts_pending", len(contacts))
        if invoices:
            pipe.rpush(run.prefix + "invoices", *[json.dumps(c) for c in invoices])
        for key in ("info", "contacts_pending", "invoices"):
            pipe.expire(run.prefix + key, RUN_TTL)
        pipe.execute()
        if not contacts:
            return run, run.release_invoices()
        return run, contacts

    def release_invoices(self) -> list[dict[str, Any]]:
        """Take the stored invoice chunks (once: a second call gets none)."""
        pipe = self.redis.pipeline()
        pipe.lrange(self.prefix + "invoices", 0, -1)
        pipe.delete(self.prefix + "invoices")
        raw, _ = pipe.execute()
        return [json.loads(item) for item in raw]

    def finish(self, chunk: Mapping[str, Any], state: BackfillProgress) -> list[dict[str, Any]]:
        """Count a finished chunk; returns the invoice chunks when it was the last contact chunk.

        A chunk counted before (delivered twice) changes nothing.
        """
        number = int(chunk.get("number", -1))
        if not self.redis.sadd(self.prefix + "finished", number):
            return []
        pipe = self.redis.pipeline()
        pipe.expire(self.prefix + "finished", RUN_TTL)
        for field in ("done", "applied", "unchanged", "skipped", "review", "failed", "tokens"):
            pipe.hincrby(self.prefix + "tally", field, int(getattr(state, field)))
        pipe.hincrby(self.prefix + "tally", "deals_written", state.deals_written)
        pipe.expire(self.prefix + "tally", RUN_TTL)
        pipe.execute()
        if chunk["phase"] != CONTACTS:
            return []
        left = int(self.redis.decr(self.prefix + "contacts_pending"))
        return self.release_invoices() if left == 0 else []

    def status(self) -> dict[str, Any]:
        """Chunks planned and finished, and the summed outcomes so far."""
        info = {_text(k): _text(v) for k, v in self.redis.hgetall(self.prefix + "info").items()}
        tally = {_text(k): int(v) for k, v in self.redis.hgetall(self.prefix + "tally").items()}
        finished = int(self.redis.scard(self.prefix + "finished"))
        chunks = int(info.get("chunks", 0))
        return {
            "run_id": self.run_id,
            "chunks": chunks,
            "finished_chunks": finished,
            "records": int(info.get("records", 0)),
            "complete": bool(info) and finished >= chunks,
            **tally,
        }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
