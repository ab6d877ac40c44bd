"""Pieces both simulators share: an injectable clock, fault injection, and mounting on ``responses``."""

from __future__ import annotations

import datetime as dt
import io
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Response as WerkzeugResponse

__all__ = ["Clock", "FaultKind", "Faults", "mount_on_responses", "serve_in_thread"]


class Clock:
    """Wall-clock time that tests can freeze, set and advance.

    Unfrozen, it follows the real clock plus an offset, so ``advance`` works in both modes.
    """

    def __init__(self, start: dt.datetime | None = None, *, frozen: bool = False) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0
        self._frozen_at: float | None = None
        if start is not None:
            self._offset = start.timestamp() - time.time()
        if frozen:
            self._frozen_at = time.time() + self._offset

    def timestamp(self) -> float:
        """Seconds since the epoch, as this clock sees them."""
        with self._lock:
            if self._frozen_at is not None:
                return self._frozen_at
            return time.time() + self._offset

    def now(self) -> dt.datetime:
        """The current time, timezone-aware, in UTC."""
        return dt.datetime.fromtimestamp(self.timestamp(), tz=dt.UTC)

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += seconds
            else:
                self._offset += seconds

    def set(self, when: dt.datetime) -> None:
        """Jump to ``when`` (stays frozen if frozen)."""
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at = when.timestamp()
            else:
                self._offset = when.timestamp() - time.time()

    def freeze(self) -> None:
        """Stop the clock where it is."""
        now = self.timestamp()
        with self._lock:
            self._frozen_at = now


class FaultKind:
    """Names of the faults a simulator can inject."""

    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    DROP = "drop"


@dataclass
class Faults:
    """Fault rates (0..1) that tests switch on; decisions come from a seeded RNG.

    ``timeout_seconds`` is how long a server-mode timeout holds the request before answering.
    ``only_paths`` limits faults to paths matching the regex, when set.
    """

    server_error_rate: float = 0.0
    timeout_rate: float = 0.0
    drop_rate: float = 0.0
    timeout_seconds: float = 35.0
    only_paths: str | None = None
    seed: int = 0
    injected: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def configure(self, **rates: Any) -> None:
        """Change rates at run time (server mode: from the control API)."""
        with self._lock:
            for key, value in rates.items():
                if key not in {
                    "server_error_rate",
                    "timeout_rate",
                    "drop_rate",
                    "timeout_seconds",
                    "only_paths",
                    "seed",
                }:
                    raise ValueError(f"unknown fault setting {key!r}")
                setattr(self, key, value)
                if key == "seed":
                    self._rng = random.Random(value)

    def decide(self, path: str) -> str | None:
        """Return the fault to inject for a request to ``path``, or ``None``."""
        with self._lock:
            if self.only_paths and not re.search(self.only_paths, path):
                return None
            roll = self._rng.random()
            for kind, rate in (
                (FaultKind.SERVER_ERROR, self.server_error_rate),
                (FaultKind.TIMEOUT, self.timeout_rate),
                (FaultKind.DROP, self.drop_rate),
            ):
                if roll < rate:
                    self.injected[kind] = self.injected.get(kind, 0) + 1
                    return kind
                roll -= rate
            return None


class InProcessFault(Exception):  # noqa: N818 - a signal between the app and the adapter
    """Raised by a simulator app in-process to make the adapter fail the request on the wire."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(kind)


def mount_on_responses(
    rsps: Any,
    url_pattern: re.Pattern[str],
    app: Callable[..., Iterable[bytes]],
    rewrite: Callable[[str], str] | None = None,
) -> None:
    """Route every request matching ``url_pattern`` through the WSGI ``app``.

    ``rewrite`` maps the full request URL to the path (with query) the app should see, so real
    vendor hostnames can be served by one app that routes on path prefixes. An app that raises
    :class:`InProcessFault` turns into ``requests`` timeouts or connection errors, as a real
    network fault would.
    """

    def callback(request: requests.PreparedRequest) -> tuple[int, dict[str, str], bytes]:
        url = request.url or ""
        target = rewrite(url) if rewrite else _path_and_query(url)
        parts = urlsplit(url)
        body = request.body
        if isinstance(body, str):
            body = body.encode()
        builder = EnvironBuilder(
            path=target.split("?", 1)[0],
            query_string=target.split("?", 1)[1] if "?" in target else "",
            method=request.method or "GET",
            headers=list(request.headers.items()),
            data=body or b"",
            base_url=f"{parts.scheme}://{parts.netloc}",
        )
        environ = builder.get_environ()
        environ["wsgi.input"] = io.BytesIO(body or b"")
        try:
            response = WerkzeugResponse.from_app(app, environ)
        except InProcessFault as fault:
            if fault.kind == FaultKind.TIMEOUT:
                raise requests.exceptions.ReadTimeout("simulated timeout") from None
            raise requests.exceptions.ConnectionError("simulated dropped connection") from None
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return response.status_code, headers, response.get_data()

    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        rsps.add_callback(method, url_pattern, callback=callback)


def _path_and_query(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> tuple[BaseWSGIServer, str]:
    """Start ``app`` on a threaded werkzeug server in a daemon thread.

    Returns the server (call ``shutdown()`` to stop it) and its base URL.
    """
    server = make_server(host, port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="sandbox-server", daemon=True)
    thread.start()
    return server, f"http://{host}:{server.server_port}"


def pipedrive_error_body(error: str, info: str) -> dict[str, Any]:
    """Pipedrive's error envelope, as its API answers every refused request."""
    return {
        "success": False,
        "error": error,
        "error_info": info,
        "data": None,
        "additional_data": None,
    }
