"""Every Procfile process refuses to start on an invalid mapping file, listing every problem.

The commands are the Procfile's own, run by a shell as a platform runs them. A process that
started anyway would accept webhooks (web) or run tasks (worker, Beat) that can never sync.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from connector.sandbox.processes import BIN, ROOT, free_port
from tests.security.test_procfile_web import procfile_command

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Three problems in three sections: the refusal must name all of them, not the first only.
BAD_MAPPING = """
[routing]
default = 5
[contacts]
vendors = "sometimes"
[sync]
no_such_setting = true
"""
PROBLEMS = ("routing.default", "contacts.vendors", "sync.no_such_setting")


def _run(role: str, tmp_path: Path, mapping: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "mapping.toml"
    config.write_text(mapping)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PORT": str(free_port()),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
        "CONNECTOR_SECRET_KEY": Fernet.generate_key().decode(),
        "CONNECTOR_CONFIG": str(config),
        "CONNECTOR_DOTENV": str(tmp_path / "absent.env"),
        "FLOWER_BASIC_AUTH": "ops:not-used",
    }
    command = procfile_command(role).replace("/tmp/connector-beat-state", str(tmp_path / "beat"))
    # A process that does start is the failure: the timeout ends it and the asserts say so.
    try:
        return subprocess.run(
            ["sh", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=40
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{role} started with an invalid mapping file (still running after 40 s): {exc}"
        )


@pytest.mark.parametrize("role", ["web", "worker", "beat"])
def test_process_refuses_an_invalid_mapping_listing_every_problem(role: str, tmp_path: Path):
    done = _run(role, tmp_path, BAD_MAPPING)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-2000:]
    assert "3 configuration problem(s)" in output, output[-2000:]
    for problem in PROBLEMS:
        assert problem in output, f"{problem} not reported by {role}:\n{output[-2000:]}"


def test_worker_and_beat_refusal_is_the_list_not_a_traceback(tmp_path: Path):
    for role in ("worker", "beat"):
        done = _run(role, tmp_path, BAD_MAPPING)
        assert "Traceback" not in done.stderr, done.stderr[-2000:]
        assert done.stderr.strip().startswith("connector: refusing to start"), done.stderr[-500:]
