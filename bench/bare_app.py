"""The baseline for ``bench/receiver.py``: a bare Flask app whose webhook route answers 204.

Served by gunicorn exactly like the receiver (``gunicorn bench.bare_app:app``), so the
difference between the two is the receiver's own work: signature check, event row in
PostgreSQL, task sent to Redis.
"""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)


@app.post("/webhooks/zoho/<connection>")
def webhook(connection: str) -> tuple[str, int]:
    """Accept anything, do nothing."""
    return "", 204
