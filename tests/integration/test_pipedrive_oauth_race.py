"""Eight real processes need a Pipedrive access token at once: exactly one refresh happens.

Real Redis, real processes (spawned, so nothing is shared but Redis), and the Pipedrive
simulator in server mode counting refreshes at its token endpoint. Refresh tokens rotate, so a
second refresh with the original token would fail with invalid_grant: a lost race shows up both
in the count and as an error.
"""

from __future__ import annotations

import multiprocessing

import pytest
import redis

from connector.crypto import SecretBox
from connector.pipedrive.auth import PipedriveTokenManager, exchange_code, token_cache_key
from connector.sandbox.pipedrive import PipedriveSimulator

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKERS = 8
CLIENT_ID, CLIENT_SECRET = "race-client", "race-secret"


def worker(
    redis_url: str, key: str, oauth_server: str, refresh_token: str, barrier, results
) -> None:
    client = redis.Redis.from_url(redis_url)
    manager = PipedriveTokenManager(
        connection_id="race",
        redis=client,
        box=SecretBox([key]),
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        refresh_token=refresh_token,
        oauth_server=oauth_server,
        timeout=10.0,
    )
    barrier.wait(timeout=60)
    try:
        token = manager.token()
        results.put(("ok", token.access_token, token.api_domain, manager.refreshes))
    except Exception as exc:
        results.put(("error", type(exc).__name__, str(exc), 0))


def test_one_refresh_for_eight_processes(redis_url, real_redis, secret_key):
    sim = PipedriveSimulator()
    server, _base = sim.start_server()
    try:
        sim.settings.update(rotate_refresh_tokens=True)
        sim.create_company("acme")
        sim.register_oauth_client(CLIENT_ID, CLIENT_SECRET)
        code = sim.issue_authorization_code(CLIENT_ID, "acme", "https://app.example.com/cb")
        initial = exchange_code(
            code=code,
            redirect_uri="https://app.example.com/cb",
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            oauth_server=sim.oauth_base(),
        )
        assert sim.oauth_refresh_total == 0

        spawn = multiprocessing.get_context("spawn")
        barrier = spawn.Barrier(WORKERS)
        results = spawn.Queue()
        processes = [
            spawn.Process(
                target=worker,
                args=(
                    redis_url,
                    secret_key,
                    sim.oauth_base(),
                    initial.refresh_token,
                    barrier,
                    results,
                ),
            )
            for _ in range(WORKERS)
        ]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(timeout=30)
            assert process.exitcode == 0
    finally:
        server.shutdown()

    errors = [o for o in outcomes if o[0] != "ok"]
    assert errors == []
    assert sim.oauth_refresh_total == 1
    assert sum(o[3] for o in outcomes) == 1  # exactly one process refreshed
    assert len({o[1] for o in outcomes}) == 1  # and all use its token
    assert {o[2] for o in outcomes} == {sim.api_base("acme")}
    assert real_redis.get(token_cache_key("race")) is not None
    assert not real_redis.exists(token_cache_key("race") + ":lock")
