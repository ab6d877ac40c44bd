"""``GET /metrics`` in the Prometheus text exposition format (version 0.0.4).

Everything is read at scrape time from the database, Redis and the broker, so any number of web
processes report the same figures and nothing is lost on restart. The values are current totals
of stored rows (rows can be pruned), hence gauges rather than counters. The endpoint is open
unless ``CONNECTOR_METRICS_TOKEN`` is set; then it wants ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import redis
import sqlalchemy as sa
from flask import Blueprint, Response, current_app, request

from connector import status
from connector.context import AppContext
from connector.errors import ConnectorError
from connector.models import (
    AuditEntry,
    Connection,
    DeadLetter,
    ReviewItem,
    WebhookEvent,
    utcnow,
)
from web import get_context

__all__ = ["CONTENT_TYPE", "Family", "bp", "collect", "render"]

bp = Blueprint("metrics", __name__)
logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Family:
    """One metric: name, help text, type, and samples of (labels, value)."""

    name: str
    help: str
    kind: str = "gauge"
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: str) -> None:
        """Add one sample (``suffix`` like ``_sum`` for summaries)."""
        self.samples.append((suffix, labels, value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def render(families: Iterable[Family]) -> str:
    """The text exposition of ``families``."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for suffix, labels, value in family.samples:
            label_text = ",".join(
                f'{key}="{_escape_label(str(val))}"' for key, val in sorted(labels.items())
            )
            braces = f"{{{label_text}}}" if label_text else ""
            lines.append(f"{family.name}{suffix}{braces} {_number(value)}")
    return "\n".join(lines) + "\n"


def _database_families(context: AppContext) -> list[Family]:
    webhooks = Family("connector_webhook_events", "Stored webhook events by source and status.")
    records = Family(
        "connector_sync_records",
        "Audit rows (records considered) by trigger and outcome; trigger=webhook are "
        "webhook-driven syncs.",
    )
    durations = Family(
        "connector_sync_duration_seconds",
        "Time spent per considered record, by outcome (from the audit trail).",
        "summary",
    )
    calls = Family("connector_api_calls", "API calls made while syncing, by direction and outcome.")
    tokens = Family(
        "connector_pipedrive_tokens_spent",
        "Pipedrive API tokens spent while syncing, by direction and outcome.",
    )
    dead = Family("connector_dead_letters", "Dead-lettered tasks by status.")
    review = Family("connector_review_items_open", "Review items waiting for a human.")
    reauth = Family(
        "connector_connection_needs_reauth",
        "1 when a connection's credentials were refused and it must be connected again.",
    )
    lag = Family(
        "connector_sync_lag_seconds",
        "Seconds since the connection's newest successful sync (audit row or cursor run).",
    )
    with context.session() as session:
        for source, state, count in session.execute(
            sa.select(WebhookEvent.source, WebhookEvent.status, sa.func.count()).group_by(
                WebhookEvent.source, WebhookEvent.status
            )
        ):
            webhooks.add(count, source=source, status=state)
        for trigger, outcome, count in session.execute(
            sa.select(AuditEntry.trigger, AuditEntry.outcome, sa.func.count()).group_by(
                AuditEntry.trigger, AuditEntry.outcome
            )
        ):
            records.add(count, trigger=trigger, outcome=outcome)
        for outcome, count, millis in session.execute(
            sa.select(
                AuditEntry.outcome,
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(AuditEntry.duration_ms), 0),
            ).group_by(AuditEntry.outcome)
        ):
            durations.add(count, "_count", outcome=outcome)
            durations.add(int(millis) / 1000, "_sum", outcome=outcome)
        for direction, outcome, api_calls, spent in session.execute(
            sa.select(
                AuditEntry.direction,
                AuditEntry.outcome,
                sa.func.coalesce(sa.func.sum(AuditEntry.api_calls), 0),
                sa.func.coalesce(sa.func.sum(AuditEntry.tokens_spent), 0),
            ).group_by(AuditEntry.direction, AuditEntry.outcome)
        ):
            calls.add(int(api_calls), direction=direction or "none", outcome=outcome)
            tokens.add(int(spent), direction=direction or "none", outcome=outcome)
        for state, count in session.execute(
            sa.select(DeadLetter.status, sa.func.count()).group_by(DeadLetter.status)
        ):
            dead.add(count, status=state)
        review.add(
            int(
                session.scalar(
                    sa.select(sa.func.count())
                    .select_from(ReviewItem)
                    .where(ReviewItem.status == "open")
                )
                or 0
            )
        )
        now = utcnow()
        for connection in session.scalars(sa.select(Connection).order_by(Connection.name)):
            labels = {"connection": connection.name, "system": connection.system}
            reauth.add(1 if connection.status == "needs_reauth" else 0, **labels)
            seconds = status.sync_lag(session, connection.id, now)
            if seconds is not None:
                lag.add(seconds, **labels)
    return [webhooks, records, durations, calls, tokens, dead, review, reauth, lag]


def _redis_families(context: AppContext, errors: Family) -> list[Family]:
    remaining = Family(
        "connector_pipedrive_budget_remaining", "Pipedrive tokens left today, per connection."
    )
    budget = Family("connector_pipedrive_budget", "Pipedrive daily token budget, per connection.")
    parked = Family("connector_parked_jobs", "Jobs parked until a Pipedrive budget resets.")
    depth = Family("connector_queue_depth", "Messages waiting in each Celery queue.")
    try:
        for row in status.budgets(context):
            parked.add(row.parked, connection=row.name)
            if row.status is not None:
                remaining.add(row.status.remaining, connection=row.name)
                budget.add(row.status.budget, connection=row.name)
            else:
                errors.add(1, part=f"budget:{row.name}")
    except (ConnectorError, redis.RedisError, sa.exc.SQLAlchemyError) as exc:
        logger.warning("metrics.budget-failed error=%s", type(exc).__name__)
        errors.add(1, part="budget")
    try:
        for queue, count in status.queue_depths(context).items():
            if count is not None:
                depth.add(count, queue=queue)
    except redis.RedisError as exc:
        logger.warning("metrics.queues-failed error=%s", type(exc).__name__)
        errors.add(1, part="queues")
    return [remaining, budget, parked, depth]


def collect(context: AppContext) -> list[Family]:
    """Every metric family; a part that cannot be read is reported in ``connector_scrape_error``."""
    errors = Family("connector_scrape_error", "1 for each part of this scrape that failed.")
    families: list[Family] = []
    try:
        families.extend(_database_families(context))
    except sa.exc.SQLAlchemyError as exc:
        logger.warning("metrics.database-failed error=%s", type(exc).__name__)
        errors.add(1, part="database")
    families.extend(_redis_families(context, errors))
    families.append(errors)
    return families


def _authorized() -> bool:
    token = get_context(current_app).settings.metrics_token
    if not token:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.reveal().encode())


@bp.get("/metrics")
def metrics() -> Response:
    """The metrics; 401 without the bearer token when one is configured."""
    if not _authorized():
        return Response(
            "a bearer token is required\n",
            status=401,
            mimetype="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    return Response(render(collect(get_context(current_app))), content_type=CONTENT_TYPE)
