"""The Pipedrive simulator behaves as shared/reference/pipedrive.md describes."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
from typing import Any

import pytest
import requests
import responses
from flask import Flask
from flask import request as flask_request

from connector.sandbox.common import Clock, serve_in_thread
from connector.sandbox.pipedrive import PipedriveSimulator, WebhookRequest
from connector.sandbox.pipedrive_costtable import (
    COSTS_FILE,
    build_cost_data,
    default_spec_dir,
    load_cost_table,
)
from tests.specs import pipedrive_spec

START = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)


class Receiver:
    """A synchronous webhook receiver: records requests, answers with scripted statuses."""

    def __init__(self) -> None:
        self.requests: list[WebhookRequest] = []
        self.statuses: list[int | None] = []

    def __call__(self, request: WebhookRequest) -> int | None:
        self.requests.append(request)
        return self.statuses.pop(0) if self.statuses else 200

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(request.body) for request in self.requests]


class Api:
    """A tiny client for one token on one company."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base = base
        self.headers = headers

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(
            method, self.base + path, headers=self.headers, timeout=10, **kwargs
        )

    def get(self, path: str, **params) -> requests.Response:
        return self.call("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return self.call("POST", path, json=body)

    def patch(self, path: str, body: dict[str, Any]) -> requests.Response:
        return self.call("PATCH", path, json=body)


@pytest.fixture
def clock() -> Clock:
    return Clock(START, frozen=True)


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
def sim(clock: Clock, receiver: Receiver) -> PipedriveSimulator:
    return PipedriveSimulator(clock=clock, real_hosts=True, webhook_deliver=receiver)


@pytest.fixture
def mocked(sim: PipedriveSimulator):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        sim.mount(rsps)
        yield rsps


@pytest.fixture
def acme(sim: PipedriveSimulator, mocked) -> Api:
    sim.create_company("acme", plan="premium", seats=2)
    token = sim.create_api_token("acme")
    return Api("https://acme.pipedrive.com", {"x-api-token": token})


def oauth_api(sim: PipedriveSimulator, domain: str = "acme") -> tuple[Api, dict[str, Any]]:
    sim.register_oauth_client("app", "app-secret")
    code = sim.issue_authorization_code("app", domain, "https://app.example/cb")
    basic = base64.b64encode(b"app:app-secret").decode()
    response = requests.post(
        "https://oauth.pipedrive.com/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "https://app.example/cb",
        },
        headers={"Authorization": f"Basic {basic}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    tokens = response.json()
    return Api(tokens["api_domain"], {"Authorization": f"Bearer {tokens['access_token']}"}), tokens


# --- token costs ------------------------------------------------------------------------------------


def test_cost_table_file_matches_the_specs():
    spec_dir = default_spec_dir()
    if not (spec_dir / "v1.yml").is_file() or not (spec_dir / "v2.yml").is_file():
        pytest.fail(f"Pipedrive specs missing in {spec_dir}; the shared reference must be present")
    assert json.loads(COSTS_FILE.read_text()) == build_cost_data(spec_dir)


def test_cost_table_prefers_literal_paths():
    table = load_cost_table()
    assert table.lookup("GET", "/api/v2/deals/search") == ("/deals/search", 20)
    assert table.lookup("GET", "/api/v2/deals/42") == ("/deals/{id}", 1)
    assert table.lookup("GET", "/api/v1/users/me") == ("/users/me", 2)
    assert table.cost("GET", "/v1/nothing/here") is None
    assert table.is_search("/api/v2/itemSearch")
    assert not table.is_search("/api/v2/organizations")


def test_each_operation_spends_its_spec_token_cost(sim, acme):
    costs = build_cost_data(default_spec_dir())
    v1, v2 = costs["v1"], costs["v2"]
    org = acme.post("/api/v2/organizations", {"name": "Acme"}).json()["data"]
    operations = [
        ("GET", "/api/v2/organizations", None, v2["GET /organizations"]),
        ("GET", f"/api/v2/organizations/{org['id']}", None, v2["GET /organizations/{id}"]),
        ("POST", "/api/v2/persons", {"name": "Ann Lee"}, v2["POST /persons"]),
        (
            "PATCH",
            f"/api/v2/organizations/{org['id']}",
            {"name": "Acme 2"},
            v2["PATCH /organizations/{id}"],
        ),
        ("GET", "/api/v2/organizations/search?term=acme", None, v2["GET /organizations/search"]),
        ("GET", "/api/v2/itemSearch?term=acme", None, v2["GET /itemSearch"]),
        ("POST", "/api/v2/deals", {"title": "D"}, v2["POST /deals"]),
        ("GET", "/api/v2/dealFields", None, v2["GET /dealFields"]),
        ("GET", "/v1/users/me", None, v1["GET /users/me"]),
        ("GET", "/api/v1/dealFields", None, v1["GET /dealFields"]),
        ("GET", "/v1/webhooks", None, v1["GET /webhooks"]),
        ("DELETE", f"/api/v2/organizations/{org['id']}", None, v2["DELETE /organizations/{id}"]),
    ]
    for method, path, body, expected in operations:
        before = sim.tokens_spent("acme")
        response = acme.call(method, path, json=body)
        assert response.status_code == 200, (path, response.text)
        assert sim.tokens_spent("acme") - before == expected, path
    assert sim.tokens_spent("acme") == sim.total_cost_logged("acme")


def test_failed_requests_spend_tokens_unless_configured_off(sim, acme):
    before = sim.tokens_spent("acme")
    assert acme.get("/api/v2/organizations/999").status_code == 404
    assert sim.tokens_spent("acme") == before + 1
    sim.configure(charge_failed_requests=False)
    assert acme.get("/api/v2/organizations/999").status_code == 404
    assert sim.tokens_spent("acme") == before + 1


# --- daily budget ---------------------------------------------------------------------------------


def test_default_budget_follows_plan_and_seats(sim):
    assert sim.create_company("a1", plan="lite").budget.limit == 30_000
    assert sim.create_company("a2", plan="growth", seats=5).budget.limit == 300_000
    assert sim.create_company("a3", plan="ultimate", seats=2).budget.limit == 420_000
    assert sim.create_company("a4", plan="premium", daily_budget=77).budget.limit == 77


def test_budget_exhaustion_answers_429_without_applying_and_resets_at_local_midnight(
    sim, clock, mocked
):
    clock.set(dt.datetime(2026, 3, 2, 22, 30, tzinfo=dt.UTC))  # 23:30 in Berlin
    sim.create_company("berlin", plan="lite", timezone="Europe/Berlin", daily_budget=12)
    api = Api("https://berlin.pipedrive.com", {"x-api-token": sim.create_api_token("berlin")})
    assert api.post("/api/v2/organizations", {"name": "One"}).status_code == 200
    assert api.post("/api/v2/organizations", {"name": "Two"}).status_code == 200
    refused = api.post("/api/v2/organizations", {"name": "Three"})
    assert refused.status_code == 429
    assert refused.json() == {
        "success": False,
        "error": "Rate limit has been exceeded",
        "error_info": refused.json()["error_info"],
        "data": None,
        "additional_data": None,
    }
    assert refused.headers["x-daily-ratelimit-token-remaining"] == "2"
    assert [r["name"] for r in sim.records("berlin", "organizations")] == ["One", "Two"]
    assert sim.tokens_spent("berlin") == 10
    assert sim.budget_reset_at("berlin") == dt.datetime(2026, 3, 2, 23, 0, tzinfo=dt.UTC)
    clock.advance(29 * 60)  # 23:59 Berlin
    assert api.post("/api/v2/organizations", {"name": "Three"}).status_code == 429
    clock.advance(61)  # 00:00:01 Berlin
    assert api.post("/api/v2/organizations", {"name": "Three"}).status_code == 200
    assert sim.tokens_spent("berlin") == 5
    assert sim.count_429("berlin") == 2


# --- burst limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "kind", "limit"),
    [
        ("lite", "api", 20),
        ("growth", "api", 40),
        ("premium", "api", 100),
        ("ultimate", "api", 120),
        ("lite", "oauth", 80),
        ("ultimate", "oauth", 480),
    ],
)
def test_burst_limit_per_token_by_plan_and_auth(sim, clock, mocked, plan, kind, limit):
    sim.create_company("acme", plan=plan)
    if kind == "api":
        api = Api("https://acme.pipedrive.com", {"x-api-token": sim.create_api_token("acme")})
    else:
        api, _ = oauth_api(sim)
    statuses = [api.get("/v1/users/me").status_code for _ in range(limit + 3)]
    assert statuses.count(200) == limit
    assert statuses[limit:] == [429, 429, 429]
    clock.advance(2.0)
    assert api.get("/v1/users/me").status_code == 200
    assert sim.max_requests_in_any_window("acme") == limit


def test_burst_windows_are_per_token(sim, clock, mocked):
    sim.create_company("acme", plan="lite", seats=2)
    users = list(sim.company("acme").users)
    first = Api(
        "https://acme.pipedrive.com", {"x-api-token": sim.create_api_token("acme", users[0])}
    )
    second_token = sim.create_api_token("acme", users[1])
    second = Api("https://acme.pipedrive.com", {"x-api-token": second_token})
    assert [first.get("/v1/users/me").status_code for _ in range(21)].count(429) == 1
    assert all(second.get("/v1/users/me").status_code == 200 for _ in range(20))
    assert sim.max_requests_in_any_window("acme", token=second_token) == 20
    assert sim.max_requests_in_any_window("acme") == 40


def test_rolling_window_frees_slots_as_requests_age(sim, clock, mocked):
    sim.create_company("acme", plan="lite")
    api = Api("https://acme.pipedrive.com", {"x-api-token": sim.create_api_token("acme")})
    for _ in range(10):
        assert api.get("/v1/users/me").status_code == 200
    clock.advance(1.5)
    for _ in range(10):
        assert api.get("/v1/users/me").status_code == 200
    refused = api.get("/v1/users/me")
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-reset"] == "1"
    clock.advance(0.6)  # the first ten are now older than 2 s
    assert api.get("/v1/users/me").status_code == 200
    assert sim.max_requests_in_any_window("acme") == 20


def test_search_has_its_own_ten_per_two_seconds(sim, clock, acme):
    statuses = [acme.get("/api/v2/persons/search", term="ann").status_code for _ in range(11)]
    assert statuses == [200] * 10 + [429]
    assert acme.get("/api/v2/persons").status_code == 200
    assert acme.get("/api/v2/itemSearch", term="ann").status_code == 429
    clock.advance(2.0)
    assert acme.get("/api/v2/itemSearch", term="ann").status_code == 200
    assert sim.max_requests_in_any_window("acme", search=True) == 10


def test_rate_limit_headers_present_and_switchable(sim, acme):
    response = acme.get("/api/v2/organizations")
    assert response.headers["x-ratelimit-limit"] == "100"
    assert response.headers["x-ratelimit-remaining"] == "99"
    assert int(response.headers["x-ratelimit-reset"]) >= 1
    assert response.headers["x-daily-ratelimit-token-limit"] == "300000"
    assert response.headers["x-daily-ratelimit-token-remaining"] == str(300_000 - 10)
    sim.configure(headers_enabled=False)
    bare = acme.get("/api/v2/organizations")
    assert bare.status_code == 200
    assert not [name for name in bare.headers if name.lower().startswith("x-")]


def test_api_token_ignoring_429s_gets_cloudflare_html_403(sim, clock, mocked):
    sim.create_company("acme", plan="lite")
    sim.set_limits("acme", burst_limit=1)
    api = Api("https://acme.pipedrive.com", {"x-api-token": sim.create_api_token("acme")})
    assert api.get("/v1/users/me").status_code == 200
    assert [api.get("/v1/users/me").status_code for _ in range(10)] == [429] * 10
    blocked = api.get("/v1/users/me")
    assert blocked.status_code == 403
    assert blocked.headers["Content-Type"].startswith("text/html")
    assert "This error is produced by Cloudflare. See troubleshooting guide here." in blocked.text
    clock.advance(30)
    assert api.get("/v1/users/me").status_code == 403
    clock.advance(31)
    assert api.get("/v1/users/me").status_code == 200
    assert sim.count_403_blocked("acme") == 2


def test_storm_answers_429_regardless_of_budget(sim, acme):
    sim.configure(storm_rate=1.0)
    assert acme.get("/api/v2/organizations").status_code == 429
    sim.configure(storm_rate=0.0)
    assert acme.get("/api/v2/organizations").status_code == 200


# --- auth -----------------------------------------------------------------------------------------


def test_invalid_token_is_401_and_api_host_resolves_company(sim, acme):
    bad = Api("https://acme.pipedrive.com", {"x-api-token": "nope"}).get("/api/v2/deals")
    assert bad.status_code == 401
    assert bad.json() == {"success": False, "error": "unauthorized access", "errorCode": 401}
    via_api_host = Api("https://api.pipedrive.com", acme.headers).get("/v1/users/me")
    assert via_api_host.json()["data"]["company_domain"] == "acme"
    sim.create_company("other")
    wrong_company = Api("https://other.pipedrive.com", acme.headers).get("/v1/users/me")
    assert wrong_company.status_code == 401


def test_query_api_token_refused_on_v2_and_configurable_on_v1(sim, acme):
    token = acme.headers["x-api-token"]
    assert requests.get(f"{acme.base}/api/v2/deals?api_token={token}", timeout=5).status_code == 401
    assert requests.get(f"{acme.base}/v1/users/me?api_token={token}", timeout=5).status_code == 200
    sim.configure(v1_query_token=False)
    assert requests.get(f"{acme.base}/v1/users/me?api_token={token}", timeout=5).status_code == 401


def test_oauth_code_exchange_refresh_and_expiry(sim, clock, mocked):
    sim.create_company("acme")
    api, tokens = oauth_api(sim)
    assert tokens["expires_in"] == 3599
    assert tokens["api_domain"] == "https://acme.pipedrive.com"
    assert tokens["token_type"] == "Bearer"
    assert api.get("/v1/users/me").status_code == 200
    basic = {"Authorization": "Basic " + base64.b64encode(b"app:app-secret").decode()}
    clock.advance(3600)
    assert api.get("/v1/users/me").status_code == 401
    refreshed = requests.post(
        "https://oauth.pipedrive.com/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=basic,
        timeout=5,
    ).json()
    assert refreshed["refresh_token"] == tokens["refresh_token"]  # no rotation by default
    assert sim.oauth_refresh_count[tokens["refresh_token"]] == 1
    fresh = Api(refreshed["api_domain"], {"Authorization": f"Bearer {refreshed['access_token']}"})
    assert fresh.get("/v1/users/me").status_code == 200
    wrong_secret = {"Authorization": "Basic " + base64.b64encode(b"app:bad").decode()}
    denied = requests.post(
        "https://oauth.pipedrive.com/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=wrong_secret,
        timeout=5,
    )
    assert denied.status_code == 401


def test_authorization_code_is_single_use_and_expires(sim, clock, mocked):
    sim.create_company("acme")
    sim.register_oauth_client("app", "s")
    basic = {"Authorization": "Basic " + base64.b64encode(b"app:s").decode()}

    def exchange(code: str) -> requests.Response:
        return requests.post(
            "https://oauth.pipedrive.com/oauth/token",
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": "https://x/cb"},
            headers=basic,
            timeout=5,
        )

    code = sim.issue_authorization_code("app", "acme", "https://x/cb")
    assert exchange(code).status_code == 200
    assert exchange(code).status_code == 400
    late = sim.issue_authorization_code("app", "acme", "https://x/cb")
    clock.advance(301)
    assert "expired" in exchange(late).json()["message"]


def test_refresh_token_rotation_is_configurable(sim, mocked):
    sim.create_company("acme")
    sim.configure(rotate_refresh_tokens=True)
    _, tokens = oauth_api(sim)
    basic = {"Authorization": "Basic " + base64.b64encode(b"app:app-secret").decode()}

    def refresh(value: str) -> requests.Response:
        return requests.post(
            "https://oauth.pipedrive.com/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": value},
            headers=basic,
            timeout=5,
        )

    rotated = refresh(tokens["refresh_token"]).json()["refresh_token"]
    assert rotated != tokens["refresh_token"]
    assert refresh(tokens["refresh_token"]).status_code == 400
    assert refresh(rotated).status_code == 200


# --- entities, pagination, strictness ------------------------------------------------------------


def test_cursor_pagination_through_many_pages(sim, acme):
    sim.seed("acme", "organizations", [{"name": f"Org {n}"} for n in range(1234)])
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        body = acme.get("/api/v2/organizations", **params).json()
        seen.extend(item["id"] for item in body["data"])
        pages += 1
        cursor = body["additional_data"]["next_cursor"]
        if cursor is None:
            break
    assert pages == 13
    assert seen == list(range(1, 1235))
    assert acme.get("/api/v2/organizations", limit=501).status_code == 400
    assert acme.get("/api/v2/organizations", cursor="not-a-cursor!").status_code == 400


def test_sort_by_update_time_desc_pages_consistently(sim, acme):
    stamps = ["2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z", "2026-01-02T00:00:00Z"] * 5
    sim.seed("acme", "deals", [{"title": f"D{i}", "update_time": s} for i, s in enumerate(stamps)])
    ids: list[int] = []
    cursor = None
    while True:
        params = {"sort_by": "update_time", "sort_direction": "desc", "limit": 4}
        body = acme.get("/api/v2/deals", **params, **({"cursor": cursor} if cursor else {})).json()
        ids.extend(item["id"] for item in body["data"])
        cursor = body["additional_data"]["next_cursor"]
        if not cursor:
            break
    times = [sim.get_record("acme", "deal", i)["update_time"] for i in ids]
    assert len(ids) == 15
    assert len(set(ids)) == 15
    assert times == sorted(times, reverse=True)


def test_updated_since_is_inclusive_and_until_exclusive(sim, acme):
    sim.seed(
        "acme",
        "persons",
        [
            {"name": "Old", "update_time": "2026-01-01T10:00:00Z"},
            {"name": "Edge", "update_time": "2026-01-01T11:00:00Z"},
            {"name": "New", "update_time": "2026-01-01T12:00:00Z"},
        ],
    )
    since = acme.get("/api/v2/persons", updated_since="2026-01-01T11:00:00Z").json()["data"]
    assert [p["name"] for p in since] == ["Edge", "New"]
    until = acme.get("/api/v2/persons", updated_until="2026-01-01T11:00:00Z").json()["data"]
    assert [p["name"] for p in until] == ["Old"]
    offset = acme.get("/api/v2/persons", updated_since="2026-01-01T13:00:00+02:00").json()["data"]
    assert [p["name"] for p in offset] == ["Edge", "New"]
    assert acme.get("/api/v2/persons", updated_since="2026-01-01T11:00:00.000Z").status_code == 400
    sim.configure(reject_fractional_seconds=False)
    assert acme.get("/api/v2/persons", updated_since="2026-01-01T11:00:00.000Z").status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v2/deals", {"title": "D", "value": "100"}),
        ("/api/v2/deals", {"title": "D", "is_archived": "true"}),
        ("/api/v2/deals", {"title": "D", "status": "closed"}),
        ("/api/v2/deals", {"value": 5}),
        ("/api/v2/organizations", {"name": 123}),
        ("/api/v2/organizations", {"name": "A", "visible_to": "3"}),
        ("/api/v2/organizations", {"title": "wrong key"}),
        ("/api/v2/persons", {"emails": [{"value": "a@b.c"}]}),
        ("/api/v2/persons", {"name": "P", "org_id": 999}),
        ("/api/v2/persons", {"name": "P", "emails": [{"value": "x@y.z", "primary": 1}]}),
    ],
)
def test_v2_strictness_rejects_and_applies_nothing(sim, acme, path, body):
    response = acme.post(path, body)
    assert response.status_code == 400
    assert response.json()["success"] is False
    assert sim.write_count("acme") == 0
    assert sim.records("acme", path.rsplit("/", 1)[1]) == []


def test_crud_shapes_and_soft_delete(sim, clock, acme):
    org = acme.post(
        "/api/v2/organizations", {"name": "Acme", "address": {"value": "Main 1"}}
    ).json()["data"]
    assert org["address"]["value"] == "Main 1"
    assert org["address"]["locality"] is None
    assert org["update_time"] == "2026-03-02T12:00:00Z"
    clock.advance(5)
    patched = acme.patch(f"/api/v2/organizations/{org['id']}", {"name": "Acme Ltd"}).json()["data"]
    assert patched["update_time"] == "2026-03-02T12:00:05Z"
    assert patched["add_time"] == "2026-03-02T12:00:00Z"
    deleted = acme.call("DELETE", f"/api/v2/organizations/{org['id']}")
    assert deleted.json() == {"success": True, "data": {"id": org["id"]}}
    assert acme.get(f"/api/v2/organizations/{org['id']}").json()["data"]["is_deleted"] is True
    assert acme.get("/api/v2/organizations").json()["data"] == []
    assert acme.patch(f"/api/v2/organizations/{org['id']}", {"name": "X"}).status_code == 404
    assert sim.write_count("acme") == 3


def test_noop_patch_changes_nothing(sim, clock, acme, receiver):
    subscribe(acme)
    org = acme.post("/api/v2/organizations", {"name": "Acme"}).json()["data"]
    clock.advance(60)
    again = acme.patch(f"/api/v2/organizations/{org['id']}", {"name": "Acme"}).json()["data"]
    assert again["update_time"] == org["update_time"]
    assert [p["meta"]["action"] for p in receiver.payloads()] == ["create"]


def test_persons_emails_labels_and_primary(sim, acme):
    person = acme.post(
        "/api/v2/persons",
        {
            "name": "Ann Lee",
            "emails": [
                {"value": "ann@work.example"},
                {"value": "ann@home.example", "label": "home"},
            ],
            "phones": [
                {"value": "+372 555", "primary": False},
                {"value": "+372 777", "primary": True},
            ],
        },
    ).json()["data"]
    assert person["first_name"] == "Ann"
    assert person["last_name"] == "Lee"
    assert person["emails"] == [
        {"value": "ann@work.example", "primary": True, "label": "work"},
        {"value": "ann@home.example", "primary": False, "label": "home"},
    ]
    assert [p["primary"] for p in person["phones"]] == [False, True]
    two_primaries = acme.post(
        "/api/v2/persons",
        {
            "name": "Bo",
            "emails": [{"value": "a@x.y", "primary": True}, {"value": "b@x.y", "primary": True}],
        },
    )
    assert two_primaries.status_code == 400
    # The v2 write schema has no first/last name: a body with only those is refused, as a
    # spec-following server does ("name" is required, the others are unknown).
    by_parts = acme.post("/api/v2/persons", {"first_name": "Cy", "last_name": "Doe"})
    assert by_parts.status_code == 400
    named = acme.post("/api/v2/persons", {"name": "Cy Doe"}).json()["data"]
    assert (named["first_name"], named["last_name"]) == ("Cy", "Doe")


def test_deal_defaults_status_and_filters(sim, clock, acme):
    org = acme.post("/api/v2/organizations", {"name": "Acme"}).json()["data"]
    deal = acme.post(
        "/api/v2/deals", {"title": "Big", "value": 1200.5, "currency": "EUR", "org_id": org["id"]}
    ).json()["data"]
    assert (deal["pipeline_id"], deal["stage_id"], deal["status"]) == (1, 1, "open")
    assert deal["won_time"] is None
    won = acme.patch(f"/api/v2/deals/{deal['id']}", {"status": "won"}).json()["data"]
    assert won["won_time"] == "2026-03-02T12:00:00Z"
    acme.post("/api/v2/deals", {"title": "Other"})
    assert [d["title"] for d in acme.get("/api/v2/deals", org_id=org["id"]).json()["data"]] == [
        "Big"
    ]
    assert [d["title"] for d in acme.get("/api/v2/deals", status="open").json()["data"]] == [
        "Other"
    ]
    acme.call("DELETE", f"/api/v2/deals/{deal['id']}")
    assert [d["title"] for d in acme.get("/api/v2/deals", status="deleted").json()["data"]] == [
        "Big"
    ]
    assert [d["title"] for d in acme.get("/api/v2/deals").json()["data"]] == ["Other"]


# --- custom fields ----------------------------------------------------------------------------------


def test_custom_fields_via_v1_and_v2_endpoints(sim, acme):
    v1 = acme.post("/v1/organizationFields", {"name": "Zoho ID", "field_type": "varchar"}).json()[
        "data"
    ]
    assert len(v1["key"]) == 40
    assert v1["edit_flag"] is True
    v2 = acme.post(
        "/api/v2/organizationFields",
        {
            "field_name": "Tier",
            "field_type": "enum",
            "options": [{"label": "Gold"}, {"label": "Silver"}],
        },
    ).json()["data"]
    assert len(v2["field_code"]) == 40
    assert v2["is_custom_field"] is True
    gold = v2["options"][0]["id"]
    listed = acme.get("/v1/organizationFields").json()
    assert {"name", "owner_id"} <= {row["key"] for row in listed["data"]}
    builtin = next(row for row in listed["data"] if row["key"] == "name")
    assert builtin["edit_flag"] is False
    assert listed["additional_data"]["pagination"]["more_items_in_collection"] is False
    v2_list = acme.get("/api/v2/organizationFields").json()["data"]
    assert {f["field_name"] for f in v2_list if f["is_custom_field"]} == {"Zoho ID", "Tier"}
    org = acme.post(
        "/api/v2/organizations",
        {"name": "Acme", "custom_fields": {v1["key"]: "Z-17", v2["field_code"]: gold}},
    ).json()["data"]
    assert org["custom_fields"] == {v1["key"]: "Z-17", v2["field_code"]: gold}
    assert (
        acme.patch(
            f"/api/v2/organizations/{org['id']}", {"custom_fields": {v2["field_code"]: 999}}
        ).status_code
        == 400
    )
    only = acme.get("/api/v2/organizations", custom_fields=v1["key"]).json()["data"][0]
    assert only["custom_fields"] == {v1["key"]: "Z-17"}
    found = acme.get("/api/v2/organizations/search", term="Z-17", fields="custom_fields").json()
    assert [item["item"]["id"] for item in found["data"]["items"]] == [org["id"]]


def test_custom_field_keys_differ_per_company(sim, acme):
    sim.create_company("globex")
    a = sim.create_custom_field("acme", "deal", "Invoice", "varchar")["key"]
    b = sim.create_custom_field("globex", "deal", "Invoice", "varchar")["key"]
    assert a != b
    assert sim.custom_field_key("acme", "deals", "Invoice") == a


def test_unknown_custom_field_key_is_rejected(sim, acme):
    response = acme.post("/api/v2/deals", {"title": "D", "custom_fields": {"0" * 40: "x"}})
    assert response.status_code == 400
    assert "does not exist" in response.json()["error"]


def test_custom_field_limit_per_plan(sim, mocked):
    sim.create_company("small", plan="lite")
    api = Api("https://small.pipedrive.com", {"x-api-token": sim.create_api_token("small")})
    for n in range(30):
        sim.create_custom_field("small", "person" if n % 2 else "deal", f"F{n}", "varchar")
    refused = api.post("/v1/dealFields", {"name": "One too many", "field_type": "varchar"})
    assert refused.status_code == 403
    assert refused.json()["code"] == "feature_capping_custom_fields_limit"


def test_deal_monetary_field(sim, acme, receiver):
    key = acme.post("/v1/dealFields", {"name": "Invoice total", "field_type": "monetary"}).json()[
        "data"
    ]["key"]
    rows = acme.get("/v1/dealFields").json()["data"]
    assert any(row["key"] == f"{key}_currency" and row.get("is_subfield") for row in rows)
    good = acme.post(
        "/api/v2/deals", {"title": "D", "custom_fields": {key: {"value": 2300, "currency": "EUR"}}}
    )
    assert good.json()["data"]["custom_fields"][key] == {"value": 2300, "currency": "EUR"}
    assert (
        acme.post("/api/v2/deals", {"title": "D", "custom_fields": {key: "2300"}}).status_code
        == 400
    )
    assert (
        acme.post(
            "/api/v2/deals", {"title": "D", "custom_fields": {key: {"value": "2300"}}}
        ).status_code
        == 400
    )


def test_set_field_cannot_be_cleared_with_empty_list(sim, acme):
    field = sim.create_custom_field("acme", "person", "Tags", "set", ["A", "B"])
    ids = [option["id"] for option in field["options"]]
    person = acme.post(
        "/api/v2/persons", {"name": "P", "custom_fields": {field["key"]: ids}}
    ).json()["data"]
    path = f"/api/v2/persons/{person['id']}"
    assert acme.patch(path, {"custom_fields": {field["key"]: []}}).status_code == 400
    cleared = acme.patch(path, {"custom_fields": {field["key"]: None}}).json()["data"]
    assert cleared["custom_fields"][field["key"]] is None


# --- search -----------------------------------------------------------------------------------------


def test_search_shapes_and_exact_match(sim, acme):
    org = acme.post("/api/v2/organizations", {"name": "Acme Corp"}).json()["data"]
    acme.post(
        "/api/v2/persons",
        {
            "name": "Jane Doe",
            "org_id": org["id"],
            "emails": [{"value": "jane@acme.example"}],
            "phones": [{"value": "+372 555"}],
        },
    )
    items = acme.get("/api/v2/persons/search", term="jane@acme.example", fields="email").json()[
        "data"
    ]["items"]
    assert len(items) == 1
    item = items[0]["item"]
    assert item["emails"] == ["jane@acme.example"]
    assert item["phones"] == ["+372 555"]
    assert item["organization"] == {"id": org["id"], "name": "Acme Corp", "address": None}
    assert items[0]["result_score"] > 0
    assert (
        acme.get("/api/v2/organizations/search", term="Acme", exact_match="true").json()["data"][
            "items"
        ]
        == []
    )
    assert (
        len(
            acme.get("/api/v2/organizations/search", term="acme corp", exact_match="true").json()[
                "data"
            ]["items"]
        )
        == 1
    )
    assert acme.get("/api/v2/organizations/search", term="a").status_code == 400
    assert acme.get("/api/v2/itemSearch", term="acme", limit=101).status_code == 400
    assert acme.get("/api/v2/organizations/search", term="acme", limit=500).status_code == 200


# --- webhooks ---------------------------------------------------------------------------------------


def subscribe(api: Api, **extra: Any) -> dict[str, Any]:
    body = {
        "subscription_url": "https://hooks.example/pipedrive",
        "event_action": "*",
        "event_object": "*",
        "name": "sync",
        "http_auth_user": "hook",
        "http_auth_password": "s3cret",
        **extra,
    }
    response = api.post("/v1/webhooks", body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def test_webhook_api_validation_and_limit(sim, acme):
    hook = subscribe(acme)
    assert hook["version"] == "2.0"
    assert (
        acme.post(
            "/v1/webhooks",
            {
                "subscription_url": "https://x.example",
                "event_action": "updated",
                "event_object": "deal",
                "name": "n",
            },
        ).status_code
        == 400
    )
    assert (
        acme.post(
            "/v1/webhooks",
            {"subscription_url": "https://x.example", "event_action": "*", "event_object": "deal"},
        ).status_code
        == 400
    )
    assert [h["id"] for h in acme.get("/v1/webhooks").json()["data"]] == [hook["id"]]
    for _ in range(39):
        subscribe(acme)
    assert (
        acme.post(
            "/v1/webhooks",
            {
                "subscription_url": "https://x.example",
                "event_action": "*",
                "event_object": "*",
                "name": "n",
            },
        ).status_code
        == 422
    )
    assert acme.call("DELETE", f"/v1/webhooks/{hook['id']}").json() == {
        "status": "ok",
        "success": True,
    }
    assert acme.call("DELETE", f"/v1/webhooks/{hook['id']}").status_code == 404


def test_webhooks_delivered_with_basic_auth_and_v2_shape(sim, clock, acme, receiver):
    hook = subscribe(acme, event_object="organization")
    key = sim.create_custom_field("acme", "organization", "Score", "double")["key"]
    org = acme.post(
        "/api/v2/organizations", {"name": "Sample Org", "custom_fields": {key: 978}}
    ).json()["data"]
    clock.advance(10)
    acme.patch(
        f"/api/v2/organizations/{org['id']}", {"name": "Renamed", "custom_fields": {key: None}}
    )
    acme.post("/api/v2/persons", {"name": "Not an org"})
    created, changed = receiver.payloads()
    expected_auth = "Basic " + base64.b64encode(b"hook:s3cret").decode()
    assert all(r.headers["Authorization"] == expected_auth for r in receiver.requests)
    assert created["previous"] is None
    assert created["data"]["custom_fields"][key] == {"type": "double", "value": 978}
    assert created["data"]["visible_to"] == "3"
    meta = changed["meta"]
    assert meta["action"] == "change"
    assert meta["entity"] == "organization"
    assert meta["entity_id"] == str(org["id"])
    assert meta["webhook_id"] == str(hook["id"])
    assert meta["company_id"] == str(sim.company("acme").id)
    assert meta["change_source"] == "api"
    assert meta["attempt"] == 1
    assert meta["version"] == "2.0"
    assert meta["host"] == "acme.pipedrive.com"
    assert isinstance(meta["user_id"], str)
    assert len(meta["id"]) == 36
    assert changed["previous"] == {
        "name": "Sample Org",
        "custom_fields": {key: {"type": "double", "value": 978}},
    }
    assert changed["data"]["name"] == "Renamed"
    assert changed["data"]["custom_fields"][key] is None
    acme.call("DELETE", f"/api/v2/organizations/{org['id']}")
    deleted = receiver.payloads()[-1]
    assert deleted["data"] is None
    assert deleted["previous"]["name"] == "Renamed"
    assert sim.webhook_log[-1]["outcome"] == "delivered"


def test_webhook_retries_then_ban(sim, clock, acme, receiver):
    subscribe(acme, event_object="deal")
    receiver.statuses = [500, None, 503, 200]
    acme.post("/api/v2/deals", {"title": "D"})
    assert len(receiver.requests) == 1
    clock.advance(2.9)
    sim.run_webhooks()
    assert len(receiver.requests) == 1
    clock.advance(0.1)
    sim.run_webhooks()
    clock.advance(30)
    sim.run_webhooks()
    clock.advance(150)
    sim.run_webhooks()
    attempts = [p["meta"]["attempt"] for p in receiver.payloads()]
    assert attempts == [1, 2, 3, 4]
    assert len({p["meta"]["id"] for p in receiver.payloads()}) == 1
    assert [entry["outcome"] for entry in sim.webhook_log] == [
        "failed",
        "failed",
        "failed",
        "delivered",
    ]

    receiver.requests.clear()
    receiver.statuses = [500] * 10
    for n in range(10):
        acme.post("/api/v2/deals", {"title": f"F{n}"})
    assert len(receiver.requests) == 10
    acme.post("/api/v2/deals", {"title": "lost while banned"})
    clock.advance(200)
    sim.run_webhooks()
    assert len(receiver.requests) == 10  # banned: no retries, no new deliveries
    assert sim.webhook_log[-1]["outcome"] in ("banned", "failed")
    assert any(entry["outcome"] == "banned" for entry in sim.webhook_log)
    clock.advance(1800)
    acme.post("/api/v2/deals", {"title": "after the ban"})
    assert receiver.payloads()[-1]["data"]["title"] == "after the ban"


def test_webhook_retry_factor_zero_retries_immediately(clock):
    receiver = Receiver()
    receiver.statuses = [500, 500, 500, 500]
    sim = PipedriveSimulator(
        clock=clock, real_hosts=True, webhook_deliver=receiver, webhook_retry_factor=0
    )
    sim.create_company("acme")
    api = Api("https://acme.pipedrive.com", {"x-api-token": sim.create_api_token("acme")})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        sim.mount(rsps)
        subscribe(api)
        api.post("/api/v2/organizations", {"name": "A"})
    assert [p["meta"]["attempt"] for p in receiver.payloads()] == [1, 2, 3, 4]
    assert sim.webhooks.pending() == 0


def test_webhooks_can_be_dropped_and_v1_payloads(sim, acme, receiver):
    subscribe(acme, version="1.0", event_action="change", event_object="person")
    person = acme.post("/api/v2/persons", {"name": "Ann", "emails": [{"value": "a@x.y"}]}).json()[
        "data"
    ]
    acme.patch(f"/api/v2/persons/{person['id']}", {"name": "Ann B"})
    (payload,) = receiver.payloads()
    assert payload["event"] == "updated.person"
    assert payload["meta"]["action"] == "updated"
    assert payload["current"]["name"] == "Ann B"
    assert payload["previous"]["name"] == "Ann"
    assert payload["current"]["email"][0]["value"] == "a@x.y"
    assert payload["retry"] == 0
    sim.webhooks.enabled = False
    acme.patch(f"/api/v2/persons/{person['id']}", {"name": "Ann C"})
    assert len(receiver.requests) == 1
    assert sim.webhook_log[-1]["outcome"] == "dropped"


def test_app_user_changes_say_change_source_app(sim, acme, receiver):
    subscribe(acme)
    org = sim.app_create("acme", "organization", {"name": "From the UI"})
    sim.app_update("acme", "organization", org["id"], {"name": "Edited in the UI"})
    assert [p["meta"]["change_source"] for p in receiver.payloads()] == ["app", "app"]
    assert sim.tokens_spent("acme") == 10  # the subscription only; app actions are free
    assert sim.write_count("acme") == 1


def test_merge_via_api_and_events(sim, acme, receiver):
    subscribe(acme)
    survivor = acme.post("/api/v2/organizations", {"name": "Acme"}).json()["data"]
    merged = acme.post("/api/v2/organizations", {"name": "ACME Inc"}).json()["data"]
    person = acme.post("/api/v2/persons", {"name": "Ann", "org_id": merged["id"]}).json()["data"]
    receiver.requests.clear()
    before = sim.tokens_spent("acme")
    response = acme.call(
        "PUT", f"/v1/organizations/{merged['id']}/merge", json={"merge_with_id": survivor["id"]}
    )
    assert response.json() == {"success": True, "data": {"id": survivor["id"]}}
    assert sim.tokens_spent("acme") - before == 40
    deleted, changed = receiver.payloads()
    assert deleted["meta"]["action"] == "delete"
    assert deleted["meta"]["merged_to_id"] == str(survivor["id"])
    assert deleted["meta"]["entity_id"] == str(merged["id"])
    assert changed["meta"]["action"] == "change"
    assert changed["meta"]["merged_from_id"] == str(merged["id"])
    assert sim.get_record("acme", "organization", merged["id"])["is_deleted"] is True
    assert sim.merged_to_id("acme", "organization", merged["id"]) == survivor["id"]
    assert sim.get_record("acme", "organization", survivor["id"])["name"] == "Acme"
    assert sim.get_record("acme", "person", person["id"])["org_id"] == survivor["id"]


def test_person_merge_in_app(sim, acme, receiver):
    subscribe(acme, event_object="person")
    a = sim.app_create("acme", "person", {"name": "Ann", "emails": [{"value": "a@x.y"}]})
    b = sim.app_create("acme", "person", {"name": "Ann L", "emails": [{"value": "b@x.y"}]})
    sim.app_merge("acme", "person", b["id"], a["id"])
    survivor = sim.get_record("acme", "person", a["id"])
    assert [e["value"] for e in survivor["emails"]] == ["a@x.y", "b@x.y"]
    assert [p["meta"]["action"] for p in receiver.payloads()[-2:]] == ["delete", "change"]


# --- faults -----------------------------------------------------------------------------------------


def test_faults_raise_requests_exceptions_in_process(sim, acme):
    sim.faults.configure(timeout_rate=1.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        acme.get("/api/v2/deals")
    sim.faults.configure(timeout_rate=0.0, drop_rate=1.0)
    with pytest.raises(requests.exceptions.ConnectionError):
        acme.get("/api/v2/deals")
    sim.faults.configure(drop_rate=0.0, server_error_rate=1.0)
    failed = acme.post("/api/v2/deals", {"title": "D"})
    assert failed.status_code == 500
    assert failed.json()["success"] is False
    assert sim.records("acme", "deals") == []


def test_fault_after_write_applies_the_write(sim, acme):
    sim.configure(faults_after_write=True)
    sim.faults.configure(timeout_rate=1.0, only_paths="/deals")
    with pytest.raises(requests.exceptions.ReadTimeout):
        acme.post("/api/v2/deals", {"title": "Applied anyway"})
    assert [d["title"] for d in sim.records("acme", "deals")] == ["Applied anyway"]
    assert sim.write_count("acme") == 1
    assert acme.get("/v1/users/me").status_code == 200  # only_paths spares other paths


# --- spec conformance ---------------------------------------------------------------------------


def test_accepted_writes_validate_against_the_spec(sim, acme):
    from openapi_core.contrib.requests import RequestsOpenAPIRequest

    spec = pipedrive_spec("v2")
    key = sim.create_custom_field("acme", "deal", "Total", "monetary")["key"]
    bodies = [
        (
            "POST",
            "/api/v2/organizations",
            {"name": "Acme", "address": {"value": "Main 1"}, "visible_to": 3},
        ),
        ("PATCH", "/api/v2/organizations/1", {"name": "Acme Ltd", "label_ids": [1]}),
        (
            "POST",
            "/api/v2/persons",
            {
                "name": "Ann",
                "org_id": 1,
                "emails": [{"value": "a@x.y", "label": "work", "primary": True}],
            },
        ),
        (
            "PATCH",
            "/api/v2/persons/1",
            {"phones": [{"value": "+372 5"}], "marketing_status": "subscribed"},
        ),
        (
            "POST",
            "/api/v2/deals",
            {
                "title": "D",
                "value": 10.5,
                "currency": "EUR",
                "person_id": 1,
                "org_id": 1,
                "custom_fields": {key: {"value": 2300, "currency": "EUR"}},
            },
        ),
        ("PATCH", "/api/v2/deals/1", {"status": "won", "won_time": "2026-03-02T12:00:00Z"}),
    ]
    for method, path, body in bodies:
        prepared = requests.Request(
            method, acme.base + path, json=body, headers=acme.headers
        ).prepare()
        spec.validate_request(RequestsOpenAPIRequest(prepared))
        response = acme.call(method, path, json=body)
        assert response.status_code == 200, (path, response.text)


def test_list_request_validates_against_the_spec(acme):
    from openapi_core.contrib.requests import RequestsOpenAPIRequest

    spec = pipedrive_spec("v2")
    url = (
        acme.base
        + "/api/v2/organizations?updated_since=2026-01-01T00:00:00Z&sort_by=update_time&limit=500"
    )
    prepared = requests.Request("GET", url, headers=acme.headers).prepare()
    spec.validate_request(RequestsOpenAPIRequest(prepared))
    assert acme.call("GET", url.removeprefix(acme.base)).status_code == 200


# --- server mode ------------------------------------------------------------------------------------


@pytest.fixture
def hook_server():
    received: list[tuple[dict[str, Any], str | None]] = []
    app = Flask("hooks")

    @app.post("/hook")
    def hook():
        received.append((flask_request.get_json(), flask_request.headers.get("Authorization")))
        return "", 200

    server, url = serve_in_thread(app)
    yield url, received
    server.shutdown()


def test_server_mode_over_real_http(hook_server):
    hook_url, received = hook_server
    sim = PipedriveSimulator(webhook_retry_factor=0.001)
    server, base = sim.start_server()
    try:
        company = requests.post(
            f"{base}/_sim/companies", json={"company_domain": "acme", "plan": "lite"}, timeout=5
        ).json()
        assert company["api_base"] == f"{base}/c/acme"
        token = requests.post(f"{base}/_sim/companies/acme/api_tokens", json={}, timeout=5).json()[
            "api_token"
        ]
        api = Api(company["api_base"], {"x-api-token": token})
        me = api.get("/v1/users/me")
        assert me.json()["data"]["company_domain"] == "acme"
        assert me.headers["x-ratelimit-limit"] == "20"
        subscribe(api, subscription_url=f"{hook_url}/hook")
        requests.post(
            f"{base}/_sim/companies/acme/seed",
            json={"organizations": [{"name": f"O{n}"} for n in range(250)]},
            timeout=5,
        )
        page = api.get("/api/v2/organizations", limit=200).json()
        assert len(page["data"]) == 200
        assert page["additional_data"]["next_cursor"]
        requests.patch(
            f"{base}/_sim/companies/acme/app/organizations/1", json={"name": "Via app"}, timeout=5
        )
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        payload, auth = received[0]
        assert payload["meta"]["change_source"] == "app"
        assert payload["data"]["name"] == "Via app"
        assert auth == "Basic " + base64.b64encode(b"hook:s3cret").decode()
        stats = requests.get(f"{base}/_sim/companies/acme/stats", timeout=5).json()
        assert stats["tokens_spent"] == 2 + 10 + 10
        assert stats["writes"] == 1
        requests.post(
            f"{base}/_sim/faults", json={"drop_rate": 1.0, "only_paths": "/deals"}, timeout=5
        )
        with pytest.raises(requests.exceptions.ConnectionError):
            api.get("/api/v2/deals")
        requests.post(f"{base}/_sim/faults", json={"drop_rate": 0.0}, timeout=5)
        assert api.get("/api/v2/deals").status_code == 200
        requests.post(f"{base}/_sim/clock", json={"advance": 86400}, timeout=5)
        assert (
            requests.get(f"{base}/_sim/companies/acme/stats", timeout=5).json()["tokens_spent"] == 0
        )
        state = requests.get(f"{base}/_sim/state", timeout=5).json()
        assert len(state["companies"]["acme"]["records"]["organizations"]) == 250
    finally:
        sim.close()
        server.shutdown()


def test_server_mode_oauth_api_domain(hook_server):
    sim = PipedriveSimulator()
    server, base = sim.start_server()
    try:
        sim.create_company("acme")
        sim.register_oauth_client("app", "secret")
        redirect = requests.get(
            f"{sim.oauth_base()}/oauth/authorize",
            params={"client_id": "app", "redirect_uri": "http://app.example/cb", "state": "xyz"},
            allow_redirects=False,
            timeout=5,
        )
        assert redirect.status_code == 302
        location = redirect.headers["Location"]
        assert "state=xyz" in location
        code = location.split("code=")[1].split("&")[0]
        tokens = requests.post(
            f"{base}/oauth/token",
            data={"grant_type": "authorization_code", "code": code},
            auth=("app", "secret"),
            timeout=5,
        ).json()
        assert tokens["api_domain"] == f"{base}/c/acme"
        me = requests.get(
            f"{tokens['api_domain']}/v1/users/me",
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
            timeout=5,
        )
        assert me.headers["x-ratelimit-limit"] == "160"
    finally:
        sim.close()
        server.shutdown()


def test_concurrent_requests_are_counted_exactly(clock):
    local = PipedriveSimulator(clock=clock, real_hosts=True, webhook_deliver=Receiver())
    local.create_company("acme", plan="lite")
    api = Api("https://acme.pipedrive.com", {"x-api-token": local.create_api_token("acme")})
    statuses: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            status = api.get("/v1/users/me").status_code
            with lock:
                statuses.append(status)

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        local.mount(rsps)
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    # The clock is frozen, so all 40 land in one window: exactly the lite limit gets through,
    # ten 429s follow, and then the token is blocked.
    assert sorted(statuses) == [200] * 20 + [403] * 10 + [429] * 10
    assert local.max_requests_in_any_window("acme") == 20
    assert local.tokens_spent("acme") == 2 * 20
    assert local.count_429("acme") == 10
