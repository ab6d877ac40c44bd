"""Liveness and readiness.

``/healthz`` says the process is alive; ``/readyz`` says it can do its work: the database, Redis
and the broker answer, and the configured key decrypts every stored connection (a wrong
``CONNECTOR_SECRET_KEY`` would otherwise pass every other check and fail every webhook).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, current_app

from connector.context import AppContext
from connector.errors import CredentialError
from web import get_context

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[dict[str, str], int]:
    """The process is up."""
    return {"status": "ok"}, 200


@bp.get("/readyz")
def readyz() -> tuple[dict[str, Any], int]:
    """Database, Redis, the broker and the secret key are all usable."""
    context = get_context(current_app)
    checks: dict[str, str] = {"database": _database_check(context)}
    checks["connections"] = (
        _connections_check(context) if checks["database"] == "ok" else "unknown: no database"
    )
    checks["redis"] = _redis_check(context)
    checks["broker"] = _broker_check(context.settings.celery_broker_url, context, checks["redis"])
    ready = all(value == "ok" for value in checks.values())
    return {"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503


def _database_check(context: AppContext) -> str:
    try:
        with context.engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        return f"error: {type(exc).__name__}"
    return "ok"


def _connections_check(context: AppContext) -> str:
    """Decrypt every connection's stored secrets (names only in the answer, never values)."""
    try:
        with context.session() as session:
            store = context.store(session)
            for connection in store.list():
                try:
                    store.credentials(connection)
                    store.webhook_secret(connection)
                except CredentialError:
                    return f"error: the key cannot decrypt connection {connection.name}"
    except sa.exc.SQLAlchemyError as exc:
        return f"error: {type(exc).__name__}"
    return "ok"


def _redis_check(context: AppContext) -> str:
    try:
        context.redis.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return f"error: {type(exc).__name__}"
    return "ok"


def _broker_check(url: str, context: AppContext, redis_check: str) -> str:
    if url == context.settings.redis_url:
        return redis_check
    try:
        from kombu.connection import Connection

        with Connection(url, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1)
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return f"error: {type(exc).__name__}"
