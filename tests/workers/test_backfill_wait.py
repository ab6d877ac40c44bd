"""``connector backfill --wait [--timeout SECONDS]``: blocks until every chunk of the run is
done, whoever finishes it, and exits 1 on a dead-lettered chunk, a failed record or the timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from connector.context import AppContext
from connector.db import upgrade
from connector.models import BackfillChunk
from connector.sync.distributed import BackfillRun
from connector.sync.engine import BackfillProgress
from tests.harness import make_settings
from workers import backfill

pytestmark = pytest.mark.integration


@pytest.fixture
def context(postgres_url: str, redis_url: str) -> Iterator[AppContext]:
    settings = make_settings(postgres_url, redis_url)
    upgrade(settings.database_url)
    ctx = AppContext(settings=settings)
    yield ctx
    ctx.close()


def _chunks(contacts: int, invoices: int) -> list[dict[str, Any]]:
    chunks = [{"phase": "contacts", "zoho_connection_id": 1, "records": [["c", ""]]}] * contacts
    chunks += [{"phase": "invoices", "zoho_connection_id": 1, "records": [{}]}] * invoices
    return [{**c, "number": n} for n, c in enumerate(chunks)]


def _finish_later(run: BackfillRun, chunks: list[dict[str, Any]], delay: float) -> threading.Thread:
    """Another worker (a fresh one, after the first died) finishes the chunks."""

    def work() -> None:
        pending = list(chunks)
        while pending:
            time.sleep(delay)
            pending += run.finish(pending.pop(0), BackfillProgress(done=1, applied=1))

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def test_wait_ends_when_another_worker_finishes_every_chunk(
    context: AppContext, capsys: pytest.CaptureFixture[str]
) -> None:
    run, first = BackfillRun.start(context, _chunks(2, 2))
    worker = _finish_later(run, first, 0.3)
    status = backfill.wait(context, run, poll=0.05, timeout=20)
    worker.join()
    assert status["complete"]
    assert (status["finished_chunks"], status["chunks"], status["timed_out"]) == (4, 4, False)
    assert backfill.exit_code(status, waited=True) == 0
    progress = capsys.readouterr().err
    assert f"backfill {run.run_id}: 0/4 chunks" in progress
    assert f"backfill {run.run_id}: 4/4 chunks, 4/4 records" in progress


def test_wait_gives_up_after_the_timeout_with_exit_1(context: AppContext) -> None:
    run, _ = BackfillRun.start(context, _chunks(2, 0))
    started = time.monotonic()
    status = backfill.wait(context, run, poll=0.05, timeout=0.5, echo=False)
    assert 0.5 <= time.monotonic() - started < 5
    assert status["timed_out"]
    assert not status["complete"]
    assert backfill.exit_code(status, waited=True) == 1


def test_wait_stops_at_a_dead_lettered_chunk_with_exit_1(context: AppContext) -> None:
    run, first = BackfillRun.start(context, _chunks(2, 0))
    with context.session() as session:
        session.add(BackfillChunk(run_id=run.run_id, number=1, chunk=first[1], status="dead"))
    status = backfill.wait(context, run, poll=0.05, timeout=20, echo=False)
    assert status["dead_chunks"] == 1
    assert not status["timed_out"]
    assert backfill.exit_code(status, waited=True) == 1


def test_failed_records_make_a_finished_wait_exit_1(context: AppContext) -> None:
    run, first = BackfillRun.start(context, _chunks(1, 0))
    run.finish(first[0], BackfillProgress(done=1, failed=1))
    status = backfill.wait(context, run, poll=0.05, timeout=5, echo=False)
    assert status["complete"]
    assert backfill.exit_code(status, waited=True) == 1
    assert backfill.exit_code(run.status(), waited=False) == 0


def test_cli_wait_implies_the_distributed_backfill_and_passes_the_timeout_and_exit_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import subprocess

    from click.testing import CliRunner

    from connector.cli import main

    calls: list[list[str]] = []

    def fake_run(command: list[str], check: bool) -> SimpleNamespace:
        calls.append(command)
        return SimpleNamespace(returncode=1)

    monkeypatch.setattr(subprocess, "run", fake_run)
    result = CliRunner().invoke(main, ["backfill", "--wait", "--timeout", "300"])
    assert result.exit_code == 1, result.output
    (command,) = calls
    assert command[1:] == [
        "-m",
        "workers.backfill",
        "--chunk-size",
        "200",
        "--wait",
        "--timeout",
        "300",
    ]
    refused = CliRunner().invoke(main, ["backfill", "--timeout", "5"])
    assert refused.exit_code != 0
    assert "--timeout needs --wait" in refused.output
