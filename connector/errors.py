"""The one exception hierarchy of connector.

Every error raised on purpose inside ``connector/`` derives from :class:`ConnectorError`, and the
tree is sorted by what a caller should *do* about an error::

    ConnectorError
    ├── ConfigError(problems)                 settings or mapping file invalid; all problems at once
    ├── CredentialError                       a stored secret cannot be decrypted (wrong key)
    ├── ReplacementNeededError                a connect would replace another account: confirm
    ├── ApiError(system, status, code, ...)   an external API said no
    │   ├── RetryableError                    try again later, with backoff
    │   │   ├── RateLimitError(retry_after)   429, burst or per-minute limits
    │   │   │   └── BudgetExhaustedError      daily budget gone: park until reset_at, never spin
    │   │   ├── ServerError                   5xx
    │   │   ├── NetworkError                  timeout, refused or dropped connection
    │   │   │   └── UncertainWriteError       a write was sent but its outcome is unknown
    │   │   └── ConcurrencyLimitError         Zoho 1070: too many requests in flight
    │   └── FatalError                        retrying will not help
    │       ├── AuthError                     credentials rejected
    │       │   ├── InvalidTokenError         access token expired/invalid: refresh once, retry once
    │       │   └── ReauthorizationRequired   refresh token revoked/invalid: a human must reconnect
    │       ├── PermissionDeniedError         scope missing, not authorized (Zoho 57)
    │       ├── BlockedError                  Pipedrive's HTML 403 after ignored 429s
    │       ├── WrongOrganizationError        Zoho 6041 / wrong data center
    │       ├── NotFoundError                 the record does not exist
    │       └── ValidationError               the request body or parameters were refused
    ├── WebhookError                          an inbound webhook is not acceptable
    │   ├── InvalidSignatureError(reason)     signature or credentials do not verify
    │   └── PayloadError                      the body is not a payload we understand
    └── SyncError                             the sync engine could not decide or apply
        ├── AmbiguousMatchError(candidates)   more than one candidate; a human decides
        └── StaleEventError                   an event older than what was already applied

Error messages never include tokens, secrets or URLs that carry credentials.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

__all__ = [
    "AmbiguousMatchError",
    "ApiError",
    "AuthError",
    "BlockedError",
    "BudgetExhaustedError",
    "ConcurrencyLimitError",
    "ConfigError",
    "ConnectorError",
    "CredentialError",
    "FatalError",
    "InvalidSignatureError",
    "InvalidTokenError",
    "NetworkError",
    "NotFoundError",
    "PayloadError",
    "PermissionDeniedError",
    "RateLimitError",
    "ReauthorizationRequired",
    "ReplacementNeededError",
    "RetryableError",
    "ServerError",
    "StaleEventError",
    "SyncError",
    "UncertainWriteError",
    "ValidationError",
    "WebhookError",
    "WrongOrganizationError",
]


class ConnectorError(Exception):
    """Root of every error connector raises on purpose."""


class ConfigError(ConnectorError):
    """Settings or mapping are invalid. ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        joined = "\n  - ".join(self.problems)
        super().__init__(f"{len(self.problems)} configuration problem(s):\n  - {joined}")


class CredentialError(ConnectorError):
    """A stored secret could not be decrypted with any configured key."""


class ReplacementNeededError(ConnectorError):
    """A guarded connect found connection ``name`` bound to another account; nothing was stored.

    Carries the credential the connect obtained (``credential``, a
    :class:`~connector.settings.Secret`, never in ``str``) so a confirmation can finish the
    connect without a second consent.
    """

    def __init__(
        self, *, system: str, name: str, old_external_id: str, new_external_id: str, credential: Any
    ) -> None:
        self.system = system
        self.name = name
        self.old_external_id = old_external_id
        self.new_external_id = new_external_id
        self.credential = credential
        super().__init__(
            f"connection {name!r} is {system} account {old_external_id}; replacing it with "
            f"{new_external_id} needs a confirmation"
        )


class ApiError(ConnectorError):
    """An external API refused a request.

    Attributes:
        system: ``"zoho"`` or ``"pipedrive"``.
        status: HTTP status, or ``None`` when no response arrived.
        code: the API's own error code (Zoho's numeric ``code``, Pipedrive's ``code``), if any.
        request_id: the response's request id header, if any.
    """

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        system: str = "",
        status: int | None = None,
        code: Any = None,
        request_id: str | None = None,
        body: str | None = None,
    ) -> None:
        self.message = message
        self.system = system
        self.status = status
        self.code = code
        self.request_id = request_id
        # Bodies are kept short: they are for humans reading an audit row, not for replay.
        self.body = body[:500] if body else None
        super().__init__(message)

    def __str__(self) -> str:
        parts = [self.system or "api"]
        if self.status is not None:
            parts.append(str(self.status))
        if self.code not in (None, ""):
            parts.append(f"code {self.code}")
        prefix = " ".join(parts)
        suffix = f" (request {self.request_id})" if self.request_id else ""
        return f"{prefix}: {self.message}{suffix}"


class RetryableError(ApiError):
    """Transient: the same request may succeed later."""

    retryable = True


class RateLimitError(RetryableError):
    """A rate limit answered; ``retry_after`` is the suggested wait in seconds, if known."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class BudgetExhaustedError(RateLimitError):
    """The daily budget is spent. Work must be parked until ``reset_at`` instead of retried."""

    def __init__(self, message: str, *, reset_at: dt.datetime | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.reset_at = reset_at


class ServerError(RetryableError):
    """The API failed on its side (5xx)."""


class NetworkError(RetryableError):
    """No usable response: timeout, refused or dropped connection."""


class UncertainWriteError(NetworkError):
    """A write was sent but no answer came back; check before repeating it."""


class ConcurrencyLimitError(RetryableError):
    """Too many requests in flight at once (Zoho code 1070)."""


class BusyError(RetryableError):
    """Another worker is syncing the same record right now; try again shortly."""


class FatalError(ApiError):
    """Permanent: repeating the same request will fail the same way."""


class AuthError(FatalError):
    """Credentials were rejected."""


class InvalidTokenError(AuthError):
    """The access token is invalid or expired; refresh once and retry once."""


class ReauthorizationRequired(AuthError):  # noqa: N818 - reads as the state it reports
    """The refresh token is revoked or invalid; the connection needs a human to reconnect."""


class PermissionDeniedError(FatalError):
    """Authenticated, but not allowed (missing scope, Zoho code 57)."""


class BlockedError(FatalError):
    """Pipedrive blocked the token (HTML 403 after repeated 429s); stop all traffic for a while."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class WrongOrganizationError(FatalError):
    """The organization id or data center does not match the credentials (Zoho 6041)."""


class NotFoundError(FatalError):
    """The record does not exist."""


class ValidationError(FatalError):
    """The API refused the request's body or parameters."""


class WebhookError(ConnectorError):
    """An inbound webhook is not acceptable."""


class InvalidSignatureError(WebhookError):
    """The webhook's signature or credentials do not verify. ``reason`` is machine-readable."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"webhook not authenticated: {reason}")


class PayloadError(WebhookError):
    """The webhook body is not a payload we understand."""


class SyncError(ConnectorError):
    """The sync engine could not decide or apply a change."""


class AmbiguousMatchError(SyncError):
    """More than one record matches; the sync does not guess."""

    def __init__(self, message: str, candidates: Sequence[Any]) -> None:
        self.candidates = list(candidates)
        super().__init__(message)


class StaleEventError(SyncError):
    """The event is older than what was already applied."""
