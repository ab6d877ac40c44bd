"""The running service, end to end: real gunicorn, a real Celery worker and Beat, PostgreSQL and
Redis, both simulators as HTTP servers on loopback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import sqlalchemy as sa

from connector.context import AppContext
from connector.db import upgrade
from connector.mapping.config import load_config
from connector.models import AuditEntry, WebhookEvent
from connector.pipedrive.service import (
    build_pipedrive_client,
    connect_pipedrive,
    field_registry,
    register_webhooks,
)
from connector.sandbox.common import Clock, serve_in_thread
from connector.sandbox.pipedrive import PipedriveSimulator
from connector.sandbox.zoho import ZohoSimulator
from connector.sync.setup import required_field_specs
from connector.zoho.service import connect_zoho
from connector.zoho.webhooks import sign_zoho_webhook
from tests.conftest import POSTGRES_URL
from tests.harness import CLIENT_ID, CLIENT_SECRET, contact, make_settings

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
REDIS_DB_URL = "redis://127.0.0.1:6379/12"
COMPANY = "e2e"


def _wait(what: str, check: Callable[[], bool], timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (requests.RequestException, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Stack:
    """The processes and simulators of one end-to-end run."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.schema = f"e2e_{uuid.uuid4().hex[:10]}"
        self.admin = sa.create_engine(POSTGRES_URL)
        with self.admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{self.schema}"'))
        self.database_url = f"{POSTGRES_URL}?options=-csearch_path%3D{self.schema}"
        redis.Redis.from_url(REDIS_DB_URL).flushdb()
        self.clock = Clock()
        self.zoho = ZohoSimulator(clock=self.clock, webhook_async=True, rate_limits=False)
        self.zoho_server, self.zoho_url = serve_in_thread(self.zoho.app)
        self.zoho.base_url = self.zoho_url
        self.pd = PipedriveSimulator(clock=self.clock)
        self.pd_server, self.pd_url = self.pd.start_server()
        self.web_port = _free_port()
        self.web_url = f"http://127.0.0.1:{self.web_port}"
        self.settings = make_settings(
            self.database_url,
            REDIS_DB_URL,
            PIPEDRIVE_API_URL=f"{self.pd_url}/c/{{company_domain}}",
            CONNECTOR_PUBLIC_URL=self.web_url,
        )
        self.context = AppContext(settings=self.settings)
        key = ",".join(k.reveal() for k in self.settings.secret_keys)
        self.env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": REDIS_DB_URL,
            "CONNECTOR_SECRET_KEY": key,
            "ZOHO_CLIENT_ID": CLIENT_ID,
            "ZOHO_CLIENT_SECRET": CLIENT_SECRET,
            "PIPEDRIVE_API_URL": f"{self.pd_url}/c/{{company_domain}}",
            "CONNECTOR_PUBLIC_URL": self.web_url,
            "CONNECTOR_LOG_FORMAT": "json",
            "CONNECTOR_DOTENV": str(tmp / "none.env"),
        }

    def connect(self) -> None:
        upgrade(self.database_url)
        self.zoho.register_client(CLIENT_ID, CLIENT_SECRET)
        self.org = self.zoho.create_organization(
            "eu", "Books EU", "professional", currency_code="EUR"
        )
        code = self.zoho.issue_grant_code(CLIENT_ID, "eu")
        self.zoho_connection = connect_zoho(
            self.context,
            organization_id=self.org,
            grant_code=code,
            accounts_server=f"{self.zoho_url}/eu/accounts",
            location="eu",
            name="zoho-eu",
        )
        self.pd.create_company(COMPANY, plan="growth")
        token = self.pd.create_api_token(COMPANY)
        pd = connect_pipedrive(
            self.context, api_token=token, company_domain=COMPANY, name="pipedrive"
        )
        field_registry(self.context, pd, build_pipedrive_client(self.context, pd)).ensure_fields(
            required_field_specs(load_config(None))
        )
        with self.context.session() as session:
            store = self.context.store(session)
            self.zoho_secret = store.webhook_secret(store.get("zoho-eu"))["secret"]
        self.zoho.configure_webhook(
            self.org,
            f"{self.web_url}/webhooks/zoho/zoho-eu",
            secret=self.zoho_secret,
            events=("invoice", "contact", "customerpayment"),
        )

    def start(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("ab")
        process = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def start_worker(self) -> subprocess.Popen[bytes]:
        return self.start(
            "worker",
            str(BIN / "celery"),
            "-A",
            "workers.celery_app",
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            "2",
            "-Q",
            "webhooks,sync,pulls,maintenance",
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            f"e2e-{uuid.uuid4().hex[:6]}@%h",
        )

    def start_all(self) -> None:
        self.start(
            "web",
            str(BIN / "gunicorn"),
            "--bind",
            f"127.0.0.1:{self.web_port}",
            "--workers",
            "2",
            "web:create_app()",
        )
        self.start_worker()
        self.start(
            "beat",
            str(BIN / "celery"),
            "-A",
            "workers.celery_app",
            "beat",
            "--loglevel",
            "INFO",
            "--scheduler",
            "workers.beat:LockedScheduler",
            "--schedule",
            str(self.tmp / "beat-state"),
        )
        _wait(
            "the receiver",
            lambda: requests.get(f"{self.web_url}/readyz", timeout=2).status_code == 200,
        )
        with self.context.session() as session:
            pd = self.context.store(session).get("pipedrive")
        register_webhooks(self.context, pd, self.web_url)

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def close(self) -> None:
        for name in list(self.processes):
            self.stop(name)
        self.zoho_server.shutdown()
        self.pd_server.shutdown()
        self.pd.close()
        self.context.close()
        with self.admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{self.schema}" CASCADE'))
        self.admin.dispose()

    # Reading state -----------------------------------------------------------------------

    def audit(self) -> list[AuditEntry]:
        with self.context.session() as session:
            return list(session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)))

    def events(self) -> list[WebhookEvent]:
        with self.context.session() as session:
            return list(session.scalars(sa.select(WebhookEvent).order_by(WebhookEvent.id)))

    def pd_records(self, entity: str) -> list[dict[str, Any]]:
        return list(self.pd.records(COMPANY, entity))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    built = Stack(tmp_path_factory.mktemp("e2e"))
    try:
        built.connect()
        built.start_all()
        yield built
    finally:
        for delivery in list(built.zoho.webhook_log)[-10:]:
            sys.stderr.write(
                f"zoho webhook {delivery.event} {delivery.entity_id} -> {delivery.status} {delivery.error}\n"
            )
        for event in built.events()[-10:]:
            sys.stderr.write(
                f"event {event.source} {event.entity} {event.entity_id} {event.status} {event.error[:120]}\n"
            )
        for row in built.audit()[-10:]:
            sys.stderr.write(
                f"audit {row.entity} {row.action} {row.outcome} {row.reason[:100]} {row.error[:100]}\n"
            )
        built.close()
        for log in sorted(built.tmp.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-15:]
            sys.stderr.write(f"--- {log.name}\n" + "\n".join(tail) + "\n")


@pytest.fixture(scope="module")
def customer(stack: Stack) -> dict[str, Any]:
    """A Zoho customer synced through its webhook, with an open deal in Pipedrive."""
    created = stack.zoho.create_record(stack.org, "contacts", contact("Nordwind GmbH", persons=1))
    contact_id = str(created["contact_id"])
    _wait(
        "the organization in Pipedrive",
        lambda: any(o["name"] == "Nordwind GmbH" for o in stack.pd_records("organizations")),
    )
    org = next(o for o in stack.pd_records("organizations") if o["name"] == "Nordwind GmbH")
    (deal,) = stack.pd.seed(
        COMPANY,
        "deals",
        [{"title": "Nordwind renewal", "org_id": org["id"], "status": "open", "currency": "EUR"}],
    )
    return {"contact_id": contact_id, "org": org, "deal": deal}


def test_zoho_invoice_webhook_sets_the_deal_fields(stack: Stack, customer: dict[str, Any]) -> None:
    stack.zoho.create_record(
        stack.org,
        "invoices",
        {
            "customer_id": customer["contact_id"],
            "date": "2026-03-01",
            "due_date": "2026-03-31",
            "status": "sent",
            "line_items": [{"name": "Licence", "rate": 1234.5, "quantity": 2}],
        },
    )
    key = stack.pd.custom_field_key(COMPANY, "deal", "Zoho Invoice Total")
    _wait(
        "the deal's invoice total",
        lambda: (
            (
                stack.pd.get_record(COMPANY, "deals", customer["deal"])["custom_fields"].get(key)
                or {}
            ).get("value")
            == 2469
        ),
    )
    assert (
        stack.pd.get_record(COMPANY, "deals", customer["deal"])["custom_fields"][key]["currency"]
        == "EUR"
    )


def test_pipedrive_organization_change_reaches_zoho(stack: Stack, customer: dict[str, Any]) -> None:
    stack.pd.app_update(
        COMPANY, "organizations", customer["org"]["id"], {"name": "Nordwind Holding GmbH"}
    )
    _wait(
        "the rename in Zoho",
        lambda: (
            stack.zoho.get_record(stack.org, "contacts", customer["contact_id"])["contact_name"]
            == "Nordwind Holding GmbH"
        ),
    )
    # The echo of our own write (Zoho's webhook, Pipedrive's webhook) does not come back.
    time.sleep(3)
    org = stack.pd.get_record(COMPANY, "organizations", customer["org"]["id"])
    assert org["name"] == "Nordwind Holding GmbH"


def test_forged_webhook_is_401_and_changes_nothing(stack: Stack) -> None:
    before = (len(stack.events()), len(stack.audit()))
    body = json.dumps(
        {"invoice": {"invoice_id": "999", "last_modified_time": "2026-03-02T10:00:00+0000"}}
    ).encode()
    for signature in (
        "",
        "0" * 64,
        sign_zoho_webhook("someothersecret12", params={}, raw_body=body),
    ):
        answer = requests.post(
            f"{stack.web_url}/webhooks/zoho/zoho-eu",
            data=body,
            headers={"Content-Type": "application/json", "X-Zoho-Webhook-Signature": signature},
            timeout=10,
        )
        assert answer.status_code == 401
    answer = requests.post(
        f"{stack.web_url}/webhooks/pipedrive/pipedrive",
        json={"meta": {}},
        auth=("x", "y"),
        timeout=10,
    )
    assert answer.status_code == 401
    assert (len(stack.events()), len(stack.audit())) == before


def test_duplicate_delivery_is_processed_once(stack: Stack, customer: dict[str, Any]) -> None:
    invoice = stack.zoho.create_record(
        stack.org,
        "invoices",
        {
            "customer_id": customer["contact_id"],
            "date": "2026-03-05",
            "due_date": "2026-04-05",
            "status": "sent",
            "line_items": [{"name": "Extra", "rate": 10, "quantity": 1}],
        },
    )
    invoice_id = str(invoice["invoice_id"])
    _wait(
        "the first delivery to be processed",
        lambda: any(
            e.entity_id == invoice_id and e.status in {"processed", "skipped"}
            for e in stack.events()
        ),
    )
    body = json.dumps(
        {"invoice": stack.zoho.get_record(stack.org, "invoices", invoice_id)}
    ).encode()
    signature = sign_zoho_webhook(stack.zoho_secret, params={}, raw_body=body)
    for _ in range(2):
        answer = requests.post(
            f"{stack.web_url}/webhooks/zoho/zoho-eu",
            data=body,
            headers={"Content-Type": "application/json", "X-Zoho-Webhook-Signature": signature},
            timeout=10,
        )
        assert answer.status_code in {200, 202}
    time.sleep(2)
    rows = [a for a in stack.audit() if a.zoho_id == invoice_id and a.entity == "deal"]
    work = [a for a in rows if not a.reason.startswith("duplicate delivery")]
    # The simulator's own delivery and our two replays: one stored event, one piece of work.
    assert len([e for e in stack.events() if e.entity_id == invoice_id]) <= 2
    assert sum(1 for a in work if a.outcome == "ok") == 1


def test_worker_killed_mid_task_loses_nothing(stack: Stack, customer: dict[str, Any]) -> None:
    key = stack.pd.custom_field_key(COMPANY, "deal", "Zoho Invoice Total")
    before = stack.pd.get_record(COMPANY, "deals", customer["deal"])["custom_fields"][key]["value"]
    stack.zoho.pause_requests()
    try:
        stack.zoho.create_record(
            stack.org,
            "invoices",
            {
                "customer_id": customer["contact_id"],
                "date": "2026-03-06",
                "due_date": "2026-04-06",
                "status": "sent",
                "line_items": [{"name": "Kill test", "rate": 100, "quantity": 1}],
            },
        )
        worker = stack.processes["worker"]
        # Wait until a pool child is busy inside the (paused) Zoho call, then kill that child.
        _wait("a task in flight", lambda: stack.zoho.in_flight(stack.org) > 0, timeout=30)
        children = subprocess.run(
            ["pgrep", "-P", str(worker.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert children, "the worker has no pool processes"
        for child in children:
            os.kill(int(child), signal.SIGKILL)
    finally:
        stack.zoho.resume_requests()
    _wait(
        "the task to run again and apply",
        lambda: (
            stack.pd.get_record(COMPANY, "deals", customer["deal"])["custom_fields"][key]["value"]
            == before + 100
        ),
        timeout=60,
    )
    time.sleep(2)
    assert (
        stack.pd.get_record(COMPANY, "deals", customer["deal"])["custom_fields"][key]["value"]
        == before + 100
    )


def test_no_secret_in_logs_database_or_redis(stack: Stack, customer: dict[str, Any]) -> None:
    """After the whole run: every secret used appears nowhere in clear text."""
    with stack.context.session() as session:
        store = stack.context.store(session)
        zoho, pd = store.get("zoho-eu"), store.get("pipedrive")
        secrets = {
            "zoho refresh token": store.credentials(zoho)["refresh_token"],
            "pipedrive api token": store.credentials(pd)["api_token"],
            "zoho webhook secret": store.webhook_secret(zoho)["secret"],
            "pipedrive webhook password": store.webhook_secret(pd)["password"],
            "zoho client secret": CLIENT_SECRET,
        }
    for index, key in enumerate(stack.settings.secret_keys):
        secrets[f"encryption key {index}"] = key.reveal()
    # Every access token the simulated Zoho accounts server issued during the run.
    for number, token in enumerate(stack.zoho.accounts.issued_access_tokens()):
        secrets[f"zoho access token {number}"] = token

    haystacks: dict[str, str] = {}
    for log in stack.tmp.glob("*.log"):
        haystacks[f"log {log.name}"] = log.read_text(errors="replace")
    engine = sa.create_engine(stack.database_url)
    with engine.connect() as conn:
        for name in sa.inspect(engine).get_table_names():
            table = sa.Table(name, sa.MetaData(), autoload_with=engine)
            haystacks[f"table {name}"] = "\n".join(
                repr(tuple(r)) for r in conn.execute(sa.select(table))
            )
    engine.dispose()
    client = redis.Redis.from_url(REDIS_DB_URL)
    values = []
    for key in client.scan_iter(count=500):
        kind = client.type(key)
        if kind == b"string":
            values.append(repr(client.get(key)))
        elif kind == b"hash":
            values.append(repr(client.hgetall(key)))
        elif kind == b"list":
            values.append(repr(client.lrange(key, 0, -1)))
        elif kind == b"zset":
            values.append(repr(client.zrange(key, 0, -1)))
        values.append(repr(key))
    haystacks["redis"] = "\n".join(values)

    assert len(secrets) >= 7
    assert sum(len(h) for h in haystacks.values()) > 10_000, (
        "the scan must have real material to read"
    )
    leaks = [
        f"{secret_name} found in {place}"
        for secret_name, value in secrets.items()
        for place, text in haystacks.items()
        if value and value in text
    ]
    assert not leaks, leaks
