"""HTTP load generator for ``bench/receiver.py``, run as its own process.

Sends signed Zoho invoice webhooks, each with a distinct invoice id, to a URL:

* ``--mode max``: closed loop, ``--connections`` threads sending back to back for
  ``--seconds``; measures the highest throughput;
* ``--mode rate``: open loop at ``--rate`` requests per second for ``--seconds``; each request
  has a scheduled send time, and its latency is measured from that time (a late send counts
  as latency, so a server that falls behind cannot hide it).

Prints one JSON document: requests, throughput, statuses, errors, latency percentiles (ms).
Bodies are built and signed (secret from ``BENCH_WEBHOOK_SECRET``) before the clock starts.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import threading
import time
import urllib.parse
from collections import Counter
from typing import Any

from connector.zoho.webhooks import sign_zoho_webhook


def _bodies(count: int, secret: str, start_id: int) -> list[tuple[bytes, str]]:
    bodies = []
    for n in range(count):
        body = json.dumps(
            {
                "invoice": {
                    "invoice_id": str(start_id + n),
                    "invoice_number": f"INV-{start_id + n}",
                    "customer_id": "1",
                    "total": 100.0,
                    "status": "sent",
                    "last_modified_time": "2026-03-02T10:00:00+0000",
                }
            }
        ).encode()
        bodies.append((body, sign_zoho_webhook(secret, params={}, raw_body=body)))
    return bodies


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return round(ordered[index], 2)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Generate the load and summarise it."""
    url = urllib.parse.urlsplit(args.url)
    planned = int(args.rate * args.seconds) if args.mode == "rate" else args.max_requests
    # From the environment, not the command line: a secret does not belong in the process list.
    bodies = _bodies(planned, os.environ["BENCH_WEBHOOK_SECRET"], args.start_id)
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    next_index = 0
    start = time.perf_counter() + 0.2
    stop_at = start + args.seconds

    def take() -> int | None:
        nonlocal next_index
        with lock:
            if next_index >= len(bodies):
                return None
            index = next_index
            next_index += 1
            return index

    def worker() -> None:
        connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
        while True:
            index = take()
            if index is None:
                return
            if args.mode == "rate":
                scheduled = start + index / args.rate
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            else:
                scheduled = time.perf_counter()
                if scheduled >= stop_at:
                    return
            body, signature = bodies[index]
            try:
                connection.request(
                    "POST",
                    url.path,
                    body=body,
                    headers={
                        "Content-Type": "application/json",
                        "X-Zoho-Webhook-Signature": signature,
                    },
                )
                response = connection.getresponse()
                response.read()
                status = response.status
                if response.getheader("Connection", "").lower() == "close":
                    connection.close()
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                with lock:
                    errors[type(exc).__name__] += 1
                continue
            elapsed = (time.perf_counter() - scheduled) * 1000
            with lock:
                latencies.append(elapsed)
                statuses[status] += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.connections)]
    while time.perf_counter() < start:
        time.sleep(0.01)
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    done = len(latencies)
    return {
        "mode": args.mode,
        "url": args.url,
        "connections": args.connections,
        "rate": args.rate if args.mode == "rate" else None,
        "requests": done,
        "seconds": round(elapsed, 2),
        "throughput": round(done / elapsed, 1) if elapsed else 0.0,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": dict(errors),
        "latency_ms": {
            "p50": _percentile(latencies, 50),
            "p90": _percentile(latencies, 90),
            "p99": _percentile(latencies, 99),
            "max": round(max(latencies), 2) if latencies else None,
            "mean": round(statistics.fmean(latencies), 2) if latencies else None,
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=["max", "rate"], default="max")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--max-requests", type=int, default=50_000)
    parser.add_argument("--start-id", type=int, default=1)
    args = parser.parse_args(argv)
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
