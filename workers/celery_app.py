"""The Celery app, built from the same settings as the web app.

Queues keep webhook-driven work from waiting behind backfills: ``webhooks`` (fast, per event),
``sync`` (per record work), ``pulls`` (scheduled pulls, reconciliation, backfill pages) and
``maintenance`` (token refresh, parked work, pruning).
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path
from typing import Any

from celery import Celery
from kombu.entity import Queue

from connector.errors import ConfigError
from connector.mapping.config import load_config
from connector.settings import Settings

SCHEDULE_FILE = Path(__file__).resolve().parent.parent / "celerybeat-schedule.py"

QUEUES = ("webhooks", "sync", "pulls", "maintenance")

# A task is killed after TASK_TIME_LIMIT (a chunk is bounded by its size, a webhook by its
# record). The broker hands an unacknowledged message out again after VISIBILITY_TIMEOUT: longer
# than the longest task and any retry countdown (15 minutes at most; longer waits are parked in
# SQL), so a running task is never delivered twice. A worker that dies is not waited for that
# long: its leases run out within 90 s and the reaper takes its work over (connector/leases.py).
TASK_SOFT_TIME_LIMIT = 20 * 60
TASK_TIME_LIMIT = 25 * 60
VISIBILITY_TIMEOUT = 30 * 60


def load_beat_schedule(path: Path = SCHEDULE_FILE) -> dict[str, Any]:
    """Read ``beat_schedule`` from the hyphenated schedule file."""
    namespace = runpy.run_path(str(path))
    schedule = namespace["beat_schedule"]
    assert isinstance(schedule, dict)
    return schedule


def make_celery(settings: Settings) -> Celery:
    """Build the Celery app for ``settings``."""
    app = Celery("connector", include=["workers.tasks"])
    broker = settings.celery_broker_url
    app.conf.update(
        broker_url=broker,
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="sync",
        task_queues=[Queue(name) for name in QUEUES],
        task_routes={
            "workers.tasks.process_webhook_event": {"queue": "webhooks"},
            "workers.tasks.sync_record": {"queue": "sync"},
            "workers.tasks.pull_pipedrive": {"queue": "pulls"},
            "workers.tasks.pull_pipedrive_all": {"queue": "pulls"},
            "workers.tasks.reconcile_zoho": {"queue": "pulls"},
            "workers.tasks.reconcile_zoho_all": {"queue": "pulls"},
            "workers.tasks.backfill_page": {"queue": "pulls"},
            "workers.tasks.refresh_zoho_tokens": {"queue": "maintenance"},
            "workers.tasks.release_parked": {"queue": "maintenance"},
            "workers.tasks.prune_webhook_events": {"queue": "maintenance"},
            # On the fast queue: a reaper behind hours of backfill chunks would reap nothing.
            "workers.tasks.reap_expired_leases": {"queue": "webhooks"},
        },
        task_soft_time_limit=TASK_SOFT_TIME_LIMIT,
        task_time_limit=TASK_TIME_LIMIT,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_max_tasks_per_child=1000,
        beat_schedule=load_beat_schedule(),
        timezone="UTC",
        enable_utc=True,
    )
    return app


def _checked_settings() -> Settings:
    """The settings and the mapping file, validated when the worker or Beat starts.

    A misconfiguration stops the process at once with every problem listed, instead of failing
    task by task later.
    """
    try:
        settings = Settings.from_env(dotenv_path=os.environ.get("CONNECTOR_DOTENV", ".env"))
        load_config(settings.config_path or None)
    except ConfigError as exc:
        # A traceback would bury the list the operator needs.
        raise SystemExit(f"connector: refusing to start: {exc}") from None
    return settings


celery_app = make_celery(_checked_settings())
app = celery_app
