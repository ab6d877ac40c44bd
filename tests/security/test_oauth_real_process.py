"""The OAuth takeover attacks against the Procfile's real ``web`` process (issue 14).

``test_oauth_takeover.py`` plays every attack through Flask's test client with the simulators
behind ``responses``; here the same attacks go over real sockets to the gunicorn command of the
Procfile, and the recording attacker server (a thread of this test process) must receive
nothing. urllib is used: the harness mocks ``requests`` for the simulators.
"""

from __future__ import annotations

import http.cookiejar
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import pytest
import sqlalchemy as sa

from connector.models import Connection
from tests.security.attacker import Attacker
from tests.security.forms import csrf_token
from tests.security.test_procfile_web import Web, procfile_web

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "admin-password-for-real-process"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


@dataclass
class Browser:
    """A browser with its own cookies, talking to the real web process."""

    web: Web
    opener: urllib.request.OpenerDirector

    def request(
        self, path: str, form: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        data = urlencode(form).encode() if form is not None else None
        url = f"http://127.0.0.1:{self.web.port}{path}"
        try:
            with self.opener.open(urllib.request.Request(url, data=data), timeout=10) as answer:
                return answer.status, dict(answer.headers), answer.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode(errors="replace")

    def login(self) -> None:
        _, _, page = self.request("/login")
        status, headers, _ = self.request(
            "/login", {"csrf_token": csrf_token(page), "password": PASSWORD}
        )
        assert status == 302, (status, headers)
        assert headers["Location"] == "/"


def _browser(web: Web) -> Browser:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect)
    return Browser(web, opener)


@pytest.fixture
def real_web(tmp_path: Path, redis_url: str) -> Iterator[Web]:
    with procfile_web(tmp_path, redis_url, {"CONNECTOR_ADMIN_PASSWORD": PASSWORD}) as web:
        yield web


def _connections(web: Web) -> list[tuple[str, str]]:
    with web.world.context.session() as session:
        rows = session.scalars(sa.select(Connection).order_by(Connection.name)).all()
        return [(row.name, row.updated_at.isoformat() if row.updated_at else "") for row in rows]


def _started_state(browser: Browser) -> str:
    status, headers, _ = browser.request("/oauth/zoho/start?organization_id=777777&name=zoho-us")
    assert status == 302, status
    state = parse_qs(urlsplit(headers["Location"]).query)["state"][0]
    assert state
    return state


@pytest.mark.parametrize(
    "start", ["/oauth/zoho/start?organization_id=1&name=x", "/oauth/pipedrive/start"]
)
def test_real_process_start_needs_the_admin(real_web: Web, start: str):
    status, headers, _ = _browser(real_web).request(start)
    assert status == 302
    assert urlsplit(headers["Location"]).path == "/login"


def test_real_process_forged_state_sends_nothing_anywhere(real_web: Web, attacker: Attacker):
    before = _connections(real_web)
    browser = _browser(real_web)
    browser.login()
    query = urlencode({"code": "1000.code", "state": "forged", "accounts-server": attacker.url})
    status = browser.request(f"/oauth/zoho/callback?{query}")[0]
    assert 400 <= status < 500
    assert attacker.received == []
    assert _connections(real_web) == before


@pytest.mark.parametrize(
    "server",
    [
        "{attacker}",
        "https://accounts.zoho.com.evil.example",
        "https://evil.example/accounts.zoho.com",
    ],
)
def test_real_process_valid_state_with_a_foreign_accounts_server_sends_nothing(
    real_web: Web,
    attacker: Attacker,
    server: str,
):
    before = _connections(real_web)
    browser = _browser(real_web)
    browser.login()
    state = _started_state(browser)
    query = urlencode(
        {
            "code": "1000.code",
            "state": state,
            "accounts-server": server.format(attacker=attacker.url),
        }
    )
    status, _, page = browser.request(f"/oauth/zoho/callback?{query}")
    assert 400 <= status < 500, page[:500]
    assert attacker.received == []
    assert _connections(real_web) == before
    # The state was used up by the refused callback: replaying it with a good host does nothing.
    again = urlencode({"code": "1000.code", "state": state})
    assert 400 <= browser.request(f"/oauth/zoho/callback?{again}")[0] < 500


def test_real_process_state_is_bound_to_the_session_that_started_it(
    real_web: Web,
    attacker: Attacker,
):
    admin, other = _browser(real_web), _browser(real_web)
    admin.login()
    other.login()
    state = _started_state(admin)
    query = urlencode({"code": "1000.code", "state": state, "accounts-server": attacker.url})
    assert 400 <= other.request(f"/oauth/zoho/callback?{query}")[0] < 500
    assert attacker.received == []


# As they appear in an attacker's link (percent-encoded): `/%09/` is a tab, which browsers drop.
EVIL_NEXT = ["/%09/evil.example", "//evil.example", "/%5Cevil.example", "https://evil.example"]


@pytest.mark.parametrize("target", EVIL_NEXT)
def test_real_process_login_next_stays_on_the_site(real_web: Web, target: str):
    browser = _browser(real_web)
    _, _, page = browser.request(f"/login?next={target}")
    status, headers, _ = browser.request(
        "/login", {"csrf_token": csrf_token(page), "password": PASSWORD, "next": unquote(target)}
    )
    assert status == 302
    assert headers["Location"] == "/"
    # Logged in, the link itself redirects at once: same rule, on the raw query string.
    status, headers, _ = browser.request(f"/login?next={target}")
    assert status == 302
    assert headers["Location"] == "/"


def test_real_process_confirm_needs_csrf(real_web: Web):
    browser = _browser(real_web)
    browser.login()
    status, _, _ = browser.request("/oauth/confirm", {"pending": "anything"})
    assert status in (400, 403)
