"""The Zoho Books simulator behaves like Zoho Books and Zoho Accounts (reference zoho-books.md)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from flask import Flask, request
from openapi_core.contrib.requests import RequestsOpenAPIRequest

from connector.sandbox.common import Clock, Faults, serve_in_thread
from connector.sandbox.zoho import ZohoSimulator, sign_zoho_webhook
from connector.sandbox.zoho_webhooks import canonical_webhook_string
from tests.specs import zoho_spec

CLIENT_ID = "1000.TESTCLIENT"
CLIENT_SECRET = "s3cret-client"
START = dt.datetime(2025, 3, 10, 12, 0, 0, tzinfo=dt.UTC)
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{4}$")
EU_API = "https://www.zohoapis.eu/books/v3"
EU_TOKEN_URL = "https://accounts.zoho.eu/oauth/v2/token"


@pytest.fixture
def clock() -> Clock:
    return Clock(START, frozen=True)


@pytest.fixture
def sim(clock: Clock) -> ZohoSimulator:
    simulator = ZohoSimulator(real_hosts=True, clock=clock)
    simulator.register_client(CLIENT_ID, CLIENT_SECRET)
    return simulator


@pytest.fixture
def rsps(sim: ZohoSimulator) -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        sim.mount(mock)
        yield mock


class Books:
    """A tiny client for one org, so tests read like the calls a real client makes."""

    def __init__(self, sim: ZohoSimulator, dc: str, org: str, token: str) -> None:
        self.sim, self.dc, self.org, self.token = sim, dc, org, token
        self.base = f"{sim.api_domain(dc)}/books/v3"

    def renew(self) -> None:
        """A fresh access token, for tests that move the clock past the 1 h lifetime."""
        self.token = self.sim.issue_tokens(CLIENT_ID, self.dc)["access_token"]

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        params = {"organization_id": self.org, **kwargs.pop("params", {})}
        headers = {"Authorization": f"Zoho-oauthtoken {self.token}", **kwargs.pop("headers", {})}
        return requests.request(
            method, self.base + path, params=params, headers=headers, timeout=5, **kwargs
        )

    def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> dict[str, Any]:
        response = self.call(method, path, **kwargs)
        assert response.status_code == status, response.text
        body: dict[str, Any] = response.json()
        assert body["code"] == 0
        return body


@pytest.fixture
def books(sim: ZohoSimulator, rsps: responses.RequestsMock) -> Books:
    org = sim.create_organization("eu", "Acme EU", "professional")
    tokens = sim.issue_tokens(CLIENT_ID, "eu")
    return Books(sim, "eu", org, tokens["access_token"])


def token_call(url: str = EU_TOKEN_URL, **params: str) -> requests.Response:
    return requests.post(
        url, data={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **params}, timeout=5
    )


def exchange(sim: ZohoSimulator, dc: str = "eu", **grant: Any) -> dict[str, Any]:
    code = sim.issue_grant_code(CLIENT_ID, dc, **grant)
    url = f"{sim.accounts_server(dc)}/oauth/v2/token"
    response = token_call(url, grant_type="authorization_code", code=code)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


# -- OAuth ----------------------------------------------------------------------------------------


def test_code_exchange_returns_dc_bound_tokens(sim, rsps):
    body = exchange(sim, "eu")

    assert body["api_domain"] == "https://www.zohoapis.eu"
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["access_token"].startswith("1000.")
    assert body["refresh_token"].startswith("1000.")
    assert sim.accounts_server("ca") == "https://accounts.zohocloud.ca"
    assert sim.api_domain("ca") == "https://www.zohoapis.ca"
    assert sim.accounts_server("au") == "https://accounts.zoho.com.au"
    assert sim.accounts_server("cn") == "https://accounts.zoho.com.cn"


def test_grant_code_works_once(sim, rsps):
    code = sim.issue_grant_code(CLIENT_ID, "eu")

    first = token_call(grant_type="authorization_code", code=code)
    second = token_call(grant_type="authorization_code", code=code)

    assert "access_token" in first.json()
    assert second.status_code == 200
    assert second.json() == {"error": "invalid_code"}


def test_grant_code_expires_after_60_seconds(sim, rsps, clock):
    late = sim.issue_grant_code(CLIENT_ID, "eu")
    in_time = sim.issue_grant_code(CLIENT_ID, "eu")
    clock.advance(59)
    assert "access_token" in token_call(grant_type="authorization_code", code=in_time).json()

    clock.advance(2)
    response = token_call(grant_type="authorization_code", code=late)

    assert response.status_code == 200
    assert response.json() == {"error": "invalid_code"}


def test_token_params_may_come_in_the_query_string(sim, rsps):
    code = sim.issue_grant_code(CLIENT_ID, "eu")
    response = requests.post(
        EU_TOKEN_URL,
        params={
            "grant_type": "authorization_code",
            "code": code,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
        timeout=5,
    )
    assert "refresh_token" in response.json()


def test_refresh_returns_no_refresh_token_and_access_expires_after_3600s(sim, rsps, clock):
    org = sim.create_organization("eu", "Acme")
    tokens = exchange(sim)
    refreshed = token_call(grant_type="refresh_token", refresh_token=tokens["refresh_token"]).json()
    assert set(refreshed) >= {"access_token", "api_domain", "token_type", "expires_in"}
    assert "refresh_token" not in refreshed
    books = Books(sim, "eu", org, refreshed["access_token"])

    clock.advance(3599)
    assert books.call("GET", "/contacts").status_code == 200
    clock.advance(1)
    expired = books.call("GET", "/contacts")

    assert expired.status_code == 401
    assert expired.json() == {
        "code": 57,
        "message": "You are not authorized to perform this operation",
    }
    assert sim.refresh_count(tokens["refresh_token"]) == 1


def test_invalid_token_style_is_configurable(clock):
    sim = ZohoSimulator(real_hosts=True, clock=clock, invalid_token_style="invalid_token")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        sim.mount(mock)
        org = sim.create_organization("eu")
        response = Books(sim, "eu", org, "1000.bogus.token").call("GET", "/contacts")
    assert response.status_code == 401
    assert response.json()["code"] == "INVALID_TOKEN"


def test_ten_access_tokens_per_ten_minutes_then_access_denied(sim, rsps, clock):
    refresh = sim.issue_tokens(CLIENT_ID, "eu")["refresh_token"]
    for _ in range(10):
        assert (
            "access_token" in token_call(grant_type="refresh_token", refresh_token=refresh).json()
        )

    blocked = token_call(grant_type="refresh_token", refresh_token=refresh)
    clock.advance(590)
    still_blocked = token_call(grant_type="refresh_token", refresh_token=refresh)
    clock.advance(10)
    again = token_call(grant_type="refresh_token", refresh_token=refresh)

    assert blocked.status_code == 200
    assert blocked.json() == {
        "error": "Access Denied",
        "error_description": "You have made too many requests continuously. Please try again after some time.",
    }
    assert still_blocked.json()["error"] == "Access Denied"
    assert "access_token" in again.json()
    assert sim.refresh_count(refresh) == 13


def test_throttle_status_is_configurable(clock):
    sim = ZohoSimulator(real_hosts=True, clock=clock, throttle_status=400, refresh_limit=1)
    sim.register_client(CLIENT_ID, CLIENT_SECRET)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        sim.mount(mock)
        refresh = sim.issue_tokens(CLIENT_ID, "eu")["refresh_token"]
        token_call(grant_type="refresh_token", refresh_token=refresh)
        blocked = token_call(grant_type="refresh_token", refresh_token=refresh)
    assert blocked.status_code == 400
    assert blocked.json()["error"] == "Access Denied"


def test_revoked_or_unknown_refresh_token_is_invalid_code(sim, rsps):
    refresh = exchange(sim)["refresh_token"]
    revoke = requests.post(f"{EU_TOKEN_URL}/revoke", params={"token": refresh}, timeout=5)
    assert revoke.status_code == 200

    after = token_call(grant_type="refresh_token", refresh_token=refresh)
    unknown = token_call(grant_type="refresh_token", refresh_token="1000.nope.nope")

    assert after.status_code == 200
    assert after.json() == {"error": "invalid_code"}
    assert unknown.json() == {"error": "invalid_code"}


def test_wrong_client_secret_is_invalid_client(sim, rsps):
    refresh = sim.issue_tokens(CLIENT_ID, "eu")["refresh_token"]
    response = requests.post(
        EU_TOKEN_URL,
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "client_id": CLIENT_ID,
            "client_secret": "wrong",
        },
        timeout=5,
    )
    assert response.json() == {"error": "invalid_client"}


def test_per_dc_client_secrets(clock):
    sim = ZohoSimulator(real_hosts=True, clock=clock)
    sim.register_client(CLIENT_ID, CLIENT_SECRET, secrets_per_dc={"in": "india-secret"})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        sim.mount(mock)
        refresh = sim.issue_tokens(CLIENT_ID, "in")["refresh_token"]
        url = "https://accounts.zoho.in/oauth/v2/token"
        shared = token_call(url, grant_type="refresh_token", refresh_token=refresh)
        own = requests.post(
            url,
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh,
                "client_id": CLIENT_ID,
                "client_secret": "india-secret",
            },
            timeout=5,
        )
    assert shared.json() == {"error": "invalid_client"}
    assert "access_token" in own.json()


def test_refresh_at_another_dc_is_invalid_client(sim, rsps):
    refresh = exchange(sim, "eu")["refresh_token"]

    at_us = token_call(
        "https://accounts.zoho.com/oauth/v2/token",
        grant_type="refresh_token",
        refresh_token=refresh,
    )

    assert at_us.json() == {"error": "invalid_client"}


def test_api_call_at_another_dc_is_rejected(sim, rsps):
    us_org = sim.create_organization("us", "Acme US")
    eu_org = sim.create_organization("eu", "Acme EU")
    eu_token = sim.issue_tokens(CLIENT_ID, "eu")["access_token"]

    wrong_host = Books(sim, "us", us_org, eu_token).call("GET", "/contacts")
    wrong_org = Books(sim, "eu", us_org, eu_token).call("GET", "/contacts")
    right = Books(sim, "eu", eu_org, eu_token).call("GET", "/contacts")

    assert wrong_host.status_code == 401
    assert wrong_host.json()["code"] == 57
    assert wrong_org.status_code == 400
    assert wrong_org.json()["code"] == 6041
    assert right.status_code == 200


def test_21st_refresh_token_evicts_the_oldest(sim, rsps):
    tokens = [sim.issue_tokens(CLIENT_ID, "eu") for _ in range(21)]

    oldest = token_call(grant_type="refresh_token", refresh_token=tokens[0]["refresh_token"])
    second = token_call(grant_type="refresh_token", refresh_token=tokens[1]["refresh_token"])

    assert oldest.json() == {"error": "invalid_code"}
    assert "access_token" in second.json()


def test_active_token_cap_invalidates_the_oldest_access_token(clock):
    sim = ZohoSimulator(real_hosts=True, clock=clock, active_token_cap=2)
    sim.register_client(CLIENT_ID, CLIENT_SECRET)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        sim.mount(mock)
        org = sim.create_organization("eu")
        tokens = sim.issue_tokens(CLIENT_ID, "eu")
        refresh = tokens["refresh_token"]
        second = token_call(grant_type="refresh_token", refresh_token=refresh).json()
        third = token_call(grant_type="refresh_token", refresh_token=refresh).json()
        statuses = [
            Books(sim, "eu", org, token).call("GET", "/contacts").status_code
            for token in (tokens["access_token"], second["access_token"], third["access_token"])
        ]
    assert statuses == [401, 200, 200]


def test_authorize_redirects_with_location_and_accounts_server(sim, rsps):
    sim.create_organization("eu", "Acme EU")
    response = requests.get(
        "https://accounts.zoho.com/oauth/v2/auth",
        params={
            "scope": "ZohoBooks.fullaccess.all",
            "client_id": CLIENT_ID,
            "response_type": "code",
            "redirect_uri": "https://app.example/callback",
            "access_type": "offline",
            "prompt": "consent",
            "state": "xyz",
        },
        allow_redirects=False,
        timeout=5,
    )
    assert response.status_code == 302
    target = urlsplit(response.headers["Location"])
    query = {k: v[0] for k, v in parse_qs(target.query).items()}
    assert f"{target.scheme}://{target.netloc}{target.path}" == "https://app.example/callback"
    assert query["location"] == "eu"
    assert query["accounts-server"] == "https://accounts.zoho.eu"
    assert query["state"] == "xyz"

    tokens = token_call(
        f"{query['accounts-server']}/oauth/v2/token",
        grant_type="authorization_code",
        code=query["code"],
        redirect_uri="https://app.example/callback",
    ).json()
    assert tokens["api_domain"] == "https://www.zohoapis.eu"
    assert "refresh_token" in tokens


def test_authorize_online_gives_no_refresh_token_and_denial_redirects(sim, rsps):
    params = {
        "scope": "ZohoBooks.contacts.READ",
        "client_id": CLIENT_ID,
        "response_type": "code",
        "redirect_uri": "https://app.example/cb",
    }
    online = requests.get(
        "https://accounts.zoho.eu/oauth/v2/auth", params=params, allow_redirects=False, timeout=5
    )
    code = parse_qs(urlsplit(online.headers["Location"]).query)["code"][0]
    tokens = token_call(grant_type="authorization_code", code=code).json()
    assert "access_token" in tokens
    assert "refresh_token" not in tokens

    sim.consent_denied = True
    denied = requests.get(
        "https://accounts.zoho.eu/oauth/v2/auth",
        params={**params, "state": "s1"},
        allow_redirects=False,
        timeout=5,
    )
    assert parse_qs(urlsplit(denied.headers["Location"]).query) == {
        "error": ["access_denied"],
        "state": ["s1"],
    }


def test_serverinfo_maps_locations_to_accounts_servers(sim, rsps):
    info = requests.get("https://accounts.zoho.com/oauth/serverinfo", timeout=5).json()
    assert info["locations"]["eu"] == "https://accounts.zoho.eu"
    assert info["locations"]["ca"] == "https://accounts.zohocloud.ca"


# -- API basics -----------------------------------------------------------------------------------


def test_token_only_in_the_header(books):
    in_query = requests.get(
        f"{EU_API}/contacts",
        params={"organization_id": books.org, "authtoken": books.token},
        timeout=5,
    )
    bearer = requests.get(
        f"{EU_API}/contacts",
        params={"organization_id": books.org},
        headers={"Authorization": f"Bearer {books.token}"},
        timeout=5,
    )
    assert in_query.status_code == 401
    assert bearer.status_code == 401


def test_organization_id_required_except_on_organizations(books, sim):
    sim.create_organization("eu", "Other org", users=["someone@else.test"])
    missing = requests.get(
        f"{EU_API}/contacts", headers={"Authorization": f"Zoho-oauthtoken {books.token}"}, timeout=5
    )
    wrong = books.call("GET", "/contacts", params={"organization_id": "104"})
    listed = requests.get(
        f"{EU_API}/organizations",
        headers={"Authorization": f"Zoho-oauthtoken {books.token}"},
        timeout=5,
    )

    assert missing.status_code == 400
    assert missing.json()["code"] == 6041
    assert wrong.status_code == 400
    assert wrong.json() == {
        "code": 6041,
        "message": "This user is not associated with the CompanyID/CompanyName:104.",
    }
    assert listed.status_code == 200
    assert [o["organization_id"] for o in listed.json()["organizations"]] == [books.org]
    assert listed.json()["organizations"][0]["plan_name"] == "PROFESSIONAL"


def test_scopes_are_enforced(sim, rsps):
    org = sim.create_organization("eu")
    reader = sim.issue_tokens(CLIENT_ID, "eu", scope="ZohoBooks.contacts.READ")["access_token"]
    writer = sim.issue_tokens(
        CLIENT_ID, "eu", scope="ZohoBooks.contacts.READ,ZohoBooks.contacts.UPDATE"
    )["access_token"]
    contact_id = sim.create_record(org, "contacts", {"contact_name": "Bowman"})["contact_id"]

    read = Books(sim, "eu", org, reader).call("GET", "/contacts")
    create = Books(sim, "eu", org, reader).call("POST", "/contacts", json={"contact_name": "X"})
    invoices = Books(sim, "eu", org, reader).call("GET", "/invoices")
    # Action endpoints need CREATE, not UPDATE (reference §2.6).
    action = Books(sim, "eu", org, writer).call("POST", f"/contacts/{contact_id}/inactive")

    assert read.status_code == 200
    assert (create.status_code, create.json()["code"]) == (401, 57)
    assert invoices.status_code == 401
    assert action.status_code == 401


def test_non_json_body_is_code_1038(books):
    response = books.call("POST", "/contacts", data={"contact_name": "Form encoded"})
    assert response.status_code == 400
    assert response.json()["code"] == 1038


def test_unknown_records_are_1002(books):
    contact = books.call("GET", "/contacts/460000000099999")
    invoice = books.call("GET", "/invoices/460000000099999")
    assert (contact.status_code, contact.json()) == (
        404,
        {"code": 1002, "message": "Contact does not exist."},
    )
    assert (invoice.status_code, invoice.json()) == (
        404,
        {"code": 1002, "message": "Invoice does not exist."},
    )


# -- contacts -------------------------------------------------------------------------------------


NEW_CONTACT = {
    "contact_name": "Bowman and Co",
    "company_name": "Bowman and Co",
    "contact_type": "customer",
    "payment_terms": 15,
    "billing_address": {"address": "4900 Hopyard Rd", "city": "Pleasanton", "country": "U.S.A"},
    "contact_persons": [
        {
            "first_name": "Will",
            "last_name": "Smith",
            "email": "will@bowman.test",
            "is_primary_contact": True,
        },
        {"first_name": "Ann", "last_name": "Lee", "email": "ann@bowman.test"},
    ],
    "custom_fields": [{"api_name": "cf_pipedrive_id", "value": "42"}],
}


def test_create_contact_detail_shape(books):
    body = books.ok("POST", "/contacts", 201, json=NEW_CONTACT)
    contact = body["contact"]

    assert body["message"] == "The contact has been created"
    assert isinstance(contact["contact_id"], str)
    assert contact["contact_id"].isdigit()
    assert TIMESTAMP.match(contact["created_time"])
    assert contact["created_time"] == "2025-03-10T12:00:00+0000"
    assert contact["payment_terms"] == 15
    assert contact["outstanding_receivable_amount"] == 0
    assert contact["billing_address"]["city"] == "Pleasanton"
    assert [p["is_primary_contact"] for p in contact["contact_persons"]] == [True, False]
    assert contact["primary_contact_id"] == contact["contact_persons"][0]["contact_person_id"]
    assert contact["custom_fields"][0] | {"customfield_id": "x"} == {
        "customfield_id": "x",
        "index": 1,
        "label": "Pipedrive ID",
        "api_name": "cf_pipedrive_id",
        "data_type": "string",
        "value": "42",
        "value_formatted": "42",
    }
    fetched = books.ok("GET", f"/contacts/{contact['contact_id']}")["contact"]
    assert fetched == contact


def test_list_items_are_reduced(books):
    books.ok("POST", "/contacts", 201, json=NEW_CONTACT)
    item = books.ok("GET", "/contacts")["contacts"][0]

    assert "contact_persons" not in item
    assert "billing_address" not in item
    assert "custom_fields" not in item
    assert item["email"] == "will@bowman.test"
    assert item["first_name"] == "Will"
    assert set(item) >= {"contact_id", "contact_name", "status", "last_modified_time"}


def test_contact_custom_fields_by_index_or_customfield_id(books):
    first = books.ok(
        "POST",
        "/contacts",
        201,
        json={"contact_name": "A", "custom_fields": [{"index": 1, "value": "7"}]},
    )
    field_id = first["contact"]["custom_fields"][0]["customfield_id"]
    second = books.ok(
        "PUT",
        f"/contacts/{first['contact']['contact_id']}",
        json={"contact_name": "A", "custom_fields": [{"customfield_id": field_id, "value": "8"}]},
    )
    assert second["contact"]["custom_fields"][0]["value"] == "8"
    unknown = books.call(
        "POST",
        "/contacts",
        json={"contact_name": "B", "custom_fields": [{"api_name": "cf_nope", "value": 1}]},
    )
    assert unknown.status_code == 400
    assert unknown.json()["code"] != 0


def test_contact_validation(books):
    missing = books.call("POST", "/contacts", json={"company_name": "No name"})
    books.ok("POST", "/contacts", 201, json={"contact_name": "Twin"})
    duplicate = books.call("POST", "/contacts", json={"contact_name": "twin"})

    assert missing.status_code == 400
    assert missing.json()["code"] != 0
    assert duplicate.status_code == 400
    assert duplicate.json()["code"] == 3062


def test_contact_update_active_inactive_delete(books, clock):
    contact = books.ok("POST", "/contacts", 201, json=NEW_CONTACT)["contact"]
    cid = contact["contact_id"]
    clock.advance(30)

    updated = books.ok(
        "PUT", f"/contacts/{cid}", json={"contact_name": "Bowman and Co", "website": "bowman.test"}
    )["contact"]
    books.ok("POST", f"/contacts/{cid}/inactive")
    inactive = books.ok("GET", "/contacts", params={"filter_by": "Status.Inactive"})["contacts"]
    active = books.ok("GET", "/contacts", params={"filter_by": "Status.Active"})["contacts"]
    deleted = books.ok("DELETE", f"/contacts/{cid}")
    after = books.call("GET", f"/contacts/{cid}")

    assert updated["website"] == "bowman.test"
    assert updated["contact_name"] == "Bowman and Co"
    assert updated["last_modified_time"] == "2025-03-10T12:00:30+0000"
    assert updated["created_time"] == contact["created_time"]
    assert [c["contact_id"] for c in inactive] == [cid]
    assert active == []
    assert deleted["message"] == "The contact has been deleted."
    assert after.status_code == 404


def test_contact_filters_and_sorting(books, clock):
    for name, email in (("Alpha", "a@x.test"), ("Beta", "b@y.test"), ("Gamma", "g@x.test")):
        books.ok(
            "POST",
            "/contacts",
            201,
            json={"contact_name": name, "contact_persons": [{"first_name": name, "email": email}]},
        )
        clock.advance(10)
    beta = books.ok("GET", "/contacts", params={"contact_name": "Beta"})["contacts"][0]
    clock.advance(10)
    books.ok(
        "PUT", f"/contacts/{beta['contact_id']}", json={"contact_name": "Beta", "notes": "touched"}
    )

    def names(**params: str) -> list[str]:
        return [c["contact_name"] for c in books.ok("GET", "/contacts", params=params)["contacts"]]

    assert names() == ["Alpha", "Beta", "Gamma"]
    assert names(sort_order="D") == ["Gamma", "Beta", "Alpha"]
    assert names(sort_column="last_modified_time", sort_order="D") == ["Beta", "Gamma", "Alpha"]
    assert names(email="g@x.test") == ["Gamma"]
    assert names(search_text="et") == ["Beta"]
    assert names(contact_name_contains="mm") == ["Gamma"]
    assert names(contact_name_startswith="al") == ["Alpha"]
    page_context = books.ok("GET", "/contacts", params={"sort_column": "created_time"})[
        "page_context"
    ]
    assert page_context == {
        "page": 1,
        "per_page": 200,
        "has_more_page": False,
        "report_name": "Contacts",
        "applied_filter": "Status.All",
        "sort_column": "created_time",
        "sort_order": "A",
    }
    assert books.call("GET", "/contacts", params={"sort_column": "nope"}).status_code == 400


def test_pagination_across_many_pages(books, sim):
    sim.seed(books.org, contacts=450)

    seen: list[str] = []
    contexts = []
    page = 1
    while True:
        body = books.ok("GET", "/contacts", params={"page": page, "per_page": 200})
        seen += [c["contact_id"] for c in body["contacts"]]
        contexts.append(body["page_context"])
        if not body["page_context"]["has_more_page"]:
            break
        page += 1
    capped = books.ok("GET", "/contacts", params={"per_page": 500})

    assert [c["has_more_page"] for c in contexts] == [True, True, False]
    assert len(seen) == len(set(seen)) == 450
    assert capped["page_context"]["per_page"] == 200
    assert len(capped["contacts"]) == 200


def test_contact_persons_endpoints(books):
    contact = books.ok("POST", "/contacts", 201, json=NEW_CONTACT)["contact"]
    cid = contact["contact_id"]

    created = books.ok(
        "POST",
        "/contacts/contactpersons",
        201,
        json={"contact_id": cid, "first_name": "Zed", "email": "z@b.test"},
    )
    person_id = created["contact_person"][0]["contact_person_id"]
    books.ok(
        "PUT",
        f"/contacts/contactpersons/{person_id}",
        json={"contact_id": cid, "first_name": "Zed", "phone": "123"},
    )
    books.ok("POST", f"/contacts/contactpersons/{person_id}/primary")
    listed = books.ok("GET", f"/contacts/{cid}/contactpersons")["contact_persons"]
    one = books.ok("GET", f"/contacts/{cid}/contactpersons/{person_id}")["contact_person"]
    item = books.ok("GET", "/contacts")["contacts"][0]
    books.ok("DELETE", f"/contacts/contactpersons/{person_id}")
    after = books.ok("GET", f"/contacts/{cid}")["contact"]

    assert created["message"] == "The contactperson has been Created"
    assert len(listed) == 3
    assert one["phone"] == "123"
    assert one["is_primary_contact"] is True
    assert item["email"] == "z@b.test"
    assert len(after["contact_persons"]) == 2
    assert after["primary_contact_id"] == after["contact_persons"][0]["contact_person_id"]


def test_upsert_by_unique_custom_field(books):
    headers = {"X-Unique-Identifier-Key": "cf_pipedrive_id", "X-Unique-Identifier-Value": "pd-77"}

    missing = books.call("PUT", "/contacts", headers=headers, json={"contact_name": "Upserted"})
    created = books.call(
        "PUT",
        "/contacts",
        headers={**headers, "X-Upsert": "true"},
        json={"contact_name": "Upserted"},
    )
    updated = books.call(
        "PUT",
        "/contacts",
        headers={**headers, "X-Upsert": "true"},
        json={"contact_name": "Upserted Ltd"},
    )
    other = books.ok("POST", "/contacts", 201, json={"contact_name": "Other"})["contact"]
    clash = books.call(
        "PUT",
        f"/contacts/{other['contact_id']}",
        json={"custom_fields": [{"api_name": "cf_pipedrive_id", "value": "pd-77"}]},
    )
    bad_key = books.call(
        "PUT", "/contacts", headers={**headers, "X-Unique-Identifier-Key": "cf_nope"}, json={}
    )

    assert (missing.status_code, missing.json()["code"]) == (404, 1002)
    assert created.status_code == 200  # PUT declares only 200 (contacts.yml)
    contact = created.json()["contact"]
    assert contact["custom_fields"][0]["value"] == "pd-77"
    assert updated.status_code == 200
    assert updated.json()["contact"]["contact_id"] == contact["contact_id"]
    assert updated.json()["contact"]["contact_name"] == "Upserted Ltd"
    assert clash.status_code == 400
    assert bad_key.status_code == 400
    assert len(books.ok("GET", "/contacts")["contacts"]) == 2


# -- invoices and payments ------------------------------------------------------------------------


def make_invoice(books: Books, customer_id: str, **extra: Any) -> dict[str, Any]:
    body = {
        "customer_id": customer_id,
        "line_items": [
            {"item_id": "460000000017088", "name": "Chair", "rate": 50, "quantity": 2},
            {"item_id": "460000000017089", "name": "Desk", "rate": 0.5, "quantity": 3},
        ],
        **extra,
    }
    invoice: dict[str, Any] = books.ok("POST", "/invoices", 201, json=body)["invoice"]
    return invoice


def test_create_invoice_computes_totals(books):
    customer = books.ok(
        "POST", "/contacts", 201, json={"contact_name": "Buyer", "payment_terms": 15}
    )["contact"]

    first = make_invoice(books, customer["contact_id"], reference_number="PO-1")
    second = make_invoice(books, customer["contact_id"])
    missing = books.call("POST", "/invoices", json={"customer_id": customer["contact_id"]})

    assert first["invoice_number"] == "INV-000001"
    assert second["invoice_number"] == "INV-000002"
    assert first["sub_total"] == first["total"] == first["balance"] == 101.5
    assert first["line_items"][0]["item_total"] == 100
    assert first["status"] == "draft"
    assert first["date"] == "2025-03-10"
    assert first["due_date"] == "2025-03-25"
    assert first["customer_name"] == "Buyer"
    assert first["payment_made"] == 0
    assert first["last_payment_date"] == ""
    assert isinstance(first["invoice_id"], str)
    assert missing.status_code == 400
    listed = books.ok("GET", "/invoices", params={"reference_number": "PO-1"})["invoices"]
    assert [i["invoice_id"] for i in listed] == [first["invoice_id"]]
    assert "line_items" not in listed[0]


def test_payments_update_invoice_balance_and_status(books, clock):
    customer = books.ok("POST", "/contacts", 201, json={"contact_name": "Payer"})["contact"][
        "contact_id"
    ]
    invoice = make_invoice(books, customer, due_date="2025-03-20")
    iid = invoice["invoice_id"]
    books.ok("POST", f"/invoices/{iid}/status/sent")
    assert books.ok("GET", f"/invoices/{iid}")["invoice"]["status"] == "sent"
    clock.advance(60)

    first = books.ok(
        "POST",
        "/customerpayments",
        201,
        json={
            "customer_id": customer,
            "amount": 40,
            "date": "2025-03-11",
            "payment_mode": "cash",
            "invoices": [{"invoice_id": iid, "amount_applied": 40}],
        },
    )["payment"]
    partial = books.ok("GET", f"/invoices/{iid}")["invoice"]
    contact = books.ok("GET", f"/contacts/{customer}")["contact"]
    second = books.ok(
        "POST",
        "/customerpayments",
        201,
        json={
            "customer_id": customer,
            "amount": 61.5,
            "date": "2025-03-12",
            "payment_mode": "cash",
            "invoices": [{"invoice_id": iid, "amount_applied": 61.5}],
        },
    )["payment"]
    paid = books.ok("GET", f"/invoices/{iid}")["invoice"]
    payments = books.ok("GET", f"/invoices/{iid}/payments")["payments"]
    too_much = books.call(
        "POST",
        "/customerpayments",
        json={
            "customer_id": customer,
            "amount": 5,
            "invoices": [{"invoice_id": iid, "amount_applied": 5}],
        },
    )
    books.ok("DELETE", f"/customerpayments/{second['payment_id']}")
    reopened = books.ok("GET", f"/invoices/{iid}")["invoice"]
    clock.set(dt.datetime(2025, 3, 21, 9, 0, tzinfo=dt.UTC))
    books.renew()
    overdue = books.ok("GET", f"/invoices/{iid}")["invoice"]
    books.ok(
        "PUT",
        f"/customerpayments/{first['payment_id']}",
        json={
            "customer_id": customer,
            "payment_mode": "cash",
            "amount": 101.5,
            "invoices": [{"invoice_id": iid, "amount_applied": 101.5}],
        },
    )
    settled = books.ok("GET", f"/invoices/{iid}")["invoice"]

    assert (partial["status"], partial["balance"], partial["payment_made"]) == (
        "partially_paid",
        61.5,
        40,
    )
    assert partial["last_payment_date"] == "2025-03-11"
    assert partial["last_modified_time"] == "2025-03-10T12:01:00+0000"
    assert contact["outstanding_receivable_amount"] == 61.5
    assert (paid["status"], paid["balance"], paid["last_payment_date"]) == ("paid", 0, "2025-03-12")
    assert sorted(p["amount"] for p in payments) == [40, 61.5]
    assert too_much.status_code == 400
    assert (reopened["status"], reopened["balance"]) == ("partially_paid", 61.5)
    assert overdue["status"] == "overdue"
    assert (settled["status"], settled["balance"]) == ("paid", 0)
    assert len(books.ok("GET", "/customerpayments")["customerpayments"]) == 1


def test_payments_list_node_is_customerpayments_as_live_zoho_answers(books):
    # Regression: the simulator copied the OAS's customer_payments, so client and simulator
    # agreed with each other and not with Zoho (shared/recordings/zoho_api/customerpayments_list).
    customer = books.ok("POST", "/contacts", 201, json={"contact_name": "Payer"})["contact"]
    books.ok(
        "POST",
        "/customerpayments",
        201,
        json={
            "customer_id": customer["contact_id"],
            "payment_mode": "cash",
            "amount": 10,
            "date": "2025-03-10",
            "invoices": [],
        },
    )
    body = books.ok("GET", "/customerpayments")

    assert "customer_payments" not in body
    assert [p["amount"] for p in body["customerpayments"]] == [10]
    assert (body["page_context"]["sort_column"], body["page_context"]["sort_order"]) == (
        "date",
        "D",
    )


def test_invoice_status_actions_and_delete(books):
    customer = books.ok("POST", "/contacts", 201, json={"contact_name": "C"})["contact"][
        "contact_id"
    ]
    iid = make_invoice(books, customer)["invoice_id"]

    void = books.ok("POST", f"/invoices/{iid}/status/void")
    assert void["message"] == "Invoice status has been changed to Void."
    assert books.ok("GET", f"/invoices/{iid}")["invoice"]["status"] == "void"
    books.ok("POST", f"/invoices/{iid}/status/draft")
    assert (
        books.ok("GET", "/invoices", params={"status": "draft"})["invoices"][0]["invoice_id"] == iid
    )
    assert books.ok("DELETE", f"/invoices/{iid}")["message"] == "The invoice has been deleted."
    assert books.call("GET", f"/invoices/{iid}").status_code == 404


def test_invoice_last_modified_time_filter(books, clock):
    customer = books.ok("POST", "/contacts", 201, json={"contact_name": "C"})["contact"][
        "contact_id"
    ]
    old = make_invoice(books, customer)["invoice_id"]
    clock.advance(3600)
    books.renew()
    fresh = make_invoice(books, customer)["invoice_id"]
    clock.advance(3600)
    books.renew()
    # The spec's update schema requires customer_id and line_items on every PUT.
    line_items = [{"item_id": "460000000017088", "name": "Chair", "rate": 50, "quantity": 2}]
    books.ok(
        "PUT",
        f"/invoices/{old}",
        json={"customer_id": customer, "line_items": line_items, "reference_number": "edited"},
    )

    since_fresh = books.ok(
        "GET", "/invoices", params={"last_modified_time": "2025-03-10T13:00:00+0000"}
    )
    since_edit = books.ok(
        "GET",
        "/invoices",
        params={
            "last_modified_time": "2025-03-10T15:00:00+0100",
            "sort_column": "last_modified_time",
        },
    )
    unencoded = requests.get(
        f"{EU_API}/invoices?organization_id={books.org}&last_modified_time=2025-03-10T13:00:00+0000",
        headers={"Authorization": f"Zoho-oauthtoken {books.token}"},
        timeout=5,
    )

    assert {i["invoice_id"] for i in since_fresh["invoices"]} == {old, fresh}
    assert [i["invoice_id"] for i in since_edit["invoices"]] == [old]
    assert unencoded.status_code == 400


def test_invoice_upsert_by_unique_custom_field(books):
    customer = books.ok("POST", "/contacts", 201, json={"contact_name": "C"})["contact"][
        "contact_id"
    ]
    headers = {
        "X-Unique-Identifier-Key": "cf_pipedrive_deal_id",
        "X-Unique-Identifier-Value": "deal-9",
        "X-Upsert": "true",
    }
    line = [{"item_id": "460000000017088", "name": "x", "rate": 10, "quantity": 1}]
    created = books.call(
        "PUT", "/invoices", headers=headers, json={"customer_id": customer, "line_items": line}
    )
    updated = books.call(
        "PUT",
        "/invoices",
        headers=headers,
        json={"customer_id": customer, "line_items": line, "reference_number": "R"},
    )
    assert created.status_code == 200  # PUT declares only 200 (invoices.yml)
    assert updated.status_code == 200
    assert updated.json()["invoice"]["invoice_id"] == created.json()["invoice"]["invoice_id"]


# -- rate limits ----------------------------------------------------------------------------------


def test_per_minute_limit_is_code_44_without_retry_after(books, clock):
    for _ in range(100):
        assert books.call("GET", "/contacts").status_code == 200

    limited = books.call("GET", "/contacts")
    clock.advance(60)
    later = books.call("GET", "/contacts")

    assert limited.status_code == 429
    assert limited.json()["code"] == 44
    assert "Retry-After" not in limited.headers
    assert later.status_code == 200
    stats = books.sim.stats(books.org)
    assert stats["total"] == 102
    assert stats["rate_limited"] == {"44": 1}
    assert stats["max_per_minute"] == 101


def test_daily_limit_is_code_45_and_resets_at_midnight_utc(sim, rsps, clock):
    org = sim.create_organization("eu", plan="free")
    assert sim.daily_limits["free"] == 1000
    assert sim.daily_limits["standard"] == 2000
    sim.set_rate_limits(daily={"free": 3})
    books = Books(sim, "eu", org, sim.issue_tokens(CLIENT_ID, "eu")["access_token"])
    for _ in range(3):
        assert books.call("GET", "/contacts").status_code == 200

    limited = books.call("GET", "/contacts")
    clock.set(dt.datetime(2025, 3, 10, 23, 59, 59, tzinfo=dt.UTC))
    books.renew()
    still = books.call("GET", "/contacts")
    clock.set(dt.datetime(2025, 3, 11, 0, 0, 1, tzinfo=dt.UTC))
    books.renew()
    next_day = books.call("GET", "/contacts")

    assert limited.status_code == 429
    assert limited.json() == {
        "code": 45,
        "message": "The API call for this organization has exceeded the maximum call rate limit of 3.",
    }
    assert still.status_code == 429
    assert next_day.status_code == 200


def test_rate_limits_can_be_switched_off(books, sim):
    sim.set_rate_limits(False)
    for _ in range(105):
        assert books.call("GET", "/organizations").status_code == 200
    statuses = {books.call("GET", "/contacts").status_code for _ in range(105)}
    assert statuses == {200}


# -- faults ---------------------------------------------------------------------------------------


def test_server_error_fault(books, sim):
    sim.set_faults(server_error_rate=1.0)
    response = books.call("GET", "/contacts")
    assert response.status_code == 500
    assert response.json() == {"code": 1000, "message": "Internal error"}


def test_timeout_and_drop_faults_raise_requests_exceptions(books, sim):
    sim.set_faults(timeout_rate=1.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        books.call("GET", "/contacts")
    sim.set_faults(timeout_rate=0.0, drop_rate=1.0)
    with pytest.raises(requests.exceptions.ConnectionError):
        books.call("GET", "/contacts")
    assert [r.fault for r in sim.request_log][-2:] == ["timeout", "drop"]


def test_faults_before_and_after_the_write(books, sim):
    sim.set_faults(drop_rate=1.0, faults_after_write=False)
    with pytest.raises(requests.exceptions.ConnectionError):
        books.call("POST", "/contacts", json={"contact_name": "Lost before"})
    sim.set_faults(faults_after_write=True)
    with pytest.raises(requests.exceptions.ConnectionError):
        books.call("POST", "/contacts", json={"contact_name": "Lost after"})
    sim.set_faults(drop_rate=0.0)

    names = [c["contact_name"] for c in books.ok("GET", "/contacts")["contacts"]]
    assert names == ["Lost after"]


# -- webhooks -------------------------------------------------------------------------------------


class Capture:
    def __init__(self, statuses: list[int] | None = None) -> None:
        self.calls: list[tuple[str, dict[str, str], bytes]] = []
        self.statuses = statuses or []

    def __call__(self, url: str, headers: Any, body: bytes) -> int:
        self.calls.append((url, dict(headers), body))
        return self.statuses.pop(0) if self.statuses else 200


def webhook_sim(clock: Clock, capture: Capture) -> ZohoSimulator:
    sim = ZohoSimulator(real_hosts=True, clock=clock, webhook_deliver=capture)
    sim.register_client(CLIENT_ID, CLIENT_SECRET)
    return sim


def test_webhook_signature_over_sorted_params_and_raw_body(clock):
    capture = Capture()
    sim = webhook_sim(clock, capture)
    org = sim.create_organization("eu")
    sim.configure_webhook(
        org, "https://hooks.example/zoho?b=2", secret="abcdefghijkl12", extra_query={"a": "1"}
    )

    contact = sim.create_record(org, "contacts", {"contact_name": "Hooked"})

    url, headers, body = capture.calls[0]
    query = dict(pair.split("=") for pair in urlsplit(url).query.split("&"))
    assert query == {"b": "2", "a": "1", "event_type": "contact.created"}
    canonical = b"a1b2event_typecontact.created" + body
    expected = hmac.new(b"abcdefghijkl12", canonical, hashlib.sha256).hexdigest()
    assert headers["X-Zoho-Webhook-Signature"] == expected
    assert json.loads(body) == {"contact": contact}
    assert sim.webhook_log[0].delivered


def test_webhook_formats_algorithms_and_events(clock):
    capture = Capture()
    sim = webhook_sim(clock, capture)
    org = sim.create_organization("eu")
    sim.configure_webhook(
        org,
        "https://hooks.example/inv",
        secret="abcdefghijkl12",
        events=("invoice",),
        algorithm="sha512",
        encoding="base64",
        body_format="placeholder",
    )
    customer = sim.create_record(org, "contacts", {"contact_name": "C"})["contact_id"]
    invoice = sim.create_record(
        org, "invoices", {"customer_id": customer, "line_items": [{"rate": 5, "quantity": 1}]}
    )
    sim.update_record(org, "invoices", invoice["invoice_id"], {"reference_number": "X"})
    sim.delete_record(org, "invoices", invoice["invoice_id"])

    events = [parse_qs(urlsplit(url).query)["event_type"][0] for url, _, _ in capture.calls]
    assert events == ["invoice.created", "invoice.updated", "invoice.deleted"]
    _url, headers, body = capture.calls[1]
    assert json.loads(body) == {
        "event": "invoice.updated",
        "entity": "invoice",
        "entity_id": invoice["invoice_id"],
        "organization_id": org,
    }
    digest = hmac.new(
        b"abcdefghijkl12", b"event_typeinvoice.updated" + body, hashlib.sha512
    ).digest()
    assert headers["X-Zoho-Webhook-Signature"] == base64.b64encode(digest).decode()


def test_payment_webhook_payload_and_invoice_update(clock):
    capture = Capture()
    sim = webhook_sim(clock, capture)
    org = sim.create_organization("eu")
    customer = sim.create_record(org, "contacts", {"contact_name": "C"})["contact_id"]
    invoice = sim.create_record(
        org, "invoices", {"customer_id": customer, "status": "sent", "line_items": [{"rate": 5}]}
    )
    sim.configure_webhook(org, "https://hooks.example/p")

    sim.create_record(
        org,
        "customerpayments",
        {
            "customer_id": customer,
            "amount": 5,
            "invoices": [{"invoice_id": invoice["invoice_id"], "amount_applied": 5}],
        },
    )

    bodies = [json.loads(body) for _, _, body in capture.calls]
    assert set(bodies[0]) == {"customerpayment"}
    assert bodies[1]["invoice"]["status"] == "paid"
    assert "X-Zoho-Webhook-Signature" not in capture.calls[0][1]


def test_webhook_retries_and_drops(clock):
    capture = Capture(statuses=[500, 503, 200])
    sim = webhook_sim(clock, capture)
    org = sim.create_organization("eu")
    sim.configure_webhook(org, "https://hooks.example/r", events=("contact",))
    sim.create_record(org, "contacts", {"contact_name": "Retry"})
    assert sim.webhook_log[-1].attempts == 3
    assert sim.webhook_log[-1].delivered

    sim.webhooks_dropped = True
    sim.create_record(org, "contacts", {"contact_name": "Dropped"})
    assert len(capture.calls) == 3
    assert sim.webhook_log[-1].dropped

    sim.webhooks_dropped = False
    contact_id = sim.webhook_log[-1].entity_id
    sim.send_webhook(org, "contact", contact_id)
    assert len(capture.calls) == 4


def test_sign_zoho_webhook_follows_the_documented_canonical_string():
    body = b'{"created_date":"2019-03-06","event_id":"5675"}'
    params = {"subscription_id": "90343", "name": "basic"}

    assert canonical_webhook_string(params, body) == b"namebasicsubscription_id90343" + body
    assert (
        sign_zoho_webhook("secret", params, body)
        == hmac.new(b"secret", b"namebasicsubscription_id90343" + body, hashlib.sha256).hexdigest()
    )
    with pytest.raises(ValueError):
        sign_zoho_webhook("secret", params, body, algorithm="md5")


# -- the official spec accepts what a client sends ------------------------------------------------


def test_representative_requests_match_the_official_spec(books, rsps):
    contact = books.ok("POST", "/contacts", 201, json=NEW_CONTACT)["contact"]
    cid = contact["contact_id"]
    books.ok(
        "GET", "/contacts", params={"page": 1, "per_page": 200, "sort_column": "last_modified_time"}
    )
    books.ok("GET", f"/contacts/{cid}")
    books.ok("PUT", f"/contacts/{cid}", json={"contact_name": "Bowman and Co", "website": "b.test"})
    books.ok("POST", f"/contacts/{cid}/inactive")
    books.ok(
        "PUT",
        "/contacts",
        headers={"X-Unique-Identifier-Key": "cf_pipedrive_id", "X-Unique-Identifier-Value": "42"},
        json={"contact_name": "Bowman and Co"},
    )
    books.ok("POST", "/contacts/contactpersons", 201, json={"contact_id": cid, "first_name": "Zed"})
    books.ok("GET", f"/contacts/{cid}/contactpersons")
    invoice = make_invoice(books, cid)
    books.ok(
        "GET",
        "/invoices",
        params={"last_modified_time": "2025-03-10T12:00:00+0000", "per_page": 200},
    )
    books.ok("GET", f"/invoices/{invoice['invoice_id']}")
    books.ok("POST", f"/invoices/{invoice['invoice_id']}/status/sent")
    books.ok("GET", f"/invoices/{invoice['invoice_id']}/payments")
    books.ok(
        "POST",
        "/customerpayments",
        201,
        json={
            "customer_id": cid,
            "payment_mode": "cash",
            "amount": 10,
            "date": "2025-03-10",
            "invoices": [{"invoice_id": invoice["invoice_id"], "amount_applied": 10}],
        },
    )
    books.ok("GET", "/customerpayments")
    requests.get(
        f"{EU_API}/organizations",
        headers={"Authorization": f"Zoho-oauthtoken {books.token}"},
        timeout=5,
    )

    spec_for = {
        "contactpersons": "contact-persons",
        "contacts": "contacts",
        "invoices": "invoices",
        "customerpayments": "customer-payments",
        "organizations": "organizations",
    }
    checked = 0
    for call in rsps.calls:
        path = urlsplit(call.request.url).path.removeprefix("/books/v3/")
        name = spec_for["contactpersons" if "contactpersons" in path else path.split("/")[0]]
        zoho_spec(name).validate_request(RequestsOpenAPIRequest(call.request))
        checked += 1
    assert checked == 16


def test_spec_catches_a_bad_request():
    prepared = requests.Request(
        "POST",
        f"{EU_API}/invoices",
        params={"organization_id": "1"},
        headers={"Authorization": "Zoho-oauthtoken x"},
        json={"line_items": []},
    ).prepare()
    with pytest.raises(Exception, match="customer_id"):
        zoho_spec("invoices").validate_request(RequestsOpenAPIRequest(prepared))


# -- server mode ----------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[tuple[ZohoSimulator, str]]:
    sim = ZohoSimulator(webhook_async=True, faults=Faults(timeout_seconds=0.2))
    httpd, base_url = serve_in_thread(sim.app)
    sim.base_url = base_url
    try:
        yield sim, base_url
    finally:
        sim.resume_requests()
        httpd.shutdown()


def test_server_mode_end_to_end_over_http(server):
    _sim, base = server
    control = requests.Session()
    org = control.post(
        f"{base}/_sim/organizations",
        json={"dc": "in", "name": "Acme IN", "plan": "standard"},
        timeout=5,
    ).json()
    assert (
        control.post(
            f"{base}/_sim/clients",
            json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
            timeout=5,
        ).status_code
        == 201
    )
    grant = control.post(
        f"{base}/_sim/grant_codes", json={"client_id": CLIENT_ID, "dc": "in"}, timeout=5
    ).json()
    seeded = control.post(
        f"{base}/_sim/organizations/{org['organization_id']}/contacts/bulk",
        json=[{"contact_name": f"Bulk {n}"} for n in range(250)],
        timeout=5,
    ).json()

    assert grant["accounts_server"] == f"{base}/in/accounts"
    tokens = requests.post(
        f"{grant['accounts_server']}/oauth/v2/token",
        data={
            "grant_type": "authorization_code",
            "code": grant["code"],
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
        timeout=5,
    ).json()
    assert tokens["api_domain"] == f"{base}/in/api"
    response = requests.get(
        f"{tokens['api_domain']}/books/v3/contacts",
        params={"organization_id": org["organization_id"], "per_page": 200},
        headers={"Authorization": f"Zoho-oauthtoken {tokens['access_token']}"},
        timeout=5,
    )

    assert seeded["count"] == 250
    assert response.status_code == 200
    assert response.json()["page_context"]["has_more_page"] is True
    state = control.get(f"{base}/_sim/state", timeout=5).json()
    assert state["organizations"][org["organization_id"]]["contacts"] == 250
    stats = control.get(
        f"{base}/_sim/stats", params={"organization_id": org["organization_id"]}, timeout=5
    ).json()
    assert stats["total"] == 1
    assert (
        control.get(f"{base}/_sim/token_requests", timeout=5).json()["token_requests"][0]["outcome"]
        == "ok"
    )


def test_server_mode_concurrency_limit_1070(server):
    sim, base = server
    org = sim.create_organization("us", plan="free")
    sim.register_client(CLIENT_ID, CLIENT_SECRET)
    token = sim.issue_tokens(CLIENT_ID, "us")["access_token"]
    url = f"{base}/us/api/books/v3/contacts"
    headers = {"Authorization": f"Zoho-oauthtoken {token}"}
    results: list[int] = []

    def call() -> None:
        results.append(
            requests.get(
                url, params={"organization_id": org}, headers=headers, timeout=10
            ).status_code
        )

    sim.pause_requests()
    threads = [threading.Thread(target=call) for _ in range(5)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while sim.in_flight(org) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    sixth = requests.get(url, params={"organization_id": org}, headers=headers, timeout=10)
    sim.resume_requests()
    for thread in threads:
        thread.join()

    assert sixth.status_code == 429
    assert sixth.json()["code"] == 1070
    assert results == [200] * 5


def test_server_mode_drop_and_timeout_faults(server):
    sim, base = server
    org = sim.create_organization("us")
    sim.register_client(CLIENT_ID, CLIENT_SECRET)
    token = sim.issue_tokens(CLIENT_ID, "us")["access_token"]
    url = f"{base}/us/api/books/v3/contacts"
    kwargs: dict[str, Any] = {
        "params": {"organization_id": org},
        "headers": {"Authorization": f"Zoho-oauthtoken {token}"},
    }

    requests.post(f"{base}/_sim/faults", json={"drop_rate": 1.0}, timeout=5)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url, timeout=5, **kwargs)
    requests.post(f"{base}/_sim/faults", json={"drop_rate": 0.0, "timeout_rate": 1.0}, timeout=5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(url, timeout=0.05, **kwargs)
    requests.post(f"{base}/_sim/faults", json={"timeout_rate": 0.0}, timeout=5)
    assert requests.get(url, timeout=5, **kwargs).status_code == 200


def test_server_mode_webhooks_are_delivered_in_the_background(server):
    sim, base = server
    received: list[tuple[str, bytes, str]] = []
    receiver = Flask("receiver")

    @receiver.post("/hook")
    def hook() -> tuple[str, int]:
        received.append(
            (
                request.full_path,
                request.get_data(),
                request.headers.get("X-Zoho-Webhook-Signature", ""),
            )
        )
        return "", 204

    httpd, hook_base = serve_in_thread(receiver)
    try:
        org = sim.create_organization("us")
        requests.post(
            f"{base}/_sim/organizations/{org}/webhooks",
            json={"url": f"{hook_base}/hook", "secret": "abcdefghijkl12"},
            timeout=5,
        )
        created = requests.post(
            f"{base}/_sim/organizations/{org}/contacts",
            json={"contact_name": "Via control"},
            timeout=5,
        )
        assert created.status_code == 201
        assert requests.post(f"{base}/_sim/webhooks/flush", json={}, timeout=15).json()["drained"]
    finally:
        httpd.shutdown()

    assert len(received) == 1
    path, body, signature = received[0]
    assert "event_type=contact.created" in path
    assert signature == sign_zoho_webhook("abcdefghijkl12", {"event_type": "contact.created"}, body)
    log = requests.get(f"{base}/_sim/webhooks/log", timeout=5).json()["deliveries"]
    assert log[0]["delivered"] is True


def test_path_prefixed_hosts_can_be_mounted_in_process(clock):
    sim = ZohoSimulator("http://zoho.sim", clock=clock)
    sim.register_client(CLIENT_ID, CLIENT_SECRET)
    org = sim.create_organization("au")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        sim.mount(mock)
        tokens = exchange(sim, "au")
        listed = requests.get(
            f"{tokens['api_domain']}/books/v3/organizations",
            headers={"Authorization": f"Zoho-oauthtoken {tokens['access_token']}"},
            timeout=5,
        )
    assert tokens["api_domain"] == "http://zoho.sim/au/api"
    assert listed.json()["organizations"][0]["organization_id"] == org


def test_state_dump_is_secret_free(clock):
    sim = ZohoSimulator(real_hosts=True, clock=clock, webhook_deliver=Capture())
    sim.register_client(CLIENT_ID, CLIENT_SECRET)
    org = sim.create_organization("eu")
    tokens = sim.issue_tokens(CLIENT_ID, "eu")
    sim.configure_webhook(org, "https://hooks.example/x", secret="abcdefghijkl12")
    sim.seed(org, contacts=2, invoices=3)

    dump = json.dumps(sim.dump_state())

    assert sim.state_counts()["organizations"][org]["invoices"] == 3
    for secret in (
        CLIENT_SECRET,
        "abcdefghijkl12",
        tokens["refresh_token"],
        tokens["access_token"],
    ):
        assert secret not in dump
