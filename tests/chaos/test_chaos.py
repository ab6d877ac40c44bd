"""The short form of ``make chaos``: a few fault-injection scenarios that must end with both
simulators in the expected state (see tests/chaos/scenarios.py).

Private redis-server and PostgreSQL instances are started per scenario; the machine's shared
PostgreSQL only gets (and loses) one schema per in-process scenario.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos import scenarios
from tests.harness import COMPANY

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _check(result: scenarios.Result) -> None:
    assert not result.state_diff, result.state_diff
    assert result.lost_tasks == 0, result.notes
    assert result.dead_letters == result.dead_letters_expected, result.notes


def test_the_state_check_sees_duplicates_wrong_totals_and_stale_names(tmp_path: Path) -> None:
    """The comparison itself can fail: a clean sync passes, each planted defect is reported."""
    with scenarios.InProcess(tmp_path) as run:
        org = run.world.zoho_orgs["us"]
        data = scenarios.seed_dataset(run.zoho, run.pd, COMPANY, org, customers=4, seed=1)
        assert len(scenarios.state_problems(run.zoho, run.pd, COMPANY, data)) >= 4
        assert run.driver.backfill() == 1
        assert scenarios.state_problems(run.zoho, run.pd, COMPANY, data) == []

        key = run.pd.custom_field_key(COMPANY, "organization", "Zoho Contact ID")
        first = data.contacts[0]
        original = next(
            o
            for o in run.pd.records(COMPANY, "organizations")
            if scenarios._custom(o, key) == first
        )
        run.pd.seed(
            COMPANY, "organizations", [{"name": original["name"], "custom_fields": {key: first}}]
        )
        deal_contact, deal_id = next(iter(data.deals.items()))
        total_key = run.pd.custom_field_key(COMPANY, "deal", "Zoho Invoice Total")
        run.pd.app_update(
            COMPANY,
            "deals",
            deal_id,
            {"custom_fields": {total_key: {"value": 1, "currency": "USD"}}},
        )
        second = next(
            o
            for o in run.pd.records(COMPANY, "organizations")
            if scenarios._custom(o, key) == data.contacts[1]
        )
        run.pd.app_update(COMPANY, "organizations", second["id"], {"name": "Renamed only here"})
        problems = scenarios.state_problems(run.zoho, run.pd, COMPANY, data)
    text = "\n".join(problems)
    assert "2 Pipedrive organizations" in text
    assert f"deal {deal_id}" in text
    assert "Pipedrive 'Renamed only here'" in text
    assert deal_contact in data.deals


def test_faults_at_ten_percent_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    _check(scenarios.scenario_faults(tmp_path, customers=10))


def test_revoked_zoho_token_flags_that_connection_and_the_other_continues(tmp_path: Path) -> None:
    _check(scenarios.scenario_revoked(tmp_path, customers=6))


def test_budget_spent_mid_backfill_parks_work_until_the_reset(tmp_path: Path) -> None:
    _check(scenarios.scenario_budget(tmp_path, customers=10))


def test_pipedrive_faults_after_the_write_duplicate_nothing(tmp_path: Path) -> None:
    _check(scenarios.scenario_faults_after_write(tmp_path))


def test_worker_sigkilled_mid_task_repeatedly_loses_nothing(tmp_path: Path) -> None:
    _check(scenarios.scenario_worker_kill(tmp_path))


def test_duplicate_reordered_and_delayed_webhooks_apply_once(tmp_path: Path) -> None:
    _check(scenarios.scenario_webhooks(tmp_path))


def test_whole_worker_killed_mid_backfill_is_taken_over_by_a_fresh_one(tmp_path: Path) -> None:
    """Issue 14's worker loss: the backfill's --wait ends, every chunk and event done once."""
    result = scenarios.scenario_whole_worker_kill(tmp_path)
    _check(result)
    assert result.faults_injected == {"worker process group SIGKILL": 1}
    assert any(note.startswith("backfill --wait exit 0") for note in result.notes), result.notes
