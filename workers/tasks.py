"""Celery tasks: take ids, load state, call one connector function, let it write the audit row.

Failure handling lives in :class:`ConnectorTask`, shared by every task:
- a retryable API error is retried with exponential backoff and full jitter, up to a cap;
- a spent Pipedrive budget parks the work in SQL until the reset (no long countdowns: they
  outlive the broker's visibility timeout and get redelivered in a loop);
- anything else, or the retry cap, writes a dead letter that ``connector retry`` replays;
- a task that keeps killing its worker (late ack + redelivery) is counted per task id in Redis
  and dead-lettered after a few deliveries instead of looping forever.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import task_postrun, task_prerun, worker_process_init

from connector import logs
from connector.context import AppContext
from connector.errors import BudgetExhaustedError, RetryableError
from connector.sync import service
from workers.celery_app import celery_app

logger = logging.getLogger(__name__)

MAX_RETRIES = 8
MAX_COUNTDOWN = 15 * 60
MAX_DELIVERIES = 5

_context: AppContext | None = None


def context() -> AppContext:
    """This worker process's AppContext (built after fork, once)."""
    global _context
    if _context is None:
        _context = AppContext.from_env()
        logs.configure_logging(_context.settings.log_level, _context.settings.log_format)
    return _context


@worker_process_init.connect
def _reset_after_fork(**_: Any) -> None:
    # Pools inherited from the parent must not be shared across processes.
    global _context
    if _context is not None:
        _context.close()
    _context = None


@task_prerun.connect
def _bind_task(task_id: str | None = None, task: Task | None = None, **_: Any) -> None:
    logs.clear()
    logs.bind(task_id=task_id, task=getattr(task, "name", None))


@task_postrun.connect
def _unbind_task(**_: Any) -> None:
    logs.clear()


class ConnectorTask(Task):  # type: ignore[misc]
    """Retry, park, dead-letter and poison guard for every connector task."""

    abstract = True
    acks_late = True
    ignore_result = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        task_id = self.request.id or ""
        if task_id and not self.request.called_directly:
            deliveries = service.count_delivery(context(), task_id)
            if deliveries > MAX_DELIVERIES:
                service.dead_letter(
                    context(),
                    task_name=self.name,
                    args={"args": list(args), "kwargs": kwargs},
                    error=f"delivered {deliveries} times without finishing (worker lost?)",
                    attempts=deliveries,
                )
                self.release_lease(args, "dead")
                return None
        try:
            return super().__call__(*args, **kwargs)
        except BudgetExhaustedError as exc:
            service.park_task(
                context(),
                task_name=self.name,
                args={"args": list(args), "kwargs": kwargs},
                error=exc,
            )
            self.release_lease(args, "queued")
            return None
        except (RetryableError, SoftTimeLimitExceeded) as exc:
            # A task past its soft time limit has committed what it did (a chunk commits every
            # few records and skips them on its next run): it goes on in a fresh delivery.
            if self.request.called_directly or self.request.retries >= MAX_RETRIES:
                self._dead_letter(args, kwargs, exc)
                return None
            countdown = self._countdown(exc)
            self.hold_lease(args, countdown)
            raise self.retry(exc=exc, countdown=countdown) from exc
        except Exception as exc:
            self._dead_letter(args, kwargs, exc)
            raise

    # Tasks whose work has a lease row (connector/leases.py) keep it across a retry's countdown
    # and give it up when the work is parked or dead-lettered.
    def hold_lease(self, args: tuple[Any, ...], countdown: float) -> None:
        """The task retries in ``countdown`` seconds."""

    def release_lease(self, args: tuple[Any, ...], status: str) -> None:
        """The task was parked (``queued``) or dead-lettered (``dead``)."""

    def _countdown(self, exc: BaseException) -> float:
        hint = getattr(exc, "retry_after", None)
        ceiling = min(MAX_COUNTDOWN, 2 ** (self.request.retries + 1))
        base = float(hint) if hint else 0.0
        # Full jitter over the exponential ceiling, never below the server's hint.
        return min(MAX_COUNTDOWN, base + random.uniform(0, ceiling))

    def _dead_letter(self, args: Any, kwargs: Any, exc: BaseException) -> None:
        self.release_lease(tuple(args), "dead")
        service.dead_letter(
            context(),
            task_name=self.name,
            args={"args": list(args), "kwargs": kwargs},
            error=f"{type(exc).__name__}: {exc}",
            attempts=self.request.retries + 1,
        )


class EventTask(ConnectorTask):
    """A webhook event's task: the event row is its lease."""

    abstract = True

    def hold_lease(self, args: tuple[Any, ...], countdown: float) -> None:
        service.hold_event(context(), int(args[0]), countdown)

    def release_lease(self, args: tuple[Any, ...], status: str) -> None:
        service.release_event(context(), int(args[0]))


class ChunkTask(ConnectorTask):
    """A backfill chunk's task: its ``backfill_chunks`` row is its lease."""

    abstract = True

    def hold_lease(self, args: tuple[Any, ...], countdown: float) -> None:
        from connector.sync.distributed import hold_chunk

        hold_chunk(context(), str(args[0]), int(args[1].get("number", -1)), countdown)

    def release_lease(self, args: tuple[Any, ...], status: str) -> None:
        from connector.sync.distributed import release_chunk

        release_chunk(context(), str(args[0]), int(args[1].get("number", -1)), status)


def _task(base: type[ConnectorTask] = ConnectorTask, **options: Any) -> Any:
    return celery_app.task(base=base, bind=True, **options)


@_task(base=EventTask, name="workers.tasks.process_webhook_event")
def process_webhook_event(self: Task, event_id: int) -> str:
    """Sync what one stored webhook event refers to."""
    return service.process_webhook_event(context(), event_id, task_id=self.request.id or "")


@_task(name="workers.tasks.sync_record")
def sync_record(self: Task, connection_id: int, entity: str, record_id: str, trigger: str) -> str:
    """Sync one record by id (manual, review or reconciliation)."""
    return service.sync_record(
        context(), connection_id, entity, record_id, trigger=trigger, task_id=self.request.id or ""
    )


@_task(name="workers.tasks.pull_pipedrive")
def pull_pipedrive(self: Task, connection_id: int) -> int:
    """Pull Pipedrive organizations changed since the cursor."""
    return service.pull_pipedrive(context(), connection_id, task_id=self.request.id or "")


@_task(name="workers.tasks.pull_pipedrive_all")
def pull_pipedrive_all(self: Task) -> int:
    """Fan out one pull per Pipedrive connection."""
    ids = service.connection_ids(context(), "pipedrive")
    for connection_id in ids:
        pull_pipedrive.delay(connection_id)
    return len(ids)


@_task(name="workers.tasks.reconcile_zoho")
def reconcile_zoho(self: Task, connection_id: int) -> int:
    """Catch Zoho changes whose webhooks were dropped."""
    return service.reconcile_zoho(context(), connection_id, task_id=self.request.id or "")


@_task(name="workers.tasks.reconcile_zoho_all")
def reconcile_zoho_all(self: Task) -> int:
    """Fan out one reconciliation per Zoho connection."""
    ids = service.connection_ids(context(), "zoho")
    for connection_id in ids:
        reconcile_zoho.delay(connection_id)
    return len(ids)


@_task(name="workers.tasks.refresh_zoho_tokens")
def refresh_zoho_tokens(self: Task) -> int:
    """Refresh Zoho access tokens older than 55 minutes (single-flight across processes)."""
    return service.refresh_zoho_tokens(context())


@_task(name="workers.tasks.release_parked")
def release_parked(self: Task) -> int:
    """Re-enqueue parked work whose time has come."""
    released = service.release_parked(context())
    for task_name, args in released:
        celery_app.send_task(task_name, args=args.get("args", []), kwargs=args.get("kwargs", {}))
    return len(released)


@_task(name="workers.tasks.reap_expired_leases")
def reap_expired_leases(self: Task) -> int:
    """Send again the work of dead workers: events and chunks whose lease ran out."""
    sent = service.reap_expired_leases(context())
    for task_name, args in sent:
        celery_app.send_task(task_name, args=args.get("args", []), kwargs=args.get("kwargs", {}))
    return len(sent)


@_task(name="workers.tasks.prune_webhook_events")
def prune_webhook_events(self: Task) -> int:
    """Delete processed webhook events older than the dedupe window."""
    return service.prune_webhook_events(context())


@_task(base=ChunkTask, name="workers.tasks.backfill_page")
def backfill_chunk(self: Task, run_id: str, chunk: dict[str, Any]) -> int:
    """Sync one chunk of a distributed backfill; the last contact chunk releases the invoices."""
    from connector.sync.distributed import (
        BackfillRun,
        chunk_done,
        queue_chunks,
        run_leased_chunk,
    )

    state = run_leased_chunk(context(), run_id, chunk, task_id=self.request.id or "")
    if state is None:
        return 0  # done already, or running in a live process
    follow_ups = BackfillRun(context(), run_id).finish(chunk, state)
    queue_chunks(context(), run_id, follow_ups)
    for follow_up in follow_ups:
        backfill_chunk.delay(run_id, follow_up)
    chunk_done(context(), run_id, int(chunk.get("number", -1)))
    return state.done
