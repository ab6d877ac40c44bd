"""The whole service for a benchmark: the shared stack of ``tests/stack.py`` (both simulators on
loopback, a fresh PostgreSQL schema, a Redis database of its own, real gunicorn and Celery
processes), plus a description of the machine the figures were measured on.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from connector.sandbox.processes import ALL_QUEUES, BIN, free_port, wait_for  # noqa: E402
from tests.stack import ServiceStack as BenchStack  # noqa: E402

__all__ = [
    "ALL_QUEUES",
    "BIN",
    "COMPANY",
    "BenchStack",
    "free_port",
    "machine",
    "print_targets",
    "wait_for",
]

# The simulators' servers log every request; the figures come from their request logs instead.
logging.getLogger("werkzeug").setLevel(logging.ERROR)
COMPANY = "bench"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    memory_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    except OSError:
        pass
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def print_targets(targets: dict[str, bool]) -> None:
    """The targets block every benchmark ends its table with."""
    print("targets:")
    width = max((len(name) for name in targets), default=0)
    for name, met in targets.items():
        print(f"  {name:<{width}} {'met' if met else 'MISSED'}")
