"""The Zoho Books v3 API client.

Every request goes to ``{api_domain}/books/v3`` with ``Authorization: Zoho-oauthtoken ...`` in
a header (never in the URL), carries ``organization_id`` as a query parameter (except the
discovery call ``GET /organizations``), sends JSON bodies only, and has a timeout. Endpoints are
grouped by resource: ``client.contacts.get(id)``, ``client.invoices.iter(...)``.

The ``api_domain`` follows the shared token (a token response may move it). An
:class:`~connector.errors.InvalidTokenError` makes the client ask the token manager for a
replacement once and retry once; a second refusal is a missing scope.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol
from urllib.parse import quote

import requests

from connector.errors import ApiError, ConfigError, InvalidTokenError, ServerError
from connector.http import BaseClient, RetryPolicy
from connector.zoho.errors import error_from_response, parse_envelope
from connector.zoho.pagination import MAX_PER_PAGE, PagePaginator
from connector.zoho.times import format_zoho_time, parse_zoho_time

__all__ = [
    "Limiter",
    "StaticTokens",
    "TokenProvider",
    "ZohoBooksClient",
    "format_zoho_time",
    "parse_zoho_time",
]

Record = dict[str, Any]


class TokenProvider(Protocol):
    """What the client needs from a token manager (:class:`~connector.zoho.auth.ZohoTokenManager`)."""

    def get_access_token(self) -> str:
        """The current access token."""
        ...

    def invalidate(self, rejected_token: str) -> str:
        """Replace a refused token (unless already replaced) and return the one to retry with."""
        ...

    def current_api_domain(self) -> str | None:
        """The api_domain that came with the current token, if known."""
        ...


class Limiter(Protocol):
    """The shared rate limiter (:class:`connector.zoho.limiter.ZohoLimiter`)."""

    def acquire(self, *, max_wait: float = ...) -> AbstractContextManager[Any]:
        """Wait for a slot; the result holds a concurrency lease until exited."""
        ...

    def observe(self, status: int, code: int | None) -> None:
        """Learn from a rate-limit answer."""
        ...


class StaticTokens:
    """A fixed access token (connect time, before the connection exists, and tests)."""

    def __init__(self, access_token: str, api_domain: str | None = None) -> None:
        self._token = access_token
        self._api_domain = api_domain

    def __repr__(self) -> str:
        return "StaticTokens(***)"

    def get_access_token(self) -> str:
        """The fixed token."""
        return self._token

    def invalidate(self, rejected_token: str) -> str:
        """A fixed token cannot be replaced; the retry tells a scope problem from a bad token."""
        return self._token

    def current_api_domain(self) -> str | None:
        """The api_domain given at construction."""
        return self._api_domain


def _segment(value: str | int) -> str:
    # IDs go into paths; quoting keeps a hostile id from changing the path.
    return quote(str(value), safe="")


class ZohoBooksClient(BaseClient):
    """Zoho Books API v3 for one organization.

    Args:
        tokens: the access-token source (a :class:`~connector.zoho.auth.ZohoTokenManager`).
        organization_id: sent with every call except ``GET /organizations``.
        api_domain: the token response's ``api_domain`` (e.g. ``https://www.zohoapis.eu``);
            the token manager's current value wins when it has one.
        limiter: shared rate limiter; ``None`` sends without limiting.
        session: injected HTTP session.
        timeout: seconds for every request.
        retry: retry policy for retryable errors.
        sleep: injectable sleep.
        limiter_max_wait: longest wait for a limiter slot before raising ``RateLimitError``.
        reset_timezone: zone whose midnight resets the daily budget (UNCONFIRMED, configurable).
        now: clock for the daily reset time on a code 45.
    """

    system = "zoho"

    def __init__(
        self,
        tokens: TokenProvider,
        *,
        organization_id: str,
        api_domain: str,
        limiter: Limiter | None = None,
        session: requests.Session | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        limiter_max_wait: float = 5.0,
        reset_timezone: str = "UTC",
        now: Callable[[], dt.datetime] | None = None,
    ) -> None:
        super().__init__(session=session, timeout=timeout, retry=retry, sleep=sleep)
        if not str(organization_id).strip():
            raise ConfigError(["a Zoho organization_id is required"])
        if not api_domain and not tokens.current_api_domain():
            raise ConfigError(["a Zoho api_domain is required (from the token response)"])
        self.tokens = tokens
        self.organization_id = str(organization_id).strip()
        self._api_domain = api_domain.rstrip("/")
        self.limiter = limiter
        self.limiter_max_wait = limiter_max_wait
        self.reset_timezone = reset_timezone
        self._now = now
        self._state = threading.local()
        self.organizations = OrganizationsService(self)
        self.contacts = ContactsService(self)
        self.contact_persons = ContactPersonsService(self)
        self.invoices = InvoicesService(self)
        self.payments = PaymentsService(self)
        self.bills = BillsService(self)
        self.vendor_payments = VendorPaymentsService(self)

    def __repr__(self) -> str:
        return f"ZohoBooksClient(organization_id={self.organization_id!r})"

    @property
    def api_domain(self) -> str:
        """Where API calls go now (follows the shared token's ``api_domain``)."""
        return (self.tokens.current_api_domain() or self._api_domain).rstrip("/")

    @property
    def base_url(self) -> str:
        """``{api_domain}/books/v3``."""
        return f"{self.api_domain}/books/v3"

    # The one request path --------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        with_organization: bool = True,
        retry_writes: bool = False,
    ) -> Record:
        """Send one API call and return the parsed envelope.

        Args:
            method: HTTP method.
            path: path under ``/books/v3`` (starting with ``/``).
            params: query parameters (``organization_id`` is added).
            json: JSON body.
            headers: extra headers.
            with_organization: False only for ``GET /organizations``.
            retry_writes: the write is idempotent (PUT, state changes), so a timeout may be retried.
        """
        query = dict(params or {})
        if with_organization:
            query["organization_id"] = self.organization_id
        self._state.token_was_fresh = False
        # Fetch (and if due, refresh) the token before building the URL: a refresh may move
        # the api_domain, and the URL must follow it.
        self._state.token = self.tokens.get_access_token()
        result: Record = self.request(
            method,
            f"{self.base_url}{path}",
            params=query,
            json=json,
            headers=headers,
            retry_writes=retry_writes,
        )
        return result

    def iter_pages(
        self,
        path: str,
        node: str,
        params: Mapping[str, Any] | None = None,
        *,
        per_page: int = MAX_PER_PAGE,
    ) -> Iterator[Record]:
        """Yield every item of a paged list, one page in memory at a time."""
        paginator = PagePaginator(per_page=per_page)
        base = {k: v for k, v in (params or {}).items() if v is not None}
        while not paginator.finished:
            body = self.call("GET", path, params={**base, **paginator.params()})
            if node not in body:
                # A missing node is a renamed node, not an empty list: the OAS's
                # customer_payments read as "no payments" against live Zoho's customerpayments.
                raise ServerError(
                    f"Zoho answered GET {path} without its {node!r} list node"
                    f" (keys: {sorted(body)})",
                    system=self.system,
                )
            items = body.get(node) or []
            paginator.advance(body, len(items))
            yield from items

    # BaseClient hooks -----------------------------------------------------------------------

    def prepare(self, method: str, url: str, headers: dict[str, str]) -> None:
        """Attach the shared access token (refreshed by the token manager when due)."""
        token = self.tokens.get_access_token()
        self._state.token = token
        headers["Authorization"] = f"Zoho-oauthtoken {token}"
        headers.setdefault("Accept", "application/json")

    def before_send(self, method: str, url: str) -> int:
        """Take a slot from the shared limiter (one request of the org's budget)."""
        if self.limiter is None:
            return 0
        permit = self.limiter.acquire(max_wait=self.limiter_max_wait)
        permit.__enter__()
        self._state.permit = permit
        return 1

    def after_response(self, method: str, url: str, response: requests.Response | None) -> None:
        """Give the concurrency slot back and tell the limiter about rate-limit answers."""
        permit = getattr(self._state, "permit", None)
        self._state.permit = None
        if permit is not None:
            permit.__exit__(None, None, None)
        if self.limiter is not None and response is not None and response.status_code == 429:
            code, _ = parse_envelope(response.text or "")
            self.limiter.observe(response.status_code, code)

    def classify(self, response: requests.Response) -> Any:
        """Return the envelope of a success (``code`` 0), raise the mapped error otherwise."""
        status = response.status_code
        if 200 <= status < 300:
            if not response.content:
                return {}
            try:
                body = response.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise ServerError(
                    f"Zoho answered HTTP {status} with a body that is not a JSON object",
                    system=self.system,
                    status=status,
                )
            if body.get("code") in (None, 0, "0"):
                return body
        raise error_from_response(
            response,
            token_was_fresh=bool(getattr(self._state, "token_was_fresh", False)),
            now=self._now,
            reset_timezone=self.reset_timezone,
        )

    def on_error(self, error: ApiError, attempt: int) -> bool:
        """Replace a refused token once and retry once."""
        if isinstance(error, InvalidTokenError) and not getattr(
            self._state, "token_was_fresh", False
        ):
            rejected = getattr(self._state, "token", None) or ""
            self.tokens.invalidate(rejected)
            self._state.token_was_fresh = True
            return True
        return False


class _Service:
    def __init__(self, client: ZohoBooksClient) -> None:
        self._client = client


class OrganizationsService(_Service):
    """``/organizations``."""

    def list(self) -> list[Record]:
        """Organizations the token can see (the one call without ``organization_id``)."""
        body = self._client.call("GET", "/organizations", with_organization=False)
        return list(body.get("organizations") or [])

    def get(self, organization_id: str) -> Record:
        """One organization's details."""
        body = self._client.call("GET", f"/organizations/{_segment(organization_id)}")
        return dict(body.get("organization") or {})


class ContactsService(_Service):
    """``/contacts``: customers and vendors."""

    def iter(self, *, per_page: int = MAX_PER_PAGE, **filters: Any) -> Iterator[Record]:
        """Every contact matching ``filters`` (list shape: no addresses or persons)."""
        return self._client.iter_pages("/contacts", "contacts", filters, per_page=per_page)

    def get(self, contact_id: str) -> Record:
        """One contact, full shape."""
        body = self._client.call("GET", f"/contacts/{_segment(contact_id)}")
        return dict(body.get("contact") or {})

    def create(self, body: Mapping[str, Any]) -> Record:
        """Create a contact (``contact_name`` is required)."""
        answer = self._client.call("POST", "/contacts", json=dict(body))
        return dict(answer.get("contact") or {})

    def update(self, contact_id: str, body: Mapping[str, Any]) -> Record:
        """Update a contact."""
        answer = self._client.call(
            "PUT", f"/contacts/{_segment(contact_id)}", json=dict(body), retry_writes=True
        )
        return dict(answer.get("contact") or {})

    def upsert_by_custom_field(
        self, api_name: str, value: str, body: Mapping[str, Any], *, create: bool = True
    ) -> Record:
        """Update the contact whose unique custom field equals ``value``; create it if missing.

        Idempotent under retries, which makes it the safe way to write a contact keyed by a
        Pipedrive id (reference §4.1).

        Args:
            api_name: the custom field's API name (``cf_`` is added when missing).
            value: the unique value to match.
            body: contact fields.
            create: send ``X-Upsert: true`` (create when nothing matches).
        """
        key = api_name if api_name.startswith("cf_") else f"cf_{api_name}"
        headers = {"X-Unique-Identifier-Key": key, "X-Unique-Identifier-Value": str(value)}
        if create:
            headers["X-Upsert"] = "true"
        answer = self._client.call(
            "PUT", "/contacts", json=dict(body), headers=headers, retry_writes=True
        )
        return dict(answer.get("contact") or {})

    def mark_active(self, contact_id: str) -> Record:
        """Mark a contact active."""
        return self._client.call(
            "POST", f"/contacts/{_segment(contact_id)}/active", retry_writes=True
        )

    def mark_inactive(self, contact_id: str) -> Record:
        """Mark a contact inactive."""
        return self._client.call(
            "POST", f"/contacts/{_segment(contact_id)}/inactive", retry_writes=True
        )


class ContactPersonsService(_Service):
    """``/contacts/.../contactpersons``."""

    def list(self, contact_id: str) -> list[Record]:
        """The persons of one contact."""
        return list(
            self._client.iter_pages(
                f"/contacts/{_segment(contact_id)}/contactpersons", "contact_persons"
            )
        )

    def get(self, contact_id: str, contact_person_id: str) -> Record:
        """One person of a contact."""
        body = self._client.call(
            "GET",
            f"/contacts/{_segment(contact_id)}/contactpersons/{_segment(contact_person_id)}",
        )
        return _one(body.get("contact_person"))

    def create(self, body: Mapping[str, Any]) -> Record:
        """Create a person; ``body`` must carry ``contact_id``."""
        if not body.get("contact_id"):
            raise ConfigError(["a contact person needs the contact_id of its contact"])
        answer = self._client.call("POST", "/contacts/contactpersons", json=dict(body))
        return _one(answer.get("contact_person"))

    def update(self, contact_person_id: str, body: Mapping[str, Any]) -> Record:
        """Update a person."""
        answer = self._client.call(
            "PUT",
            f"/contacts/contactpersons/{_segment(contact_person_id)}",
            json=dict(body),
            retry_writes=True,
        )
        return _one(answer.get("contact_person"))

    def delete(self, contact_person_id: str) -> Record:
        """Delete a person."""
        return self._client.call(
            "DELETE", f"/contacts/contactpersons/{_segment(contact_person_id)}", retry_writes=True
        )

    def mark_primary(self, contact_person_id: str) -> Record:
        """Make a person the contact's primary person."""
        return self._client.call(
            "POST",
            f"/contacts/contactpersons/{_segment(contact_person_id)}/primary",
            retry_writes=True,
        )


class InvoicesService(_Service):
    """``/invoices``."""

    def iter(
        self,
        last_modified_since: dt.datetime | None = None,
        *,
        per_page: int = MAX_PER_PAGE,
        **filters: Any,
    ) -> Iterator[Record]:
        """Every invoice matching ``filters``, optionally modified after ``last_modified_since``.

        The timestamp is sent as ``YYYY-MM-DDThh:mm:ss+0000``; the ``+`` is percent-encoded.
        """
        if last_modified_since is not None:
            filters["last_modified_time"] = format_zoho_time(last_modified_since)
        return self._client.iter_pages("/invoices", "invoices", filters, per_page=per_page)

    def get(self, invoice_id: str) -> Record:
        """One invoice, with line items."""
        body = self._client.call("GET", f"/invoices/{_segment(invoice_id)}")
        return dict(body.get("invoice") or {})

    def payments(self, invoice_id: str) -> list[Record]:
        """Payments applied to one invoice."""
        body = self._client.call("GET", f"/invoices/{_segment(invoice_id)}/payments")
        return list(body.get("payments") or [])


class PaymentsService(_Service):
    """``/customerpayments``."""

    def iter(self, *, per_page: int = MAX_PER_PAGE, **filters: Any) -> Iterator[Record]:
        """Every customer payment matching ``filters``.

        The list node is ``customerpayments``: the OAS says ``customer_payments``, but a recorded
        live answer (``shared/recordings/zoho_api/customerpayments_list.json``) has no underscore.
        """
        return self._client.iter_pages(
            "/customerpayments", "customerpayments", filters, per_page=per_page
        )

    def get(self, payment_id: str) -> Record:
        """One customer payment."""
        body = self._client.call("GET", f"/customerpayments/{_segment(payment_id)}")
        return dict(body.get("payment") or {})


class BillsService(_Service):
    """``/bills``: what the organization owes its vendors (scope ``ZohoBooks.bills.READ``)."""

    def iter(
        self,
        last_modified_since: dt.datetime | None = None,
        *,
        vendor_id: str | None = None,
        per_page: int = MAX_PER_PAGE,
        **filters: Any,
    ) -> Iterator[Record]:
        """Every bill matching ``filters`` (list shape), optionally of one vendor."""
        if last_modified_since is not None:
            filters["last_modified_time"] = format_zoho_time(last_modified_since)
        if vendor_id is not None:
            filters["vendor_id"] = str(vendor_id)
        return self._client.iter_pages("/bills", "bills", filters, per_page=per_page)

    def get(self, bill_id: str) -> Record:
        """One bill, with line items."""
        body = self._client.call("GET", f"/bills/{_segment(bill_id)}")
        return dict(body.get("bill") or {})


class VendorPaymentsService(_Service):
    """``/vendorpayments`` (scope ``ZohoBooks.vendorpayments.READ``)."""

    def get(self, payment_id: str) -> Record:
        """One payment made to a vendor, with the bills it pays."""
        body = self._client.call("GET", f"/vendorpayments/{_segment(payment_id)}")
        return dict(body.get("vendorpayment") or {})


def _one(node: Any) -> Record:
    # The OAS shows contact_person as a one-element array on create; accept both shapes.
    if isinstance(node, list):
        return dict(node[0]) if node else {}
    return dict(node or {})
