"""The service's own processes (gunicorn, a Celery worker, Celery Beat) started as children.

Used by ``make demo``, the end-to-end tests, the benchmarks and the fault-injection runs, so
they all start the service the same way the ``Procfile`` does. Each child gets its own process
group (a stop reaches gunicorn's and Celery's own children too) and logs to ``<dir>/<name>.log``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

__all__ = [
    "ALL_QUEUES",
    "BIN",
    "ProcessGroup",
    "beat_argv",
    "free_port",
    "wait_for",
    "web_argv",
    "worker_argv",
]

BIN = Path(sys.executable).parent
ALL_QUEUES = "webhooks,sync,pulls,maintenance"
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    what: str,
    check: Callable[[], bool],
    *,
    timeout: float = 60.0,
    poll: float = 0.25,
    tolerate: tuple[type[BaseException], ...] = (requests.RequestException, KeyError),
) -> None:
    """Poll ``check`` until it is true (errors in ``tolerate`` count as not yet); fail loudly
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except tolerate:
            pass
        time.sleep(poll)
    raise RuntimeError(f"timed out waiting for {what}")


def web_argv(port: int, *, workers: int = 2, access_log: bool = False) -> list[str]:
    """gunicorn serving the receiver on loopback, with the Procfile's worker class and timeouts."""
    argv = [str(BIN / "gunicorn"), "--config", "python:web.gunicorn_conf"]
    argv += ["--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    # Threads: a silent socket must not hold a whole worker (sync workers wait on it for good).
    argv += ["--worker-class", "gthread", "--threads", "8"]
    argv += ["--timeout", "30", "--graceful-timeout", "20", "--keep-alive", "5"]
    if access_log:
        argv += ["--access-logfile", "-"]
    return [*argv, "web:create_app()"]


def worker_argv(
    hostname: str, *, concurrency: int = 2, queues: str = ALL_QUEUES, loglevel: str = "INFO"
) -> list[str]:
    """A Celery worker with ``concurrency`` prefork processes."""
    return [
        str(BIN / "celery"),
        "-A",
        "workers.celery_app",
        "worker",
        "--loglevel",
        loglevel,
        "--concurrency",
        str(concurrency),
        "-Q",
        queues,
        "--without-gossip",
        "--without-mingle",
        "--hostname",
        hostname,
    ]


def beat_argv(schedule: Path, *, loglevel: str = "INFO") -> list[str]:
    """Celery Beat with the Redis-leased scheduler."""
    return [
        str(BIN / "celery"),
        "-A",
        "workers.celery_app",
        "beat",
        "--loglevel",
        loglevel,
        "--scheduler",
        "workers.beat:LockedScheduler",
        "--schedule",
        str(schedule),
    ]


class ProcessGroup:
    """Named child processes sharing one environment, each in a process group of its own.

    Args:
        log_dir: where ``<name>.log`` files go (appended to: a restarted process keeps its log).
        env: the children's environment, read at each start (changes apply to later starts).
        cwd: their working directory (the repository root by default).
    """

    def __init__(self, log_dir: Path, env: dict[str, str], cwd: Path = ROOT) -> None:
        self.log_dir = log_dir
        self.env = env
        self.cwd = cwd
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` as ``name``."""
        with (self.log_dir / f"{name}.log").open("ab") as log:
            # The argv comes from the builders above, never from a request.
            process = subprocess.Popen(  # noqa: S603
                argv,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = process
        return process

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Send ``sig`` to the process group; SIGKILL it if it has not ended after ``timeout``."""
        process = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def stop_all(self) -> None:
        """Stop every process, the last started first."""
        for name in reversed(list(self.processes)):
            self.stop(name)

    def log_tail(self, name: str, lines: int = 20) -> str:
        """The end of a process's log."""
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
