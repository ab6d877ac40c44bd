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
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
import responses
import sqlalchemy as sa
import time_machine
from flask import Flask
from flask.testing import FlaskClient

from connector.context import AppContext
from connector.db import upgrade
from connector.errors import AuthError
from connector.models import AuditEntry, Connection
from connector.sandbox.common import Clock, serve_in_thread
from connector.sandbox.pipedrive import PipedriveSimulator
from connector.sandbox.zoho import ZohoSimulator
from connector.zoho.regions import DATA_CENTERS
from tests.harness import CLIENT_ID, CLIENT_SECRET, make_settings
from tests.security.attacker import Attacker
from tests.security.forms import csrf_token
from web import create_app
from web.oauth import STATE_MAX_AGE

PASSWORD = "admin-password-for-oauth-tests"
PD_CLIENT_ID = "pd-oauth-client"
PD_CLIENT_SECRET = "pd-oauth-client-secret-value"
COMPANY = "acme"


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


def _login(client: FlaskClient) -> None:
    token = csrf_token(client.get("/login").text)
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


# Start needs the admin ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "start", ["/oauth/zoho/start?organization_id=123456&name=zoho-x", "/oauth/pipedrive/start"]
)
def test_oauth_start_without_admin_session_redirects_to_login(rig: Rig, start: str):
    response = rig.client.get(start)
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/login"
    assert _query(response.headers["Location"])["next"] == start
    assert len(rig.rsps.calls) == 0


def test_oauth_callback_without_admin_session_does_nothing(rig: Rig):
    _login(rig.client)
    org_id = rig.zoho.create_organization("eu", "Zillum GmbH")
    params = _consent(_start_zoho(rig.client, org_id))
    anonymous = rig.app.test_client()
    response = anonymous.get(f"/oauth/zoho/callback?{urlencode(params)}")
    assert response.status_code == 403
    assert rig.token_calls() == []
    assert rig.connections() == []


# State: random, server-side, bound, single-use, 10 minutes ---------------------------------


def test_oauth_state_is_random_and_carries_no_data(rig: Rig):
    _login(rig.client)
    first = _query(_start_zoho(rig.client, "123456"))["state"]
    second = _query(_start_zoho(rig.client, "123456"))["state"]
    assert first != second
    # Nothing to decode: an opaque token, the flow's data stays on the server.
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", first)


def test_oauth_state_from_another_session_is_refused(rig: Rig):
    _login(rig.client)
    org_id = rig.zoho.create_organization("eu", "Zillum GmbH")
    params = _consent(_start_zoho(rig.client, org_id))
    response = rig.browser().get(f"/oauth/zoho/callback?{urlencode(params)}")
    assert response.status_code == 400
    assert "invalid state" in response.text
    assert rig.token_calls() == []
    assert rig.connections() == []


def test_oauth_state_is_single_use(rig: Rig):
    _login(rig.client)
    org_id = rig.zoho.create_organization("eu", "Zillum GmbH")
    params = _consent(_start_zoho(rig.client, org_id))
    assert rig.client.get(f"/oauth/zoho/callback?{urlencode(params)}").status_code == 200
    calls = len(rig.rsps.calls)
    again = rig.client.get(f"/oauth/zoho/callback?{urlencode(params)}")
    assert again.status_code == 400
    assert "invalid state" in again.text
    assert len(rig.rsps.calls) == calls


def test_oauth_state_expires_after_10_minutes(rig: Rig):
    _login(rig.client)
    org_id = rig.zoho.create_organization("eu", "Zillum GmbH")
    params = _consent(_start_zoho(rig.client, org_id))
    with time_machine.travel(time.time() + STATE_MAX_AGE + 5, tick=False):
        response = rig.client.get(f"/oauth/zoho/callback?{urlencode(params)}")
    assert response.status_code == 400
    assert rig.token_calls() == []
    assert rig.connections() == []


@pytest.mark.parametrize("state", ["", "x", secrets.token_urlsafe(32), "A" * 5000])
def test_oauth_forged_state_does_nothing(rig: Rig, attacker: Attacker, state: str):
    _login(rig.client)
    query = {"code": "c", "state": state, "accounts-server": "https://accounts.zoho.eu"}
    for route in ("/oauth/zoho/callback", "/oauth/pipedrive/callback"):
        response = rig.client.get(f"{route}?{urlencode(query)}")
        assert response.status_code == 400
    assert len(rig.rsps.calls) == 0
    assert rig.connections() == []


# accounts-server and api_domain ------------------------------------------------------------


@pytest.mark.parametrize(
    "server",
    [
        "{attacker}",
        "{attacker}/eu/accounts",
        "https://accounts.zoho.eu@{host}",
        "https://accounts.zoho.eu.{host}",
    ],
)
def test_oauth_foreign_accounts_server_gets_no_request(rig: Rig, attacker: Attacker, server: str):
    _login(rig.client)
    org_id = rig.zoho.create_organization("eu", "Zillum GmbH")
    params = _consent(_start_zoho(rig.client, org_id))
    host = urlsplit(attacker.url).netloc
    params["accounts-server"] = server.format(attacker=attacker.url, host=host)
    response = rig.client.get(f"/oauth/zoho/callback?{urlencode(params)}")
    assert 400 <= response.status_code < 500
    assert "accounts-server" in response.text
    assert attacker.received == []
    assert rig.token_calls() == []
    assert rig.connections() == []


def test_oauth_token_response_api_domain_cannot_move_api_calls(
    rig: Rig, attacker: Attacker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    # Zoho itself (or anyone answering for it) names another host as the API domain.
    monkeypatch.setattr(rig.zoho, "api_domain", lambda dc: attacker.url)
    _login(rig.client)
    org_id = rig.zoho.create_organization("eu", "Zillum GmbH")
    response = _zoho_flow(rig, org_id)
    assert response.status_code == 200, response.text
    assert attacker.received == []
    (connection,) = rig.connections("zoho")
    assert connection.api_base == DATA_CENTERS["eu"].api_domain
    assert "zoho.api-domain-ignored" in caplog.text


def test_oauth_refresh_answer_cannot_move_api_calls(
    rig: Rig, attacker: Attacker, monkeypatch: pytest.MonkeyPatch
):
    from connector.zoho.service import build_zoho_client

    _login(rig.client)
    org_id = rig.zoho.create_organization("eu", "Zillum GmbH")
    assert _zoho_flow(rig, org_id).status_code == 200
    (connection,) = rig.connections("zoho")
    # Later, a refresh answer names another API host.
    monkeypatch.setattr(rig.zoho, "api_domain", lambda dc: attacker.url)
    client = build_zoho_client(rig.context, connection, limiter=None)
    client.tokens.clear()  # type: ignore[attr-defined]
    assert [org["organization_id"] for org in client.organizations.list()] == [org_id]
    assert client.api_domain == DATA_CENTERS["eu"].api_domain
    assert attacker.received == []


@pytest.mark.parametrize("dc", sorted(DATA_CENTERS))
def test_oauth_every_zoho_accounts_host_of_the_reference_is_allowed(dc: str):
    from connector.zoho.regions import allowed_accounts_server

    accounts = DATA_CENTERS[dc].accounts_server
    assert allowed_accounts_server(accounts + "/") == accounts
    assert allowed_accounts_server(accounts.replace("https://", "http://")) == accounts


def test_oauth_configured_accounts_url_origin_is_the_only_other_allowed_host():
    from connector.zoho.regions import allowed_accounts_server

    configured = "http://127.0.0.1:5001/us/accounts"
    assert allowed_accounts_server("http://127.0.0.1:5001/eu/accounts", configured=configured)
    for other in ("http://127.0.0.1:5002/us/accounts", "https://127.0.0.1:5001/us/accounts"):
        with pytest.raises(AuthError):
            allowed_accounts_server(other, configured=configured)


def test_oauth_sandbox_accounts_url_works_end_to_end(tmp_path: Path, redis_url: str):
    """The sandbox and the demo set ZOHO_ACCOUNTS_URL to the simulator: the flow still works."""
    sim = ZohoSimulator(rate_limits=False)
    sim.register_client(CLIENT_ID, CLIENT_SECRET)
    server, base = serve_in_thread(sim.app)
    try:
        org_id = sim.create_organization("eu", "Sandbox GmbH")
        for rig in _rig(tmp_path, redis_url, ZOHO_ACCOUNTS_URL=f"{base}/us/accounts"):
            _login(rig.client)
            params = _consent(_start_zoho(rig.client, org_id))
            assert params["accounts-server"] == f"{base}/eu/accounts"
            response = rig.client.get(f"/oauth/zoho/callback?{urlencode(params)}")
            assert response.status_code == 200, response.text
            (connection,) = rig.connections("zoho")
            assert connection.api_base == f"{base}/eu/api"
    finally:
        server.shutdown()


# Replacing a connection --------------------------------------------------------------------


def test_oauth_callback_for_another_organization_needs_a_confirmation(rig: Rig):
    _login(rig.client)
    first = rig.zoho.create_organization("eu", "Zillum GmbH")
    second = rig.zoho.create_organization("eu", "Other GmbH")
    assert _zoho_flow(rig, first).status_code == 200
    page = _zoho_flow(rig, second)
    assert page.status_code == 409
    assert "Replace" in page.text
    (connection,) = rig.connections("zoho")
    assert connection.external_id == first
    pending = re.search(r'name="pending" value="([^"]+)"', page.text)
    assert pending
    # Without the CSRF token the form does nothing.
    refused = rig.client.post("/oauth/confirm", data={"pending": pending.group(1)})
    assert refused.status_code == 400
    assert rig.connections("zoho")[0].external_id == first
    confirmed = rig.client.post(
        "/oauth/confirm", data={"pending": pending.group(1), "csrf_token": csrf_token(page.text)}
    )
    assert confirmed.status_code == 200, confirmed.text
    (connection,) = rig.connections("zoho")
    assert (connection.name, connection.external_id) == ("zoho-main", second)
    replaced = [entry for entry in rig.audit() if entry.action == "replace"]
    assert len(replaced) == 1
    assert f"admin replaced account {first} with {second}" in replaced[0].reason
    assert replaced[0].diff["external_id"] == {"before": first, "after": second}
    assert replaced[0].zoho_connection_id == connection.id
    # The refresh token is never in the audit trail.
    credentials = rig.context.box.decrypt_json(connection.credentials_ciphertext)
    assert credentials["refresh_token"] not in json.dumps(replaced[0].diff) + replaced[0].reason
    # A confirmation works once.
    again = rig.client.post(
        "/oauth/confirm", data={"pending": pending.group(1), "csrf_token": csrf_token(page.text)}
    )
    assert again.status_code == 400


def test_oauth_confirmation_from_another_session_is_refused(rig: Rig):
    _login(rig.client)
    first = rig.zoho.create_organization("eu", "Zillum GmbH")
    second = rig.zoho.create_organization("eu", "Other GmbH")
    assert _zoho_flow(rig, first).status_code == 200
    page = _zoho_flow(rig, second)
    pending = re.search(r'name="pending" value="([^"]+)"', page.text)
    assert pending
    other = rig.browser()
    token = csrf_token(other.get("/").text)
    response = other.post("/oauth/confirm", data={"pending": pending.group(1), "csrf_token": token})
    assert response.status_code == 400
    assert rig.connections("zoho")[0].external_id == first


def test_oauth_reconnect_of_the_same_organization_refreshes_in_place_and_is_audited(rig: Rig):
    _login(rig.client)
    org_id = rig.zoho.create_organization("eu", "Zillum GmbH")
    assert _zoho_flow(rig, org_id).status_code == 200
    (before,) = rig.connections("zoho")
    old_token = rig.context.box.decrypt_json(before.credentials_ciphertext)["refresh_token"]
    assert _zoho_flow(rig, org_id).status_code == 200
    (after,) = rig.connections("zoho")
    assert after.id == before.id
    assert rig.context.box.decrypt_json(after.credentials_ciphertext)["refresh_token"] != old_token
    assert [(e.action, e.diff["actor"]) for e in rig.audit()] == [
        ("connect", "admin"),
        ("reconnect", "admin"),
    ]


def test_oauth_pipedrive_callback_for_another_company_needs_a_confirmation(rig: Rig):
    _login(rig.client)
    rig.pipedrive.create_company("globex")
    for company in (COMPANY, "globex"):
        start = _query(str(rig.client.get("/oauth/pipedrive/start?name=crm").headers["Location"]))
        code = rig.pipedrive.issue_authorization_code(PD_CLIENT_ID, company, start["redirect_uri"])
        response = rig.client.get(
            f"/oauth/pipedrive/callback?{urlencode({'code': code, 'state': start['state']})}"
        )
    assert response.status_code == 409
    (connection,) = rig.connections("pipedrive")
    assert connection.options["company_domain"] == COMPANY
    pending = re.search(r'name="pending" value="([^"]+)"', response.text)
    assert pending
    confirmed = rig.client.post(
        "/oauth/confirm",
        data={"pending": pending.group(1), "csrf_token": csrf_token(response.text)},
    )
    assert confirmed.status_code == 200, confirmed.text
    (connection,) = rig.connections("pipedrive")
    assert connection.options["company_domain"] == "globex"
    assert [e.action for e in rig.audit()] == ["connect", "replace"]


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
    token = csrf_token(rig.client.get("/login").text)
    response = rig.client.post(
        "/login", data={"csrf_token": token, "password": PASSWORD, "next": target}
    )
    if "\x00" in target:
        # The NUL guard refuses the whole request before login: nothing to follow anywhere.
        assert response.status_code == 400
        assert "Location" not in response.headers
        return
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    # Already logged in, the GET form redirects at once: same rule.
    again = rig.client.get(f"/login?{urlencode({'next': target})}")
    assert again.headers["Location"] == "/"


def test_login_next_keeps_a_path_on_the_site(rig: Rig):
    token = csrf_token(rig.client.get("/login").text)
    response = rig.client.post(
        "/login", data={"csrf_token": token, "password": PASSWORD, "next": "/history?page=2"}
    )
    assert response.headers["Location"] == "/history?page=2"
