"""A faithful local simulator of Zoho Books API v3 and the Zoho Accounts OAuth servers.

One Flask app serves every data center on path prefixes:

- accounts server of DC ``dc``: ``/{dc}/accounts/oauth/v2/auth``, ``/{dc}/accounts/oauth/v2/token``,
  ``/{dc}/accounts/oauth/v2/token/revoke``, ``/{dc}/accounts/oauth/serverinfo``;
- Books API of DC ``dc``: ``/{dc}/api/books/v3/...``;
- a control API for tests, the demo and benchmarks under ``/_sim/`` (JSON, no auth).

In-process (``real_hosts=True`` plus :meth:`ZohoSimulator.mount` on a ``responses`` mock) the
simulator advertises and answers the real hosts (``https://accounts.zoho.eu``,
``https://www.zohoapis.eu`` ...). As a server (:func:`serve`, or ``serve_in_thread(sim.app)``) it
advertises ``{base_url}/{dc}/accounts`` and ``{base_url}/{dc}/api``.

Behaviour follows ``/work/shared/reference/zoho-books.md``: DC-bound OAuth with Zoho's limits,
``Authorization: Zoho-oauthtoken``, ``organization_id`` on every call but ``GET /organizations``,
the ``{code, message, <node>}`` envelope, rate limits 44/45/1070, fault injection, and signed
outgoing webhooks. Choices the reference marks UNCONFIRMED are constructor options.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import random
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Flask, Response, has_request_context, request
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import make_server

from connector.errors import ApiError
from connector.sandbox.common import Clock, FaultKind, Faults, InProcessFault, mount_on_responses
from connector.sandbox.spec_check import (
    SPEC_REQUEST_KEY,
    SpecCheck,
    SpecRequest,
    strict_from_env,
)
from connector.sandbox.zoho_books import (
    PLANS,
    BooksStore,
    Event,
    Organization,
    format_timestamp,
)
from connector.sandbox.zoho_oauth import DATA_CENTERS, AccessTokenInfo, TokenRequest, ZohoAccounts
from connector.sandbox.zoho_webhooks import (
    Deliver,
    WebhookConfig,
    WebhookDelivery,
    WebhookSender,
    canonical_webhook_string,
    sign_zoho_webhook,
)

__all__ = [
    "DATA_CENTERS",
    "INVALID_TOKEN_BODIES",
    "RequestRecord",
    "ZohoSimulator",
    "canonical_webhook_string",
    "serve",
    "sign_zoho_webhook",
]

DEFAULT_USER = "admin@example.com"
FULL_ACCESS = "ZohoBooks.fullaccess.all"

INVALID_TOKEN_BODIES: dict[str, dict[str, Any]] = {
    # COMMUNITY-observed Books answer for invalid/expired tokens and missing scopes (reference §6.2).
    "code57": {"code": 57, "message": "You are not authorized to perform this operation"},
    # The INVALID_TOKEN style other Zoho APIs use and issue threads quote (reference §9.1).
    "invalid_token": {
        "code": "INVALID_TOKEN",
        "details": {},
        "message": "invalid oauth token",
        "status": "error",
    },
}
NOT_AUTHORIZED = INVALID_TOKEN_BODIES["code57"]
INTERNAL_ERROR = {"code": 1000, "message": "Internal error"}
PER_MINUTE_BODY = {
    "code": 44,
    "message": (
        "For security reasons your organization has been blocked as it have exceeded the maximum "
        "number of requests per minute that can originate from an organization."
    ),
}
CONCURRENCY_BODY = {
    "code": 1070,
    "message": (
        "You have reached the maximum number of in process requests allowed. "
        "Kindly try again after some time."
    ),
}
ENTITY_NODES = {
    "contacts": "contact",
    "invoices": "invoice",
    "customerpayments": "payment",
    "bills": "bill",
    "vendorpayments": "vendorpayment",
}

_API_ROUTES = Map(
    [
        Rule("/organizations", methods=["GET"], endpoint="list_organizations"),
        Rule("/organizations/<org_id>", methods=["GET"], endpoint="get_organization"),
        Rule("/contacts", methods=["GET"], endpoint="list_contacts"),
        Rule("/contacts", methods=["POST"], endpoint="create_contact"),
        Rule("/contacts", methods=["PUT"], endpoint="upsert_contact"),
        Rule("/contacts/contactpersons", methods=["POST"], endpoint="create_person"),
        Rule("/contacts/contactpersons/<person_id>", methods=["PUT"], endpoint="update_person"),
        Rule("/contacts/contactpersons/<person_id>", methods=["DELETE"], endpoint="delete_person"),
        Rule(
            "/contacts/contactpersons/<person_id>/primary",
            methods=["POST"],
            endpoint="mark_primary",
        ),
        Rule("/contacts/<contact_id>", methods=["GET"], endpoint="get_contact"),
        Rule("/contacts/<contact_id>", methods=["PUT"], endpoint="update_contact"),
        Rule("/contacts/<contact_id>", methods=["DELETE"], endpoint="delete_contact"),
        Rule("/contacts/<contact_id>/active", methods=["POST"], endpoint="contact_active"),
        Rule("/contacts/<contact_id>/inactive", methods=["POST"], endpoint="contact_inactive"),
        Rule("/contacts/<contact_id>/contactpersons", methods=["GET"], endpoint="list_persons"),
        Rule(
            "/contacts/<contact_id>/contactpersons/<person_id>",
            methods=["GET"],
            endpoint="get_person",
        ),
        Rule("/invoices", methods=["GET"], endpoint="list_invoices"),
        Rule("/invoices", methods=["POST"], endpoint="create_invoice"),
        Rule("/invoices", methods=["PUT"], endpoint="upsert_invoice"),
        Rule("/invoices/<invoice_id>", methods=["GET"], endpoint="get_invoice"),
        Rule("/invoices/<invoice_id>", methods=["PUT"], endpoint="update_invoice"),
        Rule("/invoices/<invoice_id>", methods=["DELETE"], endpoint="delete_invoice"),
        Rule("/invoices/<invoice_id>/status/<target>", methods=["POST"], endpoint="invoice_status"),
        Rule("/invoices/<invoice_id>/payments", methods=["GET"], endpoint="invoice_payments"),
        Rule("/customerpayments", methods=["GET"], endpoint="list_payments"),
        Rule("/customerpayments", methods=["POST"], endpoint="create_payment"),
        Rule("/customerpayments/<payment_id>", methods=["GET"], endpoint="get_payment"),
        Rule("/customerpayments/<payment_id>", methods=["PUT"], endpoint="update_payment"),
        Rule("/customerpayments/<payment_id>", methods=["DELETE"], endpoint="delete_payment"),
        Rule("/bills", methods=["GET"], endpoint="list_bills"),
        Rule("/bills", methods=["POST"], endpoint="create_bill"),
        Rule("/bills/<bill_id>", methods=["GET"], endpoint="get_bill"),
        Rule("/bills/<bill_id>", methods=["PUT"], endpoint="update_bill"),
        Rule("/bills/<bill_id>", methods=["DELETE"], endpoint="delete_bill"),
        Rule("/bills/<bill_id>/status/<target>", methods=["POST"], endpoint="bill_status"),
        Rule("/vendorpayments", methods=["POST"], endpoint="create_vendor_payment"),
        Rule("/vendorpayments/<payment_id>", methods=["GET"], endpoint="get_vendor_payment"),
        Rule("/vendorpayments/<payment_id>", methods=["DELETE"], endpoint="delete_vendor_payment"),
    ],
    strict_slashes=False,
)
_SCOPE_MODULES = {
    "organizations": "settings",
    "contacts": "contacts",
    "invoices": "invoices",
    "customerpayments": "customerpayments",
    "bills": "bills",
    "vendorpayments": "vendorpayments",
}
_SCOPE_OPERATIONS = {"GET": "read", "POST": "create", "PUT": "update", "DELETE": "delete"}

Reply = tuple[int, dict[str, Any], list[Event]]


@dataclass(slots=True)
class RequestRecord:
    """One Books API request as the simulator saw it."""

    at: float
    method: str
    path: str
    organization_id: str | None
    dc: str
    status: int
    fault: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "at": self.at,
            "method": self.method,
            "path": self.path,
            "organization_id": self.organization_id,
            "dc": self.dc,
            "status": self.status,
            "fault": self.fault,
        }


@dataclass
class _OrgTraffic:
    """Rate-limit state and statistics of one organization."""

    minute_window: deque[float] = field(default_factory=deque)
    day: str = ""
    day_count: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    total: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    per_minute: dict[int, int] = field(default_factory=dict)
    limited: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "per_minute": {str(k): v for k, v in sorted(self.per_minute.items())},
            "max_per_minute": max(self.per_minute.values(), default=0),
            "rate_limited": {str(k): v for k, v in sorted(self.limited.items())},
            "day": self.day,
            "day_count": self.day_count,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }


class ZohoSimulator:
    """Zoho Books v3 + Zoho Accounts, in memory.

    Args:
        base_url: where the server listens (server mode); ``None`` uses the request's host.
        clock: time source for tokens, timestamps, rate windows and due dates.
        real_hosts: advertise the real Zoho hosts (for in-process use with :meth:`mount`).
        data_centers: DC codes served (default: all of :data:`DATA_CENTERS`, including the
            UNCONFIRMED ``uk``).
        rate_limits: enforce 100/min, the daily plan limit and concurrency (on by default).
        per_minute_limit: requests per rolling minute per organization (100).
        daily_limits: plan name -> requests per day (defaults from the reference).
        concurrency_limits: plan name -> requests in flight (default free 5, others 10).
        faults: fault rates; ``None`` means none.
        faults_after_write: fraction (0..1, or a bool) of injected faults on writes that happen
            AFTER the write was applied, so "applied but the answer was lost" can be tested.
        faults_on_accounts: also inject faults on the accounts token endpoint.
        latency_seconds: real time each API request holds its concurrency slot.
        enforce_scopes: check the token's scopes per OAS (``ZohoBooks.fullaccess.all`` allows all).
        invalid_token_style: ``code57`` (default) or ``invalid_token``; see
            :data:`INVALID_TOKEN_BODIES`.
        accept_jsonstring: accept the legacy ``JSONString`` form field (UNCONFIRMED; off: 1038).
        webhook_deliver: transport for webhooks ``(url, headers, body) -> status``.
        webhook_retries: extra delivery attempts after a failure.
        webhook_async: deliver webhooks on a background thread (``serve`` turns it on).
        request_log_limit: how many :class:`RequestRecord` entries ``request_log`` keeps.
        default_user: the Zoho user of grant codes and consent when none is named.
        **options: passed on to :class:`~connector.sandbox.zoho_oauth.ZohoAccounts` (``code_ttl``,
            ``access_ttl``, ``refresh_limit``, ``refresh_window``, ``active_token_cap``,
            ``max_refresh_tokens``, ``error_status``, ``throttle_status``,
            ``count_exchange_in_throttle``) or :class:`~connector.sandbox.zoho_books.BooksStore`
            (``unique_contact_names``, ``sent_status``, ``contacts_default_filter``,
            ``contacts_last_modified_filter``, ``list_custom_fields``).
    """

    _ACCOUNT_OPTIONS = frozenset(
        {
            "code_ttl",
            "access_ttl",
            "refresh_limit",
            "refresh_window",
            "active_token_cap",
            "max_refresh_tokens",
            "error_status",
            "throttle_status",
            "count_exchange_in_throttle",
        }
    )
    _STORE_OPTIONS = frozenset(
        {
            "unique_contact_names",
            "sent_status",
            "contacts_default_filter",
            "contacts_last_modified_filter",
            "list_custom_fields",
        }
    )

    def __init__(
        self,
        base_url: str | None = None,
        *,
        clock: Clock | None = None,
        real_hosts: bool = False,
        data_centers: Iterable[str] | None = None,
        rate_limits: bool = True,
        per_minute_limit: int = 100,
        daily_limits: Mapping[str, int] | None = None,
        concurrency_limits: Mapping[str, int] | None = None,
        faults: Faults | None = None,
        faults_after_write: float | bool = 0.0,
        faults_on_accounts: bool = False,
        latency_seconds: float = 0.0,
        enforce_scopes: bool = True,
        invalid_token_style: str = "code57",  # noqa: S107 - a preset name, not a secret
        accept_jsonstring: bool = False,
        webhook_deliver: Deliver | None = None,
        webhook_retries: int = 2,
        webhook_async: bool = False,
        request_log_limit: int = 100_000,
        default_user: str = DEFAULT_USER,
        strict: bool | None = None,
        **options: Any,
    ) -> None:
        unknown = set(options) - self._ACCOUNT_OPTIONS - self._STORE_OPTIONS
        if unknown:
            raise TypeError(f"unknown ZohoSimulator options: {sorted(unknown)}")
        if invalid_token_style not in INVALID_TOKEN_BODIES:
            raise ValueError(f"invalid_token_style must be one of {sorted(INVALID_TOKEN_BODIES)}")
        # Strict: every Books request is checked against the official specs (spec_check), on
        # unless CONNECTOR_SANDBOX_STRICT=0.
        self.spec_check = (
            SpecCheck("zoho") if (strict_from_env() if strict is None else strict) else None
        )
        self.base_url = base_url.rstrip("/") if base_url else None
        self.clock = clock or Clock()
        self.real_hosts = real_hosts
        self.data_centers = (
            frozenset(data_centers) if data_centers is not None else frozenset(DATA_CENTERS)
        )
        if not self.data_centers <= set(DATA_CENTERS):
            raise ValueError(
                f"unknown data centers: {sorted(self.data_centers - set(DATA_CENTERS))}"
            )
        self.rate_limits_enabled = rate_limits
        self.per_minute_limit = per_minute_limit
        self.daily_limits = {**PLANS, **(daily_limits or {})}
        self.concurrency_limits = dict(concurrency_limits or {})
        self.faults = faults or Faults()
        self.faults_after_write = float(faults_after_write)
        self.faults_on_accounts = faults_on_accounts
        self.latency_seconds = latency_seconds
        self.enforce_scopes = enforce_scopes
        self.invalid_token_style = invalid_token_style
        self.accept_jsonstring = accept_jsonstring
        self.default_user = default_user
        self.consent_denied = False
        self.accounts = ZohoAccounts(
            self.clock, **{k: v for k, v in options.items() if k in self._ACCOUNT_OPTIONS}
        )
        self.store = BooksStore(
            self.clock, **{k: v for k, v in options.items() if k in self._STORE_OPTIONS}
        )
        self.webhooks = WebhookSender(
            webhook_deliver, retries=webhook_retries, asynchronous=webhook_async
        )
        self.request_log: deque[RequestRecord] = deque(maxlen=request_log_limit)
        self._webhook_configs: dict[str, list[WebhookConfig]] = {}
        self._user_dc: dict[str, str] = {}
        self._traffic: dict[str, _OrgTraffic] = {}
        self._traffic_lock = threading.Lock()
        self._gate = threading.Event()
        self._gate.set()
        self._fault_rng_lock = threading.Lock()
        self._fault_rng = random.Random(self.faults.seed + 1)
        self.app = self._build_app()

    # -- hosts ---------------------------------------------------------------------------------

    def _base(self) -> str:
        if self.base_url:
            return self.base_url
        if has_request_context():
            return request.host_url.rstrip("/")
        return "http://127.0.0.1"

    def accounts_server(self, dc: str) -> str:
        """The accounts server URL the simulator advertises for ``dc`` (no trailing slash)."""
        if self.real_hosts:
            return f"https://{DATA_CENTERS[dc].accounts_host}"
        return f"{self._base()}/{dc}/accounts"

    def api_domain(self, dc: str) -> str:
        """The ``api_domain`` of ``dc``; Books lives at ``{api_domain}/books/v3``."""
        if self.real_hosts:
            return f"https://{DATA_CENTERS[dc].api_host}"
        return f"{self._base()}/{dc}/api"

    def mount(self, rsps: Any) -> None:
        """Route requests of a ``responses.RequestsMock`` to this simulator.

        With ``real_hosts`` the real Zoho hosts of every served DC are rewritten to the
        path-prefixed routes; otherwise everything under ``base_url`` is served as is.
        """
        if not self.real_hosts:
            if not self.base_url:
                raise ValueError("mount() without real_hosts needs a base_url")
            pattern = re.compile(re.escape(self.base_url) + r"(/.*)?$")
            mount_on_responses(rsps, pattern, self.app)
            return
        hosts: dict[str, tuple[str, str]] = {}
        for code in self.data_centers:
            hosts[DATA_CENTERS[code].accounts_host] = (code, "accounts")
            hosts[DATA_CENTERS[code].api_host] = (code, "api")
        pattern = re.compile(
            r"https://(" + "|".join(re.escape(host) for host in sorted(hosts)) + r")(/.*)?$"
        )

        def rewrite(url: str) -> str:
            parts = urlsplit(url)
            code, kind = hosts[parts.netloc]
            query = f"?{parts.query}" if parts.query else ""
            return f"/{code}/{kind}{parts.path}{query}"

        mount_on_responses(rsps, pattern, self.app, rewrite)

    # -- setup (Python API; the control API mirrors these) ---------------------------------------

    def register_client(
        self,
        client_id: str,
        client_secret: str,
        *,
        secrets_per_dc: Mapping[str, str] | None = None,
        data_centers: Iterable[str] | None = None,
        redirect_uris: Iterable[str] = (),
    ) -> None:
        """Register an OAuth client (same id in every DC; ``secrets_per_dc`` overrides secrets)."""
        self.accounts.register_client(
            client_id,
            client_secret,
            secrets_per_dc=secrets_per_dc,
            data_centers=tuple(data_centers) if data_centers is not None else None,
            redirect_uris=tuple(redirect_uris),
        )

    def create_organization(
        self,
        dc: str = "us",
        name: str = "Zillum",
        plan: str = "professional",
        organization_id: str | None = None,
        *,
        users: Iterable[str] | None = None,
        currency_code: str = "USD",
        custom_fields: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
    ) -> str:
        """Create an organization in ``dc`` and return its id.

        ``users`` (default: ``default_user``) may call it; each user's home DC becomes ``dc``.
        """
        if dc not in self.data_centers:
            raise ValueError(f"data center {dc!r} is not served")
        members = list(users) if users is not None else [self.default_user]
        org = self.store.create_organization(
            dc=dc,
            name=name,
            plan=plan,
            organization_id=organization_id,
            users=members,
            currency_code=currency_code,
            custom_fields=custom_fields,
        )
        for user in members:
            self._user_dc.setdefault(user, dc)
        return org.organization_id

    def add_user(self, organization_id: str, user: str) -> None:
        """Give ``user`` access to an organization."""
        with self.store.lock:
            org = self._org(organization_id)
            org.users.add(user)
            self._user_dc.setdefault(user, org.dc)

    def issue_grant_code(
        self,
        client_id: str,
        dc: str,
        *,
        user: str | None = None,
        scope: str = FULL_ACCESS,
        access_type: str = "offline",
    ) -> str:
        """A self-client grant code (valid 60 s on the clock, single use)."""
        return self.accounts.issue_grant_code(
            client_id, dc, user=user or self.default_user, scope=scope, access_type=access_type
        )

    def issue_tokens(
        self, client_id: str, dc: str, *, user: str | None = None, scope: str = FULL_ACCESS
    ) -> dict[str, Any]:
        """Refresh + access token without HTTP (not counted in ``token_requests``).

        Returns ``access_token``, ``refresh_token``, ``expires_in``, ``api_domain``,
        ``accounts_server``.
        """
        tokens = self.accounts.issue_tokens(
            client_id, dc, user=user or self.default_user, scope=scope
        )
        tokens["api_domain"] = self.api_domain(dc)
        tokens["accounts_server"] = self.accounts_server(dc)
        return tokens

    @property
    def token_requests(self) -> list[TokenRequest]:
        """Every call to a token endpoint, in order."""
        return self.accounts.token_requests

    def refresh_count(self, refresh_token: str | None = None) -> int:
        """How many refresh grants were requested (for one refresh token, or in total)."""
        return sum(
            1
            for entry in self.accounts.token_requests
            if entry.grant_type == "refresh_token"
            and (refresh_token is None or entry.refresh_token == refresh_token)
        )

    def expire_access_tokens(self, *, refresh_token: str | None = None) -> int:
        """Invalidate access tokens now; returns how many."""
        return self.accounts.expire_access_tokens(refresh_token=refresh_token)

    # -- records as a Zoho user would change them (webhooks fire) --------------------------------

    def _org(self, organization_id: str) -> Organization:
        org = self.store.orgs.get(organization_id)
        if org is None:
            raise KeyError(f"unknown organization {organization_id!r}")
        return org

    def bulk_create(
        self, organization_id: str, entity: str, records: Iterable[Mapping[str, Any]]
    ) -> list[str]:
        """Seed many ``contacts``/``invoices``/``customerpayments``/``bills``/``vendorpayments``
        fast (no webhooks, no limits).

        Invoices take an optional ``status`` of ``draft`` (default) or ``sent``; bills ``open``
        (default) or ``void``.
        """
        with self.store.lock:
            return self.store.bulk(self._org(organization_id), entity, records)

    def seed(
        self, organization_id: str, *, contacts: int = 0, invoices: int = 0, seed: int = 0
    ) -> dict[str, int]:
        """Generate synthetic contacts and sent invoices; returns the org's totals."""
        with self.store.lock:
            return self.store.seed(
                self._org(organization_id), contacts=contacts, invoices=invoices, seed=seed
            )

    def create_record(
        self, organization_id: str, entity: str, data: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Create a record as a user in the web app would (webhooks fire); returns its detail."""
        with self.store.lock:
            org = self._org(organization_id)
            if entity == "contacts":
                detail, events = self.store.create_contact(org, data)
            elif entity == "invoices":
                detail, events = self.store.create_invoice(
                    org, data, send=data.get("status") == "sent"
                )
            elif entity == "customerpayments":
                detail, events = self.store.create_payment(org, data)
            elif entity == "bills":
                detail, events = self.store.create_bill(org, data)
            elif entity == "vendorpayments":
                detail, events = self.store.create_vendor_payment(org, data)
            else:
                raise ValueError(f"unknown entity {entity!r}")
        self._fire(events)
        return detail

    def update_record(
        self, organization_id: str, entity: str, record_id: str, data: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Update a record as a user would (webhooks fire); returns its detail."""
        with self.store.lock:
            org = self._org(organization_id)
            if entity == "contacts":
                detail, events = self.store.update_contact(org, record_id, data)
            elif entity == "invoices":
                detail, events = self.store.update_invoice(org, record_id, data)
                if data.get("status") in ("sent", "void", "draft"):
                    events += self.store.set_invoice_status(org, record_id, str(data["status"]))
                    detail = self.store.render_invoice(org, org.invoices[record_id])
            elif entity == "customerpayments":
                detail, events = self.store.update_payment(org, record_id, data)
            elif entity == "bills":
                # A status alone (open/void) is the status action; other keys are a PUT.
                fields = {k: v for k, v in data.items() if k != "status"}
                detail, events = (
                    self.store.update_bill(org, record_id, fields) if fields else ({}, [])
                )
                if data.get("status") in ("open", "void"):
                    events += self.store.set_bill_status(org, record_id, str(data["status"]))
                detail = self.store.render_bill(org, org.bills[record_id])
            else:
                raise ValueError(f"unknown entity {entity!r}")
        self._fire(events)
        return detail

    def delete_record(self, organization_id: str, entity: str, record_id: str) -> None:
        """Delete a record as a user would (webhooks fire)."""
        with self.store.lock:
            org = self._org(organization_id)
            if entity == "contacts":
                events = self.store.delete_contact(org, record_id)
            elif entity == "invoices":
                events = self.store.delete_invoice(org, record_id)
            elif entity == "customerpayments":
                events = self.store.delete_payment(org, record_id)
            elif entity == "bills":
                events = self.store.delete_bill(org, record_id)
            elif entity == "vendorpayments":
                events = self.store.delete_vendor_payment(org, record_id)
            else:
                raise ValueError(f"unknown entity {entity!r}")
        self._fire(events)

    def get_record(self, organization_id: str, entity: str, record_id: str) -> dict[str, Any]:
        """The detail shape of a record (no API call counted)."""
        with self.store.lock:
            org = self._org(organization_id)
            if entity == "contacts":
                return self.store.render_contact(org, self.store.contact(org, record_id))
            if entity == "invoices":
                return self.store.render_invoice(org, self.store.invoice(org, record_id))
            if entity == "customerpayments":
                return dict(self.store.payment(org, record_id))
            if entity == "bills":
                return self.store.render_bill(org, self.store.bill(org, record_id))
            if entity == "vendorpayments":
                return dict(self.store.vendor_payment(org, record_id))
            raise ValueError(f"unknown entity {entity!r}")

    # -- webhooks ------------------------------------------------------------------------------

    def configure_webhook(
        self,
        organization_id: str,
        url: str,
        secret: str | None = None,
        events: Iterable[str] = ("invoice", "contact", "customerpayment"),
        algorithm: str = "sha256",
        encoding: str = "hex",
        body_format: str = "default",
        extra_query: Mapping[str, str] | None = None,
        *,
        actions: Iterable[str] = ("created", "updated", "deleted"),
        headers: Mapping[str, str] | None = None,
        event_param: str | None = "event_type",
    ) -> WebhookConfig:
        """Add a webhook + workflow rule to an organization and return it."""
        if body_format not in ("default", "placeholder", "form"):
            raise ValueError(f"unknown body_format {body_format!r}")
        sign_zoho_webhook("probe", {}, b"", algorithm, encoding)  # validates the two names
        self._org(organization_id)
        config = WebhookConfig(
            organization_id=organization_id,
            url=url,
            secret=secret,
            events=tuple(events),
            actions=tuple(actions),
            algorithm=algorithm,
            encoding=encoding,
            body_format=body_format,
            extra_query=dict(extra_query or {}),
            headers=dict(headers or {}),
            event_param=event_param,
            webhook_id=self.store.new_id(),
        )
        self._webhook_configs.setdefault(organization_id, []).append(config)
        return config

    def clear_webhooks(self, organization_id: str | None = None) -> None:
        """Remove the webhooks of one organization (or all)."""
        if organization_id is None:
            self._webhook_configs.clear()
        else:
            self._webhook_configs.pop(organization_id, None)

    def send_webhook(
        self, organization_id: str, entity: str, entity_id: str, action: str = "updated"
    ) -> list[WebhookDelivery]:
        """Fire webhooks for a record now (e.g. to replay one); ``entity`` is singular."""
        plural = {
            "contact": "contacts",
            "invoice": "invoices",
            "customerpayment": "customerpayments",
            "bill": "bills",
            "vendorpayment": "vendorpayments",
        }
        record = self.get_record(organization_id, plural[entity], entity_id)
        return self._fire([Event(organization_id, entity, action, entity_id, record)])

    @property
    def webhook_log(self) -> deque[WebhookDelivery]:
        """Every webhook event, delivered, failed or dropped (bounded)."""
        return self.webhooks.log

    @property
    def webhooks_dropped(self) -> bool:
        """When true, webhook events are logged but never sent (Zoho dropping them)."""
        return self.webhooks.dropped

    @webhooks_dropped.setter
    def webhooks_dropped(self, value: bool) -> None:
        self.webhooks.dropped = value

    @property
    def webhook_drop_rate(self) -> float:
        """Fraction (0..1) of webhook events silently dropped."""
        return self.webhooks.drop_rate

    @webhook_drop_rate.setter
    def webhook_drop_rate(self, value: float) -> None:
        self.webhooks.drop_rate = value

    def flush_webhooks(self, timeout: float = 10.0) -> bool:
        """Wait for background deliveries; ``True`` when all are done."""
        return self.webhooks.flush(timeout)

    def _fire(self, events: list[Event]) -> list[WebhookDelivery]:
        deliveries = []
        now = self.clock.now()
        for event in events:
            for config in list(self._webhook_configs.get(event.organization_id, ())):
                if event.entity not in config.events or event.action not in config.actions:
                    continue
                delivery = self.webhooks.build(
                    config,
                    entity=event.entity,
                    action=event.action,
                    entity_id=event.entity_id,
                    record=event.record,
                    now=now,
                )
                self.webhooks.submit(delivery)
                deliveries.append(delivery)
        return deliveries

    # -- knobs ---------------------------------------------------------------------------------

    def set_faults(self, *, faults_after_write: float | bool | None = None, **rates: Any) -> None:
        """Change fault rates (see :class:`~connector.sandbox.common.Faults`)."""
        if rates:
            self.faults.configure(**rates)
        if faults_after_write is not None:
            self.faults_after_write = float(faults_after_write)

    def set_rate_limits(
        self,
        enabled: bool | None = None,
        *,
        per_minute: int | None = None,
        daily: Mapping[str, int] | int | None = None,
        concurrency: Mapping[str, int] | int | None = None,
    ) -> None:
        """Switch rate limits and change their sizes (an int ``daily``/``concurrency`` = all plans)."""
        if enabled is not None:
            self.rate_limits_enabled = enabled
        if per_minute is not None:
            self.per_minute_limit = per_minute
        if isinstance(daily, int):
            self.daily_limits = dict.fromkeys(PLANS, daily)
        elif daily is not None:
            self.daily_limits.update(daily)
        if isinstance(concurrency, int):
            self.concurrency_limits = dict.fromkeys(PLANS, concurrency)
        elif concurrency is not None:
            self.concurrency_limits.update(concurrency)

    def advance_clock(self, seconds: float) -> None:
        """Move the simulator clock forward."""
        self.clock.advance(seconds)

    def set_clock(self, when: dt.datetime) -> None:
        """Jump the simulator clock."""
        self.clock.set(when)

    def pause_requests(self) -> None:
        """Hold every API request (in flight, counting for 1070) until :meth:`resume_requests`."""
        self._gate.clear()

    def resume_requests(self) -> None:
        """Release held API requests."""
        self._gate.set()

    def in_flight(self, organization_id: str) -> int:
        """API requests of an organization being processed right now."""
        with self._traffic_lock:
            traffic = self._traffic.get(organization_id)
            return traffic.in_flight if traffic else 0

    def reset_traffic(self) -> None:
        """Forget rate-limit windows, statistics and the request log."""
        with self._traffic_lock:
            self._traffic.clear()
            self.request_log.clear()

    # -- inspection ----------------------------------------------------------------------------

    def stats(self, organization_id: str | None = None) -> dict[str, Any]:
        """Per-organization request statistics (total, per-minute histogram, 429s by code)."""
        with self._traffic_lock:
            if organization_id is not None:
                traffic = self._traffic.get(organization_id)
                return traffic.as_dict() if traffic else _OrgTraffic().as_dict()
            return {org_id: traffic.as_dict() for org_id, traffic in self._traffic.items()}

    def state_counts(self) -> dict[str, Any]:
        """Record counts per organization plus token-store sizes."""
        with self.store.lock:
            orgs = {
                org_id: {
                    "dc": org.dc,
                    "plan": org.plan,
                    "contacts": len(org.contacts),
                    "invoices": len(org.invoices),
                    "customerpayments": len(org.payments),
                    "bills": len(org.bills),
                    "vendorpayments": len(org.vendor_payments),
                }
                for org_id, org in self.store.orgs.items()
            }
        return {
            "organizations": orgs,
            "accounts": self.accounts.counts(),
            "webhooks": {
                "configured": sum(len(v) for v in self._webhook_configs.values()),
                "events": len(self.webhooks.log),
                "delivered": sum(1 for d in self.webhooks.log if d.delivered),
                "dropped": sum(1 for d in self.webhooks.log if d.dropped),
            },
            "requests": len(self.request_log),
            "now": format_timestamp(self.clock.now()),
        }

    def dump_state(self) -> dict[str, Any]:
        """Every organization with its records in detail shape (no secrets)."""
        with self.store.lock:
            orgs: dict[str, Any] = {}
            for org_id, org in self.store.orgs.items():
                summary: dict[str, Any] = org.summary()
                summary.update(dc=org.dc, users=sorted(org.users))
                orgs[org_id] = {
                    "organization": summary,
                    "custom_fields": {
                        entity: [vars(d) for d in defs]
                        for entity, defs in org.custom_fields.items()
                    },
                    "contacts": [self.store.render_contact(org, c) for c in org.contacts.values()],
                    "invoices": [self.store.render_invoice(org, i) for i in org.invoices.values()],
                    "customerpayments": [
                        {k: v for k, v in p.items() if not k.startswith("_")}
                        for p in org.payments.values()
                    ],
                    "bills": [self.store.render_bill(org, b) for b in org.bills.values()],
                    "vendorpayments": [
                        {k: v for k, v in p.items() if not k.startswith("_")}
                        for p in org.vendor_payments.values()
                    ],
                    "webhooks": [c.public() for c in self._webhook_configs.get(org_id, [])],
                }
        return {
            "organizations": orgs,
            **{k: v for k, v in self.state_counts().items() if k != "organizations"},
        }

    # -- Flask app -----------------------------------------------------------------------------

    def _build_app(self) -> Flask:
        app = Flask("zoho_simulator")
        # InProcessFault must reach the responses adapter instead of becoming a Flask 500.
        app.config["PROPAGATE_EXCEPTIONS"] = True
        app.add_url_rule(
            "/<dc>/accounts/oauth/v2/auth", "oauth_auth", self._oauth_auth, methods=["GET", "POST"]
        )
        app.add_url_rule(
            "/<dc>/accounts/oauth/v2/token", "oauth_token", self._oauth_token, methods=["POST"]
        )
        app.add_url_rule(
            "/<dc>/accounts/oauth/v2/token/revoke",
            "oauth_revoke",
            self._oauth_revoke,
            methods=["POST"],
        )
        app.add_url_rule(
            "/<dc>/accounts/oauth/serverinfo", "oauth_serverinfo", self._oauth_serverinfo
        )
        app.add_url_rule(
            "/<dc>/api/books/v3/<path:subpath>",
            "books_api",
            self._books_api,
            methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
        )
        from connector.sandbox.zoho_control import register_control_routes

        register_control_routes(app, self)
        return app

    # -- accounts routes -----------------------------------------------------------------------

    def _oauth_auth(self, dc: str) -> Response:
        if dc not in self.data_centers:
            return _json({"error": "invalid_dc"}, 404)
        params = {**request.args.to_dict(), **request.form.to_dict()}
        client_id = params.get("client_id", "")
        redirect_uri = params.get("redirect_uri", "")
        if not self.accounts.client_known(client_id, dc):
            return _json({"error": "invalid_client"}, 400)
        if not redirect_uri or not self.accounts.redirect_allowed(client_id, redirect_uri):
            return _json({"error": "redirect_uri_mismatch"}, 400)
        state = params.get("state")
        denied = self.consent_denied or params.get("sim_deny") in ("1", "true")
        if denied:
            return _redirect(redirect_uri, {"error": "access_denied", "state": state})
        if params.get("response_type", "code") != "code":
            return _redirect(redirect_uri, {"error": "unsupported_response_type", "state": state})
        scope = params.get("scope", "")
        if not scope:
            return _redirect(redirect_uri, {"error": "invalid_scope", "state": state})
        user = params.get("sim_user") or self.default_user
        # Zoho sends the user to their own DC, whatever server the request started at.
        home = self._user_dc.get(user, dc)
        code = self.accounts.issue_grant_code(
            client_id,
            home,
            user=user,
            scope=scope,
            access_type=params.get("access_type", "online"),
            prompt=params.get("prompt"),
            redirect_uri=redirect_uri,
        )
        return _redirect(
            redirect_uri,
            {
                "state": state,
                "code": code,
                "location": home,
                "accounts-server": self.accounts_server(home),
            },
        )

    def _token_params(self) -> dict[str, str]:
        params = {**request.args.to_dict(), **request.form.to_dict()}
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                client_id, secret = "", ""
            params.setdefault("client_id", client_id)
            params.setdefault("client_secret", secret)
        return params

    def _oauth_token(self, dc: str) -> Response:
        if dc not in self.data_centers:
            return _json({"error": "invalid_dc"}, 404)
        fault = self.faults.decide(request.path) if self.faults_on_accounts else None
        if fault is not None and not self._fault_after_write():
            return self._inject(fault, None)
        status, body = self.accounts.token(dc, self._token_params(), self.api_domain(dc))
        response = _json(body, status)
        if fault is not None:
            return self._inject(fault, response)
        return response

    def _oauth_revoke(self, dc: str) -> Response:
        if dc not in self.data_centers:
            return _json({"error": "invalid_dc"}, 404)
        params = self._token_params()
        status, body = self.accounts.revoke(dc, params.get("token", ""))
        return _json(body, status)

    def _oauth_serverinfo(self, dc: str) -> Response:
        if dc not in self.data_centers:
            return _json({"error": "invalid_dc"}, 404)
        locations = {code: self.accounts_server(code) for code in sorted(self.data_centers)}
        return _json({"result": "success", "locations": locations})

    # -- Books API -----------------------------------------------------------------------------

    def _books_api(self, dc: str, subpath: str) -> Response:
        method = request.method
        path = "/" + subpath
        org_id = request.args.get("organization_id")
        record = RequestRecord(self.clock.timestamp(), method, path, org_id, dc, 0)
        try:
            response = self._books_pipeline(dc, path, record)
        except InProcessFault as fault:
            record.fault = fault.kind
            self._log(record)
            raise
        record.status = response.status_code
        self._log(record)
        return response

    def _books_pipeline(self, dc: str, path: str, record: RequestRecord) -> Response:
        if dc not in self.data_centers:
            return _json({"code": 5, "message": "Invalid URL Passed"}, 404)
        token = self._authenticate(dc)
        if token is None:
            return _json(INVALID_TOKEN_BODIES[self.invalid_token_style], 401)
        try:
            endpoint, params = _API_ROUTES.bind("zoho").match(path, method=request.method)
        except NotFound:
            return _json({"code": 5, "message": "Invalid URL Passed"}, 404)
        except MethodNotAllowed:
            return _json({"code": 5, "message": "Invalid URL Passed"}, 405)
        if not self._scope_allows(token, path, request.method):
            return _json(NOT_AUTHORIZED, 401)
        org: Organization | None = None
        if endpoint != "list_organizations":
            org = self._organization_for(token, dc, record.organization_id)
            if org is None:
                return _json(
                    {
                        "code": 6041,
                        "message": (
                            "This user is not associated with the CompanyID/CompanyName:"
                            f"{record.organization_id or ''}."
                        ),
                    },
                    400,
                )
        traffic: _OrgTraffic | None = None
        if org is not None:
            limited = self._admit(org)
            if limited is not None:
                return limited
            traffic = self._traffic[org.organization_id]
        try:
            refused = self._spec_refusal(path)
            if refused is not None:
                return refused
            return self._process(endpoint, params, org, token, path, record)
        finally:
            if traffic is not None:
                with self._traffic_lock:
                    traffic.in_flight -= 1

    def _process(
        self,
        endpoint: str,
        params: Mapping[str, Any],
        org: Organization | None,
        token: AccessTokenInfo,
        path: str,
        record: RequestRecord,
    ) -> Response:
        if not self._gate.is_set():
            self._gate.wait(timeout=60)
        if self.latency_seconds:
            time.sleep(self.latency_seconds)
        fault = self.faults.decide(path)
        is_write = request.method in ("POST", "PUT", "DELETE")
        after = fault is not None and is_write and self._fault_after_write()
        if fault is not None and not after:
            record.fault = fault
            return self._inject(fault, None)
        try:
            with self.store.lock:
                status, body, events = getattr(self, f"_ep_{endpoint}")(org, token, **params)
        except ApiError as error:
            response = _json({"code": error.code, "message": error.message}, error.status or 400)
        else:
            self._fire(events)
            response = _json({"code": 0, **body}, status)
        if fault is not None:
            record.fault = fault
            return self._inject(fault, response)
        return response

    def _spec_refusal(self, path: str) -> Response | None:
        """The official spec's answer to this request, when it refuses it (strict mode)."""
        if self.spec_check is None:
            return None
        content_type = request.content_type or ""
        body = request.get_data(cache=True)
        if self.accept_jsonstring and request.mimetype in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            # The legacy JSONString form field carries the JSON document (zoho-books.md §2.4, UNCONFIRMED).
            content_type, body = "application/json", request.form.get("JSONString", "").encode()
        spec_request = SpecRequest(
            request.method,
            "/books/v3" + path,
            request.args,
            dict(request.headers),
            content_type,
            body,
        )
        request.environ[SPEC_REQUEST_KEY] = spec_request
        refusal = self.spec_check.refusal(spec_request)
        return None if refusal is None else _json(refusal.body, refusal.status)

    def _fault_after_write(self) -> bool:
        with self._fault_rng_lock:
            return (
                self.faults_after_write > 0 and self._fault_rng.random() < self.faults_after_write
            )

    def _inject(self, kind: str, answer: Response | None) -> Response:
        """Apply a decided fault. ``answer`` is the real response when the write already happened."""
        if kind == FaultKind.SERVER_ERROR:
            return _json(INTERNAL_ERROR, 500)
        sock = request.environ.get("werkzeug.socket")
        if sock is None:
            # In-process: the responses adapter turns this into a requests exception.
            raise InProcessFault(kind)
        if kind == FaultKind.TIMEOUT:
            time.sleep(self.faults.timeout_seconds)
            return answer if answer is not None else _json(INTERNAL_ERROR, 500)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        return Response(b"", status=500)

    def _authenticate(self, dc: str) -> AccessTokenInfo | None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        # Zoho reads tokens only from this header; a token in the query string is ignored.
        if scheme != "Zoho-oauthtoken" or not value.strip():
            return None
        info = self.accounts.validate_access(value.strip())
        if info is None or info.dc != dc:
            return None
        return info

    def _scope_allows(self, token: AccessTokenInfo, path: str, method: str) -> bool:
        if not self.enforce_scopes:
            return True
        scopes = token.scopes
        if FULL_ACCESS.lower() in scopes:
            return True
        module = _SCOPE_MODULES.get(path.strip("/").split("/", 1)[0], "")
        operation = _SCOPE_OPERATIONS.get(method, "")
        return f"zohobooks.{module}.{operation}" in scopes or f"zohobooks.{module}.all" in scopes

    def _organization_for(
        self, token: AccessTokenInfo, dc: str, organization_id: str | None
    ) -> Organization | None:
        if not organization_id:
            return None
        org = self.store.orgs.get(organization_id)
        if org is None or org.dc != dc or token.user not in org.users:
            return None
        return org

    def _admit(self, org: Organization) -> Response | None:
        """Count the request against the org's limits; a 429 response when over one."""
        now = self.clock.timestamp()
        today = self.clock.now().date().isoformat()
        with self._traffic_lock:
            traffic = self._traffic.setdefault(org.organization_id, _OrgTraffic())
            if traffic.day != today:
                traffic.day, traffic.day_count = today, 0
            window = traffic.minute_window
            while window and window[0] <= now - 60:
                window.popleft()
            limited: tuple[int, dict[str, Any]] | None = None
            if self.rate_limits_enabled:
                daily = self.daily_limits.get(org.plan, org.daily_limit)
                concurrency = self.concurrency_limits.get(org.plan, org.concurrency_limit)
                if traffic.day_count >= daily:
                    limited = (
                        45,
                        {
                            "code": 45,
                            "message": (
                                "The API call for this organization has exceeded the maximum "
                                f"call rate limit of {daily}."
                            ),
                        },
                    )
                elif len(window) >= self.per_minute_limit:
                    limited = (44, PER_MINUTE_BODY)
                elif traffic.in_flight >= concurrency:
                    limited = (1070, CONCURRENCY_BODY)
            if limited is not None:
                traffic.limited[limited[0]] = traffic.limited.get(limited[0], 0) + 1
                # No Retry-After header: Zoho documents none (reference §6.3).
                return _json(limited[1], 429)
            window.append(now)
            traffic.day_count += 1
            traffic.in_flight += 1
            traffic.max_in_flight = max(traffic.max_in_flight, traffic.in_flight)
            return None

    def _log(self, record: RequestRecord) -> None:
        self.request_log.append(record)
        if not record.organization_id:
            return
        with self._traffic_lock:
            traffic = self._traffic.setdefault(record.organization_id, _OrgTraffic())
            traffic.total += 1
            traffic.statuses[record.status] = traffic.statuses.get(record.status, 0) + 1
            minute = int(record.at // 60)
            traffic.per_minute[minute] = traffic.per_minute.get(minute, 0) + 1

    def _body(self) -> dict[str, Any]:
        raw = request.get_data(cache=True)
        if self.accept_jsonstring and request.mimetype in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            raw = request.form.get("JSONString", "").encode()
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            raise ApiError("JSON is not well formed", system="zoho-sim", status=400, code=1038)
        return data

    # -- endpoints -----------------------------------------------------------------------------
    # Each returns (status, body without "code", events) and runs under the store lock.

    def _ep_list_organizations(self, org: Organization | None, token: AccessTokenInfo) -> Reply:
        orgs = [
            o.summary()
            for o in self.store.orgs.values()
            if o.dc == token.dc and token.user in o.users
        ]
        if orgs:
            orgs[0]["is_default_org"] = True
        return 200, {"message": "success", "organizations": orgs}, []

    def _ep_get_organization(
        self, org: Organization | None, token: AccessTokenInfo, org_id: str
    ) -> Reply:
        target = self.store.orgs.get(org_id)
        if target is None or target.dc != token.dc or token.user not in target.users:
            raise ApiError("Organization does not exist.", system="zoho-sim", status=404, code=1002)
        return 200, {"message": "success", "organization": target.summary()}, []

    def _ep_list_contacts(self, org: Organization, token: AccessTokenInfo) -> Reply:
        return 200, {"message": "success", **self.store.list_contacts(org, request.args)}, []

    def _ep_create_contact(self, org: Organization, token: AccessTokenInfo) -> Reply:
        detail, events = self.store.create_contact(org, self._body())
        return 201, {"message": "The contact has been created", "contact": detail}, events

    def _upsert(self, org: Organization, entity: str) -> tuple[str | None, str, bool]:
        key = request.headers.get("X-Unique-Identifier-Key", "")
        value = request.headers.get("X-Unique-Identifier-Value", "")
        if not key:
            raise ApiError(
                "X-Unique-Identifier-Key is required.", system="zoho-sim", status=400, code=4
            )
        if not value:
            raise ApiError(
                "X-Unique-Identifier-Value is required.", system="zoho-sim", status=400, code=4
            )
        upsert = request.headers.get("X-Upsert", "").lower() == "true"
        return self.store.find_by_unique(org, entity, key, value), key, upsert

    def _ep_upsert_contact(self, org: Organization, token: AccessTokenInfo) -> Reply:
        found, key, upsert = self._upsert(org, "contact")
        data = self._body()
        if found is not None:
            detail, events = self.store.update_contact(org, found, data)
            return (
                200,
                {"message": "Contact has been updated successfully", "contact": detail},
                events,
            )
        if not upsert:
            raise ApiError("Contact does not exist.", system="zoho-sim", status=404, code=1002)
        value = request.headers["X-Unique-Identifier-Value"]
        fields = [f for f in data.get("custom_fields") or [] if f.get("api_name") != key]
        detail, events = self.store.create_contact(
            org, {**data, "custom_fields": [*fields, {"api_name": key, "value": value}]}
        )
        # PUT /contacts declares only 200 (contacts.yml), also when the upsert creates.
        return 200, {"message": "The contact has been created", "contact": detail}, events

    def _ep_get_contact(self, org: Organization, token: AccessTokenInfo, contact_id: str) -> Reply:
        contact = self.store.contact(org, contact_id)
        return 200, {"message": "success", "contact": self.store.render_contact(org, contact)}, []

    def _ep_update_contact(
        self, org: Organization, token: AccessTokenInfo, contact_id: str
    ) -> Reply:
        detail, events = self.store.update_contact(org, contact_id, self._body())
        return 200, {"message": "Contact has been updated successfully", "contact": detail}, events

    def _ep_delete_contact(
        self, org: Organization, token: AccessTokenInfo, contact_id: str
    ) -> Reply:
        events = self.store.delete_contact(org, contact_id)
        return 200, {"message": "The contact has been deleted."}, events

    def _ep_contact_active(
        self, org: Organization, token: AccessTokenInfo, contact_id: str
    ) -> Reply:
        events = self.store.set_contact_status(org, contact_id, "active")
        return 200, {"message": "The contact has been marked as active."}, events

    def _ep_contact_inactive(
        self, org: Organization, token: AccessTokenInfo, contact_id: str
    ) -> Reply:
        events = self.store.set_contact_status(org, contact_id, "inactive")
        return 200, {"message": "The contact has been marked as inactive."}, events

    def _ep_list_persons(self, org: Organization, token: AccessTokenInfo, contact_id: str) -> Reply:
        return (
            200,
            {"message": "success", **self.store.list_persons(org, contact_id, request.args)},
            [],
        )

    def _ep_get_person(
        self, org: Organization, token: AccessTokenInfo, contact_id: str, person_id: str
    ) -> Reply:
        person = self.store.person(org, person_id)
        if person["contact_id"] != contact_id:
            raise ApiError(
                "Contact person does not exist.", system="zoho-sim", status=404, code=1002
            )
        return 200, {"message": "success", "contact_person": person}, []

    def _ep_create_person(self, org: Organization, token: AccessTokenInfo) -> Reply:
        person, events = self.store.create_person(org, self._body())
        # The official example wraps the created person in a list.
        return (
            201,
            {"message": "The contactperson has been Created", "contact_person": [person]},
            events,
        )

    def _ep_update_person(self, org: Organization, token: AccessTokenInfo, person_id: str) -> Reply:
        person, events = self.store.update_person(org, person_id, self._body())
        return (
            200,
            {"message": "The contactperson details has been updated.", "contact_person": person},
            events,
        )

    def _ep_delete_person(self, org: Organization, token: AccessTokenInfo, person_id: str) -> Reply:
        events = self.store.delete_person(org, person_id)
        return 200, {"message": "The contact person has been deleted."}, events

    def _ep_mark_primary(self, org: Organization, token: AccessTokenInfo, person_id: str) -> Reply:
        events = self.store.mark_primary(org, person_id)
        return (
            200,
            {"message": "This contact person has been marked as your primary contact person."},
            events,
        )

    def _ep_list_invoices(self, org: Organization, token: AccessTokenInfo) -> Reply:
        return 200, {"message": "success", **self.store.list_invoices(org, request.args)}, []

    def _ep_create_invoice(self, org: Organization, token: AccessTokenInfo) -> Reply:
        send = request.args.get("send", "").lower() == "true"
        detail, events = self.store.create_invoice(org, self._body(), send=send)
        return 201, {"message": "The invoice has been created.", "invoice": detail}, events

    def _ep_upsert_invoice(self, org: Organization, token: AccessTokenInfo) -> Reply:
        found, key, upsert = self._upsert(org, "invoice")
        data = self._body()
        if found is not None:
            detail, events = self.store.update_invoice(org, found, data)
            return (
                200,
                {"message": "Invoice information has been updated.", "invoice": detail},
                events,
            )
        if not upsert:
            raise ApiError("Invoice does not exist.", system="zoho-sim", status=404, code=1002)
        value = request.headers["X-Unique-Identifier-Value"]
        fields = [f for f in data.get("custom_fields") or [] if f.get("api_name") != key]
        detail, events = self.store.create_invoice(
            org, {**data, "custom_fields": [*fields, {"api_name": key, "value": value}]}
        )
        # PUT /invoices declares only 200 (invoices.yml), also when the upsert creates.
        return 200, {"message": "The invoice has been created.", "invoice": detail}, events

    def _ep_get_invoice(self, org: Organization, token: AccessTokenInfo, invoice_id: str) -> Reply:
        invoice = self.store.invoice(org, invoice_id)
        return 200, {"message": "success", "invoice": self.store.render_invoice(org, invoice)}, []

    def _ep_update_invoice(
        self, org: Organization, token: AccessTokenInfo, invoice_id: str
    ) -> Reply:
        detail, events = self.store.update_invoice(org, invoice_id, self._body())
        return 200, {"message": "Invoice information has been updated.", "invoice": detail}, events

    def _ep_delete_invoice(
        self, org: Organization, token: AccessTokenInfo, invoice_id: str
    ) -> Reply:
        events = self.store.delete_invoice(org, invoice_id)
        return 200, {"message": "The invoice has been deleted."}, events

    def _ep_invoice_status(
        self, org: Organization, token: AccessTokenInfo, invoice_id: str, target: str
    ) -> Reply:
        events = self.store.set_invoice_status(org, invoice_id, target)
        return (
            200,
            {"message": f"Invoice status has been changed to {target.capitalize()}."},
            events,
        )

    def _ep_invoice_payments(
        self, org: Organization, token: AccessTokenInfo, invoice_id: str
    ) -> Reply:
        return (
            200,
            {"message": "success", "payments": self.store.invoice_payments(org, invoice_id)},
            [],
        )

    def _ep_list_payments(self, org: Organization, token: AccessTokenInfo) -> Reply:
        return 200, {"message": "success", **self.store.list_payments(org, request.args)}, []

    def _ep_create_payment(self, org: Organization, token: AccessTokenInfo) -> Reply:
        detail, events = self.store.create_payment(org, self._body())
        return 201, {"message": "The payment has been created.", "payment": detail}, events

    def _ep_get_payment(self, org: Organization, token: AccessTokenInfo, payment_id: str) -> Reply:
        payment = self.store.payment(org, payment_id)
        detail = {k: v for k, v in payment.items() if not k.startswith("_")}
        return 200, {"message": "success", "payment": detail}, []

    def _ep_update_payment(
        self, org: Organization, token: AccessTokenInfo, payment_id: str
    ) -> Reply:
        detail, events = self.store.update_payment(org, payment_id, self._body())
        return 200, {"message": "The payment details have been updated.", "payment": detail}, events

    def _ep_delete_payment(
        self, org: Organization, token: AccessTokenInfo, payment_id: str
    ) -> Reply:
        events = self.store.delete_payment(org, payment_id)
        return 200, {"message": "The payment has been deleted."}, events

    def _ep_list_bills(self, org: Organization, token: AccessTokenInfo) -> Reply:
        return 200, {"message": "success", **self.store.list_bills(org, request.args)}, []

    def _ep_create_bill(self, org: Organization, token: AccessTokenInfo) -> Reply:
        detail, events = self.store.create_bill(org, self._body())
        return 201, {"message": "The bill has been created.", "bill": detail}, events

    def _ep_get_bill(self, org: Organization, token: AccessTokenInfo, bill_id: str) -> Reply:
        bill = self.store.bill(org, bill_id)
        return 200, {"message": "success", "bill": self.store.render_bill(org, bill)}, []

    def _ep_update_bill(self, org: Organization, token: AccessTokenInfo, bill_id: str) -> Reply:
        detail, events = self.store.update_bill(org, bill_id, self._body())
        return 200, {"message": "Bill information has been updated.", "bill": detail}, events

    def _ep_delete_bill(self, org: Organization, token: AccessTokenInfo, bill_id: str) -> Reply:
        events = self.store.delete_bill(org, bill_id)
        return 200, {"message": "The bill has been deleted."}, events

    def _ep_bill_status(
        self, org: Organization, token: AccessTokenInfo, bill_id: str, target: str
    ) -> Reply:
        events = self.store.set_bill_status(org, bill_id, target)
        return 200, {"message": f"Bill status has been changed to {target.capitalize()}."}, events

    def _ep_create_vendor_payment(self, org: Organization, token: AccessTokenInfo) -> Reply:
        detail, events = self.store.create_vendor_payment(org, self._body())
        return 201, {"message": "The payment has been made.", "vendorpayment": detail}, events

    def _ep_get_vendor_payment(
        self, org: Organization, token: AccessTokenInfo, payment_id: str
    ) -> Reply:
        payment = self.store.vendor_payment(org, payment_id)
        detail = {k: v for k, v in payment.items() if not k.startswith("_")}
        return 200, {"message": "success", "vendorpayment": detail}, []

    def _ep_delete_vendor_payment(
        self, org: Organization, token: AccessTokenInfo, payment_id: str
    ) -> Reply:
        events = self.store.delete_vendor_payment(org, payment_id)
        return 200, {"message": "The payment has been deleted."}, events


def _integral(value: Any) -> Any:
    """Zoho writes whole amounts without a fraction (``"amount": 750``, ``0`` next to ``149.97``
    in ../shared/recordings/zoho_api/); the store keeps floats."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def _json(body: Mapping[str, Any], status: int = 200) -> Response:
    return Response(
        json.dumps(_integral(body), separators=(",", ":")),
        status=status,
        content_type="application/json;charset=UTF-8",
    )


def _redirect(target: str, params: Mapping[str, str | None]) -> Response:
    query = urlencode([(k, v) for k, v in params.items() if v is not None])
    joiner = "&" if "?" in target else "?"
    response = Response(b"", status=302)
    response.headers["Location"] = f"{target}{joiner}{query}"
    return response


def serve(port: int, host: str = "127.0.0.1", **sim_kwargs: Any) -> None:
    """Run a simulator as a real threaded HTTP server until interrupted.

    ``base_url`` defaults to ``http://{host}:{port}`` and webhooks are delivered on a
    background thread.
    """
    sim_kwargs.setdefault("base_url", f"http://{host}:{port}")
    sim_kwargs.setdefault("webhook_async", True)
    simulator = ZohoSimulator(**sim_kwargs)
    server = make_server(host, port, simulator.app, threaded=True)
    server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    """``python -m connector.sandbox.zoho --port 8091``."""
    parser = argparse.ArgumentParser(description="Zoho Books + Zoho Accounts simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--no-rate-limits", action="store_true")
    args = parser.parse_args(argv)
    serve(args.port, args.host, rate_limits=not args.no_rate_limits)


if __name__ == "__main__":
    main()
