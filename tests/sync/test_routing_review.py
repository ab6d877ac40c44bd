"""Organizations no routing rule places: a review item each, never a stopped pull."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from connector.cli import main
from connector.cli.common import set_context
from connector.models import AuditEntry, Link, ReviewItem
from connector.sync.engine import engine_session
from tests.harness import COMPANY, world

PASSWORD = "routing review password"
RULES = '[routing]\nrules = { "Germany" = "zoho-eu", "United States" = "zoho-us" }\n'


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "mapping.toml"
    path.write_text(RULES)
    return path


@pytest.fixture
def w(tmp_path, redis_url, config_file):
    extra = {"CONNECTOR_CONFIG": str(config_file), "CONNECTOR_ADMIN_PASSWORD": PASSWORD}
    with world(
        f"sqlite:///{tmp_path / 'c.db'}",
        redis_url,
        data_centers=("us", "eu"),
        settings_extra=extra,
    ) as built:
        set_context(built.context)
        yield built
        set_context(None)


def _org(w, name: str, country: str | None) -> str:
    body: dict[str, Any] = {"name": name}
    if country:
        body["address"] = {"value": f"1 Street, {country}", "country": country}
    return str(w.pipedrive.app_create(COMPANY, "organizations", body)["id"])


def _contacts(w, dc: str) -> list[str]:
    contacts = w.zoho.store.orgs[w.zoho_orgs[dc]].contacts.values()
    return sorted(str(c["contact_name"]) for c in contacts)


def _items(w) -> list[ReviewItem]:
    with w.context.session() as session:
        return list(session.scalars(sa.select(ReviewItem).order_by(ReviewItem.id)))


def _pull(w) -> int:
    with engine_session(w.context, trigger="schedule") as engine:
        return engine.pull_pipedrive(w.pipedrive_connection)


def _linked_zoho(w, org_id: str) -> Any:
    with w.context.session() as session:
        return session.scalar(sa.select(Link).where(Link.pipedrive_id == org_id))


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF field"
    return found.group(1)


def test_one_unroutable_organization_does_not_stop_the_pull(w):
    _org(w, "Bergmann GmbH", "Germany")
    nowhere = _org(w, "Nowhere Ltd", None)
    _org(w, "Acme Inc", "United States")
    assert _pull(w) == 3
    assert _contacts(w, "eu") == ["Bergmann GmbH"]
    assert _contacts(w, "us") == ["Acme Inc"]
    (item,) = _items(w)
    assert (item.kind, item.entity, item.record_id, item.status) == (
        "routing",
        "organization",
        nowhere,
        "open",
    )
    assert "Nowhere Ltd" in item.summary
    assert "no rule matches address.country = None" in item.summary
    assert _linked_zoho(w, nowhere) is None
    with w.context.session() as session:
        row = session.scalars(sa.select(AuditEntry).where(AuditEntry.pipedrive_id == nowhere)).one()
    assert (row.action, row.outcome) == ("review", "review")
    # Pulling again neither creates it nor opens a second item.
    _pull(w)
    assert len(_items(w)) == 1
    assert sorted(_contacts(w, "eu") + _contacts(w, "us")) == ["Acme Inc", "Bergmann GmbH"]


def test_review_create_with_zoho_creates_and_links_it_there(w):
    nowhere = _org(w, "Nowhere Ltd", None)
    _pull(w)
    (item,) = _items(w)
    result = CliRunner().invoke(main, ["review", "create", str(item.id), "--zoho", "zoho-eu"])
    assert result.exit_code == 0, result.output
    assert _contacts(w, "eu") == ["Nowhere Ltd"]
    assert _contacts(w, "us") == []
    link = _linked_zoho(w, nowhere)
    assert link is not None
    assert link.zoho_connection_id == w.zoho_connections["eu"]
    (item,) = _items(w)
    assert item.status == "resolved"
    # Without --zoho it says what is missing instead of guessing.
    other = _org(w, "Elsewhere Ltd", None)
    _pull(w)
    second = next(i for i in _items(w) if i.record_id == other)
    refused = CliRunner().invoke(main, ["review", "create", str(second.id)])
    assert refused.exit_code != 0
    assert "--zoho NAME" in str(refused.exception)


def test_item_closes_by_itself_once_routing_places_it(w, config_file):
    nowhere = _org(w, "Nowhere Ltd", None)
    _pull(w)
    assert [i.status for i in _items(w)] == ["open"]
    config_file.write_text(RULES + 'default = "zoho-us"\n')
    # The organization did not change: the pull still comes back to it for the new [routing].
    _pull(w)
    assert [i.status for i in _items(w)] == ["resolved"]
    assert _contacts(w, "us") == ["Nowhere Ltd"]
    link = _linked_zoho(w, nowhere)
    assert link is not None
    assert link.zoho_connection_id == w.zoho_connections["us"]


def test_review_page_offers_one_create_button_per_zoho_connection(w):
    from web import create_app, ui

    nowhere = _org(w, "Nowhere Ltd", None)
    _pull(w)
    (item,) = _items(w)
    app = create_app({"CONNECTOR_CONTEXT": w.context, "CONNECTOR_ENQUEUE": lambda *a: None})
    ui.register(app)
    client = app.test_client()
    token = _csrf(client.get("/login").text)
    client.post("/login", data={"csrf_token": token, "password": PASSWORD, "next": "/"})
    page = client.get("/review").text
    assert "Nowhere Ltd" in page
    assert page.count(f'action="/review/{item.id}/create"') == 2
    assert 'name="zoho" value="zoho-eu"' in page
    assert 'name="zoho" value="zoho-us"' in page
    token = _csrf(page)
    refused = client.post(f"/review/{item.id}/create", data={"zoho": "zoho-eu"})
    assert refused.status_code == 400
    assert _contacts(w, "eu") == []
    response = client.post(
        f"/review/{item.id}/create", data={"csrf_token": token, "zoho": "zoho-eu"}
    )
    assert response.status_code == 302
    assert _contacts(w, "eu") == ["Nowhere Ltd"]
    assert _linked_zoho(w, nowhere) is not None
    assert [i.status for i in _items(w)] == ["resolved"]


def test_ignoring_a_routing_item_audits_the_pipedrive_organization(w):
    nowhere = _org(w, "Nowhere Ltd", None)
    _pull(w)
    (item,) = _items(w)
    result = CliRunner().invoke(main, ["review", "ignore", str(item.id)])
    assert result.exit_code == 0, result.output
    with w.context.session() as session:
        row = session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "ignore")).one()
    assert (row.pipedrive_id, row.zoho_id) == (nowhere, "")
    assert row.pipedrive_connection_id == w.pipedrive_connection
    assert row.zoho_connection_id is None
    assert [i.status for i in _items(w)] == ["ignored"]


def test_item_of_an_organization_deleted_in_pipedrive_closes(w, config_file):
    nowhere = _org(w, "Nowhere Ltd", None)
    _pull(w)
    w.pipedrive.app_delete(COMPANY, "organizations", int(nowhere))
    config_file.write_text(RULES + 'default = "zoho-us"\n')
    _pull(w)
    assert [i.status for i in _items(w)] == ["resolved"]
    assert _contacts(w, "us") == []
