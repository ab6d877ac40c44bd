"""Freshness: time from a Zoho invoice webhook to the Pipedrive deal's invoice total being set.

The whole service runs as in production (like ``tests/e2e``): gunicorn serving the receiver, a
Celery worker with 2 processes, Celery Beat, a fresh PostgreSQL schema and Redis db 11
(``BENCH_FRESHNESS_REDIS_URL``; flushed), both simulators served on loopback. Pipedrive keeps
the Growth plan's burst limit (40 requests per 2 s). Zoho's per-minute limit is lifted (set
``--zoho-per-minute``): every event costs one Zoho read, so at 100/min events beyond 1.6/s
would queue behind Zoho's limit and the figure would measure that limit, not the service.

``--customers`` Zoho customers are synced to Pipedrive through their webhooks and given one open
deal each. Then ``--events`` invoices are created in the Zoho simulator at ``--rate`` per
second, round-robin over the customers; the simulator sends each invoice's webhook to the
receiver. An event is fresh when its deal's "Zoho Invoice Total" reaches the running sum that
includes it; its freshness is the time of the Pipedrive PATCH that wrote it (from the
simulator's request log) minus the time the invoice was created.

Target: p50 under 1 s. Prints a table and writes ``bench/results/freshness.json``.

Usage::

    .venv/bin/python bench/freshness.py [--events 1000] [--rate 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.stack import COMPANY, BenchStack, machine, print_targets, wait_for  # noqa: E402
from tests.harness import contact  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "freshness.json"
REDIS_URL = os.environ.get("BENCH_FRESHNESS_REDIS_URL", "redis://127.0.0.1:6379/11")
TARGET_P50_MS = 1000.0


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return round(ordered[index], 1)


def _deal_total(stack: BenchStack, deal_id: int, key: str) -> Decimal:
    field = (stack.pd.get_record(COMPANY, "deals", deal_id).get("custom_fields") or {}).get(key)
    value = field.get("value") if isinstance(field, dict) else field
    return Decimal(str(value or 0))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the stack, fire the events, time each to its Pipedrive write."""
    with tempfile.TemporaryDirectory(prefix="bench-freshness-") as tmp:
        stack = BenchStack(
            Path(tmp),
            redis_url=args.redis_url,
            zoho_rate_limits=True,
            zoho_per_minute=args.zoho_per_minute,
            webhooks=True,
        )
        try:
            stack.connect()
            stack.start_web(workers=2)
            stack.start_worker(concurrency=args.worker_processes)
            stack.start_beat()
            stack.register_pipedrive_webhooks()
            stack.configure_zoho_webhooks()
            names = [f"Fresh {i:04d} AG" for i in range(args.customers)]
            customers = [
                str(stack.zoho.create_record(stack.org, "contacts", contact(n))["contact_id"])
                for n in names
            ]
            wait_for(
                "the customers in Pipedrive",
                lambda: len(stack.pd.records(COMPANY, "organizations")) >= args.customers,
                timeout=120,
            )
            org_of = {o["name"]: o["id"] for o in stack.pd.records(COMPANY, "organizations")}
            deals = stack.pd.seed(
                COMPANY,
                "deals",
                [
                    {"title": f"Deal {n}", "org_id": org_of[n], "status": "open", "currency": "EUR"}
                    for n in names
                ],
            )
            key = stack.pd.custom_field_key(COMPANY, "deal", "Zoho Invoice Total")
            time.sleep(2)  # let the contacts' echoes settle before the clock starts

            created: list[float] = []
            expected: list[Decimal] = []
            deal_of_event: list[int] = []
            running = dict.fromkeys(deals, Decimal(0))
            seen: dict[int, float] = {}
            lock = threading.Lock()
            done = threading.Event()

            def poll() -> None:
                # Notices when each event's total is visible; the exact write time comes from
                # the request log afterwards.
                while not done.is_set():
                    with lock:
                        pending = [i for i in range(len(created)) if i not in seen]
                    totals: dict[int, Decimal] = {}
                    for i in pending:
                        deal = deal_of_event[i]
                        if deal not in totals:
                            totals[deal] = _deal_total(stack, deal, key)
                        if totals[deal] >= expected[i]:
                            seen[i] = stack.clock.timestamp()
                    time.sleep(0.02)

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            start = time.perf_counter()
            for i in range(args.events):
                due = start + i / args.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                slot = i % args.customers
                amount = Decimal(1 + i)
                deal = deals[slot]
                with lock:
                    running[deal] += amount
                    expected.append(running[deal])
                    deal_of_event.append(deal)
                    created.append(stack.clock.timestamp())
                stack.zoho.create_record(
                    stack.org,
                    "invoices",
                    {
                        "customer_id": customers[slot],
                        "date": "2026-03-01",
                        "due_date": "2026-03-31",
                        "status": "sent",
                        "line_items": [
                            {"name": f"Event {i}", "rate": float(amount), "quantity": 1}
                        ],
                    },
                )
            sending = time.perf_counter() - start
            deadline = time.monotonic() + args.drain_timeout
            while len(seen) < args.events and time.monotonic() < deadline:
                time.sleep(0.2)
            done.set()
            poller.join(timeout=5)
            patches: dict[int, list[float]] = {}
            for record in stack.pd.request_log(COMPANY):
                if record.method == "PATCH" and record.status == 200 and "/deals/" in record.path:
                    deal_id = int(record.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[1])
                    patches.setdefault(deal_id, []).append(record.timestamp)
            latencies: list[float] = []
            for i, noticed in seen.items():
                writes = [
                    t for t in patches.get(deal_of_event[i], []) if created[i] <= t <= noticed
                ]
                # The last write before the total was seen is the one that carried it.
                written = max(writes) if writes else noticed
                latencies.append((written - created[i]) * 1000)
            deliveries = list(stack.zoho.webhook_log)
            failed_deliveries = sum(1 for d in deliveries if d.status not in (200, 202))
            pd_429 = sum(1 for r in stack.pd.request_log(COMPANY) if r.status == 429)
        except BaseException:
            for name in ("web", "worker"):
                sys.stderr.write(f"--- {name}\n{stack.log_tail(name, 30)}\n")
            raise
        finally:
            stack.close()
    p50 = _percentile(latencies, 50)
    return {
        "benchmark": "freshness",
        "machine": machine(),
        "settings": {
            "events": args.events,
            "rate_per_second": args.rate,
            "customers": args.customers,
            "worker_processes": args.worker_processes,
            "web_workers": 2,
            "zoho_per_minute": args.zoho_per_minute,
            "pipedrive_burst": "growth plan (40 per 2 s)",
        },
        "sending_seconds": round(sending, 1),
        "fresh_events": len(latencies),
        "missing_events": args.events - len(latencies),
        "latency_ms": {
            "p50": p50,
            "p90": _percentile(latencies, 90),
            "p99": _percentile(latencies, 99),
            "max": round(max(latencies), 1) if latencies else None,
            "mean": round(statistics.fmean(latencies), 1) if latencies else None,
        },
        "webhook_deliveries": len(deliveries),
        "webhook_deliveries_not_accepted": failed_deliveries,
        "pipedrive_429": pd_429,
        "targets": {
            "p50_under_1s": p50 is not None and p50 < TARGET_P50_MS,
            "every_event_arrived": len(latencies) == args.events,
        },
    }


def print_table(result: dict[str, Any]) -> None:
    """The human-readable table."""
    s = result["settings"]
    lat = result["latency_ms"]
    print(
        f"Freshness: {s['events']} invoice webhooks at {s['rate_per_second']:g}/s over "
        f"{s['customers']} deals; gunicorn 2 workers, Celery {s['worker_processes']} processes"
    )
    header = f"{'events':>6} {'fresh':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    print(header)
    print("-" * len(header))
    print(
        f"{s['events']:>6} {result['fresh_events']:>6} {lat['p50']!s:>8} {lat['p90']!s:>8} "
        f"{lat['p99']!s:>8} {lat['max']!s:>8}"
    )
    print(
        f"webhook deliveries {result['webhook_deliveries']} "
        f"(not accepted {result['webhook_deliveries_not_accepted']}), Pipedrive 429s "
        f"{result['pipedrive_429']}"
    )
    print_targets(result["targets"])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=5.0, help="invoices created per second")
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--worker-processes", type=int, default=2)
    parser.add_argument("--zoho-per-minute", type=int, default=100_000)
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = run(args)
    print_table(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
