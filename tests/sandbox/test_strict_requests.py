"""The strict sandbox refuses what the official specs refuse, in each vendor's error shape."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from connector.sandbox.common import Clock
from connector.sandbox.pipedrive import PipedriveSimulator
from connector.sandbox.spec_check import (
    ENV_SPECS_DIR,
    ENV_STRICT,
    SpecCheck,
    SpecRequest,
    SpecsMissingError,
)
from connector.sandbox.zoho import ZohoSimulator

CLIENT_ID = "1000.STRICT"
PD_ERROR_KEYS = {"success", "error", "error_info", "data", "additional_data"}


class Pipedrive:
    def __init__(self, sim: PipedriveSimulator, token: str) -> None:
        self.sim, self.headers = sim, {"x-api-token": token}

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = "https://acme.pipedrive.com" + path
        return requests.request(method, url, headers=self.headers, timeout=5, **kwargs)


@pytest.fixture
def pd() -> Iterator[Pipedrive]:
    sim = PipedriveSimulator(real_hosts=True, strict=True, webhook_deliver=lambda r: 200)
    sim.create_company("acme")
    token = sim.create_api_token("acme")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        sim.mount(rsps)
        yield Pipedrive(sim, token)


class Books:
    def __init__(self, sim: ZohoSimulator, org: str, token: str) -> None:
        self.sim, self.org, self.token = sim, org, token

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        params = {"organization_id": self.org, **kwargs.pop("params", {})}
        headers = {"Authorization": f"Zoho-oauthtoken {self.token}"}
        url = "https://www.zohoapis.com/books/v3" + path
        return requests.request(method, url, params=params, headers=headers, timeout=5, **kwargs)


@pytest.fixture
def books() -> Iterator[Books]:
    sim = ZohoSimulator(real_hosts=True, strict=True, clock=Clock(dt.datetime(2026, 3, 2)))
    sim.register_client(CLIENT_ID, "secret")
    org = sim.create_organization("us", "Books US", "professional")
    token = sim.issue_tokens(CLIENT_ID, "us")["access_token"]
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        sim.mount(rsps)
        yield Books(sim, org, token)


def _pd_refused(response: requests.Response, status: int, *words: str) -> None:
    body = response.json()
    assert response.status_code == status, response.text
    assert set(body) == PD_ERROR_KEYS
    assert (body["success"], body["data"], body["additional_data"]) == (False, None, None)
    for word in words:
        assert word in body["error"], body


def _zoho_refused(response: requests.Response, status: int, code: int, message: str) -> None:
    assert (response.status_code, response.json()) == (status, {"code": code, "message": message})


# --- Pipedrive ---------------------------------------------------------------------------------


def test_pipedrive_missing_required_property_is_400(pd):
    deal = pd.call("POST", "/api/v2/deals", json={"value": 10})
    field = pd.call("POST", "/api/v2/personFields", json={"field_name": "Shoe size"})
    search = pd.call("GET", "/api/v2/organizations/search")
    _pd_refused(deal, 400, 'Validation failed: "title" is required')
    _pd_refused(field, 400, 'Validation failed: "field_type" is required')
    _pd_refused(search, 400, 'Validation failed: "term" is required')
    assert pd.sim.write_count("acme") == 0


def test_pipedrive_webhooks_refusals_keep_the_webhooks_error_shape(pd):
    body = {"subscription_url": "https://hooks.example/h", "event_action": "*", "event_object": "*"}
    response = pd.call("POST", "/v1/webhooks", json=body)
    assert response.status_code == 400
    assert response.json() == {
        "status": "error",
        "success": False,
        "errors": {"name": ["is required"]},
    }
    wrong = pd.call("POST", "/v1/webhooks", json={**body, "name": "n", "event_action": "updated"})
    assert wrong.status_code == 400
    assert "'updated' is not one of" in wrong.json()["errors"]["event_action"][0]


def test_pipedrive_wrong_type_in_body_or_query_is_400(pd):
    created = pd.call("POST", "/api/v2/organizations", json={"name": "Acme"})
    assert created.status_code == 200, created.text
    org_id = created.json()["data"]["id"]
    renamed = pd.call("PATCH", f"/api/v2/organizations/{org_id}", json={"name": 123})
    listed = pd.call("GET", "/api/v2/organizations", params={"limit": "lots"})
    # The simulator's own rules refuse these too; the spec check answers first, in its words.
    _pd_refused(renamed, 400, "\"name\": 123 is not of type 'string'")
    _pd_refused(listed, 400, "limit: Failed to cast value to integer")
    assert pd.sim.get_record("acme", "organization", org_id)["name"] == "Acme"


def test_pipedrive_v2_write_refuses_an_unknown_property(pd):
    response = pd.call("POST", "/api/v2/persons", json={"name": "Ann", "nickname": "A"})
    _pd_refused(response, 400, "Additional properties are not allowed ('nickname' was unexpected)")
    # custom_fields stays an open object (the spec declares additionalProperties there).
    key = pd.sim.create_custom_field("acme", "person", "Shoe size", "varchar")["key"]
    ok = pd.call("POST", "/api/v2/persons", json={"name": "Ann", "custom_fields": {key: "42"}})
    assert ok.status_code == 200, ok.text


def test_pipedrive_form_body_on_v2_is_400(pd):
    response = pd.call("POST", "/api/v2/organizations", data={"name": "Acme"})
    _pd_refused(response, 400, "mimetype not found: application/x-www-form-urlencoded")


def test_pipedrive_checks_after_authentication(pd):
    response = requests.post(
        "https://acme.pipedrive.com/api/v2/deals",
        json={},
        headers={"x-api-token": "nope"},
        timeout=5,
    )
    assert response.status_code == 401


# --- Zoho Books --------------------------------------------------------------------------------


def test_zoho_missing_required_property_is_400_code_4(books):
    response = books.call("POST", "/invoices", json={"customer_id": "1"})
    _zoho_refused(response, 400, 4, "line_items is required.")
    person = books.call("POST", "/contacts/contactpersons", json={"last_name": "Solo"})
    _zoho_refused(person, 400, 4, "first_name is required.")


def test_zoho_wrong_type_is_400_code_2(books):
    response = books.call("POST", "/contacts", json={"contact_name": ["not", "a", "name"]})
    page = books.call("GET", "/contacts", params={"page": "first"})
    _zoho_refused(response, 400, 2, "Invalid value passed for contact_name")
    _zoho_refused(page, 400, 2, "Invalid value passed for page")
    assert books.sim.store.orgs[books.org].contacts == {}


def test_zoho_tolerates_unknown_properties(books):
    response = books.call(
        "POST", "/contacts", json={"contact_name": "Acme", "not_in_the_spec": True}
    )
    assert response.status_code == 201, response.text


def test_zoho_form_body_is_code_1038(books):
    response = books.call("POST", "/contacts", data={"contact_name": "Form encoded"})
    _zoho_refused(response, 400, 1038, "JSON is not well formed")


def test_zoho_checks_after_authentication(books):
    response = requests.post(
        "https://www.zohoapis.com/books/v3/invoices",
        params={"organization_id": books.org},
        json={},
        headers={"Authorization": "Zoho-oauthtoken nope"},
        timeout=5,
    )
    assert response.status_code == 401


# --- unknown paths, straight on the check --------------------------------------------------------


@pytest.mark.parametrize(
    ("vendor", "path", "status", "body"),
    [
        (
            "pipedrive",
            "/api/v2/widgets",
            404,
            {
                "success": False,
                "error": "Unknown method .",
                "error_info": "Please check developers.pipedrive.com",
                "data": None,
                "additional_data": None,
            },
        ),
        # Deprecated v1 CRUD is gone from the current v1 spec (pipedrive.md §3.1).
        ("pipedrive", "/v1/organizations/1", 404, None),
        ("zoho", "/books/v3/widgets", 404, {"code": 5, "message": "Invalid URL Passed"}),
        ("zoho", "/books/v3/invoices/1/status/paid", 404, None),
    ],
)
def test_unknown_paths_are_404_in_the_vendor_shape(vendor, path, status, body):
    query = {"organization_id": "1"} if vendor == "zoho" else {}
    method = "GET" if vendor == "pipedrive" else "POST"
    refusal = SpecCheck(vendor).refusal(SpecRequest(method, path, query))
    assert refusal is not None
    assert refusal.status == status
    if body is not None:
        assert refusal.body == body


def test_unknown_method_on_a_known_zoho_path_is_405():
    refusal = SpecCheck("zoho").refusal(
        SpecRequest("PATCH", "/books/v3/contacts", {"organization_id": "1"})
    )
    assert refusal is not None
    assert (refusal.status, refusal.body["code"]) == (405, 5)


def test_a_valid_request_passes_the_check():
    body = json.dumps({"name": "Acme", "address": {"value": "1 Main St"}}).encode()
    request = SpecRequest("POST", "/api/v2/organizations", {}, {}, "application/json", body)
    assert SpecCheck("pipedrive").refusal(request) is None


# --- switches ----------------------------------------------------------------------------------


def test_strict_is_the_default_and_the_environment_turns_it_off(monkeypatch):
    monkeypatch.delenv(ENV_STRICT, raising=False)
    assert PipedriveSimulator().spec_check is not None
    assert ZohoSimulator().spec_check is not None
    monkeypatch.setenv(ENV_STRICT, "0")
    assert PipedriveSimulator().spec_check is None
    assert ZohoSimulator().spec_check is None
    assert ZohoSimulator(strict=True).spec_check is not None


def test_missing_specs_fail_at_construction_naming_the_path(monkeypatch, tmp_path: Path):
    monkeypatch.setenv(ENV_SPECS_DIR, str(tmp_path))
    monkeypatch.delenv(ENV_STRICT, raising=False)
    for build in (PipedriveSimulator, ZohoSimulator):
        with pytest.raises(SpecsMissingError) as raised:
            build()
        assert str(tmp_path) in str(raised.value)
        assert ENV_SPECS_DIR in str(raised.value)
    assert PipedriveSimulator(strict=False).spec_check is None
