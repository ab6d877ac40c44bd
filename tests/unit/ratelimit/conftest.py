"""Fixtures for the limiter tests: every Redis test runs on fakeredis (Lua) and on the real Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

from tests.unit.ratelimit.helpers import FakeClock


@pytest.fixture(params=["fake", "real"])
def redis_factory(request: pytest.FixtureRequest) -> Iterator[Callable[[], redis.Redis]]:
    """Makes clients that all see one store: a fakeredis server, or the real (emptied) db."""
    clients: list[redis.Redis] = []
    if request.param == "fake":
        import fakeredis

        server = fakeredis.FakeServer()

        def make() -> redis.Redis:
            client = fakeredis.FakeRedis(server=server)
            clients.append(client)
            return client
    else:
        url = request.getfixturevalue("redis_url")

        def make() -> redis.Redis:
            client = redis.Redis.from_url(url)
            clients.append(client)
            return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def rds(redis_factory: Callable[[], redis.Redis]) -> redis.Redis:
    """One client on the store under test."""
    return redis_factory()


@pytest.fixture
def clock() -> FakeClock:
    """A frozen clock at 2025-06-02 10:00:00 UTC (a Monday, far from any midnight)."""
    return FakeClock(1748858400.0)
