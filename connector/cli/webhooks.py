"""``connector webhooks``: what to paste into each console, and Pipedrive subscriptions by API."""

from __future__ import annotations

from typing import Any

import click

from connector.cli.common import echo_json, get_context


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def webhooks(ctx: click.Context, as_json: bool) -> None:
    """Print, per connection, the webhook URL and the secret or Basic credentials to configure."""
    if ctx.invoked_subcommand is not None:
        return
    from connector.pipedrive.service import webhook_url
    from connector.zoho.schemas import URL_EVENT_ACTIONS
    from connector.zoho.webhooks import webhook_event_urls

    context = get_context()
    public = context.settings.public_url
    zoho_entities = _synced_zoho_entities(context.settings.config_path)
    rows: list[dict[str, Any]] = []
    with context.session() as session:
        store = context.store(session)
        for connection in store.list():
            secret = store.webhook_secret(connection)
            if connection.system == "zoho":
                url = f"{public}/webhooks/zoho/{connection.name}"
                rows.append(
                    {
                        "connection": connection.name,
                        "system": "zoho",
                        "url": url,
                        "events": webhook_event_urls(url, zoho_entities, URL_EVENT_ACTIONS),
                        "secret": secret.get("secret", ""),
                        "how": "Zoho Books > Settings > Automation > Workflow Actions > Webhooks: "
                        "one webhook per URL below, method POST, default payload (or form data), "
                        "tick 'I want to secure this webhook' and paste the secret; attach each to "
                        "the workflow rule of its module and event (updated = edited)",
                    }
                )
            else:
                rows.append(
                    {
                        "connection": connection.name,
                        "system": "pipedrive",
                        "url": webhook_url(public, connection),
                        "username": secret.get("username", ""),
                        "password": secret.get("password", ""),
                        "how": "run `connector webhooks register`, or in Pipedrive > Tools and apps > "
                        "Webhooks create v2.0 webhooks for organization/person/deal with this URL "
                        "and HTTP auth user/password",
                    }
                )
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        click.echo(f"{row['connection']} ({row['system']})")
        if row["system"] == "zoho":
            _echo_zoho(row)
            continue
        click.echo(f"  URL:      {row['url']}")
        click.echo(f"  user:     {row['username']}")
        click.echo(f"  password: {row['password']}")
        click.echo(f"  {row['how']}")
    if not rows:
        click.echo(
            "no connections yet: run `connector zoho connect` and `connector pipedrive connect`"
        )


def _synced_zoho_entities(config_path: str | None) -> list[str]:
    """The Zoho entities whose events are synced (vendor ones only with vendor totals on)."""
    from connector.intake import SYNCED_ZOHO_ENTITIES, VENDOR_ENTITIES, vendor_totals_enabled

    vendor = VENDOR_ENTITIES if vendor_totals_enabled(config_path) else frozenset()
    return sorted(SYNCED_ZOHO_ENTITIES | vendor)


def _echo_zoho(row: dict[str, Any]) -> None:
    """The secret, then the URLs grouped by module, each alone after its event (to paste)."""
    click.echo(f"  secret:   {row['secret']}")
    click.echo(f"  {row['how']}")
    module = None
    for event in row["events"]:
        if event["module"] != module:
            module = event["module"]
            click.echo(f"  {module}:")
        action = event["event"].split(".", 1)[1]
        click.echo(f"    {action:<8} {event['url']}")


@webhooks.command("register")
@click.option("--json", "as_json", is_flag=True)
def register(as_json: bool) -> None:
    """Create the Pipedrive webhook subscriptions through the API (idempotent)."""
    from connector.pipedrive.service import register_webhooks

    context = get_context()
    with context.session() as session:
        connections = context.store(session).list("pipedrive")
    results: list[dict[str, Any]] = []
    for connection in connections:
        for row in register_webhooks(context, connection, context.settings.public_url):
            results.append({"connection": connection.name, **row})
    if as_json:
        echo_json(results)
        return
    for row in results:
        click.echo(
            f"{row['connection']}: {row['event_action']}.{row['event_object']} -> {row['status']} (id {row['id']})"
        )


@webhooks.command("relay-secret")
@click.argument("connection")
@click.option("--clear", is_flag=True, help="Stop requiring the relay signature.")
def relay_secret(connection: str, clear: bool) -> None:
    """Require an HMAC-SHA256 relay signature on a Pipedrive connection's webhooks.

    For deployments with a signing relay in front of the receiver: the relay sends
    ``X-Connector-Signature: sha256=<hex HMAC-SHA256 of the raw body>``. A new secret is generated
    and printed once.
    """
    import secrets as token_source

    context = get_context()
    with context.session() as session:
        store = context.store(session)
        found = store.get(connection)
        if found.system != "pipedrive":
            raise click.UsageError("relay signatures apply to Pipedrive connections")
        material = dict(store.webhook_secret(found))
        if clear:
            material.pop("relay_secret", None)
            store.set_webhook_secret(found, material)
            click.echo(f"{found.name}: relay signature no longer required")
            return
        material["relay_secret"] = token_source.token_urlsafe(32)
        store.set_webhook_secret(found, material)
    click.echo(f"{found.name}: relay secret (configure it in the relay; shown once):")
    click.echo(material["relay_secret"])
