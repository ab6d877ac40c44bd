"""The Procfile's real ``web`` command under attack: silent sockets must not stop the receiver.

The command line is read from the Procfile and run by a shell as a platform runs it, on a free
port. Requests go through ``http.client``: the harness mocks ``requests`` for the simulators.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from connector.sandbox.processes import BIN, ROOT, ProcessGroup, free_port, wait_for
from connector.zoho.webhooks import SIGNATURE_HEADER, sign_zoho_webhook
from tests.harness import CLIENT_ID, CLIENT_SECRET, World, world

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUERY = "event_type=invoice.updated"


def procfile_command(role: str) -> str:
    """The shell command of ``role`` in the Procfile."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == role:
            return command.strip()
    raise AssertionError(f"no {role} process in the Procfile")


@dataclass
class Web:
    world: World
    port: int
    secret: str
    group: ProcessGroup
    log_dir: Path

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def status(self, path: str) -> int:
        connection = self.connection(2)
        try:
            connection.request("GET", path)
            return connection.getresponse().status
        finally:
            connection.close()


def _ready(web: Web) -> bool:
    try:
        return web.status("/readyz") == 200
    except OSError:
        return False


@pytest.fixture
def web(tmp_path: Path, redis_url: str) -> Iterator[Web]:
    with procfile_web(tmp_path, redis_url) as handle:
        yield handle


@contextlib.contextmanager
def procfile_web(
    tmp_path: Path, redis_url: str, extra_env: dict[str, str] | None = None
) -> Iterator[Web]:
    """The Procfile's web process on a free port, over a world with one Zoho connection."""
    database_url = f"sqlite:///{tmp_path / 'c.db'}"
    with world(database_url, redis_url) as w:
        with w.context.session() as session:
            store = w.context.store(session)
            secret = str(store.webhook_secret(store.get("zoho-us"))["secret"])
        port = free_port()
        env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PORT": str(port),
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CONNECTOR_SECRET_KEY": ",".join(k.reveal() for k in w.context.settings.secret_keys),
            "ZOHO_CLIENT_ID": CLIENT_ID,
            "ZOHO_CLIENT_SECRET": CLIENT_SECRET,
            "CONNECTOR_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "CONNECTOR_DOTENV": str(tmp_path / "none.env"),
            "PYTHONPATH": str(ROOT),
        }
        env.update(extra_env or {})
        env.pop("WEB_CONCURRENCY", None)
        group = ProcessGroup(tmp_path, env)
        group.start("web", ["sh", "-c", f"exec {procfile_command('web')}"])
        handle = Web(w, port, secret, group, tmp_path)
        try:
            wait_for("the Procfile's web process", lambda: _ready(handle), timeout=60)
            yield handle
        finally:
            group.stop_all()


def _signed_webhook(web: Web, timeout: float) -> int:
    raw = json.dumps(
        {
            "invoice": {
                "invoice_id": "4600001",
                "last_modified_time": "2026-03-02T10:00:00+0000",
                "organization_id": web.world.zoho_orgs["us"],
            }
        }
    ).encode()
    signature = sign_zoho_webhook(
        web.secret, params={"event_type": "invoice.updated"}, raw_body=raw
    )
    connection = web.connection(timeout)
    try:
        connection.request(
            "POST",
            f"/webhooks/zoho/zoho-us?{QUERY}",
            body=raw,
            headers={"Content-Type": "application/json", SIGNATURE_HEADER: signature},
        )
        return connection.getresponse().status
    finally:
        connection.close()


def test_ten_idle_connections_do_not_delay_a_signed_webhook(web: Web):
    idle = [socket.create_connection(("127.0.0.1", web.port), timeout=5) for _ in range(10)]
    try:
        time.sleep(0.5)  # let the workers accept them (a sync worker then waits on one for good)
        started = time.monotonic()
        status = _signed_webhook(web, timeout=3)
        elapsed = time.monotonic() - started
    finally:
        for sock in idle:
            sock.close()
    assert status == 202
    assert elapsed < 3, f"the webhook took {elapsed:.1f} s behind 10 idle connections"


def test_procfile_web_sets_threads_and_timeouts():
    command = procfile_command("web")
    for option in ("--worker-class gthread", "--threads", "--timeout", "--graceful-timeout"):
        assert option in command, option
    assert "--keep-alive" in command


def _request(web: Web, method: str, path: str, headers: dict[str, str]) -> int:
    connection = web.connection(5)
    try:
        connection.request(method, path, body=b"{}" if method == "POST" else None, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def test_access_log_holds_no_credentials_code_or_token(web: Web):
    basic = base64.b64encode(b"hook-user-7f3a:hook-password-9c2e").decode()
    _request(
        web,
        "POST",
        "/webhooks/pipedrive/pipedrive",
        {"Authorization": f"Basic {basic}", "Content-Type": "application/json"},
    )
    _request(
        web,
        "GET",
        "/oauth/zoho/callback?code=1000.grantcode0123456789&state=state-5e1d&location=us",
        {"Referer": "https://accounts.zoho.com/?code=1000.referercode42"},
    )
    _request(web, "GET", "/healthz?token=tok-8b1c&access_token=at-3d9f", {})
    _request(web, "GET", "/metrics", {"Authorization": "Bearer metrics-token-6a2b"})
    web.group.stop_all()  # flushes the log
    log = (web.log_dir / "web.log").read_text()
    assert "/webhooks/pipedrive/pipedrive" in log
    assert "/oauth/zoho/callback" in log
    for secret in (
        "hook-user-7f3a",
        "hook-password-9c2e",
        basic,
        "1000.grantcode0123456789",
        "state-5e1d",
        "1000.referercode42",
        "tok-8b1c",
        "at-3d9f",
        "metrics-token-6a2b",
    ):
        assert secret not in log, secret
