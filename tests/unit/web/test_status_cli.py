"""``connector status`` and ``connector doctor`` through click's CliRunner."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from click.testing import CliRunner

from connector.cli.common import set_context
from connector.cli.status import doctor, status
from connector.context import AppContext
from connector.crypto import generate_key
from connector.models import utcnow
from connector.pipedrive.service import SYNC_SUBSCRIPTIONS, webhook_url
from tests.unit.web.seed import make_context, seed


@pytest.fixture
def context(tmp_path: Path, fake_redis: Any) -> Iterator[AppContext]:
    ctx = make_context(f"sqlite:///{tmp_path / 'cli.db'}", fake_redis)
    set_context(ctx)
    yield ctx
    set_context(None)
    ctx.close()


def test_status_json_matches_overview(context: AppContext):
    seed(context)
    result = CliRunner().invoke(status, ["--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    by_name = {c["name"]: c for c in document["connections"]}
    assert by_name["zoho-in"]["needs_reauth"] is True
    assert by_name["zoho-in"]["reconnect_url"] == (
        "/oauth/zoho/start?organization_id=60012345&name=zoho-in"
    )
    assert by_name["zoho-eu"]["token_age_seconds"] is not None
    assert by_name["zoho-eu"]["data_center"] == "eu"
    assert 290 < by_name["pipedrive-acme"]["sync_lag_seconds"] < 3600
    assert document["queues"] == {"webhooks": 0, "sync": 0, "pulls": 0, "maintenance": 0}
    assert document["failures_last_hour"]["dead_letters"] == 1


def test_status_text(context: AppContext):
    seed(context)
    result = CliRunner().invoke(status, [])
    assert result.exit_code == 0, result.output
    assert (
        "zoho-in (zoho IN) Acme India Pvt Ltd [60012345]: NEEDS RE-AUTHORIZATION" in result.output
    )
    assert "http://localhost:5000/oauth/zoho/start?organization_id=60012345" in result.output
    assert "queues: webhooks 0, sync 0, pulls 0, maintenance 0" in result.output


# What a printed fix may start with: our command, or a shell or environment instruction.
PASTEABLE = ("connector ", "export ", "sudo ", "printf ", '"${EDITOR')


def _assert_pasteable_command(fix: str) -> None:
    for command in fix.splitlines():
        assert command.startswith(PASTEABLE), command
        assert "()" not in command, command
        assert "`" not in command, command


def _assert_pasteable(output: str) -> None:
    """Every ``fix:`` line doctor printed is a command to paste, never prose or a function."""
    fixes = [line.strip()[len("fix:") :].strip() for line in output.splitlines()]
    fixes = [f for f, line in zip(fixes, output.splitlines()) if line.strip().startswith("fix:")]
    assert fixes, output
    for fix in fixes:
        _assert_pasteable_command(fix)


def test_doctor_reports_unmigrated_database(tmp_path: Path, fake_redis: Any):
    from connector.settings import Settings

    ctx = AppContext(
        settings=Settings.from_env(
            {
                "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}",
                "CONNECTOR_SECRET_KEY": generate_key(),
            },
            dotenv_path=None,
        )
    )
    ctx._redis = fake_redis
    set_context(ctx)
    try:
        result = CliRunner().invoke(doctor, [])
    finally:
        set_context(None)
    assert result.exit_code == 1
    assert "[FAIL] database: schema is at revision none (never migrated)" in result.output
    assert "fix: connector db upgrade" in result.output
    _assert_pasteable(result.output)


def test_doctor_reports_settings_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    set_context(None)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONNECTOR_SECRET_KEY", "")
    monkeypatch.setenv("DATABASE_URL", "mysql://nope")
    result = CliRunner().invoke(doctor, ["--json"])
    assert result.exit_code == 1
    document = json.loads(result.output)
    assert document["ok"] is False
    [check] = document["checks"]
    assert check["name"] == "settings"
    assert "CONNECTOR_SECRET_KEY is not set" in check["detail"]
    assert "DATABASE_URL" in check["detail"]
    assert check["fix"].startswith("export ")
    assert 'CONNECTOR_SECRET_KEY="$(connector secrets generate-key)"' in check["fix"]
    assert " DATABASE_URL=" in check["fix"] or "export DATABASE_URL=" in check["fix"]
    _assert_pasteable(CliRunner().invoke(doctor, []).output)


class _Webhooks:
    def __init__(self, hooks: list[dict[str, Any]]) -> None:
        self.hooks = hooks

    def list(self) -> list[dict[str, Any]]:
        return self.hooks


class _Client:
    def __init__(self, hooks: list[dict[str, Any]]) -> None:
        self.webhooks = _Webhooks(hooks)


class _Registry:
    def __init__(self, missing: list[Any]) -> None:
        self._missing = missing

    def missing(self, specs: list[Any]) -> list[Any]:
        return [s for s in specs if s.name in self._missing]


def _fake_apis(
    monkeypatch: pytest.MonkeyPatch, context: AppContext, *, hooks: int, missing: list[str]
) -> None:
    from connector.pipedrive import service as pd
    from connector.zoho import service as zs

    def zoho_ping(ctx: AppContext, connection: Any, **_: Any) -> zs.PingResult:
        return zs.PingResult(connection.name, connection.external_id, "eu", "Acme GmbH", 60.0, True)

    def pd_ping(ctx: AppContext, connection: Any, **_: Any) -> pd.PingResult:
        return pd.PingResult(connection.name, True, "7001", "acme", "Acme Sales", "1", "Ann", "", 2)

    with context.session() as session:
        connection = context.store(session).get("pipedrive-acme")
    url = webhook_url(context.settings.public_url, connection)
    subscribed = [
        {"subscription_url": url, "event_action": a, "event_object": o}
        for a, o in SYNC_SUBSCRIPTIONS[:hooks]
    ]
    monkeypatch.setattr(zs, "ping", zoho_ping)
    monkeypatch.setattr(pd, "ping", pd_ping)
    monkeypatch.setattr(pd, "build_pipedrive_client", lambda *a, **k: _Client(subscribed))
    monkeypatch.setattr(pd, "field_registry", lambda *a, **k: _Registry(missing))


def _date_header(offset: float) -> dict[str, str]:
    moment = utcnow() + dt.timedelta(seconds=offset)
    return {"Date": email.utils.format_datetime(moment, usegmt=True)}


@responses.activate
def test_doctor_all_pass(context: AppContext, monkeypatch: pytest.MonkeyPatch):
    seed(context)
    with context.session() as session:
        store = context.store(session)
        store.delete(store.get("zoho-in"))
    _fake_apis(monkeypatch, context, hooks=len(SYNC_SUBSCRIPTIONS), missing=[])
    responses.add(responses.HEAD, "https://www.zohoapis.eu/", headers=_date_header(0))
    responses.add(responses.HEAD, "https://acme.pipedrive.com/", headers=_date_header(0))
    result = CliRunner().invoke(doctor, [])
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.output
    assert "[ok  ] pipedrive pipedrive-acme webhooks: all subscribed" in result.output
    assert "[ok  ] clock vs acme.pipedrive.com" in result.output
    assert result.output.strip().endswith("all checks passed")


@responses.activate
def test_doctor_says_what_to_fix(context: AppContext, monkeypatch: pytest.MonkeyPatch):
    seed(context)
    _fake_apis(monkeypatch, context, hooks=2, missing=["Zoho Invoice Total"])
    responses.add(responses.HEAD, "https://acme.pipedrive.com/", headers=_date_header(-120))
    result = CliRunner().invoke(doctor, ["--json"])
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.output)["checks"]}
    assert all(checks[name]["ok"] for name in ("database", "redis", "broker"))
    stale = checks["zoho zoho-in"]
    assert not stale["ok"]
    assert stale["fix"].startswith("connector zoho connect --organization-id 60012345")
    assert "/oauth/zoho/start?organization_id=60012345&name=zoho-in" in stale["note"]
    fields = checks["pipedrive pipedrive-acme custom fields"]
    assert not fields["ok"]
    assert "deal 'Zoho Invoice Total'" in fields["detail"]
    assert fields["fix"] == "connector pipedrive setup-fields"
    hooks = checks["pipedrive pipedrive-acme webhooks"]
    assert not hooks["ok"]
    assert "delete.organization" in hooks["detail"]
    assert hooks["fix"] == "connector webhooks register"
    skew = checks["clock vs acme.pipedrive.com"]
    assert not skew["ok"]
    assert "+120 s off" in skew["detail"] or "+119 s off" in skew["detail"]
    assert "ntp" in skew["fix"]
    for check in checks.values():
        _assert_pasteable_command(check["fix"])
    _assert_pasteable(CliRunner().invoke(doctor, []).output)


@responses.activate
def test_doctor_fails_on_several_zoho_connections_without_routing_default(
    context: AppContext, monkeypatch: pytest.MonkeyPatch
):
    seed(context)
    _fake_apis(monkeypatch, context, hooks=len(SYNC_SUBSCRIPTIONS), missing=[])
    result = CliRunner().invoke(doctor, [])
    assert result.exit_code == 1
    line = next(x for x in result.output.splitlines() if x.startswith("[FAIL] routing"))
    assert "2 Zoho connections (zoho-eu, zoho-in)" in line
    assert "[routing] default is not set" in line
    fix = result.output.split(line, 1)[1].splitlines()[1].strip()
    assert fix.startswith("fix: printf ")
    assert "export CONNECTOR_CONFIG=" in fix


@responses.activate
def test_doctor_passes_routing_with_a_default(
    context: AppContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    seed(context)
    mapping = tmp_path / "mapping.toml"
    mapping.write_text('[routing]\ndefault = "zoho-eu"\n')
    monkeypatch.setattr(
        context, "settings", dataclasses.replace(context.settings, config_path=str(mapping))
    )
    _fake_apis(monkeypatch, context, hooks=len(SYNC_SUBSCRIPTIONS), missing=[])
    result = CliRunner().invoke(doctor, ["--json"])
    checks = {c["name"]: c for c in json.loads(result.output)["checks"]}
    assert checks["routing"]["ok"] is True
    assert "zoho-eu" in checks["routing"]["detail"]


@responses.activate
def test_doctor_fixes_are_commands_when_nothing_is_connected_or_reachable(
    context: AppContext, monkeypatch: pytest.MonkeyPatch
):
    import redis as redis_lib

    def down(*args: Any, **kwargs: Any) -> Any:
        raise redis_lib.ConnectionError("refused")

    monkeypatch.setattr(context.redis, "ping", down)
    result = CliRunner().invoke(doctor, [])
    assert result.exit_code == 1
    assert "[FAIL] connections: no connection is set up" in result.output
    assert "fix: connector zoho connect --organization-id" in result.output
    assert "fix: connector pipedrive connect --company-domain" in result.output
    assert "fix: export REDIS_URL=" in result.output
    _assert_pasteable(result.output)


@responses.activate
def test_doctor_fixes_are_commands_when_the_apis_refuse(
    context: AppContext, monkeypatch: pytest.MonkeyPatch
):
    from connector.errors import ServerError
    from connector.pipedrive import service as pd
    from connector.zoho import service as zs

    seed(context)

    def zoho_ping(ctx: AppContext, connection: Any, **_: Any) -> zs.PingResult:
        return zs.PingResult(
            connection.name, connection.external_id, "eu", "", None, False, "HTTP 500"
        )

    def pd_ping(ctx: AppContext, connection: Any, **_: Any) -> Any:
        raise ServerError("Pipedrive answered 503", system="pipedrive")

    monkeypatch.setattr(zs, "ping", zoho_ping)
    monkeypatch.setattr(pd, "ping", pd_ping)
    result = CliRunner().invoke(doctor, [])
    assert result.exit_code == 1
    assert "fix: connector zoho ping zoho-eu" in result.output
    assert "fix: connector pipedrive ping --connection pipedrive-acme" in result.output
    _assert_pasteable(result.output)
