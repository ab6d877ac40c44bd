"""Eight real processes on the real Redis race on one Zoho token: exactly one refresh.

The token endpoint is the Zoho simulator in server mode (a real HTTP server in a thread), and
the refresh grants are counted there. Each process builds its own token manager, as Celery
workers do, and then makes a real API call with the token it got.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from typing import Any

import pytest

from connector.connections import token_fingerprint
from connector.crypto import SecretBox, generate_key
from connector.settings import Secret
from connector.zoho.auth import TokenResponse, ZohoTokenManager
from connector.zoho.client import ZohoBooksClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIENT_ID = "1000.RACECLIENT"
CLIENT_SECRET = "race-client-secret"
PROCESSES = 8
CONNECTION_ID = 4242


def _manager(
    redis_url: str, key: str, accounts: str, refresh: str, **kwargs: Any
) -> ZohoTokenManager:
    import redis

    return ZohoTokenManager(
        redis.Redis.from_url(redis_url),
        SecretBox([key]),
        connection_id=CONNECTION_ID,
        accounts_server=accounts,
        client_id=CLIENT_ID,
        client_secret=Secret(CLIENT_SECRET),
        refresh_token=Secret(refresh),
        timeout=10,
        **kwargs,
    )


def _worker(
    mode: str,
    redis_url: str,
    key: str,
    accounts: str,
    api_domain: str,
    organization_id: str,
    refresh: str,
    stale_token: str,
    barrier: Any,
    results: Any,
) -> None:
    try:
        manager = _manager(redis_url, key, accounts, refresh)
        barrier.wait(timeout=60)
        token = manager.get_access_token() if mode == "expired" else manager.invalidate(stale_token)
        client = ZohoBooksClient(
            manager, organization_id=organization_id, api_domain=api_domain, timeout=10
        )
        names = [org["organization_id"] for org in client.organizations.list()]
        results.put((token_fingerprint(token), organization_id in names, None))
    except Exception as exc:
        results.put((None, False, repr(exc)))


@pytest.fixture
def simulator() -> Iterator[tuple[Any, str]]:
    # Imported here so the spawned workers, which import this module, skip Flask.
    from connector.sandbox.common import serve_in_thread
    from connector.sandbox.zoho import ZohoSimulator

    sim = ZohoSimulator()
    server, url = serve_in_thread(sim.app)
    sim.base_url = url
    try:
        yield sim, url
    finally:
        server.shutdown()


@pytest.mark.parametrize("mode", ["expired", "rejected"])
def test_eight_processes_refresh_exactly_once(simulator, redis_url, mode):
    sim, _ = simulator
    sim.register_client(CLIENT_ID, CLIENT_SECRET)
    organization_id = sim.create_organization("eu", name="Race GmbH")
    issued = sim.issue_tokens(CLIENT_ID, "eu")
    accounts, api_domain = issued["accounts_server"], issued["api_domain"]
    key = generate_key()
    # The shared token: two hours old ("expired") or fresh but refused by the API ("rejected").
    age = 7200.0 if mode == "expired" else 0.0
    seeding = _manager(
        redis_url, key, accounts, issued["refresh_token"], clock=lambda: time.time() - age
    )
    seeding.store_token(TokenResponse(access_token=issued["access_token"], api_domain=api_domain))
    if mode == "rejected":
        sim.expire_access_tokens()

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    processes = [
        ctx.Process(
            target=_worker,
            args=(
                mode,
                redis_url,
                key,
                accounts,
                api_domain,
                organization_id,
                issued["refresh_token"],
                issued["access_token"],
                barrier,
                results,
            ),
        )
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)

    errors = [error for _, _, error in outcomes if error]
    assert errors == []
    assert sim.refresh_count(issued["refresh_token"]) == 1
    assert len({fingerprint for fingerprint, _, _ in outcomes}) == 1
    assert all(visible for _, visible, _ in outcomes)
    # The token every process used is the one the single refresh minted, not the stale one.
    assert outcomes[0][0] != token_fingerprint(issued["access_token"])
