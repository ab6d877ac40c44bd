"""Pipedrive authentication: API tokens, and OAuth 2.0 with a refresh shared by every process.

API token (reference §2.1): sent in the ``x-api-token`` header, never as a URL parameter, so it
never lands in access logs, proxies or our own error messages.

OAuth (reference §2.2): ``POST {oauth_server}/oauth/token`` with HTTP Basic
``base64(client_id:client_secret)`` and a form body. Every token response carries ``api_domain``
(the company's API host, which may change), and may carry a new ``refresh_token``, which we
keep. :class:`PipedriveTokenManager` caches the access token *encrypted* in Redis so that all
workers share one token, and refreshes it single-flight across processes (what-users-expect §4.1):

* an in-process lock, then a Redis lease (``SET NX PX``, released only by its owner);
* a re-read of the cache after taking the lease: another process may have refreshed already;
* on a 401, the rejected token is compared with the stored one first: if they differ, someone
  else refreshed and no network call is needed;
* a failure cooldown, so a broken refresh is not retried by every worker in a tight loop;
* ``invalid_grant`` means a human must reconnect: ``on_reauth_required`` is called once.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import redis
import requests

from connector.crypto import SecretBox
from connector.errors import (
    ApiError,
    AuthError,
    CredentialError,
    NetworkError,
    RateLimitError,
    ReauthorizationRequired,
    ServerError,
)
from connector.settings import Secret

__all__ = [
    "API_TOKEN_HEADER",
    "DEFAULT_OAUTH_SERVER",
    "ApiTokenAuth",
    "BearerTokenAuth",
    "OAuthToken",
    "PipedriveAuth",
    "PipedriveOAuth",
    "PipedriveTokenManager",
    "exchange_code",
    "refresh",
    "token_cache_key",
]

logger = logging.getLogger(__name__)

API_TOKEN_HEADER = "x-api-token"  # noqa: S105 - a header name, not a secret
DEFAULT_OAUTH_SERVER = "https://oauth.pipedrive.com"
SYSTEM = "pipedrive"

# Reference §2.2: examples say 3599 s; tolerate a missing expires_in like Zoho's (§4.1).
_DEFAULT_EXPIRES_IN = 3600.0
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def token_cache_key(connection_id: int | str) -> str:
    """The Redis key holding a connection's encrypted OAuth token."""
    return f"connector:pd:token:{connection_id}"


class PipedriveAuth(Protocol):
    """What the client needs from an authentication method."""

    kind: str

    def apply(self, headers: dict[str, str]) -> None:
        """Add the credentials to a request's headers."""

    def handle_unauthorized(self, sent_headers: Mapping[str, str]) -> bool:
        """React to a 401 for a request sent with ``sent_headers``; True to retry once."""

    def api_domain(self) -> str | None:
        """The company's API base URL learnt from the credentials (OAuth), if any."""


class ApiTokenAuth:
    """A personal API token, sent in the ``x-api-token`` header.

    Args:
        token: the API token (a :class:`~connector.settings.Secret` or a plain string).
    """

    kind = "api_token"

    def __init__(self, token: Secret | str) -> None:
        self._token = token if isinstance(token, Secret) else Secret(token)
        if not self._token:
            raise AuthError("the Pipedrive API token is empty", system=SYSTEM)

    def __repr__(self) -> str:
        return "ApiTokenAuth(token='**********')"

    def apply(self, headers: dict[str, str]) -> None:
        """Add the ``x-api-token`` header."""
        headers[API_TOKEN_HEADER] = self._token.reveal()

    def handle_unauthorized(self, sent_headers: Mapping[str, str]) -> bool:
        """An API token cannot be refreshed: a 401 is final."""
        return False

    def api_domain(self) -> str | None:
        """API tokens do not tell their company domain (ask ``/v1/users/me``)."""
        return None

    def reveal(self) -> str:
        """The token itself, for fingerprinting; never log it."""
        return self._token.reveal()


@dataclass(frozen=True)
class OAuthToken:
    """An OAuth token set as Pipedrive returned it.

    Attributes:
        access_token: the bearer token.
        refresh_token: the refresh token (the latest one, if Pipedrive rotated it).
        expires_at: epoch seconds when the access token expires.
        api_domain: the company's API base, e.g. ``https://acme.pipedrive.com``.
        scope: granted scopes, space separated.
    """

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: float
    api_domain: str = ""
    scope: str = ""

    def usable(self, now: float, margin: float) -> bool:
        """Whether the access token is still valid for at least ``margin`` seconds."""
        return bool(self.access_token) and self.expires_at - margin > now

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable form (encrypt before storing)."""
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_at": self.expires_at,
            "api_domain": self.api_domain,
            "scope": self.scope,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> OAuthToken:
        """The inverse of :meth:`to_json`."""
        return cls(
            access_token=str(value.get("access_token") or ""),
            refresh_token=str(value.get("refresh_token") or ""),
            expires_at=float(value.get("expires_at") or 0),
            api_domain=str(value.get("api_domain") or ""),
            scope=str(value.get("scope") or ""),
        )


def _basic(client_id: str, client_secret: Secret | str) -> str:
    secret = client_secret.reveal() if isinstance(client_secret, Secret) else client_secret
    raw = f"{client_id}:{secret}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def _token_request(
    oauth_server: str,
    client_id: str,
    client_secret: Secret | str,
    form: dict[str, str],
    *,
    previous: OAuthToken | None,
    session: requests.Session | None,
    timeout: float,
    now: float,
) -> OAuthToken:
    if not client_id or not client_secret:
        raise AuthError(
            "PIPEDRIVE_CLIENT_ID and PIPEDRIVE_CLIENT_SECRET are needed for OAuth", system=SYSTEM
        )
    url = f"{oauth_server.rstrip('/')}/oauth/token"
    http = session or requests.Session()
    try:
        response = http.post(
            url,
            data=form,
            headers={
                "Authorization": _basic(client_id, client_secret),
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            timeout=timeout,
        )
    except (requests.Timeout, requests.ConnectionError) as exc:
        raise NetworkError("the Pipedrive OAuth server did not answer", system=SYSTEM) from exc
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    status = response.status_code
    if status >= 400 or "access_token" not in body:
        raise _token_error(status, body)
    expires_in = body.get("expires_in")
    try:
        lifetime = float(expires_in) if expires_in is not None else _DEFAULT_EXPIRES_IN
    except (TypeError, ValueError):
        lifetime = _DEFAULT_EXPIRES_IN
    return OAuthToken(
        access_token=str(body["access_token"]),
        # Pipedrive may or may not rotate refresh tokens (UNCONFIRMED, §2.2): keep what comes back.
        refresh_token=str(
            body.get("refresh_token") or (previous.refresh_token if previous else "")
        ),
        expires_at=now + lifetime,
        api_domain=str(body.get("api_domain") or (previous.api_domain if previous else "")),
        scope=str(body.get("scope") or (previous.scope if previous else "")),
    )


def _token_error(status: int, body: Mapping[str, Any]) -> ApiError:
    code = str(body.get("error") or "")
    # Only the OAuth error code and its description: the body never echoes secrets, but we do
    # not copy it wholesale either.
    description = str(body.get("error_description") or body.get("message") or "")[:200]
    message = f"token request refused: {code or 'no error code'}" + (
        f" ({description})" if description else ""
    )
    kwargs: dict[str, Any] = {"system": SYSTEM, "status": status, "code": code or None}
    if code == "invalid_grant":
        return ReauthorizationRequired(message, **kwargs)
    if status == 429:
        return RateLimitError(message, retry_after=None, **kwargs)
    if status >= 500:
        return ServerError(message, **kwargs)
    if status == 200:
        return ServerError("token response without access_token", **kwargs)
    return AuthError(message, **kwargs)


def exchange_code(
    *,
    code: str,
    redirect_uri: str,
    client_id: str,
    client_secret: Secret | str,
    oauth_server: str = DEFAULT_OAUTH_SERVER,
    session: requests.Session | None = None,
    timeout: float = 30.0,
    now: Callable[[], float] = time.time,
) -> OAuthToken:
    """Exchange an authorization code (valid 5 minutes) for a token set.

    Raises:
        ReauthorizationRequired: the code is invalid or expired (``invalid_grant``).
        AuthError: the client id or secret is refused.
    """
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    return _token_request(
        oauth_server,
        client_id,
        client_secret,
        form,
        previous=None,
        session=session,
        timeout=timeout,
        now=now(),
    )


def refresh(
    *,
    refresh_token: str,
    client_id: str,
    client_secret: Secret | str,
    oauth_server: str = DEFAULT_OAUTH_SERVER,
    previous: OAuthToken | None = None,
    session: requests.Session | None = None,
    timeout: float = 30.0,
    now: Callable[[], float] = time.time,
) -> OAuthToken:
    """Get a new access token with ``refresh_token``.

    A rotated refresh token is kept when returned; otherwise ``refresh_token`` is kept.

    Raises:
        ReauthorizationRequired: the refresh token is revoked or expired (``invalid_grant``).
    """
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    base = previous or OAuthToken(access_token="", refresh_token=refresh_token, expires_at=0)
    return _token_request(
        oauth_server,
        client_id,
        client_secret,
        form,
        previous=replace(base, refresh_token=refresh_token),
        session=session,
        timeout=timeout,
        now=now(),
    )


class PipedriveTokenManager:
    """One connection's OAuth access token, shared by every process through Redis.

    Args:
        connection_id: the stored connection's id; names the Redis keys.
        redis: the shared Redis.
        box: encrypts the cached token set (the cache holds the refresh token too, so a
            rotated refresh token reaches processes that started with the old one).
        client_id: the OAuth app's client id.
        client_secret: the OAuth app's client secret.
        refresh_token: the stored refresh token (used when the cache holds none).
        oauth_server: the OAuth server (``PIPEDRIVE_OAUTH_URL``).
        api_domain: the stored API base, used until a token response says otherwise.
        session: HTTP session for the token endpoint.
        timeout: token request timeout in seconds.
        lock_lease: seconds a refresh lease lives; longer than a refresh can take.
        failure_cooldown: seconds during which a failed refresh is not retried.
        expiry_margin: refresh when the token has less than this many seconds left.
        on_credentials_changed: called with the new token set when the refresh token or the
            API domain changed, so the caller can persist them.
        on_reauth_required: called with a reason when the refresh token is refused.
        clock: epoch seconds (tests).
        sleep: used while waiting for another process's refresh (tests).
    """

    def __init__(
        self,
        *,
        connection_id: int | str,
        redis: redis.Redis,
        box: SecretBox,
        client_id: str,
        client_secret: Secret | str,
        refresh_token: str,
        oauth_server: str = DEFAULT_OAUTH_SERVER,
        api_domain: str = "",
        session: requests.Session | None = None,
        timeout: float = 30.0,
        lock_lease: float | None = None,
        failure_cooldown: float = 30.0,
        expiry_margin: float = 300.0,
        on_credentials_changed: Callable[[OAuthToken], None] | None = None,
        on_reauth_required: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.connection_id = connection_id
        self._redis = redis
        self._box = box
        self._client_id = client_id
        self._client_secret = (
            client_secret if isinstance(client_secret, Secret) else Secret(client_secret)
        )
        self._refresh_token = Secret(refresh_token)
        self.oauth_server = (oauth_server or DEFAULT_OAUTH_SERVER).rstrip("/")
        self._initial_api_domain = api_domain
        self._session = session or requests.Session()
        self._timeout = timeout
        # Onyx pattern: a lease comfortably longer than the refresh's worst case.
        self._lease = lock_lease if lock_lease is not None else max(60.0, 2 * timeout + 5)
        self._cooldown = failure_cooldown
        self._margin = expiry_margin
        self.on_credentials_changed = on_credentials_changed
        self.on_reauth_required = on_reauth_required
        self._clock = clock
        self._sleep = sleep
        self._local = threading.Lock()
        self._token: OAuthToken | None = None
        self.key = token_cache_key(connection_id)
        self.lock_key = f"{self.key}:lock"
        self.cooldown_key = f"{self.key}:cooldown"
        #: Refreshes this instance performed over the network (for tests and metrics).
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"PipedriveTokenManager(connection_id={self.connection_id!r})"

    # Public -----------------------------------------------------------------------------

    def token(self) -> OAuthToken:
        """A usable token set, refreshed (single-flight) when missing or about to expire."""
        current = self._current()
        if current is not None and current.usable(self._clock(), self._margin):
            return current
        return self._refresh(rejected=current.access_token if current else None)

    def access_token(self) -> str:
        """A usable access token."""
        return self.token().access_token

    def api_domain(self) -> str:
        """The API base from the latest token response (or the stored one)."""
        return self.token().api_domain or self._initial_api_domain

    def invalidate(self, rejected_access_token: str) -> OAuthToken:
        """Handle a 401 for ``rejected_access_token``: refresh unless someone already did."""
        return self._refresh(rejected=rejected_access_token)

    def refresh_now(self) -> OAuthToken:
        """Refresh proactively (from a scheduled job), unless another process just did."""
        current = self._current()
        return self._refresh(rejected=current.access_token if current else None, force=True)

    def store(self, token: OAuthToken) -> None:
        """Share a token obtained elsewhere (e.g. while connecting) with every process."""
        self._write_cache(token)
        self._token = token
        self._refresh_token = Secret(token.refresh_token)

    def forget(self) -> None:
        """Drop the cached token (after a reconnect stores a new refresh token)."""
        self._token = None
        self._redis.delete(self.key, self.cooldown_key)

    # Internals ---------------------------------------------------------------------------

    def _current(self) -> OAuthToken | None:
        if self._token is not None and self._token.usable(self._clock(), self._margin):
            return self._token
        cached = self._read_cache()
        if cached is not None:
            self._token = cached
        return self._token

    def _read_cache(self) -> OAuthToken | None:
        raw = self._redis.get(self.key)
        if raw is None:
            return None
        try:
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            return OAuthToken.from_json(self._box.decrypt_json(text))
        except (CredentialError, ValueError, TypeError):
            # A key rotation or a corrupt entry: refresh, which overwrites it.
            logger.warning("pipedrive.token.cache-unreadable connection=%s", self.connection_id)
            return None

    def _write_cache(self, token: OAuthToken) -> None:
        # The entry outlives the access token on purpose: it carries the latest refresh token.
        ttl = max(int(token.expires_at - self._clock()), 0) + 7 * 86400
        self._redis.set(self.key, self._box.encrypt_json(token.to_json()), ex=ttl)

    def _fresh(self, token: OAuthToken | None, rejected: str | None) -> bool:
        return (
            token is not None
            and token.usable(self._clock(), self._margin if rejected is None else 0)
            and token.access_token != rejected
        )

    def _check_cooldown(self) -> None:
        raw = self._redis.get(self.cooldown_key)
        if raw is None:
            return
        try:
            info = json.loads(raw)
        except ValueError:
            info = {}
        kind = info.get("kind", "")
        message = f"token refresh failed recently; cooling down ({info.get('message', '')})"
        if kind == "reauth":
            raise ReauthorizationRequired(message, system=SYSTEM)
        if kind == "auth":
            raise AuthError(message, system=SYSTEM)
        raise ServerError(message, system=SYSTEM)

    def _refresh(self, *, rejected: str | None, force: bool = False) -> OAuthToken:
        with self._local:
            cached = self._read_cache()
            if cached is not None and not force and self._fresh(cached, rejected):
                self._token = cached
                return cached
            self._check_cooldown()
            owner = uuid.uuid4().hex
            deadline = self._clock() + self._lease + self._timeout
            delay = 0.02
            while not self._redis.set(self.lock_key, owner, nx=True, px=int(self._lease * 1000)):
                self._sleep(delay)
                delay = min(delay * 2, 0.25)
                cached = self._read_cache()
                if self._fresh(cached, rejected):
                    assert cached is not None
                    self._token = cached
                    return cached
                self._check_cooldown()
                if self._clock() > deadline:
                    raise NetworkError(
                        "timed out waiting for another process's token refresh", system=SYSTEM
                    )
            try:
                # Re-read under the lease: the holder before us may have refreshed already.
                cached = self._read_cache()
                if self._fresh(cached, rejected):
                    assert cached is not None
                    self._token = cached
                    return cached
                return self._refresh_locked(cached)
            finally:
                self._redis.eval(_RELEASE_LUA, 1, self.lock_key, owner)

    def _refresh_locked(self, cached: OAuthToken | None) -> OAuthToken:
        previous = cached or self._token
        refresh_token = (previous.refresh_token if previous else "") or (
            self._refresh_token.reveal()
        )
        if previous is None:
            previous = OAuthToken(
                access_token="",
                refresh_token=refresh_token,
                expires_at=0,
                api_domain=self._initial_api_domain,
            )
        try:
            token = refresh(
                refresh_token=refresh_token,
                client_id=self._client_id,
                client_secret=self._client_secret,
                oauth_server=self.oauth_server,
                previous=previous,
                session=self._session,
                timeout=self._timeout,
                now=self._clock,
            )
        except ReauthorizationRequired as exc:
            self._set_cooldown("reauth", exc.message)
            logger.warning("pipedrive.token.reauth-required connection=%s", self.connection_id)
            if self.on_reauth_required is not None:
                self.on_reauth_required(exc.message)
            raise
        except ApiError as exc:
            self._set_cooldown("auth" if isinstance(exc, AuthError) else "retry", exc.message)
            raise
        self.refreshes += 1
        self._write_cache(token)
        self._token = token
        self._refresh_token = Secret(token.refresh_token)
        self._redis.delete(self.cooldown_key)
        logger.info("pipedrive.token.refreshed connection=%s", self.connection_id)
        if self.on_credentials_changed is not None and (
            token.refresh_token != previous.refresh_token or token.api_domain != previous.api_domain
        ):
            self.on_credentials_changed(token)
        return token

    def _set_cooldown(self, kind: str, message: str) -> None:
        if self._cooldown <= 0:
            return
        self._redis.set(
            self.cooldown_key,
            json.dumps({"kind": kind, "message": message[:200]}),
            px=int(self._cooldown * 1000),
        )


class PipedriveOAuth:
    """OAuth bearer authentication backed by a :class:`PipedriveTokenManager`."""

    kind = "oauth"

    def __init__(self, manager: PipedriveTokenManager) -> None:
        self.manager = manager

    def __repr__(self) -> str:
        return f"PipedriveOAuth({self.manager!r})"

    def apply(self, headers: dict[str, str]) -> None:
        """Add ``Authorization: Bearer <access token>``."""
        headers["Authorization"] = f"Bearer {self.manager.access_token()}"

    def handle_unauthorized(self, sent_headers: Mapping[str, str]) -> bool:
        """Refresh, unless the rejected token was already replaced; then retry once."""
        sent = sent_headers.get("Authorization", "")
        rejected = sent.removeprefix("Bearer ").strip()
        self.manager.invalidate(rejected)
        return True

    def api_domain(self) -> str | None:
        """The company API base from the token response."""
        return self.manager.api_domain() or None


class BearerTokenAuth:
    """A fixed OAuth access token, for one-off calls (connecting) where no refresh is wanted."""

    kind = "oauth"

    def __init__(self, access_token: str, api_domain: str | None = None) -> None:
        self._token = Secret(access_token)
        self._api_domain = api_domain

    def __repr__(self) -> str:
        return "BearerTokenAuth(access_token='**********')"

    def apply(self, headers: dict[str, str]) -> None:
        """Add ``Authorization: Bearer <access token>``."""
        headers["Authorization"] = f"Bearer {self._token.reveal()}"

    def handle_unauthorized(self, sent_headers: Mapping[str, str]) -> bool:
        """A fixed token cannot be refreshed."""
        return False

    def api_domain(self) -> str | None:
        """The API base given at construction."""
        return self._api_domain
