"""The Books client: URLs, organization_id, headers, paging, retries and the 401 repair."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from responses import registries

from connector.errors import InvalidTokenError, PermissionDeniedError, ServerError, ValidationError
from connector.http import RetryPolicy
from connector.zoho.client import StaticTokens, ZohoBooksClient, format_zoho_time, parse_zoho_time

API = "https://www.zohoapis.eu"
BASE = f"{API}/books/v3"
ORG = "20001234"


class Tokens:
    """A token source that hands out a new token on invalidate."""

    def __init__(self) -> None:
        self.token = "1000.first"
        self.invalidated: list[str] = []
        self.api_domain: str | None = None

    def get_access_token(self):
        return self.token

    def invalidate(self, rejected):
        self.invalidated.append(rejected)
        self.token = "1000.second"
        return self.token

    def current_api_domain(self):
        return self.api_domain


def _client(tokens: Any = None, **kwargs: Any) -> ZohoBooksClient:
    kwargs.setdefault("retry", RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05))
    return ZohoBooksClient(
        tokens or Tokens(), organization_id=ORG, api_domain=API, sleep=lambda _s: None, **kwargs
    )


def _query(call: Any) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(call.request.url).query).items()}


def _page(node: str, start: int, count: int, more: bool) -> dict[str, Any]:
    return {
        "code": 0,
        "message": "success",
        node: [{"contact_id": str(i)} for i in range(start, start + count)],
        "page_context": {"page": 1, "per_page": 200, "has_more_page": more},
    }


def test_paging_1050_contacts_is_six_pages_streamed(rsps):
    def callback(request):
        page = int(_query(type("C", (), {"request": request}))["page"])
        start = (page - 1) * 200
        count = min(200, 1050 - start)
        return 200, {}, json.dumps(_page("contacts", start, count, start + count < 1050))

    rsps.add_callback(responses.GET, f"{BASE}/contacts", callback=callback)
    client = _client()
    iterator = client.contacts.iter(contact_type="customer")
    first = next(iterator)
    assert first == {"contact_id": "0"}
    assert len(rsps.calls) == 1  # a generator: one page fetched so far
    ids = [first["contact_id"], *(c["contact_id"] for c in iterator)]
    assert len(ids) == 1050 == len(set(ids))
    assert len(rsps.calls) == 6
    pages = [_query(c) for c in rsps.calls]
    assert [p["page"] for p in pages] == ["1", "2", "3", "4", "5", "6"]
    assert all(p["per_page"] == "200" and p["contact_type"] == "customer" for p in pages)


def test_every_call_but_get_organizations_carries_organization_id(rsps):
    ok = {"code": 0, "message": "success"}
    rsps.add(responses.GET, f"{BASE}/organizations", json={**ok, "organizations": []})
    rsps.add(responses.GET, f"{BASE}/organizations/{ORG}", json={**ok, "organization": {}})
    rsps.add(
        responses.GET,
        f"{BASE}/contacts",
        json={**ok, "contacts": [], "page_context": {"has_more_page": False}},
    )
    rsps.add(responses.GET, f"{BASE}/contacts/5", json={**ok, "contact": {"contact_id": "5"}})
    rsps.add(
        responses.POST, f"{BASE}/contacts", json={**ok, "contact": {"contact_id": "6"}}, status=201
    )
    rsps.add(responses.PUT, f"{BASE}/contacts/5", json={**ok, "contact": {"contact_id": "5"}})
    rsps.add(responses.PUT, f"{BASE}/contacts", json={**ok, "contact": {"contact_id": "7"}})
    rsps.add(responses.POST, f"{BASE}/contacts/5/active", json=ok)
    rsps.add(responses.POST, f"{BASE}/contacts/5/inactive", json=ok)
    rsps.add(
        responses.GET,
        f"{BASE}/contacts/5/contactpersons",
        json={**ok, "contact_persons": [{"contact_person_id": "9"}]},
    )
    rsps.add(
        responses.GET,
        f"{BASE}/contacts/5/contactpersons/9",
        json={**ok, "contact_person": {"contact_person_id": "9"}},
    )
    rsps.add(
        responses.POST,
        f"{BASE}/contacts/contactpersons",
        json={**ok, "contact_person": [{"contact_person_id": "9"}]},
    )
    rsps.add(
        responses.PUT,
        f"{BASE}/contacts/contactpersons/9",
        json={**ok, "contact_person": {"contact_person_id": "9"}},
    )
    rsps.add(responses.DELETE, f"{BASE}/contacts/contactpersons/9", json=ok)
    rsps.add(responses.POST, f"{BASE}/contacts/contactpersons/9/primary", json=ok)
    rsps.add(
        responses.GET,
        f"{BASE}/invoices",
        json={**ok, "invoices": [{"invoice_id": "3"}], "page_context": {"has_more_page": False}},
    )
    rsps.add(responses.GET, f"{BASE}/invoices/3", json={**ok, "invoice": {"invoice_id": "3"}})
    rsps.add(
        responses.GET, f"{BASE}/invoices/3/payments", json={**ok, "payments": [{"payment_id": "4"}]}
    )
    rsps.add(
        responses.GET,
        f"{BASE}/customerpayments",
        json={**ok, "customerpayments": [], "page_context": {"has_more_page": False}},
    )
    rsps.add(
        responses.GET, f"{BASE}/customerpayments/4", json={**ok, "payment": {"payment_id": "4"}}
    )

    c = _client()
    assert c.organizations.list() == []
    c.organizations.get(ORG)
    list(c.contacts.iter())
    assert c.contacts.get("5")["contact_id"] == "5"
    assert c.contacts.create({"contact_name": "Bowman"})["contact_id"] == "6"
    c.contacts.update("5", {"website": "x"})
    assert (
        c.contacts.upsert_by_custom_field("pipedrive_org", "42", {"contact_name": "B"})[
            "contact_id"
        ]
        == "7"
    )
    c.contacts.mark_active("5")
    c.contacts.mark_inactive("5")
    assert c.contact_persons.list("5") == [{"contact_person_id": "9"}]
    c.contact_persons.get("5", "9")
    assert c.contact_persons.create({"contact_id": "5", "first_name": "W"}) == {
        "contact_person_id": "9"
    }
    c.contact_persons.update("9", {"first_name": "W"})
    c.contact_persons.delete("9")
    c.contact_persons.mark_primary("9")
    assert [i["invoice_id"] for i in c.invoices.iter()] == ["3"]
    c.invoices.get("3")
    assert c.invoices.payments("3") == [{"payment_id": "4"}]
    list(c.payments.iter())
    c.payments.get("4")

    assert len(rsps.calls) == 20
    for call in rsps.calls:
        request = call.request
        path = urlsplit(request.url).path
        assert request.url.startswith(f"{BASE}/")
        assert request.headers["Authorization"] == "Zoho-oauthtoken 1000.first"
        assert "1000.first" not in request.url
        if request.method == "GET" and path == "/books/v3/organizations":
            assert "organization_id" not in _query(call)
        else:
            assert _query(call)["organization_id"] == ORG, request.url
        if request.body:
            assert request.headers["Content-Type"] == "application/json"
            json.loads(request.body)


def test_upsert_sends_the_unique_key_headers(rsps):
    rsps.add(responses.PUT, f"{BASE}/contacts", json={"code": 0, "contact": {"contact_id": "1"}})
    _client().contacts.upsert_by_custom_field("cf_pd_id", "42", {"contact_name": "B"})
    headers = rsps.calls[0].request.headers
    assert headers["X-Unique-Identifier-Key"] == "cf_pd_id"
    assert headers["X-Unique-Identifier-Value"] == "42"
    assert headers["X-Upsert"] == "true"


def test_last_modified_time_is_formatted_with_an_encoded_plus(rsps):
    rsps.add(
        responses.GET,
        f"{BASE}/invoices",
        json={"code": 0, "invoices": [], "page_context": {"has_more_page": False}},
    )
    since = dt.datetime(2023, 11, 18, 2, 2, 51, tzinfo=dt.timezone(dt.timedelta(hours=-8)))
    list(_client().invoices.iter(last_modified_since=since, status="sent"))
    url = rsps.calls[0].request.url
    assert "last_modified_time=2023-11-18T10%3A02%3A51%2B0000" in url
    assert _query(rsps.calls[0])["last_modified_time"] == "2023-11-18T10:02:51+0000"


def test_zoho_time_helpers():
    parsed = parse_zoho_time("2016-06-11T17:38:06-0700")
    assert parsed == dt.datetime(2016, 6, 12, 0, 38, 6, tzinfo=dt.UTC)
    assert parse_zoho_time("2013-08-05T12:06:10+0530").utcoffset() == dt.timedelta(
        hours=5, minutes=30
    )
    assert format_zoho_time(parsed) == "2016-06-12T00:38:06+0000"
    with pytest.raises(ValueError):
        parse_zoho_time("2016-06-11 17:38")
    with pytest.raises(ValueError):
        format_zoho_time(dt.datetime(2020, 1, 1))


def test_retries_503_twice_then_succeeds():
    with responses.RequestsMock(registry=registries.OrderedRegistry) as mock:
        url = f"{BASE}/contacts/1"
        mock.add(responses.GET, url, json={"code": 1000, "message": "x"}, status=503)
        mock.add(responses.GET, url, json={"code": 1000, "message": "x"}, status=503)
        mock.add(responses.GET, url, json={"code": 0, "contact": {"contact_id": "1"}}, status=200)
        assert _client().contacts.get("1") == {"contact_id": "1"}
        assert len(mock.calls) == 3


def test_does_not_retry_a_400(rsps):
    rsps.add(
        responses.GET,
        f"{BASE}/contacts/1",
        json={"code": 1038, "message": "JSON is not well formed"},
        status=400,
    )
    with pytest.raises(ValidationError):
        _client().contacts.get("1")
    assert len(rsps.calls) == 1


def test_gives_up_after_the_retry_budget(rsps):
    rsps.add(responses.GET, f"{BASE}/contacts/1", json={"code": 1000}, status=500)
    with pytest.raises(ServerError):
        _client().contacts.get("1")
    assert len(rsps.calls) == 4  # first try + 3 retries


def test_a_401_refreshes_once_and_retries_once(rsps):
    def callback(request):
        if request.headers["Authorization"] == "Zoho-oauthtoken 1000.second":
            return 200, {}, json.dumps({"code": 0, "contact": {"contact_id": "1"}})
        return (
            401,
            {},
            json.dumps({"code": 57, "message": "You are not authorized to perform this operation"}),
        )

    rsps.add_callback(responses.GET, f"{BASE}/contacts/1", callback=callback)
    tokens = Tokens()
    assert _client(tokens).contacts.get("1") == {"contact_id": "1"}
    assert tokens.invalidated == ["1000.first"]
    assert len(rsps.calls) == 2


def test_a_401_with_a_fresh_token_is_a_missing_scope(rsps):
    rsps.add(
        responses.GET,
        f"{BASE}/contacts/1",
        json={"code": 57, "message": "not authorized"},
        status=401,
    )
    tokens = Tokens()
    with pytest.raises(PermissionDeniedError) as info:
        _client(tokens).contacts.get("1")
    assert not isinstance(info.value, InvalidTokenError)
    assert "scope" in str(info.value)
    assert len(rsps.calls) == 2
    assert len(tokens.invalidated) == 1


def test_api_domain_follows_the_token(rsps):
    rsps.add(
        responses.GET,
        "https://www.zohoapis.in/books/v3/contacts/1",
        json={"code": 0, "contact": {}},
    )
    tokens = Tokens()
    client = _client(tokens)
    assert client.base_url == BASE
    tokens.api_domain = "https://www.zohoapis.in"
    client.contacts.get("1")
    assert rsps.calls[0].request.url.startswith("https://www.zohoapis.in/books/v3/contacts/1?")


def test_ids_cannot_change_the_path(rsps):
    rsps.add(responses.GET, f"{BASE}/contacts/..%2Finvoices", json={"code": 0, "contact": {}})
    _client().contacts.get("../invoices")
    assert "/contacts/..%2Finvoices?" in rsps.calls[0].request.url


class FakeLimiter:
    def __init__(self) -> None:
        self.acquired = 0
        self.released = 0
        self.observed: list[tuple[int, int | None]] = []

    def acquire(self, *, max_wait=5.0):
        limiter = self

        class Permit:
            def __enter__(self):
                limiter.acquired += 1
                return self

            def __exit__(self, *exc):
                limiter.released += 1

        return Permit()

    def observe(self, status, code):
        self.observed.append((status, code))


def test_limiter_slot_per_attempt_and_429_codes_observed():
    limiter = FakeLimiter()
    with responses.RequestsMock(registry=registries.OrderedRegistry) as mock:
        url = f"{BASE}/contacts/1"
        mock.add(responses.GET, url, json={"code": 1070, "message": "busy"}, status=429)
        mock.add(responses.GET, url, json={"code": 0, "contact": {}}, status=200)
        _client(limiter=limiter).contacts.get("1")
    assert limiter.acquired == limiter.released == 2
    assert limiter.observed == [(429, 1070)]


def test_the_real_limiter_is_accepted(rsps, fake_redis):
    from connector.zoho.limiter import ZohoLimiter

    rsps.add(responses.GET, f"{BASE}/contacts/1", json={"code": 0, "contact": {}})
    limiter = ZohoLimiter(fake_redis, org_key=ORG)
    _client(limiter=limiter).contacts.get("1")
    assert limiter.spent_today() == 1
    assert limiter.in_flight() == 0


def test_contradictory_or_missing_settings_are_refused():
    from connector.errors import ConfigError

    with pytest.raises(ConfigError):
        ZohoBooksClient(StaticTokens("t"), organization_id="", api_domain=API)
    with pytest.raises(ConfigError):
        ZohoBooksClient(StaticTokens("t"), organization_id="1", api_domain="")


def test_payments_are_read_from_the_customerpayments_node(rsps):
    # Regression (issue 13 item 2): the OAS names the node customer_payments, live Zoho answers
    # customerpayments (shared/recordings/zoho_api/customerpayments_list.json); reading the
    # spec's name made every payment invisible.
    rsps.add(
        responses.GET,
        f"{BASE}/customerpayments",
        json={
            "code": 0,
            "message": "success",
            "customerpayments": [{"payment_id": "1", "amount": 598}, {"payment_id": "2"}],
            "page_context": {"page": 1, "per_page": 200, "has_more_page": False},
        },
    )
    assert [p["payment_id"] for p in _client().payments.iter()] == ["1", "2"]


def test_a_list_answer_without_its_node_fails_loudly(rsps):
    # A renamed node must not read as "no records": that is how payments went invisible.
    rsps.add(
        responses.GET,
        f"{BASE}/contacts",
        json={"code": 0, "message": "success", "items": [], "page_context": {}},
    )
    with pytest.raises(ServerError, match="'contacts'"):
        list(_client().contacts.iter())
