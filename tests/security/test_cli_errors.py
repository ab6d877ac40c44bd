"""The ``connector`` command under expected failures: one line on stderr, exit code 1, never a
traceback (a traceback can carry URLs and values, and tells an operator nothing to do)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import click
import pytest
import redis

from connector.cli.common import run_main
from connector.crypto import generate_key
from connector.sandbox.processes import BIN, free_port

pytestmark = pytest.mark.slow


def _connector(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "CONNECTOR_SECRET_KEY": generate_key(),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        **env,
    }
    return subprocess.run(
        [str(BIN / "connector"), *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize("args", [("status",), ("db", "upgrade"), ("audit",), ("backfill",)])
def test_database_down_is_a_one_line_error(tmp_path, args):
    down = f"postgresql+psycopg2://postgres:hunter2-secret@127.0.0.1:{free_port()}/nothing"
    result = _connector(tmp_path, *args, DATABASE_URL=down)
    _assert_one_line_error(result, "database", "DATABASE_URL")
    assert "hunter2-secret" not in result.stderr


def test_redis_down_is_a_one_line_error(capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["connector"])

    @click.command()
    def needs_redis() -> None:
        redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0").ping()

    with pytest.raises(SystemExit) as exit_info:
        run_main(needs_redis)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("Error: ")
    assert "REDIS_URL" in err
    assert "Traceback" not in err
