"""A whole connector wired to both simulators in-process: one Zoho organization per data center
asked for, one Pipedrive company, a real AppContext (database + real Redis), fields set up.

Used by the sync, receiver and end-to-end tests.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import responses

from connector.context import AppContext
from connector.crypto import generate_key
from connector.db import upgrade
from connector.mapping.config import load_config
from connector.models import Connection
from connector.pipedrive.service import build_pipedrive_client, connect_pipedrive, field_registry
from connector.sandbox.common import Clock
from connector.sandbox.pipedrive import PipedriveSimulator
from connector.sandbox.zoho import ZohoSimulator
from connector.settings import Settings
from connector.sync.setup import required_field_specs
from connector.zoho.service import connect_zoho
from tests.specs import ResponseAudit

CLIENT_ID = "1000.TESTCLIENT"
CLIENT_SECRET = "test-client-secret-value"
COMPANY = "acme"


@dataclasses.dataclass
class World:
    """Everything a test needs to drive and inspect a sync."""

    context: AppContext
    zoho: ZohoSimulator
    pipedrive: PipedriveSimulator
    zoho_orgs: dict[str, str]  # data center -> organization_id
    zoho_connections: dict[str, int]  # data center -> connection id
    pipedrive_connection: int
    pipedrive_token: str
    clock: Clock

    def pd_records(self, entity: str) -> list[dict[str, Any]]:
        """Every live Pipedrive record of an entity type."""
        return list(self.pipedrive.records(COMPANY, entity))

    def pd_key(self, entity: str, name: str) -> str:
        """The 40-character key of a Pipedrive custom field."""
        return self.pipedrive.custom_field_key(COMPANY, entity, name)

    def pd_writes(self) -> int:
        """Successful Pipedrive writes so far."""
        return self.pipedrive.write_count(COMPANY)

    def connection(self, name_or_id: str | int) -> Connection:
        """A stored connection."""
        with self.context.session() as session:
            return self.context.store(session).get(name_or_id)


def make_settings(database_url: str, redis_url: str, **extra: str) -> Settings:
    """Settings for a test context."""
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CONNECTOR_SECRET_KEY": generate_key(),
        "ZOHO_CLIENT_ID": CLIENT_ID,
        "ZOHO_CLIENT_SECRET": CLIENT_SECRET,
        "CONNECTOR_PUBLIC_URL": "https://connector.example.com",
    }
    env.update(extra)
    return Settings.from_env(env, dotenv_path=None)


@contextmanager
def world(
    database_url: str,
    redis_url: str,
    *,
    data_centers: tuple[str, ...] = ("us",),
    plan: str = "growth",
    fast: bool = True,
    settings_extra: dict[str, str] | None = None,
    audit: ResponseAudit | None = None,
) -> Iterator[World]:
    """Connect simulated Zoho organizations and a Pipedrive company, with fields set up.

    ``fast`` lifts the rate limits on both sides so bulk tests run in seconds; tests of the
    limits themselves turn it off. ``audit`` checks every simulator answer against the specs.
    """
    clock = Clock(dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC))
    # An audit needs the strict check (it validates the answers to checked requests); otherwise
    # the simulators follow CONNECTOR_SANDBOX_STRICT (on by default).
    strict = True if audit is not None else None
    zoho_sim = ZohoSimulator(real_hosts=True, clock=clock, rate_limits=not fast, strict=strict)
    pd_sim = PipedriveSimulator(
        real_hosts=True, clock=clock, webhook_deliver=lambda request: 200, strict=strict
    )
    if audit is not None:
        audit.watch(zoho_sim)
        audit.watch(pd_sim)
    settings = make_settings(database_url, redis_url, **(settings_extra or {}))
    context = AppContext(settings=settings)
    upgrade(settings.database_url)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        zoho_sim.mount(rsps)
        pd_sim.mount(rsps)
        zoho_sim.register_client(CLIENT_ID, CLIENT_SECRET)
        orgs: dict[str, str] = {}
        connections: dict[str, int] = {}
        for dc in data_centers:
            org_id = zoho_sim.create_organization(dc, f"Books {dc.upper()}", "professional")
            orgs[dc] = org_id
            code = zoho_sim.issue_grant_code(CLIENT_ID, dc)
            connection = connect_zoho(
                context, organization_id=org_id, grant_code=code, location=dc, name=f"zoho-{dc}"
            )
            connections[dc] = connection.id
            if fast:
                with context.session() as session:
                    context.store(session).set_options(
                        context.store(session).get(connection.id), per_minute=1_000_000
                    )
        pd_sim.create_company(COMPANY, plan=plan)
        token = pd_sim.create_api_token(COMPANY)
        if fast:
            pd_sim.set_limits(COMPANY, burst_limit=100_000, search_burst_limit=100_000)
        pd_connection = connect_pipedrive(
            context, api_token=token, company_domain=COMPANY, plan=plan, name="pipedrive"
        )
        if fast:
            with context.session() as session:
                store = context.store(session)
                store.set_options(store.get(pd_connection.id), burst_limit=100_000)
        with context.session() as session:
            pd = context.store(session).get(pd_connection.id)
        client = build_pipedrive_client(context, pd)
        field_registry(context, pd, client).ensure_fields(
            required_field_specs(load_config(settings.config_path or None))
        )
        yield World(
            context=context,
            zoho=zoho_sim,
            pipedrive=pd_sim,
            zoho_orgs=orgs,
            zoho_connections=connections,
            pipedrive_connection=pd_connection.id,
            pipedrive_token=token,
            clock=clock,
        )
    context.close()


@contextmanager
def routed_world(tmp_path: Path, redis_url: str, audit: ResponseAudit) -> Iterator[World]:
    """A US and an EU Zoho organization routed by country (Germany -> EU, United States -> US),
    on SQLite, with every simulator answer audited against the specs."""
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(
        '[routing]\nrules = { "Germany" = "zoho-eu", "United States" = "zoho-us" }\n'
    )
    with world(
        f"sqlite:///{tmp_path / 'c.db'}",
        redis_url,
        data_centers=("us", "eu"),
        settings_extra={"CONNECTOR_CONFIG": str(mapping)},
        audit=audit,
    ) as built:
        yield built


def contact(
    name: str, *, persons: int = 1, email_domain: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A Zoho contact create body with contact persons."""
    domain = email_domain or name.lower().replace(" ", "") + ".example.com"
    body: dict[str, Any] = {
        "contact_name": name,
        "company_name": name,
        "contact_type": "customer",
        "customer_sub_type": "business",
        "billing_address": {
            "address": "1 Main St",
            "city": "Springfield",
            "zip": "12345",
            "country": "U.S.A",
        },
        "contact_persons": [
            {
                "first_name": f"First{i}",
                "last_name": name.split()[0],
                "email": f"person{i}@{domain}",
                "phone": f"+1-555-{i:04d}",
                "is_primary_contact": i == 0,
            }
            for i in range(persons)
        ],
    }
    body.update(extra)
    return body


def invoice(
    customer_id: str, amount: float, *, number_hint: str = "", **extra: Any
) -> dict[str, Any]:
    """A Zoho invoice create body (sent, one line item)."""
    body: dict[str, Any] = {
        "customer_id": customer_id,
        "date": "2026-03-01",
        "due_date": "2026-03-31",
        "status": "sent",
        "line_items": [{"name": f"Service {number_hint}", "rate": amount, "quantity": 1}],
    }
    body.update(extra)
    return body
