"""PipedriveClient against ``responses``: auth header, pagination, retries, fields, spec validity."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from openapi_core.contrib.requests import RequestsOpenAPIRequest
from responses import matchers
from responses.registries import OrderedRegistry

from connector.errors import (
    BudgetExhaustedError,
    ConfigError,
    RateLimitError,
    ServerError,
    UncertainWriteError,
    ValidationError,
)
from connector.http import RetryPolicy
from connector.pipedrive.auth import ApiTokenAuth
from connector.pipedrive.client import PipedriveClient, format_timestamp
from connector.ratelimit import Priority
from tests.specs import pipedrive_spec

TOKEN = "0123456789abcdef0123456789abcdef01234567"
BASE = "https://acme.pipedrive.com"
ORG = {
    "id": 1,
    "name": "Acme",
    "owner_id": 1,
    "update_time": "2026-01-01T00:00:00Z",
    "custom_fields": {},
}


def ok(data: object, **extra: object) -> dict[str, object]:
    return {"success": True, "data": data, **extra}


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(sleeps: Sleeps) -> PipedriveClient:
    return PipedriveClient(
        ApiTokenAuth(TOKEN),
        base_url=BASE,
        sleep=sleeps,
        retry=RetryPolicy(max_retries=3, base_delay=0.1, max_delay=4.0),
    )


def body_json(request: Any) -> Any:
    return json.loads(request.body)


def query(call) -> dict[str, list[str]]:
    return parse_qs(urlsplit(call.request.url).query)


def assert_token_only_in_header(calls) -> None:
    assert len(calls) > 0
    for call in calls:
        assert call.request.headers.get("x-api-token") == TOKEN
        assert TOKEN not in call.request.url
        assert "api_token" not in call.request.url
        assert "Authorization" not in call.request.headers


@responses.activate
def test_api_token_goes_in_the_header_and_never_in_a_url(client):
    responses.get(f"{BASE}/api/v2/organizations/1", json=ok(ORG))
    responses.get(
        f"{BASE}/api/v2/organizations", json=ok([ORG], additional_data={"next_cursor": None})
    )
    responses.get(
        f"{BASE}/api/v2/organizations/search",
        json=ok({"items": [{"result_score": 0.5, "item": {"id": 1, "name": "Acme"}}]}),
    )
    responses.post(f"{BASE}/api/v2/organizations", json=ok(ORG))
    responses.patch(f"{BASE}/api/v2/organizations/1", json=ok(ORG))
    responses.delete(f"{BASE}/api/v2/organizations/1", json=ok({"id": 1}))
    responses.get(
        f"{BASE}/v1/users/me", json=ok({"id": 7, "company_id": 99, "company_domain": "acme"})
    )
    responses.get(f"{BASE}/v1/webhooks", json=ok([]))
    client.organizations.get(1)
    list(client.organizations.iter())
    client.organizations.search("Acme")
    client.organizations.create({"name": "Acme"})
    client.organizations.update(1, {"name": "Acme"})
    client.organizations.delete(1)
    client.users.me()
    client.webhooks.list()
    assert_token_only_in_header(responses.calls)
    assert len(responses.calls) == 8
    assert TOKEN not in repr(client)
    assert TOKEN not in repr(client.auth)


@responses.activate
def test_cursor_pagination_follows_next_cursor_with_500_per_page(client):
    for cursor, next_cursor, ids in [(None, "c1", [1, 2]), ("c1", "c2", [3, 4]), ("c2", None, [5])]:
        params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
        responses.get(
            f"{BASE}/api/v2/deals",
            json=ok([{"id": i} for i in ids], additional_data={"next_cursor": next_cursor}),
            match=[matchers.query_param_matcher(params)],
        )
    deals = client.deals.iter()
    assert next(deals) == {"id": 1}
    # A generator: the second page is fetched only when the first is consumed.
    assert len(responses.calls) == 1
    assert [d["id"] for d in deals] == [2, 3, 4, 5]
    assert len(responses.calls) == 3
    assert client.stats.calls == 3
    assert client.stats.tokens == 30  # 10 per v2 list page


@responses.activate
def test_pagination_loop_guard(client):
    responses.get(
        f"{BASE}/api/v2/persons", json=ok([{"id": 1}], additional_data={"next_cursor": "same"})
    )
    with pytest.raises(ServerError, match="loop"):
        list(client.persons.iter())
    assert len(responses.calls) == 2


@responses.activate
def test_filters_of_persons_and_deals(client):
    responses.get(f"{BASE}/api/v2/persons", json=ok([], additional_data={"next_cursor": None}))
    responses.get(f"{BASE}/api/v2/deals", json=ok([], additional_data={"next_cursor": None}))
    list(client.persons.iter(org_id=5))
    list(client.deals.iter(org_id=5, status="open"))
    assert query(responses.calls[0]) == {"limit": ["500"], "org_id": ["5"]}
    assert query(responses.calls[1]) == {"limit": ["500"], "org_id": ["5"], "status": ["open"]}


@responses.activate
def test_updated_since_is_whole_seconds_utc_sorted_ascending(client):
    responses.get(
        f"{BASE}/api/v2/organizations", json=ok([], additional_data={"next_cursor": None})
    )
    since = dt.datetime(2026, 10, 7, 13, 50, 0, 987654, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    list(client.organizations.iter_updated_since(since))
    params = query(responses.calls[0])
    assert params["updated_since"] == ["2026-10-07T11:50:00Z"]
    assert params["sort_by"] == ["update_time"]
    assert params["sort_direction"] == ["asc"]
    assert params["limit"] == ["500"]


def test_format_timestamp_refuses_naive_datetimes():
    with pytest.raises(ValueError, match="aware"):
        format_timestamp(dt.datetime(2026, 1, 1))


@responses.activate(registry=OrderedRegistry)
def test_burst_429_is_retried_with_backoff(client, sleeps):
    url = f"{BASE}/api/v2/organizations/1"
    responses.get(
        url,
        status=429,
        json={"success": False, "error": "Too many"},
        headers={"x-ratelimit-reset": "1"},
    )
    responses.get(url, status=429, json={"success": False, "error": "Too many"})
    responses.get(url, json=ok(ORG))
    assert client.organizations.get(1) == ORG
    assert len(responses.calls) == 3
    assert len(sleeps.calls) == 2
    assert sleeps.calls[0] >= 1.0  # x-ratelimit-reset is a floor
    assert sleeps.calls[1] >= 2.0  # no header: the 2-second window


@responses.activate(registry=OrderedRegistry)
def test_5xx_is_retried_then_given_up(client, sleeps):
    url = f"{BASE}/api/v2/deals/1"
    for _ in range(4):
        responses.get(url, status=503, body="maintenance")
    with pytest.raises(ServerError):
        client.deals.get(1)
    assert len(responses.calls) == 4  # 1 + max_retries
    assert len(sleeps.calls) == 3


@responses.activate
def test_400_is_not_retried(client, sleeps):
    responses.post(
        f"{BASE}/api/v2/deals", status=400, json={"success": False, "error": "title is required"}
    )
    with pytest.raises(ValidationError, match="title is required"):
        client.deals.create({"value": 1})
    assert len(responses.calls) == 1
    assert sleeps.calls == []


@responses.activate
def test_budget_429_is_not_retried(client, sleeps):
    responses.get(
        f"{BASE}/api/v2/deals/1",
        status=429,
        json={"success": False, "error": "x"},
        headers={"x-daily-ratelimit-token-remaining": "0"},
    )
    with pytest.raises(BudgetExhaustedError):
        client.deals.get(1)
    assert len(responses.calls) == 1
    assert sleeps.calls == []


@responses.activate
def test_timed_out_create_is_an_uncertain_write(client, sleeps):
    responses.post(f"{BASE}/api/v2/persons", body=requests.exceptions.ReadTimeout("slow"))
    with pytest.raises(UncertainWriteError):
        client.persons.create({"name": "Jane"})
    assert len(responses.calls) == 1


@responses.activate
def test_writes_are_json_with_real_numbers(client):
    responses.patch(f"{BASE}/api/v2/deals/3", json=ok({"id": 3}))
    client.deals.update(
        3,
        {
            "value": Decimal("1200.50"),
            "custom_fields": {"k" * 40: {"value": Decimal("10"), "currency": "EUR"}},
            "is_archived": False,
        },
    )
    request = responses.calls[0].request
    assert request.headers["Content-Type"] == "application/json"
    body = body_json(request)
    assert body["value"] == 1200.5
    assert body["custom_fields"]["k" * 40] == {"value": 10, "currency": "EUR"}
    assert body["is_archived"] is False


@responses.activate
def test_search_params_and_results(client):
    responses.get(
        f"{BASE}/api/v2/persons/search",
        json=ok(
            {
                "items": [
                    {"result_score": 0.9, "item": {"id": 4, "name": "Jane", "emails": ["j@x.io"]}}
                ]
            }
        ),
    )
    found = client.persons.search("j@x.io", fields=["email"], exact_match=True)
    assert found == [{"id": 4, "name": "Jane", "emails": ["j@x.io"], "result_score": 0.9}]
    assert query(responses.calls[0]) == {
        "term": ["j@x.io"],
        "fields": ["email"],
        "exact_match": ["true"],
        "limit": ["100"],
    }
    assert client.stats.tokens == 20


@responses.activate
def test_fields_prefer_v2_and_fall_back_to_v1_on_404(client):
    responses.get(
        f"{BASE}/api/v2/dealFields",
        status=404,
        body="<html>not here</html>",
        content_type="text/html",
    )
    responses.get(
        f"{BASE}/v1/dealFields",
        json=ok(
            [
                {"key": "title", "name": "Title", "field_type": "varchar", "edit_flag": False},
                {
                    "key": "a" * 40,
                    "name": "Zoho Invoice Total",
                    "field_type": "monetary",
                    "edit_flag": True,
                },
            ],
            additional_data={
                "pagination": {"start": 0, "limit": 500, "more_items_in_collection": False}
            },
        ),
    )
    responses.post(
        f"{BASE}/v1/dealFields",
        json=ok(
            {"key": "b" * 40, "name": "Zoho Invoice Date", "field_type": "date", "edit_flag": True}
        ),
    )
    fields = client.fields.list("deal")
    assert [f["field_code"] for f in fields] == ["title", "a" * 40]
    assert fields[1]["is_custom_field"] is True
    created = client.fields.create("deal", "Zoho Invoice Date", "date")
    assert created["field_code"] == "b" * 40
    # v2 was tried once; after its 404 the client stays on v1.
    assert [str(c.request.url).split("?")[0] for c in responses.calls] == [
        f"{BASE}/api/v2/dealFields",
        f"{BASE}/v1/dealFields",
        f"{BASE}/v1/dealFields",
    ]
    assert body_json(responses.calls[2].request) == {
        "name": "Zoho Invoice Date",
        "field_type": "date",
    }


@responses.activate
def test_fields_v2_create_body(client):
    responses.post(
        f"{BASE}/api/v2/personFields",
        json=ok({"field_code": "c" * 40, "field_name": "Zoho Contact ID", "field_type": "varchar"}),
    )
    created = client.fields.create("person", "Zoho Contact ID", "varchar")
    assert created["field_code"] == "c" * 40
    assert body_json(responses.calls[0].request) == {
        "field_name": "Zoho Contact ID",
        "field_type": "varchar",
    }
    with pytest.raises(ValueError, match="entity"):
        client.fields.create("lead", "x", "varchar")


class RecordingLimiter:
    def __init__(self) -> None:
        self.acquired: list[tuple[int, bool, Priority]] = []
        self.observed: list[tuple[int, bool]] = []

    def acquire(self, cost, *, search=False, priority=Priority.SCHEDULED, max_wait=5.0):
        self.acquired.append((cost, search, priority))

    def observe(self, status, headers, *, body_is_html=False):
        self.observed.append((status, body_is_html))


@responses.activate
def test_limiter_is_asked_before_and_told_after_each_request(sleeps):
    limiter = RecordingLimiter()
    client = PipedriveClient(
        ApiTokenAuth(TOKEN), base_url=BASE, limiter=limiter, sleep=sleeps, priority=Priority.WEBHOOK
    )
    responses.get(f"{BASE}/api/v2/organizations/1", json=ok(ORG))
    responses.get(f"{BASE}/api/v2/organizations/search", json=ok({"items": []}))
    responses.get(
        f"{BASE}/v1/users/me",
        status=403,
        body="<!DOCTYPE html><html>Cloudflare</html>",
        content_type="text/html",
    )
    client.organizations.get(1)
    client.organizations.search("Acme")
    with pytest.raises(Exception, match="Cloudflare"):
        client.users.me()
    assert limiter.acquired == [
        (1, False, Priority.WEBHOOK),
        (20, True, Priority.WEBHOOK),
        (2, False, Priority.WEBHOOK),
    ]
    assert limiter.observed == [(200, False), (200, False), (403, True)]


def test_limiter_refusal_propagates_without_a_request(sleeps):
    class Refusing(RecordingLimiter):
        def acquire(self, cost, *, search=False, priority=Priority.SCHEDULED, max_wait=5.0):
            raise RateLimitError("burst", retry_after=30.0, system="pipedrive")

    client = PipedriveClient(ApiTokenAuth(TOKEN), base_url=BASE, limiter=Refusing(), sleep=sleeps)
    with responses.RequestsMock() as rsps, pytest.raises(RateLimitError):
        client.deals.get(1)
    assert len(rsps.calls) == 0


def test_no_base_url_and_no_api_domain_is_a_config_error():
    client = PipedriveClient(ApiTokenAuth(TOKEN))
    with pytest.raises(ConfigError):
        client.deals.get(1)


# Every request the client makes for org/person/deal get/list/search/create/update validates
# against the official spec (reference §7; patches listed in tests/specs.py).


@responses.activate
def test_requests_validate_against_the_official_specs(client):
    v2 = pipedrive_spec("v2")
    v1 = pipedrive_spec("v1")
    empty = ok([], additional_data={"next_cursor": None})
    for plural in ("organizations", "persons", "deals"):
        responses.get(f"{BASE}/api/v2/{plural}/7", json=ok({"id": 7}))
        responses.get(f"{BASE}/api/v2/{plural}", json=empty)
        responses.get(f"{BASE}/api/v2/{plural}/search", json=ok({"items": []}))
        responses.post(f"{BASE}/api/v2/{plural}", json=ok({"id": 7}))
        responses.patch(f"{BASE}/api/v2/{plural}/7", json=ok({"id": 7}))
        responses.delete(f"{BASE}/api/v2/{plural}/7", json=ok({"id": 7}))
    for entity in ("deal", "person", "organization"):
        responses.get(f"{BASE}/api/v2/{entity}Fields", json=empty)
        responses.post(f"{BASE}/api/v2/{entity}Fields", json=ok({"field_code": "f" * 40}))
    responses.get(f"{BASE}/v1/users/me", json=ok({"id": 1}))
    responses.get(f"{BASE}/v1/webhooks", json=ok([]))
    responses.post(f"{BASE}/v1/webhooks", json=ok({"id": 1}))
    responses.delete(f"{BASE}/v1/webhooks/1", json={"status": "ok", "success": True})

    since = dt.datetime(2026, 1, 1, 12, 0, 0, 500000, tzinfo=dt.UTC)
    custom = {"a" * 40: {"value": Decimal("12.5"), "currency": "EUR"}, "b" * 40: "INV-1"}
    bodies = {
        "organizations": {"name": "Acme", "custom_fields": custom},
        "persons": {
            "name": "Jane",
            "org_id": 7,
            "emails": [{"value": "j@x.io", "primary": True, "label": "work"}],
            "custom_fields": custom,
        },
        "deals": {
            "title": "INV-1",
            "value": Decimal("12.5"),
            "currency": "EUR",
            "org_id": 7,
            "custom_fields": custom,
        },
    }
    for plural, resource in (
        ("organizations", client.organizations),
        ("persons", client.persons),
        ("deals", client.deals),
    ):
        resource.get(7)
        list(resource.iter())
        list(resource.iter_updated_since(since))
        resource.search("Acme", fields=["title" if plural == "deals" else "name"], exact_match=True)
        resource.create(bodies[plural])
        resource.update(7, bodies[plural])
        resource.delete(7)
    list(client.persons.iter(org_id=7))
    list(client.deals.iter(org_id=7, status="open"))
    for entity in ("deal", "person", "organization"):
        client.fields.list(entity)
        client.fields.create(entity, "Zoho Invoice Total", "monetary")
    client.users.me()
    client.webhooks.list()
    client.webhooks.create(
        "https://hooks.example.com/webhooks/pipedrive/acme",
        event_action="change",
        event_object="organization",
        name="connector",
        http_auth_user="u",
        http_auth_password="p",
    )
    client.webhooks.delete(1)

    assert len(responses.calls) == 33
    for call in responses.calls:
        prepared = call.request
        spec = v2 if "/api/v2/" in str(prepared.url) else v1
        spec.validate_request(RequestsOpenAPIRequest(prepared))


def test_the_spec_validator_is_not_toothless():
    # A request the spec forbids must fail, or the test above proves nothing.
    v2 = pipedrive_spec("v2")
    bad = requests.Request(
        "PATCH",
        f"{BASE}/api/v2/organizations/7",
        json={"name": 123},
        headers={"x-api-token": TOKEN},
    ).prepare()
    with pytest.raises(Exception):  # noqa: B017 - openapi-core's own error types
        v2.validate_request(RequestsOpenAPIRequest(bad))
    fractional = requests.Request(
        "GET",
        f"{BASE}/api/v2/organizations",
        params={"limit": "abc"},
        headers={"x-api-token": TOKEN},
    ).prepare()
    with pytest.raises(Exception):  # noqa: B017
        v2.validate_request(RequestsOpenAPIRequest(fractional))
