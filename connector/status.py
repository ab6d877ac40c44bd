"""What operators see: connection health, queue depths, budgets, lag, and the set-up doctor.

The status pages of the web app, ``connector status`` and ``connector doctor`` all read through
these functions, so the browser and the terminal cannot tell different stories.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import logging
import re
import shlex
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

import redis
import requests
import sqlalchemy as sa
from sqlalchemy.orm import Session

from connector.connections import PIPEDRIVE, STATUS_NEEDS_REAUTH, ZOHO
from connector.context import AppContext
from connector.errors import ConfigError, ConnectorError
from connector.models import AuditEntry, Connection, DeadLetter, SyncCursor, utcnow

__all__ = [
    "CLOCK_SKEW_LIMIT",
    "QUEUES",
    "SUCCESS_OUTCOMES",
    "BudgetRow",
    "Check",
    "ConnectionHealth",
    "budgets",
    "doctor",
    "failures_since",
    "last_sync_at",
    "overview",
    "queue_depths",
    "reconnect_url",
    "settings_check",
    "sync_lag",
    "tokens_per_hour",
]

logger = logging.getLogger(__name__)

#: The Celery queues (see ``workers/celery_app.py``), in the order they are shown.
QUEUES: tuple[str, ...] = ("webhooks", "sync", "pulls", "maintenance")
#: Audit outcomes that mean "this record is in sync now".
SUCCESS_OUTCOMES: tuple[str, ...] = ("ok", "skipped")
#: Clock skew beyond this breaks signed webhook timestamps and token expiry arithmetic.
CLOCK_SKEW_LIMIT = 30.0
# Kombu's Redis transport keeps prioritised messages in extra lists named queue + sep + step.
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
_PROBE_TIMEOUT = 5.0


@dataclasses.dataclass(frozen=True)
class ConnectionHealth:
    """One connection as the overview shows it."""

    id: int
    name: str
    system: str
    data_center: str
    display_name: str
    external_id: str
    status: str
    status_reason: str
    last_success_at: dt.datetime | None
    last_error_at: dt.datetime | None
    last_webhook_at: dt.datetime | None
    last_sync_at: dt.datetime | None
    sync_lag_seconds: float | None
    token_age_seconds: float | None = None
    next_refresh_at: dt.datetime | None = None
    token_note: str = ""
    reconnect_url: str = ""

    @property
    def needs_reauth(self) -> bool:
        """The connection's credentials were refused; a human must connect it again."""
        return self.status == STATUS_NEEDS_REAUTH

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (datetimes as ISO strings)."""
        result: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            result[item.name] = value.isoformat() if isinstance(value, dt.datetime) else value
        result["needs_reauth"] = self.needs_reauth
        return result


@dataclasses.dataclass(frozen=True)
class BudgetRow:
    """A Pipedrive connection's budget snapshot (``status`` is the limiter's BudgetStatus)."""

    connection_id: int
    name: str
    display_name: str
    status: Any
    parked: int
    error: str = ""


@dataclasses.dataclass(frozen=True)
class Check:
    """One doctor finding: what was checked, whether it passed, and what to do if not."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    """Commands to paste into a shell, one a line (never prose, never a Python name)."""
    note: str = ""
    """What the fix needs from the user, in words (a value to choose, a page to open)."""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return dataclasses.asdict(self)


# Overview -----------------------------------------------------------------------------------


def reconnect_url(connection: Connection) -> str:
    """Where a human goes to authorize a connection again (relative to the web app)."""
    if connection.system == ZOHO:
        query = urlencode({"organization_id": connection.external_id, "name": connection.name})
        return f"/oauth/zoho/start?{query}"
    if connection.system == PIPEDRIVE and connection.auth_kind == "oauth":
        return f"/oauth/pipedrive/start?{urlencode({'name': connection.name})}"
    return ""


def last_sync_at(session: Session, connection_id: int) -> dt.datetime | None:
    """The newest sign that a connection's data was in sync.

    The newest successful audit row naming the connection, or the newest cursor run of it,
    whichever is later.
    """
    audit_newest = session.scalar(
        sa.select(sa.func.max(AuditEntry.created_at)).where(
            sa.or_(
                AuditEntry.zoho_connection_id == connection_id,
                AuditEntry.pipedrive_connection_id == connection_id,
            ),
            AuditEntry.outcome.in_(SUCCESS_OUTCOMES),
        )
    )
    cursor_newest = session.scalar(
        sa.select(sa.func.max(SyncCursor.last_run_at)).where(
            SyncCursor.connection_id == connection_id
        )
    )
    moments = [_aware(m) for m in (audit_newest, cursor_newest) if m is not None]
    return max(moments) if moments else None


def sync_lag(session: Session, connection_id: int, now: dt.datetime | None = None) -> float | None:
    """Seconds since :func:`last_sync_at`, or ``None`` when the connection never synced."""
    newest = last_sync_at(session, connection_id)
    if newest is None:
        return None
    return max(0.0, ((now or utcnow()) - newest).total_seconds())


def _aware(moment: Any) -> dt.datetime:
    # Aggregates bypass the UTCDateTime decorator on some dialects (SQLite returns text).
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    assert isinstance(moment, dt.datetime)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _zoho_token(context: AppContext, connection: Connection) -> tuple[float | None, Any, str]:
    from connector.zoho.service import build_token_manager

    try:
        manager = build_token_manager(context, connection)
        age = manager.token_age()
        next_epoch = manager.next_refresh_at()
    except ConfigError as exc:
        return None, None, "; ".join(exc.problems)
    except (ConnectorError, redis.RedisError) as exc:
        return None, None, f"token cache unreadable ({type(exc).__name__})"
    if age is None:
        return None, None, "no cached access token (one is fetched on the next call)"
    next_at = None if next_epoch is None else dt.datetime.fromtimestamp(next_epoch, dt.UTC)
    return age, next_at, ""


def overview(context: AppContext, now: dt.datetime | None = None) -> list[ConnectionHealth]:
    """Every connection with its health, ordered by system and name."""
    now = now or utcnow()
    with context.session() as session:
        connections = list(
            session.scalars(sa.select(Connection).order_by(Connection.system, Connection.name))
        )
        synced_at = {c.id: last_sync_at(session, c.id) for c in connections}
    result: list[ConnectionHealth] = []
    for connection in connections:
        token_age: float | None = None
        next_refresh: dt.datetime | None = None
        note = ""
        if connection.system == ZOHO and connection.status != STATUS_NEEDS_REAUTH:
            token_age, next_refresh, note = _zoho_token(context, connection)
        synced = synced_at[connection.id]
        result.append(
            ConnectionHealth(
                id=connection.id,
                name=connection.name,
                system=connection.system,
                data_center=connection.data_center,
                display_name=connection.display_name,
                external_id=connection.external_id,
                status=connection.status,
                status_reason=connection.status_reason,
                last_success_at=connection.last_success_at,
                last_error_at=connection.last_error_at,
                last_webhook_at=connection.last_webhook_at,
                last_sync_at=synced,
                sync_lag_seconds=None
                if synced is None
                else max(0.0, (now - synced).total_seconds()),
                token_age_seconds=token_age,
                next_refresh_at=next_refresh,
                token_note=note,
                reconnect_url=reconnect_url(connection),
            )
        )
    return result


# Budget, queues, failures -------------------------------------------------------------------


def budgets(context: AppContext) -> list[BudgetRow]:
    """The budget snapshot of every Pipedrive connection; one broken connection shows its error."""
    from connector.pipedrive.service import budget_status, parked_jobs

    with context.session() as session:
        connections = context.store(session).list(PIPEDRIVE)
    rows: list[BudgetRow] = []
    for connection in connections:
        parked = parked_jobs(context, connection)
        try:
            status = budget_status(context, connection)
            error = "" if status is not None else "the budget limiter is not available"
        except (ConnectorError, redis.RedisError) as exc:
            status, error = None, f"budget unavailable: {type(exc).__name__}: {exc}"
        rows.append(
            BudgetRow(
                connection_id=connection.id,
                name=connection.name,
                display_name=connection.display_name,
                status=status,
                parked=parked,
                error=error,
            )
        )
    return rows


def tokens_per_hour(
    session: Session,
    hours: int = 24,
    *,
    now: dt.datetime | None = None,
    connection_id: int | None = None,
) -> list[tuple[dt.datetime, int]]:
    """Pipedrive tokens spent per clock hour, oldest first, ``hours`` buckets ending now.

    Summed in Python rather than SQL so SQLite and PostgreSQL bucket the same way.
    """
    now = now or utcnow()
    newest = now.replace(minute=0, second=0, microsecond=0)
    first = newest - dt.timedelta(hours=hours - 1)
    buckets = {first + dt.timedelta(hours=i): 0 for i in range(hours)}
    query = sa.select(AuditEntry.created_at, AuditEntry.tokens_spent).where(
        AuditEntry.created_at >= first, AuditEntry.tokens_spent > 0
    )
    if connection_id is not None:
        query = query.where(AuditEntry.pipedrive_connection_id == connection_id)
    for created_at, tokens in session.execute(query):
        hour = _aware(created_at).replace(minute=0, second=0, microsecond=0)
        if hour in buckets:
            buckets[hour] += int(tokens or 0)
    return sorted(buckets.items())


def failures_since(session: Session, since: dt.datetime) -> dict[str, int]:
    """Dead letters and failed audit rows since ``since``."""
    dead = session.scalar(
        sa.select(sa.func.count()).select_from(DeadLetter).where(DeadLetter.failed_at >= since)
    )
    failed = session.scalar(
        sa.select(sa.func.count())
        .select_from(AuditEntry)
        .where(AuditEntry.created_at >= since, AuditEntry.outcome == "failed")
    )
    return {"dead_letters": int(dead or 0), "audit_failed": int(failed or 0)}


def _is_redis_url(url: str) -> bool:
    return urlsplit(url).scheme in {"redis", "rediss", "unix"}


def _broker_redis(context: AppContext) -> redis.Redis:
    url = context.settings.celery_broker_url
    if url == context.settings.redis_url:
        return context.redis
    return redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)


def queue_depths(context: AppContext) -> dict[str, int | None]:
    """Messages waiting per Celery queue; ``None`` when the broker is not Redis.

    Raises:
        redis.RedisError: the broker Redis is unreachable.
    """
    if not _is_redis_url(context.settings.celery_broker_url):
        return dict.fromkeys(QUEUES)
    client = _broker_redis(context)
    pipe = client.pipeline(transaction=False)
    for queue in QUEUES:
        pipe.llen(queue)
        for step in _PRIORITY_STEPS:
            pipe.llen(f"{queue}{_PRIORITY_SEPARATOR}{step}")
    lengths = [int(n) for n in pipe.execute()]
    per_queue = 1 + len(_PRIORITY_STEPS)
    return {
        queue: sum(lengths[i * per_queue : (i + 1) * per_queue]) for i, queue in enumerate(QUEUES)
    }


# Doctor -------------------------------------------------------------------------------------


# Example values for the settings a fix asks for: placeholders in capitals.
_SETTING_EXAMPLES = {
    "CONNECTOR_SECRET_KEY": '"$(connector secrets generate-key)"',
    "DATABASE_URL": "postgresql+psycopg2://USER:PASSWORD@HOST:5432/DATABASE",
    "REDIS_URL": "redis://HOST:6379/0",
    "CELERY_BROKER_URL": "redis://HOST:6379/1",
    "CONNECTOR_CONFIG": "/path/to/mapping.toml",
    "CONNECTOR_LOG_FORMAT": "text",
    "CONNECTOR_LOG_LEVEL": "INFO",
}
_SETTING_NAME = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")


def _settings_fix(problems: list[str]) -> str:
    """One ``export`` line setting every variable the problems name."""
    names = list(dict.fromkeys(_SETTING_NAME.findall(" ".join(problems))))
    if not names:
        return "connector doctor"
    return "export " + " ".join(f"{n}={_SETTING_EXAMPLES.get(n, 'VALUE')}" for n in names)


def settings_check(error: ConfigError | None) -> Check:
    """The settings finding: ``error`` is what ``Settings.from_env`` raised, if anything."""
    if error is not None:
        return Check(
            "settings",
            False,
            "; ".join(error.problems),
            _settings_fix(error.problems),
            "replace the UPPER-CASE placeholders; the same NAME=value lines can go in .env",
        )
    return Check("settings", True, "environment settings are valid")


def _check_database(context: AppContext) -> Check:
    from connector.db import current_revision, head_revision

    try:
        current = current_revision(context.engine)
    except sa.exc.SQLAlchemyError as exc:
        return Check(
            "database",
            False,
            f"cannot connect: {type(exc).__name__}",
            f"export DATABASE_URL={_SETTING_EXAMPLES['DATABASE_URL']}",
            "or, if DATABASE_URL is right, start the database",
        )
    head = head_revision()
    if current != head:
        return Check(
            "database",
            False,
            f"schema is at revision {current or 'none (never migrated)'}, the code needs {head}",
            "connector db upgrade",
        )
    return Check("database", True, f"reachable, schema at revision {head}")


def _check_redis(context: AppContext, now: Callable[[], float]) -> list[Check]:
    try:
        context.redis.ping()
        seconds, micros = context.redis.time()
    except redis.RedisError as exc:
        return [
            Check(
                "redis",
                False,
                f"cannot reach Redis: {type(exc).__name__}",
                f"export REDIS_URL={_SETTING_EXAMPLES['REDIS_URL']}",
                "or, if REDIS_URL is right, start Redis",
            )
        ]
    skew = now() - (float(seconds) + float(micros) / 1e6)
    return [
        Check("redis", True, "reachable"),
        _skew_check("clock vs Redis", skew),
    ]


def _skew_check(name: str, skew: float) -> Check:
    if abs(skew) > CLOCK_SKEW_LIMIT:
        return Check(
            name,
            False,
            f"this machine's clock is {skew:+.0f} s off",
            "sudo timedatectl set-ntp true",
            "or synchronise the clock with chrony or ntpd",
        )
    return Check(name, True, f"skew {skew:+.1f} s")


def _check_broker(context: AppContext) -> Check:
    url = context.settings.celery_broker_url
    if _is_redis_url(url):
        try:
            _broker_redis(context).ping()
        except redis.RedisError as exc:
            return Check(
                "broker",
                False,
                f"cannot reach the broker Redis: {type(exc).__name__}",
                f"export CELERY_BROKER_URL={_SETTING_EXAMPLES['CELERY_BROKER_URL']}",
                "or, if CELERY_BROKER_URL is right, start the broker",
            )
        return Check("broker", True, "reachable (Redis)")
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "localhost", parts.port or 5672), timeout=_PROBE_TIMEOUT
        ):
            pass
    except OSError as exc:
        return Check(
            "broker",
            False,
            f"cannot open a connection to {parts.hostname}:{parts.port or 5672}: {exc}",
            f"export CELERY_BROKER_URL={_SETTING_EXAMPLES['CELERY_BROKER_URL']}",
            "or, if CELERY_BROKER_URL is right, start the broker",
        )
    return Check("broker", True, f"reachable ({parts.scheme})")


def _reauth_fix(context: AppContext, connection: Connection) -> tuple[str, str]:
    """The command that connects again, and where to authorize in a browser instead."""
    link = reconnect_url(connection)
    name = shlex.quote(connection.name)
    where = f"or authorize again at {context.settings.public_url}{link}" if link else ""
    if connection.system == ZOHO:
        organization = shlex.quote(connection.external_id or "ORGANIZATION_ID")
        return (
            f"connector zoho connect --organization-id {organization} --name {name} "
            "--grant-code GRANT_CODE",
            f"GRANT_CODE comes from Zoho's consent page; {where}".rstrip("; "),
        )
    if connection.auth_kind == "oauth":
        return (
            f"connector pipedrive connect --name {name} --oauth-refresh-token -",
            f"paste the refresh token on stdin; {where}".rstrip("; "),
        )
    domain = (connection.options or {}).get("company_domain") or "COMPANY_DOMAIN"
    return (
        f"connector pipedrive connect --name {name} --company-domain {shlex.quote(domain)} "
        "--api-token -",
        "paste a valid API token on stdin",
    )


def _check_zoho(context: AppContext, connection: Connection, http: requests.Session) -> Check:
    from connector.zoho.service import ping

    name = f"zoho {connection.name}"
    if connection.status == STATUS_NEEDS_REAUTH:
        return Check(
            name,
            False,
            f"needs re-authorization: {connection.status_reason}",
            *_reauth_fix(context, connection),
        )
    result = ping(context, connection, session=http)
    if not result.ok:
        if "authoriz" in (result.error or "").lower():
            return Check(name, False, result.error or "", *_reauth_fix(context, connection))
        return Check(
            name,
            False,
            result.error or "ping failed",
            f"connector zoho ping {shlex.quote(connection.name)}",
            "repeats this check once the error above is dealt with",
        )
    age = "" if result.token_age is None else f", token {result.token_age / 60:.0f} min old"
    return Check(name, True, f"organization {result.organization_name!r} visible{age}")


def _check_pipedrive(
    context: AppContext, connection: Connection, http: requests.Session
) -> list[Check]:
    from connector.errors import AuthError
    from connector.mapping.config import load_config
    from connector.pipedrive.fields import FieldSpec
    from connector.pipedrive.service import (
        SYNC_SUBSCRIPTIONS,
        build_pipedrive_client,
        field_registry,
        ping,
        webhook_url,
    )

    name = f"pipedrive {connection.name}"
    if connection.status == STATUS_NEEDS_REAUTH:
        return [
            Check(
                name,
                False,
                f"needs re-authorization: {connection.status_reason}",
                *_reauth_fix(context, connection),
            )
        ]
    try:
        result = ping(context, connection, session=http)
    except AuthError as exc:
        return [Check(name, False, str(exc), *_reauth_fix(context, connection))]
    except ConnectorError as exc:
        return [
            Check(
                name,
                False,
                str(exc),
                f"connector pipedrive ping --connection {shlex.quote(connection.name)}",
                "repeats this check once the error above is dealt with",
            )
        ]
    checks = [Check(name, True, f"company {result.company_name!r} as {result.user_name!r}")]
    client = build_pipedrive_client(context, connection, session=http)
    try:
        config = load_config(context.settings.config_path or None)
        specs = [
            FieldSpec(entity, spec.name, spec.field_type)
            for entity, entity_specs in config.required_custom_fields().items()
            for spec in entity_specs
        ]
        missing = field_registry(context, connection, client).missing(specs)
    except ConnectorError as exc:
        checks.append(
            Check(
                f"{name} custom fields",
                False,
                str(exc),
                "connector doctor",
                "re-run once the error above is dealt with",
            )
        )
    else:
        if missing:
            listed = ", ".join(f"{spec.entity} {spec.name!r}" for spec in missing)
            checks.append(
                Check(
                    f"{name} custom fields",
                    False,
                    f"missing: {listed}",
                    "connector pipedrive setup-fields",
                )
            )
        else:
            checks.append(Check(f"{name} custom fields", True, f"all {len(specs)} present"))
    url = webhook_url(context.settings.public_url, connection)
    try:
        subscribed = {
            (str(w.get("event_action")), str(w.get("event_object")))
            for w in client.webhooks.list()
            if w.get("subscription_url") == url
        }
    except ConnectorError as exc:
        checks.append(
            Check(
                f"{name} webhooks",
                False,
                str(exc),
                f"connector pipedrive connect --name {shlex.quote(connection.name)} --api-token -",
                "the webhook list needs an admin's API token (paste it on stdin) or OAuth with "
                "the admin scope",
            )
        )
    else:
        absent = [f"{a}.{o}" for a, o in SYNC_SUBSCRIPTIONS if (a, o) not in subscribed]
        if absent:
            checks.append(
                Check(
                    f"{name} webhooks",
                    False,
                    f"no subscription to {url} for: {', '.join(absent)}",
                    "connector webhooks register",
                    "CONNECTOR_PUBLIC_URL must be the address Pipedrive can reach",
                )
            )
        else:
            checks.append(Check(f"{name} webhooks", True, f"all subscribed to {url}"))
    return checks


def _check_routing(context: AppContext, zoho_names: list[str]) -> Check:
    """Several Zoho organizations need ``[routing] default``, or unplaced ones wait in review."""
    from connector.mapping.config import load_config

    path = context.settings.config_path
    try:
        routing = load_config(path or None).routing
    except ConfigError as exc:
        return Check(
            "routing",
            False,
            "; ".join(exc.problems),
            _edit_config_fix(path, ""),
            "correct the mapping file as the problems above say",
        )
    if len(zoho_names) < 2:
        return Check("routing", True, f"one Zoho connection ({zoho_names[0]}): no routing needed")
    if routing.default:
        return Check("routing", True, f"[routing] default = {routing.default!r}")
    return Check(
        "routing",
        False,
        f"{len(zoho_names)} Zoho connections ({', '.join(zoho_names)}) and [routing] default is "
        "not set: every Pipedrive organization no rule places waits in `connector review`",
        _edit_config_fix(path, f'default = "{zoho_names[0]}"'),
        f'under [routing] add default = "<connection>" (one of {", ".join(zoho_names)}): '
        "where a Pipedrive organization no rule places is created",
    )


def _edit_config_fix(path: str, line: str) -> str:
    """A shell command that opens (or, with no mapping file yet, writes) the mapping file."""
    if path:
        return f'"${{EDITOR:-vi}}" {shlex.quote(path)}'
    body = shlex.quote(f"[routing]\\n{line}\\n")
    return f"printf {body} > mapping.toml && export CONNECTOR_CONFIG=$PWD/mapping.toml"


def _server_date_skew(url: str, http: requests.Session, now: Callable[[], float]) -> float | None:
    try:
        response = http.head(url, timeout=_PROBE_TIMEOUT, allow_redirects=False)
    except requests.RequestException:
        return None
    header = response.headers.get("Date")
    if not header:
        return None
    try:
        server = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    # The Date header has whole seconds; half a second is the expected rounding.
    return now() - server.timestamp() - 0.5


_CONNECT = {
    ZOHO: "connector zoho connect --organization-id ORGANIZATION_ID --grant-code GRANT_CODE",
    PIPEDRIVE: "connector pipedrive connect --company-domain COMPANY_DOMAIN --api-token -",
}


def doctor(
    context: AppContext,
    *,
    session: requests.Session | None = None,
    clock: Callable[[], float] | None = None,
) -> list[Check]:
    """Check the set-up end to end; each failed :class:`Check` says how to fix it.

    Covers the database schema, Redis, the broker, each connection's credentials, the Pipedrive
    custom fields and webhook subscriptions, and clock skew (against Redis and each API).
    Settings are checked by the caller (building ``context`` already validated them).
    """
    http = session or requests.Session()
    now = clock or (lambda: utcnow().timestamp())
    checks = [_check_database(context)]
    if not checks[0].ok:
        return checks
    checks.extend(_check_redis(context, now))
    checks.append(_check_broker(context))
    with context.session() as db:
        connections = list(
            db.scalars(sa.select(Connection).order_by(Connection.system, Connection.name))
        )
    if not connections:
        checks.append(
            Check(
                "connections",
                False,
                "no connection is set up",
                f"{_CONNECT[ZOHO]}\n{_CONNECT[PIPEDRIVE]}",
                "GRANT_CODE comes from Zoho's consent page; paste the Pipedrive API token on stdin",
            )
        )
    for system in (ZOHO, PIPEDRIVE):
        if connections and not any(c.system == system for c in connections):
            checks.append(
                Check(
                    f"{system} connection",
                    False,
                    f"no {system} connection",
                    _CONNECT[system],
                )
            )
    zoho_names = [c.name for c in connections if c.system == ZOHO]
    if zoho_names:
        checks.append(_check_routing(context, zoho_names))
    probed: set[str] = set()
    for connection in connections:
        try:
            if connection.system == ZOHO:
                checks.append(_check_zoho(context, connection, http))
            elif connection.system == PIPEDRIVE:
                checks.extend(_check_pipedrive(context, connection, http))
        except (ConnectorError, redis.RedisError) as exc:
            checks.append(
                Check(
                    f"{connection.system} {connection.name}",
                    False,
                    f"{type(exc).__name__}: {exc}",
                    "connector doctor",
                    "re-run once the error above is dealt with",
                )
            )
        base = connection.api_base
        if base and base not in probed:
            probed.add(base)
            skew = _server_date_skew(base, http, now)
            if skew is not None:
                checks.append(_skew_check(f"clock vs {urlsplit(base).hostname}", skew))
    return checks
