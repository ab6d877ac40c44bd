"""Start a distributed backfill: plan the chunks here, let the Celery workers sync them.

Usage (``connector backfill --distributed`` runs this)::

    python -m workers.backfill [--chunk-size 200] [--zoho NAME ...] [--no-contacts]
                               [--no-invoices] [--wait [--timeout SECONDS]] [--json]

Contact chunks are enqueued now on the ``pulls`` queue; the invoice chunks follow when the last
contact chunk is done (see :mod:`connector.sync.distributed`). ``--wait`` polls the run's tally
until every chunk has finished, whichever worker finishes it (a chunk whose worker died is taken
over by another when its lease runs out); it exits 1 when a chunk is dead-lettered, a record
failed, or ``--timeout`` seconds pass first. ``--status RUN_ID`` prints the tally of a run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from connector.context import AppContext
from connector.sync.distributed import (
    BackfillRun,
    dead_chunks,
    plan_backfill_chunks,
    queue_chunks,
)

TASK = "workers.tasks.backfill_page"


def start(
    context: AppContext,
    *,
    chunk_size: int = 200,
    zoho_connection_ids: list[int] | None = None,
    include_contacts: bool = True,
    include_invoices: bool = True,
) -> BackfillRun:
    """Plan the chunks, record the run and enqueue its first phase."""
    from workers.celery_app import celery_app

    chunks = plan_backfill_chunks(
        context,
        chunk_size=chunk_size,
        zoho_connection_ids=zoho_connection_ids,
        include_contacts=include_contacts,
        include_invoices=include_invoices,
    )
    run, first = BackfillRun.start(context, chunks)
    queue_chunks(context, run.run_id, first)
    for chunk in first:
        celery_app.send_task(TASK, args=[run.run_id, chunk], queue="pulls")
    return run


def wait(
    context: AppContext,
    run: BackfillRun,
    *,
    poll: float = 2.0,
    echo: bool = True,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Poll a run until every chunk has finished, one is dead-lettered, or ``timeout`` passes.

    Returns the run's status with ``dead_chunks`` and ``timed_out`` added. Progress goes to
    stderr: one rewritten line on a terminal, a plain line per change elsewhere.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    terminal = sys.stderr.isatty()
    shown = ""
    while True:
        status = {**run.status(), "dead_chunks": dead_chunks(context, run.run_id)}
        status["timed_out"] = False
        line = (
            f"backfill {run.run_id}: {status['finished_chunks']}/{status['chunks']} chunks, "
            f"{status.get('done', 0)}/{status['records']} records"
        )
        if echo and line != shown:
            sys.stderr.write(f"\r{line}" if terminal else f"{line}\n")
            shown = line
        ended = status["complete"] or status["dead_chunks"] > 0
        if not ended and deadline is not None and time.monotonic() >= deadline:
            status["timed_out"] = True
            ended = True
        if ended:
            if echo and terminal:
                sys.stderr.write("\n")
            return status
        time.sleep(poll)


def exit_code(status: dict[str, Any], waited: bool) -> int:
    """0 when the run is fine so far; 1 when waiting ended without every chunk done cleanly."""
    if not waited:
        return 0
    failed = status.get("failed", 0) or status.get("dead_chunks", 0)
    return 1 if failed or status.get("timed_out") or not status["complete"] else 0


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m workers.backfill", description=__doc__)
    parser.add_argument("--chunk-size", type=int, default=200)
    parser.add_argument("--zoho", action="append", default=[], help="Zoho connection name")
    parser.add_argument("--no-contacts", action="store_true")
    parser.add_argument("--no-invoices", action="store_true")
    parser.add_argument("--wait", action="store_true", help="poll until every chunk is done")
    parser.add_argument(
        "--timeout", type=float, default=None, help="with --wait: give up (exit 1) after SECONDS"
    )
    parser.add_argument("--status", metavar="RUN_ID", help="print the tally of a run and exit")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    context = AppContext.from_env()
    try:
        if args.status:
            status = BackfillRun(context, args.status).status()
        else:
            ids: list[int] | None = None
            if args.zoho:
                with context.session() as session:
                    store = context.store(session)
                    ids = [store.get(name).id for name in args.zoho]
            run = start(
                context,
                chunk_size=args.chunk_size,
                zoho_connection_ids=ids,
                include_contacts=not args.no_contacts,
                include_invoices=not args.no_invoices,
            )
            status = (
                wait(context, run, echo=not args.json, timeout=args.timeout)
                if args.wait
                else run.status()
            )
    finally:
        context.close()
    if args.json:
        sys.stdout.write(json.dumps(status) + "\n")
    else:
        sys.stdout.write(
            f"backfill run {status['run_id']}: {status['finished_chunks']}/{status['chunks']} "
            f"chunks finished, {status['records']} records planned"
            + (
                f"; {status.get('applied', 0)} changed, {status.get('unchanged', 0)} already in "
                f"sync, {status.get('review', 0)} for review, {status.get('failed', 0)} failed, "
                f"{status.get('deals_written', 0)} deals written"
                if status.get("done")
                else ""
            )
            + "\n"
        )
        if status.get("timed_out"):
            sys.stdout.write(f"not finished after {args.timeout:g} s\n")
        if status.get("dead_chunks"):
            sys.stdout.write(
                f"{status['dead_chunks']} chunk(s) dead-lettered: see the dead letters page\n"
            )
        if not status["complete"]:
            sys.stdout.write(
                f"follow it with: python -m workers.backfill --status {status['run_id']}\n"
            )
    return exit_code(status, bool(args.wait))


if __name__ == "__main__":
    raise SystemExit(main())
