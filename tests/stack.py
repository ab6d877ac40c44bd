"""The whole service on loopback, for end-to-end tests and benchmarks alike.

Both simulators are served as threads of the calling process; the database is a fresh PostgreSQL
schema, Redis a database the caller owns (flushed); gunicorn, Celery workers and Beat are real
processes started on demand.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

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
from connector.sandbox.processes import (
    ALL_QUEUES,
    ProcessGroup,
    beat_argv,
    free_port,
    wait_for,
    web_argv,
    worker_argv,
)
from connector.sandbox.zoho import ZohoSimulator
from connector.sync.setup import required_field_specs
from connector.zoho.service import connect_zoho
from tests.harness import CLIENT_ID, CLIENT_SECRET, make_settings

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "BENCH_DATABASE_URL",
    os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"),
)


class ServiceStack:
    """Simulators, database, Redis and the service's processes for one benchmark run.

    Args:
        tmp: where process logs go.
        redis_url: a Redis database this run owns (it is flushed).
        zoho_rate_limits: enforce Zoho's limits at the simulator.
        zoho_per_minute: the simulator's per-minute limit (and the connection's by default).
        connection_per_minute: the connection's ``per_minute`` when it differs (a margin).
        zoho_daily_limit: the connection's ``daily_limit`` (default: its plan's, 5,000 for
            Professional).
        pd_burst: override the Pipedrive company's burst limit (``None``: the plan's).
        pd_daily_budget: override the company's daily token budget.
        webhooks: deliver Zoho webhooks (asynchronously) to the receiver.
        company: the Pipedrive company domain.
        log_level: log level of the service's processes.
    """

    def __init__(
        self,
        tmp: Path,
        *,
        redis_url: str,
        zoho_rate_limits: bool = True,
        zoho_per_minute: int = 100,
        pd_burst: int | None = None,
        pd_daily_budget: int | None = None,
        webhooks: bool = False,
        request_log_limit: int = 1_000_000,
        connection_per_minute: int | None = None,
        zoho_daily_limit: int | None = None,
        company: str = "bench",
        log_level: str = "WARNING",
    ) -> None:
        self.tmp = tmp
        self.company = company
        self.log_level = log_level
        self.redis_url = redis_url
        self.zoho_per_minute = zoho_per_minute
        self.connection_per_minute = connection_per_minute or zoho_per_minute
        self.zoho_daily_limit = zoho_daily_limit
        self.pd_burst = pd_burst
        self.pd_daily_budget = pd_daily_budget
        self.schema = f"bench_{uuid.uuid4().hex[:10]}"
        self.admin = sa.create_engine(POSTGRES_URL)
        with self.admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{self.schema}"'))
        self.database_url = f"{POSTGRES_URL}?options=-csearch_path%3D{self.schema}"
        redis.Redis.from_url(redis_url).flushdb()
        self.clock = Clock()
        self.zoho = ZohoSimulator(
            clock=self.clock,
            webhook_async=webhooks,
            rate_limits=zoho_rate_limits,
            per_minute_limit=zoho_per_minute,
            request_log_limit=request_log_limit,
            # Volume, not the plan's daily cap, is what these runs measure.
            daily_limits={"professional": 10_000_000},
        )
        self.zoho_server, self.zoho_url = serve_in_thread(self.zoho.app)
        self.zoho.base_url = self.zoho_url
        self.pd = PipedriveSimulator(clock=self.clock)
        self.pd_server, self.pd_url = self.pd.start_server()
        self.web_port = free_port()
        self.web_url = f"http://127.0.0.1:{self.web_port}"
        self.settings = make_settings(
            self.database_url,
            redis_url,
            PIPEDRIVE_API_URL=f"{self.pd_url}/c/{{company_domain}}",
            CONNECTOR_PUBLIC_URL=self.web_url,
        )
        self.context = AppContext(settings=self.settings)
        key = ",".join(k.reveal() for k in self.settings.secret_keys)
        self.env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": redis_url,
            "CONNECTOR_SECRET_KEY": key,
            "ZOHO_CLIENT_ID": CLIENT_ID,
            "ZOHO_CLIENT_SECRET": CLIENT_SECRET,
            "PIPEDRIVE_API_URL": f"{self.pd_url}/c/{{company_domain}}",
            "CONNECTOR_PUBLIC_URL": self.web_url,
            "CONNECTOR_LOG_FORMAT": "json",
            "CONNECTOR_LOG_LEVEL": log_level,
            "CONNECTOR_DOTENV": str(tmp / "none.env"),
            "PYTHONPATH": str(ROOT),
        }
        self.group = ProcessGroup(tmp, self.env)

    def connect(self) -> None:
        """Connect one Zoho organization and the Pipedrive company, set up the fields."""
        upgrade(self.database_url)
        self.zoho.register_client(CLIENT_ID, CLIENT_SECRET)
        self.org = self.zoho.create_organization(
            "eu", "Books EU", "professional", currency_code="EUR"
        )
        code = self.zoho.issue_grant_code(CLIENT_ID, "eu")
        zoho = connect_zoho(
            self.context,
            organization_id=self.org,
            grant_code=code,
            accounts_server=f"{self.zoho_url}/eu/accounts",
            location="eu",
            name="zoho-eu",
        )
        self.pd.create_company(self.company, plan="growth")
        if self.pd_burst is not None or self.pd_daily_budget is not None:
            self.pd.set_limits(
                self.company,
                burst_limit=self.pd_burst,
                search_burst_limit=self.pd_burst,
                daily_budget=self.pd_daily_budget,
            )
        token = self.pd.create_api_token(self.company)
        pd = connect_pipedrive(
            self.context,
            api_token=token,
            company_domain=self.company,
            plan="growth",
            name="pipedrive",
        )
        with self.context.session() as session:
            store = self.context.store(session)
            zoho_options: dict[str, Any] = {"per_minute": self.connection_per_minute}
            if self.zoho_daily_limit is not None:
                zoho_options["daily_limit"] = self.zoho_daily_limit
            store.set_options(store.get(zoho.id), **zoho_options)
            options: dict[str, Any] = {}
            if self.pd_burst is not None:
                options["burst_limit"] = self.pd_burst
            if self.pd_daily_budget is not None:
                options["daily_budget"] = self.pd_daily_budget
            if options:
                store.set_options(store.get(pd.id), **options)
            pd = store.get(pd.id)
        field_registry(self.context, pd, build_pipedrive_client(self.context, pd)).ensure_fields(
            required_field_specs(load_config(None))
        )
        with self.context.session() as session:
            store = self.context.store(session)
            self.zoho_secret = str(store.webhook_secret(store.get("zoho-eu"))["secret"])

    def configure_zoho_webhooks(self) -> None:
        """Point the Zoho organization's webhooks at the receiver."""
        self.zoho.configure_webhook(
            self.org,
            f"{self.web_url}/webhooks/zoho/zoho-eu",
            secret=self.zoho_secret,
            events=("invoice", "contact", "customerpayment"),
        )

    def register_pipedrive_webhooks(self) -> None:
        """Register Pipedrive's webhooks at the receiver (as ``connector webhooks`` does)."""
        with self.context.session() as session:
            pd = self.context.store(session).get("pipedrive")
        register_webhooks(self.context, pd, self.web_url)

    # Processes ---------------------------------------------------------------------------

    def start(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        """Start a process of the service; its output goes to ``tmp/<name>.log``."""
        return self.group.start(name, list(argv))

    @property
    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        """The running processes by name."""
        return self.group.processes

    def start_worker(
        self, name: str = "worker", *, concurrency: int = 4, queues: str = ALL_QUEUES
    ) -> subprocess.Popen[bytes]:
        """A Celery worker with ``concurrency`` prefork processes."""
        hostname = f"{self.company}-{name}-{uuid.uuid4().hex[:6]}@%h"
        argv = worker_argv(
            hostname, concurrency=concurrency, queues=queues, loglevel=self.log_level
        )
        return self.start(name, *argv)

    def start_web(self, workers: int = 2) -> subprocess.Popen[bytes]:
        """gunicorn serving the receiver; waits until it answers /readyz."""
        process = self.start("web", *web_argv(self.web_port, workers=workers))
        wait_for(
            "the receiver",
            lambda: requests.get(f"{self.web_url}/readyz", timeout=2).status_code == 200,
        )
        return process

    def start_beat(self) -> subprocess.Popen[bytes]:
        """Celery Beat with the leased scheduler."""
        return self.start("beat", *beat_argv(self.tmp / "beat-state", loglevel=self.log_level))

    def stop(self, name: str) -> None:
        """Stop one process group (SIGTERM, then SIGKILL)."""
        self.group.stop(name)

    def log_tail(self, name: str, lines: int = 20) -> str:
        """The end of a process's log."""
        return self.group.log_tail(name, lines)

    # Reading state ---------------------------------------------------------------------------

    def audit(self) -> list[AuditEntry]:
        """Every audit row, oldest first."""
        with self.context.session() as session:
            return list(session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)))

    def events(self) -> list[WebhookEvent]:
        """Every stored webhook event, oldest first."""
        with self.context.session() as session:
            return list(session.scalars(sa.select(WebhookEvent).order_by(WebhookEvent.id)))

    def pd_records(self, entity: str) -> list[dict[str, Any]]:
        """Every live record of a Pipedrive entity type."""
        return list(self.pd.records(self.company, entity))

    def close(self) -> None:
        """Stop everything and drop the schema."""
        self.group.stop_all()
        self.zoho_server.shutdown()
        self.pd_server.shutdown()
        self.pd.close()
        self.context.close()
        with self.admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{self.schema}" CASCADE'))
        self.admin.dispose()
