"""``connector db``: database migrations."""

from __future__ import annotations

import click

from connector.cli.common import get_context
from connector.db import current_revision, head_revision, upgrade


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration."""
    context = get_context()
    upgrade(context.settings.database_url)
    click.echo(f"database at revision {current_revision(context.engine)}")


@db.command("status")
def db_status() -> None:
    """Show the database revision and the newest one shipped."""
    context = get_context()
    current = current_revision(context.engine)
    head = head_revision()
    state = "up to date" if current == head else "needs `connector db upgrade`"
    click.echo(f"database revision {current or 'none'}; code expects {head}: {state}")
