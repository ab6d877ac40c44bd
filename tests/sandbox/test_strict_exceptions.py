"""Each entry of connector/sandbox/spec_exceptions.py is needed: without it, the recording (or the
documented request) it cites breaks the spec; with it, it passes."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest

from connector.sandbox.spec_check import SpecCheck, SpecRequest
from connector.sandbox.spec_exceptions import EXCEPTIONS, SpecException
from tests.conformance.recordings import RECORDINGS_DIR
from tests.specs import spec_dict

JSON = "application/json"


def _exception(summary_start: str) -> SpecException:
    (found,) = [e for e in EXCEPTIONS if e.summary.startswith(summary_start)]
    return found


def _without(summary_start: str, vendor: str) -> SpecCheck:
    return SpecCheck(vendor, skip=frozenset({_exception(summary_start).summary}))


def _recorded(name: str) -> dict[str, Any]:
    path = RECORDINGS_DIR / name
    if not path.is_file():
        pytest.fail(f"recording {path} is missing: the shared recordings must be present")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _recorded_response(name: str, index: int = 0) -> tuple[SpecRequest, bytes]:
    data = _recorded(name)
    entry = data["recorded"][index] if "recorded" in data else data
    path = entry.get("path") or "/books/v3/" + name.split("/")[-1].split("_")[0]
    query = entry.get("request_params", {"organization_id": "1"})
    return SpecRequest("GET", path, query), json.dumps(entry["response"]).encode()


def _body(method: str, path: str, body: dict[str, Any], **query: str) -> SpecRequest:
    return SpecRequest(method, path, query, {}, JSON, json.dumps(body).encode())


def test_every_exception_names_its_reason_and_proof():
    kinds = {"defect", "adaptation", "strictness"}
    for entry in EXCEPTIONS:
        assert entry.kind in kinds, entry
        assert entry.reason, entry
        assert entry.proof, entry
        if entry.kind == "defect":
            # A defect is proved by a recording or the vendor's own text, never by our client.
            assert "recordings/" in entry.proof or ".md" in entry.proof or ".yml" in entry.proof
    assert len({e.summary for e in EXCEPTIONS}) == len(EXCEPTIONS)


def test_zoho_organizations_list_needs_no_organization_id():
    # The recording: GET /books/v3/organizations with no parameters, answered 200.
    request, answer = _recorded_response("zoho_api/organizations_list.json")
    assert dict(request.query) == {}
    assert SpecCheck("zoho").refusal(request) is None
    assert SpecCheck("zoho").response_problem(request, 200, JSON, answer) is None
    refused = _without("GET /organizations", "zoho").refusal(request)
    assert refused is not None
    assert refused.body == {"code": 4, "message": "organization_id is required."}


def test_zoho_payments_list_node_is_customerpayments():
    request, answer = _recorded_response("zoho_api/customerpayments_list.json")
    assert "customerpayments" in json.loads(answer)
    assert SpecCheck("zoho").response_problem(request, 200, JSON, answer) is None
    spec_shaped = json.dumps({"code": 0, "message": "success", "customer_payments": []}).encode()
    # With the exception the live node is required; the spec's own node no longer passes ...
    problem = SpecCheck("zoho").response_problem(request, 200, JSON, spec_shaped)
    assert problem is not None
    assert "customerpayments" in problem
    # ... while without it the spec never looks at the live node at all.
    without = _without("GET /customerpayments lists", "zoho")
    assert without.response_problem(request, 200, JSON, spec_shaped) is None
    broken = json.dumps({"code": 0, "customerpayments": [{"payment_id": []}]}).encode()
    assert without.response_problem(request, 200, JSON, broken) is None
    assert SpecCheck("zoho").response_problem(request, 200, JSON, broken) is not None


@pytest.mark.parametrize(
    ("name", "index"),
    [
        ("zoho_api/invoice_get.json", 0),
        ("zoho_api/invoices_list.json", 0),
        ("zoho_api/customerpayments_list.json", 0),
        ("zoho_api/contacts_list_3_pages.json", 2),  # the page with 149.97
        ("zoho_api/organizations_list.json", 0),
    ],
)
def test_zoho_live_types_of_amounts(name, index):
    request, answer = _recorded_response(name, index)
    if "invoice_get" in name:
        invoice_id = json.loads(answer)["invoice"]["invoice_id"]
        request = SpecRequest("GET", f"/books/v3/invoices/{invoice_id}", request.query)
    assert SpecCheck("zoho").response_problem(request, 200, JSON, answer) is None
    problem = _without("amounts are JSON numbers", "zoho").response_problem(
        request, 200, JSON, answer
    )
    assert problem is not None
    assert "is not of type" in problem


def test_zoho_invoice_list_page_context_is_an_object():
    request, answer = _recorded_response("zoho_api/invoices_list.json")
    assert isinstance(json.loads(answer)["page_context"], dict)
    problem = _without("GET /invoices page_context", "zoho").response_problem(
        request, 200, JSON, answer
    )
    assert problem is not None
    assert "page_context" in problem


def test_zoho_payment_invoices_fields_belong_to_each_invoice():
    body = {
        "customer_id": "1",
        "payment_mode": "cash",
        "amount": 10,
        "date": "2026-03-02",
        "invoices": [{"invoice_id": "2", "amount_applied": 10}],
    }
    request = _body("POST", "/books/v3/customerpayments", body, organization_id="1")
    assert SpecCheck("zoho").refusal(request) is None
    refused = _without("POST/PUT /customerpayments", "zoho").refusal(request)
    assert refused is not None
    assert refused.body["code"] == 4


def test_pipedrive_organization_create_needs_only_a_name():
    request = _body("POST", "/api/v2/organizations", {"name": "Acme"})
    assert SpecCheck("pipedrive").refusal(request) is None
    refused = _without("POST /organizations requires only name", "pipedrive").refusal(request)
    assert refused is not None
    assert '"title" is required' in refused.body["error"]


def test_pipedrive_v2_writes_refuse_unknown_properties_only_with_the_rule():
    request = _body("PATCH", "/api/v2/persons/1", {"name": "Ann", "first_name": "Ann"})
    refused = SpecCheck("pipedrive").refusal(request)
    assert refused is not None
    assert "first_name" in refused.body["error"]
    assert _without("v2 JSON write bodies", "pipedrive").refusal(request) is None


def _prepared(url: str, **kwargs: Any) -> RequestsOpenAPIRequest:
    return RequestsOpenAPIRequest(requests.Request(url=url, **kwargs).prepare())


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("pipedrive/v2", "https://acme.pipedrive.com/api/v2/organizations"),
        ("pipedrive/v1", "https://acme.pipedrive.com/api/v1/users/me"),
        ("pipedrive/v1", "https://acme.pipedrive.com/v1/users/me"),
        ("zoho-books/contacts", "https://www.zohoapis.eu/books/v3/contacts?organization_id=1"),
    ],
)
def test_server_urls_are_the_real_hosts(name, url):
    headers = {"x-api-token": "t", "Authorization": "Zoho-oauthtoken t"}
    summary = next(e.summary for e in EXCEPTIONS if e.applies_to(name) and "servers" in e.summary)
    with_servers = OpenAPI.from_dict(spec_dict(name))
    without = OpenAPI.from_dict(spec_dict(name, skip=frozenset({summary})))
    with_servers.validate_request(_prepared(url, method="GET", headers=headers))
    with pytest.raises(Exception, match=r"(?i)server"):
        without.validate_request(_prepared(url, method="GET", headers=headers))


def test_zoho_auth_is_the_authorization_header():
    spec = OpenAPI.from_dict(spec_dict("zoho-books/contacts"))
    url = "https://www.zohoapis.com/books/v3/contacts?organization_id=1"
    spec.validate_request(
        _prepared(url, method="GET", headers={"Authorization": "Zoho-oauthtoken t"})
    )
    with pytest.raises(Exception, match=r"(?i)security"):
        spec.validate_request(_prepared(url, method="GET"))
    summary = _exception("security: the oauth2").summary
    unpatched = OpenAPI.from_dict(spec_dict("zoho-books/contacts", skip=frozenset({summary})))
    # Unpatched, openapi-core cannot check the oauth2 scheme at all (it only warns).
    with pytest.warns(UserWarning, match=r"(?i)unsupported"):
        unpatched.validate_request(_prepared(url, method="GET"))
