"""Sample records in the real API shapes, shared by the mapping tests."""

from __future__ import annotations

import copy
from typing import Any

ORG_KEYS = {
    "Zoho Contact ID": "a" * 40,
    "Zoho Currency": "b" * 40,
    "Zoho Payment Terms": "c" * 40,
    "Zoho Status": "d" * 40,
    "Website": "e" * 40,
    "VAT ID": "f" * 40,
    "Region": "9" * 40,
}
PERSON_KEYS = {
    "Zoho Contact ID": "1" * 40,
    "Zoho Status": "2" * 40,
    "Job Title": "3" * 40,
}
DEAL_KEYS = {
    "Zoho Invoice Total": "t" * 40,
    "Zoho Invoice Balance": "u" * 40,
    "Zoho Invoice Date": "v" * 40,
    "Zoho Invoice Due Date": "w" * 40,
    "Zoho Invoice Status": "x" * 40,
    "Zoho Invoice Number": "y" * 40,
    "Zoho Payment Status": "z" * 40,
    "Zoho Last Payment Date": "0" * 40,
    "Zoho Expected Payment Date": "5" * 40,
}

_CONTACT: dict[str, Any] = {
    "contact_id": "460000000026049",
    "contact_name": "Bowman and Co",
    "company_name": "Bowman and Co",
    "has_transaction": True,
    "contact_type": "customer",
    "customer_sub_type": "business",
    "website": "www.bowmanfurniture.com",
    "primary_contact_id": "460000000026051",
    "payment_terms": 15,
    "payment_terms_label": "Net 15",
    "currency_id": "460000000000097",
    "currency_code": "USD",
    "status": "active",
    "custom_fields": [
        {"index": 1, "value": "gbgd078", "label": "VAT ID", "api_name": "cf_vat_id"},
        {"index": 2, "value": "77", "label": "Pipedrive ID", "api_name": "cf_pipedrive_id"},
    ],
    "billing_address": {
        "attention": "Mr.John",
        "address": "4900 Hopyard Rd",
        "street2": "Suite 310",
        "state_code": "CA",
        "city": "Pleasanton",
        "state": "CA",
        "zip": "94588",
        "country": "U.S.A",
        "fax": "+1-925-924-9600",
        "phone": "+1-925-921-9201",
    },
    "contact_persons": [
        {
            "contact_person_id": "460000000026052",
            "first_name": "Ann",
            "last_name": "Lee",
            "email": "ann@bowmanfurniture.com",
            "phone": "",
            "mobile": "",
            "designation": "Buyer",
            "is_primary_contact": False,
        },
        {
            "contact_person_id": "460000000026051",
            "salutation": "Mr",
            "first_name": "Will",
            "last_name": "Smith",
            "email": "willsmith@bowmanfurniture.com",
            "phone": "+1-925-921-9201",
            "mobile": "+1-4054439562",
            "designation": "Sales Executive",
            "department": "Sales and Marketing",
            "is_primary_contact": True,
        },
    ],
    "created_time": "2013-08-05T12:06:10+0530",
    "last_modified_time": "2013-10-07T18:24:51+0530",
}

_ORG: dict[str, Any] = {
    "id": 77,
    "name": "Bowman and Co",
    "owner_id": 1,
    "add_time": "2021-01-01T00:00:00Z",
    "update_time": "2021-01-02T00:00:00Z",
    "address": {
        "value": "4900 Hopyard Rd, Suite 310, Pleasanton, CA 94588, United States",
        "country": "United States",
        "admin_area_level_1": "CA",
        "admin_area_level_2": "Alameda",
        "locality": "Pleasanton",
        "sublocality": None,
        "route": "Hopyard Rd",
        "street_number": "4900",
        "subpremise": "Suite 310",
        "postal_code": "94588",
        "formatted_address": "4900 Hopyard Rd #310, Pleasanton, CA 94588, USA",
    },
    "is_deleted": False,
    "visible_to": 7,
    "label_ids": [],
    "custom_fields": {ORG_KEYS["Zoho Contact ID"]: "460000000026049"},
}

_PERSON: dict[str, Any] = {
    "id": 501,
    "name": "Will Smith",
    "first_name": "Will",
    "last_name": "Smith",
    "owner_id": 1,
    "org_id": 77,
    "add_time": "2021-01-01T00:00:00Z",
    "update_time": "2021-01-01T00:00:00Z",
    "emails": [
        {"value": "willsmith@bowmanfurniture.com", "primary": True, "label": "work"},
        {"value": "will@home.example", "primary": False, "label": "home"},
    ],
    "phones": [
        {"value": "+1-925-921-9201", "primary": True, "label": "work"},
        {"value": "+1-4054439562", "primary": False, "label": "mobile"},
        {"value": "555-0100", "primary": False, "label": "home"},
    ],
    "is_deleted": False,
    "visible_to": 7,
    "custom_fields": {},
}


def zoho_contact(**changes: Any) -> dict[str, Any]:
    """A Zoho detail contact (the OAS example, trimmed), with top-level changes applied."""
    contact = copy.deepcopy(_CONTACT)
    contact.update(changes)
    return contact


def pipedrive_org(**changes: Any) -> dict[str, Any]:
    """A Pipedrive v2 organization (the spec example, filled in), with changes applied."""
    org = copy.deepcopy(_ORG)
    org.update(changes)
    return org


def pipedrive_person(**changes: Any) -> dict[str, Any]:
    """A Pipedrive v2 person, with changes applied."""
    person = copy.deepcopy(_PERSON)
    person.update(changes)
    return person


def deal(deal_id: int, status: str, **changes: Any) -> dict[str, Any]:
    """A Pipedrive v2 deal list item."""
    item: dict[str, Any] = {
        "id": deal_id,
        "title": f"Deal {deal_id}",
        "status": status,
        "currency": "EUR",
        "value": 100,
        "org_id": 77,
        "add_time": "2024-01-01T00:00:00Z",
        "update_time": "2024-01-02T00:00:00Z",
        "won_time": None,
        "close_time": None,
        "is_archived": False,
        "is_deleted": False,
        "custom_fields": {},
    }
    item.update(changes)
    return item


def zoho_invoice(invoice_id: str, **changes: Any) -> dict[str, Any]:
    """A Zoho invoice list item (the OAS example shape)."""
    item: dict[str, Any] = {
        "invoice_id": invoice_id,
        "customer_name": "Bowman & Co",
        "customer_id": "982000000567001",
        "status": "sent",
        "invoice_number": f"INV-{invoice_id}",
        "reference_number": " ",
        "date": "2024-03-01",
        "due_date": "2024-03-31",
        "currency_id": "982000000000190",
        "currency_code": "EUR",
        "total": 100.0,
        "balance": 100.0,
        "created_time": "2024-03-01T02:17:40-0800",
        "last_modified_time": "2024-03-01T02:02:51-0800",
        "custom_fields": [],
        "exchange_rate": 1,
    }
    item.update(changes)
    return item
