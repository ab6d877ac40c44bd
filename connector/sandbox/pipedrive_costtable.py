"""The Pipedrive simulator's own token-cost table, taken from the specs' ``x-token-cost``.

The table is generated from the official OpenAPI files into ``pipedrive_costs_sim.json`` (checked
in, so start-up does not parse two large YAML files); a test proves the file still matches the
specs. Concrete paths such as ``/api/v2/organizations/123`` are matched against the templates,
literal segments first, so ``/deals/search`` never hits ``/deals/{id}``.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

__all__ = [
    "COSTS_FILE",
    "CostTable",
    "build_cost_data",
    "default_spec_dir",
    "load_cost_table",
    "split_version",
]

COSTS_FILE = Path(__file__).with_name("pipedrive_costs_sim.json")
_METHODS = ("get", "post", "put", "patch", "delete")
_SEARCH_RE = re.compile(r"(^|/)(search|itemSearch)(/|$)")


def default_spec_dir() -> Path:
    """Where the shared reference keeps the Pipedrive specs: ``../shared/reference/specs/pipedrive``."""
    return Path(__file__).resolve().parents[3] / "shared" / "reference" / "specs" / "pipedrive"


def build_cost_data(spec_dir: Path | None = None) -> dict[str, dict[str, int]]:
    """Read ``v1.yml`` and ``v2.yml`` and return ``{"v1": {"GET /users/me": 2, ...}, "v2": {...}}``."""
    # Only needed when regenerating; PyYAML comes with openapi-core (and has no type stubs here).
    yaml: Any = importlib.import_module("yaml")

    spec_dir = spec_dir or default_spec_dir()
    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    data: dict[str, dict[str, int]] = {}
    for version in ("v1", "v2"):
        path = spec_dir / f"{version}.yml"
        with path.open(encoding="utf-8") as handle:
            spec = yaml.load(handle, Loader=loader)
        table: dict[str, int] = {}
        for template, operations in spec["paths"].items():
            for method in _METHODS:
                operation = operations.get(method)
                if operation is not None and "x-token-cost" in operation:
                    table[f"{method.upper()} {template}"] = int(operation["x-token-cost"])
        data[version] = dict(sorted(table.items()))
    return data


def split_version(path: str) -> tuple[str | None, str]:
    """Split ``/api/v2/deals/1`` into ``("v2", "/deals/1")``; v1 also answers under ``/v1``."""
    if path.startswith("/api/v2/"):
        return "v2", path[7:]
    if path.startswith("/api/v1/"):
        return "v1", path[7:]
    if path.startswith("/v1/"):
        return "v1", path[3:]
    return None, path


class CostTable:
    """Looks up the token cost of a concrete request path."""

    def __init__(self, data: dict[str, dict[str, int]]) -> None:
        self.data = data
        # (version, METHOD, first segment) -> [(regex, cost, template)], literals before params.
        self._index: dict[tuple[str, str, str], list[tuple[re.Pattern[str], int, str]]] = {}
        for version, table in data.items():
            for key, cost in table.items():
                method, template = key.split(" ", 1)
                first = template.strip("/").split("/", 1)[0]
                pattern = re.compile(
                    "^"
                    + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template.rstrip("/")))
                    + "/?$"
                )
                self._index.setdefault((version, method, first), []).append(
                    (pattern, cost, template)
                )
        for entries in self._index.values():
            entries.sort(key=lambda entry: (entry[2].count("{"), -len(entry[2])))

    def lookup(self, method: str, path: str) -> tuple[str, int] | None:
        """Return ``(template, cost)`` for ``method path`` (a full ``/api/v2/...`` path), or None."""
        version, rest = split_version(path.split("?", 1)[0])
        if version is None:
            return None
        first = rest.strip("/").split("/", 1)[0]
        for pattern, cost, template in self._index.get((version, method.upper(), first), ()):
            if pattern.match(rest):
                return template, cost
        return None

    def cost(self, method: str, path: str) -> int | None:
        """The operation's ``x-token-cost``, or None when the specs do not know the operation."""
        found = self.lookup(method, path)
        return found[1] if found else None

    @staticmethod
    def is_search(path: str) -> bool:
        """Whether the path is one of the "Search API" endpoints (10 requests per 2 s)."""
        _, rest = split_version(path.split("?", 1)[0])
        return bool(_SEARCH_RE.search(rest))


_TABLE: CostTable | None = None


def load_cost_table() -> CostTable:
    """The cached table: from the checked-in JSON, else straight from the specs."""
    global _TABLE
    if _TABLE is None:
        if COSTS_FILE.exists():
            data = json.loads(COSTS_FILE.read_text(encoding="utf-8"))
        else:  # pragma: no cover - only before the JSON has been generated
            data = build_cost_data()
        _TABLE = CostTable(data)
    return _TABLE


if __name__ == "__main__":  # pragma: no cover - regeneration helper
    COSTS_FILE.write_text(json.dumps(build_cost_data(), indent=1) + "\n", encoding="utf-8")
