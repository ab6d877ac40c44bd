"""``make demo``: the whole service on the local simulators, start to finish, in one command.

Starts the Zoho Books simulator (three organizations: US, EU and India) and the Pipedrive
simulator on loopback, the webhook receiver (gunicorn), a Celery worker and Celery Beat on the
local Redis, with SQLite. Connects the accounts with the same commands a user runs, backfills,
then changes records on both sides so their webhooks flow through the receiver, prints what
happened, and stops everything it started.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from connector.crypto import generate_key
from connector.sandbox.processes import (
    BIN,
    ProcessGroup,
    beat_argv,
    free_port,
    wait_for,
    web_argv,
    worker_argv,
)

ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID = "1000.DEMOCLIENT"
CLIENT_SECRET = "demo-client-secret"
COMPANY = "demo"
DEMO_REDIS_DB = 11
TIMEOUT = 60.0

# New Pipedrive organizations go to the Zoho organization of their country (routing rules).
DEMO_MAPPING = """\
[routing]
default = "zoho-us"
field = "address.country"
rules = { "Germany" = "zoho-eu", "France" = "zoho-eu", "India" = "zoho-in" }
"""

CUSTOMERS = {
    "us": ["Bowman and Co", "Zillum Inc", "Globex Corporation", "Initech LLC"],
    "eu": ["Nordwind GmbH", "Lumiere SARL", "Vandelay Europe BV"],
    "in": ["Tata Demo Pvt Ltd", "Infra Mumbai Pvt Ltd"],
}


def _day(offset: int) -> str:
    """A date relative to today, so invoices in the demo are never overdue by accident."""
    return (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=offset)).isoformat()


def _say(text: str) -> None:
    print(text, flush=True)


class Demo:
    """The processes and simulators of one demo run."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.zoho_port, self.pd_port, self.web_port = free_port(), free_port(), free_port()
        self.zoho_url = f"http://127.0.0.1:{self.zoho_port}"
        self.pd_url = f"http://127.0.0.1:{self.pd_port}"
        self.web_url = f"http://127.0.0.1:{self.web_port}"
        redis_host = os.environ.get("DEMO_REDIS_URL", f"redis://127.0.0.1:6379/{DEMO_REDIS_DB}")
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{workdir / 'connector.db'}",
            "REDIS_URL": redis_host,
            "CONNECTOR_SECRET_KEY": generate_key(),
            "ZOHO_CLIENT_ID": CLIENT_ID,
            "ZOHO_CLIENT_SECRET": CLIENT_SECRET,
            "PIPEDRIVE_API_URL": f"{self.pd_url}/c/{{company_domain}}",
            "CONNECTOR_PUBLIC_URL": self.web_url,
            "CONNECTOR_LOG_FORMAT": "json",
            "CONNECTOR_DOTENV": str(workdir / ".env"),
            # Beat's intervals, shortened so the demo sees scheduled work happen.
            "CONNECTOR_PIPEDRIVE_POLL_MINUTES": "0.5",
            "PYTHONUNBUFFERED": "1",
            "CONNECTOR_CONFIG": str(workdir / "mapping.toml"),
        }
        (workdir / "mapping.toml").write_text(DEMO_MAPPING)
        self.group = ProcessGroup(workdir, self.env)
        self.orgs: dict[str, str] = {}

    # Processes ---------------------------------------------------------------------------

    def start(self, name: str, *argv: str) -> None:
        self.group.start(name, list(argv))

    def stop_all(self) -> None:
        self.group.stop_all()

    def connector(self, *args: str) -> str:
        """Run a `connector` command as a user would; stop the demo if it fails."""
        result = subprocess.run(
            [str(BIN / "connector"), *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"`connector {' '.join(args)}` failed:\n{result.stdout}\n{result.stderr}"
            )
        return result.stdout

    # Simulators ----------------------------------------------------------------------------

    def zoho(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = requests.request(method, f"{self.zoho_url}/_sim{path}", timeout=30, **kwargs)
        answer.raise_for_status()
        return answer.json()

    def pd(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = requests.request(method, f"{self.pd_url}/_sim{path}", timeout=30, **kwargs)
        answer.raise_for_status()
        return answer.json()

    def seed(self) -> None:
        self.zoho("POST", "/clients", json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
        names = {"us": "Books US", "eu": "Books EU", "in": "Books India"}
        currencies = {"us": "USD", "eu": "EUR", "in": "INR"}
        for dc, customers in CUSTOMERS.items():
            org = self.zoho(
                "POST",
                "/organizations",
                json={
                    "dc": dc,
                    "name": names[dc],
                    "plan": "professional",
                    "currency_code": currencies[dc],
                },
            )
            org_id = str(org.get("organization_id") or org.get("id"))
            self.orgs[dc] = org_id
            contacts = [
                {
                    "contact_name": name,
                    "company_name": name,
                    "contact_type": "customer",
                    "customer_sub_type": "business",
                    "billing_address": {
                        "address": "1 Demo Street",
                        "city": "Demo City",
                        "country": {"us": "U.S.A", "eu": "Germany", "in": "India"}[dc],
                    },
                    "contact_persons": [
                        {
                            "first_name": "Alex",
                            "last_name": name.split()[0],
                            "email": f"alex@{name.split()[0].lower()}.example.com",
                            "phone": "+1-555-0100",
                            "is_primary_contact": True,
                        }
                    ],
                }
                for name in customers
            ]
            self.zoho("POST", f"/organizations/{org_id}/contacts/bulk", json=contacts)
        self.pd(
            "POST", "/companies", json={"company_domain": COMPANY, "plan": "growth", "seats": 1}
        )
        # Finance already invoiced Nordwind (EU, in euros) before the integration existed.
        eu = self.orgs["eu"]
        nordwind = self._zoho_contact(eu, "Nordwind GmbH")
        self.zoho(
            "POST",
            f"/organizations/{eu}/invoices",
            json={
                "customer_id": nordwind,
                "date": _day(-20),
                "due_date": _day(10),
                "status": "sent",
                "line_items": [{"name": "Consulting", "rate": 1800, "quantity": 2}],
            },
        )
        # The sales team already has two of the customers, each with an open deal.
        for name in ("Bowman and Co", "Nordwind GmbH"):
            org = self.pd("POST", f"/companies/{COMPANY}/app/organizations", json={"name": name})
            self.pd(
                "POST",
                f"/companies/{COMPANY}/app/deals",
                json={
                    "title": f"{name} renewal",
                    "org_id": org["id"],
                    "status": "open",
                    "currency": "EUR" if name == "Nordwind GmbH" else "USD",
                },
            )

    # The run -------------------------------------------------------------------------------

    def run(self) -> None:
        _say("== starting the Zoho Books and Pipedrive simulators")
        self.start(
            "zoho-sim", str(BIN / "connector"), "sandbox", "zoho", "--port", str(self.zoho_port)
        )
        self.start(
            "pipedrive-sim",
            str(BIN / "connector"),
            "sandbox",
            "pipedrive",
            "--port",
            str(self.pd_port),
        )
        wait_for(
            "the simulators",
            lambda: bool(self.zoho("GET", "/state")) and bool(self.pd("GET", "/state")),
        )
        self.seed()
        _say(
            f"   3 Zoho Books organizations (US, EU, India) with {sum(map(len, CUSTOMERS.values()))} customers; "
            "1 Pipedrive company with 2 organizations and 2 open deals"
        )

        _say("== connecting the accounts with the same commands a user runs")
        self.connector("db", "upgrade")
        for dc, org_id in self.orgs.items():
            code = self.zoho("POST", "/grant_codes", json={"client_id": CLIENT_ID, "dc": dc})
            grant = code.get("code") or code.get("grant_code")
            out = self.connector(
                "zoho",
                "connect",
                "--organization-id",
                org_id,
                "--grant-code",
                grant,
                "--accounts-server",
                f"{self.zoho_url}/{dc}/accounts",
                "--location",
                dc,
                "--name",
                f"zoho-{dc}",
            )
            _say("   " + out.strip().splitlines()[0])
        token = self.pd("POST", f"/companies/{COMPANY}/api_tokens", json={})["api_token"]
        proc = subprocess.run(
            [
                str(BIN / "connector"),
                "pipedrive",
                "connect",
                "--api-token",
                "-",
                "--company-domain",
                COMPANY,
                "--plan",
                "growth",
                "--name",
                "pipedrive",
            ],
            cwd=ROOT,
            env=self.env,
            input=token,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"pipedrive connect failed:\n{proc.stdout}\n{proc.stderr}")
        _say("   " + proc.stdout.strip().splitlines()[0])
        self.connector("pipedrive", "setup-fields")
        _say("   custom fields created in Pipedrive (`connector pipedrive setup-fields`)")

        _say("== starting the receiver (gunicorn), a Celery worker and Celery Beat")
        self.start("web", *web_argv(self.web_port, access_log=True))
        self.start("worker", *worker_argv("demo@%h"))
        self.start("beat", *beat_argv(self.workdir / "beat-state"))
        wait_for(
            "the receiver",
            lambda: requests.get(f"{self.web_url}/readyz", timeout=2).status_code == 200,
        )
        self.connector("webhooks", "register")
        webhooks = {row["connection"]: row for row in _json(self.connector("webhooks", "--json"))}
        for dc, org_id in self.orgs.items():
            self.zoho(
                "POST",
                f"/organizations/{org_id}/webhooks",
                json={
                    "url": webhooks[f"zoho-{dc}"]["url"],
                    "secret": webhooks[f"zoho-{dc}"]["secret"],
                    "events": ["invoice", "contact", "customerpayment"],
                },
            )
        _say(
            "   webhooks registered in Pipedrive (`connector webhooks register`) and configured in Zoho Books"
        )

        _say("== backfill (`connector backfill`)")
        out = self.connector("backfill")
        _say("   " + out.strip().splitlines()[-1])

        _say("== live changes on both sides, through webhooks")
        us = self.orgs["us"]
        bowman = self._zoho_contact(us, "Bowman and Co")
        invoice = self.zoho(
            "POST",
            f"/organizations/{us}/invoices",
            json={
                "customer_id": bowman,
                "date": _day(0),
                "due_date": _day(30),
                "status": "sent",
                "line_items": [{"name": "Annual licence", "rate": 4200, "quantity": 1}],
            },
        )
        _say(
            f"   Zoho Books (US): invoice {invoice.get('invoice_number')} for Bowman and Co, 4,200.00 USD"
        )
        deal = self._pd_deal("Bowman and Co renewal")
        total_key = self._pd_field("deal", "Zoho Invoice Total")
        wait_for(
            "the invoice total on the Bowman deal",
            lambda: (
                (self._pd_record("deals", deal).get("custom_fields") or {}).get(total_key)
                not in (None, "")
            ),
        )
        value = self._pd_record("deals", deal)["custom_fields"][total_key]
        _say(
            f"   -> Pipedrive deal 'Bowman and Co renewal' now shows Zoho Invoice Total = {value['value']} {value['currency']}"
        )
        self.zoho(
            "POST",
            f"/organizations/{us}/customerpayments",
            json={
                "customer_id": bowman,
                "amount": 1500,
                "date": _day(0),
                "payment_mode": "banktransfer",
                "invoices": [{"invoice_id": invoice["invoice_id"], "amount_applied": 1500}],
            },
        )
        _say("   Zoho Books (US): payment of 1,500.00 USD received on that invoice")
        status_key = self._pd_field("deal", "Zoho Payment Status")
        balance_key = self._pd_field("deal", "Zoho Invoice Balance")
        wait_for(
            "the payment on the Bowman deal",
            lambda: (
                (self._pd_record("deals", deal).get("custom_fields") or {}).get(status_key)
                == "partially_paid"
            ),
        )
        fields = self._pd_record("deals", deal)["custom_fields"]
        _say(
            f"   -> deal shows Zoho Payment Status = {fields[status_key]}, "
            f"Zoho Invoice Balance = {fields[balance_key]['value']} {fields[balance_key]['currency']}"
        )

        globex = self._pd_org("Globex Corporation")
        self.pd(
            "PATCH",
            f"/companies/{COMPANY}/app/organizations/{globex}",
            json={"name": "Globex Holdings"},
        )
        _say("   Pipedrive: organization 'Globex Corporation' renamed to 'Globex Holdings'")
        globex_zoho = self._zoho_contact(us, "Globex Corporation")
        wait_for(
            "the rename in Zoho Books",
            lambda: (
                self.zoho("GET", f"/organizations/{us}/contacts/{globex_zoho}")["contact_name"]
                == "Globex Holdings"
            ),
        )
        _say("   -> Zoho Books (US) contact renamed to 'Globex Holdings'")

        created = self.pd(
            "POST",
            f"/companies/{COMPANY}/app/organizations",
            json={
                "name": "Wayne Enterprises",
                "address": {"value": "Mumbai, India", "country": "India"},
            },
        )
        _say("   Pipedrive: new organization 'Wayne Enterprises'")
        wait_for(
            "the new contact in a Zoho organization", lambda: bool(self._linked(str(created["id"])))
        )
        _say(
            f"   -> created as a customer in {self._linked(str(created['id']))} (routing rule: India)"
        )

        time.sleep(2)  # let the echoes of our own writes arrive and be recognised
        self.summary()

    def summary(self) -> None:
        audit = _json(self.connector("audit", "--limit", "1000", "--json"))
        outcomes: dict[str, int] = {}
        for row in audit:
            outcomes[row["outcome"]] = outcomes.get(row["outcome"], 0) + 1
        echoes = sum(1 for row in audit if "our own write" in (row["reason"] or ""))
        stats = self.pd("GET", f"/companies/{COMPANY}/stats")
        budget = _json(self.connector("budget", "--json"))
        deals = self.pd("GET", f"/companies/{COMPANY}/records/deals")
        deal_fields = sum(
            1
            for d in _records(deals)
            if any(v not in (None, "") for v in (d.get("custom_fields") or {}).values())
        )
        orgs = self.pd("GET", f"/companies/{COMPANY}/records/organizations")
        persons = self.pd("GET", f"/companies/{COMPANY}/records/persons")
        _say("== summary")
        _say(
            f"   Pipedrive: {len(_records(orgs))} organizations, {len(_records(persons))} persons, "
            f"{deal_fields} deal(s) with Zoho invoice fields"
        )
        _say(
            f"   audit trail: {len(audit)} rows: "
            + ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items()))
        )
        _say(f"   echoes of our own writes recognised and skipped: {echoes}")
        _say(
            f"   Pipedrive tokens spent: {stats.get('tokens_spent')} (budget {stats.get('daily_budget')}); "
            f"requests {stats.get('requests')}, 429s {stats.get('count_429', stats.get('429s', 0))}"
        )
        for row in budget:
            _say(
                f"   `connector budget`: {row.get('connection')}: spent {row.get('spent_today')}, "
                f"reserve {row.get('reserve')}, resets {row.get('reset_at')}"
            )
        _say(f"   logs of every process: {self.workdir}")

    # Lookups in the simulators -----------------------------------------------------------

    def _zoho_contact(self, org_id: str, name: str) -> str:
        state = self.zoho("GET", "/state?full=1")
        contacts = state["organizations"][org_id]["contacts"]
        items = contacts.values() if isinstance(contacts, dict) else contacts
        for contact in items:
            if contact["contact_name"] == name:
                return str(contact["contact_id"])
        raise RuntimeError(f"no Zoho contact {name!r}")

    def _pd_record(self, entity: str, record_id: int) -> dict[str, Any]:
        for record in _records(self.pd("GET", f"/companies/{COMPANY}/records/{entity}")):
            if record["id"] == record_id:
                return dict(record)
        return {}

    def _pd_org(self, name: str) -> int:
        for record in _records(self.pd("GET", f"/companies/{COMPANY}/records/organizations")):
            if record["name"] == name:
                return int(record["id"])
        raise RuntimeError(f"no Pipedrive organization {name!r}")

    def _pd_deal(self, title: str) -> int:
        for record in _records(self.pd("GET", f"/companies/{COMPANY}/records/deals")):
            if record["title"] == title:
                return int(record["id"])
        raise RuntimeError(f"no Pipedrive deal {title!r}")

    def _pd_field(self, entity: str, name: str) -> str:
        fields = _json(self.connector("pipedrive", "fields", "--json"))
        for row in fields:
            if row["entity"] == entity and row["name"] == name:
                return str(row["key"])
        raise RuntimeError(f"no Pipedrive {entity} field {name!r}")

    def _linked(self, org_id: str) -> str:
        """The Zoho connection a Pipedrive organization was created in ("" until it is)."""
        audit = _json(self.connector("audit", "--limit", "200", "--json"))
        for row in audit:
            if (
                row["pipedrive_id"] == org_id
                and row["direction"] == "pipedrive->zoho"
                and row["action"] == "create"
            ):
                with contextlib.suppress(KeyError):
                    return self._zoho_names()[str(row["zoho_connection_id"])]
                return "Zoho Books"
        return ""

    def _zoho_names(self) -> dict[str, str]:
        rows = _json(self.connector("zoho", "list", "--json"))
        return {str(r.get("id")): str(r.get("name")) for r in rows}


def _records(document: Any) -> list[dict[str, Any]]:
    if isinstance(document, list):
        return document
    return list(document.get("records") or document.get("data") or [])


def _json(text: str) -> Any:
    import json

    return json.loads(text)


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    path = ROOT / "var" / "demo"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    yield path


def main() -> int:
    """Run the demo; returns the exit code."""
    with _workdir() as workdir:
        import redis

        demo = Demo(workdir)
        redis.Redis.from_url(demo.env["REDIS_URL"]).flushdb()
        try:
            demo.run()
        except (RuntimeError, requests.RequestException) as exc:
            _say(f"demo failed: {exc}")
            _say(f"logs: {workdir}")
            return 1
        finally:
            demo.stop_all()
    _say("== done: every process the demo started has been stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
