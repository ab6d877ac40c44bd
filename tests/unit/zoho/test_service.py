"""connect / build client / ping / scheduled refresh, against a fake Zoho on ``responses``."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
import sqlalchemy as sa
import time_machine
from click.testing import CliRunner

from connector.cli.common import set_context
from connector.connections import ConnectionStore
from connector.context import AppContext
from connector.crypto import SecretBox, generate_key
from connector.errors import ConfigError, ReauthorizationRequired, WrongOrganizationError
from connector.models import Connection
from connector.settings import Secret
from connector.zoho import service
from connector.zoho.regions import DATA_CENTERS
from tests.unit.zoho.conftest import ORG_ID, REFRESH_TOKEN, FakeZoho, make_context


def _connect(context: AppContext, **kwargs: Any) -> Connection:
    kwargs.setdefault("organization_id", ORG_ID)
    if "refresh_token" not in kwargs:
        kwargs.setdefault("grant_code", "1000.grant.code")
    return service.connect_zoho(context, **kwargs)


@pytest.mark.parametrize("dc", ["us", "eu", "in", "ca"])
def test_connect_exchanges_at_the_data_center_and_calls_its_api_domain(rsps, context, dc):
    fake = FakeZoho(rsps, dc=dc).install()
    connection = _connect(context, location=dc)
    token_call, orgs_call = rsps.calls[0].request, rsps.calls[1].request
    assert token_call.url == f"{DATA_CENTERS[dc].accounts_server}/oauth/v2/token"
    assert orgs_call.url == f"{DATA_CENTERS[dc].api_domain}/books/v3/organizations"
    assert connection.data_center == dc
    assert connection.accounts_server == DATA_CENTERS[dc].accounts_server
    assert connection.api_base == DATA_CENTERS[dc].api_domain
    assert connection.display_name == "Zillum"
    assert connection.options["plan_name"] == "PROFESSIONAL"
    if dc == "ca":
        assert urlsplit(token_call.url).hostname == "accounts.zohocloud.ca"
        assert urlsplit(orgs_call.url).hostname == "www.zohoapis.ca"

    rsps.add(
        responses.GET,
        f"{fake.api}/books/v3/contacts/1",
        json={"code": 0, "contact": {"contact_id": "1"}},
    )
    client = service.build_zoho_client(context, connection, limiter=None)
    assert client.contacts.get("1") == {"contact_id": "1"}
    last = rsps.calls[-1].request
    assert last.url.startswith(f"{DATA_CENTERS[dc].api_domain}/books/v3/contacts/1?")
    assert parse_qs(urlsplit(last.url).query)["organization_id"] == [ORG_ID]
    # The access token from the exchange was cached: no refresh was needed.
    assert [g["grant_type"] for g in fake.grants] == ["authorization_code"]


def test_connect_with_the_callback_accounts_server_and_no_location(rsps, context):
    FakeZoho(rsps, dc="eu").install()
    connection = _connect(context, accounts_server="https://accounts.zoho.eu")
    assert connection.data_center == "eu"
    assert connection.name == f"zoho-{ORG_ID}"


def test_connect_with_a_refresh_token_learns_the_api_domain(rsps, context):
    fake = FakeZoho(rsps, dc="in").install()
    connection = _connect(context, refresh_token=REFRESH_TOKEN, location="in", name="books-in")
    assert fake.grants[0]["grant_type"] == "refresh_token"
    assert connection.api_base == "https://www.zohoapis.in"
    assert connection.name == "books-in"


def test_connect_refuses_an_organization_the_token_cannot_see(rsps, context):
    FakeZoho(
        rsps,
        organizations=[
            {"organization_id": "111", "name": "Alpha"},
            {"organization_id": "222", "name": "Beta"},
        ],
    ).install()
    with pytest.raises(WrongOrganizationError) as info:
        _connect(context)
    message = str(info.value)
    assert "Alpha (organization_id 111)" in message
    assert "Beta (organization_id 222)" in message
    with context.session() as db:
        assert context.store(db).list() == []


def test_connect_needs_client_credentials(db_url, fake_redis, secret_key):
    context = make_context(
        db_url, fake_redis, [secret_key], zoho_client_id="", zoho_client_secret=Secret("")
    )
    with pytest.raises(ConfigError) as info:
        _connect(context)
    assert any("ZOHO_CLIENT_ID" in p for p in info.value.problems)
    assert any("ZOHO_CLIENT_SECRET" in p for p in info.value.problems)


def test_connect_wants_exactly_one_credential(context):
    with pytest.raises(ConfigError):
        service.connect_zoho(context, organization_id=ORG_ID)
    with pytest.raises(ConfigError):
        service.connect_zoho(context, organization_id=ORG_ID, grant_code="a", refresh_token="b")


def _sqlite_dump(db_url: str) -> str:
    connection = sqlite3.connect(db_url.removeprefix("sqlite:///"))
    try:
        return "\n".join(connection.iterdump())
    finally:
        connection.close()


def _redis_dump(client: Any) -> bytes:
    parts = []
    for key in client.keys("*"):
        parts.append(key)
        if client.type(key) == b"string":
            parts.append(client.get(key) or b"")
    return b"\n".join(parts)


def test_tokens_are_ciphertext_in_the_database_and_in_redis(rsps, context, db_url, fake_redis):
    fake = FakeZoho(rsps).install()
    connection = _connect(context)
    access_tokens = sorted(fake.valid_tokens)
    with context.session() as db:
        store = context.store(db)
        webhook_secret = store.webhook_secret(store.get(connection.id))["secret"]
        raw = db.execute(
            sa.text("SELECT credentials_ciphertext, webhook_secret_ciphertext FROM connections")
        ).one()
    assert 12 <= len(webhook_secret) <= 50
    assert webhook_secret.isalnum()
    dump = _sqlite_dump(db_url)
    redis_dump = _redis_dump(fake_redis)
    for secret in (REFRESH_TOKEN, webhook_secret, *access_tokens):
        assert secret not in dump
        assert secret not in raw[0]
        assert secret not in raw[1]
        assert secret.encode() not in redis_dump
    assert context.box.decrypt_json(raw[0]) == {"refresh_token": REFRESH_TOKEN}
    assert f"connector:zoho:token:{connection.id}".encode() in redis_dump


def test_key_rotation_keeps_the_connection_working(rsps, db_url, fake_redis):
    key_a, key_b = generate_key(), generate_key()
    fake = FakeZoho(rsps).install()
    connection = _connect(make_context(db_url, fake_redis, [key_a]))
    rotating = make_context(db_url, fake_redis, [key_b, key_a])
    with rotating.session() as db:
        assert rotating.store(db).rotate_secrets() == 2
    only_b = make_context(db_url, fake_redis, [key_b])
    with only_b.session() as db:
        store = ConnectionStore(db, SecretBox([key_b]))
        row = store.get(connection.id)
        assert store.credentials(row) == {"refresh_token": REFRESH_TOKEN}
        assert store.webhook_secret(row)["secret"].isalnum()
    # The Redis copy was encrypted under A: under [B] alone it costs exactly one refresh.
    rsps.add(responses.GET, f"{fake.api}/books/v3/contacts/1", json={"code": 0, "contact": {}})
    service.build_zoho_client(only_b, row, limiter=None).contacts.get("1")
    assert [g["grant_type"] for g in fake.grants] == ["authorization_code", "refresh_token"]


def test_revoked_refresh_token_marks_the_connection_and_is_not_retried(rsps, context, fake_redis):
    fake = FakeZoho(rsps).install()
    connection = _connect(context)
    fake_redis.delete(f"connector:zoho:token:{connection.id}")
    fake.token_error = "invalid_code"
    client = service.build_zoho_client(context, connection, limiter=None)
    with pytest.raises(ReauthorizationRequired):
        client.contacts.get("1")
    with pytest.raises(ReauthorizationRequired):
        client.contacts.get("1")
    assert len(fake.grants) == 2  # the exchange, and one refresh attempt
    with context.session() as db:
        row = context.store(db).get(connection.id)
        assert row.status == "needs_reauth"
        assert "invalid_code" in row.status_reason
    outcomes = service.refresh_due_tokens(context)
    assert outcomes == []  # needs_reauth connections are skipped
    # Reconnecting clears the memory and reactivates the connection.
    fake.token_error = None
    again = _connect(context)
    assert again.id == connection.id
    assert again.status == "active"


def test_api_domain_change_is_persisted(rsps, context, fake_redis):
    fake = FakeZoho(rsps, dc="eu").install()
    connection = _connect(context, location="eu")
    with context.session() as db:
        db.get(Connection, connection.id).api_base = "https://www.zohoapis.com"
    connection.api_base = "https://www.zohoapis.com"
    fake_redis.delete(f"connector:zoho:token:{connection.id}")
    rsps.add(responses.GET, f"{fake.api}/books/v3/contacts/1", json={"code": 0, "contact": {}})
    service.build_zoho_client(context, connection, limiter=None).contacts.get("1")
    with context.session() as db:
        assert db.get(Connection, connection.id).api_base == "https://www.zohoapis.eu"


def test_scheduled_refresh_at_55_minutes(rsps, context):
    fake = FakeZoho(rsps).install()
    start = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    with time_machine.travel(start, tick=False) as traveller:
        connection = _connect(context)
        assert service.refresh_due_tokens(context) == [
            service.RefreshOutcome(connection.id, connection.name, False)
        ]
        traveller.shift(dt.timedelta(minutes=54))
        assert service.refresh_due_tokens(context)[0].refreshed is False
        traveller.shift(dt.timedelta(minutes=1, seconds=1))
        assert service.refresh_due_tokens(context)[0].refreshed is True
        assert service.refresh_due_tokens(context)[0].refreshed is False
    assert [g["grant_type"] for g in fake.grants] == ["authorization_code", "refresh_token"]


def test_ping_reports_data_center_organization_and_token_age(rsps, context):
    fake = FakeZoho(rsps, dc="eu").install()
    connection = _connect(context, location="eu")
    result = service.ping(context, connection, limiter=None)
    assert result.ok
    assert result.error is None
    assert (result.data_center, result.organization_name) == ("eu", "Zillum")
    assert result.token_age is not None
    assert result.token_age >= 0
    fake.organizations = [{"organization_id": "999", "name": "Other"}]
    failed = service.ping(context, connection, limiter=None)
    assert not failed.ok
    assert "Other (organization_id 999)" in (failed.error or "")


# CLI ------------------------------------------------------------------------------------------


@pytest.fixture
def cli(context):
    set_context(context)
    yield CliRunner()
    set_context(None)


def test_cli_connect_needs_exactly_one_credential(cli):
    from connector.cli.zoho import zoho

    both = cli.invoke(
        zoho, ["connect", "--organization-id", "1", "--grant-code", "a", "--refresh-token", "b"]
    )
    neither = cli.invoke(zoho, ["connect", "--organization-id", "1"])
    assert both.exit_code == 2
    assert "exactly one" in both.output
    assert neither.exit_code == 2


def test_cli_connect_list_ping_refresh(rsps, cli):
    from connector.cli.zoho import zoho

    fake = FakeZoho(rsps, dc="in").install()
    result = cli.invoke(
        zoho,
        [
            "connect",
            "--organization-id",
            ORG_ID,
            "--grant-code",
            "1000.grant.code",
            "--location",
            "in",
            "--name",
            "books",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "books" in result.output
    assert "data center in" in result.output
    assert REFRESH_TOKEN not in result.output

    listed = cli.invoke(zoho, ["list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert rows[0]["data_center"] == "in"
    assert rows[0]["token_age"] is not None

    pinged = cli.invoke(zoho, ["ping"])
    assert pinged.exit_code == 0, pinged.output
    assert "data center in" in pinged.output
    assert "Zillum" in pinged.output
    assert "ok" in pinged.output

    fake.organizations = []
    failed = cli.invoke(zoho, ["ping", "books", "--json"])
    assert failed.exit_code == 1
    assert json.loads(failed.output.split("Error:")[0])[0]["result"] == "failed"

    refreshed = cli.invoke(zoho, ["refresh"])
    assert refreshed.exit_code == 0
    assert "not due" in refreshed.output

    secret = cli.invoke(zoho, ["webhook-secret", "books"])
    assert secret.exit_code == 0
    assert secret.output.strip().isalnum()


def test_cli_connect_reads_a_refresh_token_from_stdin(rsps, cli):
    from connector.cli.zoho import zoho

    fake = FakeZoho(rsps).install()
    result = cli.invoke(
        zoho,
        ["connect", "--organization-id", ORG_ID, "--refresh-token", "-"],
        input=REFRESH_TOKEN + "\n",
    )
    assert result.exit_code == 0, result.output
    assert fake.grants[0]["refresh_token"] == REFRESH_TOKEN


def test_top_level_ping_covers_both_systems(rsps, cli, context):
    from connector.cli.ping import ping

    FakeZoho(rsps).install()
    _connect(context)
    with context.session() as db:
        context.store(db).upsert(
            name="pd",
            system="pipedrive",
            external_id="1",
            auth_kind="api_token",
            credentials={"api_token": "x"},
        )
    result = cli.invoke(ping, ["--json"])
    rows = json.loads(result.output.split("Error:")[0])
    by_system = {row["system"]: row for row in rows}
    assert by_system["zoho"]["ok"] is True
    assert "pipedrive" in by_system
    # Pipedrive's outcome comes from its own service (or "not available" without it).
    assert by_system["pipedrive"]["ok"] in (True, False, None)
    assert result.exit_code == (1 if by_system["pipedrive"]["ok"] is False else 0)
