"""Bills and vendor payments in the Zoho Books simulator: API, scopes, webhooks, control API."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses

from connector.sandbox.common import Clock
from connector.sandbox.zoho import ZohoSimulator
from connector.zoho.client import StaticTokens, ZohoBooksClient

CLIENT_ID = "1000.TESTCLIENT"
CLIENT_SECRET = "s3cret-client"
START = dt.datetime(2025, 3, 10, 12, 0, 0, tzinfo=dt.UTC)


class Capture:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], bytes]] = []

    def __call__(self, url: str, headers: Any, body: bytes) -> int:
        self.calls.append((url, dict(headers), body))
        return 200

    def events(self) -> list[tuple[str, str]]:
        result = []
        for url, _, body in self.calls:
            event = url.split("event_type=", 1)[1].split("&", 1)[0]
            entity = next(iter(json.loads(body)))
            result.append((event, entity))
        return result


@pytest.fixture
def clock() -> Clock:
    return Clock(START, frozen=True)


@pytest.fixture
def capture() -> Capture:
    return Capture()


@pytest.fixture
def sim(clock: Clock, capture: Capture) -> ZohoSimulator:
    simulator = ZohoSimulator(real_hosts=True, clock=clock, webhook_deliver=capture)
    simulator.register_client(CLIENT_ID, CLIENT_SECRET)
    return simulator


@pytest.fixture
def rsps(sim: ZohoSimulator) -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        sim.mount(mock)
        yield mock


@pytest.fixture
def org(sim: ZohoSimulator) -> str:
    return sim.create_organization("eu", "Acme EU")


def _vendor(sim: ZohoSimulator, org: str, name: str = "Paper Supplies Ltd") -> str:
    contact = sim.create_record(org, "contacts", {"contact_name": name, "contact_type": "vendor"})
    return str(contact["contact_id"])


def _bill(amount: float, vendor_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "vendor_id": vendor_id,
        "date": "2025-03-01",
        "due_date": "2025-03-31",
        "line_items": [{"name": "Paper", "rate": amount, "quantity": 2}],
        **extra,
    }


def _api(sim: ZohoSimulator, org: str, scope: str = "ZohoBooks.fullaccess.all") -> Any:
    token = sim.issue_tokens(CLIENT_ID, "eu", scope=scope)["access_token"]
    base = f"{sim.api_domain('eu')}/books/v3"

    def call(method: str, path: str, **kwargs: Any) -> requests.Response:
        params = {"organization_id": org, **kwargs.pop("params", {})}
        return requests.request(
            method,
            base + path,
            params=params,
            headers={"Authorization": f"Zoho-oauthtoken {token}"},
            timeout=5,
            **kwargs,
        )

    return call


def test_bill_crud_over_the_api(sim, rsps, org):
    call = _api(sim, org)
    vendor = _vendor(sim, org)
    created = call("POST", "/bills", json=_bill(50, vendor))
    assert created.status_code == 201, created.text
    bill = created.json()["bill"]
    assert (bill["total"], bill["balance"], bill["status"]) == (100.0, 100.0, "open")
    assert bill["vendor_name"] == "Paper Supplies Ltd"
    assert bill["bill_number"].startswith("BILL-")
    assert call("GET", f"/bills/{bill['bill_id']}").json()["bill"]["line_items"][0]["rate"] == 50

    updated = call(
        "PUT", f"/bills/{bill['bill_id']}", json={"line_items": [{"rate": 30, "quantity": 1}]}
    )
    assert updated.json()["bill"]["total"] == 30.0
    void = call("POST", f"/bills/{bill['bill_id']}/status/void")
    assert void.json()["code"] == 0
    after = call("GET", f"/bills/{bill['bill_id']}").json()["bill"]
    assert (after["status"], after["balance"]) == ("void", 0.0)
    refused = call("PUT", f"/bills/{bill['bill_id']}", json={"notes": "x"})
    assert (refused.status_code, refused.json()["code"]) == (400, 1040)

    assert call("DELETE", f"/bills/{bill['bill_id']}").json()["code"] == 0
    gone = call("GET", f"/bills/{bill['bill_id']}")
    assert (gone.status_code, gone.json()["code"]) == (404, 1002)


def test_bill_needs_a_vendor_and_line_items(sim, rsps, org):
    call = _api(sim, org)
    customer = sim.create_record(org, "contacts", {"contact_name": "A Customer"})["contact_id"]
    vendor = _vendor(sim, org)
    assert call("POST", "/bills", json={"line_items": [{"rate": 1}]}).json()["code"] == 4
    # A customer cannot be billed as a vendor.
    assert call("POST", "/bills", json=_bill(5, customer)).json()["code"] == 2
    assert call("POST", "/bills", json={"vendor_id": vendor}).json()["code"] == 4


def test_list_filters_by_vendor_status_and_modified_time_with_paging(sim, rsps, org, clock):
    first, second = _vendor(sim, org, "First Vendor"), _vendor(sim, org, "Second Vendor")
    ids = sim.bulk_create(org, "bills", [_bill(n + 1, first) for n in range(5)])
    sim.bulk_create(org, "bills", [_bill(7, second)])
    clock.advance(3600)
    sim.update_record(org, "bills", ids[0], {"status": "void"})
    call = _api(sim, org)  # after the clock moved: access tokens live an hour

    listed = call("GET", "/bills", params={"vendor_id": first, "per_page": 2})
    page = listed.json()
    assert [b["vendor_id"] for b in page["bills"]] == [first, first]
    assert page["page_context"]["has_more_page"] is True
    assert "line_items" not in page["bills"][0]
    every = []
    for number in (1, 2, 3):
        every += call(
            "GET", "/bills", params={"vendor_id": first, "per_page": 2, "page": number}
        ).json()["bills"]
    assert sorted(b["bill_id"] for b in every) == sorted(ids)
    voided = call("GET", "/bills", params={"status": "void"}).json()["bills"]
    assert [b["bill_id"] for b in voided] == [ids[0]]
    since = (START + dt.timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S+0000")
    recent = call("GET", "/bills", params={"last_modified_time": since}).json()["bills"]
    assert [b["bill_id"] for b in recent] == [ids[0]]
    assert call("GET", "/bills", params={"status": "nonsense"}).json()["code"] == 2


def test_overdue_and_vendor_payments_move_balance_and_status(sim, rsps, org, clock):
    vendor = _vendor(sim, org)
    bill = sim.create_record(org, "bills", _bill(100, vendor))
    payment = sim.create_record(
        org,
        "vendorpayments",
        {
            "vendor_id": vendor,
            "amount": 50,
            "bills": [{"bill_id": bill["bill_id"], "amount_applied": 50}],
        },
    )
    partly = sim.get_record(org, "bills", bill["bill_id"])
    assert (partly["balance"], partly["status"]) == (150.0, "partially_paid")
    call = _api(sim, org)
    read = call("GET", f"/vendorpayments/{payment['payment_id']}").json()["vendorpayment"]
    assert read["vendor_id"] == vendor
    assert read["bills"][0]["bill_id"] == bill["bill_id"]

    clock.set(dt.datetime(2025, 4, 2, tzinfo=dt.UTC))
    assert sim.get_record(org, "bills", bill["bill_id"])["status"] == "overdue"
    sim.delete_record(org, "vendorpayments", payment["payment_id"])
    assert sim.get_record(org, "bills", bill["bill_id"])["balance"] == 200.0
    sim.create_record(
        org,
        "vendorpayments",
        {
            "vendor_id": vendor,
            "amount": 200,
            "bills": [{"bill_id": bill["bill_id"], "amount_applied": 200}],
        },
    )
    assert sim.get_record(org, "bills", bill["bill_id"])["status"] == "paid"
    with pytest.raises(Exception, match="payments applied"):
        sim.delete_record(org, "bills", bill["bill_id"])


def test_bill_webhooks_carry_the_bill(sim, org, capture):
    sim.configure_webhook(
        org, "https://hooks.example/zoho", secret="abcdefghijkl12", events=("bill", "vendorpayment")
    )
    vendor = _vendor(sim, org)
    bill = sim.create_record(org, "bills", _bill(10, vendor))
    sim.update_record(org, "bills", bill["bill_id"], {"reference_number": "R-1"})
    sim.create_record(
        org,
        "vendorpayments",
        {
            "vendor_id": vendor,
            "amount": 5,
            "bills": [{"bill_id": bill["bill_id"], "amount_applied": 5}],
        },
    )
    other = sim.create_record(org, "bills", _bill(1, vendor))
    sim.delete_record(org, "bills", other["bill_id"])

    assert capture.events() == [
        ("bill.created", "bill"),
        ("bill.updated", "bill"),
        ("vendorpayment.created", "vendorpayment"),
        ("bill.updated", "bill"),
        ("bill.created", "bill"),
        ("bill.deleted", "bill"),
    ]
    body = json.loads(capture.calls[3][2])["bill"]
    assert (body["bill_id"], body["vendor_id"], body["balance"]) == (bill["bill_id"], vendor, 15.0)


def test_bills_scope_family_is_enforced(sim, rsps, org):
    vendor = _vendor(sim, org)
    sim.bulk_create(org, "bills", [_bill(1, vendor)])
    invoices_only = _api(sim, org, scope="ZohoBooks.invoices.READ")
    assert invoices_only("GET", "/bills").status_code == 401
    bills_read = _api(sim, org, scope="ZohoBooks.bills.READ")
    assert bills_read("GET", "/bills").status_code == 200
    assert bills_read("POST", "/bills", json=_bill(1, vendor)).status_code == 401


def test_zoho_client_iterates_a_vendors_bills(sim, rsps, org):
    first, second = _vendor(sim, org, "First Vendor"), _vendor(sim, org, "Second Vendor")
    ids = sim.bulk_create(org, "bills", [_bill(n + 1, first) for n in range(5)])
    sim.bulk_create(org, "bills", [_bill(9, second)])
    tokens = sim.issue_tokens(CLIENT_ID, "eu")
    client = ZohoBooksClient(
        StaticTokens(tokens["access_token"], tokens["api_domain"]),
        organization_id=org,
        api_domain=tokens["api_domain"],
    )
    listed = list(client.bills.iter(vendor_id=first, per_page=2))
    assert sorted(b["bill_id"] for b in listed) == sorted(ids)
    assert client.bills.get(ids[0])["total"] == 2.0
    assert client.stats.calls == 4  # three pages and one detail


def test_control_api_creates_reads_and_seeds_bills(sim, org):
    control = sim.app.test_client()
    vendor = _vendor(sim, org)
    created = control.post(f"/_sim/organizations/{org}/bills", json=_bill(4, vendor))
    assert created.status_code == 201
    bill_id = created.get_json()["bill_id"]
    assert control.get(f"/_sim/organizations/{org}/bills/{bill_id}").get_json()["total"] == 8.0
    voided = control.put(f"/_sim/organizations/{org}/bills/{bill_id}", json={"status": "void"})
    assert voided.get_json()["status"] == "void"
    seeded = control.post(
        f"/_sim/organizations/{org}/bills/bulk", json={"records": [_bill(1, vendor)] * 3}
    )
    assert seeded.get_json()["count"] == 3
    state = control.get("/_sim/state").get_json()
    assert state["organizations"][org]["bills"] == 4
    assert control.post(f"/_sim/organizations/{org}/bills", json={}).status_code == 400
