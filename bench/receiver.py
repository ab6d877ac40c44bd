"""Receiver throughput and latency: signed Zoho webhooks through gunicorn, side by side with a bare
Flask endpoint that answers 204, in the same run.

Both are served by gunicorn with the same number of sync workers (``--web-workers``). The
receiver is ``web:create_app()`` on a fresh PostgreSQL schema and Redis db 9
(``BENCH_RECEIVER_REDIS_URL``; flushed): every request is the real path (HMAC check, the event row in
PostgreSQL, the Celery task sent to Redis). No Celery worker runs, so the tasks stay queued;
the backlog limit is raised for the run (``CONNECTOR_WEBHOOK_BACKLOG_LIMIT``) so that the
receiver keeps accepting instead of answering 429 after 10,000 events. The load comes from
``bench/loadgen.py`` in a separate process (threads, keep-alive where gunicorn allows it),
each webhook a distinct invoice id, signed with the connection's secret.

Two measurements per server:

* max: closed loop, ``--connections`` concurrent senders for ``--seconds``: requests/s;
* fixed rate: open loop at ``--rate`` requests/s (200) for ``--seconds``: p50/p99 latency
  measured from each request's scheduled send time.

Targets: receiver throughput at least half the bare endpoint's; receiver p99 under 20 ms at
200 requests/s. Prints a table and writes ``bench/results/receiver.json``. Note that the load
generator shares the machine's cores with the servers, so on a small machine the bare figure is
partly bounded by the generator.

Usage::

    .venv/bin/python bench/receiver.py [--seconds 10] [--web-workers 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import requests  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench.stack import BIN, BenchStack, free_port, machine, print_targets, wait_for  # noqa: E402
from connector.models import WebhookEvent  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "receiver.json"
REDIS_URL = os.environ.get("BENCH_RECEIVER_REDIS_URL", "redis://127.0.0.1:6379/9")
PATH = "/webhooks/zoho/zoho-eu"


def _load(
    stack: BenchStack, url: str, *, mode: str, seconds: float, start_id: int, **options: Any
) -> dict[str, Any]:
    argv = [
        str(BIN / "python"),
        str(ROOT / "bench" / "loadgen.py"),
        "--url",
        url + PATH,
        "--mode",
        mode,
        "--seconds",
        str(seconds),
        "--start-id",
        str(start_id),
    ]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    answer = subprocess.run(
        argv,
        cwd=ROOT,
        env={**stack.env, "BENCH_WEBHOOK_SECRET": stack.zoho_secret},
        capture_output=True,
        text=True,
        timeout=seconds * 10 + 120,
        check=False,
    )
    if answer.returncode != 0:
        raise RuntimeError(f"load generator failed: {answer.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(answer.stdout)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Serve both apps, load each, compare."""
    with tempfile.TemporaryDirectory(prefix="bench-receiver-") as tmp:
        stack = BenchStack(Path(tmp), redis_url=args.redis_url, zoho_rate_limits=False)
        stack.env["CONNECTOR_WEBHOOK_BACKLOG_LIMIT"] = "100000000"
        try:
            stack.connect()
            stack.start_web(workers=args.web_workers)
            bare_port = free_port()
            bare_url = f"http://127.0.0.1:{bare_port}"
            stack.start(
                "bare",
                str(BIN / "gunicorn"),
                "--bind",
                f"127.0.0.1:{bare_port}",
                "--workers",
                str(args.web_workers),
                "bench.bare_app:app",
            )
            wait_for(
                "the bare app",
                lambda: requests.post(bare_url + PATH, timeout=2).status_code == 204,
            )
            targets = {"bare": bare_url, "receiver": stack.web_url}
            results: dict[str, dict[str, Any]] = {name: {} for name in targets}
            next_id = 1
            # Warm both up (imports, connection pools) before measuring.
            for url in targets.values():
                _load(stack, url, mode="max", seconds=1.5, start_id=next_id, connections=4)
                next_id += 100_000
            for name, url in targets.items():
                results[name]["max"] = _load(
                    stack,
                    url,
                    mode="max",
                    seconds=args.seconds,
                    start_id=next_id,
                    connections=args.connections,
                )
                next_id += 1_000_000
            for name, url in targets.items():
                results[name]["rate"] = _load(
                    stack,
                    url,
                    mode="rate",
                    seconds=args.seconds,
                    start_id=next_id,
                    rate=args.rate,
                    connections=args.connections,
                )
                next_id += 1_000_000
            with stack.context.session() as session:
                stored = session.scalar(sa.select(sa.func.count()).select_from(WebhookEvent))
            queued = redis.Redis.from_url(args.redis_url).llen("webhooks")
        except BaseException:
            sys.stderr.write(stack.log_tail("web", 40) + "\n")
            raise
        finally:
            stack.close()
    receiver, bare = results["receiver"], results["bare"]
    ratio = (
        receiver["max"]["throughput"] / bare["max"]["throughput"]
        if bare["max"]["throughput"]
        else None
    )
    p99 = receiver["rate"]["latency_ms"]["p99"]
    accepted = sum(
        n
        for phase in ("max", "rate")
        for status, n in receiver[phase]["statuses"].items()
        if status.startswith("2")
    )
    return {
        "benchmark": "receiver",
        "machine": machine(),
        "settings": {
            "web_workers": args.web_workers,
            "connections": args.connections,
            "seconds": args.seconds,
            "rate": args.rate,
            "server": "gunicorn sync workers",
            "load_generator": "bench/loadgen.py (Python threads, http.client), separate process",
        },
        "bare": bare,
        "receiver": receiver,
        "receiver_over_bare_throughput": round(ratio, 3) if ratio is not None else None,
        "events_stored": stored,
        "tasks_queued_in_redis": queued,
        "receiver_2xx_measured": accepted,
        "targets": {
            "throughput_at_least_half_of_bare": ratio is not None and ratio >= 0.5,
            f"p99_under_20ms_at_{args.rate:g}_rps": p99 is not None and p99 < 20.0,
            "every_request_accepted": all(
                set(receiver[p]["statuses"]) <= {"200", "202"} and not receiver[p]["errors"]
                for p in ("max", "rate")
            ),
        },
    }


def print_table(result: dict[str, Any]) -> None:
    """The human-readable table."""
    s = result["settings"]
    print(
        f"Receiver: gunicorn, {s['web_workers']} sync workers each; load {s['connections']} "
        f"connections, {s['seconds']:g} s per measurement"
    )
    header = (
        f"{'server':<10} {'max req/s':>9} {'p50 ms':>7} {'p99 ms':>7} | "
        f"{'@' + format(s['rate'], 'g') + ' req/s':>11} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'statuses'}"
    )
    print(header)
    print("-" * len(header))
    for name in ("bare", "receiver"):
        m, r = result[name]["max"], result[name]["rate"]
        print(
            f"{name:<10} {m['throughput']:>9.1f} {m['latency_ms']['p50']:>7} "
            f"{m['latency_ms']['p99']:>7} | {r['throughput']:>11.1f} {r['latency_ms']['p50']:>7} "
            f"{r['latency_ms']['p99']:>7} {r['latency_ms']['max']:>7} "
            f"{m['statuses']} {r['statuses']}"
            + (f" errors {m['errors']} {r['errors']}" if m["errors"] or r["errors"] else "")
        )
    print(
        f"receiver/bare throughput: {result['receiver_over_bare_throughput']}; events stored "
        f"{result['events_stored']} (2xx answers {result['receiver_2xx_measured']} + warm-up), "
        f"tasks queued in Redis {result['tasks_queued_in_redis']}"
    )
    print_targets(result["targets"])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--web-workers", type=int, default=4)
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.monotonic()
    result = run(args)
    result["run_seconds"] = round(time.monotonic() - started, 1)
    print_table(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
