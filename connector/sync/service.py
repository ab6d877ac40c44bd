"""What the workers and the receiver call: one function per task, each loading its own state.

Functions here take an :class:`~connector.context.AppContext` and primitive ids, open their own
database session, and commit what they did together with its audit rows.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

from connector import leases
from connector.context import AppContext
from connector.errors import BudgetExhaustedError, ConnectorError, RateLimitError
from connector.intake import OPEN_STATUSES, PARKED, QUEUED, Backpressure, backlog_size
from connector.logs import bound
from connector.models import Connection, DeadLetter, WebhookEvent, utcnow
from connector.sync.parking import due_jobs, park

__all__ = [
    "backpressure_check",
    "connection_ids",
    "count_delivery",
    "dead_letter",
    "hold_event",
    "park_task",
    "process_webhook_event",
    "prune_webhook_events",
    "pull_pipedrive",
    "reap_expired_leases",
    "reconcile_zoho",
    "refresh_zoho_tokens",
    "release_event",
    "release_parked",
    "replay",
    "sync_record",
]

logger = logging.getLogger(__name__)

DELIVERY_TTL = 24 * 3600
BACKPRESSURE_CACHE_SECONDS = 1.0
STUCK_AFTER = dt.timedelta(minutes=10)
PRUNE_AFTER = dt.timedelta(days=7)
PROCESS_TASK = "workers.tasks.process_webhook_event"


# Task plumbing ---------------------------------------------------------------------------


def count_delivery(context: AppContext, task_id: str) -> int:
    """Count one more delivery of a task; a task that kills its worker shows a growing count."""
    key = f"connector:deliveries:{task_id}"
    pipe = context.redis.pipeline()
    pipe.incr(key)
    pipe.expire(key, DELIVERY_TTL)
    count, _ = pipe.execute()
    return int(count)


def dead_letter(
    context: AppContext, *, task_name: str, args: dict[str, Any], error: str, attempts: int
) -> None:
    """Record a task that failed for good; ``connector retry`` replays it."""
    with context.session() as session:
        session.add(
            DeadLetter(task_name=task_name, args=args, error=error[:4000], attempts=attempts)
        )
    logger.error("task.dead-letter task=%s attempts=%d error=%s", task_name, attempts, error)


def park_task(
    context: AppContext, *, task_name: str, args: dict[str, Any], error: BudgetExhaustedError
) -> None:
    """Park a task until the budget resets (at least a minute from now)."""
    reset_at = error.reset_at or (utcnow() + dt.timedelta(minutes=15))
    # Arguments mix ids, names and triggers: JSON with sorted keys is a stable key for any of them.
    key = f"{task_name}:{json.dumps(args, sort_keys=True, default=str)}"
    with context.session() as session:
        park(
            session,
            task_name=task_name,
            args=args,
            dedupe_key=key[:200],
            not_before=max(reset_at, utcnow() + dt.timedelta(seconds=60)),
            reason=str(error),
        )
    logger.info("task.parked task=%s until=%s", task_name, reset_at.isoformat())


def release_parked(context: AppContext) -> list[tuple[str, dict[str, Any]]]:
    """Parked work that is due, plus stored webhook events that never reached a worker."""
    released: list[tuple[str, dict[str, Any]]] = []
    now = utcnow()
    with context.session() as session:
        if backpressure_check(context)(session, None) is None:
            for job in due_jobs(session, now):
                released.append((job.task_name, dict(job.args)))
            # Events stored while paused, or whose enqueue was lost (broker down, worker killed
            # before it acknowledged and the message expired): hand them out again.
            stuck = session.scalars(
                sa.select(WebhookEvent)
                .where(
                    sa.or_(
                        WebhookEvent.status == PARKED,
                        sa.and_(
                            WebhookEvent.status.in_(OPEN_STATUSES),
                            WebhookEvent.received_at < now - STUCK_AFTER,
                        ),
                    )
                )
                .order_by(WebhookEvent.id)
                .limit(1000)
            )
            for event in stuck:
                event.status = QUEUED
                event.received_at = now
                event.lease_owner = None
                event.lease_expires_at = leases.delivery_lease(now)
                released.append((PROCESS_TASK, {"args": [event.id], "kwargs": {}}))
    return released


def prune_webhook_events(context: AppContext, older_than: dt.timedelta = PRUNE_AFTER) -> int:
    """Delete finished webhook events older than the dedupe window."""
    cutoff = utcnow() - older_than
    with context.session() as session:
        result = session.execute(
            sa.delete(WebhookEvent).where(
                WebhookEvent.received_at < cutoff, WebhookEvent.status.not_in(OPEN_STATUSES)
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)


def connection_ids(context: AppContext, system: str) -> list[int]:
    """Ids of the active connections of one system."""
    with context.session() as session:
        return list(
            session.scalars(
                sa.select(Connection.id).where(
                    Connection.system == system, Connection.status == "active"
                )
            )
        )


def backpressure_check(
    context: AppContext,
) -> Callable[[Session, Connection | None], Backpressure | None]:
    """A check the receiver runs before queueing: budget spent, or backlog too deep."""

    def check(session: Session, connection: Connection | None) -> Backpressure | None:
        # The answer changes slowly; one computation per second serves every request in between.
        now = time.monotonic()
        at, cached = context.cache.get("backpressure", (-1e9, None))
        if now - at < BACKPRESSURE_CACHE_SECONDS:
            return cached  # type: ignore[no-any-return]
        value = _compute(session)
        context.cache["backpressure"] = (now, value)
        return value

    def _compute(session: Session) -> Backpressure | None:
        limit = context.settings.webhook_backlog_limit
        if backlog_size(session) >= limit:
            return Backpressure(reason=f"backlog above {limit} events", retry_after_seconds=60)
        for pipedrive in session.scalars(
            sa.select(Connection).where(Connection.system == "pipedrive")
        ):
            try:
                spent = _pipedrive_budget_spent(context, pipedrive)
            except redis.RedisError:
                # Without Redis the budget is unknown: store the event anyway (nothing is lost);
                # if the enqueue fails too, the sweeper hands the event out when Redis is back.
                logger.warning("webhook.backpressure.redis-unavailable")
                return None
            if spent is not None:
                return spent
        return None

    return check


def _pipedrive_budget_spent(context: AppContext, connection: Connection) -> Backpressure | None:
    from connector.pipedrive.service import budget_status

    try:
        status = budget_status(context, connection)
    except ConnectorError:
        return None
    if status is None or status.remaining > 0:
        return None
    seconds = max(1, int((status.reset_at - utcnow()).total_seconds()))
    return Backpressure(
        reason=f"Pipedrive daily budget spent until {status.reset_at.isoformat()}",
        retry_after_seconds=seconds,
        until=status.reset_at,
    )


def refresh_zoho_tokens(context: AppContext) -> int:
    """Refresh Zoho tokens older than 55 minutes; returns how many were refreshed."""
    from connector.zoho.service import refresh_due_tokens

    results = refresh_due_tokens(context)
    return sum(1 for result in results if getattr(result, "refreshed", False))


# Sync entry points -----------------------------------------------------------------------


def process_webhook_event(context: AppContext, event_id: int, *, task_id: str = "") -> str:
    """Sync the record a stored webhook event names, re-reading it through the API.

    The event is claimed first (see :mod:`connector.leases`): a delivery that finds it done, or
    running under a live lease, does nothing. While the sync runs a heartbeat renews the lease.
    On an error the lease is kept one more period (the task's retry then extends it, its dead
    letter or parking releases it), so a worker dying at any point leaves a lease that runs out.
    """
    from connector.sync.engine import engine_session

    me, now = leases.owner(), utcnow()
    with context.session() as session:
        event = session.get(WebhookEvent, event_id)
        if event is None:
            return "missing"
        if event.status in {"processed", "skipped"}:
            # A redelivered task: the work is already done.
            return event.status
        if not leases.claimable(event, now) or not leases.take(session, event, me, now):
            logger.info("webhook.claimed-elsewhere event=%s owner=%s", event_id, event.lease_owner)
            return "claimed"
        source, connection_id = event.source, event.connection_id
        entity, entity_id = event.entity, event.entity_id
        payload = dict(event.payload or {})
    with (
        bound(event_id=event_id, source=source, entity=entity, record_id=entity_id),
        leases.Heartbeat(context.engine, WebhookEvent, event_id, me),
    ):
        try:
            with engine_session(context, trigger="webhook", task_id=task_id) as engine:
                outcome = engine.handle_event(source, connection_id, entity, entity_id, payload)
        except (BudgetExhaustedError, RateLimitError):
            _set_event_status(context, event_id, QUEUED, keep_lease=me)
            raise
        except ConnectorError as exc:
            _set_event_status(context, event_id, "failed", str(exc), keep_lease=me)
            raise
    _set_event_status(context, event_id, "processed" if outcome != "skipped" else "skipped")
    return outcome


def _set_event_status(
    context: AppContext, event_id: int, status: str, error: str = "", *, keep_lease: str = ""
) -> None:
    with context.session() as session:
        event = session.get(WebhookEvent, event_id)
        if event is not None:
            event.status = status
            event.error = error[:2000]
            event.processed_at = utcnow()
            if keep_lease and event.lease_owner == keep_lease:
                event.lease_expires_at = utcnow() + dt.timedelta(seconds=leases.lease_seconds())
            else:
                event.lease_owner = event.lease_expires_at = None


def hold_event(context: AppContext, event_id: int, seconds: float) -> None:
    """The event's task retries in ``seconds``: keep this process's lease until then."""
    with context.session() as session:
        leases.hold(session, WebhookEvent, event_id, leases.owner(), seconds)


def release_event(context: AppContext, event_id: int) -> None:
    """The event's task was parked or dead-lettered: nobody owns it now."""
    with context.session() as session:
        event = session.get(WebhookEvent, event_id)
        status = "failed" if event is not None and event.status == leases.RUNNING else None
        leases.release(session, WebhookEvent, event_id, leases.owner(), status)


def reap_expired_leases(
    context: AppContext,
) -> list[tuple[str, dict[str, Any]]]:
    """Work whose owner died (lease ran out): the tasks to send again.

    Work that has been taken over too often is dead-lettered here instead.
    """
    with context.session() as session:
        reaped = leases.reap(session)
    for task_name, args in reaped.dead:
        dead_letter(
            context,
            task_name=task_name,
            args=args,
            error=f"taken over {leases.MAX_ATTEMPTS} times without finishing (worker lost?)",
            attempts=leases.MAX_ATTEMPTS,
        )
    return reaped.send


def sync_record(
    context: AppContext,
    connection_id: int,
    entity: str,
    record_id: str,
    *,
    trigger: str = "manual",
    task_id: str = "",
) -> str:
    """Sync one record by id, from whichever system ``connection_id`` belongs to."""
    from connector.sync.engine import engine_session

    with engine_session(context, trigger=trigger, task_id=task_id) as engine:
        return engine.sync_one(connection_id, entity, record_id)


def pull_pipedrive(context: AppContext, connection_id: int, *, task_id: str = "") -> int:
    """Pull organizations changed in Pipedrive since the cursor; returns how many were seen."""
    from connector.sync.engine import engine_session

    with engine_session(context, trigger="schedule", task_id=task_id) as engine:
        return engine.pull_pipedrive(connection_id)


def reconcile_zoho(context: AppContext, connection_id: int, *, task_id: str = "") -> int:
    """Catch Zoho changes whose webhooks were dropped; returns how many records were synced."""
    from connector.sync.engine import engine_session

    with engine_session(context, trigger="reconcile", task_id=task_id) as engine:
        return engine.reconcile_zoho(connection_id)


def replay(context: AppContext, task_name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Run a dead-lettered task's library function here and now (``connector retry``).

    Replaying inline keeps the library free of Celery and shows the result at once.
    """

    def sync_record_task(
        context: AppContext,
        connection_id: int,
        entity: str,
        record_id: str,
        trigger: str = "manual",
    ) -> str:
        # The task takes the trigger positionally; the library function takes it by keyword.
        return sync_record(context, connection_id, entity, record_id, trigger=trigger)

    table: dict[str, Callable[..., Any]] = {
        "workers.tasks.process_webhook_event": process_webhook_event,
        "workers.tasks.sync_record": sync_record_task,
        "workers.tasks.pull_pipedrive": pull_pipedrive,
        "workers.tasks.reconcile_zoho": reconcile_zoho,
        "workers.tasks.refresh_zoho_tokens": refresh_zoho_tokens,
        "workers.tasks.prune_webhook_events": prune_webhook_events,
    }
    function = table.get(task_name)
    if function is None:
        raise ConnectorError(f"{task_name} cannot be replayed")
    return function(context, *args, **kwargs)
