"""Recorded API responses served to the real clients: what they parse must match what was recorded.

Each recorded Zoho request is served at its recorded path for its recorded ``page``/``per_page``/
``organization_id`` only, so a client that asks for anything else (another node, another page, no
organization) fails against the recording. Expected values are read from the recording itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import responses
from responses import matchers

from connector.http import RetryPolicy
from connector.mapping.config import SyncConfig
from connector.mapping.contacts import pipedrive_org_to_zoho_contact
from connector.mapping.invoices import invoice_snapshot
from connector.pipedrive.auth import ApiTokenAuth
from connector.pipedrive.client import PipedriveClient
from connector.zoho.client import StaticTokens, ZohoBooksClient
from connector.zoho.times import parse_zoho_time
from tests.conformance.recordings import Recording, params, require

ZOHO_API = "https://www.zohoapis.com"
PIPEDRIVE_BASE = "https://recorded.pipedrive.com"
_MATCHED_PARAMS = ("organization_id", "page", "per_page")


def _zoho_client(organization_id: str) -> ZohoBooksClient:
    return ZohoBooksClient(
        StaticTokens("1000.recorded-token"),
        organization_id=organization_id,
        api_domain=ZOHO_API,
        sleep=lambda _s: None,
        retry=RetryPolicy(max_retries=0),
    )


def _serve_zoho(rsps: responses.RequestsMock, recorded: list[dict[str, Any]]) -> None:
    for entry in recorded:
        wanted = {
            k: v for k, v in (entry.get("request_params") or {}).items() if k in _MATCHED_PARAMS
        }
        rsps.get(
            f"{ZOHO_API}{entry['path']}",
            json=entry["response"],
            status=entry["status"],
            match=[matchers.query_param_matcher(wanted, strict_match=False)],
        )


def _pages_until_the_last(recorded: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pages a frugal client reads: up to the first one that says there is no more."""
    pages = []
    for entry in sorted(recorded, key=lambda e: int(e["request_params"].get("page", 1))):
        pages.append(entry)
        if not entry["response"].get("page_context", {}).get("has_more_page"):
            break
    return pages


def _organization_id(recorded: list[dict[str, Any]]) -> str:
    # The discovery call has none; the client still needs one for every other call.
    return str(recorded[0].get("request_params", {}).get("organization_id") or "not-sent")


# Zoho: one check per recorded path ------------------------------------------------------------

ZohoCheck = Callable[[ZohoBooksClient, list[dict[str, Any]]], None]


def _check_list(
    node: str, read: Callable[[ZohoBooksClient, int], Iterator[dict[str, Any]]], key: str
) -> ZohoCheck:
    def check(client: ZohoBooksClient, recorded: list[dict[str, Any]]) -> None:
        pages = _pages_until_the_last(recorded)
        per_page = int(pages[0]["request_params"].get("per_page", 200))
        expected = [item for page in pages for item in page["response"][node]]
        items = list(read(client, per_page))
        assert [i[key] for i in items] == [e[key] for e in expected]
        assert items, "a recording of an empty list proves nothing about parsing"
        for item, raw in zip(items, expected, strict=True):
            _check_zoho_item(node, item, raw)

    return check


def _check_zoho_item(node: str, item: dict[str, Any], raw: dict[str, Any]) -> None:
    if node == "invoices":
        snapshot = invoice_snapshot(item)
        assert snapshot.total == Decimal(str(raw["total"]))
        assert snapshot.balance == Decimal(str(raw["balance"]))
        assert snapshot.last_modified_time == parse_zoho_time(raw["last_modified_time"])
    if node == "customerpayments":
        assert Decimal(str(item["amount"])) == Decimal(str(raw["amount"]))
        assert item["customer_id"] == raw["customer_id"]
    if node == "contacts":
        assert parse_zoho_time(item["last_modified_time"]).tzinfo is not None


def _check_detail(
    node: str, get: Callable[[ZohoBooksClient, str], dict[str, Any]], key: str
) -> ZohoCheck:
    def check(client: ZohoBooksClient, recorded: list[dict[str, Any]]) -> None:
        (entry,) = recorded
        record_id = entry["path"].rstrip("/").rsplit("/", 1)[1]
        record = get(client, record_id)
        assert record[key] == record_id == str(entry["response"][node][key])
        _check_zoho_item(f"{node}s", record, entry["response"][node])

    return check


def _check_organizations(client: ZohoBooksClient, recorded: list[dict[str, Any]]) -> None:
    (entry,) = recorded
    # The discovery call: the one Zoho call sent without organization_id.
    assert "organization_id" not in (entry.get("request_params") or {})
    with responses.RequestsMock() as rsps:
        rsps.get(f"{ZOHO_API}{entry['path']}", json=entry["response"])
        organizations = client.organizations.list()
        assert "organization_id" not in (rsps.calls[0].request.url or "")
    expected = entry["response"]["organizations"]
    assert [o["organization_id"] for o in organizations] == [e["organization_id"] for e in expected]


ZOHO_PATHS: dict[str, ZohoCheck] = {
    "/books/v3/contacts": _check_list(
        "contacts", lambda c, n: c.contacts.iter(per_page=n), "contact_id"
    ),
    "/books/v3/invoices": _check_list(
        "invoices", lambda c, n: c.invoices.iter(per_page=n), "invoice_id"
    ),
    "/books/v3/customerpayments": _check_list(
        "customerpayments", lambda c, n: c.payments.iter(per_page=n), "payment_id"
    ),
    "/books/v3/contacts/{id}": _check_detail(
        "contact", lambda c, i: c.contacts.get(i), "contact_id"
    ),
    "/books/v3/invoices/{id}": _check_detail(
        "invoice", lambda c, i: c.invoices.get(i), "invoice_id"
    ),
    "/books/v3/organizations": _check_organizations,
}


def _route(path: str) -> str:
    parts = path.rstrip("/").split("/")
    if len(parts) == 5 and parts[4].isdigit():
        return "/".join([*parts[:4], "{id}"])
    return path


@pytest.mark.parametrize("recording", params("zoho", webhooks=False))
def test_zoho_recording_is_read_as_recorded(recording: Recording | None) -> None:
    recording = require(recording)
    recorded = recording.json()["recorded"]
    route = _route(recorded[0]["path"])
    check = ZOHO_PATHS.get(route)
    assert check, f"{recording.name}: no conformance check for GET {route}; add one"
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        _serve_zoho(rsps, recorded)
        check(_zoho_client(_organization_id(recorded)), recorded)
        for call in rsps.calls:
            assert call.request.headers["Authorization"] == "Zoho-oauthtoken 1000.recorded-token"


# Pipedrive: docs examples, the first page recorded, the next one empty --------------------------


def _pipedrive_client() -> PipedriveClient:
    return PipedriveClient(
        ApiTokenAuth("recorded-api-token-0000000000000000000000"),
        base_url=PIPEDRIVE_BASE,
        sleep=lambda _s: None,
        retry=RetryPolicy(max_retries=0),
    )


def _check_pipedrive_list(entity: str) -> Callable[[dict[str, Any]], None]:
    def check(response: dict[str, Any]) -> None:
        cursor = response["additional_data"]["next_cursor"]
        url = f"{PIPEDRIVE_BASE}/api/v2/{entity}s"
        empty = {"success": True, "data": [], "additional_data": {"next_cursor": None}}
        with responses.RequestsMock() as rsps:
            rsps.get(
                url,
                json=empty,
                match=[matchers.query_param_matcher({"cursor": cursor}, strict_match=False)],
            )
            rsps.get(url, json=response)
            items = list(getattr(_pipedrive_client(), f"{entity}s").iter())
            assert len(rsps.calls) == 2, "the cursor of the first page was not followed"
        assert [i["id"] for i in items] == [r["id"] for r in response["data"]]
        if entity == "organization":
            for item in items:
                body = pipedrive_org_to_zoho_contact(item, SyncConfig(), {})
                assert body["contact_name"] == item["name"]

    return check


def _check_pipedrive_fields_v1(response: dict[str, Any]) -> None:
    with responses.RequestsMock() as rsps:
        rsps.get(f"{PIPEDRIVE_BASE}/api/v2/organizationFields", status=404, json={"success": False})
        rsps.get(f"{PIPEDRIVE_BASE}/v1/organizationFields", json=response)
        fields = _pipedrive_client().fields.list("organization")
    assert [f["field_code"] for f in fields] == [r["key"] for r in response["data"]]
    assert [f["field_name"] for f in fields] == [r["name"] for r in response["data"]]


PIPEDRIVE_KINDS: dict[str, Callable[[dict[str, Any]], None]] = {
    "pipedrive_organizations_list": _check_pipedrive_list("organization"),
    "pipedrive_persons_list": _check_pipedrive_list("person"),
    "pipedrive_deals_list": _check_pipedrive_list("deal"),
    "pipedrive_fields_v1": _check_pipedrive_fields_v1,
}


@pytest.mark.parametrize("recording", params("pipedrive", webhooks=False))
def test_pipedrive_recording_is_read_as_recorded(recording: Recording | None) -> None:
    recording = require(recording)
    check = PIPEDRIVE_KINDS.get(recording.kind)
    assert check, f"{recording.name}: no conformance check for kind {recording.kind!r}; add one"
    check(recording.json()["response"])
