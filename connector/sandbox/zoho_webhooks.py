"""Outgoing webhooks of the Zoho Books simulator: payloads, signatures and delivery.

Books sends webhooks as workflow-rule actions. The signature scheme is the one Zoho Billing
documents and Books is believed to share (reference §7.3, UNCONFIRMED for Books): sort every query
and form key/value pair by key, concatenate them as ``key1value1key2value2``, append the raw body,
and HMAC the result with the webhook secret. Algorithm and encoding are configurable because Zoho
does not document them.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import queue
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

__all__ = [
    "SIGNATURE_HEADER",
    "WebhookConfig",
    "WebhookDelivery",
    "WebhookSender",
    "canonical_webhook_string",
    "sign_zoho_webhook",
]

SIGNATURE_HEADER = "X-Zoho-Webhook-Signature"

_ALGORITHMS: dict[str, Callable[..., Any]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}

Deliver = Callable[[str, Mapping[str, str], bytes], int]
"""Sends one webhook: ``(url, headers, body) -> HTTP status``; raising counts as a failure."""


def canonical_webhook_string(
    params: Mapping[str, str] | Iterable[tuple[str, str]], body: bytes
) -> bytes:
    """Build the byte string Zoho signs: sorted ``key+value`` pairs, then the raw body.

    Args:
        params: query-string and form pairs, already URL-decoded. A mapping or a list of pairs
            (a list keeps repeated keys).
        body: the raw request body; for form bodies pass ``b""`` and put the pairs in ``params``.

    Returns:
        The canonical bytes (UTF-8).
    """
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    # Sort by key only (stable), as the Billing doc says; values keep their original order.
    pairs.sort(key=lambda pair: pair[0])
    prefix = "".join(f"{key}{value}" for key, value in pairs)
    return prefix.encode() + body


def sign_zoho_webhook(
    secret: str,
    params: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes,
    algorithm: str = "sha256",
    encoding: str = "hex",
) -> str:
    """Compute the ``X-Zoho-Webhook-Signature`` value for a webhook request.

    Args:
        secret: the webhook's secret.
        params: query and form pairs (URL-decoded).
        body: raw body bytes, exactly as sent.
        algorithm: ``sha1``, ``sha256`` (default) or ``sha512``.
        encoding: ``hex`` (lowercase, default) or ``base64``.

    Returns:
        The encoded HMAC.

    Raises:
        ValueError: unknown algorithm or encoding.
    """
    if algorithm not in _ALGORITHMS:
        raise ValueError(f"unknown webhook signature algorithm {algorithm!r}")
    digest = hmac.new(
        secret.encode(), canonical_webhook_string(params, body), _ALGORITHMS[algorithm]
    ).digest()
    if encoding == "hex":
        return digest.hex()
    if encoding == "base64":
        return base64.b64encode(digest).decode()
    raise ValueError(f"unknown webhook signature encoding {encoding!r}")


@dataclass
class WebhookConfig:
    """One webhook + workflow rule of an organization.

    ``body_format``: ``default`` (the entity JSON, e.g. ``{"invoice": {...}}``), ``placeholder``
    (a small JSON built from placeholders) or ``form`` (the placeholder fields form-encoded).
    ``event_param`` names the query parameter carrying ``<entity>.<action>``; ``None`` omits it.
    """

    organization_id: str
    url: str
    secret: str | None = None
    events: tuple[str, ...] = ("invoice", "contact", "customerpayment")
    actions: tuple[str, ...] = ("created", "updated", "deleted")
    algorithm: str = "sha256"
    encoding: str = "hex"
    body_format: str = "default"
    extra_query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    event_param: str | None = "event_type"
    method: str = "POST"
    webhook_id: str = ""

    def __repr__(self) -> str:
        # The secret never shows up in reprs or logs.
        return (
            f"WebhookConfig(organization_id={self.organization_id!r}, url={self.url!r}, "
            f"events={self.events!r}, signed={self.secret is not None})"
        )

    def public(self) -> dict[str, Any]:
        """A JSON-friendly view without the secret."""
        return {
            "webhook_id": self.webhook_id,
            "organization_id": self.organization_id,
            "url": self.url,
            "events": list(self.events),
            "actions": list(self.actions),
            "algorithm": self.algorithm,
            "encoding": self.encoding,
            "body_format": self.body_format,
            "extra_query": dict(self.extra_query),
            "event_param": self.event_param,
            "method": self.method,
            "signed": self.secret is not None,
        }


@dataclass
class WebhookDelivery:
    """What happened to one webhook event."""

    webhook_id: str
    organization_id: str
    event: str
    entity: str
    entity_id: str
    url: str
    headers: dict[str, str]
    body: bytes
    created_at: str
    attempts: int = 0
    status: int | None = None
    delivered: bool = False
    dropped: bool = False
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for the control API)."""
        return {
            "webhook_id": self.webhook_id,
            "organization_id": self.organization_id,
            "event": self.event,
            "entity": self.entity,
            "entity_id": self.entity_id,
            "url": self.url,
            "headers": dict(self.headers),
            "body": self.body.decode(errors="replace"),
            "created_at": self.created_at,
            "attempts": self.attempts,
            "status": self.status,
            "delivered": self.delivered,
            "dropped": self.dropped,
            "error": self.error,
        }


def _default_deliver(url: str, headers: Mapping[str, str], body: bytes) -> int:
    response = requests.post(url, data=body, headers=dict(headers), timeout=10)
    return response.status_code


class WebhookSender:
    """Builds, signs and delivers webhook events, synchronously or on a background thread.

    Args:
        deliver: the transport; defaults to ``requests.post``.
        retries: extra attempts after a failed one (non-2xx or exception).
        asynchronous: deliver on a worker thread (server mode) instead of inline.
        log_limit: how many deliveries ``log`` keeps.
    """

    def __init__(
        self,
        deliver: Deliver | None = None,
        *,
        retries: int = 2,
        asynchronous: bool = False,
        log_limit: int = 10_000,
        seed: int = 0,
    ) -> None:
        self.deliver: Deliver = deliver or _default_deliver
        self.retries = retries
        self.asynchronous = asynchronous
        self.dropped = False
        self.drop_rate = 0.0
        self.log: deque[WebhookDelivery] = deque(maxlen=log_limit)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._queue: queue.Queue[WebhookDelivery | None] = queue.Queue()
        self._worker: threading.Thread | None = None

    def build(
        self,
        config: WebhookConfig,
        *,
        entity: str,
        action: str,
        entity_id: str,
        record: Mapping[str, Any],
        now: dt.datetime,
    ) -> WebhookDelivery:
        """Render the request a webhook event produces (URL, headers, body) without sending it."""
        event = f"{entity}.{action}"
        query: dict[str, str] = dict(config.extra_query)
        if config.event_param:
            query[config.event_param] = event
        placeholder = {
            "event": event,
            "entity": entity,
            "entity_id": entity_id,
            "organization_id": config.organization_id,
        }
        headers = dict(config.headers)
        form: dict[str, str] = {}
        if config.body_format == "default":
            body = json.dumps({entity: record}, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        elif config.body_format == "placeholder":
            body = json.dumps(placeholder, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        elif config.body_format == "form":
            form = placeholder
            body = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            raise ValueError(f"unknown webhook body_format {config.body_format!r}")
        url = _with_query(config.url, query)
        if config.secret:
            # The URL may already carry its own query; every query pair is signed.
            signed_pairs = _query_pairs(url) + list(form.items())
            signed_body = b"" if form else body
            headers[SIGNATURE_HEADER] = sign_zoho_webhook(
                config.secret, signed_pairs, signed_body, config.algorithm, config.encoding
            )
        return WebhookDelivery(
            webhook_id=config.webhook_id,
            organization_id=config.organization_id,
            event=event,
            entity=entity,
            entity_id=entity_id,
            url=url,
            headers=headers,
            body=body,
            created_at=now.strftime("%Y-%m-%dT%H:%M:%S+0000"),
        )

    def submit(self, delivery: WebhookDelivery) -> None:
        """Send (or drop) one delivery, inline or via the worker thread."""
        with self._lock:
            self.log.append(delivery)
            drop = self.dropped or (self.drop_rate > 0 and self._rng.random() < self.drop_rate)
        if drop:
            delivery.dropped = True
            return
        if self.asynchronous:
            self._ensure_worker()
            self._queue.put(delivery)
        else:
            self._send(delivery)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until queued deliveries are done; ``True`` if the queue drained in time."""
        if self._worker is None:
            return True
        done = threading.Event()

        def waiter() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=waiter, daemon=True).start()
        return done.wait(timeout)

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._run, name="zoho-sim-webhooks", daemon=True
                )
                self._worker.start()

    def _run(self) -> None:
        while True:
            delivery = self._queue.get()
            try:
                if delivery is not None:
                    self._send(delivery)
            finally:
                self._queue.task_done()

    def _send(self, delivery: WebhookDelivery) -> None:
        for _ in range(self.retries + 1):
            delivery.attempts += 1
            try:
                status = self.deliver(delivery.url, delivery.headers, delivery.body)
            except Exception as exc:  # noqa: BLE001 - any transport failure is a failed attempt
                delivery.error = type(exc).__name__
                delivery.status = None
                continue
            delivery.status = status
            if 200 <= status < 300:
                delivery.delivered = True
                delivery.error = None
                return
            delivery.error = f"HTTP {status}"


def _with_query(url: str, query: Mapping[str, str]) -> str:
    if not query:
        return url
    parts = urlsplit(url)
    extra = urlencode(list(query.items()))
    joined = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, joined, parts.fragment))


def _query_pairs(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)
