"""Webhook routes: the ladder lives in connector.intake; this module only speaks HTTP."""

from __future__ import annotations

import logging
from collections.abc import Callable

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy.orm import Session

from connector.errors import CredentialError
from connector.intake import (
    ConnectionCache,
    IntakeResult,
    receive_pipedrive,
    receive_zoho,
    vendor_totals_enabled,
)
from connector.sync import service
from connector.zoho.webhooks import decode_pairs
from web import get_context

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")
logger = logging.getLogger(__name__)


def _answer(result: IntakeResult, source: str) -> Response:
    response = jsonify({"status": result.status, "message": result.message})
    response.status_code = result.status
    for key, value in result.headers.items():
        response.headers[key] = value
    if result.retry_after is not None:
        response.headers["Retry-After"] = str(result.retry_after)
    return response


def _connections() -> ConnectionCache:
    cache = current_app.extensions["connector.connections"]
    assert isinstance(cache, ConnectionCache)
    return cache


def _enqueue_after_commit(result: IntakeResult) -> None:
    if result.enqueue and result.event_id is not None:
        enqueue = current_app.extensions["connector.enqueue"]
        try:
            enqueue("workers.tasks.process_webhook_event", [result.event_id], "webhooks")
        except Exception:  # the event is stored; the sweeper re-enqueues it later
            logger.exception("webhook.enqueue-failed event_id=%s", result.event_id)


def _receive(work: Callable[[Session], IntakeResult]) -> IntakeResult:
    """Run the intake in a transaction, once more if the database connection was lost.

    The receiver's pool does not ping connections before use (a round trip per webhook), so
    the first use of a pooled connection after a database restart fails; SQLAlchemy then
    discards the pool and the second attempt gets a fresh connection. If the commit itself was
    cut off, the second attempt finds the event stored and answers "duplicate"; the sweeper
    queues it, so nothing is lost.
    """
    context = get_context(current_app)
    try:
        with context.autocommit_session() as session:
            return work(session)
    except sa.exc.DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        logger.warning("webhook.database-reconnect")
    with context.autocommit_session() as session:
        return work(session)


@bp.post("/zoho/<connection>")
def zoho(connection: str) -> Response:
    """Zoho Books webhook: HMAC-verified before anything is parsed."""
    context = get_context(current_app)
    raw = request.get_data(cache=True)
    # Every query pair, repeated keys too: they are all signed, decoded as the form pairs are.
    query = decode_pairs(request.query_string)
    result = _receive(
        lambda session: receive_zoho(
            session,
            context.store(session),
            connection,
            raw_body=raw,
            content_type=request.mimetype or "",
            query=query,
            signature=request.headers.get("X-Zoho-Webhook-Signature"),
            backpressure=service.backpressure_check(context),
            sync_vendor_bills=vendor_totals_enabled(context.settings.config_path),
            cache=_connections(),
        )
    )
    _enqueue_after_commit(result)
    return _answer(result, "zoho")


@bp.post("/pipedrive/<connection>")
def pipedrive(connection: str) -> Response:
    """Pipedrive webhook: HTTP Basic credentials (Pipedrive does not sign), plus relay HMAC."""
    context = get_context(current_app)
    raw = request.get_data(cache=True)
    result = _receive(
        lambda session: receive_pipedrive(
            session,
            context.store(session),
            connection,
            raw_body=raw,
            authorization=request.headers.get("Authorization"),
            relay_signature=request.headers.get("X-Connector-Signature"),
            backpressure=service.backpressure_check(context),
            cache=_connections(),
        )
    )
    _enqueue_after_commit(result)
    return _answer(result, "pipedrive")


@bp.errorhandler(sa.exc.OperationalError)
@bp.errorhandler(sa.exc.InterfaceError)
def database_unavailable(_: Exception) -> Response:
    """Nothing can be stored while the database is down: ask the sender to retry (never a 500)."""
    logger.error("webhook.database-unavailable")
    response = jsonify(
        {"status": 503, "message": "temporarily unable to store events; retry later"}
    )
    response.status_code = 503
    response.headers["Retry-After"] = "30"
    return response


@bp.errorhandler(CredentialError)
def credentials_unreadable(_: Exception) -> Response:
    """The configured key cannot decrypt a connection's webhook secret: an operator must fix the
    key, and the sender must retry once they have (a 500 would read as a bug to fix here)."""
    logger.error("webhook.credentials-unreadable: check CONNECTOR_SECRET_KEY (see /readyz)")
    response = jsonify(
        {"status": 503, "message": "temporarily unable to verify webhooks; retry later"}
    )
    response.status_code = 503
    response.headers["Retry-After"] = "60"
    return response


@bp.errorhandler(413)
def too_large(_: Exception) -> tuple[dict[str, str], int]:
    """Bodies above the limit are refused before they are read."""
    return {"status": "413", "message": "payload too large"}, 413
