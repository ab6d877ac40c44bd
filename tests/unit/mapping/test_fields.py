"""Field paths, canonical views, hashes for echo suppression, and compare-before-write plans."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from connector.errors import ConfigError
from connector.mapping.config import SyncConfig, parse_config
from connector.mapping.contacts import (
    pipedrive_org_to_zoho_contact,
    zoho_contact_to_organization,
    zoho_person_to_pipedrive,
)
from connector.mapping.fields import (
    UpdatePlan,
    diff,
    fields_hash,
    format_address,
    is_empty,
    mapped_view,
    plan_update,
    read_pipedrive,
    read_zoho,
    write_pipedrive,
    write_zoho,
)
from tests.unit.mapping.samples import (
    ORG_KEYS,
    PERSON_KEYS,
    pipedrive_org,
    pipedrive_person,
    zoho_contact,
)

EXTRAS = parse_config(
    {
        "fields": {
            "organization": [
                {"zoho": "website", "pipedrive": "custom:Website"},
                {
                    "zoho": "custom_fields.cf_vat_id",
                    "pipedrive": "custom:VAT ID",
                    "direction": "zoho->pipedrive",
                    "transform": "upper",
                    "overwrite_with_empty": True,
                },
            ]
        }
    }
)
T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=1)


@pytest.mark.parametrize(
    ("value", "empty"),
    [(None, True), ("", True), ("  ", True), ([], True), ({}, True), (0, False), ("x", False)],
)
def test_is_empty(value, empty):
    assert is_empty(value) is empty


class TestZohoPaths:
    @pytest.mark.parametrize(
        ("path", "expected"),
        [
            ("contact_name", "Bowman and Co"),
            ("billing_address.city", "Pleasanton"),
            ("billing_address.nothing", None),
            ("contact_name.deeper", None),
            ("custom_fields.cf_vat_id", "gbgd078"),
            ("custom_fields.VAT ID", "gbgd078"),
            ("custom_fields.vat id", "gbgd078"),
            ("custom_fields.1", "gbgd078"),
            ("custom_fields.cf_missing", None),
            ("missing", None),
        ],
    )
    def test_read(self, path, expected):
        assert read_zoho(zoho_contact(), path) == expected

    def test_write_nested_and_custom_fields(self):
        body: dict[str, Any] = {}
        write_zoho(body, "billing_address.city", "Berlin")
        write_zoho(body, "custom_fields.cf_vat_id", "DE1")
        write_zoho(body, "custom_fields.Region", "EU")
        write_zoho(body, "custom_fields.3", "x")
        write_zoho(body, "custom_fields.cf_vat_id", "DE2")
        assert body == {
            "billing_address": {"city": "Berlin"},
            "custom_fields": [
                {"api_name": "cf_vat_id", "value": "DE2"},
                {"label": "Region", "value": "EU"},
                {"index": 3, "value": "x"},
            ],
        }


class TestPipedriveKeys:
    @pytest.mark.parametrize(
        ("key", "expected"),
        [
            ("name", "Bowman and Co"),
            ("address.street", "4900 Hopyard Rd"),
            ("address.locality", "Pleasanton"),
            ("address.country", "United States"),
            ("custom:Zoho Contact ID", "460000000026049"),
            ("custom:Website", None),
            ("id", 77),
        ],
    )
    def test_read_org(self, key, expected):
        assert read_pipedrive(pipedrive_org(), key, ORG_KEYS) == expected

    @pytest.mark.parametrize(
        ("address", "street"),
        [
            (
                {"value": "Hauptstrasse 5, Berlin", "route": "Hauptstrasse", "street_number": "5"},
                "Hauptstrasse 5",
            ),
            ({"value": "5 Main St", "route": "Main St", "street_number": "5"}, "5 Main St"),
            ({"value": "x", "route": "Main St"}, "Main St"),
            ({"value": "Somewhere 1, Nowhere"}, "Somewhere 1, Nowhere"),
            ({"value": "Somewhere", "locality": "Berlin"}, None),
            ("Mustamäe tee 3a, 10615 Tallinn", "Mustamäe tee 3a, 10615 Tallinn"),
            (None, None),
        ],
    )
    def test_street_line(self, address, street):
        assert read_pipedrive({"address": address}, "address.street", {}) == street

    def test_monetary_custom_value_reads_its_value(self):
        org = {"custom_fields": {ORG_KEYS["Website"]: {"value": 5, "currency": "EUR"}}}
        assert read_pipedrive(org, "custom:Website", ORG_KEYS) == 5

    def test_unknown_custom_field_name_is_a_config_error(self):
        with pytest.raises(ConfigError, match="'Nope' has no key"):
            read_pipedrive(pipedrive_org(), "custom:Nope", ORG_KEYS)
        with pytest.raises(ConfigError):
            write_pipedrive({}, "custom:Nope", "x", ORG_KEYS)

    @pytest.mark.parametrize(
        ("key", "expected"),
        [
            ("email", "willsmith@bowmanfurniture.com"),
            ("phone", "+1-925-921-9201"),
            ("mobile", "+1-4054439562"),
            ("first_name", "Will"),
            ("last_name", "Smith"),
        ],
    )
    def test_read_person(self, key, expected):
        assert read_pipedrive(pipedrive_person(), key, PERSON_KEYS) == expected

    @pytest.mark.parametrize(
        ("person", "key", "expected"),
        [
            (
                {"emails": [{"value": "a@x", "primary": False}, {"value": "b@x", "primary": True}]},
                "email",
                "b@x",
            ),
            ({"emails": [{"value": "a@x", "primary": False}]}, "email", "a@x"),
            ({"emails": []}, "email", None),
            ({"phones": [{"value": "1", "primary": True, "label": "home"}]}, "phone", None),
            ({"phones": [{"value": "1", "primary": True, "label": "other"}]}, "phone", "1"),
            ({"phones": [{"value": "1", "primary": True, "label": "mobile"}]}, "phone", None),
            ({"phones": [{"value": "1", "primary": True, "label": "mobile"}]}, "mobile", "1"),
            ({"name": "Jane van Dyke"}, "first_name", "Jane"),
            ({"name": "Jane van Dyke"}, "last_name", "van Dyke"),
            ({"name": "Cher"}, "last_name", None),
        ],
    )
    def test_read_person_edge_cases(self, person, key, expected):
        assert read_pipedrive(person, key, PERSON_KEYS) == expected

    def test_write_keeps_other_emails_and_phones(self):
        body = pipedrive_person()
        write_pipedrive(body, "email", "new@x.io", PERSON_KEYS)
        write_pipedrive(body, "mobile", "+44 7700", PERSON_KEYS)
        assert body["emails"][0] == {"value": "new@x.io", "primary": True, "label": "work"}
        assert body["emails"][1]["value"] == "will@home.example"
        assert [p["value"] for p in body["phones"]] == ["+1-925-921-9201", "+44 7700", "555-0100"]

    def test_write_adds_missing_items_with_labels(self):
        body: dict[str, Any] = {}
        write_pipedrive(body, "mobile", "2", PERSON_KEYS)
        write_pipedrive(body, "phone", "1", PERSON_KEYS)
        write_pipedrive(body, "email", "a@x", PERSON_KEYS)
        write_pipedrive(body, "id", 5, PERSON_KEYS)
        assert body == {
            "phones": [
                {"value": "1", "primary": False, "label": "work"},
                {"value": "2", "primary": False, "label": "mobile"},
            ],
            "emails": [{"value": "a@x", "primary": True, "label": "work"}],
        }


@pytest.mark.parametrize(
    ("address", "value"),
    [
        (
            {
                "route": "4900 Hopyard Rd",
                "subpremise": "Suite 310",
                "locality": "Pleasanton",
                "admin_area_level_1": "CA",
                "postal_code": "94588",
                "country": "U.S.A",
            },
            "4900 Hopyard Rd, Suite 310, Pleasanton, CA 94588, U.S.A",
        ),
        ({"locality": "Berlin", "country": "Germany"}, "Berlin, Germany"),
        ({"postal_code": "10115"}, "10115"),
        ({}, ""),
    ],
)
def test_format_address(address, value):
    assert format_address(address) == value


class TestMappedView:
    def test_zoho_view_has_only_fields_flowing_out_of_zoho(self):
        view = mapped_view(
            zoho_contact(), entity="organization", side="zoho", config=EXTRAS, field_keys=ORG_KEYS
        )
        assert view == {
            "contact_id": "460000000026049",
            "contact_name": "Bowman and Co",
            "billing_address.address": "4900 Hopyard Rd",
            "billing_address.street2": "Suite 310",
            "billing_address.city": "Pleasanton",
            "billing_address.state": "CA",
            "billing_address.zip": "94588",
            "billing_address.country": "US",
            "currency_code": "USD",
            "payment_terms_label": "Net 15",
            "website": "www.bowmanfurniture.com",
            "custom_fields.cf_vat_id": "GBGD078",
        }

    def test_pipedrive_view_has_only_fields_flowing_out_of_pipedrive(self):
        view = mapped_view(
            pipedrive_org(),
            entity="organization",
            side="pipedrive",
            config=EXTRAS,
            field_keys=ORG_KEYS,
        )
        assert view == {
            "id": "77",
            "name": "Bowman and Co",
            "address.street": "4900 Hopyard Rd",
            "address.subpremise": "Suite 310",
            "address.locality": "Pleasanton",
            "address.admin_area_level_1": "CA",
            "address.postal_code": "94588",
            "address.country": "US",
            "custom:Website": None,
        }

    def test_explicit_direction_selects_fields(self):
        both = mapped_view(
            zoho_contact(),
            entity="organization",
            side="zoho",
            config=EXTRAS,
            field_keys=ORG_KEYS,
            direction="both",
        )
        assert "currency_code" not in both
        assert "contact_id" not in both
        assert "website" in both
        inbound = mapped_view(
            zoho_contact(),
            entity="organization",
            side="zoho",
            config=EXTRAS,
            field_keys=ORG_KEYS,
            direction="pipedrive->zoho",
        )
        assert "custom_fields.cf_pipedrive_id" in inbound
        assert "currency_code" not in inbound

    def test_person_view_compares_emails_and_phones_loosely(self):
        shouting = pipedrive_person(
            emails=[{"value": " WillSmith@BowmanFurniture.com", "primary": True}],
            phones=[
                {"value": "+1 (925) 921 9201", "label": "work"},
                {"value": "+1 405 443 9562", "label": "mobile"},
            ],
        )

        def view(person: dict[str, Any]) -> dict[str, Any]:
            return mapped_view(
                person,
                entity="person",
                side="pipedrive",
                config=SyncConfig(),
                field_keys=PERSON_KEYS,
            )

        assert view(shouting) == view(pipedrive_person())


class TestFieldsHash:
    def view(self, org: dict[str, Any]) -> dict[str, Any]:
        return mapped_view(
            org, entity="organization", side="pipedrive", config=EXTRAS, field_keys=ORG_KEYS
        )

    def test_is_hex_sha256(self):
        digest = fields_hash(self.view(pipedrive_org()))
        assert len(digest) == 64
        int(digest, 16)

    def test_key_order_does_not_matter(self):
        view = self.view(pipedrive_org())
        reversed_view = dict(reversed(list(view.items())))
        assert list(view) != list(reversed_view)
        assert fields_hash(view) == fields_hash(reversed_view)

    def test_record_key_order_does_not_matter(self):
        org = pipedrive_org()
        shuffled = dict(reversed(list(org.items())))
        shuffled["address"] = dict(reversed(list(org["address"].items())))
        assert fields_hash(self.view(org)) == fields_hash(self.view(shuffled))

    @pytest.mark.parametrize(
        "change",
        [
            {"name": "Bowman & Co"},
            {"address": {"value": "1 Other St", "route": "Other St", "street_number": "1"}},
            {"custom_fields": {ORG_KEYS["Website"]: "bowman.example"}},
            {"id": 78},
        ],
    )
    def test_a_mapped_change_changes_the_hash(self, change):
        assert fields_hash(self.view(pipedrive_org())) != fields_hash(
            self.view(pipedrive_org(**change))
        )

    @pytest.mark.parametrize(
        "change",
        [
            {"owner_id": 2},
            {"update_time": "2030-01-01T00:00:00Z"},
            {"label_ids": [4]},
            {"custom_fields": {ORG_KEYS["Zoho Contact ID"]: "other", "z" * 40: "unmapped"}},
            {"name": "  Bowman and Co  "},
        ],
    )
    def test_an_unmapped_or_cosmetic_change_keeps_the_hash(self, change):
        assert fields_hash(self.view(pipedrive_org())) == fields_hash(
            self.view(pipedrive_org(**change))
        )

    def test_echo_of_our_own_write_hashes_the_same(self):
        # What we write to Pipedrive, read back as Pipedrive returns it (ids, timestamps,
        # geocoded address parts added), must not look like a user change.
        body = zoho_contact_to_organization(zoho_contact(), EXTRAS, ORG_KEYS)
        echoed = {
            **body,
            "id": 77,
            "update_time": "2024-05-01T12:00:00Z",
            "address": {**body["address"], "formatted_address": "x", "admin_area_level_2": "y"},
        }
        assert fields_hash(self.view({**body, "id": 77})) == fields_hash(self.view(echoed))

    def test_values_of_any_json_type_hash(self):
        assert fields_hash({"a": 1, "b": None, "c": [1, "x"], "d": dt.date(2024, 1, 1)})


class TestPlanUpdate:
    def plan(self, current: Any, desired: Any, **kwargs: Any) -> UpdatePlan:
        kwargs.setdefault("entity", "organization")
        kwargs.setdefault("config", EXTRAS)
        kwargs.setdefault("field_keys", ORG_KEYS)
        return plan_update(current, desired, **kwargs)

    def test_nothing_differs_nothing_to_write(self):
        org = pipedrive_org(
            custom_fields={
                ORG_KEYS["Zoho Contact ID"]: "460000000026049",
                ORG_KEYS["Zoho Currency"]: "USD",
                ORG_KEYS["Zoho Payment Terms"]: "Net 15",
                ORG_KEYS["Website"]: "www.bowmanfurniture.com",
                ORG_KEYS["VAT ID"]: "GBGD078",
            }
        )
        desired = zoho_contact_to_organization(zoho_contact(), EXTRAS, ORG_KEYS)
        plan = self.plan(org, desired, target="pipedrive")
        assert plan.changes == {}
        assert plan.payload == {}
        assert plan.skipped == {}

    def test_changed_name_only_is_written(self):
        org = pipedrive_org()
        desired = {"name": "Bowman & Sons", "custom_fields": dict(org["custom_fields"])}
        config = parse_config(
            {"fields": {"builtin": {"organization_address": False, "organization_billing": False}}}
        )
        plan = self.plan(org, desired, target="pipedrive", config=config)
        assert plan.changes == {"name": ("Bowman and Co", "Bowman & Sons")}
        assert plan.payload == {"name": "Bowman & Sons"}

    def test_address_change_sends_the_whole_address(self):
        org = pipedrive_org()
        desired = {
            "address": {
                "route": "4900 Hopyard Rd",
                "subpremise": "Suite 310",
                "locality": "Dublin",
                "admin_area_level_1": "CA",
                "postal_code": "94568",
                "country": "U.S.A",
            }
        }
        config = parse_config(
            {"fields": {"zoho_contact_id": "", "builtin": {"organization_billing": False}}}
        )
        plan = self.plan(org, desired, target="pipedrive", config=config)
        assert plan.changes == {
            "address.locality": ("Pleasanton", "Dublin"),
            "address.postal_code": ("94588", "94568"),
        }
        address = plan.payload["address"]
        assert address["locality"] == "Dublin"
        assert address["route"] == "Hopyard Rd"
        assert address["street_number"] == "4900"
        assert address["admin_area_level_2"] == "Alameda"
        assert address["value"] == "4900 Hopyard Rd, Suite 310, Dublin, CA 94568, United States"
        assert "formatted_address" not in address
        assert set(plan.payload) == {"address"}

    def test_street_change_replaces_route_and_street_number(self):
        desired = {"address": {"route": "1 Main St", "locality": "Pleasanton"}}
        config = parse_config(
            {"fields": {"zoho_contact_id": "", "builtin": {"organization_billing": False}}}
        )
        plan = self.plan(pipedrive_org(), desired, target="pipedrive", config=config)
        assert plan.payload["address"]["route"] == "1 Main St"
        assert "street_number" not in plan.payload["address"]

    def test_country_spelling_difference_is_not_a_change(self):
        desired = {"address": {"country": "U.S.A"}}
        plan = self.plan(pipedrive_org(), desired, target="pipedrive")
        assert "address.country" not in plan.changes

    def test_empty_desired_value_never_clears_a_filled_one(self):
        desired = {"name": ""}
        plan = self.plan(pipedrive_org(), desired, target="pipedrive")
        assert "name" not in plan.changes
        assert plan.skipped["name"] == "an empty value does not overwrite a filled one"

    def test_empty_value_clears_when_overwrite_with_empty(self):
        org = pipedrive_org(custom_fields={ORG_KEYS["VAT ID"]: "OLD"})
        plan = self.plan(org, {}, target="pipedrive")
        assert plan.changes["custom:VAT ID"] == ("OLD", None)
        assert plan.payload["custom_fields"] == {ORG_KEYS["VAT ID"]: None}

    def test_filling_an_empty_field_is_always_allowed(self):
        org = pipedrive_org(name="")
        plan = self.plan(
            org, {"name": "Bowman"}, target="pipedrive", source_modified=T0, target_modified=T1
        )
        assert plan.payload["name"] == "Bowman"

    @pytest.mark.parametrize(
        ("source_modified", "target_modified", "written"),
        [
            (T1, T0, True),
            (T0, T1, False),
            (T0, T0, True),
            (None, T1, True),
            (T0, None, True),
        ],
    )
    def test_newest_wins(self, source_modified, target_modified, written):
        plan = self.plan(
            pipedrive_org(),
            {"name": "Renamed"},
            target="pipedrive",
            source_modified=source_modified,
            target_modified=target_modified,
        )
        assert ("name" in plan.payload) is written
        if not written:
            assert plan.skipped["name"] == "pipedrive was changed more recently"

    @pytest.mark.parametrize(
        ("system_of_record", "target", "written"),
        [
            ("zoho", "pipedrive", True),
            ("zoho", "zoho", False),
            ("pipedrive", "zoho", True),
            ("pipedrive", "pipedrive", False),
        ],
    )
    def test_system_of_record(self, system_of_record, target, written):
        config = parse_config(
            {
                "fields": {
                    "organization": [
                        {
                            "zoho": "website",
                            "pipedrive": "custom:Website",
                            "system_of_record": system_of_record,
                        }
                    ]
                }
            }
        )
        zoho = zoho_contact(website="zoho.example")
        org = pipedrive_org(custom_fields={ORG_KEYS["Website"]: "pipedrive.example"})
        if target == "pipedrive":
            current, desired = org, zoho_contact_to_organization(zoho, config, ORG_KEYS)
        else:
            current, desired = zoho, pipedrive_org_to_zoho_contact(org, config, ORG_KEYS)
        # The system of record wins even when the other side changed later.
        plan = self.plan(
            current, desired, target=target, config=config, source_modified=T0, target_modified=T1
        )
        path = "custom:Website" if target == "pipedrive" else "website"
        assert (path in plan.changes) is written
        if not written:
            assert plan.skipped[path] == f"{target} is the system of record for this field"

    def test_zoho_target_sends_whole_billing_address_and_changed_custom_fields(self):
        org = pipedrive_org(name="Bowman & Sons")
        org["address"]["locality"] = "Dublin"
        desired = pipedrive_org_to_zoho_contact(org, EXTRAS, ORG_KEYS)
        contact = zoho_contact()
        contact["custom_fields"][1]["value"] = "76"
        plan = self.plan(contact, desired, target="zoho")
        assert plan.changes == {
            "custom_fields.cf_pipedrive_id": ("76", "77"),
            "contact_name": ("Bowman and Co", "Bowman & Sons"),
            "billing_address.city": ("Pleasanton", "Dublin"),
        }
        assert plan.payload == {
            "custom_fields": [{"api_name": "cf_pipedrive_id", "value": "77"}],
            "contact_name": "Bowman & Sons",
            "billing_address": {**contact["billing_address"], "city": "Dublin"},
        }

    def test_one_way_fields_are_not_written_back(self):
        desired = pipedrive_org_to_zoho_contact(pipedrive_org(), EXTRAS, ORG_KEYS)
        plan = self.plan(zoho_contact(currency_code="EUR"), desired, target="zoho")
        assert "currency_code" not in plan.changes
        assert "custom_fields.cf_vat_id" not in plan.changes

    def test_person_email_change_keeps_other_addresses(self):
        zoho_person = {
            "first_name": "Will",
            "last_name": "Smith",
            "email": "w@new.example",
            "phone": "+1-925-921-9201",
            "mobile": "+1-4054439562",
        }
        desired = zoho_person_to_pipedrive(
            zoho_person,
            org_id=77,
            zoho_contact_id=None,
            config=SyncConfig(),
            field_keys=PERSON_KEYS,
        )
        plan = self.plan(
            pipedrive_person(),
            desired,
            entity="person",
            target="pipedrive",
            config=SyncConfig(),
            field_keys=PERSON_KEYS,
        )
        assert plan.changes == {"email": ("willsmith@bowmanfurniture.com", "w@new.example")}
        assert plan.payload == {
            "emails": [
                {"value": "w@new.example", "primary": True, "label": "work"},
                {"value": "will@home.example", "primary": False, "label": "home"},
            ]
        }

    def test_person_name_change_sends_the_joined_name(self):
        desired = {"first_name": "William", "last_name": "Smith"}
        plan = self.plan(
            pipedrive_person(),
            desired,
            entity="person",
            target="pipedrive",
            config=SyncConfig(),
            field_keys=PERSON_KEYS,
        )
        assert plan.payload == {"name": "William Smith"}

    def test_person_with_single_name_is_sent_as_name(self):
        current = {"id": 1, "name": "Cher", "first_name": "Cher", "last_name": None}
        plan = self.plan(
            current,
            {"name": "Cherilyn"},
            entity="person",
            target="pipedrive",
            config=SyncConfig(),
            field_keys=PERSON_KEYS,
        )
        assert plan.payload == {"name": "Cherilyn"}

    def test_diff_is_the_plans_changes(self):
        kwargs: dict[str, Any] = {
            "entity": "organization",
            "target": "pipedrive",
            "config": EXTRAS,
            "field_keys": ORG_KEYS,
        }
        assert diff(pipedrive_org(), {"name": "X"}, **kwargs) == {"name": ("Bowman and Co", "X")}
