"""Helpers every command uses: the process context, errors as exit codes, JSON output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click
import redis
import sqlalchemy as sa

from connector.context import AppContext
from connector.errors import ConfigError, ConnectorError
from connector.logs import redact

__all__ = ["echo_json", "fail", "get_context", "run_main"]

_context: AppContext | None = None


def get_context() -> AppContext:
    """The process's AppContext, built from the environment on first use."""
    global _context
    if _context is None:
        _context = AppContext.from_env()
    return _context


def set_context(context: AppContext | None) -> None:
    """Replace the process context (tests)."""
    global _context
    _context = context


def echo_json(value: Any) -> None:
    """Print ``value`` as JSON (datetimes and decimals as strings)."""
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def fail(message: str) -> None:
    """Stop with exit code 1 and a message on stderr."""
    raise click.ClickException(message)


def run_main(command: Callable[..., Any]) -> None:
    """Run the click group, turning connector errors into exit code 1 with a clear message."""
    try:
        command(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.UsageError as exc:
        exc.show()
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(1)
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except ConnectorError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        _one_line(f"cannot reach the database ({_reason(exc.orig or exc)}); check DATABASE_URL")
    except redis.RedisError as exc:
        _one_line(f"cannot reach Redis ({_reason(exc)}); check REDIS_URL")
    except SystemExit:
        raise


def _reason(exc: BaseException) -> str:
    # The driver's first line says what failed (refused, timed out, unknown host); the rest is
    # hints and SQL. Redacted: a driver may echo parts of the URL.
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return redact(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)


def _one_line(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)
