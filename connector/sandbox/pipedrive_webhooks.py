"""Webhook subscriptions, payloads and delivery of the Pipedrive simulator (reference §5).

Payloads copy the v2 shape of §5.3 exactly (string ids in ``meta``, custom fields wrapped with
their ``type``, ``visible_to`` as a string) and, for subscriptions with ``version: "1.0"``, the v1
shape of §5.2. Delivery follows §5.5: any 2xx is success; otherwise retries after 3, 30 and 150
seconds (times a factor tests shrink), and ten failed first attempts in a row ban the webhook for
30 minutes, losing its events meanwhile. Deliveries are scheduled on the simulator clock.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import heapq
import itertools
import json
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from connector.sandbox.common import Clock
from connector.sandbox.pipedrive_store import ADDRESS_PARTS, Change, fmt_time_v1

__all__ = [
    "Webhook",
    "WebhookDispatcher",
    "WebhookRequest",
    "http_deliver",
    "v1_payload",
    "v1_record",
    "v2_payload",
    "webhook_record",
]

logger = logging.getLogger(__name__)

V1_ACTIONS = {"added": "create", "updated": "change", "deleted": "delete", "merged": "change"}
V2_TO_V1_ACTION = {"create": "added", "change": "updated", "delete": "deleted"}


@dataclass
class Webhook:
    """One subscription made with ``POST /v1/webhooks``."""

    id: int
    company_domain: str
    company_id: int
    owner_id: int
    user_id: int
    event_action: str
    event_object: str
    subscription_url: str
    name: str
    version: str
    http_auth_user: str | None
    http_auth_password: str | None
    add_time: float
    is_active: bool = True
    type: str = "general"
    last_delivery_time: float | None = None
    last_http_status: int | None = None
    first_attempt_failures: int = 0
    banned_until: float = 0.0

    def matches(self, entity: str, action: str) -> bool:
        """Whether an ``action`` on ``entity`` goes to this subscription."""
        wanted = V1_ACTIONS.get(self.event_action, self.event_action)
        return self.is_active and self.event_object in ("*", entity) and wanted in ("*", action)

    def api(self) -> dict[str, Any]:
        """The ``/v1/webhooks`` object (reference §5.1)."""
        return {
            "id": self.id,
            "company_id": self.company_id,
            "owner_id": self.owner_id,
            "user_id": self.user_id,
            "event_action": self.event_action,
            "event_object": self.event_object,
            "subscription_url": self.subscription_url,
            "version": self.version,
            "is_active": 1 if self.is_active else 0,
            "add_time": dt.datetime.fromtimestamp(self.add_time, tz=dt.UTC).strftime(
                "%Y-%m-%dT%H:%M:%S.000Z"
            ),
            "remove_time": None,
            "type": self.type,
            "http_auth_user": self.http_auth_user,
            "http_auth_password": self.http_auth_password,
            "remove_reason": None,
            "last_delivery_time": (
                fmt_time_v1(self.last_delivery_time) if self.last_delivery_time else None
            ),
            "last_http_status": self.last_http_status,
            "admin_id": self.owner_id,
            "name": self.name,
        }


@dataclass
class WebhookRequest:
    """What the simulator POSTs: give it to a ``deliver`` callable, which returns the status."""

    url: str
    headers: dict[str, str]
    body: bytes
    payload: dict[str, Any]
    webhook_id: int
    event_id: str
    attempt: int


def http_deliver(request: WebhookRequest) -> int | None:
    """Deliver over HTTP with the 10-second limit of §5.5; None when no answer came."""
    try:
        response = requests.post(
            request.url, data=request.body, headers=request.headers, timeout=10
        )
    except requests.RequestException:
        return None
    return response.status_code


def _wrap_custom(field_type: str | None, value: Any) -> Any:
    """A custom field value as webhooks v2 write it, with its ``type`` (reference §5.3)."""
    if value is None:
        return None
    kind = field_type or "varchar"
    if kind == "monetary":
        return {"currency": value.get("currency"), "type": "monetary", "value": value.get("value")}
    if kind == "enum":
        return {"id": value, "type": "enum"}
    if kind == "set":
        return {"values": [{"id": item} for item in value], "type": "set"}
    if kind in ("org", "people", "user"):
        return {"id": value, "type": kind}
    if isinstance(value, dict):
        return {**copy.deepcopy(value), "type": kind}
    return {"type": kind, "value": value}


def webhook_record(
    entity: str, record: Mapping[str, Any] | None, field_types: Mapping[str, str]
) -> dict[str, Any] | None:
    """The v2 webhook ``data`` shape, which differs from REST v2 as §5.3 lists."""
    if record is None:
        return None
    shaped = {key: copy.deepcopy(value) for key, value in record.items() if not key.startswith("_")}
    shaped["visible_to"] = str(record.get("visible_to"))
    values = record.get("custom_fields", {})
    shaped["custom_fields"] = {
        key: _wrap_custom(kind, values.get(key)) for key, kind in field_types.items()
    }
    if entity == "organization":
        shaped.setdefault("label", None)
        address = record.get("address") or {}
        shaped.setdefault("country_code", None)
        shaped["address"] = copy.deepcopy(address) if address else None
    return shaped


def _changed(
    entity: str,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    field_types: Mapping[str, str],
) -> dict[str, Any]:
    """``previous`` of a change event: only the fields that changed, with their old values."""
    old = webhook_record(entity, before, field_types) or {}
    new = webhook_record(entity, after, field_types) or {}
    previous: dict[str, Any] = {}
    for key, value in old.items():
        if key == "custom_fields":
            changed = {k: v for k, v in value.items() if new["custom_fields"].get(k) != v}
            if changed:
                previous["custom_fields"] = changed
        elif key != "update_time" and new.get(key) != value:
            previous[key] = value
    return previous


def v2_payload(
    change: Change,
    webhook: Webhook,
    *,
    field_types: Mapping[str, str],
    host: str,
    permitted_user_ids: list[int],
    correlation_id: str,
    now: float,
) -> dict[str, Any]:
    """The v2 body of §5.3 for one subscription, at attempt 1."""
    meta: dict[str, Any] = {
        "action": change.action,
        "company_id": str(webhook.company_id),
        "correlation_id": correlation_id,
        "entity_id": str(change.entity_id),
        "entity": change.entity,
        "id": str(uuid.uuid4()),
        "is_bulk_edit": change.is_bulk_edit,
        "timestamp": dt.datetime.fromtimestamp(now, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{int(now * 1000) % 1000:03d}Z",
        "type": webhook.type,
        "user_id": str(change.user_id),
        "version": "2.0",
        "webhook_id": str(webhook.id),
        "webhook_owner_id": str(webhook.owner_id),
        "change_source": change.change_source,
        "permitted_user_ids": [str(user) for user in permitted_user_ids],
        "attempt": 1,
        "host": host,
    }
    if change.merged_to_id is not None:
        meta["merged_to_id"] = str(change.merged_to_id)
    if change.merged_from_id is not None:
        meta["merged_from_id"] = str(change.merged_from_id)
    if change.action == "create":
        data, previous = webhook_record(change.entity, change.after, field_types), None
    elif change.action == "delete":
        data, previous = None, webhook_record(change.entity, change.before, field_types)
    else:
        assert change.before is not None
        assert change.after is not None
        data = webhook_record(change.entity, change.after, field_types)
        previous = _changed(change.entity, change.before, change.after, field_types)
    return {"data": data, "previous": previous, "meta": meta}


def v1_record(
    entity: str, record: Mapping[str, Any] | None, field_types: Mapping[str, str], company_id: int
) -> dict[str, Any] | None:
    """A v1 object (reference §3.6): custom fields as top-level keys with suffixed subfields."""
    if record is None:
        return None
    out: dict[str, Any] = {
        key: copy.deepcopy(value)
        for key, value in record.items()
        if not key.startswith("_") and key not in ("custom_fields", "is_deleted", "label_ids")
    }
    out["company_id"] = company_id
    out["active_flag"] = not record.get("is_deleted", False)
    out["add_time"] = fmt_time_v1(record["_add_ts"])
    out["update_time"] = fmt_time_v1(record["_update_ts"])
    out["visible_to"] = str(record.get("visible_to"))
    out["label"] = ",".join(str(label) for label in record.get("label_ids", [])) or None
    if entity == "person":
        out["email"] = out.pop("emails", [])
        out["phone"] = out.pop("phones", [])
    if entity == "deal":
        out["user_id"] = record.get("owner_id")
        out["active"] = record.get("status") == "open"
        out["deleted"] = record.get("is_deleted", False)
    if entity == "organization":
        address = record.get("address") or {}
        out["address"] = address.get("value")
        for part in ADDRESS_PARTS[1:]:
            out[f"address_{part}"] = address.get(part)
    values = record.get("custom_fields", {})
    for key, kind in field_types.items():
        value = values.get(key)
        if kind == "monetary":
            out[key] = value.get("value") if value else None
            out[f"{key}_currency"] = value.get("currency") if value else None
        elif kind in ("daterange", "timerange") and isinstance(value, dict):
            out[key], out[f"{key}_until"] = value.get("value"), value.get("until")
        elif kind == "time" and isinstance(value, dict):
            out[key] = value.get("value")
        elif kind == "enum":
            out[key] = str(value) if value is not None else None
        elif kind == "set":
            out[key] = ",".join(str(item) for item in value) if value else None
        elif kind == "address" and isinstance(value, dict):
            out[key] = value.get("value")
            for part in ADDRESS_PARTS[1:]:
                out[f"{key}_{part}"] = value.get(part)
        else:
            out[key] = copy.deepcopy(value)
    return out


def v1_payload(
    change: Change,
    webhook: Webhook,
    *,
    field_types: Mapping[str, str],
    host: str,
    permitted_user_ids: list[int],
    now: float,
) -> dict[str, Any]:
    """The v1 body of §5.2 for one subscription, at retry 0."""
    action = V2_TO_V1_ACTION[change.action]
    if change.merged_from_id is not None:
        action = "merged"
    current = v1_record(change.entity, change.after, field_types, webhook.company_id)
    previous = v1_record(change.entity, change.before, field_types, webhook.company_id)
    meta = {
        "v": 1,
        "action": action,
        "object": change.entity,
        "change_source": change.change_source,
        "id": change.entity_id,
        "company_id": webhook.company_id,
        "user_id": change.user_id,
        "host": host,
        "timestamp": int(now),
        "timestamp_micro": int(now * 1_000_000),
        "permitted_user_ids": list(permitted_user_ids),
        "trans_pending": False,
        "is_bulk_update": change.is_bulk_edit,
        "pipedrive_service_name": False,
        "matches_filters": {"current": [], "previous": []},
        "webhook_id": webhook.id,
    }
    if change.merged_to_id is not None:
        meta["merged_to_id"] = change.merged_to_id
    return {
        "v": 1,
        "matches_filters": {"current": [], "previous": []},
        "meta": meta,
        "retry": 0,
        "current": current,
        "previous": previous,
        "event": f"{action}.{change.entity}",
    }


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    webhook: Webhook = field(compare=False)
    payload: dict[str, Any] = field(compare=False)
    attempt: int = field(compare=False, default=1)


class WebhookDispatcher:
    """Schedules and performs deliveries; records every attempt in ``log``.

    With a ``deliver`` callable, deliveries run synchronously whenever :meth:`pump` is called (the
    simulator calls it after each request). Without one, a daemon thread delivers over HTTP.
    """

    def __init__(
        self,
        clock: Clock,
        deliver: Callable[[WebhookRequest], int | None] | None = None,
        *,
        retry_delays: tuple[float, ...] = (3.0, 30.0, 150.0),
        retry_factor: float = 1.0,
        ban_after: int = 10,
        ban_seconds: float = 1800.0,
        threaded: bool = False,
    ) -> None:
        self.clock = clock
        self.deliver = deliver or http_deliver
        self.retry_delays = retry_delays
        self.retry_factor = retry_factor
        self.ban_after = ban_after
        self.ban_seconds = ban_seconds
        self.enabled = True
        self.log: list[dict[str, Any]] = []
        self._heap: list[_Job] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._pump_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        # Started on the first event, so idle simulators leave no threads behind.
        self.threaded = threaded

    def _record(self, job: _Job, outcome: str, status: int | None, now: float) -> None:
        self.log.append(
            {
                "timestamp": now,
                "webhook_id": job.webhook.id,
                "company_domain": job.webhook.company_domain,
                "url": job.webhook.subscription_url,
                "event_id": _event_id(job.payload),
                "attempt": job.attempt,
                "status": status,
                "outcome": outcome,
                "payload": job.payload,
            }
        )

    def enqueue(self, webhook: Webhook, payload: dict[str, Any]) -> None:
        """Queue the first attempt of one event for one subscription."""
        now = self.clock.timestamp()
        job = _Job(now, next(self._seq), webhook, payload)
        with self._lock:
            if not self.enabled:
                self._record(job, "dropped", None, now)
                return
            if webhook.banned_until > now:
                # §5.5: "If a webhook is banned, the webhook's event message is lost."
                self._record(job, "banned", None, now)
                return
            heapq.heappush(self._heap, job)
            if self.threaded and self._thread is None and not self._stopped:
                self._thread = threading.Thread(
                    target=self._run, name="pipedrive-sim-webhooks", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def pending(self) -> int:
        """Deliveries still scheduled (retries included)."""
        with self._lock:
            return len(self._heap)

    def pump(self) -> int:
        """Deliver everything due on the simulator clock; returns the number of attempts made."""
        attempts = 0
        # One pumper at a time keeps attempts of one event in order.
        with self._pump_lock:
            while True:
                now = self.clock.timestamp()
                with self._lock:
                    if not self._heap or self._heap[0].due > now:
                        return attempts
                    job = heapq.heappop(self._heap)
                self._attempt(job)
                attempts += 1

    def _attempt(self, job: _Job) -> None:
        webhook = job.webhook
        now = self.clock.timestamp()
        if webhook.banned_until > now or not webhook.is_active:
            self._record(job, "banned" if webhook.is_active else "removed", None, now)
            return
        request = _build_request(webhook, job.payload, job.attempt)
        try:
            status = self.deliver(request)
        except Exception:  # a test's deliver callable failing must not kill the pump
            logger.exception("pipedrive-sim.webhook.deliver-crashed")
            status = None
        now = self.clock.timestamp()
        webhook.last_delivery_time = now
        webhook.last_http_status = status
        if status is not None and 200 <= status < 300:
            webhook.first_attempt_failures = 0
            self._record(job, "delivered", status, now)
            return
        self._record(job, "failed", status, now)
        if job.attempt == 1:
            webhook.first_attempt_failures += 1
            if webhook.first_attempt_failures >= self.ban_after:
                webhook.banned_until = now + self.ban_seconds
                webhook.first_attempt_failures = 0
                with self._lock:
                    self._heap = [j for j in self._heap if j.webhook is not webhook]
                    heapq.heapify(self._heap)
                return
        if job.attempt <= len(self.retry_delays):
            delay = self.retry_delays[job.attempt - 1] * self.retry_factor
            retry = _Job(now + delay, next(self._seq), webhook, job.payload, job.attempt + 1)
            with self._lock:
                heapq.heappush(self._heap, retry)

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(0.05)
            self._wake.clear()
            self.pump()

    def stop(self) -> None:
        """Stop the delivery thread (server mode)."""
        self._stopped = True
        self._wake.set()


def _event_id(payload: Mapping[str, Any]) -> str:
    meta = payload.get("meta", {})
    return str(meta.get("id") or f"v1:{meta.get('webhook_id')}:{meta.get('timestamp_micro')}")


def _build_request(webhook: Webhook, payload: dict[str, Any], attempt: int) -> WebhookRequest:
    body = copy.deepcopy(payload)
    if "v" in body:
        body["retry"] = attempt - 1
    else:
        body["meta"]["attempt"] = attempt
    headers = {"Content-Type": "application/json", "User-Agent": "Pipedrive Webhooks"}
    if webhook.http_auth_user is not None:
        raw = f"{webhook.http_auth_user}:{webhook.http_auth_password or ''}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
    return WebhookRequest(
        url=webhook.subscription_url,
        headers=headers,
        body=json.dumps(body).encode(),
        payload=body,
        webhook_id=webhook.id,
        event_id=_event_id(body),
        attempt=attempt,
    )
