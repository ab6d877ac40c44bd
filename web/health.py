"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, current_app

from web import get_context

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[dict[str, str], int]:
    """The process is up."""
    return {"status": "ok"}, 200


@bp.get("/readyz")
def readyz() -> tuple[dict[str, Any], int]:
    """Database, Redis and the broker are reachable."""
    context = get_context(current_app)
    checks: dict[str, str] = {}
    try:
        with context.engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        checks["database"] = "ok"
    except sa.exc.SQLAlchemyError as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        context.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["redis"] = f"error: {type(exc).__name__}"
    checks["broker"] = _broker_check(context.settings.celery_broker_url, context)
    ready = all(value == "ok" for value in checks.values())
    return {"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503


def _broker_check(url: str, context: Any) -> str:
    if url == context.settings.redis_url:
        return "ok" if context.redis.ping() else "error"
    try:
        from kombu.connection import Connection

        with Connection(url, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1)
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return f"error: {type(exc).__name__}"
