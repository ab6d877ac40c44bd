"""Shared fixtures.

Integration tests run against the real PostgreSQL and Redis on this machine. When they cannot be
reached the tests fail loudly (never skip): CI must prove the real services work.
Each test gets a fresh Redis database and, for PostgreSQL, a fresh schema in database ``test``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa

from connector.crypto import SecretBox, generate_key

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """URL of a real, empty Redis database (db 15 unless TEST_REDIS_URL says otherwise)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:  # pragma: no cover - environment failure
        pytest.fail(f"real Redis at {REDIS_URL} is not reachable: {exc}")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def real_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the real, emptied Redis database."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def fake_redis() -> Iterator[redis.Redis]:
    """An in-memory Redis (with Lua) for fast unit tests."""
    import fakeredis

    client = fakeredis.FakeRedis()
    yield client
    client.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of an empty schema in the real PostgreSQL database ``test``."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:  # pragma: no cover - environment failure
        pytest.fail(f"real PostgreSQL at {POSTGRES_URL} is not reachable: {exc}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def secret_key() -> str:
    """A fresh Fernet key."""
    return generate_key()


@pytest.fixture
def box(secret_key: str) -> SecretBox:
    """A SecretBox over one fresh key."""
    return SecretBox([secret_key])
