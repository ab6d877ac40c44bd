"""Zoho OAuth: code exchange, refresh, and one shared access token per connection.

Zoho limits token minting hard (reference §2.5: 10 access tokens per refresh token per 10
minutes; a cap on active tokens that silently revokes the oldest). So every process shares one
access token through Redis, encrypted with the :class:`~connector.crypto.SecretBox`, and a
refresh is single-flight across processes and machines:

* a Redis lock (``SET NX PX`` with a lease of at least twice the HTTP timeout and a
  token-checked release, i.e. redis-py's ``Lock``), plus an in-process lock;
* after taking the lock the cached token is read again: whoever waited finds the token the
  winner stored and makes no network call;
* on a 401 the rejected token is compared with the stored one first (the Nango pattern);
* a failed refresh starts a cooldown shared by every process, so a failing token endpoint is
  not hammered by every worker in a loop;
* a revoked refresh token (``invalid_code``) is remembered in Redis for a day (keyed by the
  refresh token's fingerprint, so reconnecting clears it) and raises
  :class:`~connector.errors.ReauthorizationRequired` everywhere, never retried.

Token endpoint errors arrive with HTTP 200 (reference §2.3), so the body's ``error`` key is
checked whatever the status.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
import requests
from redis.exceptions import LockError

from connector.connections import token_fingerprint
from connector.crypto import SecretBox
from connector.errors import (
    ApiError,
    AuthError,
    CredentialError,
    NetworkError,
    RateLimitError,
    ReauthorizationRequired,
    RetryableError,
    ServerError,
)
from connector.settings import Secret

__all__ = [
    "DEFAULT_EXPIRES_IN",
    "FAILURE_COOLDOWN",
    "REFRESH_AFTER",
    "TOKEN_THROTTLE_RETRY_AFTER",
    "TokenResponse",
    "ZohoAuth",
    "ZohoTokenManager",
    "exchange_grant_code",
    "refresh_access_token",
]

logger = logging.getLogger(__name__)

SYSTEM = "zoho"

# Zoho access tokens live 60 minutes; refreshing at 55 leaves room for clock skew and slow calls.
REFRESH_AFTER = 55 * 60
DEFAULT_EXPIRES_IN = 3600.0
# Nango's figure: long enough that N workers do not each retry a failing refresh.
FAILURE_COOLDOWN = 30.0
# "Try after a few minutes" (reference §2.3); the block lasts for the rest of a 10-minute window.
TOKEN_THROTTLE_RETRY_AFTER = 300.0
# How long a revoked refresh token is remembered so other processes stop without a call.
REAUTH_MEMORY = 24 * 3600
# A token this close to its expiry is not handed out as a fallback.
_EXPIRY_MARGIN = 30.0


@dataclass(frozen=True)
class TokenResponse:
    """A successful answer of ``/oauth/v2/token``. Tokens are left out of ``repr``."""

    access_token: str = field(repr=False)
    api_domain: str
    expires_in: float = DEFAULT_EXPIRES_IN
    refresh_token: str | None = field(default=None, repr=False)
    token_type: str = "Bearer"  # noqa: S105 - a scheme name, not a secret
    scope: str = ""


def _parse_expires_in(body: Mapping[str, Any]) -> float:
    """Seconds until expiry, tolerating legacy and missing fields (reference §2.2)."""
    for key in ("expires_in_sec", "expires_in"):
        raw = body.get(key)
        if raw is None:
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            continue
        if value <= 0:
            continue
        # Legacy responses gave milliseconds in expires_in (3600000); no token lives 28 hours.
        if value > 100_000:
            value /= 1000.0
        return value
    return DEFAULT_EXPIRES_IN


def _token_error(error: str, description: str, grant_type: str, status: int) -> ApiError:
    kwargs: dict[str, Any] = {"system": SYSTEM, "status": status, "code": error}
    lowered = error.strip().lower()
    if lowered == "invalid_code":
        if grant_type == "refresh_token":
            return ReauthorizationRequired(
                "Zoho rejected the refresh token (invalid_code): it was revoked, replaced by a "
                "newer consent (Zoho keeps 20 per user and client) or belongs to another data "
                "center; reconnect with `connector zoho connect`",
                **kwargs,
            )
        return AuthError(
            "Zoho rejected the grant code (invalid_code): it is valid for 60 seconds and only "
            "once; generate a new one and connect again",
            **kwargs,
        )
    if lowered == "invalid_client":
        return AuthError(
            "Zoho rejected the client (invalid_client): check ZOHO_CLIENT_ID and "
            "ZOHO_CLIENT_SECRET, and that the accounts server is the organization's data "
            "center (the client secret differs per data center; a .com accounts server does "
            "not know EU or IN clients)",
            **kwargs,
        )
    if lowered == "access denied":
        return RateLimitError(
            "Zoho's token endpoint is throttling this client (Access Denied: too many token "
            "requests); refreshing is paused for a few minutes",
            retry_after=TOKEN_THROTTLE_RETRY_AFTER,
            **kwargs,
        )
    detail = f": {description}" if description else ""
    return AuthError(f"Zoho token endpoint refused the request ({error}){detail}", **kwargs)


def _post_token(
    session: requests.Session | None,
    accounts_server: str,
    form: dict[str, str],
    timeout: float,
) -> TokenResponse:
    url = f"{accounts_server.rstrip('/')}/oauth/v2/token"
    grant_type = form["grant_type"]
    http = session or requests.Session()
    try:
        response = http.post(url, data=form, timeout=timeout)
    except requests.Timeout as exc:
        raise NetworkError("Zoho token endpoint timed out", system=SYSTEM) from exc
    except requests.ConnectionError as exc:
        raise NetworkError("Zoho token endpoint unreachable", system=SYSTEM) from exc
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    status = response.status_code
    if isinstance(body, dict) and body.get("error"):
        raise _token_error(
            str(body["error"]), str(body.get("error_description") or ""), grant_type, status
        )
    if status >= 500:
        raise ServerError(
            f"Zoho token endpoint failed (HTTP {status})", system=SYSTEM, status=status
        )
    if status == 429:
        raise RateLimitError(
            "Zoho token endpoint answered 429",
            retry_after=TOKEN_THROTTLE_RETRY_AFTER,
            system=SYSTEM,
            status=status,
        )
    if not (200 <= status < 300) or not isinstance(body, dict) or not body.get("access_token"):
        # The body is deliberately not copied: an odd answer might still carry a token.
        raise AuthError(
            f"unexpected answer from the Zoho token endpoint (HTTP {status}, no access_token)",
            system=SYSTEM,
            status=status,
        )
    refresh = body.get("refresh_token")
    return TokenResponse(
        access_token=str(body["access_token"]),
        api_domain=str(body.get("api_domain") or "").rstrip("/"),
        expires_in=_parse_expires_in(body),
        refresh_token=str(refresh) if refresh else None,
        token_type=str(body.get("token_type") or "Bearer"),
        scope=str(body.get("scope") or ""),
    )


def exchange_grant_code(
    session: requests.Session | None,
    accounts_server: str,
    *,
    code: str,
    client_id: str,
    client_secret: Secret | str,
    redirect_uri: str = "",
    timeout: float = 30.0,
) -> TokenResponse:
    """Exchange a grant code for tokens at ``{accounts_server}/oauth/v2/token``.

    The code must be exchanged at the accounts server of the user's data center (the callback's
    ``accounts-server``), within 60 seconds, once.

    Raises:
        AuthError: ``invalid_code`` (expired/used code) or ``invalid_client`` (wrong secret or DC).
        RateLimitError: the token endpoint is throttling (``Access Denied``).
        NetworkError: the token endpoint could not be reached.
    """
    secret = client_secret.reveal() if isinstance(client_secret, Secret) else client_secret
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": client_id,
        "client_secret": secret,
        "redirect_uri": redirect_uri,
    }
    return _post_token(session, accounts_server, form, timeout)


def refresh_access_token(
    session: requests.Session | None,
    accounts_server: str,
    *,
    refresh_token: Secret | str,
    client_id: str,
    client_secret: Secret | str,
    timeout: float = 30.0,
) -> TokenResponse:
    """Mint a new access token from a refresh token.

    Raises:
        ReauthorizationRequired: ``invalid_code``: the refresh token is revoked or unknown.
        AuthError: ``invalid_client``.
        RateLimitError: ``Access Denied`` throttling.
        NetworkError, ServerError: transient failures.
    """
    token = refresh_token.reveal() if isinstance(refresh_token, Secret) else refresh_token
    secret = client_secret.reveal() if isinstance(client_secret, Secret) else client_secret
    form = {
        "grant_type": "refresh_token",
        "refresh_token": token,
        "client_id": client_id,
        "client_secret": secret,
    }
    return _post_token(session, accounts_server, form, timeout)


@dataclass(frozen=True)
class _CachedToken:
    access_token: str = field(repr=False)
    issued_at: float
    expires_at: float
    api_domain: str


_REBUILDABLE_ERRORS: dict[str, type[ApiError]] = {
    "RateLimitError": RateLimitError,
    "ServerError": ServerError,
    "NetworkError": NetworkError,
    "AuthError": AuthError,
}


class ZohoTokenManager:
    """One shared, encrypted access token per Zoho connection, refreshed single-flight.

    Args:
        redis: Redis client shared by every process.
        box: encrypts the cached access token.
        connection_id: the connection's id (namespaces the Redis keys).
        accounts_server: where to refresh (the connection's data center).
        client_id: OAuth client id.
        client_secret: OAuth client secret.
        refresh_token: the connection's refresh token.
        session: HTTP session for the token endpoint.
        timeout: HTTP timeout in seconds; the lock lease is at least twice this.
        clock: seconds since the epoch (injectable for tests).
        on_reauth_required: called once with a reason when the refresh token is revoked.
        on_api_domain: called with the new ``api_domain`` when a token response changes it.
        api_domain: the ``api_domain`` already known (stored on the connection).
        pinned_api_domain: the data center table's API host for a Zoho accounts server; token
            responses cannot move API calls away from it.
        lock_wait: how long to wait for another process's refresh; defaults to the lease.
    """

    def __init__(
        self,
        redis: redis.Redis,
        box: SecretBox,
        *,
        connection_id: int,
        accounts_server: str,
        client_id: str,
        client_secret: Secret,
        refresh_token: Secret,
        session: requests.Session | None = None,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
        on_reauth_required: Callable[[str], None] | None = None,
        on_api_domain: Callable[[str], None] | None = None,
        api_domain: str = "",
        pinned_api_domain: str = "",
        lock_wait: float | None = None,
    ) -> None:
        self.redis = redis
        self.box = box
        self.connection_id = connection_id
        self.accounts_server = accounts_server.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self.session = session or requests.Session()
        self.timeout = timeout
        self.clock = clock
        self.on_reauth_required = on_reauth_required
        self.on_api_domain = on_api_domain
        self._pinned_api_domain = pinned_api_domain.rstrip("/")
        self._known_api_domain = api_domain.rstrip("/")
        self.lease = 2 * timeout + 5
        self.lock_wait = self.lease + 1 if lock_wait is None else lock_wait
        self._local = threading.Lock()
        self._fingerprint = token_fingerprint(refresh_token.reveal())
        prefix = "connector:zoho"
        self.token_key = f"{prefix}:token:{connection_id}"
        self.lock_key = f"{prefix}:token-lock:{connection_id}"
        self.cooldown_key = f"{prefix}:token-cooldown:{connection_id}"
        self.reauth_key = f"{prefix}:token-reauth:{connection_id}"

    def __repr__(self) -> str:
        return f"ZohoTokenManager(connection_id={self.connection_id!r})"

    # Public API ----------------------------------------------------------------------------

    def get_access_token(self) -> str:
        """The shared access token, refreshed first when it is 55 minutes old or missing.

        Raises:
            ReauthorizationRequired: the refresh token is revoked.
            RateLimitError, NetworkError, ServerError: refresh failed and no usable token is left.
        """
        self._check_reauth()
        cached = self._read()
        if cached is not None and self._age(cached) < REFRESH_AFTER:
            return cached.access_token
        token, _ = self._refresh(reject=cached.access_token if cached else None, fallback=cached)
        return token.access_token

    def invalidate(self, rejected_token: str) -> str:
        """Replace a token the API refused, unless another process already did.

        Returns:
            The token to retry with.
        """
        cached = self._read()
        if self._is_replacement(cached, rejected_token):
            assert cached is not None
            return cached.access_token
        token, _ = self._refresh(reject=rejected_token, fallback=None)
        return token.access_token

    def refresh_if_due(self) -> bool:
        """Refresh when the shared token is 55 minutes old (the scheduled, proactive path).

        Returns:
            True when this call minted a new token; False when none was due or another process
            refreshed it first.
        """
        self._check_reauth()
        cached = self._read()
        if cached is not None and self._age(cached) < REFRESH_AFTER:
            return False
        _, refreshed = self._refresh(reject=cached.access_token if cached else None, fallback=None)
        return refreshed

    def store_token(self, response: TokenResponse) -> None:
        """Cache a token obtained elsewhere (the initial code exchange)."""
        self._store(response)

    def clear(self) -> None:
        """Forget the cached token, the cooldown and any remembered revocation."""
        self.redis.delete(self.token_key, self.cooldown_key, self.reauth_key)

    def token_age(self) -> float | None:
        """Seconds since the shared token was issued, or ``None`` when there is none."""
        cached = self._read()
        return None if cached is None else self._age(cached)

    def next_refresh_at(self) -> float | None:
        """Epoch seconds of the next proactive refresh, or ``None`` when there is no token."""
        cached = self._read()
        return None if cached is None else cached.issued_at + REFRESH_AFTER

    def current_api_domain(self) -> str | None:
        """The ``api_domain`` of the shared token (or the one known at construction)."""
        if self._pinned_api_domain:
            return self._pinned_api_domain
        cached = self._read()
        if cached is not None and cached.api_domain:
            return cached.api_domain
        return self._known_api_domain or None

    # Cache ---------------------------------------------------------------------------------

    def _age(self, cached: _CachedToken) -> float:
        return self.clock() - cached.issued_at

    def _read(self) -> _CachedToken | None:
        raw = self.redis.get(self.token_key)
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        try:
            document = self.box.decrypt_json(text)
            return _CachedToken(
                access_token=str(document["access_token"]),
                issued_at=float(document["issued_at"]),
                expires_at=float(document["expires_at"]),
                api_domain=str(document.get("api_domain") or ""),
            )
        except (CredentialError, KeyError, TypeError, ValueError):
            # A key rotated away or a corrupt entry costs one refresh, nothing more.
            logger.warning("zoho.token.cache-unreadable connection=%s", self.connection_id)
            return None

    def _store(self, response: TokenResponse) -> _CachedToken:
        issued_at = self.clock()
        previous = self._read()
        known = (previous.api_domain if previous else "") or self._known_api_domain
        api_domain = self._pinned_api_domain or response.api_domain or known
        if self._pinned_api_domain and response.api_domain not in ("", api_domain):
            logger.warning("zoho.token.api-domain-ignored connection=%s", self.connection_id)
        cached = _CachedToken(
            access_token=response.access_token,
            issued_at=issued_at,
            expires_at=issued_at + response.expires_in,
            api_domain=api_domain,
        )
        document = {
            "access_token": cached.access_token,
            "issued_at": cached.issued_at,
            "expires_at": cached.expires_at,
            "api_domain": cached.api_domain,
        }
        ttl_ms = max(1000, int(response.expires_in * 1000))
        self.redis.set(self.token_key, self.box.encrypt_json(document), px=ttl_ms)
        if api_domain and api_domain != known:
            self._known_api_domain = api_domain
            if self.on_api_domain is not None:
                try:
                    self.on_api_domain(api_domain)
                except Exception:
                    logger.exception(
                        "zoho.token.api-domain-callback-failed connection=%s", self.connection_id
                    )
        return cached

    def _is_replacement(self, cached: _CachedToken | None, reject: str | None) -> bool:
        """Whether ``cached`` is a usable token other than the one being replaced."""
        return (
            cached is not None
            and cached.access_token != reject
            and self._age(cached) < REFRESH_AFTER
            and self.clock() < cached.expires_at
        )

    def _usable(self, cached: _CachedToken | None) -> bool:
        return cached is not None and self.clock() < cached.expires_at - _EXPIRY_MARGIN

    # Failure memory ------------------------------------------------------------------------

    def _check_reauth(self) -> None:
        raw = self.redis.get(self.reauth_key)
        if raw is None:
            return
        try:
            memory = json.loads(raw)
        except ValueError:
            return
        if memory.get("fingerprint") == self._fingerprint:
            raise ReauthorizationRequired(str(memory.get("reason") or ""), system=SYSTEM)

    def _remember_reauth(self, reason: str) -> None:
        memory = json.dumps({"fingerprint": self._fingerprint, "reason": reason})
        self.redis.set(self.reauth_key, memory, ex=REAUTH_MEMORY)

    def _check_cooldown(self) -> None:
        raw = self.redis.get(self.cooldown_key)
        if raw is None:
            return
        remaining = max(self.redis.pttl(self.cooldown_key), 0) / 1000.0
        try:
            memory = json.loads(raw)
        except ValueError:
            memory = {}
        error_class = _REBUILDABLE_ERRORS.get(str(memory.get("error")), RateLimitError)
        message = f"token refresh is cooling down after a failure: {memory.get('message', '')}"
        if issubclass(error_class, RateLimitError):
            raise error_class(message, retry_after=remaining, system=SYSTEM)
        raise error_class(message, system=SYSTEM)

    def _start_cooldown(self, error: ApiError) -> None:
        wait = FAILURE_COOLDOWN
        if isinstance(error, RateLimitError) and error.retry_after:
            wait = max(wait, error.retry_after)
        name = next(
            (n for n, cls in _REBUILDABLE_ERRORS.items() if type(error) is cls),
            "AuthError" if isinstance(error, AuthError) else "ServerError",
        )
        memory = json.dumps({"error": name, "message": error.message})
        self.redis.set(self.cooldown_key, memory, px=int(wait * 1000))

    # Refresh -------------------------------------------------------------------------------

    def _refresh(
        self, *, reject: str | None, fallback: _CachedToken | None
    ) -> tuple[_CachedToken, bool]:
        try:
            with self._local:
                return self._refresh_single_flight(reject)
        except RetryableError:
            # A token with minutes left beats an error: the next caller tries again.
            if fallback is not None and self._usable(fallback):
                logger.warning(
                    "zoho.token.refresh-failed-using-current connection=%s", self.connection_id
                )
                return fallback, False
            raise

    def _refresh_single_flight(self, reject: str | None) -> tuple[_CachedToken, bool]:
        self._check_reauth()
        cached = self._read()
        if self._is_replacement(cached, reject):
            assert cached is not None
            return cached, False
        self._check_cooldown()
        lock = self.redis.lock(
            self.lock_key,
            timeout=self.lease,
            blocking_timeout=self.lock_wait,
            thread_local=False,
        )
        if not lock.acquire():
            cached = self._read()
            if self._is_replacement(cached, reject):
                assert cached is not None
                return cached, False
            raise RateLimitError(
                "another process is refreshing the Zoho token and has not finished",
                retry_after=5.0,
                system=SYSTEM,
            )
        try:
            # Whoever held the lock before us may have refreshed already: read again.
            self._check_reauth()
            cached = self._read()
            if self._is_replacement(cached, reject):
                assert cached is not None
                return cached, False
            self._check_cooldown()
            return self._call_token_endpoint(), True
        finally:
            try:
                lock.release()
            except LockError:
                # The lease ran out mid-refresh; the token-checked release protects the new owner.
                logger.warning("zoho.token.lock-lost connection=%s", self.connection_id)

    def _call_token_endpoint(self) -> _CachedToken:
        try:
            response = refresh_access_token(
                self.session,
                self.accounts_server,
                refresh_token=self._refresh_token,
                client_id=self.client_id,
                client_secret=self._client_secret,
                timeout=self.timeout,
            )
        except ReauthorizationRequired as exc:
            self._remember_reauth(exc.message)
            logger.error("zoho.token.reauthorization-required connection=%s", self.connection_id)
            if self.on_reauth_required is not None:
                try:
                    self.on_reauth_required(exc.message)
                except Exception:
                    logger.exception(
                        "zoho.token.reauth-callback-failed connection=%s", self.connection_id
                    )
            raise
        except ApiError as exc:
            self._start_cooldown(exc)
            logger.warning(
                "zoho.token.refresh-failed connection=%s error=%s",
                self.connection_id,
                type(exc).__name__,
            )
            raise
        logger.info("zoho.token.refreshed connection=%s", self.connection_id)
        return self._store(response)


class ZohoAuth(requests.auth.AuthBase):
    """Adds ``Authorization: Zoho-oauthtoken <token>`` (Zoho takes tokens only in a header)."""

    def __init__(self, tokens: ZohoTokenManager) -> None:
        self.tokens = tokens

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        """Attach the current shared token."""
        request.headers["Authorization"] = f"Zoho-oauthtoken {self.tokens.get_access_token()}"
        return request
