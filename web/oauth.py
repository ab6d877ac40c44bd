"""OAuth connect flows for Zoho Books and Pipedrive apps.

The ``state`` parameter is signed (and expires), so a callback cannot be forged or replayed with
someone else's parameters. Zoho's callback names the user's data center in ``location`` and
``accounts-server``; the code is exchanged there, within its 60-second life.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, current_app, redirect, request, url_for
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from werkzeug.wrappers import Response

from connector.errors import ConnectorError
from web import get_context

bp = Blueprint("oauth", __name__, url_prefix="/oauth")
logger = logging.getLogger(__name__)

STATE_MAX_AGE = 600
ZOHO_SCOPES = (
    "ZohoBooks.contacts.CREATE,ZohoBooks.contacts.READ,ZohoBooks.contacts.UPDATE,"
    "ZohoBooks.invoices.READ,ZohoBooks.customerpayments.READ,ZohoBooks.settings.READ"
)
VENDOR_SCOPES = ",ZohoBooks.bills.READ,ZohoBooks.vendorpayments.READ"


def _serializer() -> URLSafeTimedSerializer:
    key = get_context(current_app).box.derive_key("oauth-state")
    return URLSafeTimedSerializer(key, salt="connector-oauth")


def _load_state(expected_system: str) -> dict[str, Any]:
    raw = request.args.get("state", "")
    try:
        state = _serializer().loads(raw, max_age=STATE_MAX_AGE)
    except SignatureExpired as exc:
        raise ConnectorError("the sign-in took too long; start again") from exc
    except BadSignature as exc:
        raise ConnectorError("invalid state parameter") from exc
    if not isinstance(state, dict) or state.get("system") != expected_system:
        raise ConnectorError("invalid state parameter")
    return state


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


@bp.get("/zoho/start")
def zoho_start() -> Response | tuple[str, int]:
    """Send the user to Zoho's consent page (accounts.zoho.com routes them to their DC)."""
    context = get_context(current_app)
    settings = context.settings
    organization_id = request.args.get("organization_id", "").strip()
    if not settings.zoho_client_id:
        return _error_page("ZOHO_CLIENT_ID and ZOHO_CLIENT_SECRET are not configured", 500)
    if not organization_id.isdigit():
        return _error_page("add ?organization_id=<your Zoho Books organization id> to the URL")
    state = _serializer().dumps(
        {
            "system": "zoho",
            "organization_id": organization_id,
            "name": request.args.get("name", ""),
            "nonce": secrets.token_urlsafe(8),
        }
    )
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


@bp.get("/zoho/callback")
def zoho_callback() -> tuple[str, int]:
    """Exchange the code at the accounts server the redirect names, then store the connection."""
    from connector.zoho.service import connect_zoho

    if request.args.get("error"):
        return _error_page(f"Zoho answered: {request.args.get('error')}")
    try:
        state = _load_state("zoho")
        code = request.args.get("code", "")
        if not code:
            return _error_page("the redirect carried no code")
        connection = connect_zoho(
            get_context(current_app),
            organization_id=str(state["organization_id"]),
            grant_code=code,
            accounts_server=request.args.get("accounts-server") or None,
            location=request.args.get("location") or None,
            name=str(state.get("name") or "") or None,
            redirect_uri=_zoho_redirect_uri(),
        )
    except ConnectorError as exc:
        logger.warning("oauth.zoho.failed error=%s", exc)
        return _error_page(str(exc))
    return (
        "<!doctype html><title>connector</title><h1>Connected</h1>"
        f"<p>Zoho Books organization {_escape(connection.display_name or connection.external_id)} "
        f"({_escape(connection.data_center.upper())} data center) is connected as "
        f"<code>{_escape(connection.name)}</code>.</p>",
        200,
    )


@bp.get("/pipedrive/start")
def pipedrive_start() -> Response | tuple[str, int]:
    """Send the user to Pipedrive's OAuth consent page."""
    settings = get_context(current_app).settings
    if not settings.pipedrive_client_id:
        return _error_page(
            "PIPEDRIVE_CLIENT_ID and PIPEDRIVE_CLIENT_SECRET are not configured", 500
        )
    state = _serializer().dumps(
        {
            "system": "pipedrive",
            "name": request.args.get("name", ""),
            "plan": request.args.get("plan", "growth"),
            "seats": request.args.get("seats", "1"),
            "nonce": secrets.token_urlsafe(8),
        }
    )
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
    """Exchange the code and store the Pipedrive connection."""
    from connector.pipedrive.service import connect_pipedrive_oauth_code

    if request.args.get("error"):
        return _error_page(f"Pipedrive answered: {request.args.get('error')}")
    try:
        state = _load_state("pipedrive")
        connection = connect_pipedrive_oauth_code(
            get_context(current_app),
            code=request.args.get("code", ""),
            redirect_uri=_pipedrive_redirect_uri(),
            name=str(state.get("name") or "") or None,
            plan=str(state.get("plan") or "growth"),
            seats=int(str(state.get("seats") or "1")),
        )
    except (ConnectorError, ValueError) as exc:
        logger.warning("oauth.pipedrive.failed error=%s", exc)
        return _error_page(str(exc))
    return (
        "<!doctype html><title>connector</title><h1>Connected</h1>"
        f"<p>Pipedrive company {_escape(connection.display_name)} is connected as "
        f"<code>{_escape(connection.name)}</code>.</p>",
        200,
    )
