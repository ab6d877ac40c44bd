"""A thin Pipedrive client: v2 for organizations, persons, deals and fields; v1 where v2 has none.

Reference §3.1: v1 CRUD is out of support, so entities go through ``/api/v2``; ``/v1`` is used
only for ``users/me`` and webhooks (and fields when a company's v2 fields API is missing).

Every request first asks the shared rate limiter for its token cost (taken from the official
spec's ``x-token-cost``, :mod:`connector.pipedrive.costs`), then feeds the response headers back
to it. Pages are 500 items: the cost is per request, not per record, so big pages are cheapest.

Usage::

    client = PipedriveClient(ApiTokenAuth(token), base_url="https://acme.pipedrive.com")
    for org in client.organizations.iter_updated_since(high_water_mark):
        ...
"""

from __future__ import annotations

import builtins
import datetime as dt
import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from redis.exceptions import RedisError

from connector.errors import ApiError, ConfigError, InvalidTokenError, NotFoundError
from connector.http import BaseClient, RetryPolicy
from connector.pipedrive.auth import PipedriveAuth
from connector.pipedrive.costs import cost_for, is_search
from connector.pipedrive.errors import classify_response, is_html
from connector.pipedrive.pagination import CursorPaginator, OffsetPaginator
from connector.ratelimit import Priority

__all__ = [
    "FIELD_ENTITIES",
    "PAGE_LIMIT",
    "PipedriveClient",
    "RateLimiter",
    "format_timestamp",
]

#: The largest page Pipedrive serves (v2 lists and per-entity searches).
PAGE_LIMIT = 500
#: Entities whose custom fields the sync reads and creates.
FIELD_ENTITIES = ("deal", "person", "organization")
V1 = "/v1"
V2 = "/api/v2"


class RateLimiter(Protocol):
    """The part of :class:`connector.pipedrive.limiter.PipedriveLimiter` the client uses."""

    def acquire(
        self,
        cost: int,
        *,
        search: bool = False,
        priority: Priority = Priority.SCHEDULED,
        max_wait: float = 5.0,
    ) -> Any:
        """Wait for a slot and spend ``cost``; raise RateLimitError/BudgetExhaustedError."""

    def observe(
        self, status: int, headers: Mapping[str, str], *, body_is_html: bool = False
    ) -> None:
        """Correct the shared state from a response."""


def format_timestamp(when: dt.datetime) -> str:
    """RFC 3339 in UTC with whole seconds, as ``updated_since`` wants (reference §3.8).

    Fractions are dropped downwards: ``updated_since`` is inclusive, so truncating can only
    return a boundary record again (which the caller dedupes), never skip one.

    Raises:
        ValueError: ``when`` is naive.
    """
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("timestamps must be timezone-aware")
    return when.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _query_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return format_timestamp(value)
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(str(_query_value(v)) for v in value)
    return value


def _params(filters: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _query_value(v) for k, v in filters.items() if v is not None}


def jsonable(value: Any) -> Any:
    """Make a body JSON-ready without loosening types (v2 is strict, reference §3.2).

    Decimals become numbers (ints when whole), never strings; everything else is left as given.
    """
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _api_path(url: str) -> str:
    """The API part of a URL (``/api/v2/...`` or ``/v1/...``), whatever prefix the host uses."""
    path = urlsplit(url).path
    for marker in ("/api/", "/v1/"):
        index = path.find(marker)
        if index >= 0:
            return path[index:]
    return path


class _Resource:
    def __init__(self, client: PipedriveClient) -> None:
        self._client = client


class _Entity(_Resource):
    plural = ""

    def get(self, entity_id: int | str) -> dict[str, Any]:
        """One record by id (cost 1).

        Raises:
            NotFoundError: no such record.
        """
        return self._client.record("GET", f"{V2}/{self.plural}/{entity_id}")

    def iter(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every record matching ``filters`` (v2 list filters), page by page, 500 at a time."""
        params = {"limit": PAGE_LIMIT, **_params(filters)}
        yield from self._client.iter_cursor(f"{V2}/{self.plural}", params)

    def iter_updated_since(self, since: dt.datetime, **filters: Any) -> Iterator[dict[str, Any]]:
        """Records with ``update_time >= since``, oldest first (inclusive: dedupe the boundary)."""
        return self.iter(
            updated_since=format_timestamp(since),
            sort_by="update_time",
            sort_direction="asc",
            **filters,
        )

    def search(
        self,
        term: str,
        *,
        fields: list[str] | tuple[str, ...] | None = None,
        exact_match: bool = False,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """The first page of search results (cost 20), best first.

        Each item is the result's ``item`` with its ``result_score`` added.
        """
        params: dict[str, Any] = {"term": term, "limit": min(limit, PAGE_LIMIT)}
        if fields:
            params["fields"] = ",".join(fields)
        if exact_match:
            params["exact_match"] = "true"
        body = self._client.call("GET", f"{V2}/{self.plural}/search", params=params)
        data = body.get("data") or {}
        results: list[dict[str, Any]] = []
        for entry in data.get("items") or []:
            item = dict(entry.get("item") or {})
            item["result_score"] = entry.get("result_score")
            results.append(item)
        return results

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a record (cost 5). A timeout raises UncertainWriteError: search before repeating."""
        return self._client.record("POST", f"{V2}/{self.plural}", json=jsonable(body))

    def update(self, entity_id: int | str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Change fields of a record with PATCH (cost 5); ``None`` clears a field."""
        return self._client.record(
            "PATCH", f"{V2}/{self.plural}/{entity_id}", json=jsonable(body), retry_writes=True
        )

    def delete(self, entity_id: int | str) -> dict[str, Any]:
        """Soft-delete a record (cost 3); Pipedrive purges it after 30 days."""
        return self._client.record("DELETE", f"{V2}/{self.plural}/{entity_id}", retry_writes=True)


class Organizations(_Entity):
    """``/api/v2/organizations``."""

    plural = "organizations"


class Persons(_Entity):
    """``/api/v2/persons``."""

    plural = "persons"

    def iter(self, *, org_id: int | None = None, **filters: Any) -> Iterator[dict[str, Any]]:
        """Persons, optionally of one organization."""
        return super().iter(org_id=org_id, **filters)


class Deals(_Entity):
    """``/api/v2/deals`` (archived deals are not listed here, reference §8.7)."""

    plural = "deals"

    def iter(
        self,
        *,
        org_id: int | None = None,
        status: str | None = None,
        **filters: Any,
    ) -> Iterator[dict[str, Any]]:
        """Deals, optionally of one organization and/or status (open, won, lost, deleted)."""
        return super().iter(org_id=org_id, status=status, **filters)


class Users(_Resource):
    """``/v1/users`` (there is no ``/api/v2/users/me``)."""

    def me(self) -> dict[str, Any]:
        """The token's user, with ``company_id`` and ``company_domain`` (cost 2)."""
        return self._client.record("GET", f"{V1}/users/me")


class Webhooks(_Resource):
    """``/v1/webhooks`` (no v2 path exists; needs the ``admin`` scope with OAuth)."""

    def list(self) -> list[dict[str, Any]]:
        """Every webhook of the company visible to this user."""
        data = self._client.data("GET", f"{V1}/webhooks")
        return list(data) if isinstance(data, list) else []

    def create(
        self,
        url: str,
        *,
        event_action: str,
        event_object: str,
        name: str,
        http_auth_user: str | None = None,
        http_auth_password: str | None = None,
        version: str = "2.0",
        user_id: int | None = None,
    ) -> dict[str, Any]:
        """Subscribe ``url`` to ``event_action``/``event_object`` events."""
        body: dict[str, Any] = {
            "subscription_url": url,
            "event_action": event_action,
            "event_object": event_object,
            "name": name,
            "version": version,
        }
        if http_auth_user is not None:
            body["http_auth_user"] = http_auth_user
        if http_auth_password is not None:
            body["http_auth_password"] = http_auth_password
        if user_id is not None:
            body["user_id"] = user_id
        return self._client.record("POST", f"{V1}/webhooks", json=body)

    def delete(self, webhook_id: int | str) -> None:
        """Remove a webhook."""
        self._client.call("DELETE", f"{V1}/webhooks/{webhook_id}", retry_writes=True)


def _field_from_v1(field: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "field_code": field.get("key"),
        "field_name": field.get("name"),
        "field_type": field.get("field_type"),
        "options": field.get("options"),
        "is_custom_field": bool(field.get("edit_flag")),
        "is_subfield": bool(field.get("is_subfield")),
    }


class Fields(_Resource):
    """Field definitions of deals, persons and organizations.

    v2 (``/api/v2/{entity}Fields``, since 2025-12-10) costs half of v1; a company where it
    answers 404 falls back to ``/v1/{entity}Fields`` for the rest of this client's life.
    Results are always in the v2 shape (``field_code``, ``field_name``, ``field_type``,
    ``options``, ``is_custom_field``).
    """

    def __init__(self, client: PipedriveClient) -> None:
        super().__init__(client)
        self.use_v1 = False

    @staticmethod
    def _check(entity: str) -> None:
        if entity not in FIELD_ENTITIES:
            raise ValueError(f"entity must be one of {FIELD_ENTITIES}, not {entity!r}")

    def list(self, entity: str) -> list[dict[str, Any]]:
        """Every field of ``entity`` (``deal``, ``person`` or ``organization``)."""
        self._check(entity)
        if not self.use_v1:
            try:
                return list(self._client.iter_cursor(f"{V2}/{entity}Fields", {"limit": PAGE_LIMIT}))
            except NotFoundError:
                self.use_v1 = True
        paginator = OffsetPaginator(PAGE_LIMIT)
        fields: builtins.list[dict[str, Any]] = []
        while not paginator.finished:
            body = self._client.call("GET", f"{V1}/{entity}Fields", params=paginator.params())
            fields.extend(_field_from_v1(f) for f in body.get("data") or [])
            paginator.advance(body)
        return fields

    def create(
        self,
        entity: str,
        name: str,
        field_type: str,
        options: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Create a custom field; the answer's ``field_code`` is its 40-character key."""
        self._check(entity)
        option_list = [{"label": label} for label in options] if options else None
        if not self.use_v1:
            body: dict[str, Any] = {"field_name": name, "field_type": field_type}
            if option_list:
                body["options"] = option_list
            try:
                return self._client.record("POST", f"{V2}/{entity}Fields", json=body)
            except NotFoundError:
                self.use_v1 = True
        v1_body: dict[str, Any] = {"name": name, "field_type": field_type}
        if option_list:
            v1_body["options"] = option_list
        return _field_from_v1(self._client.record("POST", f"{V1}/{entity}Fields", json=v1_body))


class PipedriveClient(BaseClient):
    """Pipedrive API client for one company.

    Args:
        auth: :class:`~connector.pipedrive.auth.ApiTokenAuth` or
            :class:`~connector.pipedrive.auth.PipedriveOAuth`.
        base_url: the company's API base (``https://acme.pipedrive.com``). ``None`` follows the
            OAuth token's ``api_domain``, re-read on every call since the domain may change.
        limiter: the shared rate limiter; ``None`` sends without asking (tests, one-off scripts).
        session: injected ``requests.Session``.
        timeout: seconds per request.
        retry: retry policy for burst 429s, 5xx and network errors.
        sleep: injectable sleep for retries.
        priority: the limiter priority of this client's requests.
    """

    system = "pipedrive"

    def __init__(
        self,
        auth: PipedriveAuth,
        *,
        base_url: str | None = None,
        limiter: RateLimiter | None = None,
        session: requests.Session | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        priority: Priority = Priority.SCHEDULED,
    ) -> None:
        super().__init__(session=session, timeout=timeout, retry=retry, sleep=sleep)
        self.auth = auth
        self.base_url = base_url.rstrip("/") if base_url else None
        self.limiter = limiter
        self.priority = priority
        self._sent_headers: dict[str, str] = {}
        self.organizations = Organizations(self)
        self.persons = Persons(self)
        self.deals = Deals(self)
        self.users = Users(self)
        self.webhooks = Webhooks(self)
        self.fields = Fields(self)

    def __repr__(self) -> str:
        return f"PipedriveClient(base_url={self.base_url!r}, auth={self.auth.kind})"

    # Requests -----------------------------------------------------------------------------

    def api_base(self) -> str:
        """The base URL the next request goes to."""
        if self.base_url:
            return self.base_url
        domain = self.auth.api_domain()
        if domain:
            return domain.rstrip("/")
        raise ConfigError(["the Pipedrive API base URL is unknown (no base_url, no api_domain)"])

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        retry_writes: bool = False,
    ) -> dict[str, Any]:
        """Send ``method path`` (``/api/v2/...`` or ``/v1/...``) and return the whole body."""
        base = self.api_base()
        send = functools.partial(
            self.request,
            method,
            params=params,
            json=json,
            headers={"Accept": "application/json"},
            retry_writes=retry_writes,
        )
        try:
            body = send(f"{base}{path}")
        except InvalidTokenError:
            # The refresh after the 401 may have moved the company to another api_domain; the
            # old host then refuses even the new token, so try once more at the new one.
            if self.base_url or self.api_base() == base:
                raise
            body = send(f"{self.api_base()}{path}")
        return body if isinstance(body, dict) else {"data": body}

    def data(self, method: str, path: str, **kwargs: Any) -> Any:
        """Like :meth:`call`, returning only the envelope's ``data``."""
        return self.call(method, path, **kwargs).get("data")

    def record(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """Like :meth:`data`, for endpoints whose ``data`` is one object."""
        data = self.data(method, path, **kwargs)
        return data if isinstance(data, dict) else {}

    def iter_cursor(self, path: str, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Yield the items of every page of a v2 cursor list, one page in memory at a time."""
        paginator = CursorPaginator()
        while not paginator.finished:
            body = self.call("GET", path, params={**params, **paginator.params()})
            data = body.get("data") or []
            yield from data
            paginator.advance(body)

    # BaseClient hooks ---------------------------------------------------------------------

    def prepare(self, method: str, url: str, headers: dict[str, str]) -> None:
        """Add the credentials; remembered so a 401 can tell which token was refused."""
        self.auth.apply(headers)
        self._sent_headers = dict(headers)

    def before_send(self, method: str, url: str) -> int:
        """Spend the operation's token cost with the shared limiter (may wait or raise)."""
        path = _api_path(url)
        cost = cost_for(method, path)
        if self.limiter is not None:
            self.limiter.acquire(cost, search=is_search(path), priority=self.priority)
        return cost

    def after_response(self, method: str, url: str, response: requests.Response | None) -> None:
        """Feed rate-limit headers back to the shared limiter."""
        if self.limiter is None or response is None:
            return
        self.limiter.observe(
            response.status_code,
            response.headers,
            body_is_html=response.status_code >= 400 and is_html(response),
        )

    def classify(self, response: requests.Response) -> Any:
        """Parsed body, or the error from the one status table in :mod:`.errors`."""
        return classify_response(response, auth_kind=self.auth.kind, reset_at=self._reset_at)

    def on_error(self, error: ApiError, attempt: int) -> bool:
        """On an OAuth 401: refresh (unless another process already did) and retry once."""
        if isinstance(error, InvalidTokenError) and self.auth.kind == "oauth":
            return self.auth.handle_unauthorized(self._sent_headers)
        return False

    def _reset_at(self) -> dt.datetime | None:
        status = getattr(self.limiter, "status", None)
        if status is None:
            return None
        try:
            reset_at = getattr(status(), "reset_at", None)
        except (ApiError, RedisError):
            return None
        return reset_at if isinstance(reset_at, dt.datetime) else None
