"""Zoho connection lifecycle: connect, build a client, ping, and the proactive token refresh.

These are the library functions the CLI, the web OAuth callback and the Beat job call. They
take an :class:`~connector.context.AppContext` and open their own database sessions.
"""

from __future__ import annotations

import logging
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import sqlalchemy as sa

from connector.connections import ZOHO, ConnectGuard
from connector.context import AppContext
from connector.errors import AuthError, ConfigError, ConnectorError, WrongOrganizationError
from connector.models import Connection
from connector.settings import Secret
from connector.zoho.auth import (
    TokenResponse,
    ZohoTokenManager,
    exchange_grant_code,
    refresh_access_token,
)
from connector.zoho.client import Limiter, StaticTokens, ZohoBooksClient
from connector.zoho.regions import (
    DATA_CENTERS,
    dc_from_accounts_server,
    dc_from_api_domain,
    dc_from_location,
    resolve_accounts_server,
    table_api_domain,
)

__all__ = [
    "PingResult",
    "RefreshOutcome",
    "build_token_manager",
    "build_zoho_client",
    "connect_zoho",
    "generate_webhook_secret",
    "ping",
    "refresh_due_tokens",
]

logger = logging.getLogger(__name__)

WEBHOOK_SECRET_LENGTH = 32  # Zoho accepts 12-50 alphanumeric characters (reference §7.1)


@dataclass(frozen=True)
class PingResult:
    """What ``connector zoho ping`` shows for one connection."""

    name: str
    organization_id: str
    data_center: str
    organization_name: str | None
    token_age: float | None
    ok: bool
    error: str | None = None


@dataclass(frozen=True)
class RefreshOutcome:
    """One connection's result in the scheduled refresh."""

    connection_id: int
    name: str
    refreshed: bool
    error: str | None = None


def generate_webhook_secret(length: int = WEBHOOK_SECRET_LENGTH) -> str:
    """A random alphanumeric secret Zoho accepts for webhook signing (12-50 characters)."""
    if not 12 <= length <= 50:
        raise ConfigError(["a Zoho webhook secret must be 12 to 50 characters long"])
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _client_credentials(context: AppContext) -> tuple[str, Secret]:
    settings = context.settings
    problems = []
    if not settings.zoho_client_id:
        problems.append("ZOHO_CLIENT_ID is not set (the Zoho API console's client id)")
    if not settings.zoho_client_secret:
        problems.append("ZOHO_CLIENT_SECRET is not set (the Zoho API console's client secret)")
    if problems:
        raise ConfigError(problems)
    return settings.zoho_client_id, settings.zoho_client_secret


def _describe(organizations: list[dict[str, Any]]) -> str:
    if not organizations:
        return "none"
    return ", ".join(
        f"{org.get('name') or '?'} (organization_id {org.get('organization_id')})"
        for org in organizations
    )


def connect_zoho(
    context: AppContext,
    *,
    organization_id: str,
    grant_code: str | None = None,
    refresh_token: str | None = None,
    accounts_server: str | None = None,
    location: str | None = None,
    name: str | None = None,
    redirect_uri: str = "",
    session: requests.Session | None = None,
    guard: ConnectGuard | None = None,
) -> Connection:
    """Connect (or reconnect) one Zoho Books organization and store it encrypted.

    Exactly one of ``grant_code`` and ``refresh_token`` is needed. The code is exchanged (or the
    refresh token used once) at the data center's accounts server, the organization is checked
    against ``GET /organizations``, and the refresh token, a fresh webhook secret and the data
    center are stored; the access token is cached for every process.

    Args:
        context: the process context.
        organization_id: the Zoho Books organization to sync.
        grant_code: a grant code from the consent redirect (valid 60 s, once).
        refresh_token: an existing refresh token (e.g. from the API console's self client).
        accounts_server: the callback's ``accounts-server``; default ``ZOHO_ACCOUNTS_URL``, then
            ``location``'s data center, then the US server.
        location: the callback's ``location`` (``us``, ``eu``, ``in``...).
        name: connection name; default ``zoho-<organization_id>``.
        redirect_uri: the redirect URI the code was issued for.
        session: HTTP session (tests).
        guard: set for admin-initiated connects (the OAuth callback): another organization
            under the same name is replaced only when confirmed, and the connect is audited.

    Raises:
        ConfigError: missing client credentials or contradictory arguments.
        ReplacementNeededError: ``guard`` is set and the name holds another, unconfirmed organization.
        AuthError: the code or client was refused.
        WrongOrganizationError: the token cannot see ``organization_id``; the message lists the
            organizations it can see.
    """
    if bool(grant_code) == bool(refresh_token):
        raise ConfigError(["give exactly one of a grant code or a refresh token"])
    organization_id = str(organization_id).strip()
    if not organization_id:
        raise ConfigError(["an organization_id is required"])
    client_id, client_secret = _client_credentials(context)
    server = resolve_accounts_server(
        accounts_server=accounts_server,
        configured=context.settings.zoho_accounts_url,
        location=location,
    )
    http = session or requests.Session()
    timeout = context.settings.http_timeout
    if grant_code:
        tokens = exchange_grant_code(
            http,
            server,
            code=grant_code,
            client_id=client_id,
            client_secret=client_secret,
            redirect_uri=redirect_uri or context.settings.zoho_redirect_uri,
            timeout=timeout,
        )
        if not tokens.refresh_token:
            raise AuthError(
                "Zoho returned no refresh token: authorize with access_type=offline and "
                "prompt=consent",
                system=ZOHO,
            )
        stored_refresh = tokens.refresh_token
    else:
        assert refresh_token is not None
        tokens = refresh_access_token(
            http,
            server,
            refresh_token=refresh_token,
            client_id=client_id,
            client_secret=client_secret,
            timeout=timeout,
        )
        stored_refresh = tokens.refresh_token or refresh_token
    data_center, api_domain = _api_domain(server, tokens.api_domain, location)
    probe = ZohoBooksClient(
        StaticTokens(tokens.access_token, api_domain),
        organization_id=organization_id,
        api_domain=api_domain,
        session=http,
        timeout=timeout,
    )
    organizations = probe.organizations.list()
    match = next(
        (org for org in organizations if str(org.get("organization_id")) == organization_id),
        None,
    )
    if match is None:
        raise WrongOrganizationError(
            f"organization_id {organization_id} is not visible to this Zoho login (data center "
            f"{data_center or 'unknown'}); organizations it can see: {_describe(organizations)}",
            system=ZOHO,
        )
    options: dict[str, Any] = {
        key: match[key]
        for key in ("plan_name", "plan_type", "time_zone", "currency_code")
        if match.get(key) not in (None, "")
    }
    connection_name = name or f"zoho-{organization_id}"
    with context.session() as db:
        store = context.store(db)
        existing = db.scalar(sa.select(Connection).where(Connection.name == connection_name))
        old_external_id = existing.external_id if existing is not None else ""
        if guard is not None:
            guard.check(existing, organization_id, Secret(stored_refresh))
        connection = store.upsert(
            name=connection_name,
            system=ZOHO,
            external_id=organization_id,
            auth_kind="oauth",
            credentials={"refresh_token": stored_refresh},
            display_name=str(match.get("name") or ""),
            data_center=data_center,
            accounts_server=server,
            api_base=api_domain,
            options=options,
            webhook_secret={"secret": generate_webhook_secret()},
        )
        manager = build_token_manager(context, connection, session=http)
        # A reconnect replaces the refresh token: forget the old token, cooldown and revocation.
        manager.clear()
        manager.store_token(
            TokenResponse(
                access_token=tokens.access_token,
                api_domain=api_domain,
                expires_in=tokens.expires_in,
            )
        )
        store.mark_success(connection)
        if guard is not None:
            guard.record(db, connection, old_external_id)
    logger.info(
        "zoho.connected connection=%s organization=%s data_center=%s",
        connection.id,
        organization_id,
        data_center,
    )
    return connection


def _same_origin(one: str, other: str) -> bool:
    first, second = urlsplit(one), urlsplit(other)
    return (first.scheme, first.netloc.lower()) == (second.scheme, second.netloc.lower())


def _api_domain(server: str, answered: str, location: str | None) -> tuple[str, str]:
    """The data center and API host for a connect at ``server``, never the token answer alone.

    A Zoho accounts server pairs with its API host in the table; an ``api_domain`` that disagrees
    is ignored (and logged), so the worker's calls cannot be sent elsewhere. Another accounts
    server (``ZOHO_ACCOUNTS_URL``, a simulator) may only name an API host on its own origin or
    one of the table's.

    Raises:
        AuthError: no API host can be trusted.
    """
    table = table_api_domain(server)
    if table is not None:
        if answered and dc_from_api_domain(answered) != dc_from_accounts_server(server):
            logger.warning("zoho.api-domain-ignored accounts_server=%s", server)
        return dc_from_accounts_server(server) or "", table
    if not answered:
        raise AuthError("Zoho's token response carried no api_domain", system=ZOHO)
    known = dc_from_api_domain(answered)
    if known is None and not _same_origin(answered, server):
        raise AuthError(
            "the token response's api_domain is neither a Zoho API host nor on the accounts "
            "server's host",
            system=ZOHO,
        )
    return known or dc_from_location(location) or "", (
        DATA_CENTERS[known].api_domain if known else answered
    )


def _on_reauth(context: AppContext, connection_id: int) -> Callable[[str], None]:
    def mark(reason: str) -> None:
        with context.session() as db:
            store = context.store(db)
            store.mark_needs_reauth(store.get(connection_id), reason)

    return mark


def _on_api_domain(context: AppContext, connection: Connection) -> Callable[[str], None]:
    def update(api_domain: str) -> None:
        with context.session() as db:
            row = db.get(Connection, connection.id)
            if row is not None:
                row.api_base = api_domain
        connection.api_base = api_domain
        logger.info("zoho.api-domain-changed connection=%s", connection.id)

    return update


def build_token_manager(
    context: AppContext, connection: Connection, *, session: requests.Session | None = None
) -> ZohoTokenManager:
    """The shared token manager of a Zoho connection, wired to the connection store."""
    if connection.system != ZOHO:
        raise ConfigError([f"connection {connection.name!r} is not a Zoho connection"])
    client_id, client_secret = _client_credentials(context)
    # Decrypting needs only the key, not a database session (the row may be detached).
    credentials = context.box.decrypt_json(connection.credentials_ciphertext)
    refresh = credentials.get("refresh_token")
    if not refresh:
        raise ConfigError([f"connection {connection.name!r} has no refresh token; reconnect it"])
    return ZohoTokenManager(
        context.redis,
        context.box,
        connection_id=connection.id,
        accounts_server=connection.accounts_server,
        client_id=client_id,
        client_secret=client_secret,
        refresh_token=Secret(str(refresh)),
        session=session,
        timeout=context.settings.http_timeout,
        on_reauth_required=_on_reauth(context, connection.id),
        on_api_domain=_on_api_domain(context, connection),
        api_domain=connection.api_base,
        pinned_api_domain=table_api_domain(connection.accounts_server) or "",
    )


def _limiter(context: AppContext, connection: Connection) -> Limiter | None:
    try:
        from connector.zoho.limiter import ZohoLimiter, daily_limit_for_plan
    except ImportError:  # pragma: no cover - the limiter ships with the package
        return None
    options = connection.options or {}
    daily_limit = 10000
    plan = options.get("plan_name")
    if plan:
        try:
            daily_limit = daily_limit_for_plan(str(plan))
        except ValueError:
            logger.warning("zoho.unknown-plan connection=%s", connection.id)
    limiter: Limiter = ZohoLimiter(
        context.redis,
        org_key=connection.external_id,
        per_minute=int(options.get("per_minute") or 100),
        daily_limit=int(options.get("daily_limit") or daily_limit),
        concurrency=int(options.get("concurrency") or 10),
        timezone=str(options.get("budget_timezone") or "UTC"),
    )
    return limiter


def build_zoho_client(
    context: AppContext,
    connection: Connection,
    *,
    session: requests.Session | None = None,
    limiter: Limiter | bool | None = True,
) -> ZohoBooksClient:
    """A ready client for a stored Zoho connection.

    Args:
        context: the process context.
        connection: a Zoho connection.
        session: HTTP session (tests).
        limiter: ``True`` for the shared :class:`~connector.zoho.limiter.ZohoLimiter`, ``None``
            or ``False`` for none, or a limiter object.
    """
    tokens = build_token_manager(context, connection, session=session)
    chosen: Limiter | None
    if limiter is True:
        chosen = _limiter(context, connection)
    elif limiter is False or limiter is None:
        chosen = None
    else:
        chosen = limiter
    options = connection.options or {}
    return ZohoBooksClient(
        tokens,
        organization_id=connection.external_id,
        api_domain=connection.api_base or DATA_CENTERS["us"].api_domain,
        limiter=chosen,
        session=session,
        timeout=context.settings.http_timeout,
        reset_timezone=str(options.get("budget_timezone") or "UTC"),
    )


def ping(
    context: AppContext,
    connection: Connection,
    *,
    session: requests.Session | None = None,
    limiter: Limiter | bool | None = True,
) -> PingResult:
    """Check that a connection works: a token, and the organization visible to it."""
    organization_name: str | None = None
    token_age: float | None = None
    try:
        client = build_zoho_client(context, connection, session=session, limiter=limiter)
        organizations = client.organizations.list()
        match = next(
            (
                org
                for org in organizations
                if str(org.get("organization_id")) == connection.external_id
            ),
            None,
        )
        assert isinstance(client.tokens, ZohoTokenManager)
        token_age = client.tokens.token_age()
        if match is None:
            raise WrongOrganizationError(
                f"organization_id {connection.external_id} is no longer visible to this login; "
                f"it sees: {_describe(organizations)}",
                system=ZOHO,
            )
        organization_name = str(match.get("name") or "")
    except ConnectorError as exc:
        return PingResult(
            name=connection.name,
            organization_id=connection.external_id,
            data_center=connection.data_center,
            organization_name=organization_name,
            token_age=token_age,
            ok=False,
            error=str(exc),
        )
    with context.session() as db:
        store = context.store(db)
        store.mark_success(store.get(connection.id))
    return PingResult(
        name=connection.name,
        organization_id=connection.external_id,
        data_center=connection.data_center,
        organization_name=organization_name,
        token_age=token_age,
        ok=True,
    )


def refresh_due_tokens(
    context: AppContext, *, session: requests.Session | None = None
) -> list[RefreshOutcome]:
    """The Beat job: refresh every active Zoho connection whose token is 55 minutes old.

    Single-flight per connection across all processes; one failing connection does not stop
    the others.
    """
    with context.session() as db:
        connections = [c for c in context.store(db).list(ZOHO) if c.status == "active"]
    outcomes: list[RefreshOutcome] = []
    for connection in connections:
        try:
            refreshed = build_token_manager(context, connection, session=session).refresh_if_due()
        except ConnectorError as exc:
            logger.warning(
                "zoho.refresh-failed connection=%s error=%s", connection.id, type(exc).__name__
            )
            outcomes.append(RefreshOutcome(connection.id, connection.name, False, str(exc)))
            continue
        outcomes.append(RefreshOutcome(connection.id, connection.name, refreshed))
    return outcomes
