"""The Pipedrive cost table agrees with the official specs and matches concrete paths."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from connector.pipedrive import costs

REPO = Path(__file__).resolve().parents[3]
SPECS = REPO.parent / "shared" / "reference" / "specs" / "pipedrive"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_pipedrive_costs", REPO / "scripts" / "gen_pipedrive_costs.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def regenerated() -> dict[str, Any]:
    if not (SPECS / "v1.yml").is_file() or not (SPECS / "v2.yml").is_file():
        pytest.fail(f"Pipedrive specs not found in {SPECS}: the cost table cannot be checked")
    table: dict[str, Any] = _load_generator().build_table(SPECS)
    return table


def test_shipped_table_equals_table_regenerated_from_specs(regenerated):
    shipped = costs.load_table()
    assert shipped == regenerated, (
        "connector/pipedrive/costs.json is stale: run scripts/gen_pipedrive_costs.py"
    )


def test_every_spec_operation_resolves_to_its_own_cost(regenerated):
    # No literal segment in the specs is numeric, so "17" can only fill parameter positions.
    for row in regenerated["operations"]:
        concrete = "/".join(
            "17" if part.startswith("{") else part for part in row["path"].split("/")
        )
        assert costs.cost_for(row["method"], concrete) == row["cost"], (row, concrete)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/api/v2/organizations/123", 1),
        ("GET", "/api/v2/persons", 10),
        ("POST", "/api/v2/deals", 5),
        ("PATCH", "/api/v2/organizations/9", 5),
        ("DELETE", "/api/v2/persons/4", 3),
        ("GET", "/api/v2/organizations/search", 20),
        ("GET", "/api/v2/persons/search?term=ann", 20),
        ("GET", "/api/v2/itemSearch", 20),
        ("GET", "/v1/users/me", 2),
        ("GET", "/api/v1/users/me", 2),
        ("GET", "/v1/webhooks", 10),
        ("POST", "/v1/webhooks", 10),
        ("DELETE", "/v1/webhooks/77", 6),
        ("GET", "/v1/dealFields", 20),
        ("GET", "/v1/personFields", 20),
        ("GET", "/v1/organizationFields", 20),
        ("get", "https://acme.pipedrive.com/api/v2/deals/5/", 1),
        ("POST", "/oauth/token", 0),
    ],
)
def test_costs_named_by_the_issue(method, path, expected):
    assert costs.cost_for(method, path) == expected


def test_literal_segment_beats_parameter():
    assert costs.cost_for("GET", "/api/v2/organizations/search") == 20
    assert costs.cost_for("GET", "/api/v2/organizations/search") != costs.cost_for(
        "GET", "/api/v2/organizations/55"
    )
    assert costs.cost_for("GET", "/api/v2/deals/archived") == 20


def test_unknown_operations_are_charged_the_highest_cost_of_their_kind():
    table = costs.load_table()["operations"]
    v2_get_max = max(
        op["cost"] for op in table if op["method"] == "GET" and op["path"].startswith("/api/v2/")
    )
    overall_max = max(op["cost"] for op in table)
    assert costs.cost_for("GET", "/api/v2/brand-new-thing") == v2_get_max
    assert costs.cost_for("GET", "/somewhere/else") == overall_max
    assert not costs._table().known("GET", "/api/v2/brand-new-thing")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/v2/organizations/search", True),
        ("/api/v2/deals/search?term=x", True),
        ("/v1/leads/search", True),
        ("/api/v2/itemSearch", True),
        ("/api/v2/itemSearch/field", True),
        ("/api/v2/organizations/5", False),
        ("/api/v2/organizations", False),
        ("/v1/users/me", False),
    ],
)
def test_is_search(path, expected):
    assert costs.is_search(path) is expected
