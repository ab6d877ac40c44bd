"""Memory: peak RSS of a worker process while it syncs N contacts, for growing N.

Both simulators are served on loopback by this process (their data is kept out of the measured
process); limits are lifted (Zoho unlimited, Pipedrive burst 100,000) so only memory is
measured. Reduced shape: business contacts without contact persons, no invoices. Fresh
PostgreSQL schema and Redis db 7 (``BENCH_MEMORY_REDIS_URL``; flushed) per size.

For each size a child process (the "worker") syncs every contact in one of two ways:

* ``chunks`` (what the Celery workers run, ``connector backfill --distributed``): this
  process plans the chunks (as ``python -m workers.backfill`` does) and queues them in a Redis
  list; the child takes them one at a time and runs them one after the other, as one worker
  process runs task after task;
* ``single`` (``connector backfill``): ``SyncEngine.backfill`` in one engine session (it lists
  every Zoho contact first, so it holds a few hundred bytes per contact by design).

The child samples its own RSS (``/proc/self/status``) every 0.2 s and reports the peak
(``VmHWM``), the peak after the first chunk and the RSS after start-up. Target: under 250 MB
and flat (not growing with the count). Prints a table and writes ``bench/results/memory.json``.

Usage::

    .venv/bin/python bench/memory.py                         # 1,000 / 5,000
    .venv/bin/python bench/memory.py --sizes 1000 10000 100000   # about 40 minutes on 2 cores
    .venv/bin/python bench/memory.py --modes chunks --sizes 1000 100000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "memory.json"
REDIS_URL = os.environ.get("BENCH_MEMORY_REDIS_URL", "redis://127.0.0.1:6379/7")
CHUNKS_KEY = "bench:memory:chunks"
TARGET_MB = 250.0


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _peak_mb() -> float:
    """The peak RSS of this process since its exec.

    Not ``getrusage``: its ``ru_maxrss`` survives ``exec`` and so reports the parent's RSS at
    fork (the simulators holding every seeded contact) when that was larger.
    """
    return _status_mb("VmHWM")


def child(mode: str) -> dict[str, Any]:
    """Run in the measured process: sync every contact, report memory."""
    from connector.context import AppContext
    from connector.sync.distributed import run_backfill_chunk
    from connector.sync.engine import engine_session

    context = AppContext.from_env()
    baseline = _rss_mb()
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            samples.append((round(time.monotonic() - started, 1), round(_rss_mb(), 1)))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    done = chunks = tokens = 0
    peak_after_first = 0.0
    if mode == "chunks":
        # One chunk at a time from a Redis list, as Celery tasks reach a worker process.
        while (raw := context.redis.lpop(CHUNKS_KEY)) is not None:
            assert isinstance(raw, bytes)
            state = run_backfill_chunk(context, json.loads(raw))
            done += state.done
            tokens += state.tokens
            chunks += 1
            if chunks == 1:
                peak_after_first = _peak_mb()
    else:
        with engine_session(context, trigger="backfill", indexed=True) as engine:
            state = engine.backfill(include_invoices=False)
            done, tokens = state.done, state.tokens
    stop.set()
    sampler.join()
    context.close()
    return {
        "mode": mode,
        "synced": done,
        "chunks": chunks,
        # Pipedrive tokens: 5 per organization created, the rest is listing and reading.
        "pipedrive_tokens": tokens,
        "seconds": round(time.monotonic() - started, 1),
        "rss_start_mb": round(baseline, 1),
        "rss_peak_mb": round(_peak_mb(), 1),
        "rss_peak_after_first_chunk_mb": round(peak_after_first, 1),
        "rss_end_mb": round(_rss_mb(), 1),
        # A coarse curve: one sample in ten.
        "rss_curve": samples[::10],
    }


def measure(size: int, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Seed ``size`` contacts, run the child, return its report plus what it synced."""
    from bench.stack import COMPANY, BenchStack
    from connector.sync.distributed import plan_backfill_chunks

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        stack = BenchStack(
            Path(tmp),
            redis_url=args.redis_url,
            zoho_rate_limits=False,
            zoho_per_minute=100_000_000,
            pd_burst=100_000,
            pd_daily_budget=1_000_000_000,
            zoho_daily_limit=100_000_000,
            request_log_limit=1000,
        )
        try:
            stack.connect()
            bodies = [
                {
                    "contact_name": f"Company {i:07d} GmbH",
                    "company_name": f"Company {i:07d} GmbH",
                    "contact_type": "customer",
                    "customer_sub_type": "business",
                    "contact_persons": [],
                }
                for i in range(size)
            ]
            stack.zoho.bulk_create(stack.org, "contacts", bodies)
            del bodies
            if mode == "chunks":
                # Planned here, as `python -m workers.backfill` plans for the workers: the plan
                # (every contact id) never lives in a worker process.
                plan = plan_backfill_chunks(
                    stack.context, chunk_size=args.chunk_size, include_invoices=False
                )
                queue = redis.Redis.from_url(args.redis_url)
                for start in range(0, len(plan), 100):
                    queue.rpush(CHUNKS_KEY, *[json.dumps(c) for c in plan[start : start + 100]])
                del plan
            seeded = time.monotonic()
            answer = subprocess.run(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--child",
                    mode,
                ],
                cwd=ROOT,
                env=stack.env,
                capture_output=True,
                text=True,
                timeout=args.timeout,
                check=False,
            )
            if answer.returncode != 0:
                raise RuntimeError(f"child failed: {answer.stderr[-3000:]}")
            report: dict[str, Any] = json.loads(answer.stdout.strip().splitlines()[-1])
            report["size"] = size
            report["seed_and_plan_seconds"] = round(seeded - started, 1)
            report["pipedrive_organizations"] = len(stack.pd.records(COMPANY, "organizations"))
        finally:
            stack.close()
    return report


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every size in every mode."""
    from bench.stack import machine

    rows = []
    for mode in args.modes:
        for size in args.sizes:
            report = measure(size, mode, args)
            rows.append(report)
            print(
                f"  {mode:<7} {size:>7} contacts: peak {report['rss_peak_mb']:.1f} MB "
                f"({report['seconds']:.0f} s)",
                file=sys.stderr,
            )
    targets: dict[str, bool] = {}
    growth: dict[str, float] = {}
    for mode in args.modes:
        peaks = [r["rss_peak_mb"] for r in rows if r["mode"] == mode]
        sizes = [r["size"] for r in rows if r["mode"] == mode]
        targets[f"{mode}_under_{TARGET_MB:g}_mb"] = max(peaks) < TARGET_MB
        # Flat: the largest size costs no more than 10% (or 10 MB) above the smallest.
        slope = (peaks[-1] - peaks[0]) / max(1, sizes[-1] - sizes[0]) * 10_000
        growth[mode] = round(slope, 2)
        targets[f"{mode}_flat"] = peaks[-1] <= max(peaks[0] * 1.10, peaks[0] + 10)
    return {
        "benchmark": "memory",
        "machine": machine(),
        "settings": {"sizes": args.sizes, "modes": args.modes, "chunk_size": args.chunk_size},
        "rows": rows,
        "mb_per_10k_contacts": growth,
        "targets": targets,
    }


def print_table(result: dict[str, Any]) -> None:
    """The human-readable table."""
    from bench.stack import print_targets

    print(
        f"Memory: peak RSS of one worker process syncing N contacts (chunk size "
        f"{result['settings']['chunk_size']})"
    )
    header = (
        f"{'mode':<7} {'contacts':>8} {'synced':>7} {'start MB':>8} {'peak MB':>8} "
        f"{'1st MB':>8} {'s':>6} {'PD orgs':>8} {'PD tokens':>9}"
    )
    print(header)
    print("-" * len(header))
    for row in result["rows"]:
        print(
            f"{row['mode']:<7} {row['size']:>8} {row['synced']:>7} {row['rss_start_mb']:>8.1f} "
            f"{row['rss_peak_mb']:>8.1f} {row['rss_peak_after_first_chunk_mb'] or 0:>8.1f} "
            f"{row['seconds']:>6.0f} {row['pipedrive_organizations']:>8} "
            f"{row.get('pipedrive_tokens', 0):>9}"
        )
    print(
        "growth, MB per 10,000 contacts: "
        + ", ".join(f"{m} {v}" for m, v in result["mb_per_10k_contacts"].items())
    )
    print_targets(result["targets"])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with --child, the measured process)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument(
        "--modes", nargs="+", choices=["chunks", "single"], default=["chunks", "single"]
    )
    parser.add_argument("--chunk-size", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=4 * 3600)
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--child", choices=["chunks", "single"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    result = run(args)
    print_table(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
