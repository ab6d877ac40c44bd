"""Status pages through Flask's test client: login, CSRF, cookie flags, actions, metrics."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from connector.context import AppContext
from connector.errors import ApiError, ConnectorError
from connector.models import AuditEntry, DeadLetter, ReviewItem
from tests.unit.web.seed import PASSWORD, make_context, seed
from web import auth, create_app, ui

GET_PAGES = [
    "/",
    "/budget",
    "/queues",
    "/history",
    "/records/zoho/contact/460000000026049",
    "/review",
    "/dead-letters",
]


def _app(context: AppContext, **config: Any) -> Flask:
    app = create_app({"CONNECTOR_CONTEXT": context, "CONNECTOR_ENQUEUE": lambda *a: None, **config})
    ui.register(app)
    return app


@pytest.fixture
def context(tmp_path: Path, fake_redis: Any) -> Iterator[AppContext]:
    ctx = make_context(f"sqlite:///{tmp_path / 'ui.db'}", fake_redis)
    yield ctx
    ctx.close()


@pytest.fixture
def ids(context: AppContext) -> dict[str, int]:
    return seed(context)


@pytest.fixture
def client(context: AppContext, ids: dict[str, int]) -> FlaskClient:
    return _app(context, TESTING=True).test_client()


def _token(client: FlaskClient, path: str = "/login") -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert match, f"no CSRF field on {path}"
    return match.group(1)


def _login(client: FlaskClient) -> str:
    response = client.post(
        "/login", data={"csrf_token": _token(client), "password": PASSWORD, "next": "/"}
    )
    assert response.status_code == 302
    return _token(client, "/review")


@pytest.mark.parametrize("path", GET_PAGES)
def test_every_page_redirects_to_login(client: FlaskClient, path: str):
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("path", ["/review/1/ignore", "/dead-letters/1/retry", "/logout"])
def test_posts_need_login(client: FlaskClient, path: str):
    response = client.post(path, data={})
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_pages_open_after_login(client: FlaskClient):
    _login(client)
    for path in GET_PAGES:
        response = client.get(path)
        assert response.status_code == 200, path
        assert "Log out" in response.text


def test_overview_shows_reauthorization_link(client: FlaskClient):
    _login(client)
    page = client.get("/").text
    assert "needs re-authorization" in page
    assert 'href="/oauth/zoho/start?organization_id=60012345&amp;name=zoho-in"' in page
    assert "Acme GmbH" in page


def test_webhooks_and_health_stay_open(client: FlaskClient):
    assert client.get("/healthz").status_code == 200


def test_wrong_password_is_refused(client: FlaskClient):
    response = client.post("/login", data={"csrf_token": _token(client), "password": "nope"})
    assert response.status_code == 401
    assert "Wrong password." in response.text
    assert client.get("/").status_code == 302


def test_login_is_rate_limited(client: FlaskClient):
    token = _token(client)
    for _ in range(auth.LOGIN_ATTEMPTS):
        assert client.post("/login", data={"csrf_token": token, "password": "x"}).status_code == 401
    blocked = client.post("/login", data={"csrf_token": token, "password": PASSWORD})
    assert blocked.status_code == 429
    assert client.get("/").status_code == 302


def test_login_needs_csrf(client: FlaskClient):
    client.get("/login")
    assert client.post("/login", data={"password": PASSWORD}).status_code == 400


def test_next_cannot_leave_the_site(client: FlaskClient):
    response = client.post(
        "/login",
        data={"csrf_token": _token(client), "password": PASSWORD, "next": "//evil.example/"},
    )
    assert response.headers["Location"] == "/"


def test_no_password_closes_the_pages(tmp_path: Path, fake_redis: Any):
    context = make_context(f"sqlite:///{tmp_path / 'closed.db'}", fake_redis, password="")
    client = _app(context, TESTING=True).test_client()
    for path in ["/", "/login", "/history"]:
        response = client.get(path)
        assert response.status_code == 503
        assert "CONNECTOR_ADMIN_PASSWORD" in response.text
    assert client.post("/login", data={"password": ""}).status_code == 503


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_post_without_valid_csrf_is_400(
    client: FlaskClient, context: AppContext, ids: dict[str, int], token: str | None
):
    _login(client)
    data = {} if token is None else {"csrf_token": token}
    response = client.post(f"/review/{ids['review']}/ignore", data=data)
    assert response.status_code == 400
    with context.session() as session:
        assert _review_status(session, ids["review"]) == "open"


def test_ignore_writes_audit_and_closes_item(
    client: FlaskClient, context: AppContext, ids: dict[str, int]
):
    token = _login(client)
    response = client.post(
        f"/review/{ids['review']}/ignore", data={"csrf_token": token}, follow_redirects=True
    )
    assert response.status_code == 200
    assert "ignored" in response.text
    assert "Nothing to review." in response.text
    with context.session() as session:
        assert _review_status(session, ids["review"]) == "ignored"
        assert (
            session.scalar(
                sa.select(sa.func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.action == "ignore", AuditEntry.trigger == "review")
            )
            == 1
        )


def test_review_api_error_is_a_message(
    client: FlaskClient, ids: dict[str, int], monkeypatch: pytest.MonkeyPatch
):
    def refuse(context: AppContext, item_id: int, pipedrive_id: str) -> str:
        raise ApiError("Pipedrive answered 404: organization not found", system="pipedrive")

    monkeypatch.setattr("connector.sync.review.resolve_link", refuse)
    token = _login(client)
    response = client.post(
        f"/review/{ids['review']}/link",
        data={"csrf_token": token, "candidate": "901"},
        follow_redirects=True,
    )
    assert response.status_code == 200
    assert "link failed" in response.text
    assert "Pipedrive answered 404: organization not found" in response.text


def test_review_link_needs_an_id(client: FlaskClient, ids: dict[str, int]):
    token = _login(client)
    response = client.post(
        f"/review/{ids['review']}/link", data={"csrf_token": token}, follow_redirects=True
    )
    assert "Choose a candidate or type a Pipedrive id" in response.text


@pytest.mark.parametrize("succeeds", [True, False])
def test_dead_letter_retry_updates_the_row(
    client: FlaskClient,
    context: AppContext,
    ids: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
    succeeds: bool,
):
    calls: list[tuple[str, list[Any], dict[str, Any]]] = []

    def replay(ctx: AppContext, task_name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        calls.append((task_name, args, kwargs))
        if not succeeds:
            raise ConnectorError("still invalid")
        return "ok"

    monkeypatch.setattr("connector.sync.service.replay", replay)
    token = _login(client)
    response = client.post(
        f"/dead-letters/{ids['dead_letter']}/retry",
        data={"csrf_token": token},
        follow_redirects=True,
    )
    assert response.status_code == 200
    assert calls == [("workers.tasks.sync_record", [ids["zoho"], "contact", "460000000026077"], {})]
    with context.session() as session:
        letter = session.get(DeadLetter, ids["dead_letter"])
        assert letter is not None
        assert letter.retried_at is not None
        if succeeds:
            assert letter.status == "retried"
            assert letter.attempts == 5
        else:
            assert letter.status == "failed"
            assert letter.attempts == 6
            assert "failed again: still invalid" in letter.error
            assert "failed again: still invalid" in response.text


def test_history_filters_and_pages(client: FlaskClient, context: AppContext):
    with context.session() as session:
        for number in range(ui.HISTORY_PAGE_SIZE + 5):
            session.add(
                AuditEntry(
                    trigger="schedule",
                    entity="organization",
                    pipedrive_id=f"p{number}",
                    outcome="ok",
                    action="update",
                )
            )
    _login(client)
    first = client.get("/history?entity=organization").text
    assert first.count("<details>") == ui.HISTORY_PAGE_SIZE
    assert "page=2" in first
    second = client.get("/history?entity=organization&page=2").text
    assert second.count("<details>") == 5
    failed = client.get("/history?outcome=failed").text
    assert failed.count("<details>") == 1
    assert "email is invalid" in failed
    assert client.get("/history?text=460000000031001").text.count("<details>") == 1


def test_record_page_shows_links_and_history(client: FlaskClient):
    _login(client)
    page = client.get("/records/pipedrive/deal/3301").text
    assert "INV-000123" in page
    assert "/records/zoho/invoice/460000000031001" in page
    assert client.get("/records/other/x/1").status_code == 404


def _cookie_header(app: Flask) -> str:
    client = app.test_client()
    client.get("/login")
    response = client.post("/login", data={"csrf_token": _token(client), "password": PASSWORD})
    return response.headers["Set-Cookie"]


def test_cookie_is_secure_on_https(tmp_path: Path, fake_redis: Any):
    context = make_context(
        f"sqlite:///{tmp_path / 'c.db'}",
        fake_redis,
        extra={"CONNECTOR_PUBLIC_URL": "https://sync.example.com"},
    )
    header = _cookie_header(_app(context))
    assert "Secure" in header
    assert "HttpOnly" in header
    assert "SameSite=Lax" in header


@pytest.mark.parametrize(
    ("public_url", "testing"), [("http://localhost:5000", False), ("https://x.example", True)]
)
def test_secure_relaxed_only_for_localhost_or_testing(
    tmp_path: Path, fake_redis: Any, public_url: str, testing: bool
):
    context = make_context(
        f"sqlite:///{tmp_path / 'c.db'}", fake_redis, extra={"CONNECTOR_PUBLIC_URL": public_url}
    )
    header = _cookie_header(_app(context, TESTING=testing))
    assert "Secure" not in header
    assert "HttpOnly" in header
    assert "SameSite=Lax" in header


def test_plain_http_elsewhere_keeps_secure(tmp_path: Path, fake_redis: Any):
    context = make_context(
        f"sqlite:///{tmp_path / 'c.db'}",
        fake_redis,
        extra={"CONNECTOR_PUBLIC_URL": "http://sync.example.com"},
    )
    assert "Secure" in _cookie_header(_app(context))


def _review_status(session: Any, item_id: int) -> str:
    item = session.get(ReviewItem, item_id)
    assert item is not None
    return str(item.status)
