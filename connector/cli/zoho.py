"""``connector zoho``: connect Zoho Books organizations, check them, refresh their tokens."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import click

from connector.cli.common import echo_json, fail, get_context
from connector.connections import ZOHO
from connector.errors import ConfigError
from connector.zoho import service

__all__ = ["format_age", "zoho"]


def format_age(seconds: float | None) -> str:
    """A token age for people: ``12m 03s``, or ``none``."""
    if seconds is None:
        return "none"
    whole = max(int(seconds), 0)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def _read_secret_argument(value: str | None, what: str) -> str | None:
    # "-" reads from stdin, so a refresh token need not sit in the shell history.
    if value != "-":
        return value
    text = sys.stdin.readline().strip()
    if not text:
        raise click.UsageError(f"no {what} on standard input")
    return text


@click.group()
def zoho() -> None:
    """Zoho Books connections."""


@zoho.command("connect")
@click.option("--organization-id", required=True, help="The Zoho Books organization to sync.")
@click.option("--grant-code", help="A grant code from the consent redirect (valid 60 s).")
@click.option("--refresh-token", help="An existing refresh token; '-' reads it from stdin.")
@click.option("--accounts-server", help="The accounts server of the data center.")
@click.option("--location", help="Data center code from the redirect (us, eu, in, au, jp, ca...).")
@click.option("--name", help="Connection name (default zoho-<organization id>).")
@click.option("--redirect-uri", default="", help="The redirect URI the grant code was made for.")
def connect(
    organization_id: str,
    grant_code: str | None,
    refresh_token: str | None,
    accounts_server: str | None,
    location: str | None,
    name: str | None,
    redirect_uri: str,
) -> None:
    """Connect a Zoho Books organization (exactly one of --grant-code or --refresh-token)."""
    if bool(grant_code) == bool(refresh_token):
        raise click.UsageError("give exactly one of --grant-code or --refresh-token")
    refresh_token = _read_secret_argument(refresh_token, "refresh token")
    grant_code = _read_secret_argument(grant_code, "grant code")
    context = get_context()
    connection = service.connect_zoho(
        context,
        organization_id=organization_id,
        grant_code=grant_code,
        refresh_token=refresh_token,
        accounts_server=accounts_server,
        location=location,
        name=name,
        redirect_uri=redirect_uri,
    )
    click.echo(
        f"connected {connection.name}: {connection.display_name or '?'} "
        f"(organization {connection.external_id}, data center {connection.data_center or '?'})"
    )
    click.echo(
        f"webhook secret generated; print it with `connector zoho webhook-secret {connection.name}`"
    )


def _ping_row(result: service.PingResult) -> dict[str, Any]:
    row = dataclasses.asdict(result)
    row["result"] = "ok" if result.ok else "failed"
    return row


@zoho.command("ping")
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ping(names: tuple[str, ...], as_json: bool) -> None:
    """Check Zoho connections: token, organization, data center (all when no NAME is given)."""
    context = get_context()
    with context.session() as db:
        store = context.store(db)
        connections = [store.get(n) for n in names] if names else store.list(ZOHO)
    for connection in connections:
        if connection.system != ZOHO:
            raise ConfigError([f"connection {connection.name!r} is not a Zoho connection"])
    results = [service.ping(context, c) for c in connections]
    if as_json:
        echo_json([_ping_row(r) for r in results])
    else:
        if not results:
            click.echo("no Zoho connections yet; add one with `connector zoho connect`")
        for r in results:
            status = "ok" if r.ok else f"FAILED: {r.error}"
            click.echo(
                f"{r.name}: data center {r.data_center or '?'}, organization "
                f"{r.organization_name or '?'} ({r.organization_id}), token age "
                f"{format_age(r.token_age)}, {status}"
            )
    failed = [r.name for r in results if not r.ok]
    if failed:
        fail(f"{len(failed)} Zoho connection(s) failed: {', '.join(failed)}")


@zoho.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_connections(as_json: bool) -> None:
    """List Zoho connections with their data center, status and token age."""
    context = get_context()
    with context.session() as db:
        connections = context.store(db).list(ZOHO)
    rows: list[dict[str, Any]] = []
    for c in connections:
        age: float | None = None
        next_refresh: float | None = None
        try:
            manager = service.build_token_manager(context, c)
            age = manager.token_age()
            next_refresh = manager.next_refresh_at()
        except ConfigError:
            pass
        rows.append(
            {
                "id": c.id,
                "name": c.name,
                "organization_id": c.external_id,
                "organization_name": c.display_name,
                "data_center": c.data_center,
                "accounts_server": c.accounts_server,
                "api_domain": c.api_base,
                "status": c.status,
                "status_reason": c.status_reason,
                "token_age": age,
                "next_refresh_at": next_refresh,
                "last_success_at": c.last_success_at,
            }
        )
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no Zoho connections yet; add one with `connector zoho connect`")
    for row in rows:
        reason = f" ({row['status_reason']})" if row["status_reason"] else ""
        click.echo(
            f"{row['name']}: {row['organization_name'] or '?'} ({row['organization_id']}), "
            f"data center {row['data_center'] or '?'}, {row['status']}{reason}, "
            f"token age {format_age(row['token_age'])}"
        )


@zoho.command("refresh")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def refresh(as_json: bool) -> None:
    """Refresh every Zoho access token that is 55 minutes old (what the scheduler runs)."""
    outcomes = service.refresh_due_tokens(get_context())
    if as_json:
        echo_json([dataclasses.asdict(o) for o in outcomes])
    else:
        for o in outcomes:
            state = "refreshed" if o.refreshed else "not due"
            click.echo(f"{o.name}: {state if o.error is None else 'FAILED: ' + o.error}")
    failed = [o.name for o in outcomes if o.error]
    if failed:
        fail(f"{len(failed)} refresh(es) failed: {', '.join(failed)}")


@zoho.command("webhook-secret")
@click.argument("name")
def webhook_secret(name: str) -> None:
    """Print the webhook secret to paste into Zoho Books (Settings → Webhooks → secure)."""
    context = get_context()
    with context.session() as db:
        store = context.store(db)
        connection = store.get(name)
        secret = store.webhook_secret(connection).get("secret")
    if not secret:
        fail(f"connection {name!r} has no webhook secret; reconnect it")
    click.echo(secret)
