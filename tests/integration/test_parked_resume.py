"""Work parked on a spent Pipedrive budget comes back at the reset, not a minute before.

The budget is spent through a real PipedriveLimiter on the real Redis (its clock injected so it
follows time-machine), the refusal's ``reset_at`` parks the task in SQL, and Beat's release
(:func:`connector.sync.service.release_parked`) is asked under a frozen clock on either side of
the reset, on SQLite and on the real PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import redis
import time_machine

from connector.context import AppContext
from connector.db import upgrade
from connector.errors import BudgetExhaustedError
from connector.pipedrive.limiter import PipedriveLimiter
from connector.sync.service import park_task, release_parked
from tests.harness import make_settings

pytestmark = pytest.mark.integration

# A zone away from UTC, so a reset computed or stored in the wrong zone lands an hour off.
ZONE = ZoneInfo("Europe/Berlin")
RESET = dt.datetime(2026, 3, 3, 0, 0, tzinfo=ZONE)  # 2026-03-02 23:00 UTC
TASK = "connector.pull_pipedrive"
ARGS = {"args": [7], "kwargs": {"full": False}}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'connector.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def _limiter(redis_url: str) -> PipedriveLimiter:
    return PipedriveLimiter(
        redis=redis.Redis.from_url(redis_url),
        company_key="parked",
        token_key="parked-token",
        plan="growth",
        auth_kind="api_token",
        daily_budget=10,
        timezone=str(ZONE),
        # The limiter normally reads Redis TIME, which time-machine cannot move.
        now=lambda: time.time(),
    )


def test_budget_parked_work_is_released_after_the_reset(database_url: str, redis_url: str) -> None:
    settings = make_settings(database_url, redis_url)
    upgrade(settings.database_url)
    context = AppContext(settings=settings)
    limiter = _limiter(redis_url)

    with time_machine.travel(RESET - dt.timedelta(hours=2), tick=False) as traveller:
        limiter.acquire(9)  # the reserve line (10 % of 10 tokens)
        with pytest.raises(BudgetExhaustedError) as refused:
            limiter.acquire(1)
        error = refused.value
        assert error.reset_at == RESET

        park_task(context, task_name=TASK, args=ARGS, error=error)
        assert release_parked(context) == []

        traveller.move_to(RESET - dt.timedelta(minutes=1))
        assert release_parked(context) == []
        with pytest.raises(BudgetExhaustedError):
            limiter.acquire(1)  # still the spent day

        traveller.move_to(RESET + dt.timedelta(seconds=1))
        assert release_parked(context) == [(TASK, ARGS)]
        assert release_parked(context) == [], "a parked job is released once"
        # The released task finds a fresh budget.
        decision = limiter.acquire(1)
        assert decision.granted
        assert limiter.spent_today() == 1

    context.close()


def test_parking_again_keeps_one_job_with_the_later_reset(
    database_url: str, redis_url: str
) -> None:
    settings = make_settings(database_url, redis_url)
    upgrade(settings.database_url)
    context = AppContext(settings=settings)
    later = RESET + dt.timedelta(days=1)

    with time_machine.travel(RESET - dt.timedelta(hours=2), tick=False) as traveller:
        for reset_at in (RESET, later, RESET):
            error = BudgetExhaustedError("spent", reset_at=reset_at, system="pipedrive")
            park_task(context, task_name=TASK, args=ARGS, error=error)

        traveller.move_to(RESET + dt.timedelta(seconds=1))
        assert release_parked(context) == []
        traveller.move_to(later + dt.timedelta(seconds=1))
        assert release_parked(context) == [(TASK, ARGS)]
        assert release_parked(context) == []

    context.close()
