"""The receiver and the pages under conditions an operator or an attacker can cause: a secret key
that cannot decrypt the stored connections, the database or Redis down, sessions across
processes and after logout, hostile input, missing headers.

Each test names the defence it holds (see docs/security-hardening.md).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from connector.context import AppContext
from connector.crypto import generate_key
from connector.sandbox.processes import free_port
from connector.settings import Secret
from connector.zoho.webhooks import SIGNATURE_HEADER, sign_zoho_webhook
from tests.harness import World, world
from tests.security.forms import csrf_token
from web import create_app

QUERY = {"event_type": "invoice.updated"}
PASSWORD = "correct horse battery staple"


@dataclass
class Env:
    world: World
    queued: list[tuple[str, list[Any], str]]
    zoho_secret: str

    def app(self, context: AppContext | None = None, **config: Any) -> Flask:
        """A fresh app, as another gunicorn process would build it."""
        return create_app(
            {
                "CONNECTOR_CONTEXT": context or self.world.context,
                "CONNECTOR_ENQUEUE": lambda task, args, queue: self.queued.append(
                    (task, args, queue)
                ),
                **config,
            }
        )


@pytest.fixture
def env(tmp_path, redis_url) -> Iterator[Env]:
    extra = {"CONNECTOR_ADMIN_PASSWORD": PASSWORD}
    with world(f"sqlite:///{tmp_path / 'c.db'}", redis_url, settings_extra=extra) as w:
        with w.context.session() as session:
            store = w.context.store(session)
            secret = str(store.webhook_secret(store.get("zoho-us"))["secret"])
        yield Env(w, [], secret)


def _invoice(w: World) -> bytes:
    return json.dumps(
        {
            "invoice": {
                "invoice_id": "4600001",
                "last_modified_time": "2026-03-02T10:00:00+0000",
                "organization_id": w.zoho_orgs["us"],
            }
        }
    ).encode()


def _post_zoho(client: FlaskClient, raw: bytes, secret: str) -> Any:
    signature = sign_zoho_webhook(secret, params=QUERY, raw_body=raw)
    return client.post(
        "/webhooks/zoho/zoho-us",
        query_string=QUERY,
        data=raw,
        content_type="application/json",
        headers={SIGNATURE_HEADER: signature},
    )


def _context_with(env: Env, **changes: Any) -> AppContext:
    return AppContext(settings=dataclasses.replace(env.world.context.settings, **changes))


def _closed_port_settings(env: Env, *, database: bool = False, redis: bool = False) -> AppContext:
    port = free_port()
    settings = env.world.context.settings
    return _context_with(
        env,
        database_url=(
            f"postgresql+psycopg2://postgres@127.0.0.1:{port}/nothing"
            if database
            else settings.database_url
        ),
        redis_url=f"redis://127.0.0.1:{port}/0" if redis else settings.redis_url,
    )


# Medium 4: a key that cannot decrypt, the database or Redis down ------------------------------


def test_wrong_secret_key_makes_webhooks_answer_503_with_retry_after(env):
    wrong = _context_with(env, secret_keys=(Secret(generate_key()),))
    client = env.app(wrong).test_client()
    answer = _post_zoho(client, _invoice(env.world), env.zoho_secret)
    assert answer.status_code == 503, answer.get_data(as_text=True)
    assert int(answer.headers["Retry-After"]) > 0
    assert env.queued == []
    pipedrive = client.post(
        "/webhooks/pipedrive/pipedrive",
        data=b"{}",
        content_type="application/json",
        headers={"Authorization": "Basic dXNlcjpwYXNz"},
    )
    assert pipedrive.status_code == 503
    assert "Retry-After" in pipedrive.headers


def test_wrong_secret_key_makes_readyz_not_ready_naming_the_connection(env):
    wrong = _context_with(env, secret_keys=(Secret(generate_key()),))
    client = env.app(wrong).test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    body = ready.get_json()
    assert body["status"] == "not ready"
    assert "the key cannot decrypt connection zoho-us" in body["checks"]["connections"]
    assert client.get("/healthz").status_code == 200


def test_readyz_is_ready_and_checks_connections_with_the_right_key(env):
    ready = env.app().test_client().get("/readyz")
    assert ready.status_code == 200, ready.get_json()
    assert ready.get_json()["checks"]["connections"] == "ok"


def test_database_down_makes_webhooks_and_readyz_answer_503(env):
    client = env.app(_closed_port_settings(env, database=True)).test_client()
    answer = _post_zoho(client, _invoice(env.world), env.zoho_secret)
    assert answer.status_code == 503
    assert "Retry-After" in answer.headers
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["database"].startswith("error")
    assert client.get("/healthz").status_code == 200


def test_readyz_without_redis_is_not_ready_instead_of_500(env):
    client = env.app(_closed_port_settings(env, redis=True)).test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503, ready.get_data(as_text=True)
    checks = ready.get_json()["checks"]
    assert checks["redis"].startswith("error")
    assert checks["broker"].startswith("error")


# Medium 2: one session for every process; logout ends it server-side ---------------------------

COOKIE = "connector_session"


def _csrf(client: FlaskClient, path: str = "/login") -> str:
    return csrf_token(client.get(path).text)


def _log_in(client: FlaskClient) -> str:
    answer = client.post("/login", data={"csrf_token": _csrf(client), "password": PASSWORD})
    assert answer.status_code == 302, answer.text
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None
    return cookie.value


def _with_cookie(app: Flask, value: str) -> FlaskClient:
    client = app.test_client()
    client.set_cookie(COOKIE, value)
    return client


def test_session_opened_on_one_process_is_valid_on_another(env):
    # Two apps built separately, as two gunicorn workers (or two dynos) build theirs.
    first, second = env.app(TESTING=True), env.app(TESTING=True)
    cookie = _log_in(first.test_client())
    answer = _with_cookie(second, cookie).get("/review")
    assert answer.status_code == 200, answer.headers.get("Location")


def test_logout_ends_the_session_for_a_replayed_cookie(env):
    first, second = env.app(TESTING=True), env.app(TESTING=True)
    client = first.test_client()
    cookie = _log_in(client)
    token = _csrf(client, "/review")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    for app in (first, second):
        replayed = _with_cookie(app, cookie).get("/review")
        assert replayed.status_code == 302
        assert replayed.headers["Location"].startswith("/login")


def test_a_new_login_does_not_revive_a_logged_out_cookie(env):
    app = env.app(TESTING=True)
    client = app.test_client()
    old = _log_in(client)
    client.post("/logout", data={"csrf_token": _csrf(client, "/review")})
    _log_in(app.test_client())
    assert _with_cookie(app, old).get("/review").status_code == 302


# Low: no 500 for any input ---------------------------------------------------------------------


@pytest.fixture
def pg_env(postgres_url, redis_url) -> Iterator[Env]:
    # PostgreSQL refuses NUL characters and bounds integers: what would only fail in production
    # fails here too.
    extra = {"CONNECTOR_ADMIN_PASSWORD": PASSWORD}
    with world(postgres_url, redis_url, settings_extra=extra) as w:
        with w.context.session() as session:
            store = w.context.store(session)
            secret = str(store.webhook_secret(store.get("zoho-us"))["secret"])
        yield Env(w, [], secret)
        w.context.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"invoice": ' * 5_000 + b"1" + b"}" * 5_000,
        b'{"invoice": {"invoice_id": "46\\u0000", "organization_id": "1\\u0000"}}',
        b'{"invoice": {"invoice_id": "46\x00"}}',
        b'{"invoice": {"invoice_id": "\xff\xfe\xfa"}}',
        b"\xff" * 64,
        b'{"invoice": {"invoice_id": 1e999999, "last_modified_time": "\\ud800"}}',
    ],
    ids=["nested-arrays", "nested-objects", "escaped-nul", "raw-nul", "bad-utf8", "binary", "odd"],
)
def test_signed_hostile_bodies_never_get_a_5xx(pg_env, raw):
    client = pg_env.app().test_client()
    answer = _post_zoho(client, raw, pg_env.zoho_secret)
    assert answer.status_code < 500, answer.get_data(as_text=True)[:300]


def _logged_in(env: Env) -> FlaskClient:
    client = env.app().test_client()
    _log_in(client)
    return client


@pytest.mark.parametrize(
    "path",
    [
        "/history?page=99999999999999999999",
        "/history?page=-3",
        "/history?page=abc",
        "/history?page=9223372036854775807",
        "/history?connection=99999999999999999999",
        "/history?text=%00",
        "/history?entity=%00&outcome=%FF",
        "/records/zoho/contact/%00",
        "/records/zoho/contact/%FF%FE",
        "/records/pipedrive/deal/" + "9" * 5000,
        "/records/zoho/%00/1",
        "/dead-letters?show=%00",
        "/review/abc/link",
        "/dead-letters/abc/retry",
    ],
)
def test_pages_never_answer_5xx_for_hostile_urls(pg_env, path):
    client = _logged_in(pg_env)
    answer = client.get(path)
    assert answer.status_code < 500, answer.get_data(as_text=True)[:300]


@pytest.mark.parametrize(
    "path",
    ["/review/99999999999999999999/ignore", "/dead-letters/99999999999999999999/retry"],
)
def test_actions_on_out_of_range_ids_never_answer_5xx(pg_env, path):
    client = _logged_in(pg_env)
    token = _csrf(client, "/review")
    answer = client.post(path, data={"csrf_token": token})
    assert answer.status_code < 500, answer.get_data(as_text=True)[:300]


def test_pages_answer_503_while_the_database_is_down(env):
    client = env.app().test_client()
    _log_in(client)
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None
    down = env.app(_closed_port_settings(env, database=True)).test_client()
    down.set_cookie(COOKIE, cookie.value)
    for path in ("/", "/login", "/history"):
        assert down.get(path).status_code == 503, path


# Low: security headers and cookie flags --------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/login", "/", "/history", "/records/zoho/contact/1", "/nothing-here"]
)
def test_every_html_page_carries_the_security_headers(env, path):
    client = env.app().test_client()
    if path != "/login":
        _log_in(client)
    answer = client.get(path)
    assert answer.mimetype == "text/html", (path, answer.status_code)
    policy = answer.headers["Content-Security-Policy"]
    for directive in ("default-src 'self'", "frame-ancestors 'none'", "object-src 'none'"):
        assert directive in policy
    assert "script-src 'unsafe-inline'" not in policy
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["Referrer-Policy"] == "same-origin"


def test_webhook_and_health_answers_are_not_sniffable(env):
    client = env.app().test_client()
    assert client.get("/healthz").headers["X-Content-Type-Options"] == "nosniff"
    answer = client.post("/webhooks/zoho/zoho-us", data=b"{}", content_type="application/json")
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_session_cookie_is_httponly_samesite_lax_and_secure_behind_https(env):
    # The world's CONNECTOR_PUBLIC_URL is https.
    client = env.app().test_client()
    client.post("/login", data={"csrf_token": _csrf(client), "password": PASSWORD})
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None
    assert cookie.http_only
    assert cookie.secure
    assert cookie.same_site == "Lax"


# Low: login throttling per client address, through trusted proxies only ------------------------


def _proxied_env(env: Env, trusted: int) -> Flask:
    settings = dataclasses.replace(env.world.context.settings, trusted_proxies=trusted)
    return env.app(AppContext(settings=settings))


def _login_from(app: Flask, forwarded_for: str, password: str, proxy: str = "10.0.0.1") -> int:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = proxy
    headers = {"X-Forwarded-For": forwarded_for, "X-Forwarded-Proto": "https"}
    token = _csrf_with(client, headers)
    answer = client.post(
        "/login", data={"csrf_token": token, "password": password}, headers=headers
    )
    return answer.status_code


def _csrf_with(client: FlaskClient, headers: dict[str, str]) -> str:
    return csrf_token(client.get("/login", headers=headers).text)


def test_login_throttle_behind_a_trusted_proxy_does_not_lock_out_other_addresses(env):
    from web import auth

    app = _proxied_env(env, trusted=1)
    for _ in range(auth.LOGIN_ATTEMPTS):
        assert _login_from(app, "203.0.113.5", "wrong") == 401
    assert _login_from(app, "203.0.113.5", PASSWORD) == 429
    # Every client comes through the same proxy; the admin elsewhere still gets in.
    assert _login_from(app, "198.51.100.7", PASSWORD) == 302


def test_login_throttle_ignores_forwarded_for_without_trusted_proxies(env):
    from web import auth

    app = _proxied_env(env, trusted=0)
    for attempt in range(auth.LOGIN_ATTEMPTS):
        assert _login_from(app, f"192.0.2.{attempt}", "wrong", proxy="203.0.113.9") == 401
    # A fresh spoofed X-Forwarded-For does not buy fresh attempts.
    assert _login_from(app, "192.0.2.200", PASSWORD, proxy="203.0.113.9") == 429


def test_login_throttle_uses_the_address_the_trusted_proxy_appended(env):
    from web import auth

    app = _proxied_env(env, trusted=1)
    for attempt in range(auth.LOGIN_ATTEMPTS):
        spoofed = f"192.0.2.{attempt}, 203.0.113.5"
        assert _login_from(app, spoofed, "wrong") == 401
    assert _login_from(app, "192.0.2.250, 203.0.113.5", PASSWORD) == 429


def test_trusted_proxies_setting_is_validated():
    from connector.errors import ConfigError
    from connector.settings import Settings

    base = {"CONNECTOR_SECRET_KEY": generate_key()}
    assert Settings.from_env(base, dotenv_path=None).trusted_proxies == 0
    assert (
        Settings.from_env(
            {**base, "CONNECTOR_TRUSTED_PROXIES": "2"}, dotenv_path=None
        ).trusted_proxies
        == 2
    )
    with pytest.raises(ConfigError, match="CONNECTOR_TRUSTED_PROXIES"):
        Settings.from_env({**base, "CONNECTOR_TRUSTED_PROXIES": "-1"}, dotenv_path=None)
