"""The audit trail: one row per considered record, written by the engine and read by operators."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from connector.logs import current_context, redact
from connector.models import AuditEntry

__all__ = ["AuditLog", "Trigger", "query_audit"]


class Trigger:
    """Why the engine looked at a record."""

    WEBHOOK = "webhook"
    SCHEDULE = "schedule"
    BACKFILL = "backfill"
    MANUAL = "manual"
    RECONCILE = "reconcile"
    REVIEW = "review"


def _clean(value: Any) -> Any:
    """Make a diff JSON-safe and free of anything secret-shaped."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact(str(value))


@dataclasses.dataclass
class AuditLog:
    """Writes audit rows in the caller's session (they commit with the work they describe)."""

    session: Session
    trigger: str
    task_id: str = ""
    request_id: str = ""

    def record(
        self,
        *,
        direction: str,
        entity: str,
        action: str,
        outcome: str,
        zoho_connection_id: int | None = None,
        pipedrive_connection_id: int | None = None,
        zoho_id: str = "",
        pipedrive_id: str = "",
        reason: str = "",
        diff: Mapping[str, Any] | None = None,
        error: str = "",
        tokens_spent: int = 0,
        api_calls: int = 0,
        duration_ms: float = 0,
    ) -> AuditEntry:
        """Add one audit row and return it."""
        context = current_context()
        entry = AuditEntry(
            trigger=self.trigger,
            direction=direction,
            entity=entity,
            action=action,
            outcome=outcome,
            zoho_connection_id=zoho_connection_id,
            pipedrive_connection_id=pipedrive_connection_id,
            zoho_id=str(zoho_id or ""),
            pipedrive_id=str(pipedrive_id or ""),
            reason=redact(reason),
            diff=_clean(dict(diff or {})),
            error=redact(error)[:2000],
            tokens_spent=int(tokens_spent),
            api_calls=int(api_calls),
            task_id=self.task_id or str(context.get("task_id", "")),
            request_id=self.request_id or str(context.get("request_id", "")),
            duration_ms=int(duration_ms),
        )
        self.session.add(entry)
        return entry


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """Measure a block; the yielded list holds the elapsed milliseconds afterwards."""
    holder: list[float] = [0.0]
    started = time.monotonic()
    try:
        yield holder
    finally:
        holder[0] = (time.monotonic() - started) * 1000


def query_audit(
    session: Session,
    *,
    limit: int = 50,
    entity: str | None = None,
    outcome: str | None = None,
    connection_id: int | None = None,
    text: str | None = None,
    since: dt.datetime | None = None,
    offset: int = 0,
) -> list[AuditEntry]:
    """The audit trail, newest first, filtered."""
    query = sa.select(AuditEntry).order_by(AuditEntry.id.desc())
    if entity:
        query = query.where(AuditEntry.entity == entity)
    if outcome:
        query = query.where(AuditEntry.outcome == outcome)
    if connection_id is not None:
        query = query.where(
            sa.or_(
                AuditEntry.zoho_connection_id == connection_id,
                AuditEntry.pipedrive_connection_id == connection_id,
            )
        )
    if text:
        pattern = f"%{text}%"
        query = query.where(
            sa.or_(
                AuditEntry.reason.ilike(pattern),
                AuditEntry.error.ilike(pattern),
                AuditEntry.zoho_id.ilike(pattern),
                AuditEntry.pipedrive_id.ilike(pattern),
                AuditEntry.action.ilike(pattern),
            )
        )
    if since is not None:
        query = query.where(AuditEntry.created_at >= since)
    return list(session.scalars(query.offset(offset).limit(limit)))
