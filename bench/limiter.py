"""Benchmark the shared Pipedrive limiter: 4 processes on the real Redis, Growth plan API token.

Measures how close the processes get to the burst limit (grants per 2-second window as a
fraction of 40), how many refusals turned into waits, the cost of one ``try_acquire`` call,
and the tokens spent against the budget. Prints a table and writes
``bench/results/limiter.json``::

    .venv/bin/python bench/limiter.py --seconds 10
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from connector.pipedrive.limiter import PipedriveLimiter
from connector.ratelimit import Priority

RESULTS = Path(__file__).resolve().parent / "results" / "limiter.json"
# A sync-like mix: mostly single gets and list pages, some writes (v2 costs).
COSTS = [1, 1, 1, 10, 10, 5, 5, 3]
STARTUP_SLACK = 2.0


def _limiter(url: str, company: str, unlimited: bool = False) -> PipedriveLimiter:
    return PipedriveLimiter(
        redis=redis.Redis.from_url(url),
        company_key=company,
        token_key="bench-token",  # noqa: S106 - an id, not a secret
        plan="growth",
        auth_kind="api_token",
        # The overhead phase lifts the limits so every call runs the whole script and spends.
        burst_limit=10**9 if unlimited else None,
        daily_budget=10**12 if unlimited else None,
    )


def worker(
    url: str, company: str, seed: int, start_at: float, stop_at: float, unlimited: bool = False
) -> dict[str, Any]:
    """Acquire as fast as the limiter allows, sleeping the advised wait after each refusal."""
    limiter = _limiter(url, company, unlimited)
    limiter.status()  # connect before the clock starts; the first EVALSHA still loads the script
    rng = random.Random(seed)
    grants: list[tuple[int, int]] = []
    call_ns: list[int] = []
    waits: list[float] = []
    while time.time() < start_at:
        time.sleep(0.002)
    while time.time() < stop_at:
        cost = rng.choice(COSTS)
        began = time.perf_counter_ns()
        decision = limiter.try_acquire(cost, priority=Priority.SCHEDULED)
        call_ns.append(time.perf_counter_ns() - began)
        if decision.granted:
            assert decision.at is not None
            grants.append((round(decision.at * 1000), cost))
        else:
            pause = decision.wait_seconds + rng.uniform(0, 0.02)
            waits.append(pause)
            time.sleep(min(pause, max(0.0, stop_at - time.time())))
    return {"grants": grants, "call_ns": call_ns, "waits": waits}


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def _run_workers(
    url: str, company: str, seconds: float, processes: int, unlimited: bool
) -> list[dict[str, Any]]:
    start_at = time.time() + STARTUP_SLACK
    stop_at = start_at + seconds
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        return pool.starmap(
            worker,
            [(url, company, seed, start_at, stop_at, unlimited) for seed in range(processes)],
        )


def _cleanup(url: str, company: str) -> None:
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(f"connector:rl:pd:{{{company}}}:*"):
        client.delete(key)
    client.close()


def run(url: str, seconds: float, processes: int, overhead_seconds: float) -> dict[str, Any]:
    """Run the benchmark and return its figures."""
    company = f"bench-{uuid.uuid4().hex[:8]}"
    results = _run_workers(url, company, seconds, processes, unlimited=False)
    probe = _limiter(url, company)
    spent = probe.spent_today()
    budget = probe.budget
    burst = probe.burst_limit
    _cleanup(url, company)

    saturated: list[float] = []
    if overhead_seconds > 0:
        other = f"bench-{uuid.uuid4().hex[:8]}"
        for result in _run_workers(url, other, overhead_seconds, processes, unlimited=True):
            saturated.extend(ns / 1000 for ns in result["call_ns"][1:])
        _cleanup(url, other)

    stamps = sorted(stamp for result in results for stamp, _ in result["grants"])
    granted_cost = sum(cost for result in results for _, cost in result["grants"])
    # Each process's first call also loads the script into Redis: reported apart.
    first_us = [result["call_ns"][0] / 1000 for result in results if result["call_ns"]]
    call_us = [ns / 1000 for result in results for ns in result["call_ns"][1:]]
    waits = [wait for result in results for wait in result["waits"]]

    # Consecutive 2 s windows from the first grant; the last, partial one is left out.
    per_window: list[int] = []
    if stamps:
        edge = stamps[0]
        while edge + 2000 <= stamps[-1]:
            per_window.append(sum(1 for stamp in stamps if edge <= stamp < edge + 2000))
            edge += 2000
    busiest = 0
    low = 0
    for high, stamp in enumerate(stamps):
        while stamps[low] <= stamp - 2000:
            low += 1
        busiest = max(busiest, high - low + 1)

    return {
        "processes": processes,
        "seconds": seconds,
        "plan": "growth/api_token",
        "burst_limit": burst,
        "grants": len(stamps),
        "full_windows": len(per_window),
        "window_fill_mean": statistics.fmean(per_window) / burst if per_window else None,
        "window_fill_min": min(per_window) / burst if per_window else None,
        "busiest_rolling_window": busiest,
        "calls": len(call_us),
        "refusals_turned_into_waits": len(waits),
        "mean_wait_ms": statistics.fmean(waits) * 1000 if waits else 0.0,
        "try_acquire_us_p50": _percentile(call_us, 0.50),
        "try_acquire_us_p99": _percentile(call_us, 0.99),
        "first_call_us_max": max(first_us) if first_us else None,
        "saturated_seconds": overhead_seconds,
        "saturated_calls": len(saturated),
        "saturated_calls_per_second": len(saturated) / overhead_seconds if saturated else None,
        "saturated_us_p50": _percentile(saturated, 0.50) if saturated else None,
        "saturated_us_p99": _percentile(saturated, 0.99) if saturated else None,
        "spent": spent,
        "granted_cost": granted_cost,
        "budget": budget,
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    """Parse arguments, run, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description="Benchmark the shared Pipedrive limiter.")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument(
        "--overhead-seconds",
        type=float,
        default=3.0,
        help="extra phase with the limits lifted: back-to-back calls, for overhead under load",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    )
    options = parser.parse_args()
    figures = run(options.redis_url, options.seconds, options.processes, options.overhead_seconds)
    rows = [
        ("processes x seconds", f"{figures['processes']} x {figures['seconds']:g}"),
        ("burst limit (per 2 s)", figures["burst_limit"]),
        ("grants", figures["grants"]),
        ("full 2 s windows", figures["full_windows"]),
        ("window fill, mean", _fraction(figures["window_fill_mean"])),
        ("window fill, min", _fraction(figures["window_fill_min"])),
        ("busiest rolling 2 s window", figures["busiest_rolling_window"]),
        ("try_acquire calls", figures["calls"]),
        ("refusals turned into waits", figures["refusals_turned_into_waits"]),
        ("mean advised wait (ms)", f"{figures['mean_wait_ms']:.1f}"),
        ("try_acquire p50 (us)", f"{figures['try_acquire_us_p50']:.0f}"),
        ("try_acquire p99 (us)", f"{figures['try_acquire_us_p99']:.0f}"),
        ("first call incl. script load (us)", _number(figures["first_call_us_max"])),
        ("limits lifted: calls/s (all procs)", _number(figures["saturated_calls_per_second"])),
        ("limits lifted: try_acquire p50 (us)", _number(figures["saturated_us_p50"])),
        ("limits lifted: try_acquire p99 (us)", _number(figures["saturated_us_p99"])),
        ("tokens spent (Redis)", figures["spent"]),
        ("tokens granted (processes)", figures["granted_cost"]),
        ("daily budget", figures["budget"]),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten to {RESULTS}")


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _fraction(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


if __name__ == "__main__":
    main()
