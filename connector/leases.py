"""Leases on work a worker process has claimed: webhook events and backfill chunks.

A worker killed with its whole process group (an out-of-memory kill, a dyno restart) acknowledges
nothing and cleans nothing up: its messages come back only after the broker's visibility timeout
(30 minutes). So the row of the work it runs records who owns it (``host:pid``) and until when;
a heartbeat thread moves the expiry forward while the task runs (one UPDATE every
``CONNECTOR_HEARTBEAT_SECONDS``, 25 by default), and the reaper (:func:`reap`, on Beat every
30 seconds) hands out again whatever lease has run out (``CONNECTOR_LEASE_SECONDS``, 90 by
default). A task waiting for its retry keeps its lease for the countdown plus one lease period.

Work handed to the broker and not claimed yet has a lease too, with no owner: the delivery lease
(two lease periods, :func:`delivery_seconds`). A message the dead worker had received but not
started comes back only after the visibility timeout; when the delivery lease runs out first the
reaper sends the work again, and whichever delivery claims it first runs it.

Taking over twice is harmless: the engine skips what its links and echo hashes show as done,
and a claim is a conditional UPDATE, so of two deliveries of the same work only one runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import socket
import threading
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from connector.models import BackfillChunk, WebhookEvent, utcnow

__all__ = [
    "CHUNK_TASK",
    "EVENT_TASK",
    "RUNNING",
    "Heartbeat",
    "Reaped",
    "claimable",
    "delivery_lease",
    "delivery_seconds",
    "heartbeat_seconds",
    "hold",
    "lease_seconds",
    "owner",
    "owner_is_dead",
    "reap",
    "release",
    "take",
]

logger = logging.getLogger(__name__)

RUNNING = "running"
DEFAULT_LEASE_SECONDS = 90.0
DEFAULT_HEARTBEAT_SECONDS = 25.0
# Work taken over this many times keeps killing its workers: dead-letter it instead of looping.
MAX_ATTEMPTS = 20
REAP_LIMIT = 500
EVENT_TASK = "workers.tasks.process_webhook_event"
CHUNK_TASK = "workers.tasks.backfill_page"
# Statuses after which a row is nobody's work any more.
FINAL = {WebhookEvent: ("processed", "skipped"), BackfillChunk: ("done", "dead")}

Leased = WebhookEvent | BackfillChunk
M = TypeVar("M", WebhookEvent, BackfillChunk)


def lease_seconds() -> float:
    """How long a lease lasts without a heartbeat (read at each call: tests lower it)."""
    return float(os.environ.get("CONNECTOR_LEASE_SECONDS", DEFAULT_LEASE_SECONDS))


def heartbeat_seconds() -> float:
    """How often a running task renews its lease."""
    return float(os.environ.get("CONNECTOR_HEARTBEAT_SECONDS", DEFAULT_HEARTBEAT_SECONDS))


def delivery_seconds() -> float:
    """How long work handed to the broker may wait unclaimed before it is sent again."""
    return 2 * lease_seconds()


def delivery_lease(now: dt.datetime | None = None) -> dt.datetime:
    """The expiry of a delivery lease starting ``now``."""
    return (now or utcnow()) + dt.timedelta(seconds=delivery_seconds())


def owner() -> str:
    """This process as a lease owner: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_is_dead(lease_owner: str | None) -> bool:
    """True only when the owner is a process of this host that no longer exists.

    A redelivery after a pool process was SIGKILLed (its parent lives and requeues the message at
    once) can then take over without waiting for the lease. Another host's owner is never
    judged from here: only its lease expiry says it is gone.
    """
    if not lease_owner or ":" not in lease_owner:
        return False
    host, _, pid = lease_owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claimable(row: Leased, now: dt.datetime) -> bool:
    """Whether a delivery may take this row (not finished, and not held by a live owner)."""
    if row.status in FINAL[type(row)]:
        return False
    if row.status != RUNNING or row.lease_expires_at is None:
        return True
    return row.lease_expires_at <= now or owner_is_dead(row.lease_owner)


def take(session: Session, row: M, me: str, now: dt.datetime) -> bool:
    """Claim ``row`` as seen; of two racing claims exactly one wins.

    ``attempts`` grows with every claim, so it serves as the row's version: the UPDATE only
    matches the row as it was read.
    """
    model = type(row)
    result = session.execute(
        sa.update(model)
        .where(model.id == row.id, model.attempts == row.attempts, model.status == row.status)
        .values(
            status=RUNNING,
            lease_owner=me,
            lease_expires_at=now + dt.timedelta(seconds=lease_seconds()),
            attempts=model.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )
    won = _rowcount(result) == 1
    if won:
        session.refresh(row)
    return won


def hold(session: Session, model: type[Leased], row_id: int, me: str, seconds: float) -> None:
    """Keep our lease while the task waits ``seconds`` for its retry (plus one lease period).

    The row leaves ``running``, so the retry may be claimed by any process; if none comes
    before the lease runs out, the reaper sends it again.
    """
    until = utcnow() + dt.timedelta(seconds=seconds + lease_seconds())
    values: dict[str, Any] = {"lease_expires_at": until}
    if model is BackfillChunk:
        values["status"] = "queued"
    session.execute(
        sa.update(model)
        .where(model.id == row_id, model.lease_owner == me)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def release(
    session: Session, model: type[Leased], row_id: int, me: str, status: str | None = None
) -> None:
    """Give our lease up (the work is done, parked or dead-lettered)."""
    values: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}
    if status is not None:
        values["status"] = status
    session.execute(
        sa.update(model)
        .where(model.id == row_id, model.lease_owner == me)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


class Heartbeat:
    """While entered, renew one row's lease every ``heartbeat_seconds()`` from a thread.

    One UPDATE per beat, on its own pooled connection, so a task busy in a long API call or a
    rate-limit sleep keeps its lease. A beat that finds the lease gone (reaped because this
    process stalled past the lease) logs it; the work stays safe to finish twice.
    """

    def __init__(
        self,
        engine: Engine,
        model: type[Leased],
        row_id: int,
        me: str,
        *,
        interval: float | None = None,
    ) -> None:
        self.engine = engine
        self.model = model
        self.row_id = row_id
        self.me = me
        self.interval = interval if interval is not None else heartbeat_seconds()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)
        self.beats = 0

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def beat(self) -> bool:
        """Renew the lease once; False when it is no longer ours."""
        model = self.model
        with self.engine.begin() as connection:
            result = connection.execute(
                sa.update(model.__table__)  # type: ignore[arg-type]
                .where(
                    model.__table__.c.id == self.row_id,
                    model.__table__.c.lease_owner == self.me,
                    model.__table__.c.status == RUNNING,
                )
                .values(lease_expires_at=utcnow() + dt.timedelta(seconds=lease_seconds()))
            )
        self.beats += 1
        return _rowcount(result) == 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self.beat() and not self._stop.is_set():
                    logger.warning(
                        "lease.lost table=%s id=%s owner=%s",
                        self.model.__tablename__,
                        self.row_id,
                        self.me,
                    )
                    return
            except sa.exc.SQLAlchemyError as exc:
                # The database is away for a moment; the next beat tries again.
                logger.warning(
                    "lease.heartbeat-failed table=%s error=%s", self.model.__tablename__, exc
                )


@dataclasses.dataclass
class Reaped:
    """What a reaper pass found: tasks to send again, and tasks to dead-letter."""

    send: list[tuple[str, dict[str, Any]]] = dataclasses.field(default_factory=list)
    dead: list[tuple[str, dict[str, Any]]] = dataclasses.field(default_factory=list)


def reap(session: Session, now: dt.datetime | None = None) -> Reaped:
    """Hand out again the work whose lease ran out.

    Each row is reset in this transaction (status back to queued, owner cleared, a delivery
    lease), so a second reaper running at the same time finds nothing to reap. Rows already claimed
    ``MAX_ATTEMPTS`` times are marked failed and returned in ``dead`` instead.
    """
    now = now or utcnow()
    reaped = Reaped()
    rows: list[Leased] = [*_expired(session, WebhookEvent, now)]
    rows += _expired(session, BackfillChunk, now)
    for row in rows:
        task, args = _task_of(row)
        logger.warning(
            "lease.expired table=%s id=%s owner=%s expired=%s",
            row.__tablename__,
            row.id,
            row.lease_owner,
            row.lease_expires_at.isoformat() if row.lease_expires_at else "",
        )
        row.lease_owner = None
        if row.attempts >= MAX_ATTEMPTS:
            row.status = "failed" if isinstance(row, WebhookEvent) else "dead"
            row.lease_expires_at = None
            reaped.dead.append((task, args))
            continue
        row.status = "queued"
        # The message sent now may be lost too (a worker dying before it claims it).
        row.lease_expires_at = delivery_lease(now)
        reaped.send.append((task, args))
    return reaped


def _expired(session: Session, model: type[M], now: dt.datetime) -> list[M]:
    # SKIP LOCKED: rows a concurrent reaper or claim is changing are left to the next pass.
    return list(
        session.scalars(
            sa.select(model)
            .where(model.lease_expires_at <= now, model.status.not_in(FINAL[model]))
            .order_by(model.id)
            .limit(REAP_LIMIT)
            .with_for_update(skip_locked=True)
        )
    )


def _task_of(row: Leased) -> tuple[str, dict[str, Any]]:
    if isinstance(row, WebhookEvent):
        return EVENT_TASK, {"args": [row.id], "kwargs": {}}
    return CHUNK_TASK, {"args": [row.run_id, dict(row.chunk)], "kwargs": {}}
