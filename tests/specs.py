"""Loaders for the official OpenAPI specs, read from ``../shared/reference/specs/``.

The specs are never copied into this repository (see the reference README). A missing spec fails
the test with a clear message instead of skipping it.
"""

from __future__ import annotations

import copy
import functools
import importlib
from pathlib import Path
from typing import Any

import pytest

SPECS_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference" / "specs"

# Known defects of the archived Pipedrive specs, patched after loading (reference §7). Keep this
# list visible: every entry is a place where the spec and Pipedrive's own docs disagree.
PIPEDRIVE_SPEC_PATCHES = [
    "v2 POST /organizations declares required [title]; the migration guide says only name is",
    "servers rewritten to https://{companydomain}.pipedrive.com/api/v2 (v1: /api/v1 and /v1)",
]


def _spec_file(relative: str) -> Path:
    path = SPECS_DIR / relative
    if not path.is_file():
        pytest.fail(f"OpenAPI spec {path} is missing: the shared reference specs must be present")
    return path


@functools.lru_cache(maxsize=4)
def _pipedrive_spec_dict(version: str) -> dict[str, Any]:
    yaml: Any = importlib.import_module("yaml")
    with _spec_file(f"pipedrive/{version}.yml").open(encoding="utf-8") as handle:
        spec: dict[str, Any] = yaml.load(
            handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        )
    variables = {"companydomain": {"default": "api"}}
    if version == "v2":
        spec["servers"] = [
            {"url": "https://{companydomain}.pipedrive.com/api/v2", "variables": variables}
        ]
        body = spec["paths"]["/organizations"]["post"]["requestBody"]
        body["content"]["application/json"]["schema"]["required"] = ["name"]
    else:
        spec["servers"] = [
            {"url": "https://{companydomain}.pipedrive.com/api/v1", "variables": variables},
            {"url": "https://{companydomain}.pipedrive.com/v1", "variables": variables},
        ]
    return spec


@functools.lru_cache(maxsize=4)
def pipedrive_spec(version: str) -> Any:
    """The Pipedrive ``v1`` or ``v2`` spec as an ``openapi_core.OpenAPI``, patched (see above).

    Validate a ``requests`` call with
    ``spec.validate_request(openapi_core.contrib.requests.RequestsOpenAPIRequest(prepared))``.
    """
    if version not in ("v1", "v2"):
        raise ValueError(f"unknown Pipedrive spec version {version!r}")
    from openapi_core import OpenAPI

    return OpenAPI.from_dict(copy.deepcopy(_pipedrive_spec_dict(version)))


# Known defects of the Zoho Books OAS copies, patched after loading (zoho-books.md §8).
ZOHO_SPEC_PATCHES = [
    "servers: every data center's https://www.zohoapis.<tld>/books/v3, not only .com",
    "GET /organizations: organization_id is not required (it is the discovery call)",
    "security: the oauth2 implicit scheme becomes an Authorization header check",
    "POST/PUT /customerpayments: invoice_id and amount_applied are not top-level required fields",
]
ZOHO_SPEC_NAMES = ("contacts", "contact-persons", "invoices", "customer-payments", "organizations")
_ZOHO_API_HOSTS = (
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


@functools.lru_cache(maxsize=8)
def _zoho_spec_dict(name: str) -> dict[str, Any]:
    yaml: Any = importlib.import_module("yaml")
    with _spec_file(f"zoho-books/{name}.yml").open(encoding="utf-8") as handle:
        spec: dict[str, Any] = yaml.load(
            handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        )
    spec["servers"] = [{"url": f"https://{host}/books/v3"} for host in _ZOHO_API_HOSTS]
    spec["components"]["securitySchemes"] = {
        "Zoho_Auth": {"type": "apiKey", "in": "header", "name": "Authorization"}
    }
    organizations = spec["paths"].get("/organizations", {}).get("get")
    if organizations is not None:
        organizations.setdefault("parameters", []).append(
            {
                "name": "organization_id",
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
            }
        )
    for schema_name in ("create-a-payment-request", "update-a-payment-request"):
        schema = spec["components"]["schemas"].get(schema_name)
        if schema and "required" in schema:
            schema["required"] = [
                r for r in schema["required"] if r not in ("invoice_id", "amount_applied")
            ]
    return spec


@functools.lru_cache(maxsize=8)
def zoho_spec(name: str) -> Any:
    """A Zoho Books spec (``contacts``, ``contact-persons``, ``invoices``, ``customer-payments``,
    ``organizations``) as an ``openapi_core.OpenAPI``, patched (see ``ZOHO_SPEC_PATCHES``).

    Validate a ``requests`` call with
    ``spec.validate_request(openapi_core.contrib.requests.RequestsOpenAPIRequest(prepared))``.
    """
    if name not in ZOHO_SPEC_NAMES:
        raise ValueError(f"unknown Zoho Books spec {name!r}; one of {ZOHO_SPEC_NAMES}")
    from openapi_core import OpenAPI

    return OpenAPI.from_dict(copy.deepcopy(_zoho_spec_dict(name)))
