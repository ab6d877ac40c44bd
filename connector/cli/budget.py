"""``connector budget``: Pipedrive daily token budgets, burst usage and parked work."""

from __future__ import annotations

from typing import Any

import click

from connector.cli.common import echo_json, get_context
from connector.connections import PIPEDRIVE
from connector.pipedrive.service import budget_status, parked_jobs


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def budget(as_json: bool) -> None:
    """Per Pipedrive connection: tokens spent today, budget, reserve, burst, reset, parked jobs."""
    context = get_context()
    with context.session() as db:
        connections = context.store(db).list(PIPEDRIVE)
    rows: list[dict[str, Any]] = []
    for connection in connections:
        status = budget_status(context, connection)
        row: dict[str, Any] = {
            "connection": connection.name,
            "parked_jobs": parked_jobs(context, connection),
        }
        if status is not None:
            row.update(
                spent_today=status.spent_today,
                budget=status.budget,
                reserve=status.reserve,
                remaining=status.remaining,
                burst_used=status.burst_used,
                burst_limit=status.burst_limit,
                search_used=status.search_used,
                search_limit=status.search_limit,
                reset_at=status.reset_at.isoformat(),
                cooldown_until=status.cooldown_until,
                blocked_until=status.blocked_until,
            )
        rows.append(row)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no Pipedrive connections")
    for row in rows:
        if "budget" not in row:
            click.echo(f"{row['connection']}: limiter unavailable; parked {row['parked_jobs']}")
            continue
        share = row["spent_today"] / row["budget"] * 100 if row["budget"] else 0.0
        line = (
            f"{row['connection']}: {row['spent_today']:,}/{row['budget']:,} tokens "
            f"({share:.1f}%), reserve {row['reserve']:,}, "
            f"burst {row['burst_used']}/{row['burst_limit']}, "
            f"search {row['search_used']}/{row['search_limit']}, "
            f"resets {row['reset_at']}, parked jobs {row['parked_jobs']}"
        )
        if row["blocked_until"]:
            line += f", BLOCKED until {row['blocked_until']}"
        elif row["cooldown_until"]:
            line += f", cooling down until {row['cooldown_until']}"
        click.echo(line)
