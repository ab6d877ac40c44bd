"""The receiver's per-process connection cache, the throttled ``last_webhook_at`` write, and the
retry after a lost database connection (the receiver's pool does not ping before use)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from connector.context import AppContext
from connector.intake import ConnectionCache
from connector.models import Connection, WebhookEvent
from connector.zoho.webhooks import sign_zoho_webhook
from tests.harness import World, world
from web import create_app


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every SQL statement any engine runs during the test (the receiver has its own engine)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()).lower())

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)


def _post(client: Any, secret: str, invoice_id: str, *, signature: str | None = None) -> Any:
    raw = json.dumps(
        {"invoice": {"invoice_id": invoice_id, "last_modified_time": "2026-03-02T10:00:00+0000"}}
    ).encode()
    return client.post(
        "/webhooks/zoho/zoho-us",
        data=raw,
        content_type="application/json",
        headers={
            "X-Zoho-Webhook-Signature": signature
            or sign_zoho_webhook(secret, params={}, raw_body=raw)
        },
    )


@pytest.fixture
def env(
    tmp_path: Any, redis_url: str, statements: list[str]
) -> Iterator[tuple[World, Any, Clock, list[str], str]]:
    with world(f"sqlite:///{tmp_path / 'c.db'}", redis_url) as w:
        app = create_app(
            {
                "TESTING": True,
                "CONNECTOR_CONTEXT": w.context,
                "CONNECTOR_ENQUEUE": lambda *args: None,
            }
        )
        clock = Clock()
        app.extensions["connector.connections"] = ConnectionCache(clock=clock)
        with w.context.session() as session:
            store = w.context.store(session)
            secret = str(store.webhook_secret(store.get("zoho-us"))["secret"])
        statements.clear()
        yield w, app.test_client(), clock, statements, secret


def _reads_of_connections(statements: list[str]) -> int:
    """Lookups of a connection by name (the backpressure check lists Pipedrive ones apart)."""
    return sum(
        1
        for s in statements
        if s.startswith("select") and "from connections" in s and "connections.name =" in s
    )


def test_webhooks_within_the_cache_time_read_the_connection_once(env):
    _, client, clock, statements, secret = env
    for n in range(20):
        clock.now += 0.1
        assert _post(client, secret, f"46{n:05d}").status_code == 202
    assert _reads_of_connections(statements) == 1
    clock.now += 10  # past the cache time: read again
    assert _post(client, secret, "4699999").status_code == 202
    assert _reads_of_connections(statements) == 2


def test_forged_webhooks_cannot_make_every_request_read_the_database(env):
    _, client, clock, statements, secret = env
    assert _post(client, secret, "4600001").status_code == 202
    for n in range(50):
        clock.now += 0.01  # 50 forgeries within half a second
        assert _post(client, secret, f"47{n:05d}", signature="0" * 64).status_code == 401
    # At most one fresh read per second per connection, however many forgeries arrive.
    assert _reads_of_connections(statements) <= 2


def test_unknown_connection_names_are_cached_too(env):
    _, client, clock, statements, _ = env
    for _n in range(30):
        clock.now += 0.01
        answer = client.post("/webhooks/zoho/nobody", data=b"{}", content_type="application/json")
        assert answer.status_code == 401
    assert _reads_of_connections(statements) <= 2


def test_a_rotated_secret_works_at_once(env):
    w, client, clock, _, old_secret = env
    assert _post(client, old_secret, "4600001").status_code == 202
    with w.context.session() as session:
        store = w.context.store(session)
        store.set_webhook_secret(store.get("zoho-us"), {"secret": "rotated-secret-0123456789"})
    clock.now += 1.5  # the cached entry is older than a second: a failed check re-reads
    assert _post(client, "rotated-secret-0123456789", "4600002").status_code == 202
    # The re-read replaced the cache entry: the old secret is refused from now on.
    clock.now += 1.5
    assert _post(client, old_secret, "4600003").status_code == 401


def test_last_webhook_at_is_written_once_per_interval_not_per_request(env):
    w, client, clock, statements, secret = env
    for n in range(10):
        clock.now += 0.5
        assert _post(client, secret, f"48{n:05d}").status_code == 202
    updates = [s for s in statements if s.startswith("update connections")]
    assert len(updates) == 1
    clock.now += 11
    assert _post(client, secret, "4899999").status_code == 202
    updates = [s for s in statements if s.startswith("update connections")]
    assert len(updates) == 2
    with w.context.session() as session:
        zoho = session.scalar(sa.select(Connection).where(Connection.name == "zoho-us"))
        assert zoho is not None
        assert zoho.last_webhook_at is not None


def test_a_redelivery_is_stored_once_by_the_single_statement(env):
    w, client, _, _, secret = env
    assert _post(client, secret, "4600001").status_code == 202
    assert _post(client, secret, "4600001").status_code == 200
    with w.context.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(WebhookEvent)) == 1


def test_receiver_survives_lost_database_connections_without_a_ping(postgres_url, redis_url):
    """Real PostgreSQL: every server-side connection is killed between two webhooks."""
    with world(postgres_url, redis_url) as w:
        name = f"receiver-test-{uuid.uuid4().hex[:8]}"
        context = AppContext(
            settings=w.context.settings,
            engine_options={"pool_pre_ping": False, "connect_args": {"application_name": name}},
        )
        app = create_app(
            {"TESTING": True, "CONNECTOR_CONTEXT": context, "CONNECTOR_ENQUEUE": lambda *a: None}
        )
        client = app.test_client()
        with context.session() as session:
            store = context.store(session)
            secret = str(store.webhook_secret(store.get("zoho-us"))["secret"])
        assert _post(client, secret, "4600001").status_code == 202
        admin = sa.create_engine(postgres_url.split("?")[0])
        with admin.begin() as conn:
            killed = conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name"
                ),
                {"name": name},
            ).all()
        admin.dispose()
        assert killed, "the pooled connection should have been terminated"
        answer = _post(client, secret, "4600002")
        assert answer.status_code == 202, answer.get_json()
        with w.context.session() as session:
            ids = set(session.scalars(sa.select(WebhookEvent.entity_id)))
        assert ids == {"4600001", "4600002"}
        context.close()


def test_unknown_names_from_urls_cannot_grow_the_cache_without_bound(env):
    _, client, clock, _, _ = env
    cache = client.application.extensions["connector.connections"]
    for n in range(1200):
        clock.now += 0.001
        client.post(f"/webhooks/zoho/nobody-{n}", data=b"{}", content_type="application/json")
    assert len(cache._entries) <= 1001
