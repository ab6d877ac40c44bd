"""Connection takeover through the OAuth flow (issue 14), tried as an attacker would.

The Zoho and Pipedrive simulators answer on the real hosts through ``responses``; every request
to 127.0.0.1 passes through to real sockets, so the recording "attacker" server (a plain
``http.server`` in a thread) sees whatever the connector would send it. It must see nothing.
The browser is played by hand: start -> consent screen (simulator) -> callback.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
import responses
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from connector.context import AppContext
from connector.db import upgrade
from connector.models import AuditEntry, Connection
from connector.sandbox.common import Clock
from connector.sandbox.pipedrive import PipedriveSimulator
from connector.sandbox.zoho import ZohoSimulator
from tests.harness import CLIENT_ID, CLIENT_SECRET, make_settings
from web import create_app

PASSWORD = "admin-password-for-oauth-tests"
PD_CLIENT_ID = "pd-oauth-client"
PD_CLIENT_SECRET = "pd-oauth-client-secret-value"
COMPANY = "acme"


# The attacker ------------------------------------------------------------------------------


@dataclass
class Attacker:
    """A host of the attacker's: answers anything like Zoho would, and records what it got."""

    url: str
    received: list[str] = field(default_factory=list)


@pytest.fixture
def attacker() -> Iterator[Attacker]:
    record: list[str] = []
    port: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode(errors="replace") if length else ""
            record.append(f"{self.command} {self.path} {body}")
            answer = {
                "access_token": "attacker-access",
                "refresh_token": "attacker-refresh",
                "api_domain": f"http://127.0.0.1:{port[0]}",
                "expires_in": 3600,
                "code": 0,
                "message": "success",
                "organizations": [{"organization_id": "111111", "name": "Evil Corp"}],
            }
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port.append(server.server_port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Attacker(f"http://127.0.0.1:{server.server_port}", record)
    server.shutdown()
    server.server_close()


# The rig -----------------------------------------------------------------------------------


@dataclass
class Rig:
    """The web app on a fresh database, both simulators mounted on the real hosts."""

    client: FlaskClient
    context: AppContext
    zoho: ZohoSimulator
    pipedrive: PipedriveSimulator
    rsps: responses.RequestsMock
    app: Flask

    def connections(self, system: str | None = None) -> list[Connection]:
        with self.context.session() as session:
            return list(self.context.store(session).list(system))

    def audit(self) -> list[AuditEntry]:
        with self.context.session() as session:
            rows = session.scalars(sa.select(AuditEntry).where(AuditEntry.entity == "connection"))
            return list(rows)

    def token_calls(self) -> list[str]:
        return [
            str(call.request.url)
            for call in self.rsps.calls
            if urlsplit(call.request.url or "").path.endswith("/token")
        ]

    def browser(self) -> FlaskClient:
        """Another browser (its own cookies), logged in as the admin."""
        other: FlaskClient = self.app.test_client()
        _login(other)
        return other


def _rig(tmp_path: Path, redis_url: str, **extra: str) -> Iterator[Rig]:
    settings = make_settings(
        f"sqlite:///{tmp_path / 'oauth.db'}",
        redis_url,
        CONNECTOR_ADMIN_PASSWORD=PASSWORD,
        PIPEDRIVE_CLIENT_ID=PD_CLIENT_ID,
        PIPEDRIVE_CLIENT_SECRET=PD_CLIENT_SECRET,
        **extra,
    )
    upgrade(settings.database_url)
    context = AppContext(settings=settings)
    clock = Clock(dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC))
    zoho = ZohoSimulator(real_hosts=True, clock=clock, rate_limits=False)
    pipedrive = PipedriveSimulator(real_hosts=True, clock=clock)
    app = create_app(
        {"CONNECTOR_CONTEXT": context, "CONNECTOR_ENQUEUE": lambda *a: None, "TESTING": True}
    )
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        # Local servers (the attacker, a sandbox) get real requests.
        rsps.add_passthru("http://127.0.0.1")
        zoho.mount(rsps)
        pipedrive.mount(rsps)
        zoho.register_client(CLIENT_ID, CLIENT_SECRET)
        pipedrive.create_company(COMPANY)
        pipedrive.register_oauth_client(PD_CLIENT_ID, PD_CLIENT_SECRET)
        yield Rig(app.test_client(), context, zoho, pipedrive, rsps, app)
    context.close()


@pytest.fixture
def rig(tmp_path: Path, redis_url: str) -> Iterator[Rig]:
    yield from _rig(tmp_path, redis_url)


def _csrf(text: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', text)
    assert match, "no CSRF field"
    return match.group(1)


def _login(client: FlaskClient) -> None:
    token = _csrf(client.get("/login").text)
    response = client.post("/login", data={"csrf_token": token, "password": PASSWORD})
    assert response.status_code == 302


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _start_zoho(client: FlaskClient, organization_id: str, name: str = "zoho-main") -> str:
    response = client.get(f"/oauth/zoho/start?organization_id={organization_id}&name={name}")
    assert response.status_code == 302, response.text
    return str(response.headers["Location"])


def _consent(url: str) -> dict[str, str]:
    """The browser at the provider's consent page: returns the callback's query parameters."""
    answer = requests.get(url, allow_redirects=False, timeout=5)
    assert answer.status_code == 302, answer.text
    return _query(answer.headers["Location"])


def _zoho_flow(rig: Rig, organization_id: str, name: str = "zoho-main") -> Any:
    params = _consent(_start_zoho(rig.client, organization_id, name))
    return rig.client.get(f"/oauth/zoho/callback?{urlencode(params)}")


# Open redirect -----------------------------------------------------------------------------

EVIL_NEXT = [
    "/\t/evil.example",
    "//evil.example",
    "/\\evil.example",
    "https://evil.example",
    "http:/evil.example",
    "http://evil.example/",
    "\t//evil.example",
    " //evil.example",
    "/\n/evil.example",
    "/\r\n/evil.example",
    "/x\x00",
    "///evil.example",
    "javascript:alert(1)",
]


@pytest.mark.parametrize("target", EVIL_NEXT)
def test_login_next_cannot_leave_the_site(rig: Rig, target: str):
    token = _csrf(rig.client.get("/login").text)
    response = rig.client.post(
        "/login", data={"csrf_token": token, "password": PASSWORD, "next": target}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    # Already logged in, the GET form redirects at once: same rule.
    again = rig.client.get(f"/login?{urlencode({'next': target})}")
    assert again.headers["Location"] == "/"


def test_login_next_keeps_a_path_on_the_site(rig: Rig):
    token = _csrf(rig.client.get("/login").text)
    response = rig.client.post(
        "/login", data={"csrf_token": token, "password": PASSWORD, "next": "/history?page=2"}
    )
    assert response.headers["Location"] == "/history?page=2"
