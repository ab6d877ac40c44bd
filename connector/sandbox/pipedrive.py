"""A local Pipedrive: API v2 entities, v1 users/webhooks/fields, OAuth, rate limits, webhooks.

One :class:`PipedriveSimulator` holds any number of companies in memory and serves them from one
Flask app. Two ways to reach it:

* in-process (``real_hosts=True``): :meth:`PipedriveSimulator.mount` routes
  ``https://{company}.pipedrive.com``, ``https://api.pipedrive.com`` and
  ``https://oauth.pipedrive.com`` through the app via ``responses``;
* server mode (``real_hosts=False``): a real HTTP server where a company's API lives under
  ``{base_url}/c/{company_domain}`` and OAuth under ``{base_url}/oauth``; the control API under
  ``/_sim/`` mirrors the Python methods.

Behaviour follows ``shared/reference/pipedrive.md``; what it marks UNCONFIRMED is a setting in
:class:`SimSettings`. Token costs come from the specs' ``x-token-cost``
(:mod:`connector.sandbox.pipedrive_costtable`).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import datetime as dt
import json
import math
import random
import re
import secrets
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Flask, Response, request
from werkzeug.serving import make_server

from connector.sandbox.common import (
    Clock,
    FaultKind,
    Faults,
    InProcessFault,
    mount_on_responses,
    pipedrive_error_body,
    serve_in_thread,
)
from connector.sandbox.pipedrive_costtable import CostTable, load_cost_table, split_version
from connector.sandbox.pipedrive_limits import (
    BASE_DAILY_TOKENS,
    PLANS,
    BudgetState,
    RequestRecord,
    TokenWindow,
    max_in_window,
)
from connector.sandbox.pipedrive_store import (
    ENTITIES,
    PLURALS,
    SEARCHABLE_TYPES,
    STAGES,
    Change,
    CompanyData,
    FieldDef,
    SimulatorError,
    bad_request,
    decode_cursor,
    encode_cursor,
    entity_name,
    fmt_time,
    is_int,
    not_found,
    parse_time,
)
from connector.sandbox.pipedrive_webhooks import (
    V1_ACTIONS,
    Webhook,
    WebhookDispatcher,
    WebhookRequest,
    v1_payload,
    v1_record,
    v2_payload,
)
from connector.sandbox.spec_check import (
    SPEC_REQUEST_KEY,
    SpecCheck,
    SpecRequest,
    strict_from_env,
)

__all__ = [
    "CLOUDFLARE_BLOCK_HTML",
    "Company",
    "PipedriveSimulator",
    "SimSettings",
    "SimulatorError",
    "User",
    "WebhookRequest",
    "serve",
]

HOST_PATTERN = re.compile(r"https://[a-z0-9-]+\.pipedrive\.com/.*")
CLOUDFLARE_BLOCK_HTML = (
    "<!DOCTYPE html>\n<html><head><title>Attention Required! | Cloudflare</title></head>\n"
    "<body><h1>Sorry, you have been blocked</h1>\n"
    "<p>You are unable to access pipedrive.com</p>\n"
    "<p>This error is produced by Cloudflare. See troubleshooting guide here.</p>\n"
    "</body></html>\n"
)
UNAUTHORIZED = {"success": False, "error": "unauthorized access", "errorCode": 401}
_FIELD_PATH = re.compile(r"^/(deal|person|organization)Fields(?:/([^/]+))?/?$")
_ENTITY_PATH = re.compile(r"^/(organizations|persons|deals)(?:/([^/]+))?/?$")
_MERGE_PATH = re.compile(r"^/(organizations|persons|deals)/(\d+)/merge/?$")
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_OAUTH_SCOPE = (
    "base deals:full contacts:full search:read admin deal-fields:full contact-fields:full"
)
_CURRENCIES = ("EUR", "USD", "GBP", "CHF", "SEK", "NOK", "DKK", "PLN", "CAD", "AUD", "INR", "JPY")


@dataclass
class SimSettings:
    """Switches for behaviour the reference leaves open (UNCONFIRMED) or tests need to vary."""

    headers_enabled: bool = True
    header_drop_rate: float = 0.0
    charge_failed_requests: bool = True
    reject_fractional_seconds: bool = True
    v1_query_token: bool = True
    rotate_refresh_tokens: bool = False
    search_counts_in_general: bool = True
    burst_window_seconds: float = 2.0
    search_burst_limit: int = 10
    block_after_429s: int = 10
    block_window_seconds: float = 10.0
    block_cooldown_seconds: float = 60.0
    block_oauth: bool = False
    storm_rate: float = 0.0
    faults_after_write: bool = False
    retry_after_header: bool = False
    webhook_limit_per_user: int = 40
    reject_unknown_keys: bool = True
    access_token_ttl: int = 3599
    authorization_code_ttl: int = 300
    refresh_token_ttl: int = 60 * 86400

    def update(self, **changes: Any) -> None:
        """Change settings by name; unknown names are an error."""
        names = {f.name for f in dataclasses.fields(self)}
        for key, value in changes.items():
            if key not in names:
                raise SimulatorError(400, f"unknown setting {key!r}")
            setattr(self, key, value)


@dataclass
class User:
    """A Pipedrive user (a seat)."""

    id: int
    name: str
    email: str
    is_admin: bool


@dataclass
class Company:
    """One simulated Pipedrive company account."""

    domain: str
    id: int
    plan: str
    seats: int
    timezone: str
    users: dict[int, User]
    data: CompanyData
    budget: BudgetState
    burst_limit: int | None = None
    oauth_burst_limit: int | None = None
    search_burst_limit: int | None = None
    field_limit: int | None = None
    log: list[RequestRecord] = field(default_factory=list)
    writes: int = 0
    rejected_429: int = 0
    blocked_403: int = 0
    webhooks: dict[int, Webhook] = field(default_factory=dict)

    @property
    def admin_id(self) -> int:
        """The first (admin) user."""
        return next(iter(self.users))

    def public(self) -> dict[str, Any]:
        """What the control API shows."""
        return {
            "company_domain": self.domain,
            "company_id": self.id,
            "plan": self.plan,
            "seats": self.seats,
            "timezone": self.timezone,
            "daily_budget": self.budget.limit,
            "users": [dataclasses.asdict(user) for user in self.users.values()],
        }


@dataclass
class _Token:
    token_id: str
    kind: str  # api | oauth
    company_domain: str
    user_id: int
    client_id: str | None = None
    expires_at: float | None = None
    revoked: bool = False
    refresh_token: str | None = None


@dataclass
class _RefreshToken:
    company_domain: str
    user_id: int
    client_id: str
    expires_at: float
    revoked: bool = False


@dataclass
class _Code:
    client_id: str
    company_domain: str
    user_id: int
    redirect_uri: str
    expires_at: float
    used: bool = False


@dataclass
class _Outcome:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    html: bool = False


class PipedriveSimulator:
    """The simulator. See the module docstring and the report in the project notes for usage.

    Args:
        base_url: Server-mode root URL (``http://127.0.0.1:PORT``); may be set later through
            :meth:`start_server` or by assigning ``base_url``.
        clock: Injectable clock (defaults to the real time).
        real_hosts: Serve the real Pipedrive host names (in-process tests with ``responses``).
        webhook_deliver: Synchronous delivery callable ``(WebhookRequest) -> status | None``;
            without it, deliveries go over HTTP (a background thread in server mode).
        webhook_retry_factor: Multiplies the 3/30/150-second retry delays.
        settings: Initial :class:`SimSettings`.
        seed: Seed for the random choices (storm, header drops).
        strict: Check every API request against the official specs and refuse what they refuse
            (:mod:`connector.sandbox.spec_check`). Defaults to on unless
            ``CONNECTOR_SANDBOX_STRICT=0``.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        clock: Clock | None = None,
        real_hosts: bool = False,
        webhook_deliver: Callable[[WebhookRequest], int | None] | None = None,
        webhook_retry_factor: float = 1.0,
        webhook_thread: bool | None = None,
        settings: SimSettings | None = None,
        seed: int = 0,
        strict: bool | None = None,
    ) -> None:
        self.spec_check = (
            SpecCheck("pipedrive") if (strict_from_env() if strict is None else strict) else None
        )
        self.base_url = base_url.rstrip("/") if base_url else None
        self.clock = clock or Clock()
        self.real_hosts = real_hosts
        self.settings = settings or SimSettings()
        self.faults = Faults(seed=seed)
        self.costs: CostTable = load_cost_table()
        self.lock = threading.RLock()
        self.companies: dict[str, Company] = {}
        self.oauth_refresh_count: Counter[str] = Counter()
        self._tokens: dict[str, _Token] = {}
        self._token_ids: dict[str, str] = {}
        self._windows: dict[str, TokenWindow] = {}
        self._clients: dict[str, str] = {}
        self._codes: dict[str, _Code] = {}
        self._refresh: dict[str, _RefreshToken] = {}
        self._rng = random.Random(seed)
        self._next_user_id = 1001
        self._next_company_id = 8_000_001
        self._next_webhook_id = 1
        threaded = (
            webhook_thread
            if webhook_thread is not None
            else (webhook_deliver is None and not real_hosts)
        )
        self.webhooks = WebhookDispatcher(
            self.clock,
            webhook_deliver,
            retry_factor=webhook_retry_factor,
            threaded=threaded,
        )
        self.app = self._build_app()

    # ----------------------------------------------------------------------------------------
    # URLs
    # ----------------------------------------------------------------------------------------

    def api_base(self, company_domain: str) -> str:
        """Where a company's API lives (``/api/v2/...`` and ``/v1/...`` go after it)."""
        if self.real_hosts:
            return f"https://{company_domain}.pipedrive.com"
        return f"{self._server_root()}/c/{company_domain}"

    def oauth_base(self) -> str:
        """Where ``/oauth/token``, ``/oauth/authorize`` and ``/oauth/revoke`` live."""
        if self.real_hosts:
            return "https://oauth.pipedrive.com"
        return self._server_root()

    def _server_root(self) -> str:
        if not self.base_url:
            raise SimulatorError(500, "base_url is not set: start the server first")
        return self.base_url

    def mount(self, rsps: Any) -> None:
        """Route every ``https://*.pipedrive.com`` request of a ``responses`` mock through the app."""

        def rewrite(url: str) -> str:
            parts = urlsplit(url)
            host = (parts.hostname or "").split(".", 1)[0]
            query = f"?{parts.query}" if parts.query else ""
            if host == "oauth":
                return f"{parts.path}{query}"
            return f"/c/{host}{parts.path}{query}"

        mount_on_responses(rsps, HOST_PATTERN, self.app, rewrite)

    def start_server(self, host: str = "127.0.0.1", port: int = 0) -> tuple[Any, str]:
        """Serve on a daemon thread (tests); sets ``base_url`` and returns ``(server, url)``."""
        server, url = serve_in_thread(self.app, host, port)
        self.base_url = url
        return server, url

    # ----------------------------------------------------------------------------------------
    # Companies, users, tokens
    # ----------------------------------------------------------------------------------------

    def create_company(
        self,
        company_domain: str = "acme",
        plan: str = "growth",
        seats: int = 1,
        timezone: str = "UTC",
        daily_budget: int | None = None,
    ) -> Company:
        """Create a company with ``seats`` users (the first is the admin)."""
        plan = plan.lower()
        if plan not in PLANS:
            raise SimulatorError(400, f"unknown plan {plan!r}; known: {sorted(PLANS)}")
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", company_domain) or company_domain in (
            "api",
            "oauth",
        ):
            raise SimulatorError(400, f"invalid company domain {company_domain!r}")
        if seats < 1:
            raise SimulatorError(400, "a company needs at least one seat")
        with self.lock:
            if company_domain in self.companies:
                raise SimulatorError(409, f"company {company_domain!r} exists")
            users: dict[int, User] = {}
            for index in range(seats):
                user = User(
                    id=self._next_user_id,
                    name="Admin" if index == 0 else f"User {index + 1}",
                    email=f"user{index + 1}@{company_domain}.example",
                    is_admin=index == 0,
                )
                self._next_user_id += 1
                users[user.id] = user
            limit = daily_budget or BASE_DAILY_TOKENS * PLANS[plan].multiplier * seats
            data = CompanyData(
                company_key=f"{company_domain}:{self._next_company_id}",
                now=self.clock.timestamp,
                user_ids=lambda: set(users),
                default_user_id=next(iter(users)),
                reject_unknown_keys=self.settings.reject_unknown_keys,
            )
            company = Company(
                domain=company_domain,
                id=self._next_company_id,
                plan=plan,
                seats=seats,
                timezone=timezone,
                users=users,
                data=data,
                budget=BudgetState(limit=limit, timezone=timezone),
            )
            self._next_company_id += 1
            self.companies[company_domain] = company
            return company

    def company(self, company_domain: str) -> Company:
        """A company by domain, else a 404 error."""
        try:
            return self.companies[company_domain]
        except KeyError:
            raise SimulatorError(404, f"no company {company_domain!r}") from None

    def add_user(
        self, company_domain: str, name: str | None = None, *, is_admin: bool = False
    ) -> User:
        """Add a seat's user (does not change the budget; use :meth:`set_limits`)."""
        with self.lock:
            company = self.company(company_domain)
            user = User(
                self._next_user_id,
                name or f"User {len(company.users) + 1}",
                f"user{len(company.users) + 1}@{company_domain}.example",
                is_admin,
            )
            self._next_user_id += 1
            company.users[user.id] = user
            return user

    def create_api_token(
        self, company_domain: str, user_id: int | None = None, *, revoke_previous: bool = True
    ) -> str:
        """Issue the user's API token. Pipedrive allows one active token per user (§2.1)."""
        with self.lock:
            company = self.company(company_domain)
            user_id = user_id or company.admin_id
            if user_id not in company.users:
                raise SimulatorError(404, f"no user {user_id} in {company_domain!r}")
            if revoke_previous:
                for token in self._tokens.values():
                    if (
                        token.kind == "api"
                        and token.company_domain == company_domain
                        and token.user_id == user_id
                    ):
                        token.revoked = True
            value = secrets.token_hex(20)
            token_id = f"api:{company_domain}:{user_id}:{len(self._tokens) + 1}"
            self._tokens[value] = _Token(token_id, "api", company_domain, user_id)
            self._token_ids[value] = token_id
            return value

    def revoke_api_token(self, token: str) -> None:
        """Make an API token invalid (as regenerating it in the UI does)."""
        with self.lock:
            if token in self._tokens:
                self._tokens[token].revoked = True

    def register_oauth_client(self, client_id: str, client_secret: str) -> None:
        """Register an OAuth app."""
        with self.lock:
            self._clients[client_id] = client_secret

    def issue_authorization_code(
        self, client_id: str, company_domain: str, redirect_uri: str, user_id: int | None = None
    ) -> str:
        """What the user's consent produces: a single-use code valid for 5 minutes."""
        with self.lock:
            if client_id not in self._clients:
                raise SimulatorError(404, f"unknown OAuth client {client_id!r}")
            company = self.company(company_domain)
            code = secrets.token_urlsafe(24)
            self._codes[code] = _Code(
                client_id,
                company_domain,
                user_id or company.admin_id,
                redirect_uri,
                self.clock.timestamp() + self.settings.authorization_code_ttl,
            )
            return code

    def token_id(self, token: str) -> str | None:
        """The non-secret id the request log uses for an API or OAuth token."""
        return self._token_ids.get(token)

    # ----------------------------------------------------------------------------------------
    # Limits, settings, accounting
    # ----------------------------------------------------------------------------------------

    def configure(self, **settings: Any) -> None:
        """Change :class:`SimSettings` values by name."""
        with self.lock:
            self.settings.update(**settings)
            for company in self.companies.values():
                company.data.reject_unknown_keys = self.settings.reject_unknown_keys

    def set_limits(
        self,
        company_domain: str,
        *,
        daily_budget: int | None = None,
        burst_limit: int | None = None,
        oauth_burst_limit: int | None = None,
        search_burst_limit: int | None = None,
        field_limit: int | None = None,
        tokens_spent: int | None = None,
    ) -> None:
        """Override a company's limits (None leaves a value unchanged)."""
        with self.lock:
            company = self.company(company_domain)
            if daily_budget is not None:
                company.budget.limit = daily_budget
            if burst_limit is not None:
                company.burst_limit = burst_limit
            if oauth_burst_limit is not None:
                company.oauth_burst_limit = oauth_burst_limit
            if search_burst_limit is not None:
                company.search_burst_limit = search_burst_limit
            if field_limit is not None:
                company.field_limit = field_limit
            if tokens_spent is not None:
                company.budget.roll(self.clock.timestamp())
                company.budget.spent = tokens_spent

    def daily_budget(self, company_domain: str) -> int:
        """The company's daily token limit."""
        return self.company(company_domain).budget.limit

    def tokens_spent(self, company_domain: str) -> int:
        """Tokens spent today (the company's day)."""
        with self.lock:
            company = self.company(company_domain)
            company.budget.roll(self.clock.timestamp())
            return company.budget.spent

    def tokens_remaining(self, company_domain: str) -> int:
        """Tokens left today."""
        with self.lock:
            return self.company(company_domain).budget.remaining(self.clock.timestamp())

    def budget_reset_at(self, company_domain: str) -> dt.datetime:
        """When the budget next resets (midnight of the company's time zone)."""
        return self.company(company_domain).budget.reset_at(self.clock.timestamp())

    def request_log(self, company_domain: str) -> list[RequestRecord]:
        """Every request the company's API saw: (timestamp, token_id, method, path, status, cost, granted)."""
        with self.lock:
            return list(self.company(company_domain).log)

    def total_cost_logged(self, company_domain: str) -> int:
        """Sum of the costs charged over the whole log (all days)."""
        with self.lock:
            return sum(record.cost for record in self.company(company_domain).log)

    def max_requests_in_any_window(
        self,
        company_domain: str,
        token: str | None = None,
        window: float = 2.0,
        *,
        search: bool | None = None,
    ) -> int:
        """The most granted (non-429) requests inside any rolling ``window`` seconds.

        ``token`` may be the token itself or its token id; ``search=True`` counts search only.
        """
        with self.lock:
            wanted = self._token_ids.get(token, token) if token else None
            stamps = sorted(
                record.timestamp
                for record in self.company(company_domain).log
                if record.granted
                and (wanted is None or record.token_id == wanted)
                and (search is None or self.costs.is_search(record.path) == search)
            )
        return max_in_window(stamps, window)

    def count_429(self, company_domain: str) -> int:
        """How many 429s the company's API answered."""
        return self.company(company_domain).rejected_429

    def count_403_blocked(self, company_domain: str) -> int:
        """How many Cloudflare-style 403 blocks were answered."""
        return self.company(company_domain).blocked_403

    def write_count(self, company_domain: str) -> int:
        """Successful POST/PUT/PATCH/DELETE requests on the company's API."""
        return self.company(company_domain).writes

    def stats(self, company_domain: str) -> dict[str, Any]:
        """Counters for the control API and for benchmarks."""
        with self.lock:
            company = self.company(company_domain)
            now = self.clock.timestamp()
            log = company.log
            return {
                "company_domain": company_domain,
                "daily_budget": company.budget.limit,
                "tokens_spent": self.tokens_spent(company_domain),
                "tokens_remaining": company.budget.remaining(now),
                "tokens_charged_total": sum(record.cost for record in log),
                "requests": len(log),
                "granted": sum(1 for record in log if record.granted),
                "count_429": company.rejected_429,
                "count_403_blocked": company.blocked_403,
                "writes": company.writes,
                "max_per_2s": self.max_requests_in_any_window(company_domain),
                "budget_reset_at": company.budget.reset_at(now).isoformat(),
            }

    # ----------------------------------------------------------------------------------------
    # Data helpers (no tokens spent; for seeding and for assertions)
    # ----------------------------------------------------------------------------------------

    def create_custom_field(
        self,
        company_domain: str,
        entity: str,
        name: str,
        field_type: str,
        options: list[str] | list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Create a custom field as an admin in the app; returns the v1 field object."""
        with self.lock:
            company = self.company(company_domain)
            parsed = [o if isinstance(o, dict) else {"label": o} for o in options or []] or None
            definition = company.data.create_field(
                entity_name(entity),
                name,
                field_type,
                parsed,
                user_id=company.admin_id,
                limit=self._field_limit(company),
            )
            return definition.v1()

    def custom_field_key(self, company_domain: str, entity: str, name: str) -> str:
        """The 40-character key of a custom field, by name."""
        for definition in self.company(company_domain).data.custom_fields(entity_name(entity)):
            if definition.name == name:
                return definition.key
        raise SimulatorError(404, f"no custom field {name!r}")

    def seed(
        self,
        company_domain: str,
        entity: str,
        records: Iterable[Mapping[str, Any]],
        *,
        owner_id: int | None = None,
    ) -> list[int]:
        """Insert records fast: validated like the API, but no tokens, log entries or webhooks.

        Records are v2 bodies; ``add_time``/``update_time`` may be given to backdate them.
        """
        kind = entity_name(entity)
        with self.lock:
            company = self.company(company_domain)
            data = company.data
            table = data.tables[kind]
            now = self.clock.timestamp()
            user = owner_id or company.admin_id
            ids = []
            for body in records:
                fields = dict(body)
                # Backdating is allowed on every entity here, even where the API refuses it.
                stamps = {k: fields.pop(k) for k in ("add_time", "update_time") if k in fields}
                clean = data.validate(kind, fields, creating=True)
                for key, value in stamps.items():
                    clean[key] = parse_time(value, name=key)
                record = data.blank(kind, table.allocate(), now, user)
                data.apply(kind, record, clean, now)
                if "update_time" not in clean and "add_time" in clean:
                    record["_update_ts"], record["update_time"] = (
                        record["_add_ts"],
                        record["add_time"],
                    )
                table.add(record)
                ids.append(record["id"])
            return ids

    def get_record(self, company_domain: str, entity: str, record_id: int) -> dict[str, Any]:
        """A record in its REST v2 shape (deleted ones included)."""
        kind = entity_name(entity)
        with self.lock:
            data = self.company(company_domain).data
            return data.render(kind, data.get(kind, record_id))

    def records(
        self, company_domain: str, entity: str, *, include_deleted: bool = False
    ) -> list[dict[str, Any]]:
        """All records of an entity in REST v2 shape, by id."""
        kind = entity_name(entity)
        with self.lock:
            data = self.company(company_domain).data
            return [
                data.render(kind, record)
                for record in data.tables[kind].records.values()
                if include_deleted or not record["is_deleted"]
            ]

    def merged_to_id(self, company_domain: str, entity: str, record_id: int) -> int | None:
        """Which record a merged one went into."""
        record = self.company(company_domain).data.get(entity_name(entity), record_id)
        merged: int | None = record.get("_merged_to_id")
        return merged

    # --- acting as a user in the app (webhooks say change_source "app") ----------------------

    def app_create(
        self,
        company_domain: str,
        entity: str,
        body: Mapping[str, Any],
        *,
        user_id: int | None = None,
    ) -> dict[str, Any]:
        """Create a record as a user in the Pipedrive web app."""
        return self._app_action(
            company_domain,
            user_id,
            lambda c, u: self._create(c, entity_name(entity), dict(body), u, "app"),
        )

    def app_update(
        self,
        company_domain: str,
        entity: str,
        record_id: int,
        body: Mapping[str, Any],
        *,
        user_id: int | None = None,
    ) -> dict[str, Any]:
        """Edit a record as a user in the app."""
        return self._app_action(
            company_domain,
            user_id,
            lambda c, u: self._update(c, entity_name(entity), record_id, dict(body), u, "app"),
        )

    def app_delete(
        self, company_domain: str, entity: str, record_id: int, *, user_id: int | None = None
    ) -> dict[str, Any]:
        """Delete a record as a user in the app."""
        return self._app_action(
            company_domain,
            user_id,
            lambda c, u: self._delete(c, entity_name(entity), record_id, u, "app"),
        )

    def app_merge(
        self,
        company_domain: str,
        entity: str,
        record_id: int,
        merge_with_id: int,
        *,
        user_id: int | None = None,
    ) -> dict[str, Any]:
        """Merge ``record_id`` into ``merge_with_id`` as a user in the app."""
        return self._app_action(
            company_domain,
            user_id,
            lambda c, u: self._merge(c, entity_name(entity), record_id, merge_with_id, u, "app"),
        )

    def _app_action(
        self,
        company_domain: str,
        user_id: int | None,
        action: Callable[[Company, int], tuple[dict[str, Any], list[Change]]],
    ) -> dict[str, Any]:
        with self.lock:
            company = self.company(company_domain)
            result, changes = action(company, user_id or company.admin_id)
            self._emit(company, changes)
        self.run_webhooks()
        return result

    def close(self) -> None:
        """Stop the webhook delivery thread, if one was started."""
        self.webhooks.stop()

    def run_webhooks(self) -> int:
        """Deliver webhook attempts that are due on the clock (synchronous mode)."""
        return self.webhooks.pump()

    @property
    def webhook_log(self) -> list[dict[str, Any]]:
        """Every delivery attempt: webhook_id, event_id, attempt, status, outcome, payload…"""
        return self.webhooks.log

    def list_webhooks(self, company_domain: str) -> list[dict[str, Any]]:
        """The company's subscriptions as ``/v1/webhooks`` shows them."""
        return [hook.api() for hook in self.company(company_domain).webhooks.values()]

    def dump(self) -> dict[str, Any]:
        """Everything, JSON-ready (control API ``GET /_sim/state``)."""
        with self.lock:
            out: dict[str, Any] = {"now": fmt_time(self.clock.timestamp()), "companies": {}}
            for domain, company in self.companies.items():
                data = company.data
                out["companies"][domain] = {
                    **company.public(),
                    "stats": self.stats(domain),
                    "fields": {e: [d.v2() for d in data.fields[e]] for e in ENTITIES},
                    "records": {
                        PLURALS[e]: [data.render(e, r) for r in data.tables[e].records.values()]
                        for e in ENTITIES
                    },
                    "webhooks": self.list_webhooks(domain),
                }
            return out

    # ----------------------------------------------------------------------------------------
    # Writes shared by the API and the app
    # ----------------------------------------------------------------------------------------

    def _create(
        self, company: Company, entity: str, body: Any, user_id: int, source: str
    ) -> tuple[dict[str, Any], list[Change]]:
        data = company.data
        clean = data.validate(entity, body, creating=True)
        now = self.clock.timestamp()
        table = data.tables[entity]
        record = data.blank(entity, table.allocate(), now, clean.get("owner_id", user_id))
        data.apply(entity, record, clean, now)
        if entity == "deal":
            record["creator_user_id"] = user_id
            record["stage_change_time"] = None
        table.add(record)
        change = Change(
            entity, "create", record["id"], None, copy.deepcopy(record), user_id, source
        )
        return data.render(entity, record), [change]

    def _update(
        self, company: Company, entity: str, record_id: int, body: Any, user_id: int, source: str
    ) -> tuple[dict[str, Any], list[Change]]:
        data = company.data
        record = data.get(entity, record_id)
        if record["is_deleted"]:
            raise not_found()
        if entity == "deal" and record.get("is_archived"):
            raise bad_request("Archived deals cannot be edited")
        clean = data.validate(entity, body, creating=False)
        before = copy.deepcopy(record)
        now = self.clock.timestamp()
        data.apply(entity, record, clean, now)
        if entity == "person" and not record.get("name"):
            record.update({k: before[k] for k in ("name", "first_name", "last_name")})
            raise bad_request('Validation failed: "name" cannot be empty')
        if entity == "deal" and record["stage_id"] != before["stage_id"]:
            record["stage_change_time"] = fmt_time(now)
        visible_before = {k: v for k, v in before.items() if k not in ("update_time", "_update_ts")}
        visible_after = {k: v for k, v in record.items() if k not in ("update_time", "_update_ts")}
        if visible_before == visible_after:
            # A no-op edit changes nothing and sends no webhook (UNCONFIRMED; see the report).
            record["update_time"], record["_update_ts"] = (
                before["update_time"],
                before["_update_ts"],
            )
            return data.render(entity, record), []
        if "update_time" not in clean:
            record["update_time"], record["_update_ts"] = fmt_time(now), now
        data.tables[entity].touch()
        change = Change(entity, "change", record_id, before, copy.deepcopy(record), user_id, source)
        return data.render(entity, record), [change]

    def _delete(
        self, company: Company, entity: str, record_id: int, user_id: int, source: str
    ) -> tuple[dict[str, Any], list[Change]]:
        data = company.data
        record = data.get(entity, record_id)
        if record["is_deleted"]:
            raise not_found()
        before = copy.deepcopy(record)
        now = self.clock.timestamp()
        record["is_deleted"] = True
        record["update_time"], record["_update_ts"] = fmt_time(now), now
        data.tables[entity].touch()
        return {"id": record_id}, [
            Change(entity, "delete", record_id, before, None, user_id, source)
        ]

    def _merge(
        self,
        company: Company,
        entity: str,
        record_id: int,
        survivor_id: Any,
        user_id: int,
        source: str,
    ) -> tuple[dict[str, Any], list[Change]]:
        if not is_int(survivor_id):
            raise bad_request('Validation failed: "merge_with_id" must be an integer')
        if survivor_id == record_id:
            raise bad_request("Cannot merge an item with itself")
        data = company.data
        merged, survivor = data.get(entity, record_id), data.get(entity, survivor_id)
        if merged["is_deleted"] or survivor["is_deleted"]:
            raise not_found()
        now = self.clock.timestamp()
        stamp = fmt_time(now)
        merged_before, survivor_before = copy.deepcopy(merged), copy.deepcopy(survivor)
        # The survivor keeps its values; it only gains what it lacked.
        for key, value in merged["custom_fields"].items():
            survivor["custom_fields"].setdefault(key, copy.deepcopy(value))
        if entity == "person":
            for key in ("emails", "phones"):
                seen = {item["value"] for item in survivor[key]}
                for item in merged[key]:
                    if item["value"] not in seen:
                        survivor[key].append({**item, "primary": False})
        for name in ("org_id", "person_id"):
            if survivor.get(name) is None and merged.get(name) is not None:
                survivor[name] = merged[name]
        ref = {"organization": "org_id", "person": "person_id"}.get(entity)
        if ref:
            for other in ("person", "deal"):
                if other == entity:
                    continue
                for rec in data.tables[other].records.values():
                    if rec.get(ref) == record_id:
                        rec[ref] = survivor_id
                        rec["update_time"], rec["_update_ts"] = stamp, now
                data.tables[other].touch()
        merged["is_deleted"] = True
        merged["_merged_to_id"] = survivor_id
        merged["update_time"], merged["_update_ts"] = stamp, now
        survivor["update_time"], survivor["_update_ts"] = stamp, now
        data.tables[entity].touch()
        changes = [
            Change(
                entity,
                "delete",
                record_id,
                merged_before,
                None,
                user_id,
                source,
                merged_to_id=survivor_id,
            ),
            Change(
                entity,
                "change",
                survivor_id,
                survivor_before,
                copy.deepcopy(survivor),
                user_id,
                source,
                merged_from_id=record_id,
            ),
        ]
        return {"id": survivor_id}, changes

    def _emit(self, company: Company, changes: list[Change]) -> None:
        """Queue webhook payloads for every matching subscription (called under the lock)."""
        if not changes or not company.webhooks:
            return
        now = self.clock.timestamp()
        # The real host name even in server mode: receivers compare it with the company domain.
        host = f"{company.domain}.pipedrive.com"
        users = list(company.users)
        for change in changes:
            field_types = company.data.custom_field_types(change.entity)
            correlation = _uuid()
            for hook in list(company.webhooks.values()):
                if not hook.matches(change.entity, change.action):
                    continue
                if hook.version == "1.0":
                    payload = v1_payload(
                        change,
                        hook,
                        field_types=field_types,
                        host=host,
                        permitted_user_ids=users,
                        now=now,
                    )
                else:
                    payload = v2_payload(
                        change,
                        hook,
                        field_types=field_types,
                        host=host,
                        permitted_user_ids=users,
                        correlation_id=correlation,
                        now=now,
                    )
                self.webhooks.enqueue(hook, payload)

    def _field_limit(self, company: Company) -> int | None:
        if company.field_limit is not None:
            return company.field_limit
        return PLANS[company.plan].field_limit

    # ----------------------------------------------------------------------------------------
    # The Flask app
    # ----------------------------------------------------------------------------------------

    def _build_app(self) -> Flask:
        app = Flask("pipedrive_sim")
        # InProcessFault must reach the responses adapter instead of becoming a Flask 500.
        app.config["PROPAGATE_EXCEPTIONS"] = True
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]

        @app.route("/c/<company_domain>/<path:rest>", methods=methods)
        def company_api(company_domain: str, rest: str) -> Response:
            return self._serve_api(company_domain, "/" + rest)

        @app.route("/api/<path:rest>", methods=methods)
        def bare_api(rest: str) -> Response:
            return self._serve_api("api", "/api/" + rest)

        @app.route("/v1/<path:rest>", methods=methods)
        def bare_v1(rest: str) -> Response:
            return self._serve_api("api", "/v1/" + rest)

        @app.route("/oauth/<action>", methods=["GET", "POST"])
        @app.route("/oauth/<action>/", methods=["GET", "POST"])
        def oauth(action: str) -> Response:
            return self._serve_oauth(action)

        from connector.sandbox.pipedrive_control import register_control_api

        register_control_api(app, self)
        return app

    # --- request pipeline -----------------------------------------------------------------------

    def _serve_api(self, company_slug: str, path: str) -> Response:
        in_server = "werkzeug.socket" in request.environ
        fault_path = request.path
        after_write = self.settings.faults_after_write
        fault = None if after_write else self.faults.decide(fault_path)
        if fault in (FaultKind.TIMEOUT, FaultKind.DROP):
            return self._network_fault(
                fault, in_server, then=lambda: self._serve_api_inner(company_slug, path)
            )
        if fault == FaultKind.SERVER_ERROR:
            return self._json_response(_Outcome(500, _server_error_body()))
        outcome = self._serve_api_inner(company_slug, path)
        self.run_webhooks_if_sync()
        if after_write:
            late = self.faults.decide(fault_path)
            if late == FaultKind.SERVER_ERROR:
                return self._json_response(_Outcome(500, _server_error_body()))
            if late in (FaultKind.TIMEOUT, FaultKind.DROP):
                return self._network_fault(late, in_server, then=lambda: outcome)
        return outcome

    def run_webhooks_if_sync(self) -> None:
        """Pump due deliveries unless a background thread does it."""
        if not self.webhooks.threaded:
            self.run_webhooks()

    def _network_fault(self, kind: str, in_server: bool, then: Callable[[], Response]) -> Response:
        if not in_server:
            raise InProcessFault(kind)
        if kind == FaultKind.TIMEOUT:
            time.sleep(self.faults.timeout_seconds)
            return then()
        sock = request.environ.get("werkzeug.socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        return Response(b"", status=500)

    def _serve_api_inner(self, company_slug: str, path: str) -> Response:
        method = request.method.upper()
        with self.lock:
            outcome, company, changes = self._process(company_slug, path, method)
            if company is not None:
                self._emit(company, changes)
        if outcome.html:
            response = Response(
                outcome.body, status=outcome.status, content_type="text/html; charset=UTF-8"
            )
            return response
        return self._json_response(outcome)

    @staticmethod
    def _json_response(outcome: _Outcome) -> Response:
        body = json.dumps(outcome.body, separators=(",", ":"))
        response = Response(body, status=outcome.status, mimetype="application/json")
        for key, value in outcome.headers.items():
            response.headers[key] = value
        return response

    def _authenticate(self, version: str, company_slug: str) -> _Token | None:
        header = request.headers.get("x-api-token")
        bearer = request.headers.get("Authorization", "")
        value: str | None = None
        if header:
            value = header
        elif bearer.lower().startswith("bearer "):
            value = bearer[7:].strip()
        elif version == "v1" and self.settings.v1_query_token and request.args.get("api_token"):
            value = request.args.get("api_token")
        if not value:
            return None
        token = self._tokens.get(value)
        if token is None or token.revoked:
            return None
        if (
            token.kind == "oauth"
            and token.expires_at is not None
            and token.expires_at <= self.clock.timestamp()
        ):
            return None
        if bearer and token.kind != "oauth" and not header:
            return None
        if header and token.kind != "api":
            return None
        if company_slug not in ("api", token.company_domain):
            return None
        return token

    def _process(
        self, company_slug: str, path: str, method: str
    ) -> tuple[_Outcome, Company | None, list[Change]]:
        now = self.clock.timestamp()
        version, rest = split_version(path)
        company = self.companies.get(company_slug)
        if version is None:
            return _Outcome(404, _error_body("Not found")), None, []
        token = self._authenticate(version, company_slug)
        if token is None:
            if company is not None:
                company.log.append(RequestRecord(now, None, method, path, 401, 0, False))
            return _Outcome(401, dict(UNAUTHORIZED)), None, []
        company = self.companies[token.company_domain]
        window = self._windows.setdefault(token.token_id, TokenWindow())
        found = self.costs.lookup(method, path)
        cost = found[1] if found else 0
        is_search = self.costs.is_search(path)
        settings = self.settings
        width = settings.burst_window_seconds

        def finish(outcome: _Outcome, charged: int, granted: bool) -> _Outcome:
            company.log.append(
                RequestRecord(now, token.token_id, method, path, outcome.status, charged, granted)
            )
            if not outcome.html:
                outcome.headers.update(self._limit_headers(company, token, window, now))
            return outcome

        blockable = token.kind == "api" or settings.block_oauth
        if blockable and window.blocked_until > now:
            company.blocked_403 += 1
            return finish(_Outcome(403, CLOUDFLARE_BLOCK_HTML, html=True), 0, False), company, []

        limit = self._burst_limit(company, token)
        reason = None
        if settings.storm_rate and self._rng.random() < settings.storm_rate:
            reason = "storm"
        elif (not is_search or settings.search_counts_in_general) and window.count(
            now, width
        ) >= limit:
            reason = "burst"
        elif is_search and window.count(now, width, search=True) >= (
            company.search_burst_limit or settings.search_burst_limit
        ):
            reason = "search"
        elif company.budget.remaining(now) < cost:
            reason = "daily"
        if reason is not None:
            company.rejected_429 += 1
            if (
                blockable
                and window.note_rejection(now, settings.block_window_seconds)
                >= settings.block_after_429s
            ):
                window.blocked_until = now + settings.block_cooldown_seconds
                window.rejections.clear()
            refused = _Outcome(429, _rate_limit_body(reason))
            if settings.retry_after_header:
                if reason == "daily":
                    wait = math.ceil(company.budget.reset_at(now).timestamp() - now)
                else:
                    wait = window.reset_after(now, width, search=reason == "search")
                refused.headers["Retry-After"] = str(max(1, wait))
            return finish(refused, 0, False), company, []

        if not is_search or settings.search_counts_in_general:
            window.granted.append(now)
        if is_search:
            window.searches.append(now)
        changes: list[Change] = []
        try:
            spec_refused = self._spec_refusal(method, path)
            if spec_refused is not None:
                outcome = spec_refused
            else:
                status, body, changes = self._route(company, token, method, version, rest)
                outcome = _Outcome(status, body)
        except SimulatorError as error:
            outcome = _Outcome(error.status or 400, error.payload)
            changes = []
        charged = cost
        if outcome.status >= 400 and not settings.charge_failed_requests:
            charged = 0
        company.budget.spent += charged
        if method in _WRITE_METHODS and outcome.status < 400:
            company.writes += 1
        return finish(outcome, charged, True), company, changes

    def _spec_refusal(self, method: str, path: str) -> _Outcome | None:
        """The official spec's answer to this request, when it refuses it (strict mode)."""
        if self.spec_check is None:
            return None
        spec_request = SpecRequest(
            method,
            path,
            request.args,
            dict(request.headers),
            request.content_type or "",
            request.get_data(cache=True),
        )
        request.environ[SPEC_REQUEST_KEY] = spec_request
        refusal = self.spec_check.refusal(spec_request)
        return None if refusal is None else _Outcome(refusal.status, refusal.body)

    def _burst_limit(self, company: Company, token: _Token) -> int:
        plan = PLANS[company.plan]
        if token.kind == "oauth":
            return company.oauth_burst_limit or plan.oauth_burst
        return company.burst_limit or plan.api_burst

    def _limit_headers(
        self, company: Company, token: _Token, window: TokenWindow, now: float
    ) -> dict[str, str]:
        settings = self.settings
        if not settings.headers_enabled:
            return {}
        if settings.header_drop_rate and self._rng.random() < settings.header_drop_rate:
            return {}
        limit = self._burst_limit(company, token)
        width = settings.burst_window_seconds
        used = window.count(now, width)
        return {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(max(0, limit - used)),
            "x-ratelimit-reset": str(window.reset_after(now, width)),
            "x-daily-ratelimit-token-limit": str(company.budget.limit),
            "x-daily-ratelimit-token-remaining": str(company.budget.remaining(now)),
        }

    # --- routing --------------------------------------------------------------------------------

    def _route(
        self, company: Company, token: _Token, method: str, version: str, rest: str
    ) -> tuple[int, Any, list[Change]]:
        args = request.args
        if version == "v2":
            match = _ENTITY_PATH.match(rest)
            if match:
                entity = entity_name(match.group(1))
                ident = match.group(2)
                if ident == "search" and method == "GET":
                    return 200, self._search(company, [entity], args, max_limit=500), []
                if ident is None and method == "GET":
                    return 200, self._list(company, entity, args), []
                if ident is None and method == "POST":
                    data, changes = self._create(
                        company, entity, self._json_body(), token.user_id, "api"
                    )
                    return 200, {"success": True, "data": data}, changes
                if ident is not None and ident.isdigit():
                    record_id = int(ident)
                    if method == "GET":
                        record = company.data.get(entity, record_id)
                        keys = self._custom_keys(company, entity, args)
                        return (
                            200,
                            {"success": True, "data": company.data.render(entity, record, keys)},
                            [],
                        )
                    if method == "PATCH":
                        data, changes = self._update(
                            company, entity, record_id, self._json_body(), token.user_id, "api"
                        )
                        return 200, {"success": True, "data": data}, changes
                    if method == "DELETE":
                        data, changes = self._delete(
                            company, entity, record_id, token.user_id, "api"
                        )
                        return 200, {"success": True, "data": data}, changes
                if ident is not None and not ident.isdigit() and ident != "search":
                    raise bad_request(f'Validation failed: "id" must be an integer, got {ident!r}')
            if rest.rstrip("/") == "/itemSearch" and method == "GET":
                types = [
                    entity_name(t)
                    for t in _csv(args.get("item_types"))
                    if t in ("deal", "person", "organization")
                ]
                return 200, self._search(company, types or list(ENTITIES), args, max_limit=100), []
            match = _FIELD_PATH.match(rest)
            if match:
                return self._fields_v2(company, token, method, match.group(1), match.group(2))
        else:
            stripped = rest.rstrip("/")
            if stripped == "/users/me" and method == "GET":
                return 200, {"success": True, "data": self._user_me(company, token)}, []
            if stripped == "/users" and method == "GET":
                users = [self._user_v1(company, user, token) for user in company.users.values()]
                return 200, {"success": True, "data": users}, []
            if stripped == "/currencies" and method == "GET":
                return 200, {"success": True, "data": _currencies()}, []
            if stripped == "/webhooks" or stripped.startswith("/webhooks/"):
                return self._webhooks_v1(company, token, method, stripped)
            match = _MERGE_PATH.match(rest)
            if match and method == "PUT":
                entity = entity_name(match.group(1))
                body = self._json_body(allow_form=True)
                data, changes = self._merge(
                    company,
                    entity,
                    int(match.group(2)),
                    body.get("merge_with_id"),
                    token.user_id,
                    "api",
                )
                if entity != "organization":
                    survivor = company.data.get(entity, data["id"])
                    data = (
                        v1_record(
                            entity, survivor, company.data.custom_field_types(entity), company.id
                        )
                        or data
                    )
                return 200, {"success": True, "data": data}, changes
            match = _FIELD_PATH.match(rest)
            if match:
                return self._fields_v1(company, token, method, match.group(1), match.group(2))
        raise SimulatorError(
            404, "Unknown method .", error_info="Please check developers.pipedrive.com"
        )

    def _json_body(self, *, allow_form: bool = False) -> Any:
        raw = request.get_data()
        if not raw:
            return {}
        if allow_form and request.mimetype == "application/x-www-form-urlencoded":
            return {k: _coerce_form(v) for k, v in request.form.items()}
        try:
            return json.loads(raw)
        except ValueError:
            raise bad_request("Invalid JSON in request body") from None

    # --- lists and search -------------------------------------------------------------------------

    @staticmethod
    def _int_arg(args: Mapping[str, str], name: str) -> int | None:
        value = args.get(name)
        if value is None or value == "":
            return None
        try:
            return int(value)
        except ValueError:
            raise bad_request(f'Validation failed: "{name}" must be an integer') from None

    def _limit_arg(self, args: Mapping[str, str], maximum: int) -> int:
        limit = self._int_arg(args, "limit")
        if limit is None:
            return 100
        if limit < 1 or limit > maximum:
            raise bad_request(f'Validation failed: "limit" must be between 1 and {maximum}')
        return limit

    def _custom_keys(
        self, company: Company, entity: str, args: Mapping[str, str]
    ) -> list[str] | None:
        keys = _csv(args.get("custom_fields"))
        if not keys:
            return None
        if len(keys) > 15:
            raise bad_request('Validation failed: "custom_fields" allows at most 15 keys')
        known = {d.key for d in company.data.custom_fields(entity)}
        unknown = [key for key in keys if key not in known]
        if unknown:
            raise bad_request(f"Custom field with key '{unknown[0]}' does not exist")
        return keys

    def _list(self, company: Company, entity: str, args: Mapping[str, str]) -> dict[str, Any]:
        data = company.data
        limit = self._limit_arg(args, 500)
        sort_by = args.get("sort_by", "id")
        direction = args.get("sort_direction", "asc")
        if sort_by not in ("id", "update_time", "add_time"):
            raise bad_request(
                'Validation failed: "sort_by" must be one of id, update_time, add_time'
            )
        if direction not in ("asc", "desc"):
            raise bad_request('Validation failed: "sort_direction" must be asc or desc')
        allow_fraction = not self.settings.reject_fractional_seconds
        since = args.get("updated_since")
        until = args.get("updated_until")
        since_ts = (
            int(parse_time(since, allow_fraction=allow_fraction, name="updated_since"))
            if since
            else None
        )
        until_ts = (
            int(parse_time(until, allow_fraction=allow_fraction, name="updated_until"))
            if until
            else None
        )
        ids: set[int] | None = None
        if args.get("ids"):
            try:
                ids = {int(item) for item in _csv(args.get("ids"))}
            except ValueError:
                raise bad_request('Validation failed: "ids" must be integers') from None
            if len(ids) > 100:
                raise bad_request('Validation failed: "ids" allows at most 100 ids')
        owner_id = self._int_arg(args, "owner_id")
        org_id = self._int_arg(args, "org_id") if entity in ("person", "deal") else None
        person_id = self._int_arg(args, "person_id") if entity == "deal" else None
        stage_id = self._int_arg(args, "stage_id") if entity == "deal" else None
        pipeline_id = self._int_arg(args, "pipeline_id") if entity == "deal" else None
        status = args.get("status") if entity == "deal" else None
        statuses = set(_csv(status)) if status else None
        if statuses and not statuses <= {"open", "won", "lost", "deleted"}:
            raise bad_request('Validation failed: "status" must be open, won, lost or deleted')
        want_deleted = bool(statuses and "deleted" in statuses)
        keys = self._custom_keys(company, entity, args)
        after: tuple[Any, int] | None = None
        cursor = args.get("cursor")
        if cursor:
            position = decode_cursor(cursor)
            if (
                position.get("field") != sort_by
                or position.get("sortDirection") != direction
                or not is_int(position.get("id"))
            ):
                raise bad_request("Invalid cursor")
            after = (position.get("fieldValue"), position["id"])
        if sort_by == "update_time" and direction == "asc" and since_ts is not None:
            # Skip straight to the first record at or after updated_since (incremental polls).
            after = max(after, (since_ts, 0)) if after else (since_ts, 0)
        sort_column = {"id": "id", "update_time": "_update_ts", "add_time": "_add_ts"}[sort_by]
        page: list[dict[str, Any]] = []
        more = False
        for record in data.tables[entity].iter_from(sort_by, direction == "desc", after):
            if record["is_deleted"]:
                if not want_deleted:
                    continue
            elif statuses is not None and record.get("status") not in statuses:
                continue
            if entity == "deal" and record.get("is_archived"):
                continue
            stamp = int(record["_update_ts"])
            if since_ts is not None and stamp < since_ts:
                continue
            if until_ts is not None and stamp >= until_ts:
                continue
            if ids is not None and record["id"] not in ids:
                continue
            if owner_id is not None and record["owner_id"] != owner_id:
                continue
            if org_id is not None and record.get("org_id") != org_id:
                continue
            if person_id is not None and record.get("person_id") != person_id:
                continue
            if stage_id is not None and record.get("stage_id") != stage_id:
                continue
            if pipeline_id is not None and record.get("pipeline_id") != pipeline_id:
                continue
            if len(page) == limit:
                more = True
                break
            page.append(record)
        next_cursor = None
        if more and page:
            last = page[-1]
            value = last["id"] if sort_column == "id" else int(last[sort_column])
            next_cursor = encode_cursor(
                {
                    "field": sort_by,
                    "fieldValue": value,
                    "sortDirection": direction,
                    "id": last["id"],
                }
            )
        return {
            "success": True,
            "data": [data.render(entity, record, keys) for record in page],
            "additional_data": {"next_cursor": next_cursor},
        }

    def _search(
        self, company: Company, entities: list[str], args: Mapping[str, str], *, max_limit: int
    ) -> dict[str, Any]:
        term = (args.get("term") or "").strip()
        exact = (args.get("exact_match") or "").lower() == "true"
        if len(term) < (1 if exact else 2):
            raise bad_request(
                'Validation failed: "term" must be at least 2 characters (1 with exact_match)'
            )
        limit = self._limit_arg(args, max_limit)
        wanted_fields = set(_csv(args.get("fields")))
        org_filter = self._int_arg(args, "organization_id")
        person_filter = self._int_arg(args, "person_id")
        status_filter = args.get("status")
        needle = term.lower()
        scored: list[tuple[float, int, str, dict[str, Any]]] = []
        data = company.data
        for entity in entities:
            searchable = {
                d.key: d for d in data.custom_fields(entity) if d.field_type in SEARCHABLE_TYPES
            }
            for record in data.tables[entity].records.values():
                if record["is_deleted"]:
                    continue
                if (
                    org_filter is not None
                    and entity in ("person", "deal")
                    and record.get("org_id") != org_filter
                ):
                    continue
                if (
                    person_filter is not None
                    and entity == "deal"
                    and record.get("person_id") != person_filter
                ):
                    continue
                if status_filter and entity == "deal" and record.get("status") != status_filter:
                    continue
                best = 0.0
                custom_hits: list[str] = []
                for field_name, value in _search_values(entity, record, searchable):
                    if wanted_fields and field_name not in wanted_fields:
                        continue
                    score = _match_score(needle, value, exact)
                    if score and field_name == "custom_fields":
                        custom_hits.append(value)
                    best = max(best, score)
                if best:
                    scored.append(
                        (
                            best,
                            record["id"],
                            entity,
                            self._search_item(company, entity, record, custom_hits),
                        )
                    )
        scored.sort(key=lambda item: (-item[0], item[2], item[1]))
        offset = 0
        if args.get("cursor"):
            position = decode_cursor(args["cursor"])
            if not is_int(position.get("offset")):
                raise bad_request("Invalid cursor")
            offset = position["offset"]
        window = scored[offset : offset + limit]
        next_cursor = (
            encode_cursor({"offset": offset + limit}) if offset + limit < len(scored) else None
        )
        return {
            "success": True,
            "data": {
                "items": [{"result_score": round(s, 5), "item": item} for s, _, _, item in window]
            },
            "additional_data": {"next_cursor": next_cursor},
        }

    def _search_item(
        self, company: Company, entity: str, record: dict[str, Any], custom_hits: list[str]
    ) -> dict[str, Any]:
        data = company.data

        def org_ref(org_id: int | None) -> dict[str, Any] | None:
            org = data.tables["organization"].records.get(org_id) if org_id else None
            if org is None:
                return None
            return {
                "id": org["id"],
                "name": org["name"],
                "address": (org.get("address") or {}).get("value"),
            }

        base = {
            "id": record["id"],
            "type": entity,
            "visible_to": record["visible_to"],
            "owner": {"id": record["owner_id"]},
        }
        if entity == "organization":
            return {
                **base,
                "name": record["name"],
                "address": (record.get("address") or {}).get("value"),
                "custom_fields": custom_hits,
                "notes": [],
            }
        if entity == "person":
            return {
                **base,
                "name": record["name"],
                "phones": [item["value"] for item in record["phones"]],
                "emails": [item["value"] for item in record["emails"]],
                "organization": org_ref(record.get("org_id")),
                "custom_fields": custom_hits,
                "notes": [],
            }
        person = data.tables["person"].records.get(record.get("person_id") or 0)
        return {
            **base,
            "title": record["title"],
            "value": record["value"],
            "currency": record["currency"],
            "status": record["status"],
            "stage": {"id": record["stage_id"], "name": STAGES.get(record["stage_id"])},
            "person": {"id": person["id"], "name": person["name"]} if person else None,
            "organization": org_ref(record.get("org_id")),
            "custom_fields": custom_hits,
            "notes": [],
            "is_archived": record.get("is_archived", False),
        }

    # --- fields ---------------------------------------------------------------------------------

    def _fields_v2(
        self, company: Company, token: _Token, method: str, entity: str, code: str | None
    ) -> tuple[int, Any, list[Change]]:
        data = company.data
        if code is None and method == "GET":
            limit = self._limit_arg(request.args, 500)
            offset = 0
            if request.args.get("cursor"):
                position = decode_cursor(request.args["cursor"])
                offset = position.get("offset", 0) if is_int(position.get("offset")) else 0
            items = data.fields[entity][offset : offset + limit]
            more = offset + limit < len(data.fields[entity])
            return (
                200,
                {
                    "success": True,
                    "data": [d.v2() for d in items],
                    "additional_data": {
                        "next_cursor": encode_cursor({"offset": offset + limit}) if more else None
                    },
                },
                [],
            )
        if code is None and method == "POST":
            body = self._json_body()
            if not isinstance(body, dict):
                raise bad_request("Request body must be a JSON object")
            visibility = body.get("ui_visibility") or {}
            definition = data.create_field(
                entity,
                body.get("field_name"),
                body.get("field_type"),
                body.get("options"),
                user_id=token.user_id,
                add_visible_flag=bool(visibility.get("add_visible_flag", False))
                if isinstance(visibility, dict)
                else False,
                limit=self._field_limit(company),
                description=body.get("description"),
            )
            return 200, {"success": True, "data": definition.v2()}, []
        if code is not None:
            if method == "GET":
                return 200, {"success": True, "data": data.field_by_key(entity, code).v2()}, []
            if method == "PATCH":
                definition = data.update_field(entity, code, self._json_body())
                return 200, {"success": True, "data": definition.v2()}, []
            if method == "DELETE":
                return 200, {"success": True, "data": data.delete_field(entity, code).v2()}, []
        raise SimulatorError(404, "Unknown method .")

    def _fields_v1(
        self, company: Company, token: _Token, method: str, entity: str, ident: str | None
    ) -> tuple[int, Any, list[Change]]:
        data = company.data
        if ident is None and method == "GET":
            start = self._int_arg(request.args, "start") or 0
            limit = self._limit_arg(request.args, 500)
            rows: list[dict[str, Any]] = []
            for definition in data.fields[entity]:
                rows.append(definition.v1())
                rows.extend(definition.v1_subfields())
            page = rows[start : start + limit]
            more = start + limit < len(rows)
            pagination: dict[str, Any] = {
                "start": start,
                "limit": limit,
                "more_items_in_collection": more,
            }
            if more:
                pagination["next_start"] = start + limit
            return (
                200,
                {"success": True, "data": page, "additional_data": {"pagination": pagination}},
                [],
            )
        if ident is None and method == "POST":
            body = self._json_body(allow_form=True)
            if not isinstance(body, dict):
                raise bad_request("Request body must be a JSON object")
            options = body.get("options")
            if isinstance(options, str):
                try:
                    options = json.loads(options)
                except ValueError:
                    raise bad_request('"options" must be a JSON array') from None
            add_visible = body.get("add_visible_flag", True)
            definition = data.create_field(
                entity,
                body.get("name"),
                body.get("field_type"),
                options,
                user_id=token.user_id,
                add_visible_flag=add_visible if isinstance(add_visible, bool) else True,
                limit=self._field_limit(company),
            )
            return 200, {"success": True, "data": definition.v1()}, []
        if ident is not None and ident.isdigit():
            field_def = next((d for d in data.fields[entity] if d.id == int(ident)), None)
            if field_def is None:
                raise not_found("Field not found")
            if method == "GET":
                return 200, {"success": True, "data": field_def.v1()}, []
            if method == "PUT":
                updated = data.update_field(entity, field_def.key, self._json_body(allow_form=True))
                return 200, {"success": True, "data": updated.v1()}, []
            if method == "DELETE":
                data.delete_field(entity, field_def.key)
                return 200, {"success": True, "data": {"id": field_def.id}}, []
        raise SimulatorError(404, "Unknown method .")

    # --- users ----------------------------------------------------------------------------------

    def _user_v1(self, company: Company, user: User, token: _Token) -> dict[str, Any]:
        return {
            "id": user.id,
            "name": user.name,
            "default_currency": "EUR",
            "locale": "en_US",
            "lang": 1,
            "email": user.email,
            "phone": None,
            "activated": True,
            "last_login": None,
            "created": "2020-01-01 00:00:00",
            "modified": "2020-01-01 00:00:00",
            "has_created_company": user.is_admin,
            "access": [{"app": "sales", "admin": user.is_admin, "permission_set_id": _uuid()}],
            "active_flag": True,
            "timezone_name": company.timezone,
            "timezone_offset": "+00:00",
            "role_id": 1,
            "icon_url": None,
            "is_you": user.id == token.user_id,
            "is_deleted": False,
        }

    def _user_me(self, company: Company, token: _Token) -> dict[str, Any]:
        user = company.users[token.user_id]
        return {
            **self._user_v1(company, user, token),
            "company_id": company.id,
            "company_name": company.domain.title(),
            "company_domain": company.domain,
            "company_country": "EE",
            "company_industry": "IT Services",
            "language": {"language_code": "en", "country_code": "US"},
        }

    # --- webhooks (v1 API) ----------------------------------------------------------------------

    def _webhooks_v1(
        self, company: Company, token: _Token, method: str, path: str
    ) -> tuple[int, Any, list[Change]]:
        if path == "/webhooks" and method == "GET":
            hooks = [hook.api() for hook in company.webhooks.values() if hook.is_active]
            return 200, {"status": "ok", "success": True, "data": hooks}, []
        if path == "/webhooks" and method == "POST":
            return self._create_webhook(company, token, self._json_body(allow_form=True))
        match = re.fullmatch(r"/webhooks/(\d+)", path)
        if match and method == "DELETE":
            hook = company.webhooks.get(int(match.group(1)))
            if hook is None or not hook.is_active:
                raise SimulatorError(
                    404,
                    "not found",
                    body={"status": "error", "success": False, "errors": {"id": ["not found"]}},
                )
            hook.is_active = False
            del company.webhooks[hook.id]
            return 200, {"status": "ok", "success": True}, []
        raise SimulatorError(404, "Unknown method .")

    def _create_webhook(
        self, company: Company, token: _Token, body: Any
    ) -> tuple[int, Any, list[Change]]:
        errors: dict[str, list[str]] = {}
        if not isinstance(body, dict):
            body = {}
        version = body.get("version", "2.0")
        if version not in ("1.0", "2.0"):
            errors["version"] = ["must be 1.0 or 2.0"]
        url = body.get("subscription_url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            errors["subscription_url"] = ["invalid or non-reachable URL"]
        elif (parts.hostname or "").endswith("pipedrive.com"):
            errors["subscription_url"] = [
                "Pipedrive API endpoints cannot be used as subscription_url"
            ]
        actions = {"create", "change", "delete", "*"} | (
            set(V1_ACTIONS) if version == "1.0" else set()
        )
        if body.get("event_action") not in actions:
            errors["event_action"] = [f"must be one of {sorted(actions)}"]
        objects = {
            "activity",
            "deal",
            "lead",
            "note",
            "organization",
            "person",
            "pipeline",
            "product",
            "stage",
            "user",
            "*",
        }
        if body.get("event_object") not in objects:
            errors["event_object"] = [f"must be one of {sorted(objects)}"]
        name = body.get("name")
        if not isinstance(name, str) or not name or len(name) > 255:
            errors["name"] = ["is required (up to 255 characters)"]
        user_id = body.get("user_id", token.user_id)
        if not is_int(user_id) or user_id not in company.users:
            errors["user_id"] = ["unknown user"]
        for key in ("http_auth_user", "http_auth_password"):
            if body.get(key) is not None and not isinstance(body.get(key), str):
                errors[key] = ["must be a string or null"]
        if errors:
            raise SimulatorError(
                400, "validation", body={"status": "error", "success": False, "errors": errors}
            )
        owned = sum(
            1 for hook in company.webhooks.values() if hook.user_id == user_id and hook.is_active
        )
        if owned >= self.settings.webhook_limit_per_user:
            raise SimulatorError(
                422,
                "Webhooks limit reached",
                body={
                    "status": "error",
                    "success": False,
                    "error": "Webhooks limit reached",
                    "errors": {
                        "limit": [
                            f"at most {self.settings.webhook_limit_per_user} webhooks per user"
                        ]
                    },
                },
            )
        hook = Webhook(
            id=self._next_webhook_id,
            company_domain=company.domain,
            company_id=company.id,
            owner_id=token.user_id,
            user_id=user_id,
            event_action=body["event_action"],
            event_object=body["event_object"],
            subscription_url=url,
            name=name,
            version=version,
            http_auth_user=body.get("http_auth_user"),
            http_auth_password=body.get("http_auth_password"),
            add_time=self.clock.timestamp(),
            type="application" if token.kind == "oauth" else "general",
        )
        self._next_webhook_id += 1
        company.webhooks[hook.id] = hook
        return 201, {"status": "ok", "success": True, "data": hook.api()}, []

    # --- OAuth ----------------------------------------------------------------------------------

    def _serve_oauth(self, action: str) -> Response:
        fault = self.faults.decide(request.path)
        if fault in (FaultKind.TIMEOUT, FaultKind.DROP):
            return self._network_fault(
                fault,
                "werkzeug.socket" in request.environ,
                then=lambda: self._serve_oauth_inner(action),
            )
        if fault == FaultKind.SERVER_ERROR:
            return self._json_response(_Outcome(500, _server_error_body()))
        return self._serve_oauth_inner(action)

    def _serve_oauth_inner(self, action: str) -> Response:
        with self.lock:
            if action == "authorize" and request.method == "GET":
                return self._oauth_authorize()
            if action == "token" and request.method == "POST":
                outcome = self._oauth_token()
            elif action == "revoke" and request.method == "POST":
                outcome = self._oauth_revoke()
            else:
                outcome = _Outcome(404, _error_body("Not found"))
        return self._json_response(outcome)

    def _oauth_authorize(self) -> Response:
        client_id = request.args.get("client_id", "")
        redirect_uri = request.args.get("redirect_uri", "")
        if client_id not in self._clients or not redirect_uri:
            return self._json_response(
                _Outcome(400, {"success": False, "error": "invalid_request"})
            )
        domain = request.args.get("company_domain") or (
            next(iter(self.companies)) if self.companies else None
        )
        if domain is None:
            return self._json_response(
                _Outcome(400, {"success": False, "error": "no company to install into"})
            )
        code = self.issue_authorization_code(client_id, domain, redirect_uri)
        query = {"code": code}
        if request.args.get("state") is not None:
            query["state"] = request.args["state"]
        separator = "&" if "?" in redirect_uri else "?"
        return Response(
            status=302, headers={"Location": f"{redirect_uri}{separator}{urlencode(query)}"}
        )

    def _oauth_client(self) -> str | None:
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return None
        try:
            client_id, _, client_secret = (
                base64.b64decode(header[6:].strip()).decode().partition(":")
            )
        except (ValueError, UnicodeDecodeError):
            return None
        expected = self._clients.get(client_id)
        if expected is None or not secrets.compare_digest(expected, client_secret):
            return None
        return client_id

    def _oauth_token(self) -> _Outcome:
        client_id = self._oauth_client()
        if client_id is None:
            return _Outcome(
                401,
                {
                    "success": False,
                    "error": "invalid_client",
                    "message": "Invalid client credentials",
                },
            )
        form = request.form
        grant = form.get("grant_type")
        now = self.clock.timestamp()
        if grant == "authorization_code":
            code = self._codes.get(form.get("code", ""))
            if code is None or code.client_id != client_id or code.used:
                return _oauth_error("invalid_grant", "Invalid grant: authorization code is invalid")
            if code.expires_at <= now:
                return _oauth_error(
                    "invalid_grant", "Invalid grant: authorization_code has expired"
                )
            if form.get("redirect_uri") and form.get("redirect_uri") != code.redirect_uri:
                return _oauth_error("invalid_grant", "Invalid grant: redirect_uri does not match")
            code.used = True
            refresh = (
                f"{code.user_id}:{self.companies[code.company_domain].id}:{secrets.token_hex(20)}"
            )
            self._refresh[refresh] = _RefreshToken(
                code.company_domain, code.user_id, client_id, now + self.settings.refresh_token_ttl
            )
            return _Outcome(200, self._issue_access(refresh, now))
        if grant == "refresh_token":
            value = form.get("refresh_token", "")
            stored = self._refresh.get(value)
            if stored is None or stored.revoked or stored.client_id != client_id:
                return _oauth_error("invalid_grant", "Invalid grant: refresh token is invalid")
            if stored.expires_at <= now:
                return _oauth_error("invalid_grant", "Invalid grant: refresh token has expired")
            self.oauth_refresh_count[value] += 1
            if self.settings.rotate_refresh_tokens:
                stored.revoked = True
                new_value = f"{stored.user_id}:{self.companies[stored.company_domain].id}:{secrets.token_hex(20)}"
                self._refresh[new_value] = dataclasses.replace(stored, revoked=False)
                value = new_value
            self._refresh[value].expires_at = now + self.settings.refresh_token_ttl
            return _Outcome(200, self._issue_access(value, now))
        return _oauth_error("unsupported_grant_type", "Unsupported grant type")

    @property
    def oauth_refresh_total(self) -> int:
        """Token refreshes across every refresh token."""
        return sum(self.oauth_refresh_count.values())

    def _issue_access(self, refresh_value: str, now: float) -> dict[str, Any]:
        stored = self._refresh[refresh_value]
        access = "v1u:" + secrets.token_urlsafe(32)
        # Burst windows are per app install, so a refreshed token keeps its predecessor's window.
        token_id = f"oauth:{stored.company_domain}:{stored.user_id}:{stored.client_id}"
        self._tokens[access] = _Token(
            token_id,
            "oauth",
            stored.company_domain,
            stored.user_id,
            client_id=stored.client_id,
            expires_at=now + self.settings.access_token_ttl,
            refresh_token=refresh_value,
        )
        self._token_ids[access] = token_id
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.settings.access_token_ttl,
            "refresh_token": refresh_value,
            "scope": _OAUTH_SCOPE,
            "api_domain": self.api_base(stored.company_domain),
        }

    def _oauth_revoke(self) -> _Outcome:
        if self._oauth_client() is None:
            return _Outcome(401, {"success": False, "error": "invalid_client"})
        value = request.form.get("token", "")
        if value in self._refresh:
            self._refresh[value].revoked = True
            for token in self._tokens.values():
                if token.refresh_token == value:
                    token.revoked = True
        elif value in self._tokens and self._tokens[value].kind == "oauth":
            self._tokens[value].revoked = True
        return _Outcome(200, {"success": True})

    def expire_access_tokens(self) -> None:
        """Make every OAuth access token expired now (tests of the 401 → refresh path)."""
        with self.lock:
            now = self.clock.timestamp()
            for token in self._tokens.values():
                if token.kind == "oauth":
                    token.expires_at = now


# --- helpers ---------------------------------------------------------------------------------------


def _uuid() -> str:
    return str(uuid.uuid4())


def _csv(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _coerce_form(value: str) -> Any:
    if value.isdigit():
        return int(value)
    return value


def _error_body(error: str, info: str = "Please check developers.pipedrive.com") -> dict[str, Any]:
    return pipedrive_error_body(error, info)


def _server_error_body() -> dict[str, Any]:
    return _error_body("Internal server error", "Please try again later.")


def _rate_limit_body(reason: str) -> dict[str, Any]:
    info = {
        "daily": "The daily token budget of this company has been used up. It resets at midnight.",
        "search": "Search API rate limit: 10 requests per 2 seconds.",
        "burst": "Too many requests in a rolling 2-second window.",
        "storm": "Too many requests in a rolling 2-second window.",
    }[reason]
    return _error_body("Rate limit has been exceeded", info)


def _oauth_error(error: str, message: str) -> _Outcome:
    return _Outcome(400, {"success": False, "error": error, "message": message})


def _currencies() -> list[dict[str, Any]]:
    return [
        {
            "id": index + 1,
            "code": code,
            "name": code,
            "decimal_points": 2,
            "symbol": code,
            "active_flag": True,
            "is_custom_flag": False,
        }
        for index, code in enumerate(_CURRENCIES)
    ]


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _search_values(
    entity: str, record: Mapping[str, Any], searchable: Mapping[str, FieldDef]
) -> Iterable[tuple[str, str]]:
    """(field group, text) pairs a search term is matched against."""
    if entity == "deal":
        if record.get("title"):
            yield "title", record["title"]
    elif record.get("name"):
        yield "name", record["name"]
    if entity == "organization" and record.get("address"):
        value = record["address"].get("value")
        if value:
            yield "address", value
    if entity == "person":
        for item in record.get("emails", []):
            yield "email", item["value"]
        for item in record.get("phones", []):
            yield "phone", item["value"]
    for key, definition in searchable.items():
        value = record["custom_fields"].get(key)
        if value is None:
            continue
        if definition.field_type == "monetary":
            yield "custom_fields", _num(value.get("value"))
        elif definition.field_type == "address":
            if value.get("value"):
                yield "custom_fields", value["value"]
        else:
            yield "custom_fields", _num(value)


def _match_score(needle: str, value: str, exact: bool) -> float:
    hay = value.lower()
    if hay == needle:
        return 1.0
    if exact:
        return 0.0
    if needle in hay:
        return len(needle) / len(hay)
    return 0.0


def serve(port: int, host: str = "127.0.0.1", **kwargs: Any) -> None:
    """Run a simulator on a real threaded HTTP server until interrupted (demo, e2e tests)."""
    sim = PipedriveSimulator(f"http://{host}:{port}", **kwargs)
    server = make_server(host, port, sim.app, threaded=True)
    server.serve_forever()


if __name__ == "__main__":  # pragma: no cover - manual runs
    import argparse

    parser = argparse.ArgumentParser(description="Run the Pipedrive simulator")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--host", default="127.0.0.1")
    options = parser.parse_args()
    serve(options.port, options.host)
