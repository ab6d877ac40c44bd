"""The Pipedrive client, field registry, service and CLI against the Pipedrive simulator."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import responses
import sqlalchemy as sa
from click.testing import CliRunner

from connector.cli.common import set_context
from connector.cli.pipedrive import pipedrive as pipedrive_cli
from connector.context import AppContext
from connector.db import Base
from connector.errors import ConfigError, ValidationError
from connector.mapping.config import load_config
from connector.models import Connection, ParkedJob
from connector.pipedrive.auth import ApiTokenAuth
from connector.pipedrive.client import PipedriveClient
from connector.pipedrive.fields import DEFAULT_FIELD_SPECS, FieldRegistry, FieldSpec
from connector.pipedrive.service import (
    budget_status,
    build_pipedrive_client,
    connect_pipedrive,
    parked_jobs,
    ping,
    register_webhooks,
)
from connector.sandbox.pipedrive import PipedriveSimulator
from connector.settings import Secret, Settings
from connector.sync.setup import required_field_specs


@pytest.fixture
def sim():
    simulator = PipedriveSimulator(real_hosts=True)
    simulator.create_company("acme", plan="growth", seats=2)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        simulator.mount(rsps)
        simulator.rsps = rsps  # type: ignore[attr-defined]
        yield simulator


@pytest.fixture
def token(sim) -> str:
    return str(sim.create_api_token("acme"))


@pytest.fixture
def client(sim, token) -> PipedriveClient:
    return PipedriveClient(
        ApiTokenAuth(token), base_url=sim.api_base("acme"), sleep=lambda _s: None
    )


@pytest.fixture(params=["fake", "real"])
def redis_client(request):
    return request.getfixturevalue("fake_redis" if request.param == "fake" else "real_redis")


def fields_reads(sim) -> int:
    return sum(
        1 for r in sim.request_log("acme") if r.method == "GET" and r.path.endswith("Fields")
    )


def test_token_is_only_in_the_header_for_every_request(sim, token, client):
    org = client.organizations.create({"name": "Acme GmbH"})
    person = client.persons.create(
        {"name": "Jane Roe", "org_id": org["id"], "emails": [{"value": "jane@acme.io"}]}
    )
    deal = client.deals.create(
        {"title": "INV-1", "org_id": org["id"], "value": 10, "currency": "EUR"}
    )
    client.organizations.update(org["id"], {"name": "Acme AG"})
    assert client.organizations.get(org["id"])["name"] == "Acme AG"
    assert [p["id"] for p in client.persons.iter(org_id=org["id"])] == [person["id"]]
    assert [d["id"] for d in client.deals.iter(org_id=org["id"], status="open")] == [deal["id"]]
    assert client.organizations.search("Acme AG", fields=["name"])[0]["id"] == org["id"]
    client.deals.delete(deal["id"])
    client.users.me()
    calls = sim.rsps.calls
    assert len(calls) == 10
    for call in calls:
        assert call.request.headers["x-api-token"] == token
        assert token not in call.request.url
        assert "api_token" not in call.request.url
    assert client.stats.tokens == sim.tokens_spent("acme")


def test_cursor_pagination_over_several_pages(sim, client):
    sim.seed("acme", "organization", ({"name": f"Org {i:04d}"} for i in range(1203)))
    names = [org["name"] for org in client.organizations.iter()]
    assert len(names) == 1203
    assert len(set(names)) == 1203
    assert client.stats.calls == 3  # 500 + 500 + 203
    assert sim.tokens_spent("acme") == 30


def test_updated_since_whole_seconds_is_accepted_and_inclusive(sim, client):
    sim.seed(
        "acme",
        "person",
        [
            {"name": "Old", "update_time": "2026-01-01T00:00:00Z"},
            {"name": "Edge", "update_time": "2026-02-01T10:00:00Z"},
            {"name": "New", "update_time": "2026-03-01T00:00:00Z"},
        ],
    )
    since = dt.datetime(2026, 2, 1, 10, 0, 0, 750000, tzinfo=dt.UTC)  # fractions would be a 400
    names = [p["name"] for p in client.persons.iter_updated_since(since)]
    assert names == ["Edge", "New"]


def test_v2_strictness_is_respected_for_numbers(sim, client):
    from decimal import Decimal

    deal = client.deals.create({"title": "INV-2", "value": Decimal("99.90"), "currency": "EUR"})
    assert deal["value"] == 99.9
    with pytest.raises(ValidationError):
        client.deals.create({"title": "INV-3", "value": "99.90"})


def test_setup_fields_creates_only_missing_fields_and_is_idempotent(sim, client, redis_client):
    sim.create_custom_field("acme", "deal", "Zoho Invoice Total", "monetary")
    registry = FieldRegistry(client, redis_client, cache_key_prefix="connector:pd:fields:t")
    assert [c["name"] for c in registry.ensure_fields(DEFAULT_FIELD_SPECS, dry_run=True)][:2] == [
        "Zoho Invoice Date",
        "Zoho Invoice Due Date",
    ]
    assert sim.write_count("acme") == 0
    created = registry.ensure_fields(DEFAULT_FIELD_SPECS)
    assert len(created) == len(DEFAULT_FIELD_SPECS) - 1
    assert all(len(c["key"]) == 40 for c in created)
    writes = sim.write_count("acme")
    assert writes == len(DEFAULT_FIELD_SPECS) - 1
    assert registry.ensure_fields(DEFAULT_FIELD_SPECS) == []
    assert sim.write_count("acme") == writes
    # Keys resolve by name, exactly as the simulator issued them.
    for spec in DEFAULT_FIELD_SPECS:
        assert registry.key_for(spec.entity, spec.name) == sim.custom_field_key(
            "acme", spec.entity, spec.name
        )
    assert registry.field_type("deal", registry.key_for("deal", "Zoho Invoice Total")) == "monetary"
    # Another process sees the new fields through the shared cache, without a fields read.
    reads = fields_reads(sim)
    other = FieldRegistry(client, redis_client, cache_key_prefix="connector:pd:fields:t")
    assert other.key_for("organization", "Zoho Contact ID") == sim.custom_field_key(
        "acme", "organization", "Zoho Contact ID"
    )
    assert fields_reads(sim) == reads


def test_registry_reads_each_entity_once_per_ttl_across_instances(sim, client, redis_client):
    now = [1000.0]
    first = FieldRegistry(
        client,
        redis_client,
        cache_key_prefix="connector:pd:fields:x",
        ttl=600,
        clock=lambda: now[0],
    )
    second = FieldRegistry(
        client,
        redis_client,
        cache_key_prefix="connector:pd:fields:x",
        ttl=600,
        clock=lambda: now[0],
    )
    for registry in (first, second, first):
        for entity in ("deal", "person", "organization"):
            registry.keys(entity)
    assert fields_reads(sim) == 3
    assert first.api_reads == 3
    assert second.api_reads == 0
    # Memory expires with the TTL; Redis expires on its own clock, so drop it as its TTL would.
    now[0] += 601
    redis_client.delete(*(f"connector:pd:fields:x:{e}" for e in ("deal", "person", "organization")))
    second.keys("deal")
    assert fields_reads(sim) == 4
    assert redis_client.ttl("connector:pd:fields:x:deal") > 0


def test_missing_field_names_the_field_and_the_command(client):
    registry = FieldRegistry(client, None, cache_key_prefix="p")
    with pytest.raises(ConfigError) as info:
        registry.key_for("deal", "Zoho Invoice Total")
    assert "Zoho Invoice Total" in str(info.value)
    assert "connector pipedrive setup-fields" in str(info.value)


def test_refresh_on_unknown_key(sim, client, fake_redis):
    registry = FieldRegistry(client, fake_redis, cache_key_prefix="p")
    registry.ensure_fields([FieldSpec("organization", "Zoho Contact ID", "varchar")])
    key = registry.key_for("organization", "Zoho Contact ID")
    org = client.organizations.create({"name": "A"})
    with pytest.raises(ValidationError) as info:
        client.organizations.update(org["id"], {"custom_fields": {"f" * 40: "x"}})
    reads = fields_reads(sim)
    assert registry.refresh_on_unknown_key(info.value) is True
    assert registry.key_for("organization", "Zoho Contact ID") == key
    assert fields_reads(sim) == reads + 1
    assert (
        registry.refresh_on_unknown_key(ValidationError("title is required", system="pipedrive"))
        is False
    )
    assert registry.refresh_on_unknown_key(RuntimeError("x")) is False


# Service and CLI --------------------------------------------------------------------------


@pytest.fixture
def context(tmp_path, secret_key, fake_redis):
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/c.db",
        secret_keys=(Secret(secret_key),),
        http_timeout=5.0,
    )
    ctx = AppContext(settings=settings, _redis=fake_redis)
    Base.metadata.create_all(ctx.engine)
    set_context(ctx)
    yield ctx
    set_context(None)
    ctx.engine.dispose()


def test_connect_with_api_token_stores_everything_encrypted(sim, token, context):
    connection = connect_pipedrive(context, api_token=token, plan="growth", seats=2)
    company = sim.company("acme")
    assert connection.name == "pipedrive-acme"
    assert connection.external_id == str(company.id)
    assert connection.auth_kind == "api_token"
    assert connection.api_base == "https://acme.pipedrive.com"
    assert connection.options["integration_user_id"] == str(company.admin_id)
    assert connection.options["reserve_fraction"] == 0.10
    with context.session() as db:
        row = db.scalar(sa.select(Connection))
        assert token not in row.credentials_ciphertext
        store = context.store(db)
        assert store.credentials(row) == {"api_token": token}
        secret = store.webhook_secret(row)
    assert secret["username"]
    assert len(secret["password"]) >= 24
    # Reconnecting keeps the webhook credentials live subscriptions use.
    connect_pipedrive(context, api_token=token)
    with context.session() as db:
        assert context.store(db).webhook_secret(db.scalar(sa.select(Connection))) == secret
    # The first call went to the public host: the company domain was not known yet.
    assert sim.rsps.calls[0].request.url == "https://api.pipedrive.com/v1/users/me"


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"api_token": "a", "oauth_refresh_token": "b"}, {"api_token": "a", "plan": "mega"}],
)
def test_connect_needs_exactly_one_credential_and_a_known_plan(context, kwargs):
    with pytest.raises(ConfigError):
        connect_pipedrive(context, **kwargs)


def test_built_client_ping_budget_and_webhooks(sim, token, context):
    connection = connect_pipedrive(context, api_token=token, plan="growth", seats=2)
    client = build_pipedrive_client(context, connection)
    assert client.limiter is not None
    client.organizations.create({"name": "Acme"})
    result = ping(context, connection)
    assert result.company_domain == "acme"
    assert result.tokens_spent == 2
    status = budget_status(context, connection)
    assert status.budget == 120_000
    assert status.reserve == 12_000
    assert status.spent_today == 2 + 5 + 2  # users/me at connect is unmetered; 5 + 2 after
    with context.session() as db:
        db.add(
            ParkedJob(
                task_name="t",
                dedupe_key="k",
                connection_id=connection.id,
                not_before=dt.datetime.now(dt.UTC),
            )
        )
    assert parked_jobs(context, connection) == 1

    first = register_webhooks(context, connection, "https://sync.example.com")
    assert {r["status"] for r in first} == {"created"}
    again = register_webhooks(context, connection, "https://sync.example.com/")
    assert {r["status"] for r in again} == {"exists"}
    hooks = sim.list_webhooks("acme")
    assert len(hooks) == len(first) == 8
    with context.session() as db:
        secret = context.store(db).webhook_secret(connection)
    for hook in hooks:
        assert (
            hook["subscription_url"] == "https://sync.example.com/webhooks/pipedrive/pipedrive-acme"
        )
        assert hook["version"] == "2.0"
        assert hook["http_auth_user"] == secret["username"]


def test_cli(sim, token, context):
    runner = CliRunner()
    usage = runner.invoke(pipedrive_cli, ["connect"])
    assert usage.exit_code == 2
    both = runner.invoke(
        pipedrive_cli, ["connect", "--api-token", "a", "--oauth-refresh-token", "b"]
    )
    assert both.exit_code == 2
    result = runner.invoke(
        pipedrive_cli, ["connect", "--api-token", "-", "--seats", "2"], input=token + "\n"
    )
    assert result.exit_code == 0, result.output
    assert token not in result.output
    result = runner.invoke(pipedrive_cli, ["ping", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["company_domain"] == "acme"
    result = runner.invoke(pipedrive_cli, ["setup-fields", "--dry-run", "--json"])
    # setup-fields creates what the mapping configuration needs (the defaults here).
    expected = required_field_specs(load_config(None))
    assert len(json.loads(result.output)["created"]) == len(expected)
    assert sim.write_count("acme") == 0
    result = runner.invoke(pipedrive_cli, ["setup-fields"])
    assert result.exit_code == 0, result.output
    assert sim.write_count("acme") == len(expected)
    result = runner.invoke(pipedrive_cli, ["setup-fields", "--json"])
    assert json.loads(result.output)["created"] == []
    result = runner.invoke(pipedrive_cli, ["fields", "--json"])
    rows = json.loads(result.output)
    assert all(row["key"] and len(row["key"]) == 40 for row in rows)
    result = runner.invoke(pipedrive_cli, ["list", "--json"])
    assert [row["name"] for row in json.loads(result.output)] == ["pipedrive-acme"]
    assert token not in result.output


def test_budget_command(sim, token, context):
    from connector.cli.budget import budget

    runner = CliRunner()
    assert runner.invoke(pipedrive_cli, ["connect", "--api-token", token]).exit_code == 0
    result = runner.invoke(budget, ["--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["connection"] == "pipedrive-acme"
    assert row["budget"] == 120_000 // 2  # growth x 1 seat
    assert row["parked_jobs"] == 0
    text = runner.invoke(budget, [])
    assert "pipedrive-acme: 0/60,000 tokens" in text.output
