"""Work parked durably in SQL until a time (a spent Pipedrive budget's reset).

Celery countdowns longer than the broker's visibility timeout are redelivered in a loop, so work
that must wait hours is written here instead, and Beat releases it when it is due.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from connector.models import ParkedJob, utcnow

__all__ = ["due_jobs", "park", "parked_count"]


def park(
    session: Session,
    *,
    task_name: str,
    args: Mapping[str, Any],
    dedupe_key: str,
    not_before: dt.datetime,
    reason: str,
    connection_id: int | None = None,
) -> ParkedJob:
    """Park a job; parking the same job twice keeps one row (the later release time wins)."""
    existing = session.scalar(sa.select(ParkedJob).where(ParkedJob.dedupe_key == dedupe_key))
    if existing is not None:
        existing.status = "parked"
        existing.not_before = max(existing.not_before, not_before)
        existing.reason = reason
        existing.args = dict(args)
        existing.released_at = None
        session.flush()
        return existing
    job = ParkedJob(
        task_name=task_name,
        args=dict(args),
        dedupe_key=dedupe_key,
        not_before=not_before,
        reason=reason,
        connection_id=connection_id,
    )
    # A savepoint keeps a concurrent insert of the same key from failing the caller's work.
    try:
        with session.begin_nested():
            session.add(job)
    except sa.exc.IntegrityError:
        return park(
            session,
            task_name=task_name,
            args=args,
            dedupe_key=dedupe_key,
            not_before=not_before,
            reason=reason,
            connection_id=connection_id,
        )
    return job


def due_jobs(session: Session, now: dt.datetime | None = None, limit: int = 500) -> list[ParkedJob]:
    """Parked jobs whose time has come, oldest first, marked released in this session."""
    now = now or utcnow()
    query = (
        sa.select(ParkedJob)
        .where(ParkedJob.status == "parked", ParkedJob.not_before <= now)
        .order_by(ParkedJob.not_before, ParkedJob.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        # Two Beat-triggered releases must not hand out the same job twice.
        query = query.with_for_update(skip_locked=True)
    jobs = list(session.scalars(query))
    for job in jobs:
        job.status = "released"
        job.released_at = now
    session.flush()
    return jobs


def parked_count(session: Session, connection_id: int | None = None) -> int:
    """How many jobs are waiting."""
    query = sa.select(sa.func.count()).select_from(ParkedJob).where(ParkedJob.status == "parked")
    if connection_id is not None:
        query = query.where(ParkedJob.connection_id == connection_id)
    return int(session.scalar(query) or 0)
