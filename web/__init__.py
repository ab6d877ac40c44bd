"""The web app: a thin receiver that verifies webhooks and enqueues, plus OAuth and health.

``create_app(config=None)`` reads settings from the environment; tests pass a mapping with
``CONNECTOR_CONTEXT`` (an AppContext) and ``CONNECTOR_ENQUEUE`` (a callable) to run without a broker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask

from connector.context import AppContext
from connector.intake import ConnectionCache
from connector.mapping.config import load_config

Enqueue = Callable[[str, list[Any], str], None]


def _celery_enqueue(task_name: str, args: list[Any], queue: str) -> None:
    from workers.celery_app import celery_app

    celery_app.send_task(task_name, args=args, queue=queue)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the Flask app."""
    app = Flask(__name__)
    config = dict(config or {})
    # No ping before each use of a pooled connection: it cost a round trip per webhook. After a
    # database restart the first use fails instead, and the webhook routes retry once.
    context: AppContext = config.pop("CONNECTOR_CONTEXT", None) or AppContext.from_env(
        pool_pre_ping=False
    )
    enqueue: Enqueue = config.pop("CONNECTOR_ENQUEUE", None) or _celery_enqueue
    app.config.from_mapping(
        # Webhook bodies above this are refused with 413 before anything is read.
        MAX_CONTENT_LENGTH=context.settings.webhook_max_bytes,
        SECRET_KEY=context.box.derive_key("flask-session"),
    )
    app.config.update(config)
    # An invalid mapping file stops the web process at boot, every problem listed, rather than
    # letting webhooks be accepted that no worker could sync.
    load_config(context.settings.config_path or None)
    app.extensions["connector.context"] = context
    app.extensions["connector.enqueue"] = enqueue
    # Connections and their webhook secrets, kept per process for a few seconds.
    app.extensions["connector.connections"] = ConnectionCache()

    from web import health, oauth, security, ui, webhooks

    security.install(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(oauth.bp)
    ui.register(app)
    return app


def get_context(app: Flask) -> AppContext:
    """The AppContext the app was built with."""
    context = app.extensions["connector.context"]
    assert isinstance(context, AppContext)
    return context
