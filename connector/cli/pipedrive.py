"""``connector pipedrive``: connect a company, check it, and set up the custom fields."""

from __future__ import annotations

import sys
from typing import Any

import click

from connector.cli.common import echo_json, fail, get_context
from connector.connections import PIPEDRIVE
from connector.context import AppContext
from connector.models import Connection
from connector.pipedrive.fields import FieldSpec
from connector.pipedrive.service import (
    PLANS,
    build_pipedrive_client,
    connect_pipedrive,
    field_registry,
    ping,
)

__all__ = ["pipedrive", "resolve_connection"]


def _secret_value(value: str | None, what: str) -> str | None:
    """``-`` reads the secret from stdin, so it stays out of shell history and ``ps``."""
    if value != "-":
        return value
    line = sys.stdin.readline().strip()
    if not line:
        raise click.UsageError(f"no {what} on stdin")
    return line


def resolve_connection(name: str | None) -> Connection:
    """The named Pipedrive connection, or the only one when no name is given."""
    context = get_context()
    with context.session() as db:
        store = context.store(db)
        if name:
            connection = store.get(name)
            if connection.system != PIPEDRIVE:
                fail(f"connection {name!r} is a {connection.system} connection")
            return connection
        found = store.list(PIPEDRIVE)
    if not found:
        fail("no Pipedrive connection yet; run `connector pipedrive connect` first")
    if len(found) > 1:
        names = ", ".join(c.name for c in found)
        fail(f"several Pipedrive connections ({names}); choose one with --connection")
    return found[0]


_connection_option = click.option(
    "--connection", "-c", "connection_name", help="Connection name (default: the only one)."
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group()
def pipedrive() -> None:
    """Pipedrive companies: connect, ping, custom fields."""


@pipedrive.command()
@click.option("--api-token", help="A user's API token ('-' reads it from stdin).")
@click.option("--oauth-refresh-token", help="An OAuth refresh token ('-' reads it from stdin).")
@click.option("--company-domain", help="The company's subdomain (acme for acme.pipedrive.com).")
@click.option(
    "--plan",
    type=click.Choice(PLANS),
    default="growth",
    show_default=True,
    help="Subscription plan; sizes the daily token budget and burst limits.",
)
@click.option(
    "--seats",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Paid seats; multiplies the daily token budget.",
)
@click.option("--name", help="Connection name (default: pipedrive-<company domain>).")
@click.option(
    "--timezone",
    default="UTC",
    show_default=True,
    help="IANA zone of Pipedrive's budget reset (unconfirmed; UTC is a guess).",
)
def connect(
    api_token: str | None,
    oauth_refresh_token: str | None,
    company_domain: str | None,
    plan: str,
    seats: int,
    name: str | None,
    timezone: str,
) -> None:
    """Check credentials against Pipedrive and store the connection (encrypted).

    Give exactly one of --api-token and --oauth-refresh-token.
    """
    if bool(api_token) == bool(oauth_refresh_token):
        raise click.UsageError("give exactly one of --api-token or --oauth-refresh-token")
    connection = connect_pipedrive(
        get_context(),
        api_token=_secret_value(api_token, "API token"),
        oauth_refresh_token=_secret_value(oauth_refresh_token, "refresh token"),
        company_domain=company_domain,
        plan=plan,
        seats=seats,
        name=name,
        timezone=timezone,
    )
    options = connection.options or {}
    click.echo(
        f"connected {connection.name}: company {connection.display_name or '?'} "
        f"(id {connection.external_id}, {options.get('company_domain') or '?'}), "
        f"{connection.auth_kind}, plan {plan} x {seats} seat(s)"
    )
    click.echo("next: `connector pipedrive setup-fields` to create the custom fields")


@pipedrive.command("ping")
@_connection_option
@_json_option
def ping_command(connection_name: str | None, as_json: bool) -> None:
    """Call /v1/users/me to check the stored credentials (2 tokens)."""
    context = get_context()
    result = ping(context, resolve_connection(connection_name))
    if as_json:
        echo_json(
            {
                "connection": result.connection,
                "ok": result.ok,
                "company_id": result.company_id,
                "company_domain": result.company_domain,
                "company_name": result.company_name,
                "user_id": result.user_id,
                "user_name": result.user_name,
                "api_base": result.api_base,
                "tokens_spent": result.tokens_spent,
            }
        )
        return
    click.echo(
        f"ok: {result.connection} → {result.company_name or result.company_domain} "
        f"(company {result.company_id}) as user {result.user_name or result.user_id}; "
        f"{result.tokens_spent} token(s) spent"
    )


def _specs(context: AppContext) -> list[FieldSpec]:
    """The fields the configured mapping needs (CONNECTOR_CONFIG, or the defaults)."""
    from connector.mapping.config import load_config
    from connector.sync.setup import required_field_specs

    return required_field_specs(load_config(context.settings.config_path or None))


@pipedrive.command("setup-fields")
@_connection_option
@click.option("--dry-run", is_flag=True, help="Only show which fields would be created.")
@_json_option
def setup_fields(connection_name: str | None, dry_run: bool, as_json: bool) -> None:
    """Create the custom fields the sync writes (only those missing; safe to repeat)."""
    context = get_context()
    connection = resolve_connection(connection_name)
    client = build_pipedrive_client(context, connection)
    registry = field_registry(context, connection, client)
    created = registry.ensure_fields(_specs(context), dry_run=dry_run)
    if as_json:
        echo_json({"dry_run": dry_run, "created": created, "tokens_spent": client.stats.tokens})
        return
    verb = "would create" if dry_run else "created"
    if not created:
        click.echo("all custom fields exist; nothing to do")
    for field in created:
        click.echo(f"{verb} {field['entity']} field {field['name']!r} ({field['field_type']})")
    click.echo(f"{client.stats.tokens} token(s) spent")


@pipedrive.command("fields")
@_connection_option
@_json_option
def fields_command(connection_name: str | None, as_json: bool) -> None:
    """Show the sync's custom field names and the keys they resolve to."""
    context = get_context()
    connection = resolve_connection(connection_name)
    client = build_pipedrive_client(context, connection)
    registry = field_registry(context, connection, client)
    rows: list[dict[str, Any]] = []
    for spec in _specs(context):
        found = registry.find(spec.entity, spec.name)
        rows.append(
            {
                "entity": spec.entity,
                "name": spec.name,
                "field_type": (found or {}).get("field_type") or spec.field_type,
                "key": (found or {}).get("field_code"),
            }
        )
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        key = row["key"] or "MISSING (run `connector pipedrive setup-fields`)"
        click.echo(f"{row['entity']:<13} {row['name']:<28} {key}")


@pipedrive.command("list")
@_json_option
def list_command(as_json: bool) -> None:
    """List the stored Pipedrive connections."""
    context = get_context()
    with context.session() as db:
        connections = context.store(db).list(PIPEDRIVE)
    rows = [
        {
            "name": c.name,
            "company": c.display_name,
            "company_id": c.external_id,
            "company_domain": (c.options or {}).get("company_domain", ""),
            "auth": c.auth_kind,
            "plan": (c.options or {}).get("plan", ""),
            "seats": (c.options or {}).get("seats", 1),
            "status": c.status,
            "api_base": c.api_base,
            "last_success_at": c.last_success_at,
        }
        for c in connections
    ]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no Pipedrive connections")
    for row in rows:
        click.echo(
            f"{row['name']:<24} {row['company_domain'] or row['company_id']:<20} "
            f"{row['auth']:<10} {row['plan']}x{row['seats']:<3} {row['status']}"
        )
