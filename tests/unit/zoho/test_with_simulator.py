"""The client, the token manager and connect, against the Zoho simulator in-process (real hosts)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from connector.context import AppContext
from connector.errors import AuthError, ReauthorizationRequired, WrongOrganizationError
from connector.models import Connection
from connector.sandbox.zoho import ZohoSimulator
from connector.zoho import service
from tests.unit.zoho.conftest import CLIENT_ID, CLIENT_SECRET


@pytest.fixture
def sim() -> Iterator[ZohoSimulator]:
    simulator = ZohoSimulator(real_hosts=True)
    simulator.register_client(CLIENT_ID, CLIENT_SECRET)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        simulator.mount(mock)
        simulator.rsps = mock  # type: ignore[attr-defined]
        yield simulator


def _connect(
    context: AppContext, sim: ZohoSimulator, dc: str, **kwargs: Any
) -> tuple[str, Connection]:
    code = sim.issue_grant_code(CLIENT_ID, dc)
    return code, service.connect_zoho(context, grant_code=code, location=dc, **kwargs)


@pytest.mark.parametrize(
    ("dc", "accounts_host", "api_host"),
    [
        ("us", "accounts.zoho.com", "www.zohoapis.com"),
        ("eu", "accounts.zoho.eu", "www.zohoapis.eu"),
        ("in", "accounts.zoho.in", "www.zohoapis.in"),
        ("ca", "accounts.zohocloud.ca", "www.zohoapis.ca"),
    ],
)
def test_connect_and_call_in_each_data_center(sim, context, dc, accounts_host, api_host):
    organization_id = sim.create_organization(dc, name=f"Org {dc}")
    _, connection = _connect(context, sim, dc, organization_id=organization_id)
    assert connection.data_center == dc
    assert connection.display_name == f"Org {dc}"
    client = service.build_zoho_client(context, connection, limiter=None)
    created = client.contacts.create({"contact_name": "Bowman and Co"})
    assert client.contacts.get(created["contact_id"])["contact_name"] == "Bowman and Co"
    calls = [c.request for c in sim.rsps.calls]
    assert urlsplit(calls[0].url).hostname == accounts_host
    for request in calls[1:]:
        parts = urlsplit(request.url)
        assert parts.hostname == api_host
        assert parts.path.startswith("/books/v3/")
        if parts.path != "/books/v3/organizations":
            assert parse_qs(parts.query)["organization_id"] == [organization_id]


def test_connect_refuses_an_organization_of_another_login(sim, context):
    sim.create_organization("eu", name="Mine")
    other = sim.create_organization("eu", name="Theirs", users=["someone-else@example.com"])
    with pytest.raises(WrongOrganizationError) as info:
        _connect(context, sim, "eu", organization_id=other)
    assert "Mine (organization_id" in str(info.value)


def test_a_code_taken_to_the_wrong_data_center_points_at_the_data_center(sim, context):
    organization_id = sim.create_organization("eu")
    code = sim.issue_grant_code(CLIENT_ID, "eu")
    with pytest.raises(AuthError) as info:
        service.connect_zoho(
            context, organization_id=organization_id, grant_code=code, location="us"
        )
    assert "data center" in str(info.value)


def test_paging_1050_contacts(sim, context):
    organization_id = sim.create_organization("eu")
    sim.bulk_create(
        organization_id, "contacts", [{"contact_name": f"Contact {i:04d}"} for i in range(1050)]
    )
    _, connection = _connect(context, sim, "eu", organization_id=organization_id)
    client = service.build_zoho_client(context, connection, limiter=None)
    before = len(sim.rsps.calls)
    names = {c["contact_name"] for c in client.contacts.iter()}
    assert len(names) == 1050
    assert len(sim.rsps.calls) - before == 6


def test_an_expired_token_is_refreshed_once_and_the_call_retried(sim, context):
    organization_id = sim.create_organization("in")
    _, connection = _connect(context, sim, "in", organization_id=organization_id)
    client = service.build_zoho_client(context, connection, limiter=None)
    sim.expire_access_tokens()
    assert client.organizations.list()[0]["organization_id"] == organization_id
    assert sim.refresh_count() == 1


def test_a_revoked_refresh_token_needs_reauthorization(sim, context, fake_redis):
    organization_id = sim.create_organization("eu")
    _, connection = _connect(context, sim, "eu", organization_id=organization_id)
    credentials = context.box.decrypt_json(connection.credentials_ciphertext)
    sim.accounts.revoke("eu", credentials["refresh_token"])
    fake_redis.delete(f"connector:zoho:token:{connection.id}")
    client = service.build_zoho_client(context, connection, limiter=None)
    with pytest.raises(ReauthorizationRequired):
        client.contacts.get("1")
    with context.session() as db:
        assert context.store(db).get(connection.id).status == "needs_reauth"


def test_the_shared_limiter_runs_with_the_simulator(sim, context, fake_redis):
    organization_id = sim.create_organization("eu", plan="free")
    _, connection = _connect(context, sim, "eu", organization_id=organization_id)
    client = service.build_zoho_client(context, connection)
    assert client.limiter is not None
    client.organizations.list()
    assert client.limiter.spent_today() == 1  # type: ignore[attr-defined]
