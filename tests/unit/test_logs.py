from __future__ import annotations

import io
import json
import logging

import pytest

from connector import logs


@pytest.fixture
def captured():
    stream = io.StringIO()
    logs.configure_logging("DEBUG", "json", stream=stream)
    yield stream
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == "connector":
            root.removeHandler(handler)


def _lines(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_bound_context(captured):
    with logs.bound(connection="zoho-eu", entity="invoice", task_id="t-1"):
        logging.getLogger("x").info("sync.applied id=%s", "42")
    (line,) = _lines(captured)
    assert line["event"] == "sync.applied id=42"
    assert line["connection"] == "zoho-eu"
    assert line["task_id"] == "t-1"
    logging.getLogger("x").info("after")
    assert "connection" not in _lines(captured)[-1]


@pytest.mark.parametrize(
    ("message", "secret"),
    [
        (
            "token 1000.abcdef0123456789abcd.0123456789abcdef0123 refreshed",
            "1000.abcdef0123456789abcd",
        ),
        ("Authorization: Zoho-oauthtoken 1000.xyzxyzxyzxyz", "xyzxyzxyzxyz"),
        ("header Bearer v1u:AQIBAHjLzTNsecretsecret", "AQIBAHjLzTNsecretsecret"),
        ('{"refresh_token": "r-123456789"}', "r-123456789"),
        ("POST body client_secret=abcdefgh&grant_type=x", "abcdefgh"),
        ("x-api-token=ffffeeeeddddcccc", "ffffeeeeddddcccc"),
        ("stored gAAAAABnZXRzb21lY2lwaGVydGV4dGhlcmVhbmR0aGVyZQ==", "gAAAAABnZXRzb21lY2lwaGVydGV4"),
        ("password: hunter2hunter2", "hunter2hunter2"),
    ],
)
def test_secret_shapes_are_redacted(captured, message, secret):
    logging.getLogger("x").warning(message)
    text = captured.getvalue()
    assert secret not in text
    assert logs.REDACTED in text


def test_registered_secret_redacted_in_args_context_and_exceptions(captured):
    logs.register_secret("plain-looking-api-token-value")
    try:
        raise RuntimeError("failed with plain-looking-api-token-value")
    except RuntimeError:
        with logs.bound(note="plain-looking-api-token-value"):
            logging.getLogger("x").exception("call %s", "plain-looking-api-token-value")
    text = captured.getvalue()
    assert "plain-looking-api-token-value" not in text
    assert text.count(logs.REDACTED) >= 3


def test_text_format_is_human_readable():
    stream = io.StringIO()
    logs.configure_logging("INFO", "text", stream=stream)
    try:
        with logs.bound(connection="pd"):
            logging.getLogger("x").info("hello")
    finally:
        for handler in list(logging.getLogger().handlers):
            if handler.get_name() == "connector":
                logging.getLogger().removeHandler(handler)
    line = stream.getvalue().strip()
    assert "INFO" in line
    assert "hello" in line
    assert "connection=pd" in line
    assert not line.startswith("{")
