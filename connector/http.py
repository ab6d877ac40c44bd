"""The request core both API clients share: session, timeout, classification, retry.

A client subclasses :class:`BaseClient` and supplies :meth:`BaseClient.classify`, the one place
where a response becomes either a parsed body or an error from :mod:`connector.errors`.
Retries happen here, for :class:`~connector.errors.RetryableError` only, with exponential
backoff and full jitter, capped in count and in delay. Long waits (a spent daily budget) are not
slept here: they surface as :class:`~connector.errors.BudgetExhaustedError` for the caller to park.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from urllib3.exceptions import NewConnectionError

from connector.errors import (
    ApiError,
    BudgetExhaustedError,
    NetworkError,
    RateLimitError,
    RetryableError,
    ServerError,
    UncertainWriteError,
)

__all__ = ["BaseClient", "CallRecord", "CallStats", "RetryPolicy"]

logger = logging.getLogger(__name__)

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class RetryPolicy:
    """How many times and how long to retry a retryable error.

    ``max_delay`` caps a single sleep: waits longer than that are the caller's to schedule.
    """

    max_retries: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int, hint: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        if hint is not None and hint >= 0:
            # The server's hint is a floor; a little jitter keeps processes from stampeding.
            return min(hint + self._jitter(self.base_delay), self.max_delay)
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return self._jitter(ceiling)

    @staticmethod
    def _jitter(ceiling: float) -> float:
        # Full jitter (AWS architecture blog): uniform in [0, ceiling]. Kept separate for tests.
        return random.uniform(0, ceiling)


@dataclass
class CallRecord:
    """What one logical call cost, for the audit trail and metrics."""

    method: str
    path: str
    status: int | None = None
    attempts: int = 0
    tokens: int = 0
    duration_ms: float = 0.0


@dataclass
class CallStats:
    """Running totals a client keeps, read by the sync engine for audit rows."""

    calls: int = 0
    tokens: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def add(self, status: int | None, tokens: int) -> None:
        """Count one HTTP exchange."""
        self.calls += 1
        self.tokens += tokens
        key = str(status) if status is not None else "network"
        self.by_status[key] = self.by_status.get(key, 0) + 1


class BaseClient:
    """Session, timeout, retries and error classification for one API.

    Args:
        system: ``"zoho"`` or ``"pipedrive"``, stamped on every error.
        session: injected ``requests.Session`` (tests, connection pooling).
        timeout: seconds for connect and read of every request.
        retry: the retry policy.
        sleep: injectable sleep, for tests.
    """

    system = "api"

    def __init__(
        self,
        *,
        session: requests.Session | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.session = session or requests.Session()
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self.stats = CallStats()
        self.on_call: Callable[[CallRecord], None] | None = None

    # Hooks a subclass overrides -------------------------------------------------------------

    def prepare(self, method: str, url: str, headers: dict[str, str]) -> None:
        """Add auth headers; called before every attempt (tokens may change between attempts)."""

    def before_send(self, method: str, url: str) -> int:
        """Wait for the rate limiter; return the tokens this request spends."""
        return 0

    def after_response(self, method: str, url: str, response: requests.Response | None) -> None:
        """Feed the response (or ``None`` on a network failure) back to the rate limiter."""

    def classify(self, response: requests.Response) -> Any:
        """Return the parsed body of a successful response, or raise an :class:`ApiError`."""
        raise NotImplementedError

    def on_error(self, error: ApiError, attempt: int) -> bool:
        """Give the subclass a chance to repair and retry (e.g. refresh a token once).

        Returns:
            True to retry immediately without counting it as a backoff attempt.
        """
        return False

    # The request loop --------------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        retry_writes: bool = False,
    ) -> Any:
        """Send a request with retries and return the parsed body.

        Non-idempotent writes (POST) that time out are not repeated blindly: they raise
        :class:`UncertainWriteError` so the caller can look before writing again, unless
        ``retry_writes`` says the write is safe to repeat.
        """
        method = method.upper()
        record = CallRecord(method=method, path=url.split("?", 1)[0])
        started = time.monotonic()
        attempt = 0
        repaired = 0
        try:
            while True:
                attempt += 1
                record.attempts += 1
                request_headers = dict(headers or {})
                self.prepare(method, url, request_headers)
                tokens = self.before_send(method, url)
                record.tokens += tokens
                response: requests.Response | None = None
                try:
                    response = self.session.request(
                        method,
                        url,
                        params=params,
                        json=json,
                        data=data,
                        headers=request_headers,
                        timeout=self.timeout,
                    )
                except (requests.Timeout, requests.ConnectionError) as exc:
                    self.after_response(method, url, None)
                    self.stats.add(None, tokens)
                    error: ApiError = self._network_error(method, exc, retry_writes)
                else:
                    self.after_response(method, url, response)
                    self.stats.add(response.status_code, tokens)
                    record.status = response.status_code
                    try:
                        return self.classify(response)
                    except ServerError as exc:
                        # A 5xx to a write does not say the write did not happen: repeating it
                        # blindly can duplicate a record. The caller looks before writing again.
                        if method not in _SAFE_METHODS and not retry_writes:
                            error = UncertainWriteError(
                                f"{method} answered {response.status_code}; its outcome is unknown",
                                system=self.system,
                                status=response.status_code,
                            )
                        else:
                            error = exc
                    except ApiError as exc:
                        error = exc
                if repaired < 1 and self.on_error(error, attempt):
                    repaired += 1
                    attempt -= 1
                    continue
                if not self._should_retry(error, attempt):
                    raise error
                hint = error.retry_after if isinstance(error, RateLimitError) else None
                delay = self.retry.delay(attempt, hint)
                logger.info(
                    "%s.retry method=%s path=%s attempt=%d status=%s delay=%.2f",
                    self.system,
                    method,
                    record.path,
                    attempt,
                    error.status,
                    delay,
                )
                self._sleep(delay)
        finally:
            record.duration_ms = (time.monotonic() - started) * 1000
            if self.on_call is not None:
                self.on_call(record)

    def _should_retry(self, error: ApiError, attempt: int) -> bool:
        if not isinstance(error, RetryableError) or isinstance(error, UncertainWriteError):
            return False
        if isinstance(error, BudgetExhaustedError):
            return False
        if attempt > self.retry.max_retries:
            return False
        if isinstance(error, RateLimitError) and error.retry_after is not None:
            # A wait longer than we are willing to sleep is the caller's to schedule.
            return error.retry_after <= self.retry.max_delay
        return True

    def _network_error(self, method: str, exc: Exception, retry_writes: bool) -> ApiError:
        sent = _may_have_been_sent(exc)
        kind = "timed out" if isinstance(exc, requests.Timeout) else "connection failed"
        if method not in _SAFE_METHODS and sent and not retry_writes:
            return UncertainWriteError(
                f"{method} {kind} after it was sent; its outcome is unknown",
                system=self.system,
            )
        return NetworkError(f"{method} {kind}", system=self.system)


def _may_have_been_sent(exc: Exception) -> bool:
    """Whether the server may have received the request before the failure.

    A refused connection or a connect timeout never reached the server; a read timeout or a
    connection dropped mid-exchange may have, so a write's outcome is then unknown.
    """
    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ReadTimeout):
        return True
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, NewConnectionError):
            return False
        # requests wraps urllib3's errors as the first argument rather than as __cause__.
        wrapped = cause.args[0] if cause.args else None
        cause = cause.__cause__ or (wrapped if isinstance(wrapped, BaseException) else None)
    return True
