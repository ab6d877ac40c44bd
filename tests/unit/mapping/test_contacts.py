"""Zoho contacts <-> Pipedrive organizations and persons; classification and routing."""

from __future__ import annotations

from typing import Any

import pytest

from connector.errors import ConfigError
from connector.mapping.config import SyncConfig, parse_config
from connector.mapping.contacts import (
    ContactPlan,
    classify_contact,
    individual_to_person,
    order_contact_persons,
    pipedrive_org_to_zoho_contact,
    pipedrive_person_to_zoho_contact,
    pipedrive_person_to_zoho_contact_person,
    route_organization,
    zoho_contact_to_organization,
    zoho_person_to_pipedrive,
)
from tests.unit.mapping.samples import (
    ORG_KEYS,
    PERSON_KEYS,
    pipedrive_org,
    pipedrive_person,
    zoho_contact,
)


def contacts_config(**contacts: Any) -> SyncConfig:
    return parse_config({"contacts": contacts})


@pytest.mark.parametrize(
    ("contact", "rules", "kind", "inactive_action"),
    [
        ({"contact_type": "customer", "customer_sub_type": "business"}, {}, "organization", None),
        ({}, {}, "organization", None),
        ({"contact_type": "vendor"}, {}, "skip", None),
        ({"contact_type": "vendor"}, {"vendor_rule": "organization"}, "organization", None),
        ({"contact_type": "vendor"}, {"vendor_rule": "person"}, "person", None),
        ({"contact_type": "customer", "customer_sub_type": "individual"}, {}, "person", None),
        (
            {"contact_type": "customer", "customer_sub_type": "individual"},
            {"individual_customers": "organization"},
            "organization",
            None,
        ),
        ({"status": "inactive"}, {}, "organization", "record"),
        ({"status": "inactive"}, {"inactive_rule": "mark"}, "organization", "mark"),
        ({"status": "inactive"}, {"inactive_rule": "delete"}, "organization", "delete"),
        ({"status": "inactive", "contact_type": "vendor"}, {}, "skip", "record"),
        ({"status": "active"}, {"inactive_rule": "delete"}, "organization", None),
        ({"contact_type": "VENDOR"}, {}, "skip", None),
    ],
)
def test_classify_contact(contact, rules, kind, inactive_action):
    plan = classify_contact(contact, contacts_config(**rules))
    assert plan.kind == kind
    assert plan.inactive_action == inactive_action
    assert plan.inactive is (inactive_action is not None)
    assert plan.reason


def test_classify_reasons_name_the_rule():
    assert classify_contact({"contact_type": "vendor"}, SyncConfig()) == ContactPlan(
        "skip", "vendor skipped (contacts.vendor_rule = skip)"
    )
    plan = classify_contact({"status": "inactive"}, SyncConfig())
    assert "contacts.inactive_rule = record" in plan.reason


def test_order_contact_persons_puts_primary_first_and_keeps_order():
    persons = [
        {"id": 1},
        {"id": 2, "is_primary_contact": False},
        {"id": 3, "is_primary_contact": True},
        {"id": 4},
    ]
    assert [p["id"] for p in order_contact_persons(persons)] == [3, 1, 2, 4]
    assert order_contact_persons([]) == []


class TestZohoToPipedrive:
    def test_organization_body(self):
        body = zoho_contact_to_organization(zoho_contact(), SyncConfig(), ORG_KEYS)
        assert body == {
            "name": "Bowman and Co",
            "address": {
                "route": "4900 Hopyard Rd",
                "subpremise": "Suite 310",
                "locality": "Pleasanton",
                "admin_area_level_1": "CA",
                "postal_code": "94588",
                "country": "U.S.A",
                "value": "4900 Hopyard Rd, Suite 310, Pleasanton, CA 94588, U.S.A",
            },
            "custom_fields": {
                ORG_KEYS["Zoho Contact ID"]: "460000000026049",
                ORG_KEYS["Zoho Currency"]: "USD",
                ORG_KEYS["Zoho Payment Terms"]: "Net 15",
            },
        }

    def test_organization_without_address(self):
        contact = zoho_contact(billing_address={"address": "", "city": " ", "country": ""})
        body = zoho_contact_to_organization(contact, SyncConfig(), ORG_KEYS)
        assert "address" not in body

    def test_organization_extra_fields_and_transform(self):
        config = parse_config(
            {
                "fields": {
                    "organization": [
                        {
                            "zoho": "custom_fields.cf_vat_id",
                            "pipedrive": "custom:VAT ID",
                            "direction": "zoho->pipedrive",
                            "transform": "upper",
                        },
                        {
                            "zoho": "billing_address.country",
                            "pipedrive": "custom:Region",
                            "direction": "zoho->pipedrive",
                            "transform": "country_code",
                        },
                    ]
                }
            }
        )
        body = zoho_contact_to_organization(zoho_contact(), config, ORG_KEYS)
        assert body["custom_fields"][ORG_KEYS["VAT ID"]] == "GBGD078"
        assert body["custom_fields"][ORG_KEYS["Region"]] == "US"

    def test_mark_rule_writes_the_status(self):
        config = contacts_config(inactive_rule="mark")
        body = zoho_contact_to_organization(zoho_contact(status="inactive"), config, ORG_KEYS)
        assert body["custom_fields"][ORG_KEYS["Zoho Status"]] == "inactive"
        plain = zoho_contact_to_organization(
            zoho_contact(status="inactive"), SyncConfig(), ORG_KEYS
        )
        assert ORG_KEYS["Zoho Status"] not in plain["custom_fields"]

    def test_missing_field_key_is_a_config_error(self):
        keys = {k: v for k, v in ORG_KEYS.items() if k != "Zoho Currency"}
        with pytest.raises(ConfigError, match="Zoho Currency"):
            zoho_contact_to_organization(zoho_contact(), SyncConfig(), keys)

    def test_person_body(self):
        primary = order_contact_persons(zoho_contact()["contact_persons"])[0]
        body = zoho_person_to_pipedrive(
            primary,
            org_id=77,
            zoho_contact_id="460000000026049",
            config=SyncConfig(),
            field_keys=PERSON_KEYS,
        )
        # Pipedrive v2 person writes take "name" only (PersonRequestBody has no first/last name).
        assert body == {
            "name": "Will Smith",
            "emails": [
                {"value": "willsmith@bowmanfurniture.com", "primary": True, "label": "work"}
            ],
            "phones": [
                {"value": "+1-925-921-9201", "primary": True, "label": "work"},
                {"value": "+1-4054439562", "primary": False, "label": "mobile"},
            ],
            "custom_fields": {PERSON_KEYS["Zoho Contact ID"]: "460000000026049"},
            "org_id": 77,
        }

    @pytest.mark.parametrize(
        ("person", "expected"),
        [
            ({"first_name": "Ann", "last_name": ""}, {"name": "Ann"}),
            ({"first_name": "", "last_name": "Lee"}, {"name": "Lee"}),
            ({"first_name": "", "last_name": ""}, {}),
            (
                {"mobile": "+44 7700"},
                {"phones": [{"value": "+44 7700", "primary": True, "label": "mobile"}]},
            ),
        ],
    )
    def test_person_partial_data(self, person, expected):
        body = zoho_person_to_pipedrive(
            person, org_id=None, zoho_contact_id=None, config=SyncConfig(), field_keys=PERSON_KEYS
        )
        assert body == expected

    def test_person_extra_fields_and_status(self):
        config = parse_config(
            {
                "contacts": {"inactive_rule": "mark"},
                "fields": {"person": [{"zoho": "designation", "pipedrive": "custom:Job Title"}]},
            }
        )
        body = zoho_person_to_pipedrive(
            {"first_name": "Ann", "last_name": "Lee", "designation": "Buyer"},
            org_id=None,
            zoho_contact_id="9",
            config=config,
            field_keys=PERSON_KEYS,
            contact_status="inactive",
        )
        assert body["custom_fields"] == {
            PERSON_KEYS["Zoho Contact ID"]: "9",
            PERSON_KEYS["Job Title"]: "Buyer",
            PERSON_KEYS["Zoho Status"]: "inactive",
        }
        assert "org_id" not in body

    def test_individual_uses_the_primary_contact_person(self):
        contact = zoho_contact(customer_sub_type="individual", contact_name="Will Smith")
        body = individual_to_person(contact, SyncConfig(), PERSON_KEYS)
        assert body["name"] == "Will Smith"
        assert "first_name" not in body
        assert "last_name" not in body
        assert body["emails"][0]["value"] == "willsmith@bowmanfurniture.com"
        assert body["custom_fields"] == {PERSON_KEYS["Zoho Contact ID"]: "460000000026049"}
        assert "org_id" not in body

    def test_individual_without_persons_falls_back_to_contact(self):
        contact = zoho_contact(
            customer_sub_type="individual", contact_name="Jane Roe", contact_persons=[]
        )
        body = individual_to_person(contact, SyncConfig(), PERSON_KEYS)
        assert body["name"] == "Jane Roe"
        contact = zoho_contact(
            contact_persons=[], first_name="Jane", last_name="Roe", email="jane@roe.example"
        )
        body = individual_to_person(contact, SyncConfig(), PERSON_KEYS)
        assert body["name"] == "Jane Roe"
        assert body["emails"][0]["value"] == "jane@roe.example"

    def test_individual_reads_contact_custom_fields(self):
        config = parse_config(
            {
                "fields": {
                    "person": [{"zoho": "custom_fields.cf_vat_id", "pipedrive": "custom:Job Title"}]
                }
            }
        )
        body = individual_to_person(zoho_contact(), config, PERSON_KEYS)
        assert body["custom_fields"][PERSON_KEYS["Job Title"]] == "gbgd078"


class TestPipedriveToZoho:
    def test_organization_body(self):
        body = pipedrive_org_to_zoho_contact(pipedrive_org(), SyncConfig(), ORG_KEYS)
        assert body == {
            "contact_name": "Bowman and Co",
            "company_name": "Bowman and Co",
            "contact_type": "customer",
            "customer_sub_type": "business",
            "billing_address": {
                "address": "4900 Hopyard Rd",
                "street2": "Suite 310",
                "city": "Pleasanton",
                "state": "CA",
                "zip": "94588",
                "country": "United States",
            },
            "custom_fields": [{"api_name": "cf_pipedrive_id", "value": "77"}],
        }

    def test_organization_with_only_a_typed_address(self):
        org = pipedrive_org(address={"value": "Mustamäe tee 3a, 10615 Tallinn"})
        body = pipedrive_org_to_zoho_contact(org, SyncConfig(), ORG_KEYS)
        assert body["billing_address"] == {"address": "Mustamäe tee 3a, 10615 Tallinn"}

    def test_configured_cross_reference_field(self):
        config = parse_config({"fields": {"zoho_pipedrive_id": "cf_pd_org"}})
        body = pipedrive_org_to_zoho_contact(pipedrive_org(), config, ORG_KEYS)
        assert body["custom_fields"] == [{"api_name": "cf_pd_org", "value": "77"}]

    def test_extra_fields_flow_back_with_reverse_transform(self):
        config = parse_config(
            {
                "fields": {
                    "organization": [
                        {
                            "zoho": "custom_fields.cf_country",
                            "pipedrive": "custom:Region",
                            "transform": "country_name",
                        },
                    ]
                }
            }
        )
        org = pipedrive_org(custom_fields={ORG_KEYS["Region"]: "Germany"})
        body = pipedrive_org_to_zoho_contact(org, config, ORG_KEYS)
        assert {"api_name": "cf_country", "value": "DE"} in body["custom_fields"]

    def test_person_to_contact_person(self):
        body = pipedrive_person_to_zoho_contact_person(
            pipedrive_person(), SyncConfig(), PERSON_KEYS
        )
        assert body == {
            "first_name": "Will",
            "last_name": "Smith",
            "email": "willsmith@bowmanfurniture.com",
            "phone": "+1-925-921-9201",
            "mobile": "+1-4054439562",
        }

    def test_person_to_individual_contact(self):
        body = pipedrive_person_to_zoho_contact(pipedrive_person(), SyncConfig(), PERSON_KEYS)
        assert body["contact_name"] == "Will Smith"
        assert body["customer_sub_type"] == "individual"
        assert body["contact_persons"][0]["is_primary_contact"] is True
        assert body["custom_fields"] == [{"api_name": "cf_pipedrive_id", "value": "501"}]
        only_name = pipedrive_person_to_zoho_contact(
            {"id": 3, "name": "Cher"}, SyncConfig(), PERSON_KEYS
        )
        assert only_name["contact_name"] == "Cher"


class TestRouting:
    config = parse_config(
        {
            "routing": {
                "default": "zoho-us",
                "field": "address.country",
                "rules": {"Germany": "zoho-eu", "india": "zoho-in"},
            }
        }
    )
    connections = ("zoho-us", "zoho-eu", "zoho-in")

    @pytest.mark.parametrize(
        ("country", "connection"),
        [
            ("Germany", "zoho-eu"),
            ("GERMANY", "zoho-eu"),
            ("DE", "zoho-eu"),
            ("Deutschland", "zoho-eu"),
            ("India", "zoho-in"),
            ("France", "zoho-us"),
            (None, "zoho-us"),
            ("", "zoho-us"),
        ],
    )
    def test_rules_then_default(self, country, connection):
        org = pipedrive_org(address={"value": "x", "country": country})
        assert route_organization(org, self.config, ORG_KEYS, self.connections) == connection

    def test_custom_field_rule(self):
        config = parse_config({"routing": {"field": "Region", "rules": {"EMEA": "zoho-eu"}}})
        org = pipedrive_org(custom_fields={ORG_KEYS["Region"]: "emea"})
        assert route_organization(org, config, ORG_KEYS, ["zoho-us", "zoho-eu"]) == "zoho-eu"

    def test_single_connection_needs_no_rules(self):
        assert route_organization(pipedrive_org(), SyncConfig(), {}, ["only"]) == "only"

    @pytest.mark.parametrize(
        ("config", "connections", "message"),
        [
            (SyncConfig(), [], "no Zoho organization is connected"),
            (SyncConfig(), ["a", "b"], "routing.default is not set"),
            (
                parse_config({"routing": {"default": "gone"}}),
                ["a", "b"],
                "unknown connection 'gone'",
            ),
            (
                parse_config({"routing": {"rules": {"United States": "gone"}}}),
                ["a"],
                "routes to unknown connection 'gone'",
            ),
        ],
    )
    def test_undecidable_routing_is_a_config_error(self, config, connections, message):
        with pytest.raises(ConfigError, match=message):
            route_organization(pipedrive_org(), config, ORG_KEYS, connections)
