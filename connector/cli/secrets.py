"""``connector secrets``: encryption keys and their rotation."""

from __future__ import annotations

import click

from connector.cli.common import get_context
from connector.crypto import generate_key


@click.group()
def secrets() -> None:
    """Encryption of stored credentials."""


@secrets.command("generate-key")
def generate() -> None:
    """Print a new Fernet key for CONNECTOR_SECRET_KEY."""
    click.echo(generate_key())


@secrets.command("rotate")
def rotate() -> None:
    """Re-encrypt every stored secret under the first key of CONNECTOR_SECRET_KEY.

    Put the new key first, keep the old ones after it, run this, then remove the old keys.
    """
    context = get_context()
    with context.session() as session:
        count = context.store(session).rotate_secrets()
    click.echo(f"re-encrypted {count} secret(s) under the newest key")
