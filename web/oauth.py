"""OAuth connect flows for Zoho Books and Pipedrive apps.

Both flows are admin-only and follow the rules of issue 14 (a connection holds tokens to a
company's books and CRM, so the flow must not be a way to take one over):

- ``/oauth/*/start`` needs the admin session.
- ``state`` is random, kept in Redis (never in the URL as data), bound to the session that
  started the flow, single use and valid for :data:`STATE_MAX_AGE` seconds; a callback with any
  other state makes no request and stores nothing.
- Zoho's ``accounts-server`` is used only when it is one of Zoho's accounts hosts or
  ``ZOHO_ACCOUNTS_URL`` (:func:`connector.zoho.regions.allowed_accounts_server`); the API host
  comes from the data center table.
- A callback for another organization (company) under an existing connection's name replaces it
  only after a confirmation POST (CSRF-checked); every connect is audited with who did it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from typing import Any
from urllib.parse import urlencode

import redis
from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from connector.connections import ConnectGuard
from connector.errors import ConnectorError, ReplacementNeededError
from connector.models import Connection as _Connection
from web import auth, get_context

bp = Blueprint("oauth", __name__, url_prefix="/oauth")
logger = logging.getLogger(__name__)

STATE_MAX_AGE = 600
ZOHO_SCOPES = (
    "ZohoBooks.contacts.CREATE,ZohoBooks.contacts.READ,ZohoBooks.contacts.UPDATE,"
    "ZohoBooks.invoices.READ,ZohoBooks.customerpayments.READ,ZohoBooks.settings.READ"
)
VENDOR_SCOPES = ",ZohoBooks.bills.READ,ZohoBooks.vendorpayments.READ"

_STATE_PREFIX = "connector:oauth:state:"
_PENDING_PREFIX = "connector:oauth:pending:"
_BINDING = "oauth_binding"
# Redis keeps a state a little past its life, so an old one is told apart from a forged one.
_STATE_GRACE = 60
_MAX_STATE_LENGTH = 128


class FlowError(ConnectorError):
    """The callback does not belong to a flow this session started (nothing was done)."""


# Flow state --------------------------------------------------------------------------------


def _redis() -> redis.Redis:
    return get_context(current_app).redis


def _digest(value: str) -> str:
    # Redis holds only digests: a dump of it cannot be replayed as a state or a binding.
    return hashlib.sha256(value.encode()).hexdigest()


def _session_binding() -> str:
    value = session.get(_BINDING)
    if not isinstance(value, str) or not value:
        value = secrets.token_urlsafe(24)
        session[_BINDING] = value
    return value


def _bound_here(record: dict[str, Any]) -> bool:
    binding = session.get(_BINDING)
    expected = record.get("binding")
    return (
        isinstance(binding, str)
        and isinstance(expected, str)
        and hmac.compare_digest(_digest(binding), expected)
    )


def _issue_state(system: str, data: dict[str, Any]) -> str:
    token = secrets.token_urlsafe(32)
    record = {"system": system, "binding": _digest(_session_binding()), "at": time.time(), **data}
    _redis().set(
        _STATE_PREFIX + _digest(token), json.dumps(record), ex=STATE_MAX_AGE + _STATE_GRACE
    )
    return token


def _consume_state(system: str) -> dict[str, Any]:
    """The flow this callback belongs to, removed from Redis (a state works once).

    Raises:
        FlowError: unknown, used, expired, another system's or another session's state.
    """
    token = request.args.get("state", "")
    if not token or len(token) > _MAX_STATE_LENGTH:
        raise FlowError("invalid state parameter")
    raw: Any = _redis().getdel(_STATE_PREFIX + _digest(token))
    if raw is None:
        raise FlowError("invalid state parameter (unknown, already used or expired)")
    record = json.loads(raw)
    if not isinstance(record, dict) or record.get("system") != system or not _bound_here(record):
        raise FlowError("invalid state parameter")
    if time.time() - float(record.get("at") or 0) > STATE_MAX_AGE:
        raise FlowError("the sign-in took too long; start again")
    return record


def _park_replacement(exc: ReplacementNeededError, flow: dict[str, Any]) -> str:
    """Keep what the confirmation needs (encrypted, it holds the refresh token) for 10 minutes."""
    pending_id = secrets.token_urlsafe(32)
    record = {
        **flow,
        "binding": _digest(_session_binding()),
        "name": exc.name,
        "old": exc.old_external_id,
        "new": exc.new_external_id,
        "credential": exc.credential.reveal(),
    }
    box = get_context(current_app).box
    _redis().set(_PENDING_PREFIX + _digest(pending_id), box.encrypt_json(record), ex=STATE_MAX_AGE)
    return pending_id


def _take_replacement(pending_id: str) -> dict[str, Any]:
    if not pending_id or len(pending_id) > _MAX_STATE_LENGTH:
        raise FlowError("unknown confirmation")
    raw: Any = _redis().getdel(_PENDING_PREFIX + _digest(pending_id))
    if raw is None:
        raise FlowError("this confirmation is unknown, used or expired; start the connect again")
    record = get_context(current_app).box.decrypt_json(
        raw if isinstance(raw, str) else raw.decode()
    )
    if not _bound_here(record):
        raise FlowError("this confirmation belongs to another session")
    return record


# Pages -------------------------------------------------------------------------------------


def _error_page(message: str, status: int = 400) -> tuple[str, int]:
    return (
        "<!doctype html><title>connector</title><h1>Could not connect</h1>"
        f"<p>{_escape(message)}</p>",
        status,
    )


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _confirm_page(exc: ReplacementNeededError, flow: dict[str, Any]) -> tuple[str, int]:
    pending_id = _park_replacement(exc, flow)
    logger.warning(
        "oauth.replacement-pending system=%s connection=%s old=%s new=%s",
        exc.system,
        exc.name,
        exc.old_external_id,
        exc.new_external_id,
    )
    page = render_template(
        "oauth_confirm.html",
        title="Replace connection?",
        system="Zoho Books organization" if exc.system == "zoho" else "Pipedrive company",
        name=exc.name,
        old=exc.old_external_id,
        new=exc.new_external_id,
        pending_id=pending_id,
    )
    # 409: nothing was stored; the admin decides.
    return page, 409


def _connected_zoho(connection: _Connection) -> tuple[str, int]:
    return (
        "<!doctype html><title>connector</title><h1>Connected</h1>"
        f"<p>Zoho Books organization {_escape(connection.display_name or connection.external_id)} "
        f"({_escape(connection.data_center.upper())} data center) is connected as "
        f"<code>{_escape(connection.name)}</code>.</p>",
        200,
    )


def _connected_pipedrive(connection: _Connection) -> tuple[str, int]:
    return (
        "<!doctype html><title>connector</title><h1>Connected</h1>"
        f"<p>Pipedrive company {_escape(connection.display_name)} is connected as "
        f"<code>{_escape(connection.name)}</code>.</p>",
        200,
    )


# Zoho --------------------------------------------------------------------------------------


@bp.get("/zoho/start")
@auth.admin_required
def zoho_start() -> Response | tuple[str, int]:
    """Send the user to Zoho's consent page (accounts.zoho.com routes them to their DC)."""
    context = get_context(current_app)
    settings = context.settings
    organization_id = request.args.get("organization_id", "").strip()
    if not settings.zoho_client_id:
        return _error_page("ZOHO_CLIENT_ID and ZOHO_CLIENT_SECRET are not configured", 500)
    if not organization_id.isdigit():
        return _error_page("add ?organization_id=<your Zoho Books organization id> to the URL")
    try:
        state = _issue_state(
            "zoho", {"organization_id": organization_id, "name": request.args.get("name", "")}
        )
    except redis.RedisError:
        return _error_page("Redis is unreachable; the sign-in cannot be started", 503)
    accounts = settings.zoho_accounts_url or "https://accounts.zoho.com"
    from connector.intake import vendor_totals_enabled

    # Least privilege: the bill scopes are asked for only when vendor totals are switched on.
    scopes = ZOHO_SCOPES + (VENDOR_SCOPES if vendor_totals_enabled(settings.config_path) else "")
    query = urlencode(
        {
            "scope": scopes,
            "client_id": settings.zoho_client_id,
            "response_type": "code",
            "redirect_uri": _zoho_redirect_uri(),
            "access_type": "offline",
            "prompt": "consent",
            "state": state,
        }
    )
    return redirect(f"{accounts}/oauth/v2/auth?{query}")


def _zoho_redirect_uri() -> str:
    settings = get_context(current_app).settings
    return settings.zoho_redirect_uri or url_for("oauth.zoho_callback", _external=True)


def _zoho_accounts_server() -> str | None:
    """The callback's ``accounts-server``, if it names an allowed host (else AuthError)."""
    from connector.zoho.regions import allowed_accounts_server

    given = request.args.get("accounts-server")
    if not given:
        return None
    configured = get_context(current_app).settings.zoho_accounts_url
    return allowed_accounts_server(given, configured=configured or None)


def _connect_zoho(
    flow: dict[str, Any],
    guard: ConnectGuard,
    *,
    grant_code: str | None = None,
    refresh_token: str | None = None,
) -> _Connection:
    from connector.zoho.service import connect_zoho

    return connect_zoho(
        get_context(current_app),
        organization_id=str(flow["organization_id"]),
        accounts_server=flow.get("accounts_server") or None,
        location=flow.get("location") or None,
        name=str(flow.get("name") or "") or None,
        redirect_uri=_zoho_redirect_uri(),
        guard=guard,
        grant_code=grant_code,
        refresh_token=refresh_token,
    )


@bp.get("/zoho/callback")
def zoho_callback() -> tuple[str, int]:
    """Check the flow and the accounts server, exchange the code there, store the connection."""
    if request.args.get("error"):
        return _error_page(f"Zoho answered: {request.args.get('error')}")
    if not auth.is_logged_in():
        return _error_page("log in as the admin and start the connection again", 403)
    flow: dict[str, Any] = {}
    try:
        flow = _consume_state("zoho")
        code = request.args.get("code", "")
        if not code:
            return _error_page("the redirect carried no code")
        flow["accounts_server"] = _zoho_accounts_server() or ""
        flow["location"] = request.args.get("location") or ""
        connection = _connect_zoho(flow, ConnectGuard(actor=auth.current_user()), grant_code=code)
    except ReplacementNeededError as exc:
        return _confirm_page(exc, flow)
    except redis.RedisError:
        return _error_page("Redis is unreachable; start the connection again", 503)
    except ConnectorError as exc:
        logger.warning("oauth.zoho.failed error=%s", exc)
        return _error_page(str(exc))
    return _connected_zoho(connection)


# Pipedrive ---------------------------------------------------------------------------------


@bp.get("/pipedrive/start")
@auth.admin_required
def pipedrive_start() -> Response | tuple[str, int]:
    """Send the user to Pipedrive's OAuth consent page."""
    settings = get_context(current_app).settings
    if not settings.pipedrive_client_id:
        return _error_page(
            "PIPEDRIVE_CLIENT_ID and PIPEDRIVE_CLIENT_SECRET are not configured", 500
        )
    try:
        state = _issue_state(
            "pipedrive",
            {
                "name": request.args.get("name", ""),
                "plan": request.args.get("plan", "growth"),
                "seats": request.args.get("seats", "1"),
            },
        )
    except redis.RedisError:
        return _error_page("Redis is unreachable; the sign-in cannot be started", 503)
    oauth = settings.pipedrive_oauth_url or "https://oauth.pipedrive.com"
    query = urlencode(
        {
            "client_id": settings.pipedrive_client_id,
            "redirect_uri": _pipedrive_redirect_uri(),
            "state": state,
        }
    )
    return redirect(f"{oauth}/oauth/authorize?{query}")


def _pipedrive_redirect_uri() -> str:
    settings = get_context(current_app).settings
    return settings.pipedrive_redirect_uri or url_for("oauth.pipedrive_callback", _external=True)


@bp.get("/pipedrive/callback")
def pipedrive_callback() -> tuple[str, int]:
    """Check the flow, exchange the code and store the Pipedrive connection."""
    from connector.pipedrive.service import connect_pipedrive_oauth_code

    if request.args.get("error"):
        return _error_page(f"Pipedrive answered: {request.args.get('error')}")
    if not auth.is_logged_in():
        return _error_page("log in as the admin and start the connection again", 403)
    flow: dict[str, Any] = {}
    try:
        flow = _consume_state("pipedrive")
        connection = connect_pipedrive_oauth_code(
            get_context(current_app),
            code=request.args.get("code", ""),
            redirect_uri=_pipedrive_redirect_uri(),
            name=str(flow.get("name") or "") or None,
            plan=str(flow.get("plan") or "growth"),
            seats=int(str(flow.get("seats") or "1")),
            guard=ConnectGuard(actor=auth.current_user()),
        )
    except ReplacementNeededError as exc:
        return _confirm_page(exc, flow)
    except redis.RedisError:
        return _error_page("Redis is unreachable; start the connection again", 503)
    except (ConnectorError, ValueError) as exc:
        logger.warning("oauth.pipedrive.failed error=%s", exc)
        return _error_page(str(exc))
    return _connected_pipedrive(connection)


# Confirmation ------------------------------------------------------------------------------


@bp.post("/confirm")
@auth.admin_required
def confirm_replacement() -> tuple[str, int]:
    """The admin confirmed: replace the connection with the account the callback brought."""
    from connector.pipedrive.service import connect_pipedrive

    auth.check_csrf()
    pending: dict[str, Any] = {}
    try:
        pending = _take_replacement(request.form.get("pending", ""))
        guard = ConnectGuard(actor=auth.current_user(), confirmed_replace=str(pending["old"]))
        if pending.get("system") == "zoho":
            pending["organization_id"] = pending["new"]
            return _connected_zoho(
                _connect_zoho(pending, guard, refresh_token=str(pending["credential"]))
            )
        connection = connect_pipedrive(
            get_context(current_app),
            oauth_refresh_token=str(pending["credential"]),
            name=str(pending["name"]),
            plan=str(pending.get("plan") or "growth"),
            seats=int(str(pending.get("seats") or "1")),
            guard=guard,
        )
    except ReplacementNeededError as exc:
        return _confirm_page(exc, pending)
    except redis.RedisError:
        return _error_page("Redis is unreachable; start the connection again", 503)
    except (ConnectorError, ValueError) as exc:
        logger.warning("oauth.confirm.failed error=%s", exc)
        return _error_page(str(exc))
    return _connected_pipedrive(connection)
