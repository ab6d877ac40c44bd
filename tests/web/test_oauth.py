"""OAuth connect flows through the web app, against the Zoho and Pipedrive simulators.

The simulators answer on the real hosts through ``responses``; the user's browser is played by
following the redirects by hand: start -> consent screen (simulator) -> callback. The flows are
admin-only since issue 14, so the rig's browser logs in first (the attacks themselves are in
``tests/security/test_oauth_takeover.py``).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
import responses
import time_machine
from flask.testing import FlaskClient

from connector.context import AppContext
from connector.db import upgrade
from connector.models import Connection
from connector.sandbox.common import Clock
from connector.sandbox.pipedrive import PipedriveSimulator
from connector.sandbox.zoho import ZohoSimulator
from tests.harness import CLIENT_ID, CLIENT_SECRET, make_settings
from web import create_app
from web.oauth import STATE_MAX_AGE

PD_CLIENT_ID = "pd-oauth-client"
PD_CLIENT_SECRET = "pd-oauth-client-secret-value"
COMPANY = "acme"
PASSWORD = "admin-password-for-oauth-tests"


@dataclass
class Rig:
    """The web app on a fresh database, both simulators mounted on the real hosts."""

    client: FlaskClient
    context: AppContext
    zoho: ZohoSimulator
    pipedrive: PipedriveSimulator
    rsps: responses.RequestsMock

    def connections(self, system: str) -> list[Connection]:
        with self.context.session() as session:
            return list(self.context.store(session).list(system))

    def token_calls(self) -> list[str]:
        """URLs of every token-endpoint request made so far (scheme, host and path)."""
        urls = []
        for call in self.rsps.calls:
            parts = urlsplit(call.request.url or "")
            if parts.path.endswith("/token"):
                urls.append(f"{parts.scheme}://{parts.netloc}{parts.path}")
        return urls


def _rig(tmp_path: Path, redis_url: str, **extra: str) -> Iterator[Rig]:
    settings = make_settings(
        f"sqlite:///{tmp_path / 'oauth.db'}", redis_url, CONNECTOR_ADMIN_PASSWORD=PASSWORD, **extra
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
        zoho.mount(rsps)
        pipedrive.mount(rsps)
        zoho.register_client(CLIENT_ID, CLIENT_SECRET)
        pipedrive.create_company(COMPANY)
        pipedrive.register_oauth_client(PD_CLIENT_ID, PD_CLIENT_SECRET)
        client = app.test_client()
        _login(client)
        yield Rig(client, context, zoho, pipedrive, rsps)
    context.close()


def _login(client: FlaskClient) -> None:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert match
    response = client.post("/login", data={"csrf_token": match.group(1), "password": PASSWORD})
    assert response.status_code == 302


@pytest.fixture
def rig(tmp_path: Path, redis_url: str) -> Iterator[Rig]:
    yield from _rig(
        tmp_path,
        redis_url,
        PIPEDRIVE_CLIENT_ID=PD_CLIENT_ID,
        PIPEDRIVE_CLIENT_SECRET=PD_CLIENT_SECRET,
    )


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _start_zoho(rig: Rig, organization_id: str, name: str = "zoho-eu") -> str:
    response = rig.client.get(f"/oauth/zoho/start?organization_id={organization_id}&name={name}")
    assert response.status_code == 302, response.text
    return str(response.headers["Location"])


def _consent(url: str) -> dict[str, str]:
    """The browser at the provider's consent page: returns the callback's query parameters."""
    answer = requests.get(url, allow_redirects=False, timeout=5)
    assert answer.status_code == 302, answer.text
    return _query(answer.headers["Location"])


# Zoho ----------------------------------------------------------------------------------------


def test_zoho_start_sends_the_user_to_accounts_zoho_com_for_offline_consent(rig):
    location = _start_zoho(rig, "123456")
    parts = urlsplit(location)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "accounts.zoho.com",
        "/oauth/v2/auth",
    )
    query = _query(location)
    assert query["client_id"] == CLIENT_ID
    assert query["response_type"] == "code"
    assert query["access_type"] == "offline"
    assert query["prompt"] == "consent"
    assert "ZohoBooks.contacts.READ" in query["scope"].split(",")
    assert query["redirect_uri"].endswith("/oauth/zoho/callback")
    assert query["state"]
    # The state is an opaque token kept server-side, not a copy of the request.
    assert "123456" not in query["state"]


def test_zoho_start_needs_an_organization_id(rig):
    response = rig.client.get("/oauth/zoho/start")
    assert response.status_code == 400
    assert "organization_id" in response.text


def test_zoho_callback_for_an_eu_user_exchanges_the_code_in_the_eu(rig):
    org_id = rig.zoho.create_organization("eu", "Zillum GmbH")
    params = _consent(_start_zoho(rig, org_id))
    # Zoho sends the user to their own data center, whatever server the flow started at.
    assert params["location"] == "eu"
    assert params["accounts-server"] == "https://accounts.zoho.eu"
    response = rig.client.get(f"/oauth/zoho/callback?{urlencode(params)}")
    assert response.status_code == 200, response.text
    assert "Zillum GmbH" in response.text
    assert "EU data center" in response.text
    assert rig.token_calls() == ["https://accounts.zoho.eu/oauth/v2/token"]
    (connection,) = rig.connections("zoho")
    assert connection.name == "zoho-eu"
    assert connection.external_id == org_id
    assert connection.data_center == "eu"
    assert connection.api_base == "https://www.zohoapis.eu"
    assert connection.accounts_server == "https://accounts.zoho.eu"
    assert connection.status == "active"
    # The refresh token is stored encrypted, never in the clear.
    credentials = rig.context.box.decrypt_json(connection.credentials_ciphertext)
    assert credentials["refresh_token"]
    assert credentials["refresh_token"] not in connection.credentials_ciphertext


def _tamper(state: str) -> str:
    middle = len(state) // 2
    return state[:middle] + ("A" if state[middle] != "A" else "B") + state[middle + 1 :]


def test_zoho_callback_with_a_tampered_state_is_refused_and_stores_nothing(rig):
    org_id = rig.zoho.create_organization("eu", "Zillum GmbH")
    params = _consent(_start_zoho(rig, org_id))
    params["state"] = _tamper(params["state"])
    response = rig.client.get(f"/oauth/zoho/callback?{urlencode(params)}")
    assert response.status_code == 400
    assert "invalid state" in response.text
    assert rig.connections("zoho") == []
    assert rig.token_calls() == []


def test_zoho_callback_with_a_state_made_for_pipedrive_is_refused(rig):
    org_id = rig.zoho.create_organization("us", "Zillum Inc")
    params = _consent(_start_zoho(rig, org_id))
    pd_start = rig.client.get("/oauth/pipedrive/start")
    params["state"] = _query(pd_start.headers["Location"])["state"]
    response = rig.client.get(f"/oauth/zoho/callback?{urlencode(params)}")
    assert response.status_code == 400
    assert "invalid state" in response.text
    assert rig.connections("zoho") == []


def test_zoho_callback_with_an_expired_state_is_refused(rig):
    org_id = rig.zoho.create_organization("eu", "Zillum GmbH")
    params = _consent(_start_zoho(rig, org_id))
    with time_machine.travel(time.time() + STATE_MAX_AGE + 5, tick=False):
        response = rig.client.get(f"/oauth/zoho/callback?{urlencode(params)}")
    assert response.status_code == 400
    assert "took too long" in response.text
    assert rig.connections("zoho") == []
    assert rig.token_calls() == []


def test_zoho_consent_denied_shows_a_clear_page(rig):
    org_id = rig.zoho.create_organization("us", "Zillum Inc")
    rig.zoho.consent_denied = True
    params = _consent(_start_zoho(rig, org_id))
    assert params["error"] == "access_denied"
    response = rig.client.get(f"/oauth/zoho/callback?{urlencode(params)}")
    assert response.status_code == 400
    assert "Could not connect" in response.text
    assert "access_denied" in response.text
    assert rig.connections("zoho") == []


def test_zoho_callback_for_an_organization_the_login_cannot_see_names_the_ones_it_can(rig):
    rig.zoho.create_organization("us", "Visible Inc")
    params = _consent(_start_zoho(rig, "999999999"))
    response = rig.client.get(f"/oauth/zoho/callback?{urlencode(params)}")
    assert response.status_code == 400
    assert "999999999" in response.text
    assert "Visible Inc" in response.text
    assert rig.connections("zoho") == []


def test_zoho_start_without_client_credentials_is_a_500_with_a_message(tmp_path, redis_url):
    for rig in _rig(tmp_path, redis_url, ZOHO_CLIENT_ID="", ZOHO_CLIENT_SECRET=""):
        response = rig.client.get("/oauth/zoho/start?organization_id=123456")
        assert response.status_code == 500
        assert "ZOHO_CLIENT_ID" in response.text
        assert len(rig.rsps.calls) == 0


def test_error_pages_escape_what_the_provider_sent(rig):
    response = rig.client.get("/oauth/zoho/callback?error=%3Cscript%3Ealert(1)%3C/script%3E")
    assert response.status_code == 400
    assert "<script>" not in response.text
    assert "&lt;script&gt;" in response.text


# Pipedrive -----------------------------------------------------------------------------------


def _start_pipedrive(rig: Rig) -> str:
    response = rig.client.get("/oauth/pipedrive/start?name=crm&plan=growth&seats=3")
    assert response.status_code == 302, response.text
    return str(response.headers["Location"])


def test_pipedrive_start_sends_the_user_to_the_oauth_server(rig):
    location = _start_pipedrive(rig)
    parts = urlsplit(location)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "oauth.pipedrive.com",
        "/oauth/authorize",
    )
    query = _query(location)
    assert query["client_id"] == PD_CLIENT_ID
    assert query["redirect_uri"].endswith("/oauth/pipedrive/callback")
    assert query["state"]


def test_pipedrive_callback_stores_an_oauth_connection(rig):
    params = _consent(_start_pipedrive(rig))
    assert params["code"]
    response = rig.client.get(f"/oauth/pipedrive/callback?{urlencode(params)}")
    assert response.status_code == 200, response.text
    assert "Connected" in response.text
    assert rig.token_calls()[0] == "https://oauth.pipedrive.com/oauth/token"
    (connection,) = rig.connections("pipedrive")
    assert connection.name == "crm"
    assert connection.auth_kind == "oauth"
    assert connection.status == "active"
    assert connection.api_base == f"https://{COMPANY}.pipedrive.com"
    # Plan and seats chosen at start travel in the signed state and size the token budget.
    assert connection.options["company_domain"] == COMPANY
    assert (connection.options["plan"], connection.options["seats"]) == ("growth", 3)
    credentials: dict[str, Any] = rig.context.box.decrypt_json(connection.credentials_ciphertext)
    assert credentials.get("refresh_token")


def test_pipedrive_callback_with_a_code_issued_directly(rig):
    start = _query(_start_pipedrive(rig))
    code = rig.pipedrive.issue_authorization_code(PD_CLIENT_ID, COMPANY, start["redirect_uri"])
    response = rig.client.get(
        f"/oauth/pipedrive/callback?{urlencode({'code': code, 'state': start['state']})}"
    )
    assert response.status_code == 200, response.text
    assert len(rig.connections("pipedrive")) == 1


def test_pipedrive_callback_with_a_tampered_state_is_refused(rig):
    params = _consent(_start_pipedrive(rig))
    params["state"] = _tamper(params["state"])
    response = rig.client.get(f"/oauth/pipedrive/callback?{urlencode(params)}")
    assert response.status_code == 400
    assert "invalid state" in response.text
    assert rig.connections("pipedrive") == []
    assert rig.token_calls() == []


def test_pipedrive_callback_with_a_used_code_stores_nothing(rig):
    params = _consent(_start_pipedrive(rig))
    assert rig.client.get(f"/oauth/pipedrive/callback?{urlencode(params)}").status_code == 200
    with rig.context.session() as session:
        store = rig.context.store(session)
        store.delete(store.get("crm"))
    # A state works once (issue 14): the used code comes back with a fresh flow's state.
    params["state"] = _query(_start_pipedrive(rig))["state"]
    again = rig.client.get(f"/oauth/pipedrive/callback?{urlencode(params)}")
    assert again.status_code == 400
    assert rig.connections("pipedrive") == []


def test_pipedrive_denied_shows_a_clear_page(rig):
    response = rig.client.get("/oauth/pipedrive/callback?error=user_denied")
    assert response.status_code == 400
    assert "user_denied" in response.text
    assert rig.connections("pipedrive") == []


def test_pipedrive_start_without_client_credentials_is_a_500(tmp_path, redis_url):
    for rig in _rig(tmp_path, redis_url):
        response = rig.client.get("/oauth/pipedrive/start")
        assert response.status_code == 500
        assert "PIPEDRIVE_CLIENT_ID" in response.text
