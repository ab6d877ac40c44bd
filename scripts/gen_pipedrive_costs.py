"""Generate ``connector/pipedrive/costs.json`` from the official Pipedrive OpenAPI specs.

Every operation of both specs carries ``x-token-cost``: the tokens it takes from the company's
daily budget. The table keeps method, path template and cost; v1 paths are prefixed ``/v1`` and
v2 paths ``/api/v2`` (their server URLs). Run after refreshing the specs::

    .venv/bin/python scripts/gen_pipedrive_costs.py [--specs DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPECS = REPO_ROOT.parent / "shared" / "reference" / "specs" / "pipedrive"
DEFAULT_OUT = REPO_ROOT / "connector" / "pipedrive" / "costs.json"

SPEC_PREFIXES = {"v1.yml": "/v1", "v2.yml": "/api/v2"}
HTTP_METHODS = ("get", "post", "put", "patch", "delete")


def build_table(specs_dir: Path) -> dict[str, Any]:
    """Read both specs in ``specs_dir`` and return the cost table as a JSON-ready dict.

    Raises:
        FileNotFoundError: a spec file is missing.
        ValueError: an operation has no ``x-token-cost``.
    """
    # Imported here so the runtime never needs PyYAML; typed as Any so stubs are optional.
    yaml: Any = importlib.import_module("yaml")
    operations: list[dict[str, Any]] = []
    sources: dict[str, str] = {}
    for filename, prefix in SPEC_PREFIXES.items():
        path = specs_dir / filename
        raw = path.read_bytes()
        sources[filename] = hashlib.sha256(raw).hexdigest()
        spec = yaml.safe_load(raw)
        for template, item in spec["paths"].items():
            for method in HTTP_METHODS:
                operation = item.get(method)
                if operation is None:
                    continue
                cost = operation.get("x-token-cost")
                if cost is None:
                    raise ValueError(f"{filename}: {method.upper()} {template} has no x-token-cost")
                operations.append(
                    {"method": method.upper(), "path": prefix + template, "cost": int(cost)}
                )
    operations.sort(key=lambda op: (op["path"], op["method"]))
    return {"sources_sha256": sources, "operations": operations}


def render(table: dict[str, Any]) -> str:
    """The table as JSON with one operation per line, so diffs after a spec refresh stay readable."""
    lines = [json.dumps(op) for op in table["operations"]]
    sources = json.dumps(table["sources_sha256"], indent=2).replace("\n", "\n  ")
    body = ",\n    ".join(lines)
    return f'{{\n  "sources_sha256": {sources},\n  "operations": [\n    {body}\n  ]\n}}\n'


def main(argv: list[str] | None = None) -> int:
    """Write the table; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=Path, default=DEFAULT_SPECS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    options = parser.parse_args(argv)
    table = build_table(options.specs)
    options.out.write_text(render(table), encoding="utf-8")
    sys.stdout.write(f"{len(table['operations'])} operations written to {options.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
