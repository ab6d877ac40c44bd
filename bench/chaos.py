"""``make chaos``: fault injection on both simulators and the running service.

Every scenario ends by comparing both simulators' final state with the expected one (nothing
lost, nothing duplicated; see tests/chaos/scenarios.py for the exact rules). Scenarios:

in-process (library on both simulators, PostgreSQL in a fresh schema, a private redis-server):
  faults-10pct                  5xx, timeouts, dropped connections at 10% of requests
  pipedrive-faults-after-write  the same faults, landing after Pipedrive did the write
  pipedrive-429-storm           20% of Pipedrive requests answered 429
  budget-reset                  daily budget spent mid-backfill, then reset at midnight
  zoho-token-revoked            one Zoho connection's refresh token revoked mid-run
processes (gunicorn + Celery worker + Beat on a private PostgreSQL cluster and redis-server):
  worker-sigkill                pool processes SIGKILLed mid-task, repeatedly
  whole-worker-kill             the worker's whole process group SIGKILLed mid-backfill
  redis-restart                 Redis crashed and restarted mid-run, twice
  postgres-restart              PostgreSQL crashed (immediate stop) and restarted, twice
  beat-restart                  two Beats, the leader SIGKILLed and restarted, twice
  webhooks-dup-reorder-delay    duplicate, reordered and delayed Zoho webhooks

The machine's shared PostgreSQL is only used to create and drop one schema per in-process
scenario; its Redis is not used at all. Run from the repository root::

    .venv/bin/python bench/chaos.py                 # everything
    .venv/bin/python bench/chaos.py faults-10pct    # some scenarios

Prints a table and writes ``bench/results/chaos.json``. Exit code 1 when a scenario fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import signal
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.stack import machine  # noqa: E402
from tests.chaos.scenarios import IN_PROCESS, PROCESSES, Result  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "chaos.json"
# A scenario that has not converged by then has hung: report it and go on with the next.
SCENARIO_LIMIT_SECONDS = 420


class ScenarioTimeout(Exception):  # noqa: N818 - reads as what happened
    """A scenario ran past SCENARIO_LIMIT_SECONDS."""


def _alarm(_signum: int, _frame: object) -> None:
    raise ScenarioTimeout(f"no result after {SCENARIO_LIMIT_SECONDS} s")


def print_table(results: list[Result]) -> None:
    """One row per scenario."""
    header = (
        f"{'scenario':30} {'requests':>8} {'faults':>7} {'retries':>7} "
        f"{'dead':>5} {'parked':>6} {'diff':>5} {'secs':>6}  result"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        faults = sum(r.faults_injected.values())
        print(
            f"{r.name:30} {r.requests:>8} {faults:>7} {r.retries:>7} "
            f"{r.dead_letters:>3}/{r.dead_letters_expected:<1} {r.parked:>6} "
            f"{len(r.state_diff):>5} {r.seconds:>6.1f}  {'ok' if r.passed else 'FAILED'}"
        )
    for r in results:
        print(f"\n{r.name}: {' '.join(r.description.split())}")
        if r.faults_injected:
            print("  faults: " + ", ".join(f"{k} {v}" for k, v in r.faults_injected.items()))
        for note in r.notes:
            print(f"  {note[:300]}")
        for problem in r.state_diff[:10]:
            print(f"  DIFF {problem}")


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    names = [*IN_PROCESS, *PROCESSES]
    parser.add_argument("scenarios", nargs="*", help=f"default: all of {', '.join(names)}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    unknown = set(args.scenarios) - set(names)
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    chosen = args.scenarios or names
    results: list[Result] = []
    for name in chosen:
        print(f"== {name}", flush=True)
        function = IN_PROCESS.get(name) or PROCESSES[name]
        with tempfile.TemporaryDirectory(prefix=f"chaos-{name}-") as workdir:
            signal.signal(signal.SIGALRM, _alarm)
            signal.alarm(SCENARIO_LIMIT_SECONDS)
            try:
                result = function(Path(workdir))
            except Exception as exc:
                result = Result(name, function.__doc__ or "")
                result.state_diff.append(f"scenario crashed: {type(exc).__name__}: {exc}")
                result.notes.append(traceback.format_exc()[-1500:])
            finally:
                signal.alarm(0)
        results.append(result)
        print(f"   {'ok' if result.passed else 'FAILED'} in {result.seconds:.1f} s", flush=True)
    print()
    print_table(results)
    document = {
        "command": ".venv/bin/python bench/chaos.py " + " ".join(args.scenarios),
        "machine": {**machine(), "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")},
        "scenarios": [r.as_dict() for r in results],
    }
    if not args.scenarios:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nwritten: {RESULTS.relative_to(ROOT)}")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
