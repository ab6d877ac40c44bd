"""The Pipedrive simulator's control API under ``/_sim/`` (server mode; JSON; no auth).

Each endpoint mirrors a Python method of :class:`~connector.sandbox.pipedrive.PipedriveSimulator`
so end-to-end tests and the demo can drive a simulator running in another process.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, jsonify, request

from connector.sandbox.pipedrive_store import SimulatorError, entity_name

if TYPE_CHECKING:
    from connector.sandbox.pipedrive import PipedriveSimulator

__all__ = ["register_control_api"]

_FAULT_KEYS = {
    "server_error_rate",
    "timeout_rate",
    "drop_rate",
    "timeout_seconds",
    "only_paths",
    "seed",
}


def register_control_api(app: Flask, sim: PipedriveSimulator) -> None:
    """Add the ``/_sim/...`` routes to the simulator's app."""

    def body() -> dict[str, Any]:
        payload = request.get_json(silent=True)
        return payload if isinstance(payload, dict) else {}

    def endpoint(
        rule: str, methods: list[str]
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
            @wraps(view)
            def wrapped(**kwargs: Any) -> Any:
                try:
                    result = view(**kwargs)
                except SimulatorError as error:
                    return jsonify(error.payload), error.status or 400
                except (TypeError, ValueError, KeyError) as error:
                    return jsonify(
                        {"success": False, "error": f"bad control request: {error}"}
                    ), 400
                if isinstance(result, Response):
                    return result
                return jsonify(result)

            app.add_url_rule(rule, f"sim_{view.__name__}", wrapped, methods=methods)
            return wrapped

        return decorate

    @endpoint("/_sim/companies", ["POST"])
    def create_company() -> Any:
        args = body()
        company = sim.create_company(
            args.get("company_domain", "acme"),
            plan=args.get("plan", "growth"),
            seats=int(args.get("seats", 1)),
            timezone=args.get("timezone", "UTC"),
            daily_budget=args.get("daily_budget"),
        )
        return {**company.public(), "api_base": sim.api_base(company.domain)}

    @endpoint("/_sim/companies", ["GET"])
    def list_companies() -> Any:
        return [company.public() for company in sim.companies.values()]

    @endpoint("/_sim/companies/<domain>/api_tokens", ["POST"])
    def create_api_token(domain: str) -> Any:
        args = body()
        token = sim.create_api_token(
            domain, args.get("user_id"), revoke_previous=bool(args.get("revoke_previous", True))
        )
        return {"api_token": token, "token_id": sim.token_id(token)}

    @endpoint("/_sim/companies/<domain>/users", ["POST"])
    def add_user(domain: str) -> Any:
        args = body()
        user = sim.add_user(domain, args.get("name"), is_admin=bool(args.get("is_admin", False)))
        return {"id": user.id, "name": user.name, "email": user.email, "is_admin": user.is_admin}

    @endpoint("/_sim/oauth/clients", ["POST"])
    def register_client() -> Any:
        args = body()
        sim.register_oauth_client(args["client_id"], args["client_secret"])
        return {"ok": True}

    @endpoint("/_sim/oauth/codes", ["POST"])
    def issue_code() -> Any:
        args = body()
        code = sim.issue_authorization_code(
            args["client_id"], args["company_domain"], args["redirect_uri"], args.get("user_id")
        )
        return {"code": code}

    @endpoint("/_sim/oauth/expire", ["POST"])
    def expire_tokens() -> Any:
        sim.expire_access_tokens()
        return {"ok": True}

    @endpoint("/_sim/companies/<domain>/seed", ["POST"])
    def seed(domain: str) -> Any:
        args = body()
        result: dict[str, list[int]] = {}
        for key in ("organizations", "persons", "deals"):
            if args.get(key):
                result[key] = sim.seed(domain, key, args[key], owner_id=args.get("owner_id"))
        return result

    @endpoint("/_sim/companies/<domain>/fields", ["POST"])
    def create_field(domain: str) -> Any:
        args = body()
        return sim.create_custom_field(
            domain, args["entity"], args["name"], args["field_type"], args.get("options")
        )

    @endpoint("/_sim/companies/<domain>/app/<entity>", ["POST"])
    def app_create(domain: str, entity: str) -> Any:
        args = body()
        user_id = args.pop("_user_id", None)
        return sim.app_create(domain, entity, args, user_id=user_id)

    @endpoint("/_sim/companies/<domain>/app/<entity>/<int:record_id>", ["PATCH", "DELETE"])
    def app_change(domain: str, entity: str, record_id: int) -> Any:
        args = body()
        user_id = args.pop("_user_id", None)
        if request.method == "DELETE":
            return sim.app_delete(domain, entity, record_id, user_id=user_id)
        return sim.app_update(domain, entity, record_id, args, user_id=user_id)

    @endpoint("/_sim/companies/<domain>/app/<entity>/<int:record_id>/merge", ["POST", "PUT"])
    def app_merge(domain: str, entity: str, record_id: int) -> Any:
        args = body()
        return sim.app_merge(
            domain, entity, record_id, args["merge_with_id"], user_id=args.get("_user_id")
        )

    @endpoint("/_sim/companies/<domain>/records/<entity>", ["GET"])
    def records(domain: str, entity: str) -> Any:
        deleted = request.args.get("include_deleted") == "true"
        return sim.records(domain, entity_name(entity), include_deleted=deleted)

    @endpoint("/_sim/companies/<domain>/limits", ["POST"])
    def set_limits(domain: str) -> Any:
        sim.set_limits(domain, **body())
        return sim.stats(domain)

    @endpoint("/_sim/companies/<domain>/stats", ["GET"])
    def stats(domain: str) -> Any:
        return sim.stats(domain)

    @endpoint("/_sim/companies/<domain>/log", ["GET"])
    def request_log(domain: str) -> Any:
        return [record._asdict() for record in sim.request_log(domain)]

    @endpoint("/_sim/faults", ["POST"])
    def faults() -> Any:
        args = body()
        settings = {key: args.pop(key) for key in list(args) if key not in _FAULT_KEYS}
        sim.faults.configure(**args)
        if settings:
            sim.configure(**settings)
        return {"faults": {key: getattr(sim.faults, key) for key in _FAULT_KEYS}}

    @endpoint("/_sim/settings", ["POST"])
    def settings() -> Any:
        sim.configure(**body())
        return vars(sim.settings)

    @endpoint("/_sim/settings", ["GET"])
    def get_settings() -> Any:
        return vars(sim.settings)

    @endpoint("/_sim/clock", ["POST"])
    def clock() -> Any:
        args = body()
        if "set" in args:
            sim.clock.set(dt.datetime.fromisoformat(str(args["set"]).replace("Z", "+00:00")))
        if "advance" in args:
            sim.clock.advance(float(args["advance"]))
        if args.get("freeze"):
            sim.clock.freeze()
        sim.run_webhooks_if_sync()
        return {"now": sim.clock.now().isoformat(), "timestamp": sim.clock.timestamp()}

    @endpoint("/_sim/clock", ["GET"])
    def get_clock() -> Any:
        return {"now": sim.clock.now().isoformat(), "timestamp": sim.clock.timestamp()}

    @endpoint("/_sim/webhooks/settings", ["POST"])
    def webhook_settings() -> Any:
        args = body()
        if "enabled" in args:
            sim.webhooks.enabled = bool(args["enabled"])
        if "retry_factor" in args:
            sim.webhooks.retry_factor = float(args["retry_factor"])
        return {"enabled": sim.webhooks.enabled, "retry_factor": sim.webhooks.retry_factor}

    @endpoint("/_sim/webhooks/log", ["GET"])
    def webhook_log() -> Any:
        return sim.webhook_log

    @endpoint("/_sim/state", ["GET"])
    def state() -> Any:
        return sim.dump()
