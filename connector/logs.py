"""Structured logging: JSON lines for machines, readable lines on a terminal, secrets redacted.

Context (connection, entity, ids, task id, request id) is bound with :func:`bind` and travels in
a ``contextvars`` mapping, so it follows the work across functions without being passed around.
The :class:`RedactingFilter` scrubs every record: known secret values registered with
:func:`register_secret`, and anything shaped like a token, bearer header or password field.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import sys
import threading
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = [
    "JsonFormatter",
    "RedactingFilter",
    "TextFormatter",
    "bind",
    "bound",
    "configure_logging",
    "current_context",
    "redact",
    "register_secret",
    "unbind",
]

_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "connector_log_context", default=types.MappingProxyType({})
)
_known_secrets: set[str] = set()
_known_lock = threading.Lock()

REDACTED = "[REDACTED]"

# Shapes that are secrets whatever their value: Zoho tokens (1000.<hex>.<hex>), auth headers,
# key=value pairs whose key names a secret, Fernet tokens.
_PATTERNS = [
    re.compile(r"\b1000\.[0-9a-f]{16,}\.[0-9a-f]{16,}\b"),
    re.compile(r"(?i)\b(Zoho-oauthtoken|Bearer|Basic)\s+[A-Za-z0-9._~+/=:-]{8,}"),
    re.compile(
        r"(?i)([\"']?\b(?:access_token|refresh_token|api_token|x-api-token|client_secret|password|"
        r"secret|authorization|code)\b[\"']?\s*[:=]\s*[\"']?)([^\"'\s&,}]{4,})"
    ),
    re.compile(r"\bgAAAAA[A-Za-z0-9_-]{20,}={0,2}"),
]


def register_secret(value: str | None) -> None:
    """Make ``value`` redacted wherever it appears in a log record from now on."""
    if value and len(value) >= 6:
        with _known_lock:
            _known_secrets.add(value)


def redact(text: str) -> str:
    """Remove every known secret and secret-shaped value from ``text``."""
    with _known_lock:
        known = sorted(_known_secrets, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, REDACTED)
    for pattern in _PATTERNS:
        if pattern.groups == 2:
            text = pattern.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
        elif pattern.groups == 1:
            text = pattern.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v) for v in value)
    return value


class RedactingFilter(logging.Filter):
    """Scrub secrets from the message, its arguments, bound context and exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        context = getattr(record, "context", None)
        if context:
            record.context = _redact_value(context)
        return True


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        merged = dict(_context.get())
        merged.update(getattr(record, "context", None) or {})
        record.context = merged
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record."""
        document: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        document.update(getattr(record, "context", None) or {})
        if record.exc_text:
            document["exception"] = record.exc_text
        return json.dumps(document, default=str, sort_keys=False)


class TextFormatter(logging.Formatter):
    """Readable lines for a terminal: time, level, event, then context as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record."""
        when = dt.datetime.fromtimestamp(record.created).strftime("%H:%M:%S")  # noqa: DTZ006 - local time for humans
        context = getattr(record, "context", None) or {}
        extras = " ".join(f"{k}={v}" for k, v in context.items())
        line = f"{when} {record.levelname:<7} {record.getMessage()}" + (
            f"  {extras}" if extras else ""
        )
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


def current_context() -> dict[str, Any]:
    """The context bound in this task or request."""
    return dict(_context.get())


def bind(**values: Any) -> contextvars.Token[Mapping[str, Any]]:
    """Add values to the log context; returns a token for :func:`unbind`."""
    merged = dict(_context.get())
    merged.update({k: v for k, v in values.items() if v is not None})
    return _context.set(merged)


def unbind(token: contextvars.Token[Mapping[str, Any]]) -> None:
    """Restore the context as it was before the matching :func:`bind`."""
    _context.reset(token)


def clear() -> None:
    """Drop all bound context (between Celery tasks, so nothing leaks into the next one)."""
    _context.set({})


@contextmanager
def bound(**values: Any) -> Iterator[None]:
    """Bind values for the duration of a ``with`` block."""
    token = bind(**values)
    try:
        yield
    finally:
        unbind(token)


def configure_logging(level: str = "INFO", fmt: str = "auto", stream: Any = None) -> None:
    """Install connector's handler on the root logger (idempotent).

    ``fmt``: ``json``, ``text``, or ``auto`` (text on a terminal, JSON otherwise).
    """
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "text" if hasattr(stream, "isatty") and stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    handler.addFilter(RedactingFilter())
    handler.set_name("connector")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "connector":
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # urllib3 logs full URLs at DEBUG; keep it quiet so nothing with a query string leaks.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
