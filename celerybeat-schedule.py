"""Celery Beat's schedule, as data only.

Loaded by path from workers/celery_app.py (a hyphenated file name cannot be imported). Beat keeps
its own state file elsewhere (``-s var/beat-state``): Celery's default state file name is
``celerybeat-schedule`` too. Intervals can be changed with the environment variables named below.
"""

import os
from datetime import timedelta


def _minutes(name: str, default: float) -> timedelta:
    return timedelta(minutes=float(os.environ.get(name, default)))


def _seconds(name: str, default: float) -> timedelta:
    return timedelta(seconds=float(os.environ.get(name, default)))


beat_schedule = {
    # Take over the work of dead workers (leases that ran out). On the webhooks queue, which
    # never waits behind backfill chunks or maintenance.
    "reap-expired-leases": {
        "task": "workers.tasks.reap_expired_leases",
        "schedule": _seconds("CONNECTOR_REAPER_SECONDS", 30),
        "options": {"queue": "webhooks", "expires": 25},
    },
    # Pull Pipedrive organizations changed since each connection's cursor.
    "pull-pipedrive": {
        "task": "workers.tasks.pull_pipedrive_all",
        "schedule": _minutes("CONNECTOR_PIPEDRIVE_POLL_MINUTES", 5),
        "options": {"queue": "pulls", "expires": 240},
    },
    # Refresh every Zoho access token older than 55 minutes (Zoho expires them at 60).
    "refresh-zoho-tokens": {
        "task": "workers.tasks.refresh_zoho_tokens",
        "schedule": _minutes("CONNECTOR_ZOHO_REFRESH_CHECK_MINUTES", 1),
        "options": {"queue": "maintenance", "expires": 50},
    },
    # Catch what Zoho's webhooks dropped: invoices by last_modified_time, contacts by full diff.
    "reconcile-zoho": {
        "task": "workers.tasks.reconcile_zoho_all",
        "schedule": _minutes("CONNECTOR_ZOHO_RECONCILE_MINUTES", 60),
        "options": {"queue": "pulls", "expires": 1800},
    },
    # Hand parked work back to the queues once the Pipedrive budget has reset.
    "release-parked": {
        "task": "workers.tasks.release_parked",
        "schedule": _minutes("CONNECTOR_RELEASE_PARKED_MINUTES", 1),
        "options": {"queue": "maintenance", "expires": 50},
    },
    # Forget processed webhook events after the dedupe window (7 days by default).
    "prune-webhook-events": {
        "task": "workers.tasks.prune_webhook_events",
        "schedule": _minutes("CONNECTOR_PRUNE_MINUTES", 60 * 6),
        "options": {"queue": "maintenance", "expires": 3600},
    },
}
