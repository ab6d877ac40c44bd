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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import sqlalchemy as sa

from connector.zoho.webhooks import sign_zoho_webhook
from tests.harness import CLIENT_SECRET, contact
from tests.stack import ServiceStack

pytestmark = pytest.mark.slow

REDIS_DB_URL = os.environ.get("TEST_E2E_REDIS_URL", "redis://127.0.0.1:6379/12")
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


class Stack(ServiceStack):
    """The shared stack with Zoho's limits lifted, webhooks on, and readable process logs."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(
            tmp,
            redis_url=REDIS_DB_URL,
            zoho_rate_limits=False,
            webhooks=True,
            company=COMPANY,
            log_level="INFO",
        )

    def connect(self) -> None:
        super().connect()
        self.configure_zoho_webhooks()

    def start_all(self) -> None:
        self.start_web()
        self.start_worker(concurrency=2)
        self.start_beat()
        self.register_pipedrive_webhooks()


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
