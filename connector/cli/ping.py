"""``connector ping``: check every connection of both systems at once."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import click

from connector.cli.common import echo_json, fail, get_context
from connector.connections import PIPEDRIVE, ZOHO
from connector.context import AppContext
from connector.errors import ConnectorError
from connector.models import Connection

__all__ = ["ping"]

NOT_AVAILABLE = "not available"


def _as_row(connection: Connection, result: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        row = dataclasses.asdict(result)
    elif isinstance(result, dict):
        row = dict(result)
    else:
        row = {k: v for k, v in vars(result).items() if not k.startswith("_")}
    row.setdefault("name", connection.name)
    row["system"] = connection.system
    row["ok"] = bool(row.get("ok"))
    return row


def _ping_one(context: AppContext, connection: Connection) -> dict[str, Any]:
    if connection.system == ZOHO:
        from connector.zoho import service as zoho_service

        return _as_row(connection, zoho_service.ping(context, connection))
    if connection.system == PIPEDRIVE:
        try:
            module = importlib.import_module("connector.pipedrive.service")
        except ImportError:
            return {
                "name": connection.name,
                "system": PIPEDRIVE,
                "ok": None,
                "error": NOT_AVAILABLE,
            }
        try:
            return _as_row(connection, module.ping(context, connection))
        except ConnectorError as exc:
            return {"name": connection.name, "system": PIPEDRIVE, "ok": False, "error": str(exc)}
    return {
        "name": connection.name,
        "system": connection.system,
        "ok": None,
        "error": NOT_AVAILABLE,
    }


@click.command("ping")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ping(as_json: bool) -> None:
    """Check every Zoho and Pipedrive connection; exit 1 when any fails."""
    context = get_context()
    with context.session() as db:
        connections = context.store(db).list()
    rows = [_ping_one(context, c) for c in connections]
    if as_json:
        echo_json(rows)
    else:
        if not rows:
            click.echo("no connections yet")
        for row in rows:
            if row["ok"] is None:
                state = row.get("error") or NOT_AVAILABLE
            elif row["ok"]:
                state = "ok"
            else:
                state = f"FAILED: {row.get('error')}"
            click.echo(f"{row['system']} {row['name']}: {state}")
    failed = [row["name"] for row in rows if row["ok"] is False]
    if failed:
        fail(f"{len(failed)} connection(s) failed: {', '.join(failed)}")
