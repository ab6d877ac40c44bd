"""Benchmark the shared Pipedrive limiter end to end: 4 client processes against the simulator.

The Pipedrive simulator serves on loopback (a thread of this process); each worker process has
its own :class:`~connector.pipedrive.client.PipedriveClient` making real HTTP GETs
(``/api/v2/organizations/{id}``, cost 1) through one shared
:class:`~connector.pipedrive.limiter.PipedriveLimiter` on the real Redis. Growth plan, API token:
40 requests per rolling 2 s; a budget far above what the run can spend.

The simulator's request log is the judge. Printed, and written to
``bench/results/pipedrive_burst.json``:

* requests granted per full 2-second window as a fraction of the burst limit (mean, min);
* the most granted requests in any rolling 2-second window;
* 429s received;
* limiter overhead in microseconds (p50, p99): per ``try_acquire`` call (one Redis round trip),
  per acquisition (every ``try_acquire`` of one ``acquire``, sleeps excluded) and per
  ``observe`` (the header feedback after each response);
* total requests, tokens spent by our ledger against the tokens the simulator charged.

Usage::

    .venv/bin/python bench/pipedrive_burst.py --seconds 10
    .venv/bin/python bench/pipedrive_burst.py --seconds 10 --no-headers   # ledger only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import multiprocessing
import os
import random
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis

from connector.errors import RateLimitError
from connector.http import RetryPolicy
from connector.pipedrive.auth import ApiTokenAuth
from connector.pipedrive.client import PipedriveClient
from connector.pipedrive.limiter import PipedriveLimiter, token_key_for
from connector.ratelimit import Decision, Priority
from connector.sandbox.pipedrive import PipedriveSimulator

RESULTS = Path(__file__).resolve().parent / "results" / "pipedrive_burst.json"
COMPANY = "bench"
WINDOW_SECONDS = 2.0
ORGANIZATIONS = 20
# Spawned interpreters import the client stack before the common start.
STARTUP_SLACK = 3.0


class TimedLimiter(PipedriveLimiter):
    """The real limiter, timing its own Redis work (never the sleeps between attempts)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.try_ns: list[int] = []
        self.acquire_ns: list[int] = []
        self.observe_ns: list[int] = []
        self.refusals: Counter[str] = Counter()
        self._pending_ns = 0

    def try_acquire(
        self, cost: int, *, search: bool = False, priority: Priority = Priority.SCHEDULED
    ) -> Decision:
        began = time.perf_counter_ns()
        decision = super().try_acquire(cost, search=search, priority=priority)
        spent = time.perf_counter_ns() - began
        self.try_ns.append(spent)
        self._pending_ns += spent
        if not decision.granted:
            self.refusals[decision.reason] += 1
        return decision

    def acquire(
        self,
        cost: int,
        *,
        search: bool = False,
        priority: Priority = Priority.SCHEDULED,
        max_wait: float = 5.0,
    ) -> Decision:
        self._pending_ns = 0
        try:
            return super().acquire(cost, search=search, priority=priority, max_wait=max_wait)
        finally:
            self.acquire_ns.append(self._pending_ns)

    def observe(
        self, status: int, headers: Mapping[str, str], *, body_is_html: bool = False
    ) -> None:
        began = time.perf_counter_ns()
        super().observe(status, headers, body_is_html=body_is_html)
        self.observe_ns.append(time.perf_counter_ns() - began)


def _limiter(redis_url: str, company_key: str, token: str, cls: type = PipedriveLimiter) -> Any:
    return cls(
        redis=redis.Redis.from_url(redis_url),
        company_key=company_key,
        token_key=token_key_for(token),
        plan="growth",
        auth_kind="api_token",
        timezone="UTC",
    )


def worker(
    api_base: str,
    token: str,
    redis_url: str,
    company_key: str,
    org_ids: list[int],
    seed: int,
    start_at: float,
    stop_at: float,
) -> dict[str, Any]:
    """Send GETs as fast as the shared limiter allows until ``stop_at``."""
    limiter: TimedLimiter = _limiter(redis_url, company_key, token, TimedLimiter)
    client = PipedriveClient(
        ApiTokenAuth(token),
        base_url=api_base,
        limiter=limiter,
        retry=RetryPolicy(max_retries=4, base_delay=0.2, max_delay=8.0),
        timeout=10.0,
    )
    rng = random.Random(seed)
    # Open the keep-alive connection and load the script before the clock starts.
    root = api_base.rsplit("/c/", 1)[0]
    client.session.get(f"{root}/_sim/companies", timeout=5).raise_for_status()
    limiter.status()
    limiter.try_ns.clear()
    deferred = 0
    while time.time() < start_at:
        time.sleep(0.002)
    while time.time() < stop_at:
        try:
            client.organizations.get(rng.choice(org_ids))
        except RateLimitError as error:
            # A wait longer than acquire's max_wait; a real task would be retried later.
            deferred += 1
            time.sleep(min(error.retry_after or 1.0, max(0.0, stop_at - time.time())))
    client.session.close()
    return {
        "try_ns": limiter.try_ns,
        "acquire_ns": limiter.acquire_ns,
        "observe_ns": limiter.observe_ns,
        "refusals": dict(limiter.refusals),
        "statuses": dict(client.stats.by_status),
        "deferred": deferred,
    }


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def _cleanup(redis_url: str, company_key: str) -> None:
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"connector:rl:pd:{{{company_key}}}:*"):
        client.delete(key)
    client.close()


def run(redis_url: str, seconds: float, processes: int, headers: bool) -> dict[str, Any]:
    """Run the benchmark and return its figures."""
    if dt.datetime.now(dt.UTC).hour == 23 and dt.datetime.now(dt.UTC).minute >= 58:
        raise SystemExit("too close to midnight UTC: the budget day would change mid-run")
    company_key = f"bench-{uuid.uuid4().hex[:8]}"
    sim = PipedriveSimulator()
    server, _url = sim.start_server()
    try:
        sim.create_company(COMPANY, plan="growth", timezone="UTC")
        sim.configure(headers_enabled=headers)
        token = sim.create_api_token(COMPANY)
        org_ids = sim.seed(COMPANY, "organization", [{"name": f"Org {n}"} for n in range(20)])
        start_at = time.time() + STARTUP_SLACK
        stop_at = start_at + seconds
        context = multiprocessing.get_context("spawn")
        with context.Pool(processes) as pool:
            results = pool.starmap(
                worker,
                [
                    (
                        sim.api_base(COMPANY),
                        token,
                        redis_url,
                        company_key,
                        org_ids,
                        seed,
                        start_at,
                        stop_at,
                    )
                    for seed in range(processes)
                ],
            )
        log = sim.request_log(COMPANY)
        charged = sim.tokens_spent(COMPANY)
        busiest = sim.max_requests_in_any_window(COMPANY, window=WINDOW_SECONDS)
        count_429 = sim.count_429(COMPANY)
        probe = _limiter(redis_url, company_key, token)
        ledger = probe.spent_today()
        burst = probe.burst_limit
        budget = probe.budget
    finally:
        server.shutdown()
        sim.close()
        _cleanup(redis_url, company_key)

    granted = sorted(record.timestamp for record in log if record.granted)
    # Consecutive 2 s windows from the first granted request; the last, partial one is left out.
    per_window: list[int] = []
    if granted:
        edge = granted[0]
        while edge + WINDOW_SECONDS <= granted[-1]:
            per_window.append(sum(1 for t in granted if edge <= t < edge + WINDOW_SECONDS))
            edge += WINDOW_SECONDS
    steady = per_window[1:]  # the first window is the instant burst of a cold start

    try_us = [ns / 1000 for result in results for ns in result["try_ns"]]
    acquire_us = [ns / 1000 for result in results for ns in result["acquire_ns"]]
    observe_us = [ns / 1000 for result in results for ns in result["observe_ns"]]
    refusals: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for result in results:
        refusals.update(result["refusals"])
        statuses.update(result["statuses"])

    return {
        "processes": processes,
        "seconds": seconds,
        "plan": "growth/api_token",
        "rate_limit_headers": headers,
        "burst_limit": burst,
        "requests": len(log),
        "granted": len(granted),
        "statuses": dict(statuses),
        "full_windows": len(per_window),
        "per_window": per_window,
        "window_fill_mean": statistics.fmean(per_window) / burst if per_window else None,
        "window_fill_min": min(per_window) / burst if per_window else None,
        "window_fill_mean_after_first": statistics.fmean(steady) / burst if steady else None,
        "busiest_rolling_window": busiest,
        "count_429": count_429,
        "refusals": dict(refusals),
        "deferred_after_long_wait": sum(result["deferred"] for result in results),
        "try_acquire_calls": len(try_us),
        "try_acquire_us_p50": _percentile(try_us, 0.50),
        "try_acquire_us_p99": _percentile(try_us, 0.99),
        "acquisitions": len(acquire_us),
        "acquire_us_p50": _percentile(acquire_us, 0.50),
        "acquire_us_p99": _percentile(acquire_us, 0.99),
        "observe_us_p50": _percentile(observe_us, 0.50),
        "observe_us_p99": _percentile(observe_us, 0.99),
        "tokens_ledger": ledger,
        "tokens_charged_by_simulator": charged,
        "daily_budget": budget,
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    """Parse arguments, run, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description="4 Pipedrive clients against the simulator.")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument(
        "--no-headers",
        action="store_true",
        help="the simulator sends no rate-limit headers: the Redis ledger alone paces the clients",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    options = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request
    figures = run(options.redis_url, options.seconds, options.processes, not options.no_headers)
    rows = [
        ("processes x seconds", f"{figures['processes']} x {figures['seconds']:g}"),
        ("rate-limit headers", "on" if figures["rate_limit_headers"] else "off"),
        ("burst limit (per 2 s)", figures["burst_limit"]),
        ("requests (simulator log)", figures["requests"]),
        ("full 2 s windows", figures["full_windows"]),
        ("granted per window", " ".join(str(n) for n in figures["per_window"])),
        ("window fill, mean", _fraction(figures["window_fill_mean"])),
        ("window fill, min", _fraction(figures["window_fill_min"])),
        ("window fill, mean after the first", _fraction(figures["window_fill_mean_after_first"])),
        ("busiest rolling 2 s window", figures["busiest_rolling_window"]),
        ("429s received", figures["count_429"]),
        ("limiter refusals (waits)", _counts(figures["refusals"])),
        ("try_acquire p50 / p99 (us)", _pair(figures, "try_acquire")),
        ("per acquisition p50 / p99 (us)", _pair(figures, "acquire")),
        ("observe p50 / p99 (us)", _pair(figures, "observe")),
        (
            "tokens: ledger / simulator",
            f"{figures['tokens_ledger']} / {figures['tokens_charged_by_simulator']}",
        ),
        ("daily budget", figures["daily_budget"]),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten to {options.output}")


def _pair(figures: dict[str, Any], name: str) -> str:
    low, high = figures[f"{name}_us_p50"], figures[f"{name}_us_p99"]
    if low is None or high is None:
        return "n/a"
    return f"{low:.0f} / {high:.0f}"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) or "none"


def _fraction(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


if __name__ == "__main__":
    main()
