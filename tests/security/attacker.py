"""The recording "attacker" server: a host of the attacker's that must never receive anything."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Attacker:
    """A host of the attacker's: answers anything like Zoho would, and records what it got."""

    url: str
    received: list[str] = field(default_factory=list)


@pytest.fixture
def attacker() -> Iterator[Attacker]:
    record: list[str] = []
    port: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode(errors="replace") if length else ""
            record.append(f"{self.command} {self.path} {body}")
            answer = {
                "access_token": "attacker-access",
                "refresh_token": "attacker-refresh",
                "api_domain": f"http://127.0.0.1:{port[0]}",
                "expires_in": 3600,
                "code": 0,
                "message": "success",
                "organizations": [{"organization_id": "111111", "name": "Evil Corp"}],
            }
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port.append(server.server_port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Attacker(f"http://127.0.0.1:{server.server_port}", record)
    server.shutdown()
    server.server_close()
