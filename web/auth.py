"""Login for the status pages: one admin password, a session cookie, CSRF tokens, a rate limit.

The password comes from ``CONNECTOR_ADMIN_PASSWORD``; only its hash is kept in the app. Without
a password the pages answer 503 rather than opening up.

Every process signs cookies with the same key (derived from ``CONNECTOR_SECRET_KEY``) and ties a
session to the password by a keyed digest that is the same everywhere, so a session opened on one
gunicorn worker is valid on all of them. Each session also carries a random id whose hash is
stored in ``ui_sessions``; logout deletes it, so a replayed cookie is refused on every process. The session cookie is ``HttpOnly``,
``SameSite=Lax`` and ``Secure``; ``Secure`` is dropped only when the app is in ``TESTING`` mode
or ``CONNECTOR_PUBLIC_URL`` is plain http on localhost (a browser does not send a Secure cookie
over http, so the pages could not be used there otherwise).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

import redis
import sqlalchemy as sa
from flask import Flask, abort, current_app, redirect, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash
from werkzeug.wrappers import Response

from connector.models import UiSession, utcnow
from web import get_context

__all__ = [
    "CSRF_FIELD",
    "LOGIN_ATTEMPTS",
    "LOGIN_WINDOW",
    "admin_required",
    "check_csrf",
    "check_password",
    "configure",
    "csrf_token",
    "current_user",
    "is_logged_in",
    "log_in",
    "log_out",
    "login_allowed",
    "password_configured",
    "record_failed_login",
    "safe_next",
    "secure_cookie_required",
]

logger = logging.getLogger(__name__)

CSRF_FIELD = "csrf_token"
#: Failed logins allowed per client address within :data:`LOGIN_WINDOW` seconds.
LOGIN_ATTEMPTS = 10
LOGIN_WINDOW = 300
SESSION_LIFETIME = dt.timedelta(hours=12)
# Slows guessing when Redis cannot count failures.
_FALLBACK_DELAY = 1.0
_HASH_KEY = "connector.ui.password_hash"
_MARKER_KEY = "connector.ui.password_marker"
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


def secure_cookie_required(app: Flask) -> bool:
    """Whether the session cookie must be ``Secure``: always, except in tests and on localhost."""
    if app.config.get("TESTING"):
        return False
    parts = urlsplit(get_context(app).settings.public_url)
    return not (parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS)


def configure(app: Flask) -> None:
    """Hash the admin password and set the session cookie flags."""
    context = get_context(app)
    password = context.settings.admin_password
    app.extensions[_HASH_KEY] = generate_password_hash(password.reveal()) if password else None
    app.extensions[_MARKER_KEY] = (
        _password_marker(context.box.derive_key("admin-password-marker"), password.reveal())
        if password
        else None
    )
    app.config.update(
        SESSION_COOKIE_NAME="connector_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure_cookie_required(app),
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
    )


def _password_hash() -> str | None:
    value = current_app.extensions.get(_HASH_KEY)
    return value if isinstance(value, str) else None


def password_configured() -> bool:
    """An admin password is set (otherwise the pages stay closed)."""
    return _password_hash() is not None


def _password_marker(key: str, password: str) -> str:
    # Ties a session to the password it was opened with: changing the password logs everyone out.
    # Keyed and unsalted so every process computes the same marker (the salted hash differs per
    # process, which made a session valid only on the worker that opened it).
    return hmac.new(key.encode(), password.encode(), hashlib.sha256).hexdigest()[:32]


def _current_marker() -> str | None:
    value = current_app.extensions.get(_MARKER_KEY)
    return value if isinstance(value, str) else None


def _id_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def check_password(candidate: str) -> bool:
    """Compare ``candidate`` with the configured password's hash."""
    password_hash = _password_hash()
    return password_hash is not None and check_password_hash(password_hash, candidate)


def log_in() -> None:
    """Start a fresh authenticated session (new id, new CSRF token, nothing carried over)."""
    marker = _current_marker()
    assert marker is not None
    session_id = secrets.token_urlsafe(32)
    now = utcnow()
    with get_context(current_app).session() as db:
        # Expired rows are dropped here, the only place rows are added.
        db.execute(sa.delete(UiSession).where(UiSession.expires_at < now))
        db.add(
            UiSession(
                id_hash=_id_hash(session_id), created_at=now, expires_at=now + SESSION_LIFETIME
            )
        )
    session.clear()
    session.permanent = True
    session["user"] = "admin"
    session["pw"] = marker
    session["sid"] = session_id
    session[CSRF_FIELD] = secrets.token_urlsafe(32)


def log_out() -> None:
    """End the session on every process, then forget it in this cookie."""
    session_id = session.get("sid")
    if isinstance(session_id, str):
        with get_context(current_app).session() as db:
            db.execute(sa.delete(UiSession).where(UiSession.id_hash == _id_hash(session_id)))
    session.clear()


def is_logged_in() -> bool:
    """The request carries a live session opened with the current password."""
    expected = _current_marker()
    if expected is None or session.get("user") != "admin":
        return False
    marker, session_id = session.get("pw"), session.get("sid")
    if not isinstance(marker, str) or not hmac.compare_digest(marker, expected):
        return False
    return isinstance(session_id, str) and _session_alive(session_id)


def _session_alive(session_id: str) -> bool:
    with get_context(current_app).session() as db:
        found = db.scalar(
            sa.select(UiSession.expires_at).where(UiSession.id_hash == _id_hash(session_id))
        )
    return found is not None and found > utcnow()


def current_user() -> str:
    """Who the logged-in session belongs to (for the audit trail); "" when not logged in."""
    user = session.get("user") if is_logged_in() else None
    return user if isinstance(user, str) else ""


_P = ParamSpec("_P")
_R = TypeVar("_R")


def admin_required(view: Callable[_P, _R]) -> Callable[_P, _R | Response]:
    """Views outside the status pages' blueprint that need the admin session: else to login."""

    @wraps(view)
    def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R | Response:
        if not is_logged_in():
            return redirect(url_for("ui.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return guarded


def safe_next(target: str | None) -> str | None:
    """``target`` if it is a path on this site, else None (the caller goes to ``/``).

    Browsers drop tabs and newlines inside URLs and read ``\\`` as ``/``, so ``/%09/evil.example``
    and ``/\\evil.example`` would both land on ``//evil.example``: any control character, a
    scheme or host, or a leading ``//`` or ``/\\`` is refused.
    """
    if not target:
        return None
    candidate = target.strip()
    if any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in candidate):
        return None
    if not candidate.startswith("/") or candidate.startswith(("//", "/\\")):
        return None
    parts = urlsplit(candidate)
    if parts.scheme or parts.netloc:
        return None
    return candidate


def csrf_token() -> str:
    """This session's CSRF token (created on first use); put it in every form."""
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


def check_csrf() -> None:
    """Abort with 400 unless the form carries this session's CSRF token."""
    expected = session.get(CSRF_FIELD)
    given = request.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not expected or not given:
        abort(400, description="The form's security token is missing. Reload the page and retry.")
    if not hmac.compare_digest(expected.encode(), given.encode()):
        abort(400, description="The form's security token is wrong. Reload the page and retry.")


def _attempts_key() -> str:
    return f"connector:ui:login-failures:{request.remote_addr or 'unknown'}"


def _redis() -> redis.Redis:
    # The client connects lazily: an unreachable Redis shows up as RedisError on first use.
    return get_context(current_app).redis


def login_allowed() -> bool:
    """False while this client address has too many recent failed logins."""
    try:
        raw: Any = _redis().get(_attempts_key())
    except redis.RedisError:
        return True
    return int(raw or 0) < LOGIN_ATTEMPTS


def record_failed_login() -> None:
    """Count a failed login for this client address (or wait a moment without Redis)."""
    try:
        pipe = _redis().pipeline()
        pipe.incr(_attempts_key())
        pipe.expire(_attempts_key(), LOGIN_WINDOW)
        pipe.execute()
    except redis.RedisError:
        time.sleep(_FALLBACK_DELAY)
    logger.warning("ui.login-failed remote=%s", request.remote_addr)
