"""Pipedrive connections: connect, build a client, ping, budget, webhook subscriptions.

This is the glue between stored connections (:mod:`connector.connections`) and the client. It
is what the CLI, the workers and the web app call; none of them builds a Pipedrive client by hand.

Base URLs: ``PIPEDRIVE_API_URL`` (sandboxes) overrides everything and may contain
``{company_domain}``, e.g. ``http://127.0.0.1:5001/c/{company_domain}``. Otherwise API-token
connections use ``https://{company_domain}.pipedrive.com`` (from ``/v1/users/me``) and OAuth
connections follow the ``api_domain`` of each token response.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

import requests
import sqlalchemy as sa

from connector.connections import PIPEDRIVE, ConnectGuard, token_fingerprint
from connector.context import AppContext
from connector.errors import AuthError, ConfigError
from connector.models import Connection, ParkedJob
from connector.pipedrive.auth import (
    DEFAULT_OAUTH_SERVER,
    ApiTokenAuth,
    BearerTokenAuth,
    OAuthToken,
    PipedriveAuth,
    PipedriveOAuth,
    PipedriveTokenManager,
    refresh,
)
from connector.pipedrive.client import PipedriveClient, RateLimiter
from connector.pipedrive.fields import FieldRegistry
from connector.ratelimit import Priority
from connector.settings import Secret

__all__ = [
    "PLANS",
    "SYNC_SUBSCRIPTIONS",
    "PingResult",
    "api_base_for",
    "budget_status",
    "build_limiter",
    "build_pipedrive_client",
    "connect_pipedrive",
    "field_registry",
    "parked_jobs",
    "ping",
    "register_webhooks",
    "webhook_url",
]

logger = logging.getLogger(__name__)

PLANS = ("lite", "growth", "premium", "ultimate")
DEFAULT_RESERVE_FRACTION = 0.10
PUBLIC_API = "https://api.pipedrive.com"

#: (event_action, event_object) pairs the sync subscribes to (v2 names).
SYNC_SUBSCRIPTIONS: tuple[tuple[str, str], ...] = (
    ("create", "organization"),
    ("change", "organization"),
    ("delete", "organization"),
    ("create", "person"),
    ("change", "person"),
    ("delete", "person"),
    ("change", "deal"),
    ("delete", "deal"),
)


@dataclass(frozen=True)
class PingResult:
    """What ``GET /v1/users/me`` says about a connection's credentials."""

    connection: str
    ok: bool
    company_id: str
    company_domain: str
    company_name: str
    user_id: str
    user_name: str
    api_base: str
    tokens_spent: int
    details: dict[str, Any] = field(default_factory=dict)


def api_base_for(context: AppContext, company_domain: str | None) -> str:
    """The API base for a company: the ``PIPEDRIVE_API_URL`` override or the real host.

    Raises:
        ConfigError: the override needs a company domain and none is known.
    """
    override = context.settings.pipedrive_api_url
    if override:
        if "{company_domain}" in override:
            if not company_domain:
                raise ConfigError(
                    ["PIPEDRIVE_API_URL contains {company_domain}: pass --company-domain"]
                )
            return override.replace("{company_domain}", company_domain).rstrip("/")
        return override.rstrip("/")
    if company_domain:
        return f"https://{company_domain}.pipedrive.com"
    return PUBLIC_API


def _oauth_server(context: AppContext, connection: Connection | None = None) -> str:
    if connection is not None and connection.accounts_server:
        return connection.accounts_server
    return context.settings.pipedrive_oauth_url or DEFAULT_OAUTH_SERVER


def connect_pipedrive(
    context: AppContext,
    *,
    api_token: str | None = None,
    oauth_refresh_token: str | None = None,
    company_domain: str | None = None,
    plan: str = "growth",
    seats: int = 1,
    name: str | None = None,
    timezone: str = "UTC",
    session: requests.Session | None = None,
    guard: ConnectGuard | None = None,
) -> Connection:
    """Check the credentials against Pipedrive and store the connection (encrypted).

    Exactly one of ``api_token`` and ``oauth_refresh_token``. Learns the company id and domain
    and the integration user's id from ``/v1/users/me`` (that id recognises our own writes in
    webhooks), and generates the Basic credentials Pipedrive will send with webhooks.

    ``guard`` (admin-initiated connects: the OAuth callback) refuses to replace another company
    under the same name unless confirmed, and audits the connect.

    Raises:
        ConfigError: bad arguments or settings.
        AuthError: Pipedrive refused the credentials.
        ReplacementNeededError: ``guard`` is set and the name holds another, unconfirmed company.
    """
    problems: list[str] = []
    if bool(api_token) == bool(oauth_refresh_token):
        problems.append("give exactly one of an API token or an OAuth refresh token")
    if plan not in PLANS:
        problems.append(f"plan must be one of {', '.join(PLANS)} (got {plan!r})")
    if seats < 1:
        problems.append("seats must be at least 1")
    if problems:
        raise ConfigError(problems)
    settings = context.settings
    http = session or requests.Session()
    credentials: dict[str, Any]
    token: OAuthToken | None = None
    if api_token:
        auth: PipedriveAuth = ApiTokenAuth(api_token.strip())
        base = api_base_for(context, company_domain)
        credentials = {"api_token": api_token.strip()}
        auth_kind = "api_token"
        oauth_server = ""
    else:
        assert oauth_refresh_token is not None
        oauth_server = _oauth_server(context)
        token = refresh(
            refresh_token=oauth_refresh_token.strip(),
            client_id=settings.pipedrive_client_id,
            client_secret=settings.pipedrive_client_secret,
            oauth_server=oauth_server,
            session=http,
            timeout=settings.http_timeout,
        )
        auth = BearerTokenAuth(token.access_token, token.api_domain)
        base = (
            api_base_for(context, company_domain)
            if settings.pipedrive_api_url
            else token.api_domain.rstrip("/")
        )
        if not base:
            raise AuthError("the OAuth token response has no api_domain", system="pipedrive")
        credentials = {"refresh_token": token.refresh_token}
        auth_kind = "oauth"
    client = PipedriveClient(auth, base_url=base, session=http, timeout=settings.http_timeout)
    me = client.users.me() or {}
    company_id = str(me.get("company_id") or "")
    domain = str(me.get("company_domain") or company_domain or "")
    if not company_id:
        raise AuthError("Pipedrive did not say which company the token belongs to")
    if auth_kind == "api_token":
        api_base = api_base_for(context, domain or None)
    else:
        assert token is not None
        api_base = base if settings.pipedrive_api_url else token.api_domain.rstrip("/")
    connection_name = name or f"pipedrive-{domain or company_id}"
    with context.session() as db:
        store = context.store(db)
        existing = db.scalar(sa.select(Connection).where(Connection.name == connection_name))
        old_external_id = existing.external_id if existing is not None else ""
        if guard is not None:
            guard.check(existing, company_id, Secret(str(credentials.get("refresh_token") or "")))
        webhook_secret: dict[str, str] | None = None
        if existing is None or not store.webhook_secret(existing):
            # Random per connection; kept on reconnect so live subscriptions keep working.
            webhook_secret = {
                "username": f"pd-{secrets.token_hex(6)}",
                "password": secrets.token_urlsafe(24),
            }
        connection = store.upsert(
            name=connection_name,
            system=PIPEDRIVE,
            external_id=company_id,
            auth_kind=auth_kind,
            credentials=credentials,
            display_name=str(me.get("company_name") or domain),
            accounts_server=oauth_server,
            api_base=api_base,
            options={
                "plan": plan,
                "seats": seats,
                "timezone": timezone,
                "reserve_fraction": DEFAULT_RESERVE_FRACTION,
                "company_id": company_id,
                "company_domain": domain,
                "integration_user_id": str(me.get("id") or ""),
            },
            webhook_secret=webhook_secret,
        )
        store.mark_success(connection)
        if guard is not None:
            guard.record(db, connection, old_external_id)
    if token is not None:
        # Share the fresh token so no worker refreshes again (a rotated refresh token would
        # otherwise race the one just stored).
        _token_manager(context, connection, credentials).store(token)
    logger.info(
        "pipedrive.connected name=%s company=%s auth=%s", connection_name, company_id, auth_kind
    )
    return connection


def _token_manager(
    context: AppContext,
    connection: Connection,
    credentials: dict[str, Any],
    session: requests.Session | None = None,
) -> PipedriveTokenManager:
    connection_id = connection.id

    def persist(token: OAuthToken) -> None:
        with context.session() as db:
            store = context.store(db)
            stored = store.get(connection_id)
            fresh = store.credentials(stored)
            fresh["refresh_token"] = token.refresh_token
            store.set_credentials(stored, fresh)
            if token.api_domain and not context.settings.pipedrive_api_url:
                stored.api_base = token.api_domain.rstrip("/")

    def needs_reauth(reason: str) -> None:
        with context.session() as db:
            store = context.store(db)
            store.mark_needs_reauth(
                store.get(connection_id),
                f"Pipedrive refused the refresh token ({reason}); "
                "run `connector pipedrive connect` again",
            )

    return PipedriveTokenManager(
        connection_id=connection_id,
        redis=context.redis,
        box=context.box,
        client_id=context.settings.pipedrive_client_id,
        client_secret=context.settings.pipedrive_client_secret,
        refresh_token=str(credentials.get("refresh_token") or ""),
        oauth_server=_oauth_server(context, connection),
        api_domain=connection.api_base,
        session=session,
        timeout=context.settings.http_timeout,
        on_credentials_changed=persist,
        on_reauth_required=needs_reauth,
    )


def _auth(
    context: AppContext, connection: Connection, session: requests.Session | None
) -> tuple[PipedriveAuth, str]:
    if connection.system != PIPEDRIVE:
        raise ConfigError([f"connection {connection.name!r} is not a Pipedrive connection"])
    with context.session() as db:
        credentials = context.store(db).credentials(connection)
    if connection.auth_kind == "api_token":
        token = str(credentials.get("api_token") or "")
        return ApiTokenAuth(token), token_fingerprint(token)
    manager = _token_manager(context, connection, credentials, session)
    # The burst window belongs to the access token, which changes hourly; key it by the
    # connection and app instead, which is what a sequence of access tokens shares.
    key = token_fingerprint(f"oauth:{context.settings.pipedrive_client_id}:{connection.id}")
    return PipedriveOAuth(manager), key


def build_limiter(
    context: AppContext, connection: Connection, *, token_key: str
) -> RateLimiter | None:
    """The shared limiter for a connection, or None when the limiter module is unavailable."""
    try:
        from connector.pipedrive.limiter import PipedriveLimiter
    except ImportError:  # pragma: no cover - only while the limiter is being written
        return None
    options = connection.options or {}
    return PipedriveLimiter(
        redis=context.redis,
        company_key=str(options.get("company_id") or connection.external_id),
        token_key=token_key,
        plan=str(options.get("plan") or "growth"),
        seats=int(options.get("seats") or 1),
        auth_kind=connection.auth_kind,
        timezone=str(options.get("timezone") or "UTC"),
        reserve_fraction=float(options.get("reserve_fraction", DEFAULT_RESERVE_FRACTION)),
        daily_budget=options.get("daily_budget"),
        burst_limit=options.get("burst_limit"),
    )


def build_pipedrive_client(
    context: AppContext,
    connection: Connection,
    *,
    priority: Priority = Priority.SCHEDULED,
    session: requests.Session | None = None,
    limiter: RateLimiter | None = None,
) -> PipedriveClient:
    """A client for a stored connection, with the shared limiter wired in."""
    auth, token_key = _auth(context, connection, session)
    if context.settings.pipedrive_api_url:
        base: str | None = api_base_for(
            context, str((connection.options or {}).get("company_domain") or "") or None
        )
    elif connection.auth_kind == "api_token":
        base = connection.api_base or None
    else:
        base = None  # follow api_domain from the token responses
    return PipedriveClient(
        auth,
        base_url=base,
        limiter=limiter or build_limiter(context, connection, token_key=token_key),
        session=session,
        timeout=context.settings.http_timeout,
        priority=priority,
    )


def field_registry(
    context: AppContext, connection: Connection, client: PipedriveClient, *, ttl: float = 3600
) -> FieldRegistry:
    """The custom-field registry of a connection, cached in the shared Redis."""
    return FieldRegistry(
        client, context.redis, cache_key_prefix=f"connector:pd:fields:{connection.id}", ttl=ttl
    )


def ping(
    context: AppContext, connection: Connection, *, session: requests.Session | None = None
) -> PingResult:
    """Call ``/v1/users/me`` (2 tokens) and record the outcome on the connection.

    Raises:
        AuthError: the credentials are refused (the connection is marked for reconnection).
    """
    client = build_pipedrive_client(context, connection, session=session)
    try:
        me = client.users.me() or {}
    except AuthError as exc:
        with context.session() as db:
            store = context.store(db)
            store.mark_needs_reauth(store.get(connection.id), str(exc))
        raise
    with context.session() as db:
        context.store(db).mark_success(db.merge(connection))
    return PingResult(
        connection=connection.name,
        ok=True,
        company_id=str(me.get("company_id") or ""),
        company_domain=str(me.get("company_domain") or ""),
        company_name=str(me.get("company_name") or ""),
        user_id=str(me.get("id") or ""),
        user_name=str(me.get("name") or ""),
        api_base=client.api_base(),
        tokens_spent=client.stats.tokens,
    )


def budget_status(context: AppContext, connection: Connection) -> Any:
    """The limiter's :class:`~connector.pipedrive.limiter.BudgetStatus`, or None without one."""
    _, token_key = _auth(context, connection, None)
    limiter = build_limiter(context, connection, token_key=token_key)
    status = getattr(limiter, "status", None)
    return status() if status is not None else None


def parked_jobs(context: AppContext, connection: Connection) -> int:
    """How many jobs are parked (waiting for a budget reset) for this connection."""
    with context.session() as db:
        count = db.scalar(
            sa.select(sa.func.count())
            .select_from(ParkedJob)
            .where(ParkedJob.connection_id == connection.id, ParkedJob.status == "parked")
        )
    return int(count or 0)


def webhook_url(public_url: str, connection: Connection) -> str:
    """Where Pipedrive delivers this connection's webhooks."""
    return f"{public_url.rstrip('/')}/webhooks/pipedrive/{connection.name}"


def register_webhooks(
    context: AppContext,
    connection: Connection,
    public_url: str,
    *,
    subscriptions: tuple[tuple[str, str], ...] = SYNC_SUBSCRIPTIONS,
    session: requests.Session | None = None,
    client: PipedriveClient | None = None,
) -> list[dict[str, Any]]:
    """Subscribe the sync's webhooks (v2 payloads, Basic auth); idempotent.

    An existing subscription with the same URL, action, object and version is kept; one whose
    Basic user differs from the stored one (credentials rotated) is replaced.

    Returns:
        One entry per subscription: ``{"event_action", "event_object", "id", "status"}`` with
        status ``created``, ``replaced`` or ``exists``.
    """
    with context.session() as db:
        secret = context.store(db).webhook_secret(connection)
    username, password = secret.get("username"), secret.get("password")
    if not username or not password:
        raise ConfigError(
            [f"connection {connection.name!r} has no webhook credentials; reconnect it"]
        )
    client = client or build_pipedrive_client(
        context, connection, priority=Priority.WEBHOOK, session=session
    )
    url = webhook_url(public_url, connection)
    existing = [w for w in client.webhooks.list() if w.get("subscription_url") == url]
    results: list[dict[str, Any]] = []
    for action, entity in subscriptions:
        status = "created"
        same = [
            w
            for w in existing
            if w.get("event_action") == action
            and w.get("event_object") == entity
            and str(w.get("version") or "2.0") == "2.0"
        ]
        keep = [w for w in same if w.get("http_auth_user") in (None, "", username)]
        if keep:
            results.append(
                {
                    "event_action": action,
                    "event_object": entity,
                    "id": keep[0].get("id"),
                    "status": "exists",
                }
            )
            continue
        for stale in same:
            client.webhooks.delete(stale["id"])
            status = "replaced"
        created = client.webhooks.create(
            url,
            event_action=action,
            event_object=entity,
            name=f"connector {connection.name} {action}.{entity}",
            http_auth_user=str(username),
            http_auth_password=str(password),
            version="2.0",
        )
        results.append(
            {
                "event_action": action,
                "event_object": entity,
                "id": created.get("id"),
                "status": status,
            }
        )
    with context.session() as db:
        context.store(db).set_options(
            db.merge(connection),
            webhook_ids=[r["id"] for r in results],
            webhooks_registered_at=dt.datetime.now(dt.UTC).isoformat(),
        )
    return results


def connect_pipedrive_oauth_code(
    context: AppContext,
    *,
    code: str,
    redirect_uri: str,
    name: str | None = None,
    plan: str = "growth",
    seats: int = 1,
    timezone: str = "UTC",
    session: requests.Session | None = None,
    guard: ConnectGuard | None = None,
) -> Connection:
    """Finish the OAuth web flow: exchange the code, then connect with the refresh token."""
    from connector.pipedrive.auth import exchange_code

    settings = context.settings
    if not settings.pipedrive_client_id:
        raise ConfigError(["PIPEDRIVE_CLIENT_ID and PIPEDRIVE_CLIENT_SECRET are not configured"])
    if not code:
        raise ConfigError(["the OAuth redirect carried no code"])
    token = exchange_code(
        code=code,
        redirect_uri=redirect_uri,
        client_id=settings.pipedrive_client_id,
        client_secret=settings.pipedrive_client_secret,
        oauth_server=_oauth_server(context),
        session=session,
        timeout=settings.http_timeout,
    )
    if not token.refresh_token:
        raise ConfigError(["Pipedrive returned no refresh token for this code"])
    return connect_pipedrive(
        context,
        oauth_refresh_token=token.refresh_token,
        name=name,
        plan=plan,
        seats=seats,
        timezone=timezone,
        session=session,
        guard=guard,
    )
