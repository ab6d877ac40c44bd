"""The Zoho Accounts (OAuth 2.0) part of the Zoho Books simulator.

Pure state and rules, no Flask: the simulator's routes call :class:`ZohoAccounts` and turn its
``(status, body)`` answers into responses. Behaviour follows reference §1-2 and §9: grant codes
live 60 s and work once, access tokens live 3600 s, a refresh token mints at most 10 access
tokens per 10 minutes, a user keeps at most 20 refresh tokens per client, and everything is
bound to the data center that issued it.
"""

from __future__ import annotations

import secrets
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from connector.sandbox.common import Clock

__all__ = [
    "DATA_CENTERS",
    "AccessTokenInfo",
    "DataCenter",
    "TokenRequest",
    "ZohoAccounts",
]


@dataclass(frozen=True)
class DataCenter:
    """One Zoho data center: its ``location`` code and real hosts (reference §1)."""

    code: str
    accounts_host: str
    api_host: str
    confirmed: bool = True


DATA_CENTERS: dict[str, DataCenter] = {
    dc.code: dc
    for dc in (
        DataCenter("us", "accounts.zoho.com", "www.zohoapis.com"),
        DataCenter("eu", "accounts.zoho.eu", "www.zohoapis.eu"),
        DataCenter("in", "accounts.zoho.in", "www.zohoapis.in"),
        DataCenter("au", "accounts.zoho.com.au", "www.zohoapis.com.au"),
        DataCenter("jp", "accounts.zoho.jp", "www.zohoapis.jp"),
        # The CA accounts host is zohocloud.ca while its API host is zohoapis.ca (reference §1.2).
        DataCenter("ca", "accounts.zohocloud.ca", "www.zohoapis.ca"),
        DataCenter("cn", "accounts.zoho.com.cn", "www.zohoapis.com.cn"),
        DataCenter("sa", "accounts.zoho.sa", "www.zohoapis.sa"),
        # Books on the UK DC is UNCONFIRMED (reference §1.1); the simulator can switch it off.
        DataCenter("uk", "accounts.zoho.uk", "www.zohoapis.uk", confirmed=False),
    )
}

THROTTLE_ERROR = {
    "error": "Access Denied",
    "error_description": "You have made too many requests continuously. Please try again after some time.",
}


def _new_token() -> str:
    # Zoho tokens look like "1000.<32 hex>.<32 hex>".
    return f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"


def _parse_scope(scope: str) -> frozenset[str]:
    return frozenset(
        part.strip().lower() for part in scope.replace(" ", ",").split(",") if part.strip()
    )


@dataclass
class _Client:
    client_id: str
    default_secret: str
    secrets: dict[str, str]
    data_centers: frozenset[str] | None
    redirect_uris: tuple[str, ...]

    def secret_for(self, dc: str) -> str:
        return self.secrets.get(dc, self.default_secret)


@dataclass
class _GrantCode:
    client_id: str
    dc: str
    user: str
    scope: str
    issued_at: float
    access_type: str
    issue_refresh_token: bool
    redirect_uri: str | None


@dataclass
class _RefreshToken:
    token: str
    client_id: str
    dc: str
    user: str
    scope: str
    created_at: float
    window_start: float
    window_count: int = 0
    active: deque[str] = field(default_factory=deque)


@dataclass
class AccessTokenInfo:
    """What the API side needs to know about a presented access token."""

    token: str
    client_id: str
    dc: str
    user: str
    scopes: frozenset[str]
    expires_at: float
    refresh_token: str | None


@dataclass
class TokenRequest:
    """One call to ``/oauth/v2/token`` (kept for test assertions such as "exactly one refresh")."""

    grant_type: str
    dc: str
    client_id: str
    refresh_token: str | None
    outcome: str
    at: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form; the refresh token is shortened so dumps stay secret-free."""
        return {
            "grant_type": self.grant_type,
            "dc": self.dc,
            "client_id": self.client_id,
            "refresh_token_suffix": self.refresh_token[-6:] if self.refresh_token else None,
            "outcome": self.outcome,
            "at": self.at,
        }


class ZohoAccounts:
    """State and rules of the Zoho Accounts OAuth servers (one object serves every DC).

    Args:
        clock: time source for every expiry and window.
        code_ttl: grant-code lifetime in seconds (60 per Zoho).
        access_ttl: access-token lifetime in seconds (3600).
        refresh_limit: access tokens one refresh token may mint per ``refresh_window`` (10).
        refresh_window: length of that window in seconds (600).
        active_token_cap: unexpired access tokens per refresh token; the oldest is invalidated
            beyond it (15 or 30 depending on the Zoho product, UNCONFIRMED for Books: default 30).
        max_refresh_tokens: refresh tokens per user and client; the oldest is deleted beyond it.
        error_status: HTTP status of token-endpoint errors (200 as observed).
        throttle_status: HTTP status of the "Access Denied" throttle answer (200 per Zoho).
        count_exchange_in_throttle: whether the code exchange's access token counts towards the
            10-per-10-minutes limit of the refresh token it creates.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        code_ttl: float = 60.0,
        access_ttl: float = 3600.0,
        refresh_limit: int = 10,
        refresh_window: float = 600.0,
        active_token_cap: int = 30,
        max_refresh_tokens: int = 20,
        error_status: int = 200,
        throttle_status: int = 200,
        count_exchange_in_throttle: bool = True,
    ) -> None:
        self.clock = clock
        self.code_ttl = code_ttl
        self.access_ttl = access_ttl
        self.refresh_limit = refresh_limit
        self.refresh_window = refresh_window
        self.active_token_cap = active_token_cap
        self.max_refresh_tokens = max_refresh_tokens
        self.error_status = error_status
        self.throttle_status = throttle_status
        self.count_exchange_in_throttle = count_exchange_in_throttle
        self.token_requests: list[TokenRequest] = []
        self._lock = threading.RLock()
        self._clients: dict[str, _Client] = {}
        self._codes: dict[str, _GrantCode] = {}
        self._refresh: dict[str, _RefreshToken] = {}
        self._access: dict[str, AccessTokenInfo] = {}
        # Every access token ever issued, for tests that scan for leaked secrets.
        self._minted: list[str] = []
        self._by_user_client: dict[tuple[str, str, str], deque[str]] = {}

    # -- setup ---------------------------------------------------------------------------------

    def register_client(
        self,
        client_id: str,
        client_secret: str,
        *,
        secrets_per_dc: Mapping[str, str] | None = None,
        data_centers: tuple[str, ...] | None = None,
        redirect_uris: tuple[str, ...] = (),
    ) -> None:
        """Register an API-console client. The id is shared by every DC; secrets may differ.

        ``data_centers`` limits the DCs where multi-DC is enabled (``None``: all of them).
        ``redirect_uris`` (when given) is enforced by ``/oauth/v2/auth``.
        """
        with self._lock:
            self._clients[client_id] = _Client(
                client_id=client_id,
                default_secret=client_secret,
                secrets=dict(secrets_per_dc or {}),
                data_centers=frozenset(data_centers) if data_centers is not None else None,
                redirect_uris=tuple(redirect_uris),
            )

    def client_known(self, client_id: str, dc: str) -> bool:
        """Whether ``client_id`` exists and is enabled in ``dc``."""
        with self._lock:
            client = self._clients.get(client_id)
            return client is not None and (client.data_centers is None or dc in client.data_centers)

    def redirect_allowed(self, client_id: str, redirect_uri: str) -> bool:
        """Whether the client accepts this redirect URI (any, when none were registered)."""
        with self._lock:
            client = self._clients.get(client_id)
            return client is not None and (
                not client.redirect_uris or redirect_uri in client.redirect_uris
            )

    def issue_grant_code(
        self,
        client_id: str,
        dc: str,
        *,
        user: str,
        scope: str,
        access_type: str = "offline",
        prompt: str | None = "consent",
        redirect_uri: str | None = None,
    ) -> str:
        """Mint a grant code, as the self-client console or the consent screen does.

        With ``access_type=offline`` a refresh token comes with the exchange only for the first
        consent of a user+client, or when ``prompt=consent`` (reference §2.1).
        """
        with self._lock:
            if client_id not in self._clients:
                raise KeyError(f"unknown client {client_id!r}")
            has_token = bool(self._by_user_client.get((dc, user, client_id)))
            issue_refresh = access_type == "offline" and (prompt == "consent" or not has_token)
            code = _new_token()
            self._codes[code] = _GrantCode(
                client_id=client_id,
                dc=dc,
                user=user,
                scope=scope,
                issued_at=self.clock.timestamp(),
                access_type=access_type,
                issue_refresh_token=issue_refresh,
                redirect_uri=redirect_uri,
            )
            return code

    # -- token endpoint ------------------------------------------------------------------------

    def token(
        self, dc: str, params: Mapping[str, str], api_domain: str
    ) -> tuple[int, dict[str, Any]]:
        """Answer ``POST /oauth/v2/token`` at the accounts server of ``dc``."""
        grant_type = params.get("grant_type", "")
        client_id = params.get("client_id", "")
        with self._lock:
            if grant_type == "authorization_code":
                status, body = self._exchange(dc, params, api_domain)
                refresh = body.get("refresh_token")
            elif grant_type == "refresh_token":
                status, body = self._refresh_grant(dc, params, api_domain)
                refresh = params.get("refresh_token")
            else:
                status, body = self.error_status, {"error": "unsupported_grant_type"}
                refresh = None
            self.token_requests.append(
                TokenRequest(
                    grant_type=grant_type,
                    dc=dc,
                    client_id=client_id,
                    refresh_token=refresh,
                    outcome=str(body.get("error", "ok")),
                    at=self.clock.timestamp(),
                )
            )
            return status, body

    def _check_client(self, dc: str, params: Mapping[str, str]) -> bool:
        client = self._clients.get(params.get("client_id", ""))
        if client is None:
            return False
        if client.data_centers is not None and dc not in client.data_centers:
            return False
        return secrets.compare_digest(params.get("client_secret", ""), client.secret_for(dc))

    def _exchange(
        self, dc: str, params: Mapping[str, str], api_domain: str
    ) -> tuple[int, dict[str, Any]]:
        if not self._check_client(dc, params):
            return self.error_status, {"error": "invalid_client"}
        grant = self._codes.get(params.get("code", ""))
        now = self.clock.timestamp()
        if grant is None or now - grant.issued_at > self.code_ttl:
            return self.error_status, {"error": "invalid_code"}
        if grant.client_id != params.get("client_id"):
            return self.error_status, {"error": "invalid_code"}
        if grant.dc != dc:
            # The user lives in another DC: this accounts server does not know the client grant.
            return self.error_status, {"error": "invalid_client"}
        del self._codes[params["code"]]
        refresh: _RefreshToken | None = None
        if grant.issue_refresh_token:
            refresh = self._new_refresh_token(grant, now)
        access = self._mint_access(grant.client_id, dc, grant.user, grant.scope, refresh, now)
        if refresh is not None and self.count_exchange_in_throttle:
            refresh.window_count += 1
        body: dict[str, Any] = {"access_token": access.token}
        if refresh is not None:
            body["refresh_token"] = refresh.token
        body.update(
            {
                "scope": grant.scope,
                "api_domain": api_domain,
                "token_type": "Bearer",
                "expires_in": int(self.access_ttl),
            }
        )
        return 200, body

    def _refresh_grant(
        self, dc: str, params: Mapping[str, str], api_domain: str
    ) -> tuple[int, dict[str, Any]]:
        if not self._check_client(dc, params):
            return self.error_status, {"error": "invalid_client"}
        refresh = self._refresh.get(params.get("refresh_token", ""))
        if refresh is None:
            return self.error_status, {"error": "invalid_code"}
        if refresh.dc != dc or refresh.client_id != params.get("client_id"):
            return self.error_status, {"error": "invalid_client"}
        now = self.clock.timestamp()
        if now - refresh.window_start >= self.refresh_window:
            refresh.window_start = now
            refresh.window_count = 0
        if refresh.window_count >= self.refresh_limit:
            # Blocked for the rest of the window (reference §2.5).
            return self.throttle_status, dict(THROTTLE_ERROR)
        refresh.window_count += 1
        access = self._mint_access(refresh.client_id, dc, refresh.user, refresh.scope, refresh, now)
        return 200, {
            "access_token": access.token,
            "scope": refresh.scope,
            "api_domain": api_domain,
            "token_type": "Bearer",
            "expires_in": int(self.access_ttl),
        }

    def _new_refresh_token(self, grant: _GrantCode, now: float) -> _RefreshToken:
        token = _RefreshToken(
            token=_new_token(),
            client_id=grant.client_id,
            dc=grant.dc,
            user=grant.user,
            scope=grant.scope,
            created_at=now,
            window_start=now,
        )
        self._refresh[token.token] = token
        owned = self._by_user_client.setdefault((grant.dc, grant.user, grant.client_id), deque())
        owned.append(token.token)
        while len(owned) > self.max_refresh_tokens:
            # The 21st refresh token silently deletes the first one and its access tokens.
            self._delete_refresh(owned.popleft())
        return token

    def issued_access_tokens(self) -> list[str]:
        """Every access token issued so far, expired or not."""
        with self._lock:
            return list(self._minted)

    def _mint_access(
        self,
        client_id: str,
        dc: str,
        user: str,
        scope: str,
        refresh: _RefreshToken | None,
        now: float,
    ) -> AccessTokenInfo:
        info = AccessTokenInfo(
            token=_new_token(),
            client_id=client_id,
            dc=dc,
            user=user,
            scopes=_parse_scope(scope),
            expires_at=now + self.access_ttl,
            refresh_token=refresh.token if refresh else None,
        )
        self._access[info.token] = info
        self._minted.append(info.token)
        if refresh is not None:
            # Expired tokens do not count towards the active cap.
            while refresh.active and (
                refresh.active[0] not in self._access
                or self._access[refresh.active[0]].expires_at <= now
            ):
                self._access.pop(refresh.active.popleft(), None)
            refresh.active.append(info.token)
            while len(refresh.active) > self.active_token_cap:
                self._access.pop(refresh.active.popleft(), None)
        return info

    def _delete_refresh(self, token: str) -> None:
        refresh = self._refresh.pop(token, None)
        if refresh is None:
            return
        for access in refresh.active:
            self._access.pop(access, None)
        owned = self._by_user_client.get((refresh.dc, refresh.user, refresh.client_id))
        if owned and token in owned:
            owned.remove(token)

    # -- revoke and inspection -----------------------------------------------------------------

    def revoke(self, dc: str, token: str) -> tuple[int, dict[str, Any]]:
        """Answer ``POST /oauth/v2/token/revoke?token=<refresh token>``."""
        with self._lock:
            refresh = self._refresh.get(token)
            if refresh is not None and refresh.dc == dc:
                self._delete_refresh(token)
                return 200, {"status": "success"}
            access = self._access.get(token)
            if access is not None and access.dc == dc:
                del self._access[token]
                return 200, {"status": "success"}
            return self.error_status, {"error": "invalid_code"}

    def validate_access(self, token: str) -> AccessTokenInfo | None:
        """The token's record if it exists and has not expired, else ``None``."""
        with self._lock:
            info = self._access.get(token)
            if info is None:
                return None
            if info.expires_at <= self.clock.timestamp():
                return None
            return info

    def issue_tokens(self, client_id: str, dc: str, *, user: str, scope: str) -> dict[str, Any]:
        """Shortcut for setups: a refresh token plus an access token, without the HTTP dance.

        Does not count as a token request.
        """
        with self._lock:
            code = self.issue_grant_code(client_id, dc, user=user, scope=scope)
            grant = self._codes.pop(code)
            now = self.clock.timestamp()
            refresh = self._new_refresh_token(grant, now)
            access = self._mint_access(client_id, dc, user, scope, refresh, now)
            return {
                "access_token": access.token,
                "refresh_token": refresh.token,
                "expires_in": int(self.access_ttl),
                "dc": dc,
            }

    def expire_access_tokens(self, *, refresh_token: str | None = None) -> int:
        """Invalidate access tokens now (all, or those of one refresh token); returns the count."""
        with self._lock:
            doomed = [
                token
                for token, info in self._access.items()
                if refresh_token is None or info.refresh_token == refresh_token
            ]
            for token in doomed:
                del self._access[token]
            return len(doomed)

    def refresh_token_exists(self, token: str) -> bool:
        """Whether a refresh token is still valid (not revoked or evicted)."""
        with self._lock:
            return token in self._refresh

    def counts(self) -> dict[str, int]:
        """Sizes of the token stores (for the state endpoint)."""
        with self._lock:
            now = self.clock.timestamp()
            return {
                "clients": len(self._clients),
                "grant_codes": len(self._codes),
                "refresh_tokens": len(self._refresh),
                "access_tokens_active": sum(1 for a in self._access.values() if a.expires_at > now),
                "token_requests": len(self.token_requests),
            }
