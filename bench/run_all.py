"""Run every benchmark with quick defaults, print a summary, regenerate ``docs/performance.md``.

``make bench`` calls this. Each benchmark runs as its own process (one after the other: they
measure the machine, so they must not share it), prints its own table and writes its JSON under
``bench/results/``; this script then writes ``bench/results/summary.json`` and the document,
which states every figure with the command that produced it and the machine it ran on.

Usage::

    .venv/bin/python bench/run_all.py            # quick defaults (about 15 minutes)
    .venv/bin/python bench/run_all.py --full     # the issue's sizes (hours: Zoho's 100/min)
    .venv/bin/python bench/run_all.py --only receiver memory
    .venv/bin/python bench/run_all.py --doc-only # rewrite the document from the stored JSON
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.stack import machine  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "performance.md"
PY = ".venv/bin/python"

QUICK: dict[str, list[str]] = {
    "throughput": ["bench/throughput.py", "--variant", "zoho"],
    "throughput-fast": ["bench/throughput.py", "--variant", "fast"],
    "tokens": ["bench/tokens.py", "--contacts", "500"],
    "receiver": ["bench/receiver.py", "--seconds", "10"],
    "freshness": ["bench/freshness.py", "--events", "300", "--rate", "5"],
    "memory": ["bench/memory.py", "--sizes", "1000", "5000"],
}
FULL: dict[str, list[str]] = {
    **QUICK,
    "throughput": [
        "bench/throughput.py",
        "--variant",
        "zoho",
        "--contacts",
        "20000",
        "--invoices",
        "40000",
    ],
    "throughput-fast": [
        "bench/throughput.py",
        "--variant",
        "fast",
        "--contacts",
        "20000",
        "--invoices",
        "40000",
    ],
    "freshness": ["bench/freshness.py", "--events", "1000", "--rate", "5"],
    "memory": ["bench/memory.py", "--sizes", "10000", "50000", "100000"],
}
JSON_OF = {
    "throughput": "throughput.json",
    "throughput-fast": "throughput-fast.json",
    "tokens": "tokens.json",
    "receiver": "receiver.json",
    "freshness": "freshness.json",
    "memory": "memory.json",
}


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / JSON_OF[name]
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _yes(value: Any) -> str:
    return "met" if value else "**missed**"


def summary_rows(results: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """One row per figure: benchmark, figure, value, target, met."""
    rows: list[dict[str, Any]] = []

    def add(bench: str, figure: str, value: Any, target: str, met: bool | None) -> None:
        rows.append(
            {"benchmark": bench, "figure": figure, "value": value, "target": target, "met": met}
        )

    for name in ("throughput", "throughput-fast"):
        r = results.get(name)
        if not r:
            continue
        label = f"1. throughput ({r['variant']})"
        pd_phase = "invoices" if r["bottleneck"] == "zoho" else "contacts"
        pd = r["phases"][pd_phase]["pipedrive_per_2s"]
        add(
            label,
            f"Pipedrive requests per 2 s / burst, {pd_phase} phase (mean, min)",
            f"{pd['mean']}, {pd['min']}",
            ">= 0.9",
            pd["mean"] is not None and pd["mean"] >= 0.9,
        )
        add(label, "Pipedrive 429s", r["pipedrive_429"], "0", r["pipedrive_429"] == 0)
        add(label, "Zoho 429s", r["zoho_429"], "(informational)", None)
        if r["bottleneck"] == "zoho":
            z = r["phases"]["contacts"]["zoho_per_minute"]
            add(
                label,
                "Zoho requests per minute / limit, contacts phase (mean, min)",
                f"{z['mean']}, {z['min']}",
                ">= 0.9",
                z["mean"] is not None and z["mean"] >= 0.9,
            )
        add(
            label,
            "wall time / lower bound (max of limits; phase-aware)",
            f"{r['wall_seconds']} s / {r['lower_bound_seconds']} s = {r['wall_over_lower_bound']}; "
            f"{r['wall_over_phase_aware_bound']}",
            "(informational)",
            None,
        )
        p = r["projection_full_size"]
        add(
            label,
            "projection to 20,000 contacts / 40,000 invoices",
            f"{p['projected_wall_seconds'] / 3600:.1f} h ({p['pipedrive_tokens']} tokens)",
            "(informational)",
            None,
        )
    r = results.get("tokens")
    if r:
        for row in r["rows"]:
            add(
                "2. tokens",
                f"{row['phase']}: tokens / minimum",
                f"{row['tokens']} / {row['minimum']} = {row['ratio']}",
                "<= 1.10" if row["minimum"] else "no writes",
                None,
            )
        for target, met in r["targets"].items():
            add("2. tokens", target, "", "", met)
    r = results.get("receiver")
    if r:
        add(
            "3. receiver",
            "max requests/s: receiver vs bare Flask",
            f"{r['receiver']['max']['throughput']} vs {r['bare']['max']['throughput']} "
            f"({r['receiver_over_bare_throughput']})",
            ">= 0.5 of bare",
            r["receiver_over_bare_throughput"] is not None
            and r["receiver_over_bare_throughput"] >= 0.5,
        )
        lat = r["receiver"]["rate"]["latency_ms"]
        bare = r["bare"]["rate"]["latency_ms"]
        add(
            "3. receiver",
            f"p50 / p99 at {r['settings']['rate']:g} req/s (bare: {bare['p50']} / {bare['p99']} ms)",
            f"{lat['p50']} / {lat['p99']} ms",
            "p99 < 20 ms",
            lat["p99"] is not None and lat["p99"] < 20,
        )
    r = results.get("freshness")
    if r:
        lat = r["latency_ms"]
        add(
            "4. freshness",
            f"webhook to deal field, {r['settings']['events']} events (p50 / p99)",
            f"{lat['p50']} / {lat['p99']} ms",
            "p50 < 1 s",
            r["targets"]["p50_under_1s"],
        )
        add(
            "4. freshness",
            "events that arrived",
            f"{r['fresh_events']} / {r['settings']['events']}",
            "all",
            r["targets"]["every_event_arrived"],
        )
    r = results.get("memory")
    if r:
        for mode in r["settings"]["modes"]:
            peaks = ", ".join(
                f"{row['size']}: {row['rss_peak_mb']}" for row in r["rows"] if row["mode"] == mode
            )
            add(
                "5. memory",
                f"peak RSS MB by contacts, {mode}",
                peaks,
                "< 250 MB and flat",
                r["targets"][f"{mode}_under_250_mb"] and r["targets"][f"{mode}_flat"],
            )
    return rows


def write_doc(
    rows: list[dict[str, Any]],
    results: dict[str, Any],
    commands: dict[str, str],
    info: dict[str, Any],
) -> None:
    """Regenerate docs/performance.md from the results."""
    lines = [
        "# Performance",
        "",
        "Generated by `make bench` (`.venv/bin/python bench/run_all.py`); do not edit by hand.",
        "Every figure below comes from a script in `bench/` that anyone can run; each prints its",
        "table and writes JSON under `bench/results/`. All runs use both simulators served on",
        "loopback, the real PostgreSQL and Redis, and real gunicorn / Celery processes.",
        "",
        "## Machine",
        "",
        f"- date: {info['date']}",
        f"- CPUs: {info['machine']['cpus']} ({info['machine']['cpu']})",
        f"- memory: {info['machine']['memory_gb']} GB",
        f"- Python: {info['machine']['python']}",
        f"- platform: {info['machine']['platform']}",
        f"- command: `{info['command']}`",
        "",
        "## Summary",
        "",
        "| benchmark | figure | value | target | |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        met = "" if row["met"] is None else _yes(row["met"])
        lines.append(
            f"| {row['benchmark']} | {row['figure']} | {row['value']} | {row['target']} | {met} |"
        )
    lines += ["", "## Commands", ""]
    for name, command in commands.items():
        stored = results.get(name)
        when = " (no result stored)" if stored is None else ""
        if name == "memory" and stored:
            # The memory figures may come from a longer run than the quick default.
            sizes = " ".join(str(size) for size in stored["settings"].get("sizes", []))
            command = f"{PY} bench/memory.py --sizes {sizes}" if sizes else command
        lines.append(f"- {name}: `{command}`{when}")
    lines += [
        "",
        "## Notes",
        "",
        "- Throughput runs a scaled-down backfill by default: Zoho allows 100 requests per minute",
        "  per organization and each contact needs one detail read, so 20,000 contacts take at",
        "  least 200 minutes of Zoho time alone; the projection row scales the measured calls per",
        "  record to 20,000 contacts / 40,000 invoices. The Growth plan's daily token budget",
        "  (60,000 for one seat) then dominates: the backfill is parked until the budget resets.",
        "  The `fast` variant lifts Zoho's limit (simulator and connection) so Pipedrive's burst",
        "  limit is the bottleneck. `--contacts 20000 --invoices 40000` runs the full size.",
        "- The receiver's load generator (`bench/loadgen.py`) shares the machine's cores with the",
        "  servers; on a 2-core machine the bare endpoint's figure is partly bounded by it.",
        "- Freshness lifts Zoho's per-minute limit: each event costs one Zoho read, so at 100/min",
        "  events faster than 1.6/s would measure Zoho's limit instead of the service.",
        "- Memory: `chunks` is what a Celery worker runs (`connector backfill --distributed`), one",
        "  chunk after another in one process; `single` is `connector backfill` in one process. The",
        "  memory command above gives the sizes its figures come from: `make bench` runs 1,000 and",
        "  5,000 contacts, `bench/run_all.py --full` 10,000, 50,000 and 100,000 (about 16 minutes",
        "  per mode at 100,000).",
        "",
    ]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print the summary, write summary.json and the document."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--full", action="store_true", help="the issue's sizes (takes hours)")
    parser.add_argument("--only", nargs="+", choices=sorted(QUICK), default=None)
    parser.add_argument("--doc-only", action="store_true")
    args = parser.parse_args(argv)
    plan = FULL if args.full else QUICK
    names = args.only or list(plan)
    commands = {name: " ".join([PY, *plan[name]]) for name in plan}
    failures: list[str] = []
    if not args.doc_only:
        for name in names:
            print(f"\n=== {name}: {commands[name]}", flush=True)
            started = time.monotonic()
            code = subprocess.run([sys.executable, *plan[name]], cwd=ROOT, check=False).returncode
            print(f"=== {name}: exit {code} in {time.monotonic() - started:.0f} s", flush=True)
            if code != 0:
                failures.append(name)
    results = {name: _load(name) for name in JSON_OF}
    rows = summary_rows(results)
    info = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "command": "make bench" + (" (bench/run_all.py --full)" if args.full else ""),
    }
    print("\nSummary")
    width = max((len(r["benchmark"]) for r in rows), default=10)
    for row in rows:
        met = "" if row["met"] is None else ("met" if row["met"] else "MISSED")
        print(
            f"  {row['benchmark']:<{width}}  {row['figure']:<62} {row['value']!s:<36} "
            f"{row['target']:<16} {met}"
        )
    if failures:
        print(f"\nbenchmarks that failed to run: {', '.join(failures)}")
    summary = {**info, "rows": rows, "failed_to_run": failures}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_doc(rows, results, commands, info)
    print(f"\nwrote {RESULTS / 'summary.json'} and {DOC}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
