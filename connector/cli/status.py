"""``connector status`` (what the overview page shows) and ``connector doctor`` (set-up checks)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click
import redis

from connector import status as status_lib
from connector.cli.common import echo_json, get_context
from connector.errors import ConfigError
from connector.formatting import ago, duration
from connector.models import utcnow

__all__ = ["doctor", "status"]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(as_json: bool) -> None:
    """Every connection's health, queue depths and recent failures."""
    context = get_context()
    connections = status_lib.overview(context)
    queues: dict[str, int | None] | None
    try:
        queues = status_lib.queue_depths(context)
    except redis.RedisError:
        queues = None
    with context.session() as session:
        failures = status_lib.failures_since(session, utcnow() - dt.timedelta(hours=1))
    if as_json:
        document: dict[str, Any] = {
            "connections": [c.as_dict() for c in connections],
            "queues": queues,
            "failures_last_hour": failures,
        }
        echo_json(document)
        return
    if not connections:
        click.echo("no connections: run `connector zoho connect` and `connector pipedrive connect`")
    for c in connections:
        health = "NEEDS RE-AUTHORIZATION" if c.needs_reauth else c.status
        where = f" {c.data_center.upper()}" if c.data_center else ""
        line = (
            f"{c.name} ({c.system}{where}) {c.display_name or '-'} [{c.external_id}]: {health}; "
            f"last success {ago(c.last_success_at)}, last webhook {ago(c.last_webhook_at)}, "
            f"sync lag {duration(c.sync_lag_seconds) if c.sync_lag_seconds is not None else 'never synced'}"
        )
        if c.token_age_seconds is not None:
            line += f", token {duration(c.token_age_seconds)} old"
        click.echo(line)
        if c.needs_reauth:
            fix = f"reconnect: {context.settings.public_url}{c.reconnect_url}"
            click.echo(f"  {c.status_reason}; {fix}" if c.reconnect_url else f"  {c.status_reason}")
    if queues is None:
        click.echo("queues: broker unreachable")
    else:
        click.echo(
            "queues: " + ", ".join(f"{q} {'?' if n is None else n}" for q, n in queues.items())
        )
    click.echo(
        f"last hour: {failures['dead_letters']} dead letter(s), "
        f"{failures['audit_failed']} failed record(s)"
    )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def doctor(as_json: bool) -> None:
    """Check the whole set-up and say what to fix; exit code 1 when anything fails."""
    try:
        context = get_context()
    except ConfigError as exc:
        checks = [status_lib.settings_check(exc)]
    else:
        checks = [status_lib.settings_check(None), *status_lib.doctor(context)]
    failed = [c for c in checks if not c.ok]
    if as_json:
        echo_json({"ok": not failed, "checks": [c.as_dict() for c in checks]})
    else:
        for check in checks:
            mark = "ok  " if check.ok else "FAIL"
            click.echo(f"[{mark}] {check.name}: {check.detail}")
            if check.ok:
                continue
            for command in check.fix.splitlines():
                click.echo(f"       fix: {command}")
            if check.note:
                click.echo(f"       note: {check.note}")
        click.echo(
            "all checks passed" if not failed else f"{len(failed)} of {len(checks)} check(s) failed"
        )
    if failed:
        raise SystemExit(1)
