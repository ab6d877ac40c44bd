"""Every place where the strict sandbox departs from the official OpenAPI specs, with its proof.

The specs in ``../shared/reference/specs/`` are the vendors' own, but they are not the live API:
where a recorded live response or the vendor's documentation disagrees with them, the recording
wins (reference README). Each :class:`SpecException` below names the spec it changes, what it
changes, why, and the recording or document that proves it; :func:`apply_exceptions` applies them
to a freshly loaded spec dict. Nothing else in the project patches a spec: the simulators
(:mod:`connector.sandbox.spec_check`) and the tests (``tests/specs.py``) both load through here.

Three kinds:

* ``defect``: the spec is wrong, a recording or the vendor's docs prove it;
* ``adaptation``: the spec is right but describes another deployment (server URLs, auth the
  simulator checks itself);
* ``strictness``: the live API refuses more than the spec declares.

An exception is never "because our client sends X": a client that sends what the spec forbids has
a bug to fix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "EXCEPTIONS",
    "PIPEDRIVE_SPECS",
    "UNCHECKED_ZOHO_PATHS",
    "ZOHO_API_HOSTS",
    "ZOHO_SPECS",
    "SpecException",
    "apply_exceptions",
    "exceptions_for",
]

Spec = dict[str, Any]

PIPEDRIVE_SPECS = ("pipedrive/v1", "pipedrive/v2")
# The Zoho Books modules the simulator serves (``zoho-books/<name>.yml``).
ZOHO_SPECS = (
    "zoho-books/contacts",
    "zoho-books/contact-persons",
    "zoho-books/invoices",
    "zoho-books/customer-payments",
    "zoho-books/organizations",
)
# Zoho Books API hosts, one per data center (zoho-books.md §1).
ZOHO_API_HOSTS = (
    "www.zohoapis.com",
    "www.zohoapis.eu",
    "www.zohoapis.in",
    "www.zohoapis.com.au",
    "www.zohoapis.jp",
    "www.zohoapis.ca",
    "www.zohoapis.com.cn",
    "www.zohoapis.sa",
    "www.zohoapis.uk",
)
# Modules the simulator serves for which the shared reference holds no spec: requests to them are
# not checked (there is nothing to check against). Source: ../shared/reference/README.md lists the
# Zoho Books spec files; bills and vendor payments are not among them.
UNCHECKED_ZOHO_PATHS = ("/bills", "/vendorpayments")


@dataclass(frozen=True)
class SpecException:
    """One departure from an official spec."""

    spec: str  # "pipedrive/v2", "zoho-books/organizations", or "zoho-books/*" for every Zoho spec
    kind: str  # "defect" | "adaptation" | "strictness"
    summary: str
    reason: str
    proof: str  # a recording under ../shared/recordings/ or a documentation source
    apply: Callable[[Spec], None]

    def applies_to(self, spec_name: str) -> bool:
        return self.spec == spec_name or (
            self.spec.endswith("/*") and spec_name.startswith(self.spec[:-1])
        )


def _operations(spec: Spec) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec.get("paths", {}).items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield path, method, operation


def _json_body_schema(operation: dict[str, Any]) -> dict[str, Any] | None:
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    return schema if isinstance(schema, dict) else None


# --- Pipedrive ---------------------------------------------------------------------------------


def _pipedrive_servers(version: str) -> Callable[[Spec], None]:
    def apply(spec: Spec) -> None:
        variables = {"companydomain": {"default": "api"}}
        roots = ["/api/v2"] if version == "v2" else ["/api/v1", "/v1"]
        spec["servers"] = [
            {"url": f"https://{{companydomain}}.pipedrive.com{root}", "variables": variables}
            for root in roots
        ]

    return apply


def _organizations_post_requires_name(spec: Spec) -> None:
    schema = _json_body_schema(spec["paths"]["/organizations"]["post"])
    if schema is not None:
        schema["required"] = ["name"]


def _v2_refuses_unknown_write_properties(spec: Spec) -> None:
    for _, method, operation in _operations(spec):
        if method not in ("post", "patch", "put"):
            continue
        schema = _json_body_schema(operation)
        if schema and schema.get("type") == "object" and "additionalProperties" not in schema:
            schema["additionalProperties"] = False


_NEVER_NULL = frozenset({"id", "success"})


def _nullable(schema: Any) -> None:
    if not isinstance(schema, dict):
        return
    for key in ("allOf", "anyOf", "oneOf"):
        for part in schema.get(key, []):
            _nullable(part)
    if isinstance(schema.get("items"), dict):
        _nullable(schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        _nullable(schema["additionalProperties"])
    for name, prop in (schema.get("properties") or {}).items():
        if isinstance(prop, dict):
            if name not in _NEVER_NULL and ("type" in prop or "properties" in prop):
                prop["nullable"] = True
            _nullable(prop)


def _unset_values_are_null(spec: Spec) -> None:
    for _, _, operation in _operations(spec):
        for status, answer in operation.get("responses", {}).items():
            if str(status).startswith("2"):
                for media in answer.get("content", {}).values():
                    _nullable(media.get("schema"))


# --- Zoho Books --------------------------------------------------------------------------------


def _zoho_servers(spec: Spec) -> None:
    spec["servers"] = [{"url": f"https://{host}/books/v3"} for host in ZOHO_API_HOSTS]


def _zoho_auth_header(spec: Spec) -> None:
    spec.setdefault("components", {})["securitySchemes"] = {
        "Zoho_Auth": {"type": "apiKey", "in": "header", "name": "Authorization"}
    }


def _organizations_list_needs_no_organization_id(spec: Spec) -> None:
    operation = spec["paths"]["/organizations"]["get"]
    parameters = [p for p in operation.get("parameters", []) if p.get("name") != "organization_id"]
    # An operation-level parameter overrides the path-level (required) one of the same name.
    parameters.append(
        {"name": "organization_id", "in": "query", "required": False, "schema": {"type": "string"}}
    )
    operation["parameters"] = parameters


def _payments_list_node(spec: Spec) -> None:
    schema = spec["components"]["schemas"]["list-customer-payments-response"]
    properties = schema["properties"]
    if "customer_payments" in properties:
        properties["customerpayments"] = properties.pop("customer_payments")
    schema["required"] = sorted({*schema.get("required", []), "customerpayments"})


def _payment_invoice_fields_not_top_level(spec: Spec) -> None:
    for name in ("create-a-payment-request", "update-a-payment-request"):
        schema = spec["components"]["schemas"].get(name)
        if schema and "required" in schema:
            schema["required"] = [
                r for r in schema["required"] if r not in ("invoice_id", "amount_applied")
            ]


# Fields whose live type differs from the spec's, and the JSON type the recordings carry.
_LIVE_TYPES = {
    "total": "number",  # invoices: spec string
    "balance": "number",  # invoices: spec string
    "shipping_charge": "number",  # invoices: spec string
    "bcy_amount": "number",  # customer payments: spec string
    "outstanding_receivable_amount": "number",  # contacts: spec integer, live 149.97
    "fiscal_year_start_month": "string",  # organizations: spec number, live "1"
}


def _live_types(spec: Spec) -> None:
    schemas = spec.get("components", {}).get("schemas", {})
    for name, live in _LIVE_TYPES.items():
        schema = schemas.get(name)
        if schema and "type" in schema and schema["type"] != live:
            # Both stay valid: the spec's type (what a client may send) and the live one.
            declared = {"type": schema.pop("type")}
            if "format" in schema:
                declared["format"] = schema.pop("format")
            schema["anyOf"] = [declared, {"type": live}]


def _invoice_page_context_is_an_object(spec: Spec) -> None:
    schema = spec["components"]["schemas"]["list-invoices-response"]["properties"]
    context = schema.get("page_context")
    if isinstance(context, dict) and context.get("type") == "array":
        schema["page_context"] = {**context.get("items", {}), "type": "object"}


EXCEPTIONS: tuple[SpecException, ...] = (
    SpecException(
        spec="pipedrive/v1",
        kind="adaptation",
        summary="servers: https://{companydomain}.pipedrive.com/api/v1 and /v1",
        reason=(
            "The spec's only server is api.pipedrive.com/v1; real calls go to the company domain, "
            "under /api/v1 or /v1."
        ),
        proof="../shared/reference/pipedrive.md §7 caveat 2 and §2.1 (company domain URLs)",
        apply=_pipedrive_servers("v1"),
    ),
    SpecException(
        spec="pipedrive/v2",
        kind="adaptation",
        summary="servers: https://{companydomain}.pipedrive.com/api/v2",
        reason="The spec's only server is api.pipedrive.com/api/v2; real calls use the company domain.",
        proof="../shared/reference/pipedrive.md §7 caveat 2 and §2.1 (company domain URLs)",
        apply=_pipedrive_servers("v2"),
    ),
    SpecException(
        spec="pipedrive/v2",
        kind="defect",
        summary="POST /organizations requires only name (the spec says title)",
        reason="A copy-and-paste slip from POST /deals: a correct {'name': 'Acme'} fails the spec.",
        proof=(
            "Pipedrive v2 migration guide, organizations: 'Only the name field is required' "
            "(../shared/reference/pipedrive.md §3.3 and §7 caveat 1)"
        ),
        apply=_organizations_post_requires_name,
    ),
    SpecException(
        spec="pipedrive/v2",
        kind="strictness",
        summary="v2 JSON write bodies (POST/PATCH/PUT) refuse unknown top-level properties",
        reason=(
            "v2 validates input strictly and has no first_name/last_name etc. on write; the spec "
            "leaves additionalProperties open. Objects that declare it (custom_fields) keep theirs."
        ),
        proof=(
            "Pipedrive docs, v2 migration guide 'input validation is strict' and the v2 write "
            "schemas (../shared/reference/pipedrive.md §3.2, §3.4, §8 pitfall 11)"
        ),
        apply=_v2_refuses_unknown_write_properties,
    ),
    SpecException(
        spec="pipedrive/*",
        kind="defect",
        summary="answers: an unset value is null (every property but id and success may be null)",
        reason=(
            "Pipedrive answers null for unset values (address, picture_id, lost_reason, "
            "close_time, next_cursor on the last page...) where the spec declares no nullable."
        ),
        proof=(
            "../shared/recordings/pipedrive_webhooks/v2_organization_create.json (data.address, "
            "data.picture_id null), v2_deal_create.json (lost_reason, close_time, probability "
            "null), v2_user_change_int_timestamp.json (icon_url null); pipedrive_api/"
            "organizationFields_v1_docs.json (options null); next_cursor null on the last page: "
            "pipedrive.md §3.7 [DOC]"
        ),
        apply=_unset_values_are_null,
    ),
    SpecException(
        spec="zoho-books/*",
        kind="adaptation",
        summary="servers: every data center's https://www.zohoapis.<tld>/books/v3, not only .com",
        reason="Each Zoho data center has its own API host; the spec lists only .com.",
        proof="../shared/reference/zoho-books.md §1 (data centers) and §8 ('override per DC')",
        apply=_zoho_servers,
    ),
    SpecException(
        spec="zoho-books/*",
        kind="adaptation",
        summary="security: the oauth2 implicit scheme becomes an Authorization header check",
        reason=(
            "openapi-core cannot check an oauth2 scheme; Books reads the token from the "
            "Authorization header (Zoho-oauthtoken ...). The simulator checks the token itself."
        ),
        proof="../shared/reference/zoho-books.md §2 (Authorization: Zoho-oauthtoken)",
        apply=_zoho_auth_header,
    ),
    SpecException(
        spec="zoho-books/organizations",
        kind="defect",
        summary="GET /organizations: organization_id is not required (it is the discovery call)",
        reason="The list of the user's organizations is how a client learns its organization_id.",
        proof=(
            "../shared/recordings/zoho_api/organizations_list.json (recorded GET "
            "/books/v3/organizations with no organization_id, answered 200)"
        ),
        apply=_organizations_list_needs_no_organization_id,
    ),
    SpecException(
        spec="zoho-books/customer-payments",
        kind="defect",
        summary="GET /customerpayments lists under customerpayments, not customer_payments",
        reason="Live responses carry the list node customerpayments; the spec names another key.",
        proof="../shared/recordings/zoho_api/customerpayments_list.json (recorded live response)",
        apply=_payments_list_node,
    ),
    SpecException(
        spec="zoho-books/customer-payments",
        kind="defect",
        summary="POST/PUT /customerpayments: invoice_id and amount_applied are not top-level",
        reason=(
            "They belong to each entry of invoices[]; the spec also lists them as required "
            "top-level fields next to the invoices array, contradicting itself."
        ),
        proof=(
            "customer-payments.yml itself: invoices[] 'Each invoice object contains invoice_id, "
            "..., amount_applied' and its items declare both (create-a-payment-request)"
        ),
        apply=_payment_invoice_fields_not_top_level,
    ),
    SpecException(
        spec="zoho-books/*",
        kind="defect",
        summary=(
            "amounts are JSON numbers (total, balance, shipping_charge, bcy_amount, "
            "outstanding_receivable_amount); fiscal_year_start_month is a string"
        ),
        reason=(
            "The spec types these amounts string (or integer) while its own examples and live "
            "responses carry decimals; fiscal_year_start_month is typed number but arrives as a "
            "string. The declared type stays valid too (anyOf)."
        ),
        proof=(
            "../shared/recordings/zoho_api/invoice_get.json, invoices_list.json (total, balance, "
            "shipping_charge), customerpayments_list.json (bcy_amount), contacts_list_3_pages.json "
            "(outstanding_receivable_amount 149.97), organizations_list.json "
            '(fiscal_year_start_month "1"); zoho-books.md §8'
        ),
        apply=_live_types,
    ),
    SpecException(
        spec="zoho-books/invoices",
        kind="defect",
        summary="GET /invoices page_context is an object, not an array",
        reason="Every Books list answers one page_context object.",
        proof="../shared/recordings/zoho_api/invoices_list.json (page_context is an object)",
        apply=_invoice_page_context_is_an_object,
    ),
)


def exceptions_for(spec_name: str) -> list[SpecException]:
    """The exceptions that apply to ``spec_name`` (``pipedrive/v2``, ``zoho-books/invoices``...)."""
    return [entry for entry in EXCEPTIONS if entry.applies_to(spec_name)]


def apply_exceptions(spec_name: str, spec: Spec, *, skip: frozenset[str] = frozenset()) -> Spec:
    """Apply every exception for ``spec_name`` to ``spec`` in place (and return it).

    ``skip`` names exceptions (by ``summary``) to leave out: tests use it to show that each one is
    needed.
    """
    for entry in exceptions_for(spec_name):
        if entry.summary not in skip:
            entry.apply(spec)
    return spec
