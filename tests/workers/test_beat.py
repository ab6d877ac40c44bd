"""Beat: the schedule file, the lease that keeps a second Beat from doubling it, and the bodies
of the two periodic tasks that matter most (proactive Zoho refresh, Pipedrive pull).
"""

from __future__ import annotations

import datetime as dt
import importlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis
import time_machine
from celery import Celery

from connector.crypto import generate_key
from connector.sync import service
from tests.harness import COMPANY, World, world
from workers import beat

REQUIRED_TASKS = {
    "workers.tasks.pull_pipedrive_all",
    "workers.tasks.refresh_zoho_tokens",
    "workers.tasks.reconcile_zoho_all",
    "workers.tasks.release_parked",
    "workers.tasks.prune_webhook_events",
    "workers.tasks.reap_expired_leases",
}
INTERVAL_ENV = (
    "CONNECTOR_PIPEDRIVE_POLL_MINUTES",
    "CONNECTOR_ZOHO_REFRESH_CHECK_MINUTES",
    "CONNECTOR_ZOHO_RECONCILE_MINUTES",
    "CONNECTOR_RELEASE_PARKED_MINUTES",
    "CONNECTOR_PRUNE_MINUTES",
    "CONNECTOR_REAPER_SECONDS",
)


@pytest.fixture
def celery_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str) -> ModuleType:
    """``workers.celery_app``, imported with valid settings (it builds the app at import)."""
    monkeypatch.setenv("CONNECTOR_SECRET_KEY", generate_key())
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'beat.db'}")
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("CONNECTOR_DOTENV", str(tmp_path / "no.env"))
    for name in INTERVAL_ENV:
        monkeypatch.delenv(name, raising=False)
    importlib.import_module("workers.tasks")
    return importlib.import_module("workers.celery_app")


@pytest.fixture
def load_schedule(celery_module: ModuleType) -> Callable[..., dict[str, Any]]:
    loader: Callable[..., dict[str, Any]] = celery_module.load_beat_schedule
    return loader


def _by_task(schedule: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["task"]: entry for entry in schedule.values()}


# The schedule file ----------------------------------------------------------------------------


def test_schedule_file_loads_by_path_with_every_required_entry(celery_module, load_schedule):
    path = celery_module.SCHEDULE_FILE
    assert path.name == "celerybeat-schedule.py"
    assert path.is_file()
    entries = _by_task(load_schedule(path))
    assert set(entries) >= REQUIRED_TASKS
    interval = {task: entry["schedule"] for task, entry in entries.items()}
    assert all(isinstance(value, dt.timedelta) for value in interval.values())
    # Pipedrive pulls every few minutes; Zoho tokens are checked every minute (they live 60
    # minutes and are refreshed at 55, so a coarser check could let one expire).
    assert dt.timedelta(minutes=1) <= interval["workers.tasks.pull_pipedrive_all"]
    assert interval["workers.tasks.pull_pipedrive_all"] <= dt.timedelta(minutes=10)
    assert interval["workers.tasks.refresh_zoho_tokens"] == dt.timedelta(minutes=1)
    # Reconciliation is the safety net behind webhooks: less often than the pulls.
    assert (
        interval["workers.tasks.reconcile_zoho_all"] > interval["workers.tasks.pull_pipedrive_all"]
    )
    assert interval["workers.tasks.release_parked"] <= dt.timedelta(minutes=5)
    assert interval["workers.tasks.prune_webhook_events"] >= dt.timedelta(hours=1)
    # Work of a dead worker is taken over within minutes: its lease, then one reaper period.
    assert interval["workers.tasks.reap_expired_leases"] <= dt.timedelta(seconds=60)


def test_the_reaper_runs_on_a_queue_that_never_waits_behind_long_work(celery_module):
    routes = celery_module.celery_app.conf.task_routes
    long_work = {routes[t]["queue"] for t in ("workers.tasks.backfill_page",)}
    long_work |= {routes["workers.tasks.release_parked"]["queue"]}
    reaper = routes["workers.tasks.reap_expired_leases"]["queue"]
    assert reaper == "webhooks"
    assert reaper not in long_work


def test_broker_visibility_timeout_outlasts_every_task_and_countdown(celery_module):
    from connector import leases
    from connector.sync.engine import RECORD_LOCK_SECONDS
    from workers import tasks

    conf = celery_module.celery_app.conf
    visibility = conf.broker_transport_options["visibility_timeout"]
    # A running task is never handed out twice by the broker...
    assert conf.task_soft_time_limit < conf.task_time_limit < visibility
    assert visibility > tasks.MAX_COUNTDOWN
    # ...and a dead worker's work is not waited for that long: leases are taken over first.
    assert visibility > leases.DEFAULT_LEASE_SECONDS * 4
    # A record lock left by a dead worker has expired when its lease does, so the worker
    # taking over does not wait for it: locks are taken after a beat at the latest.
    assert RECORD_LOCK_SECONDS + leases.DEFAULT_HEARTBEAT_SECONDS <= leases.DEFAULT_LEASE_SECONDS


def test_every_entry_expires_before_it_is_due_again(load_schedule):
    # A Beat tick that finds the broker backed up must not pile up copies of the same job.
    for name, entry in load_schedule().items():
        expires = entry["options"]["expires"]
        assert 0 < expires < entry["schedule"].total_seconds(), name


def test_intervals_come_from_the_environment(load_schedule, monkeypatch):
    monkeypatch.setenv("CONNECTOR_PIPEDRIVE_POLL_MINUTES", "2")
    monkeypatch.setenv("CONNECTOR_ZOHO_RECONCILE_MINUTES", "90")
    entries = _by_task(load_schedule())
    assert entries["workers.tasks.pull_pipedrive_all"]["schedule"] == dt.timedelta(minutes=2)
    assert entries["workers.tasks.reconcile_zoho_all"]["schedule"] == dt.timedelta(minutes=90)
    monkeypatch.delenv("CONNECTOR_PIPEDRIVE_POLL_MINUTES")
    entries = _by_task(load_schedule())
    assert entries["workers.tasks.pull_pipedrive_all"]["schedule"] == dt.timedelta(minutes=5)


def test_every_scheduled_task_is_registered_and_routed_to_an_existing_queue(celery_module):
    celery_app = celery_module.celery_app
    assert isinstance(celery_app, Celery)
    schedule = celery_app.conf.beat_schedule
    assert {entry["task"] for entry in schedule.values()} >= REQUIRED_TASKS
    declared = {queue.name for queue in celery_app.conf.task_queues}
    assert declared == set(celery_module.QUEUES)
    for name, entry in schedule.items():
        assert entry["task"] in celery_app.tasks, f"{name}: {entry['task']} is not a task"
        queue = entry["options"]["queue"]
        assert queue in declared, f"{name} is sent to undeclared queue {queue!r}"
        # The entry's queue and the task's route agree, so a manual send lands in the same place.
        assert celery_app.conf.task_routes[entry["task"]]["queue"] == queue, name


# The lease: a second Beat must not double the schedule ----------------------------------------


class CountingScheduler(beat.LockedScheduler):
    """A LockedScheduler that records what it would send instead of sending it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sent: list[str] = []
        super().__init__(*args, **kwargs)

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **_: Any) -> Any:
        self.sent.append(entry.task)
        return None


@pytest.fixture
def beat_app() -> Celery:
    """A Celery app whose two entries are due on every tick."""
    app = Celery("beat-test", broker="memory://", set_as_current=False)
    app.conf.update(
        timezone="UTC",
        enable_utc=True,
        result_backend=None,
        beat_schedule={
            "always-a": {"task": "workers.tasks.release_parked", "schedule": dt.timedelta(0)},
            "always-b": {"task": "workers.tasks.refresh_zoho_tokens", "schedule": dt.timedelta(0)},
        },
    )
    return app


@pytest.fixture
def schedulers(
    beat_app: Celery, tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[CountingScheduler, CountingScheduler]]:
    monkeypatch.setenv("REDIS_URL", redis_url)
    one = CountingScheduler(app=beat_app, schedule_filename=str(tmp_path / "one"))
    two = CountingScheduler(app=beat_app, schedule_filename=str(tmp_path / "two"))
    yield one, two
    for scheduler in (one, two):
        scheduler.close()
        scheduler._redis.close()


def _tick_both(one: CountingScheduler, two: CountingScheduler, times: int) -> None:
    for _ in range(times):
        one.tick()
        two.tick()


def _wait_until_gone(client: redis.Redis, key: str) -> None:
    deadline = time.monotonic() + 5
    while client.exists(key):
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.01)


def test_only_the_lease_holder_sends_and_it_renews_the_lease(schedulers, real_redis):
    one, two = schedulers
    _tick_both(one, two, 6)
    assert len(one.sent) == 6
    assert set(one.sent) == {"workers.tasks.release_parked", "workers.tasks.refresh_zoho_tokens"}
    assert two.sent == []
    assert two.tick() == beat.FOLLOWER_SLEEP
    assert real_redis.get(beat.LOCK_KEY) == one._identity.encode()
    assert 0 < real_redis.pttl(beat.LOCK_KEY) <= beat.LEASE_SECONDS * 1000
    # The leader asks to be woken well before its lease runs out, whatever the schedule says.
    assert one.tick() <= beat.LEASE_SECONDS / 3
    # Shortening the lease by hand proves the leader's tick renews it.
    real_redis.pexpire(beat.LOCK_KEY, 1_000)
    one.tick()
    assert real_redis.pttl(beat.LOCK_KEY) > 1_000


def test_follower_takes_over_when_the_leader_dies_and_not_before(schedulers, real_redis):
    one, two = schedulers
    _tick_both(one, two, 3)
    assert (len(one.sent), len(two.sent)) == (3, 0)
    # The leader dies without closing: while its lease lives, the follower still waits.
    for _ in range(3):
        two.tick()
    assert two.sent == []
    real_redis.pexpire(beat.LOCK_KEY, 1)
    _wait_until_gone(real_redis, beat.LOCK_KEY)
    for _ in range(4):
        two.tick()
    assert len(two.sent) == 4
    assert real_redis.get(beat.LOCK_KEY) == two._identity.encode()
    # The old leader comes back (a paused process): it must now follow, not send.
    before = len(one.sent)
    _tick_both(one, two, 3)
    assert len(one.sent) == before
    assert len(two.sent) == 7


def test_leader_that_stops_cleanly_hands_over_at_once(schedulers, real_redis):
    one, two = schedulers
    _tick_both(one, two, 2)
    two.close()  # a follower's shutdown must not release the leader's lease
    assert real_redis.get(beat.LOCK_KEY) == one._identity.encode()
    one.close()
    assert not real_redis.exists(beat.LOCK_KEY)
    three = CountingScheduler(app=two.app, schedule_filename=two.schedule_filename + "-again")
    try:
        three.tick()
        assert three.sent
        assert real_redis.get(beat.LOCK_KEY) == three._identity.encode()
    finally:
        three.close()
        three._redis.close()


def test_without_redis_nobody_sends(beat_app, tmp_path, monkeypatch):
    # An unreachable lock store must stop scheduling rather than let every Beat send.
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    lonely = CountingScheduler(app=beat_app, schedule_filename=str(tmp_path / "lonely"))
    try:
        assert lonely.tick() == beat.FOLLOWER_SLEEP
        assert lonely.sent == []
    finally:
        lonely.close()
        lonely._redis.close()


# The bodies of the periodic tasks --------------------------------------------------------------


@pytest.fixture
def w(tmp_path: Path, redis_url: str) -> Iterator[World]:
    with world(f"sqlite:///{tmp_path / 'c.db'}", redis_url) as built:
        yield built


def _refresh_grants(w: World) -> int:
    return sum(1 for r in w.zoho.accounts.token_requests if r.grant_type == "refresh_token")


def test_refresh_task_refreshes_only_tokens_older_than_55_minutes(w):
    # world() connected the organization just now: its access token was issued at real time.
    issued = time.time()
    assert _refresh_grants(w) == 0
    with time_machine.travel(issued + 54 * 60, tick=False):
        assert service.refresh_zoho_tokens(w.context) == 0
    assert _refresh_grants(w) == 0
    with time_machine.travel(issued + 55 * 60 + 5, tick=False):
        assert service.refresh_zoho_tokens(w.context) == 1
        assert _refresh_grants(w) == 1
        # The fresh token is young again: the next minute's check leaves it alone.
        assert service.refresh_zoho_tokens(w.context) == 0
    assert _refresh_grants(w) == 1
    # And the refreshed token works against the Books API.
    zoho_org = w.zoho_orgs["us"]
    (cid,) = w.zoho.bulk_create(zoho_org, "contacts", [{"contact_name": "Token Check Ltd"}])
    from connector.zoho.service import build_zoho_client

    with time_machine.travel(issued + 56 * 60, tick=False):
        client = build_zoho_client(w.context, w.connection(w.zoho_connections["us"]))
        assert client.contacts.get(cid)["contact_name"] == "Token Check Ltd"
    assert _refresh_grants(w) == 1


def _zoho_contacts(w: World) -> dict[str, dict[str, Any]]:
    contacts = w.zoho.dump_state()["organizations"][w.zoho_orgs["us"]]["contacts"]
    return {str(c["contact_name"]): c for c in contacts}


def test_pull_task_brings_changed_organizations_and_a_quiet_pull_writes_nothing(w):
    org = w.zoho_orgs["us"]
    first = w.pipedrive.app_create(COMPANY, "organizations", {"name": "Pulled One GmbH"})
    w.pipedrive.app_create(COMPANY, "organizations", {"name": "Pulled Two BV"})
    w.clock.advance(60)
    assert service.pull_pipedrive(w.context, w.pipedrive_connection) == 2
    assert w.zoho.state_counts()["organizations"][org]["contacts"] == 2
    assert {"Pulled One GmbH", "Pulled Two BV"} <= set(_zoho_contacts(w))

    # A change after the cursor is pulled and applied to the same Zoho contact.
    w.clock.advance(120)
    w.pipedrive.app_update(COMPANY, "organizations", first["id"], {"name": "Pulled One AG"})
    w.clock.advance(60)
    assert service.pull_pipedrive(w.context, w.pipedrive_connection) >= 1
    names = set(_zoho_contacts(w))
    assert "Pulled One AG" in names
    assert "Pulled One GmbH" not in names
    assert w.zoho.state_counts()["organizations"][org]["contacts"] == 2

    # Nothing changed since: one list call, no write on either side.
    w.clock.advance(300)
    pd_writes = w.pd_writes()
    pd_log = len(w.pipedrive.request_log(COMPANY))
    zoho_log = len(w.zoho.request_log)
    assert service.pull_pipedrive(w.context, w.pipedrive_connection) == 0
    assert w.pd_writes() == pd_writes
    calls = w.pipedrive.request_log(COMPANY)[pd_log:]
    assert [(c.method, c.path.split("?")[0], c.cost) for c in calls] == [
        ("GET", "/api/v2/organizations", 10)
    ]
    assert list(w.zoho.request_log)[zoho_log:] == []


def test_the_reaper_task_sends_the_work_of_a_dead_worker_again(celery_module, monkeypatch):
    from unittest import mock

    from connector import leases
    from connector.db import upgrade
    from connector.models import Connection, WebhookEvent, utcnow
    from workers import tasks

    monkeypatch.setattr(tasks, "_context", None)
    ctx = tasks.context()
    upgrade(ctx.settings.database_url)
    with ctx.session() as session:
        connection = Connection(
            name="z", system="zoho", external_id="1", auth_kind="oauth", credentials_ciphertext="x"
        )
        session.add(connection)
        session.flush()
        event = WebhookEvent(
            source="zoho",
            connection_id=connection.id,
            dedupe_key="k",
            status=leases.RUNNING,
            lease_owner="gone:1",
            lease_expires_at=utcnow() - dt.timedelta(seconds=1),
        )
        session.add(event)
        session.flush()
        event_id = event.id
    with mock.patch.object(celery_module.celery_app, "send_task") as send:
        assert tasks.reap_expired_leases() == 1
        assert tasks.reap_expired_leases() == 0
    send.assert_called_once_with(leases.EVENT_TASK, args=[event_id], kwargs={})
    ctx.close()
    monkeypatch.setattr(tasks, "_context", None)
