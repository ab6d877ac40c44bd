"""Sync commands: plan, backfill, sync one record, audit, review, retry."""

from __future__ import annotations

import dataclasses
from typing import Any

import click
import sqlalchemy as sa

from connector.cli.common import echo_json, fail, get_context
from connector.cli.progress import Progress
from connector.errors import ConnectorError
from connector.models import DeadLetter, ReviewItem, utcnow
from connector.sync.audit import Trigger, query_audit


@click.command()
@click.option("--limit", type=int, default=None, help="Plan at most this many records per system.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan(limit: int | None, as_json: bool) -> None:
    """Show what a full sync would change, without writing anything (dry run)."""
    from connector.sync.engine import engine_session

    context = get_context()
    progress = Progress("plan")
    with engine_session(context, trigger=Trigger.MANUAL, dry_run=True, indexed=True) as engine:
        state = engine.backfill(progress=progress)
        changes = engine.changes
    progress.update(state.done, state.total, tokens=state.tokens, final=True)
    if limit is not None:
        changes = changes[:limit]
    if as_json:
        echo_json([dataclasses.asdict(c) for c in changes])
        return
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.action] = counts.get(change.action, 0) + 1
        if change.action in {"skip"} and change.outcome == "skipped":
            continue
        target = change.pipedrive_id or "(new)"
        click.echo(
            f"{change.action:<7} {change.direction:<16} {change.entity:<13} "
            f"zoho={change.zoho_id or '-'} pipedrive={target}  {change.reason}"
        )
        for field, value in change.diff.items():
            before, after = value if isinstance(value, tuple) else (None, value)
            click.echo(f"          {field}: {before!r} -> {after!r}")
    summary = ", ".join(f"{n} {a}" for a, n in sorted(counts.items())) or "nothing to do"
    click.echo(f"plan: {summary} (nothing was written)")


@click.command()
@click.option(
    "--token-cap", type=int, default=None, help="Stop after spending this many Pipedrive tokens."
)
@click.option(
    "--zoho", "zoho_names", multiple=True, help="Only these Zoho connections (repeatable)."
)
@click.option("--contacts/--no-contacts", default=True, help="Include contacts.")
@click.option("--invoices/--no-invoices", default=True, help="Include invoices.")
@click.option(
    "--no-pipedrive",
    is_flag=True,
    help="Skip the second half (unlinked Pipedrive organizations -> Zoho).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--distributed",
    is_flag=True,
    help="Split the work into chunks for the Celery workers (runs python -m workers.backfill).",
)
@click.option("--chunk-size", type=int, default=200, show_default=True, help="With --distributed.")
@click.option(
    "--wait",
    is_flag=True,
    help="Distributed: wait until every chunk is done (exit 1 on a failure or the timeout).",
)
@click.option(
    "--timeout",
    type=float,
    default=None,
    metavar="SECONDS",
    help="With --wait: give up after this many seconds.",
)
def backfill(
    token_cap: int | None,
    zoho_names: tuple[str, ...],
    contacts: bool,
    invoices: bool,
    no_pipedrive: bool,
    as_json: bool,
    distributed: bool,
    chunk_size: int,
    wait: bool,
    timeout: float | None,
) -> None:
    """Sync everything, both ways; resumable (run it again after a stop) and within a token cap.

    Zoho -> Pipedrive first, then Pipedrive organizations without a link -> their routed Zoho
    organization (skip that half with --no-pipedrive).
    """
    from connector.sync.engine import engine_session

    if timeout is not None and not wait:
        fail("--timeout needs --wait")
    # Only the distributed backfill runs elsewhere; waiting for it implies it.
    if distributed or wait:
        argv = ["--chunk-size", str(chunk_size)]
        argv += [arg for name in zoho_names for arg in ("--zoho", name)]
        argv += [] if contacts else ["--no-contacts"]
        argv += [] if invoices else ["--no-invoices"]
        argv += ["--wait"] if wait else []
        argv += ["--timeout", f"{timeout:g}"] if timeout is not None else []
        argv += ["--json"] if as_json else []
        _run_distributed(argv)
        return
    context = get_context()
    ids: list[int] | None = None
    if zoho_names:
        with context.session() as session:
            store = context.store(session)
            ids = [store.get(name).id for name in zoho_names]
    progress = Progress("backfill")
    with engine_session(context, trigger=Trigger.BACKFILL, indexed=True) as engine:
        cap = token_cap if token_cap is not None else engine.config.sync.backfill_token_cap
        state = engine.backfill(
            zoho_connection_ids=ids,
            token_cap=cap,
            include_contacts=contacts,
            include_invoices=invoices,
            include_pipedrive=not no_pipedrive,
            progress=progress,
        )
    progress.update(state.done, state.total, tokens=state.tokens, final=True)
    if as_json:
        echo_json(dataclasses.asdict(state))
    else:
        click.echo(
            f"backfill: {state.done}/{state.total} records, {state.applied} changed, "
            f"{state.unchanged} already in sync, {state.skipped} skipped, {state.review} for review, "
            f"{state.failed} failed, {state.deals_written} deals written, {state.tokens} Pipedrive tokens"
        )
        if state.stopped:
            click.echo(state.stopped)
    if state.failed:
        raise SystemExit(1)


def _run_distributed(argv: list[str]) -> None:
    """Hand over to the workers package, which owns sending Celery tasks (connector/ does not)."""
    import importlib.util
    import subprocess
    import sys

    command = [sys.executable, "-m", "workers.backfill", *argv]
    if importlib.util.find_spec("workers") is None:
        fail(
            "the distributed backfill is started by the workers package, which is not importable "
            f"here; from the deployment's root run: {' '.join(command[1:])}"
        )
    raise SystemExit(subprocess.run(command, check=False).returncode)  # noqa: S603


@click.command("sync")
@click.argument("connection")
@click.argument(
    "entity", type=click.Choice(["contact", "invoice", "customerpayment", "organization"])
)
@click.argument("record_id")
def sync_one(connection: str, entity: str, record_id: str) -> None:
    """Sync one record now: CONNECTION ENTITY ID (e.g. zoho-us invoice 4600000123)."""
    from connector.sync.engine import engine_session

    context = get_context()
    with context.session() as session:
        connection_id = context.store(session).get(connection).id
    with engine_session(context, trigger=Trigger.MANUAL) as engine:
        outcome = engine.sync_one(connection_id, entity, record_id)
        changes = list(engine.changes)
    for change in changes:
        click.echo(f"{change.outcome:<8} {change.action:<7} {change.entity} {change.reason}")
    click.echo(f"result: {outcome}")


@click.command()
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--entity", default=None, help="organization, person, deal, contact, ...")
@click.option("--outcome", default=None, help="ok, skipped, review, failed")
@click.option("--connection", default=None, help="Only rows of this connection.")
@click.option("--text", default=None, help="Search reason, error and ids.")
@click.option("--json", "as_json", is_flag=True)
def audit(
    limit: int,
    entity: str | None,
    outcome: str | None,
    connection: str | None,
    text: str | None,
    as_json: bool,
) -> None:
    """Read the audit trail, newest first."""
    context = get_context()
    with context.session() as session:
        connection_id = context.store(session).get(connection).id if connection else None
        rows = query_audit(
            session,
            limit=limit,
            entity=entity,
            outcome=outcome,
            connection_id=connection_id,
            text=text,
        )
        documents = [_audit_document(r) for r in rows]
    if as_json:
        echo_json(documents)
        return
    for doc in documents:
        click.echo(
            f"{doc['created_at'][:19]} {doc['trigger']:<9} {doc['direction']:<16} {doc['entity']:<12} "
            f"{doc['action']:<7} {doc['outcome']:<8} zoho={doc['zoho_id'] or '-'} "
            f"pipedrive={doc['pipedrive_id'] or '-'} tokens={doc['tokens_spent']} {doc['reason']}"
            + (f" ERROR: {doc['error']}" if doc["error"] else "")
        )
    if not documents:
        click.echo("no audit rows match")


def _audit_document(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "created_at": row.created_at.isoformat(),
        "trigger": row.trigger,
        "direction": row.direction,
        "zoho_connection_id": row.zoho_connection_id,
        "pipedrive_connection_id": row.pipedrive_connection_id,
        "entity": row.entity,
        "zoho_id": row.zoho_id,
        "pipedrive_id": row.pipedrive_id,
        "action": row.action,
        "outcome": row.outcome,
        "reason": row.reason,
        "diff": row.diff,
        "error": row.error,
        "tokens_spent": row.tokens_spent,
        "api_calls": row.api_calls,
        "task_id": row.task_id,
        "duration_ms": row.duration_ms,
    }


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--all", "show_all", is_flag=True, help="Include resolved and ignored items.")
@click.pass_context
def review(ctx: click.Context, as_json: bool, show_all: bool) -> None:
    """Unmatched invoices and ambiguous matches that need a human."""
    if ctx.invoked_subcommand is not None:
        return
    context = get_context()
    with context.session() as session:
        query = sa.select(ReviewItem).order_by(ReviewItem.id)
        if not show_all:
            query = query.where(ReviewItem.status == "open")
        items: list[dict[str, Any]] = [
            {
                "id": i.id,
                "kind": i.kind,
                "connection_id": i.connection_id,
                "entity": i.entity,
                "record_id": i.record_id,
                "summary": i.summary,
                "candidates": i.candidates,
                "status": i.status,
                "created_at": i.created_at.isoformat(),
            }
            for i in session.scalars(query)
        ]
    if as_json:
        echo_json(items)
        return
    for item in items:
        click.echo(
            f"#{item['id']} {item['kind']} {item['entity']} {item['record_id']}: {item['summary']}"
        )
        for candidate in item["candidates"]:
            click.echo(f"      candidate: {candidate}")
    if not items:
        click.echo("nothing to review")


@review.command("link")
@click.argument("item_id", type=int)
@click.argument("pipedrive_id")
def review_link(item_id: int, pipedrive_id: str) -> None:
    """Resolve a review item by linking it to a Pipedrive record (a deal for an invoice)."""
    from connector.sync.review import resolve_link

    context = get_context()
    outcome = resolve_link(context, item_id, pipedrive_id)
    click.echo(outcome)


@review.command("ignore")
@click.argument("item_id", type=int)
def review_ignore(item_id: int) -> None:
    """Close a review item without syncing it."""
    from connector.sync.review import resolve_ignore

    click.echo(resolve_ignore(get_context(), item_id))


@review.command("create")
@click.argument("item_id", type=int)
@click.option(
    "--zoho", "zoho_name", default=None, help="For a routing item: the Zoho connection to use."
)
def review_create(item_id: int, zoho_name: str | None) -> None:
    """Resolve by creating: a new record instead of an ambiguous match, or (routing) in --zoho."""
    from connector.sync.review import resolve_create

    click.echo(resolve_create(get_context(), item_id, zoho=zoho_name))


@click.command()
@click.option("--id", "ids", type=int, multiple=True, help="Only these dead letters.")
@click.option("--all", "retry_all", is_flag=True, help="Every failed task.")
@click.option("--json", "as_json", is_flag=True)
def retry(ids: tuple[int, ...], retry_all: bool, as_json: bool) -> None:
    """Replay failed tasks from the dead-letter table (lists them without --id/--all)."""
    context = get_context()
    with context.session() as session:
        query = sa.select(DeadLetter).where(DeadLetter.status == "failed").order_by(DeadLetter.id)
        if ids:
            query = query.where(DeadLetter.id.in_(ids))
        letters = list(session.scalars(query))
        listing = [
            {
                "id": d.id,
                "task": d.task_name,
                "args": d.args,
                "error": d.error,
                "attempts": d.attempts,
                "failed_at": d.failed_at.isoformat(),
            }
            for d in letters
        ]
        if not (ids or retry_all):
            if as_json:
                echo_json(listing)
            else:
                for d in listing:
                    click.echo(
                        f"#{d['id']} {d['task']} {d['args']} after {d['attempts']} attempt(s): {d['error']}"
                    )
                click.echo(f"{len(listing)} failed task(s); replay with --id N or --all")
            return
        if not letters:
            fail("no matching failed tasks")
        jobs = [(d.id, d.task_name, dict(d.args)) for d in letters]
    from connector.sync.service import replay

    progress = Progress("retry", every_seconds=2)
    failures = 0
    for number, (letter_id, task_name, arguments) in enumerate(jobs, start=1):
        try:
            result = replay(
                context,
                task_name,
                list(arguments.get("args", [])),
                dict(arguments.get("kwargs", {})),
            )
            status, note = "retried", f"ok: {result}"
        except ConnectorError as exc:
            failures += 1
            status, note = "failed", f"failed again: {exc}"
        with context.session() as session:
            letter = session.get(DeadLetter, letter_id)
            if letter is not None:
                letter.status = status
                letter.retried_at = utcnow()
                if status == "failed":
                    letter.error = note[:4000]
                    letter.attempts += 1
        click.echo(f"#{letter_id} {task_name}: {note}")
        progress.update(number, len(jobs))
    progress.update(len(jobs), len(jobs), final=True)
    if failures:
        raise SystemExit(1)
