"""Fault-injection scenarios shared by ``make chaos`` (bench/chaos.py) and the CI short form.

Every scenario seeds both simulators from a fixed seed, runs the sync through a fault, and ends
by comparing the simulators' final state with the expected one (:func:`state_problems`):
every Zoho customer exactly once as a Pipedrive organization carrying its Zoho Contact ID and
the same name, every contact person once as a Pipedrive person, every seeded deal with the sum
of its customer's invoices, no Pipedrive organization without a Zoho id, no extra Zoho contact.

Two kinds of scenario:

* in-process (:class:`InProcess`): the library on both simulators mounted on ``responses``,
  the real PostgreSQL (a fresh schema) and a private ``redis-server``. Tasks run through
  :class:`Driver`, which applies :class:`workers.tasks.ConnectorTask`'s rules (retry a
  retryable error up to 8 times, park a spent budget with ``service.park_task``, dead-letter the
  rest with ``service.dead_letter``) without Celery, so faults are decided in one thread and the
  run is repeatable.
* processes (:class:`ProcessStack`): gunicorn, a Celery worker and Beat on a private PostgreSQL
  cluster and a private ``redis-server`` (both started here, so they can be killed and restarted
  without touching the machine's shared services), both simulators over HTTP on loopback.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import redis
import requests
import sqlalchemy as sa
import time_machine

from connector.context import AppContext
from connector.db import upgrade
from connector.errors import BudgetExhaustedError, RetryableError
from connector.mapping.config import load_config
from connector.models import (
    BackfillChunk,
    Connection,
    DeadLetter,
    Link,
    ParkedJob,
    WebhookEvent,
)
from connector.pipedrive.service import (
    build_pipedrive_client,
    connect_pipedrive,
    field_registry,
    register_webhooks,
)
from connector.ratelimit import LimiterEngine
from connector.sandbox.common import Clock, serve_in_thread
from connector.sandbox.pipedrive import PipedriveSimulator
from connector.sandbox.processes import (
    BIN,
    ProcessGroup,
    beat_argv,
    free_port,
    wait_for,
    web_argv,
    worker_argv,
)
from connector.sandbox.zoho import ZohoSimulator
from connector.sync import service
from connector.sync.audit import Trigger
from connector.sync.engine import engine_session
from connector.sync.setup import required_field_specs
from connector.zoho.service import connect_zoho
from connector.zoho.webhooks import sign_zoho_webhook
from tests.harness import CLIENT_ID, CLIENT_SECRET, COMPANY, World, contact, make_settings, world

POSTGRES_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), Path("/usr/bin"))
# ConnectorTask's cap (workers/tasks.py): retries after the first attempt.
MAX_RETRIES = 8
SYNC_TASK = "workers.tasks.sync_record"
PULL_TASK = "workers.tasks.pull_pipedrive"
RECONCILE_TASK = "workers.tasks.reconcile_zoho"


# Services that may be restarting: their errors mean "not yet" while waiting.
STARTING = (requests.RequestException, redis.RedisError, sa.exc.OperationalError, KeyError)


# Private services ------------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of our own, on its own port, that a scenario may kill and restart.

    Append-only with fsync on every write: a restart models a crash of a Redis that persists
    (the broker's queued messages survive), which is how the service must be deployed.
    """

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = workdir / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        """The URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers."""
        log = (self.dir / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        client = redis.Redis.from_url(self.url)
        wait_for(
            "the private redis-server", lambda: bool(client.ping()), timeout=20, tolerate=STARTING
        )
        client.close()

    def kill(self) -> None:
        """SIGKILL the server (a crash, not a shutdown)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self, down_seconds: float = 2.0) -> None:
        """Crash the server, stay down a while, start it again."""
        self.kill()
        time.sleep(down_seconds)
        self.start()
        self.restarts += 1

    def close(self) -> None:
        """Stop the server and remove its files."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivatePostgres:
    """A PostgreSQL cluster of our own (initdb in a temporary directory, run as ``postgres``)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        # Not under ``workdir``: the ``postgres`` user must be able to reach it.
        self.dir = Path(tempfile.mkdtemp(prefix=f"chaos-pg-{self.port}-"))
        self.dir.chmod(0o755)
        self.data = self.dir / "data"
        self.restarts = 0

    @property
    def url(self) -> str:
        """The URL of the ``postgres`` database."""
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *argv], check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        """Create and start the cluster."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.dir, user="postgres")
        self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"
        )
        self.start()

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200",
            "-l",
            str(self.dir / "postgres.log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server (``immediate`` is a crash: no checkpoint, clients cut off)."""
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, down_seconds: float = 2.0) -> None:
        """Crash the server, stay down a while, start it again (crash recovery runs)."""
        self.stop("immediate")
        time.sleep(down_seconds)
        self.start()
        self.restarts += 1

    def close(self) -> None:
        """Stop the server and remove the cluster."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


# Data set and the expected final state ----------------------------------------------------------


@dataclass
class Dataset:
    """What a scenario seeded, to compare the final state with."""

    zoho_org: str
    contacts: list[str] = field(default_factory=list)
    deals: dict[str, int] = field(default_factory=dict)  # contact_id -> seeded deal id
    pd_only: list[int] = field(default_factory=list)  # not used by default


def seed_dataset(
    zoho: ZohoSimulator,
    pd: PipedriveSimulator,
    company: str,
    zoho_org: str,
    *,
    customers: int,
    seed: int,
    tag: str = "",
) -> Dataset:
    """Zoho customers (one contact person each); every other one already exists in Pipedrive by
    name with an open deal and has two invoices in Zoho. The rest are new to Pipedrive."""
    rng = random.Random(seed)
    data = Dataset(zoho_org=zoho_org)
    currency = zoho.dump_state()["organizations"][zoho_org]["organization"].get(
        "currency_code", "USD"
    )
    for index in range(customers):
        name = f"Chaos{tag} {index:03d} {rng.choice(['GmbH', 'Inc', 'Ltd', 'BV', 'SARL'])}"
        created = zoho.create_record(zoho_org, "contacts", contact(name, persons=1))
        contact_id = str(created["contact_id"])
        data.contacts.append(contact_id)
        if index % 2 == 0:
            (org_id,) = pd.seed(company, "organizations", [{"name": name}])
            (deal_id,) = pd.seed(
                company,
                "deals",
                [
                    {
                        "title": f"{name} renewal",
                        "org_id": org_id,
                        "status": "open",
                        "currency": currency,
                    }
                ],
            )
            data.deals[contact_id] = deal_id
            for number in range(2):
                add_invoice(zoho, zoho_org, contact_id, rng.randint(100, 5000), f"{index}-{number}")
    return data


def add_invoice(
    zoho: ZohoSimulator, zoho_org: str, contact_id: str, amount: float, hint: str
) -> str:
    """A sent invoice of one line for a customer; returns its id."""
    created = zoho.create_record(
        zoho_org,
        "invoices",
        {
            "customer_id": contact_id,
            "date": "2026-03-01",
            "due_date": "2026-03-31",
            "status": "sent",
            "line_items": [{"name": f"Service {hint}", "rate": amount, "quantity": 1}],
        },
    )
    return str(created["invoice_id"])


def _custom(record: dict[str, Any], key: str) -> Any:
    value = (record.get("custom_fields") or {}).get(key)
    if isinstance(value, dict):
        return value.get("value")
    return value


def _emails(person: dict[str, Any]) -> set[str]:
    found = set()
    for item in person.get("emails") or person.get("email") or []:
        value = item.get("value") if isinstance(item, dict) else item
        if value:
            found.add(str(value).lower())
    return found


def state_problems(
    zoho: ZohoSimulator,
    pd: PipedriveSimulator,
    company: str,
    data: Dataset,
    *,
    excluded_contacts: set[str] | frozenset[str] = frozenset(),
) -> list[str]:
    """Every difference between the simulators' final state and the expected one (empty = 0)."""
    problems: list[str] = []
    state = zoho.dump_state()["organizations"][data.zoho_org]
    contacts = {str(c["contact_id"]): c for c in state["contacts"]}
    org_key = pd.custom_field_key(company, "organization", "Zoho Contact ID")
    total_key = pd.custom_field_key(company, "deal", "Zoho Invoice Total")
    orgs = pd.records(company, "organizations")
    persons = pd.records(company, "persons")
    by_zoho_id: dict[str, list[dict[str, Any]]] = {}
    for org in orgs:
        by_zoho_id.setdefault(str(_custom(org, org_key) or ""), []).append(org)
    extra_zoho = set(contacts) - set(data.contacts)
    if extra_zoho:
        problems.append(
            f"{len(extra_zoho)} Zoho contact(s) nobody seeded (duplicates from Pipedrive)"
        )
    emails = Counter(email for person in persons for email in _emails(person))
    for contact_id in data.contacts:
        if contact_id in excluded_contacts:
            continue
        zc = contacts.get(contact_id)
        if zc is None:
            problems.append(f"Zoho contact {contact_id} is gone")
            continue
        matches = by_zoho_id.get(contact_id, [])
        if len(matches) != 1:
            problems.append(
                f"{zc['contact_name']!r} ({contact_id}): {len(matches)} Pipedrive organizations"
            )
        elif matches[0]["name"] != zc["contact_name"]:
            problems.append(
                f"{contact_id}: Zoho says {zc['contact_name']!r}, Pipedrive {matches[0]['name']!r}"
            )
        for person in zc.get("contact_persons") or []:
            email = str(person.get("email") or "").lower()
            if email and emails[email] != 1:
                problems.append(f"person {email}: {emails[email]} Pipedrive persons")
    unlinked = [
        o["name"]
        for o in orgs
        if not _custom(o, org_key)
        and not any(zc["contact_name"] == o["name"] for zc in contacts.values())
    ]
    for name in unlinked:
        problems.append(f"Pipedrive organization {name!r} has no Zoho customer")
    invoices = [i for i in state["invoices"] if i.get("status") not in {"void", "draft"}]
    for contact_id, deal_id in data.deals.items():
        if contact_id in excluded_contacts:
            continue
        expected = sum(float(i["total"]) for i in invoices if str(i["customer_id"]) == contact_id)
        deal = pd.get_record(company, "deals", deal_id)
        got = _custom(deal, total_key)
        if got is None or abs(float(got) - expected) > 0.005:
            problems.append(f"deal {deal_id}: Zoho Invoice Total {got}, expected {expected}")
    deals = pd.records(company, "deals")
    if len(deals) != len(data.deals):
        problems.append(f"{len(deals)} Pipedrive deals, {len(data.deals)} seeded")
    return problems


# Running tasks in-process with ConnectorTask's rules --------------------------------------------


@dataclass
class TaskStats:
    """What the driver saw."""

    tasks: int = 0
    retries: int = 0
    parked: int = 0
    dead_letters: int = 0
    lost: int = 0
    errors: Counter[str] = field(default_factory=Counter)


class Driver:
    """Runs the library functions behind the Celery tasks with ConnectorTask's rules."""

    def __init__(self, context: AppContext) -> None:
        self.context = context
        self.stats = TaskStats()

    def run(self, task_name: str, *args: Any) -> str:
        """Run one task to its end: ``ok``, ``parked`` or ``dead``."""
        self.stats.tasks += 1
        for attempt in range(MAX_RETRIES + 1):
            try:
                self._call(task_name, args)
                return "ok"
            except BudgetExhaustedError as exc:
                try:
                    service.park_task(
                        self.context,
                        task_name=task_name,
                        args={"args": list(args), "kwargs": {}},
                        error=exc,
                    )
                except Exception as failure:
                    # The task fails outside every handler; Celery acks it: the work is lost.
                    self.stats.lost += 1
                    self.stats.errors[f"park_task {type(failure).__name__}"] += 1
                    return "lost"
                self.stats.parked += 1
                return "parked"
            except RetryableError as exc:
                self.stats.errors[type(exc).__name__] += 1
                if attempt == MAX_RETRIES:
                    break
                self.stats.retries += 1
            except Exception as exc:
                self.stats.errors[type(exc).__name__] += 1
                self._dead(task_name, args, exc, attempt + 1)
                return "dead"
        self._dead(task_name, args, RuntimeError("retry cap"), MAX_RETRIES + 1)
        return "dead"

    def _call(self, task_name: str, args: tuple[Any, ...]) -> None:
        if task_name == SYNC_TASK:
            # service.replay passes the Celery task's positional ``trigger`` positionally, which
            # service.sync_record takes by keyword only (reported): call it the task's way.
            connection_id, entity, record_id, trigger = args
            service.sync_record(self.context, connection_id, entity, record_id, trigger=trigger)
            return
        service.replay(self.context, task_name, list(args), {})

    def _dead(
        self, task_name: str, args: tuple[Any, ...], exc: BaseException, attempts: int
    ) -> None:
        self.stats.dead_letters += 1
        service.dead_letter(
            self.context,
            task_name=task_name,
            args={"args": list(args), "kwargs": {}},
            error=f"{type(exc).__name__}: {exc}",
            attempts=attempts,
        )

    def backfill(self, rounds: int = 20) -> int:
        """``connector backfill`` until it finishes; returns how many runs it took."""
        for run in range(1, rounds + 1):
            try:
                with engine_session(self.context, trigger=Trigger.BACKFILL) as engine:
                    progress = engine.backfill()
            except RetryableError as exc:
                # Listing Zoho failed past the client's own retries: the operator runs it again.
                self.stats.errors[type(exc).__name__] += 1
                self.stats.retries += 1
                continue
            if not progress.stopped and not progress.failed:
                return run
            self.stats.retries += 1
            if progress.stopped and "budget" in progress.stopped.lower():
                return -run
        raise AssertionError(f"backfill did not finish in {rounds} runs")


# In-process scenarios ----------------------------------------------------------------------------


@dataclass
class Result:
    """One scenario's figures."""

    name: str
    description: str
    requests: int = 0
    faults_injected: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    dead_letters: int = 0
    dead_letters_expected: int = 0
    parked: int = 0
    tasks: int = 0
    lost_tasks: int = 0
    state_diff: list[str] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Final state as expected and dead letters only where the fault is permanent."""
        return (
            not self.state_diff
            and not self.lost_tasks
            and self.dead_letters == self.dead_letters_expected
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "name": self.name,
            "description": self.description,
            "requests": self.requests,
            "faults_injected": self.faults_injected,
            "retries": self.retries,
            "dead_letters": self.dead_letters,
            "dead_letters_expected": self.dead_letters_expected,
            "parked": self.parked,
            "tasks": self.tasks,
            "lost_tasks": self.lost_tasks,
            "final_state_diff": len(self.state_diff),
            "diff_details": self.state_diff[:20],
            "seconds": round(self.seconds, 1),
            "notes": self.notes,
            "passed": self.passed,
        }


@contextlib.contextmanager
def _fresh_schema() -> Iterator[str]:
    schema = f"chaos_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


class InProcess:
    """Both simulators on ``responses``, PostgreSQL (fresh schema), a private redis-server."""

    def __init__(self, workdir: Path, *, data_centers: tuple[str, ...] = ("us",)) -> None:
        self.workdir = workdir
        self.data_centers = data_centers
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> InProcess:
        self.redis = PrivateRedis(self.workdir)
        self.redis.start()
        self._stack.callback(self.redis.close)
        database_url = self._stack.enter_context(_fresh_schema())
        self.world: World = self._stack.enter_context(
            world(database_url, self.redis.url, data_centers=self.data_centers)
        )
        self._stack.callback(self.world.pipedrive.close)
        self.driver = Driver(self.world.context)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def zoho(self) -> ZohoSimulator:
        return self.world.zoho

    @property
    def pd(self) -> PipedriveSimulator:
        return self.world.pipedrive

    def requests_made(self) -> int:
        zoho = sum(s.get("total", 0) for s in self.zoho.stats().values())
        return int(zoho) + int(self.pd.stats(COMPANY).get("requests", 0))

    def faults(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        out.update({f"zoho {k}": v for k, v in self.zoho.faults.injected.items()})
        out.update({f"pipedrive {k}": v for k, v in self.pd.faults.injected.items()})
        storms = self.pd.count_429(COMPANY)
        if storms:
            out["pipedrive 429"] = storms
        return dict(out)

    def db_counts(self) -> tuple[int, int]:
        with self.world.context.session() as session:
            dead = session.scalar(sa.select(sa.func.count()).select_from(DeadLetter)) or 0
            parked = session.scalar(sa.select(sa.func.count()).select_from(ParkedJob)) or 0
        return int(dead), int(parked)

    def live_changes(self, data: Dataset, rng: random.Random, zoho_conn: int) -> None:
        """Changes on both sides after the backfill, each followed by the task its webhook or
        Beat would start: new invoices, Zoho renames, Pipedrive renames (pulled)."""
        org = data.zoho_org
        for contact_id in rng.sample(sorted(data.deals), k=max(1, len(data.deals) // 3)):
            invoice_id = add_invoice(self.zoho, org, contact_id, rng.randint(50, 900), "live")
            self.driver.run(SYNC_TASK, zoho_conn, "invoice", invoice_id, "webhook")
        renamed = rng.sample(data.contacts, k=max(1, len(data.contacts) // 5))
        with self.world.context.session() as session:
            linked = set(session.scalars(sa.select(Link.zoho_id)))
        for contact_id in renamed:
            if contact_id not in linked:
                # Not synced yet (a spent budget): renamed now, it could no longer be matched by
                # name to its Pipedrive organization by anyone. Renames come after the first link.
                continue
            name = self.zoho.get_record(org, "contacts", contact_id)["contact_name"]
            self.zoho.update_record(org, "contacts", contact_id, {"contact_name": f"{name} (Z)"})
            self.driver.run(SYNC_TASK, zoho_conn, "contact", contact_id, "webhook")
        key = self.pd.custom_field_key(COMPANY, "organization", "Zoho Contact ID")
        others = [c for c in data.contacts if c not in renamed]
        for contact_id in rng.sample(others, k=max(1, len(others) // 5)):
            pd_org = next(
                (
                    o
                    for o in self.pd.records(COMPANY, "organizations")
                    if _custom(o, key) == contact_id
                ),
                None,
            )
            if pd_org is None:  # not synced yet (a spent budget): nothing to rename
                continue
            self.pd.app_update(
                COMPANY, "organizations", pd_org["id"], {"name": f"{pd_org['name']} (P)"}
            )
            self.world.clock.advance(1)
        self.driver.run(PULL_TASK, self.world.pipedrive_connection)
        self.driver.run(RECONCILE_TASK, zoho_conn)

    def finish(self, result: Result, data: Dataset, started: float, **kwargs: Any) -> Result:
        self.zoho.set_faults(server_error_rate=0.0, timeout_rate=0.0, drop_rate=0.0)
        self.pd.faults.configure(server_error_rate=0.0, timeout_rate=0.0, drop_rate=0.0)
        self.pd.configure(storm_rate=0.0)
        result.state_diff = state_problems(self.zoho, self.pd, COMPANY, data, **kwargs)
        result.requests = self.requests_made()
        result.faults_injected = self.faults()
        stats = self.driver.stats
        result.retries, result.tasks = stats.retries, stats.tasks
        result.lost_tasks = stats.lost
        result.dead_letters, result.parked = self.db_counts()
        if stats.errors:
            result.notes.append(
                "errors seen by tasks: " + ", ".join(f"{k} x{v}" for k, v in stats.errors.items())
            )
        result.seconds = time.monotonic() - started
        return result


def scenario_faults(workdir: Path, *, customers: int = 16, seed: int = 7) -> Result:
    """5xx, timeouts and dropped connections at 10% of requests on both simulators (half of the
    faults on writes land after the write happened), through backfill and live changes."""
    result = Result("faults-10pct", scenario_faults.__doc__ or "")
    started = time.monotonic()
    rng = random.Random(seed)
    with InProcess(workdir) as run:
        org, conn = run.world.zoho_orgs["us"], run.world.zoho_connections["us"]
        data = seed_dataset(run.zoho, run.pd, COMPANY, org, customers=customers, seed=seed)
        rates = {"server_error_rate": 0.04, "timeout_rate": 0.03, "drop_rate": 0.03}
        run.zoho.set_faults(faults_after_write=0.5, seed=seed, **rates)
        run.pd.faults.configure(seed=seed, **rates)
        result.notes.append(f"backfill runs: {run.driver.backfill()}")
        run.live_changes(data, rng, conn)
        return run.finish(result, data, started)


def scenario_faults_after_write(workdir: Path, *, customers: int = 12, seed: int = 11) -> Result:
    """Pipedrive answers 5xx / times out / drops at 10% of requests AFTER doing the write (the
    worst case for duplicates: the write happened, the client saw a failure)."""
    result = Result("pipedrive-faults-after-write", scenario_faults_after_write.__doc__ or "")
    started = time.monotonic()
    rng = random.Random(seed)
    with InProcess(workdir) as run:
        org, conn = run.world.zoho_orgs["us"], run.world.zoho_connections["us"]
        data = seed_dataset(run.zoho, run.pd, COMPANY, org, customers=customers, seed=seed)
        run.pd.configure(faults_after_write=True)
        run.pd.faults.configure(
            seed=seed, server_error_rate=0.04, timeout_rate=0.03, drop_rate=0.03
        )
        result.notes.append(f"backfill runs: {run.driver.backfill()}")
        run.live_changes(data, rng, conn)
        return run.finish(result, data, started)


def scenario_storm(workdir: Path, *, customers: int = 12, seed: int = 3) -> Result:
    """Pipedrive answers 429 to 20% of requests at random (a storm unrelated to our own rate)."""
    result = Result("pipedrive-429-storm", scenario_storm.__doc__ or "")
    started = time.monotonic()
    rng = random.Random(seed)
    with InProcess(workdir) as run:
        org, conn = run.world.zoho_orgs["us"], run.world.zoho_connections["us"]
        data = seed_dataset(run.zoho, run.pd, COMPANY, org, customers=customers, seed=seed)
        run.pd.configure(storm_rate=0.2)
        result.notes.append(f"backfill runs: {run.driver.backfill()}")
        run.live_changes(data, rng, conn)
        return run.finish(result, data, started)


def scenario_budget(workdir: Path, *, customers: int = 16, seed: int = 5) -> Result:
    """The Pipedrive daily budget runs out mid-backfill; live work parks; the budget resets at
    midnight (simulator clock and the limiter's clock moved together); Beat's release hands the
    parked work back and the backfill is run again."""
    result = Result("budget-reset", scenario_budget.__doc__ or "")
    started = time.monotonic()
    rng = random.Random(seed)
    with InProcess(workdir) as run:
        clock = run.world.clock
        # From real time: parking never releases work earlier than a minute after the real now.
        clock.set(dt.datetime.now(dt.UTC))
        org, conn = run.world.zoho_orgs["us"], run.world.zoho_connections["us"]
        data = seed_dataset(run.zoho, run.pd, COMPANY, org, customers=customers, seed=seed)

        # The limiter reads Redis TIME, which no test can move: give every limiter built from
        # here on the shared clock instead (its documented test hook), so the budget day, the
        # parked work's "until" and the simulator's reset all follow one clock.
        build_engine = LimiterEngine.__init__

        def on_shared_clock(engine: LimiterEngine, redis_client: Any, *, now: Any = None) -> None:
            build_engine(engine, redis_client, now=now or clock.timestamp)

        patch = mock.patch.object(LimiterEngine, "__init__", new=on_shared_clock)
        with patch:
            spent = run.pd.tokens_spent(COMPANY)
            budget = spent + 120 + customers * 6
            run.pd.set_limits(COMPANY, daily_budget=budget)
            with run.world.context.session() as session:
                store = run.world.context.store(session)
                store.set_options(store.get(run.world.pipedrive_connection), daily_budget=budget)
            outcome = run.driver.backfill()
            result.notes.append(
                f"budget {budget} tokens; first backfill "
                + ("stopped on the budget" if outcome < 0 else "finished (budget not reached)")
            )
            run.live_changes(data, rng, conn)
            _, parked = run.db_counts()
            result.notes.append(f"parked while the budget was spent: {parked}")
            # The first day's budget was nearly spent before the backfill started (other use
            # of the company's tokens); a whole day's budget is far larger.
            run.pd.set_limits(COMPANY, daily_budget=5000)
            with run.world.context.session() as session:
                store = run.world.context.store(session)
                store.set_options(store.get(run.world.pipedrive_connection), daily_budget=5000)
            # Each reset gives a new day's budget: Beat's release hands the parked work back and
            # the operator runs the backfill again, until a day's budget is enough.
            for day in range(1, 4):
                reset = run.pd.budget_reset_at(COMPANY)
                clock.set(reset + dt.timedelta(minutes=2))
                with time_machine.travel(clock.now(), tick=True):
                    released = service.release_parked(run.world.context)
                    for task_name, args in released:
                        run.driver.run(task_name, *args.get("args", []))
                    runs = run.driver.backfill()
                result.notes.append(
                    f"reset {day}: released {len(released)} parked task(s); backfill "
                    + ("finished" if runs > 0 else "stopped on the budget again")
                )
                if runs > 0:
                    break
            run.driver.run(PULL_TASK, run.world.pipedrive_connection)
            run.driver.run(RECONCILE_TASK, conn)
            return run.finish(result, data, started)


def scenario_revoked(workdir: Path, *, customers: int = 10, seed: int = 9) -> Result:
    """A Zoho refresh token is revoked mid-run (EU connection): that connection is flagged for
    re-authorization, its work dead-letters (permanent by design), the US connection continues."""
    result = Result("zoho-token-revoked", scenario_revoked.__doc__ or "")
    started = time.monotonic()
    rng = random.Random(seed)
    with InProcess(workdir, data_centers=("us", "eu")) as run:
        orgs, conns = run.world.zoho_orgs, run.world.zoho_connections
        us = seed_dataset(run.zoho, run.pd, COMPANY, orgs["us"], customers=customers, seed=seed)
        eu = seed_dataset(
            run.zoho, run.pd, COMPANY, orgs["eu"], customers=customers, seed=seed + 1, tag="EU"
        )
        result.notes.append(f"backfill runs: {run.driver.backfill()}")
        with run.world.context.session() as session:
            store = run.world.context.store(session)
            refresh = store.credentials(store.get(conns["eu"]))["refresh_token"]
        run.zoho.accounts.revoke("eu", refresh)
        run.zoho.accounts.expire_access_tokens(refresh_token=refresh)
        # Work in the EU organization after the revocation cannot be read: dead letters.
        eu_invoices = 0
        for contact_id in rng.sample(sorted(eu.deals), k=2):
            invoice_id = add_invoice(run.zoho, orgs["eu"], contact_id, 100, "after-revoke")
            run.driver.run(SYNC_TASK, conns["eu"], "invoice", invoice_id, "webhook")
            eu_invoices += 1
        run.live_changes(us, rng, conns["us"])
        run.driver.run("workers.tasks.refresh_zoho_tokens")
        result.dead_letters_expected = eu_invoices
        with run.world.context.session() as session:
            statuses = {
                c.name: c.status
                for c in session.scalars(sa.select(Connection).where(Connection.system == "zoho"))
            }
        result.notes.append(f"connection status after: {statuses}")
        if statuses.get("zoho-eu") == "active" or statuses.get("zoho-us") != "active":
            result.state_diff.append(f"connection flags wrong: {statuses}")
        done = run.finish(result, us, started)
        # The EU side as it stood before the revocation is complete; its new invoices wait.
        eu_problems = state_problems(run.zoho, run.pd, COMPANY, eu, excluded_contacts=set(eu.deals))
        done.state_diff.extend(
            p for p in eu_problems if "Pipedrive deals" not in p and "nobody seeded" not in p
        )
        done.state_diff = [p for p in done.state_diff if "Pipedrive deals" not in p]
        total_deals = len(run.pd.records(COMPANY, "deals"))
        if total_deals != len(us.deals) + len(eu.deals):
            done.state_diff.append(f"{total_deals} deals, {len(us.deals) + len(eu.deals)} seeded")
        return done


IN_PROCESS = {
    "faults-10pct": scenario_faults,
    "pipedrive-faults-after-write": scenario_faults_after_write,
    "pipedrive-429-storm": scenario_storm,
    "budget-reset": scenario_budget,
    "zoho-token-revoked": scenario_revoked,
}


def _unused_marker() -> None:
    """Keeps the helpers below together."""


def temporary_workdir() -> contextlib.AbstractContextManager[str]:
    """A scratch directory for private servers and logs."""
    return tempfile.TemporaryDirectory(prefix="chaos-")


def to_json(results: list[Result]) -> str:
    """The results as JSON text."""
    return json.dumps([r.as_dict() for r in results], indent=2)


# The service as processes ------------------------------------------------------------------------


class ProcessStack:
    """gunicorn, a Celery worker and Beat on a private PostgreSQL and a private Redis, both
    simulators over HTTP on loopback (the approach of tests/e2e/test_runtime.py)."""

    def __init__(self, workdir: Path, *, extra_env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.redis = PrivateRedis(workdir)
        self.postgres = PrivatePostgres(workdir)
        self.extra_env = dict(extra_env or {})
        self.kills: Counter[str] = Counter()
        self.dataset = Dataset(zoho_org="")

    def __enter__(self) -> ProcessStack:
        self.redis.start()
        self.postgres.init()
        self.database_url = self.postgres.url
        self.clock = Clock()
        self.zoho = ZohoSimulator(clock=self.clock, webhook_async=True, rate_limits=False)
        self.zoho_server, self.zoho_url = serve_in_thread(self.zoho.app)
        self.zoho.base_url = self.zoho_url
        self.pd = PipedriveSimulator(clock=self.clock, webhook_retry_factor=0.05)
        self.pd_server, self.pd_url = self.pd.start_server()
        self.web_port = free_port()
        self.web_url = f"http://127.0.0.1:{self.web_port}"
        self.settings = make_settings(
            self.database_url,
            self.redis.url,
            PIPEDRIVE_API_URL=f"{self.pd_url}/c/{{company_domain}}",
            CONNECTOR_PUBLIC_URL=self.web_url,
        )
        self.context = AppContext(settings=self.settings)
        key = ",".join(k.reveal() for k in self.settings.secret_keys)
        self.env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis.url,
            "CONNECTOR_SECRET_KEY": key,
            "ZOHO_CLIENT_ID": CLIENT_ID,
            "ZOHO_CLIENT_SECRET": CLIENT_SECRET,
            "PIPEDRIVE_API_URL": f"{self.pd_url}/c/{{company_domain}}",
            "CONNECTOR_PUBLIC_URL": self.web_url,
            "CONNECTOR_LOG_FORMAT": "json",
            "CONNECTOR_DOTENV": str(self.workdir / "none.env"),
            "CONNECTOR_HTTP_TIMEOUT": "5",
            "CONNECTOR_RELEASE_PARKED_MINUTES": "0.1",
            **self.extra_env,
        }
        self.group = ProcessGroup(self.workdir, self.env)
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.group.stop_all()
        self.zoho_server.shutdown()
        self.pd_server.shutdown()
        self.pd.close()
        self.context.close()
        self.postgres.close()
        self.redis.close()

    def connect(self) -> None:
        upgrade(self.database_url)
        self.zoho.register_client(CLIENT_ID, CLIENT_SECRET)
        self.org = self.zoho.create_organization("us", "Books US", "professional")
        code = self.zoho.issue_grant_code(CLIENT_ID, "us")
        self.zoho_connection = connect_zoho(
            self.context,
            organization_id=self.org,
            grant_code=code,
            accounts_server=f"{self.zoho_url}/us/accounts",
            location="us",
            name="zoho-us",
        ).id
        self.pd.create_company(COMPANY, plan="growth")
        self.pd.set_limits(COMPANY, burst_limit=100_000, search_burst_limit=100_000)
        token = self.pd.create_api_token(COMPANY)
        pd = connect_pipedrive(
            self.context, api_token=token, company_domain=COMPANY, name="pipedrive"
        )
        self.pd_connection = pd.id
        field_registry(self.context, pd, build_pipedrive_client(self.context, pd)).ensure_fields(
            required_field_specs(load_config(None))
        )
        with self.context.session() as session:
            store = self.context.store(session)
            store.set_options(store.get(pd.id), burst_limit=100_000)
            self.zoho_secret = store.webhook_secret(store.get("zoho-us"))["secret"]
        self.zoho.configure_webhook(
            self.org,
            f"{self.web_url}/webhooks/zoho/zoho-us",
            secret=self.zoho_secret,
            events=("invoice", "contact", "customerpayment"),
        )

    def start(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        return self.group.start(name, list(argv))

    @property
    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        return self.group.processes

    def start_worker(self) -> None:
        self.start("worker", *worker_argv(f"chaos-{uuid.uuid4().hex[:6]}@%h"))

    def start_beat(self, name: str = "beat") -> None:
        self.start(name, *beat_argv(self.workdir / f"{name}-state"))

    def start_all(self) -> None:
        self.start("web", *web_argv(self.web_port))
        self.start_worker()
        self.start_beat()
        wait_for(
            "the receiver",
            lambda: requests.get(f"{self.web_url}/readyz", timeout=2).status_code == 200,
            tolerate=STARTING,
        )
        with self.context.session() as session:
            pd = self.context.store(session).get("pipedrive")
        register_webhooks(self.context, pd, self.web_url)

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        self.group.stop(name, sig)

    def kill_pool_children(self) -> int:
        """SIGKILL the worker's pool processes (the tasks they run die mid-way)."""
        worker = self.processes["worker"]
        children = subprocess.run(
            ["pgrep", "-P", str(worker.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(child), signal.SIGKILL)
        self.kills["pool process"] += len(children)
        return len(children)

    def backfill(self) -> None:
        with engine_session(self.context, trigger=Trigger.BACKFILL) as engine:
            progress = engine.backfill()
        assert not progress.stopped, progress
        assert not progress.failed, progress

    def live_changes(
        self, data: Dataset, rng: random.Random, between: Callable[[int], None] | None = None
    ) -> None:
        """New invoices, Zoho renames and Pipedrive renames, all through webhooks."""
        step = 0

        def tick() -> None:
            nonlocal step
            step += 1
            if between is not None:
                between(step)

        for contact_id in rng.sample(sorted(data.deals), k=max(1, len(data.deals) // 2)):
            add_invoice(self.zoho, self.org, contact_id, rng.randint(50, 900), "live")
            tick()
        renamed = rng.sample(data.contacts, k=max(1, len(data.contacts) // 4))
        for contact_id in renamed:
            name = self.zoho.get_record(self.org, "contacts", contact_id)["contact_name"]
            self.zoho.update_record(
                self.org, "contacts", contact_id, {"contact_name": f"{name} (Z)"}
            )
            tick()
        key = self.pd.custom_field_key(COMPANY, "organization", "Zoho Contact ID")
        others = [c for c in data.contacts if c not in renamed]
        for contact_id in rng.sample(others, k=max(1, len(others) // 4)):
            pd_org = next(
                o
                for o in self.pd.records(COMPANY, "organizations")
                if _custom(o, key) == contact_id
            )
            self.pd.app_update(
                COMPANY, "organizations", pd_org["id"], {"name": f"{pd_org['name']} (P)"}
            )
            tick()

    def converge(self, data: Dataset, timeout: float = 150.0) -> list[str]:
        """Wait until the final state is the expected one; the remaining diff if it never is."""
        deadline = time.monotonic() + timeout
        problems = state_problems(self.zoho, self.pd, COMPANY, data)
        while problems and time.monotonic() < deadline:
            time.sleep(1.0)
            problems = state_problems(self.zoho, self.pd, COMPANY, data)
        # Settled: no late echo or redelivery may undo it.
        time.sleep(3.0)
        return state_problems(self.zoho, self.pd, COMPANY, data)

    def in_flight(self) -> tuple[int, int, int]:
        """Backfill chunks running, webhook events running, and events not finished yet."""

        def count(model: Any, *where: Any) -> int:
            query = sa.select(sa.func.count()).select_from(model).where(*where)
            return int(session.scalar(query) or 0)

        with self.context.session() as session:
            return (
                count(BackfillChunk, BackfillChunk.status == "running"),
                count(WebhookEvent, WebhookEvent.status == "running"),
                count(WebhookEvent, WebhookEvent.status.not_in(("processed", "skipped"))),
            )

    def db_counts(self) -> tuple[int, int]:
        with self.context.session() as session:
            dead = session.scalar(sa.select(sa.func.count()).select_from(DeadLetter)) or 0
            parked = session.scalar(sa.select(sa.func.count()).select_from(ParkedJob)) or 0
        return int(dead), int(parked)

    def retries_logged(self) -> int:
        """Task retries and client retries the processes logged."""
        count = 0
        for log in self.workdir.glob("*.log"):
            text = log.read_text(errors="replace")
            count += text.count("Retry in") + text.count(".retry ")
        return count

    def zoho_post(self, payload: dict[str, Any]) -> int:
        """Deliver a signed Zoho webhook body ourselves (replays, reorders)."""
        body = json.dumps(payload).encode()
        answer = requests.post(
            f"{self.web_url}/webhooks/zoho/zoho-us",
            data=body,
            headers={
                "Content-Type": "application/json",
                "X-Zoho-Webhook-Signature": sign_zoho_webhook(
                    self.zoho_secret, params={}, raw_body=body
                ),
            },
            timeout=10,
        )
        return answer.status_code

    def finish(self, result: Result, data: Dataset, started: float) -> Result:
        result.state_diff = self.converge(data)
        zoho = sum(s.get("total", 0) for s in self.zoho.stats().values())
        result.requests = int(zoho) + int(self.pd.stats(COMPANY).get("requests", 0))
        result.faults_injected = {**dict(self.kills)}
        result.retries = self.retries_logged()
        result.dead_letters, result.parked = self.db_counts()
        result.seconds = time.monotonic() - started
        return result


def _process_scenario(
    name: str,
    description: str,
    workdir: Path,
    fault: Callable[[ProcessStack, int], None],
    *,
    customers: int = 10,
    seed: int = 21,
    extra_env: dict[str, str] | None = None,
    after: Callable[[ProcessStack, Result], None] | None = None,
) -> Result:
    result = Result(name, description)
    started = time.monotonic()
    rng = random.Random(seed)
    with ProcessStack(workdir, extra_env=extra_env) as stack:
        data = seed_dataset(
            stack.zoho, stack.pd, COMPANY, stack.org, customers=customers, seed=seed
        )
        stack.dataset = data
        stack.backfill()
        stack.start_all()
        stack.live_changes(data, rng, between=lambda step: fault(stack, step))
        if after is not None:
            after(stack, result)
        done = stack.finish(result, data, started)
        if done.state_diff:
            for log in sorted(workdir.glob("*.log")):
                tail = log.read_text(errors="replace").splitlines()[-8:]
                done.notes.append(f"--- {log.name}: " + " | ".join(t[:200] for t in tail))
        return done


def scenario_worker_kill(workdir: Path) -> Result:
    """The Celery worker's pool processes are SIGKILLed mid-task, again and again, while
    webhooks flow (late ack + reject on worker lost must redeliver, nothing done twice)."""

    def fault(stack: ProcessStack, step: int) -> None:
        if step % 3 == 0:
            time.sleep(0.6)
            stack.kill_pool_children()

    return _process_scenario("worker-sigkill", scenario_worker_kill.__doc__ or "", workdir, fault)


def _reconcile(stack: ProcessStack, result: Result) -> None:
    """Webhooks refused during an outage are Zoho's to retry; what its retries missed is the
    hourly reconciliation's. Wait for the queues to drain, then run one reconciliation (as Beat
    would within the hour) and one Pipedrive pull, and say how much they had to repair."""
    time.sleep(15)
    before = len(state_problems(stack.zoho, stack.pd, COMPANY, stack.dataset))
    repaired = service.reconcile_zoho(stack.context, stack.zoho_connection)
    pulled = service.pull_pipedrive(stack.context, stack.pd_connection)
    result.notes.append(
        f"differences before reconciliation: {before}; reconcile_zoho synced {repaired}, "
        f"pull_pipedrive saw {pulled}"
    )


def scenario_redis_restart(workdir: Path) -> Result:
    """The (private) Redis crashes and comes back mid-run: broker, limiter and locks vanish for
    a few seconds (AOF with fsync always, as the deployment guide should say)."""

    def fault(stack: ProcessStack, step: int) -> None:
        if step in (3, 9):
            stack.redis.restart(down_seconds=3)
            stack.kills["redis restart"] += 1

    return _process_scenario(
        "redis-restart", scenario_redis_restart.__doc__ or "", workdir, fault, after=_reconcile
    )


def scenario_postgres_restart(workdir: Path) -> Result:
    """The (private) PostgreSQL crashes (immediate stop) and comes back mid-run: pooled
    connections break, the receiver must refuse (5xx, so the sender retries) rather than lose."""

    def fault(stack: ProcessStack, step: int) -> None:
        if step in (3, 9):
            stack.postgres.restart(down_seconds=3)
            stack.kills["postgres restart"] += 1

    return _process_scenario(
        "postgres-restart",
        scenario_postgres_restart.__doc__ or "",
        workdir,
        fault,
        after=_reconcile,
    )


def scenario_beat_restart(workdir: Path) -> Result:
    """Two Beat processes run; the leader is SIGKILLed and a new one started, twice. The
    release-parked entry (every 6 s) must never be sent by two Beats in the same period."""

    def fault(stack: ProcessStack, step: int) -> None:
        if step == 1:
            stack.start_beat("beat2")
        if step == 3:
            stack.stop("beat", signal.SIGKILL)
            stack.kills["beat SIGKILL"] += 1
            time.sleep(1)
            stack.start_beat("beat")

    def after(stack: ProcessStack, result: Result) -> None:
        # Let a follower take over (lease 30 s), then kill whichever Beat leads now.
        time.sleep(38)
        holder = redis.Redis.from_url(stack.redis.url, decode_responses=True).get(
            "connector:beat:lock"
        )
        pid = int(str(holder).split(":")[1]) if holder else -1
        for name, process in list(stack.processes.items()):
            if name.startswith("beat") and process.pid == pid:
                stack.stop(name, signal.SIGKILL)
                stack.kills["beat SIGKILL"] += 1
                stack.start_beat(name)
        time.sleep(38)
        sends = []
        for log in stack.workdir.glob("beat*.log"):
            for line in log.read_text(errors="replace").splitlines():
                if "Sending due task release-parked" in line:
                    stamp = line.split("[", 1)[1].split("]", 1)[0].split(",")[0]
                    sends.append(dt.datetime.fromisoformat(stamp))
        sends.sort()
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(sends)]
        doubled = sum(1 for gap in gaps if gap < 3.0)
        result.notes.append(
            f"release-parked sent {len(sends)} times; min gap "
            f"{min(gaps) if gaps else 0:.1f} s; doubled {doubled}; longest gap "
            f"{max(gaps) if gaps else 0:.1f} s"
        )
        if doubled or len(sends) < 3:
            result.state_diff.append(f"beat schedule doubled {doubled} time(s), {len(sends)} sends")

    return _process_scenario(
        "beat-restart", scenario_beat_restart.__doc__ or "", workdir, fault, after=after
    )


def scenario_webhooks(workdir: Path) -> Result:
    """Zoho webhooks delivered twice, stale copies replayed after newer ones (reordered), and
    old deliveries replayed 5 s late (delayed): each change applied once, never rolled back."""
    stale: list[dict[str, Any]] = []

    def fault(stack: ProcessStack, step: int) -> None:
        log = list(stack.zoho.webhook_log)
        if not log:
            return
        latest = log[-1]
        entity = latest.event.split(".", 1)[0]
        record = stack.zoho.get_record(stack.org, f"{entity}s", latest.entity_id)
        payload = {entity: record}
        stale.append(payload)
        stack.zoho_post(payload)  # a duplicate of the delivery Zoho just made
        stack.kills["duplicate"] += 1
        if len(stale) > 2:
            stack.zoho_post(stale[-3])  # an older copy after newer ones
            stack.kills["reordered"] += 1

    def after(stack: ProcessStack, result: Result) -> None:
        time.sleep(5)
        for payload in stale:
            stack.zoho_post(payload)
            stack.kills["delayed"] += 1

    return _process_scenario(
        "webhooks-dup-reorder-delay", scenario_webhooks.__doc__ or "", workdir, fault, after=after
    )


# Short leases so the scenario sees the takeover within seconds (production: 90 s, 25 s, 30 s).
WHOLE_KILL_ENV = {
    "CONNECTOR_LEASE_SECONDS": "15",
    "CONNECTOR_HEARTBEAT_SECONDS": "4",
    "CONNECTOR_REAPER_SECONDS": "5",
}


def scenario_whole_worker_kill(
    workdir: Path, *, customers: int = 40, webhooks: int = 60, seed: int = 31
) -> Result:
    """A distributed backfill (``connector backfill --wait``) and 60 invoice webhooks in flight
    when the worker's whole process group is SIGKILLed (an out-of-memory kill, a dyno restart);
    a fresh worker is started. Leases run out, the reaper hands the dead worker's chunks and
    events to the fresh one: all done within 5 minutes, nothing lost or done twice."""
    result = Result("whole-worker-kill", scenario_whole_worker_kill.__doc__ or "")
    started = time.monotonic()
    rng = random.Random(seed)
    with ProcessStack(workdir, extra_env=WHOLE_KILL_ENV) as stack:
        data = seed_dataset(
            stack.zoho, stack.pd, COMPANY, stack.org, customers=customers, seed=seed
        )
        stack.dataset = data
        stack.start_all()
        waiter = stack.start(
            "backfill",
            str(BIN / "connector"),
            "backfill",
            "--wait",
            "--timeout",
            "300",
            "--chunk-size",
            "4",
        )
        for contact_id in rng.choices(sorted(data.deals), k=webhooks):
            add_invoice(stack.zoho, stack.org, contact_id, rng.randint(10, 900), "in flight")
        # Kill with a chunk running and a queue of events behind it.
        wait_for(
            "work in flight",
            lambda: stack.in_flight()[0] > 0 and stack.in_flight()[2] >= webhooks // 6,
            timeout=60,
            poll=0.05,
            tolerate=STARTING,
        )
        chunks, events, open_events = stack.in_flight()
        stack.stop("worker", signal.SIGKILL)
        killed = time.monotonic()
        stack.kills["worker process group SIGKILL"] += 1
        result.notes.append(
            f"at the kill: {chunks} chunk(s) and {events} event(s) running, "
            f"{open_events} event(s) not done"
        )
        time.sleep(2)
        stack.start_worker()
        try:
            code = waiter.wait(timeout=300)
        except subprocess.TimeoutExpired:
            code = None
            result.state_diff.append("connector backfill --wait did not end within 5 minutes")
        result.notes.append(
            f"backfill --wait exit {code}, {time.monotonic() - killed:.0f} s after the kill"
        )
        if code not in (0, None):
            result.state_diff.append(f"connector backfill --wait exited {code}")
        done = stack.finish(result, data, started)
        done.lost_tasks = stack.in_flight()[2]
        done.notes.append(f"all done {time.monotonic() - killed:.0f} s after the kill")
        taken_over = sum(
            log.read_text(errors="replace").count("lease.expired") for log in workdir.glob("*.log")
        )
        done.notes.append(f"leases taken over by the reaper: {taken_over}")
        if done.state_diff or done.lost_tasks:
            for log in sorted(workdir.glob("*.log")):
                tail = log.read_text(errors="replace").splitlines()[-8:]
                done.notes.append(f"--- {log.name}: " + " | ".join(t[:200] for t in tail))
        return done


PROCESSES = {
    "worker-sigkill": scenario_worker_kill,
    "whole-worker-kill": scenario_whole_worker_kill,
    "redis-restart": scenario_redis_restart,
    "postgres-restart": scenario_postgres_restart,
    "beat-restart": scenario_beat_restart,
    "webhooks-dup-reorder-delay": scenario_webhooks,
}
