"""The ``/_sim/`` control API of the Zoho Books simulator (JSON in and out, no auth).

Used by the demo, end-to-end tests and benchmarks when the simulator runs as a real server.
Every route mirrors a :class:`~connector.sandbox.zoho.ZohoSimulator` method.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, request

from connector.errors import ApiError

if TYPE_CHECKING:
    from connector.sandbox.zoho import ZohoSimulator

__all__ = ["register_control_routes"]

_ENTITIES = ("contacts", "invoices", "customerpayments", "bills", "vendorpayments")


def register_control_routes(app: Flask, sim: ZohoSimulator) -> None:
    """Add the ``/_sim/`` routes for ``sim`` to ``app``."""
    from connector.sandbox.zoho import _json

    def body() -> Any:
        return request.get_json(force=True, silent=True) or {}

    def route(
        rule: str, methods: tuple[str, ...] = ("GET",)
    ) -> Callable[[Callable[..., Any]], Any]:
        def decorate(view: Callable[..., Any]) -> Any:
            def wrapped(**kwargs: Any) -> Response:
                try:
                    result = view(**kwargs)
                except ApiError as error:
                    return _json({"error": error.message, "code": error.code}, error.status or 400)
                except (KeyError, ValueError, TypeError) as error:
                    return _json({"error": str(error)}, 400)
                if isinstance(result, Response):
                    return result
                if isinstance(result, tuple):
                    return _json(result[0], result[1])
                return _json(result)

            app.add_url_rule(rule, f"sim_{view.__name__}", wrapped, methods=list(methods))
            return view

        return decorate

    @route("/_sim/state")
    def state() -> Any:
        if request.args.get("full") in ("1", "true"):
            return sim.dump_state()
        return sim.state_counts()

    @route("/_sim/organizations", ("POST",))
    def create_organization() -> Any:
        data = body()
        org_id = sim.create_organization(
            dc=data.get("dc", "us"),
            name=data.get("name", "Zillum"),
            plan=data.get("plan", "professional"),
            organization_id=data.get("organization_id"),
            users=data.get("users"),
            currency_code=data.get("currency_code", "USD"),
            custom_fields=data.get("custom_fields"),
        )
        org = sim.store.orgs[org_id]
        return {**org.summary(), "dc": org.dc, "users": sorted(org.users)}, 201

    @route("/_sim/organizations")
    def list_organizations() -> Any:
        return {
            "organizations": [
                {**org.summary(), "dc": org.dc, "users": sorted(org.users)}
                for org in sim.store.orgs.values()
            ]
        }

    @route("/_sim/organizations/<org_id>/users", ("POST",))
    def add_user(org_id: str) -> Any:
        sim.add_user(org_id, str(body()["user"]))
        return {"ok": True}

    @route("/_sim/clients", ("POST",))
    def register_client() -> Any:
        data = body()
        sim.register_client(
            data["client_id"],
            data["client_secret"],
            secrets_per_dc=data.get("secrets_per_dc"),
            data_centers=data.get("data_centers"),
            redirect_uris=data.get("redirect_uris", ()),
        )
        return {"ok": True}, 201

    @route("/_sim/grant_codes", ("POST",))
    def grant_code() -> Any:
        data = body()
        dc = data.get("dc", "us")
        code = sim.issue_grant_code(
            data["client_id"],
            dc,
            user=data.get("user"),
            scope=data.get("scope", "ZohoBooks.fullaccess.all"),
            access_type=data.get("access_type", "offline"),
        )
        return {
            "code": code,
            "location": dc,
            "accounts_server": sim.accounts_server(dc),
            "api_domain": sim.api_domain(dc),
        }, 201

    @route("/_sim/tokens", ("POST",))
    def tokens() -> Any:
        data = body()
        return sim.issue_tokens(
            data["client_id"],
            data.get("dc", "us"),
            user=data.get("user"),
            scope=data.get("scope", "ZohoBooks.fullaccess.all"),
        ), 201

    @route("/_sim/tokens/expire", ("POST",))
    def expire_tokens() -> Any:
        return {"expired": sim.expire_access_tokens(refresh_token=body().get("refresh_token"))}

    @route("/_sim/token_requests")
    def token_requests() -> Any:
        return {
            "token_requests": [entry.as_dict() for entry in sim.token_requests],
            "refresh_count": sim.refresh_count(),
        }

    @route("/_sim/organizations/<org_id>/<entity>/bulk", ("POST",))
    def bulk(org_id: str, entity: str) -> Any:
        data = body()
        records = data if isinstance(data, list) else data.get("records", [])
        ids = sim.bulk_create(org_id, _entity(entity), records)
        return {"count": len(ids), "ids": ids}, 201

    @route("/_sim/organizations/<org_id>/seed", ("POST",))
    def seed(org_id: str) -> Any:
        data = body()
        return sim.seed(
            org_id,
            contacts=int(data.get("contacts", 0)),
            invoices=int(data.get("invoices", 0)),
            seed=int(data.get("seed", 0)),
        ), 201

    @route("/_sim/organizations/<org_id>/webhooks", ("POST",))
    def add_webhook(org_id: str) -> Any:
        data = body()
        config = sim.configure_webhook(
            org_id,
            data["url"],
            secret=data.get("secret"),
            events=tuple(data.get("events", ("invoice", "contact", "customerpayment"))),
            algorithm=data.get("algorithm", "sha256"),
            encoding=data.get("encoding", "hex"),
            body_format=data.get("body_format", "default"),
            extra_query=data.get("extra_query"),
            actions=tuple(data.get("actions", ("created", "updated", "deleted"))),
            headers=data.get("headers"),
            event_param=data.get("event_param", "event_type"),
        )
        return config.public(), 201

    @route("/_sim/organizations/<org_id>/webhooks", ("DELETE",))
    def clear_webhooks(org_id: str) -> Any:
        sim.clear_webhooks(org_id)
        return {"ok": True}

    @route("/_sim/organizations/<org_id>/<entity>", ("POST",))
    def create_record(org_id: str, entity: str) -> Any:
        return sim.create_record(org_id, _entity(entity), body()), 201

    @route("/_sim/organizations/<org_id>/<entity>/<record_id>")
    def get_record(org_id: str, entity: str, record_id: str) -> Any:
        return sim.get_record(org_id, _entity(entity), record_id)

    @route("/_sim/organizations/<org_id>/<entity>/<record_id>", ("PUT",))
    def update_record(org_id: str, entity: str, record_id: str) -> Any:
        return sim.update_record(org_id, _entity(entity), record_id, body())

    @route("/_sim/organizations/<org_id>/<entity>/<record_id>", ("DELETE",))
    def delete_record(org_id: str, entity: str, record_id: str) -> Any:
        sim.delete_record(org_id, _entity(entity), record_id)
        return {"ok": True}

    @route("/_sim/webhooks/log")
    def webhook_log() -> Any:
        return {"deliveries": [delivery.as_dict() for delivery in sim.webhook_log]}

    @route("/_sim/webhooks/send", ("POST",))
    def send_webhook() -> Any:
        data = body()
        deliveries = sim.send_webhook(
            data["organization_id"],
            data["entity"],
            str(data["entity_id"]),
            data.get("action", "updated"),
        )
        return {"deliveries": [delivery.as_dict() for delivery in deliveries]}

    @route("/_sim/webhooks/flush", ("POST",))
    def flush_webhooks() -> Any:
        return {"drained": sim.flush_webhooks(float(body().get("timeout", 10)))}

    @route("/_sim/faults", ("POST",))
    def faults() -> Any:
        data = dict(body())
        sim.set_faults(**data)
        return {
            "server_error_rate": sim.faults.server_error_rate,
            "timeout_rate": sim.faults.timeout_rate,
            "drop_rate": sim.faults.drop_rate,
            "timeout_seconds": sim.faults.timeout_seconds,
            "only_paths": sim.faults.only_paths,
            "faults_after_write": sim.faults_after_write,
            "injected": dict(sim.faults.injected),
        }

    @route("/_sim/rate_limits", ("POST",))
    def rate_limits() -> Any:
        data = body()
        sim.set_rate_limits(
            data.get("enabled"),
            per_minute=data.get("per_minute"),
            daily=data.get("daily"),
            concurrency=data.get("concurrency"),
        )
        return {
            "enabled": sim.rate_limits_enabled,
            "per_minute": sim.per_minute_limit,
            "daily": sim.daily_limits,
            "concurrency": sim.concurrency_limits,
        }

    @route("/_sim/settings", ("POST",))
    def settings() -> Any:
        allowed = {
            "latency_seconds",
            "webhooks_dropped",
            "webhook_drop_rate",
            "enforce_scopes",
            "invalid_token_style",
            "accept_jsonstring",
            "consent_denied",
            "faults_on_accounts",
        }
        data = body()
        unknown = set(data) - allowed - {"webhook_retries"}
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}")
        for key, value in data.items():
            if key == "webhook_retries":
                sim.webhooks.retries = int(value)
            else:
                setattr(sim, key, value)
        return {key: getattr(sim, key) for key in sorted(allowed)}

    @route("/_sim/clock", ("POST",))
    def clock() -> Any:
        data = body()
        if "set" in data:
            sim.set_clock(dt.datetime.fromisoformat(str(data["set"]).replace("Z", "+00:00")))
        if "advance" in data:
            sim.advance_clock(float(data["advance"]))
        return _clock_state()

    @route("/_sim/clock")
    def get_clock() -> Any:
        return _clock_state()

    def _clock_state() -> dict[str, Any]:
        return {"now": sim.clock.now().isoformat(), "timestamp": sim.clock.timestamp()}

    @route("/_sim/stats")
    def stats() -> Any:
        org_id = request.args.get("organization_id")
        return sim.stats(org_id) if org_id else {"organizations": sim.stats()}

    @route("/_sim/requests")
    def requests_log() -> Any:
        limit = int(request.args.get("limit", "1000"))
        entries = list(sim.request_log)[-limit:] if limit > 0 else []
        return {"requests": [entry.as_dict() for entry in entries]}

    @route("/_sim/pause", ("POST",))
    def pause() -> Any:
        sim.pause_requests()
        return {"paused": True}

    @route("/_sim/resume", ("POST",))
    def resume() -> Any:
        sim.resume_requests()
        return {"paused": False}


def _entity(name: str) -> str:
    if name == "payments":
        return "customerpayments"
    if name not in _ENTITIES:
        raise ValueError(f"unknown entity {name!r}; one of {list(_ENTITIES)}")
    return name
