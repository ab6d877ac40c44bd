"""The TOML sync configuration: defaults, every setting, and all errors reported at once."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.errors import ConfigError
from connector.mapping import config as config_module
from connector.mapping.config import (
    EXAMPLE_TOML,
    FieldMapping,
    SyncConfig,
    load_config,
    parse_config,
)


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def test_empty_mapping_gives_the_defaults():
    config = parse_config({})
    assert config == SyncConfig()
    assert config.contacts.vendor_rule == "skip"
    assert config.contacts.individual_customers == "person"
    assert config.contacts.inactive_rule == "record"
    assert config.contacts.sync_contact_persons is True
    assert config.sync.read_before_write is False
    assert config.routing.default is None
    assert config.routing.field == "address.country"
    assert config.routing.rules == ()
    assert config.deals.match_pattern == r"(?i)deal[\s#:-]*(\d+)"
    assert config.deals.match_custom_field is None
    assert config.deals.choose == "recent_won_else_single_open"
    assert config.deals.statuses == ("open", "won")
    assert config.deals.include_draft_invoices is False
    assert config.fields.zoho_contact_id == "Zoho Contact ID"
    assert config.fields.zoho_pipedrive_id == "cf_pipedrive_id"
    assert config.fields.deal.total == "Zoho Invoice Total"
    assert config.fields.deal.date == "Zoho Invoice Date"
    assert config.fields.deal.due_date == "Zoho Invoice Due Date"
    assert config.fields.deal.status == "Zoho Invoice Status"
    assert config.fields.deal.balance == "Zoho Invoice Balance"
    assert config.fields.deal.number == "Zoho Invoice Number"
    assert config.fields.deal.payment_status == "Zoho Payment Status"
    assert config.fields.deal.last_payment_date == "Zoho Last Payment Date"
    assert config.fields.deal.expected_payment_date == "Zoho Expected Payment Date"
    assert config.sync.pipedrive_poll_minutes == 5
    assert config.sync.zoho_reconcile_minutes == 60
    assert config.sync.contacts_full_read_hours == 24
    assert config.sync.overlap_seconds == 300
    assert config.sync.reserve_fraction == pytest.approx(0.10)
    assert config.sync.backfill_token_cap is None


@pytest.mark.parametrize("path", [None, ""])
def test_no_path_gives_the_defaults(path):
    assert load_config(path) == SyncConfig()


def test_empty_file_gives_the_defaults(tmp_path: Path):
    file = tmp_path / "connector.toml"
    file.write_text("")
    assert load_config(file) == SyncConfig()
    assert load_config(str(file)) == SyncConfig()


def test_missing_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_invalid_toml_is_a_config_error(tmp_path: Path):
    file = tmp_path / "bad.toml"
    file.write_text("[contacts\nvendor_rule = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(file)


def test_non_utf8_file_is_a_config_error(tmp_path: Path):
    file = tmp_path / "latin1.toml"
    file.write_bytes(b'[routing]\ndefault = "\xe9"\n')
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(file)


def test_example_toml_parses_and_sets_every_section(tmp_path: Path):
    file = tmp_path / "connector.toml"
    file.write_text(EXAMPLE_TOML)
    config = load_config(file)
    assert config.routing.default == "zoho-eu"
    assert config.routing.rules == (("Germany", "zoho-eu"), ("India", "zoho-in"))
    assert config.sync.backfill_token_cap == 20000
    match = config.deals.pattern.search("Deal #42")
    assert match is not None
    assert match.group(1) == "42"
    assert config.fields.organization == (
        FieldMapping("website", "custom:Website", "both"),
        FieldMapping(
            "custom_fields.cf_vat_id",
            "custom:VAT ID",
            "zoho->pipedrive",
            transform="upper",
            system_of_record="zoho",
            overwrite_with_empty=True,
        ),
    )
    assert config.fields.person == (FieldMapping("designation", "custom:Job Title", "both"),)


def test_example_toml_is_the_one_in_the_module_docstring():
    assert config_module.__doc__ is not None
    for line in EXAMPLE_TOML.splitlines():
        assert line in config_module.__doc__.replace("\\\\", "\\")
    assert "[[fields.person]]" in EXAMPLE_TOML
    assert tomllib.loads(EXAMPLE_TOML)["deals"]["match_pattern"] == r"(?i)deal[\s#:-]*(\d+)"


def test_every_setting_is_read():
    config = parse_config(
        {
            "contacts": {
                "vendor_rule": "organization",
                "individual_customers": "organization",
                "inactive_rule": "mark",
                "sync_contact_persons": False,
            },
            "routing": {"default": "zoho-in", "field": "custom:Region", "rules": {" DE ": "eu"}},
            "deals": {
                "match_pattern": r"PD-(\d+)",
                "match_custom_field": "cf_deal",
                "choose": "review",
                "statuses": ["won", "won", "lost"],
                "include_draft_invoices": True,
            },
            "fields": {
                "zoho_contact_id": "Books ID",
                "zoho_pipedrive_id": "cf_pd",
                "currency": "",
                "payment_terms": {"name": "Terms", "enabled": True},
                "zoho_status": "Books Status",
                "deal": {"total": "", "balance": {"name": "Open", "enabled": False}},
                "builtin": {"person_mobile": False},
            },
            "sync": {
                "pipedrive_poll_minutes": 2,
                "zoho_reconcile_minutes": 30,
                "contacts_full_read_hours": 12,
                "overlap_seconds": 0,
                "reserve_fraction": 0,
                "backfill_token_cap": 5000,
                "read_before_write": True,
            },
        }
    )
    assert config.contacts.vendor_rule == "organization"
    assert config.contacts.individual_customers == "organization"
    assert config.contacts.inactive_rule == "mark"
    assert config.contacts.sync_contact_persons is False
    assert config.routing.rules == (("DE", "eu"),)
    assert config.routing.pipedrive_key == "custom:Region"
    assert config.deals.statuses == ("won", "lost")
    assert config.deals.match_custom_field == "cf_deal"
    assert config.deals.choose == "review"
    assert config.deals.include_draft_invoices is True
    assert config.fields.zoho_contact_id == "Books ID"
    assert config.fields.zoho_pipedrive_id == "cf_pd"
    assert config.fields.currency is None
    assert config.fields.payment_terms == "Terms"
    assert config.fields.deal.total is None
    assert config.fields.deal.balance is None
    assert config.fields.deal.date == "Zoho Invoice Date"
    assert config.fields.builtin.person_mobile is False
    assert config.sync.overlap_seconds == 0
    assert config.sync.backfill_token_cap == 5000
    assert config.sync.read_before_write is True


@pytest.mark.parametrize(
    ("field", "key"),
    [
        ("address.country", "address.country"),
        ("name", "name"),
        ("custom:Region", "custom:Region"),
        ("Region", "custom:Region"),
    ],
)
def test_routing_field_is_a_builtin_key_or_a_custom_field_name(field, key):
    assert parse_config({"routing": {"field": field}}).routing.pipedrive_key == key


def test_several_bad_settings_are_reported_in_one_error():
    problems = problems_of(
        {
            "contacts": {"vendor_rule": "maybe", "colour": "red", "inactive_rule": "mark"},
            "routing": {"rules": {"Germany": "eu", "GERMANY": "de"}},
            "deals": {"match_pattern": "deal(", "statuses": ["pending"], "choose": 3},
            "fields": {
                "zoho_status": "",
                "deal": {"total": 3},
                "organization": [
                    {"zoho": "website", "pipedrive": "custom:Website"},
                    {"zoho": "website", "pipedrive": "name", "direction": "sideways"},
                    {
                        "zoho": "website",
                        "pipedrive": "fax",
                        "direction": "both",
                        "transform": "rot13",
                    },
                ],
                "person": [{"pipedrive": "email"}],
            },
            "sync": {"pipedrive_poll_minutes": 0, "reserve_fraction": 1.5, "overlap_seconds": 2.5},
        }
    )
    expected_fragments = [
        "contacts.vendor_rule: must be one of skip, organization, person",
        "contacts.colour: unknown setting",
        'contacts: inactive_rule = "mark" needs fields.zoho_status',
        "routing.rules: ",
        "deals.match_pattern: not a valid regular expression",
        "deals.choose: must be a string",
        "deals.statuses[0]: must be one of open, won, lost",
        "fields.deal.total: must be a field name",
        "fields.organization[1].direction: must be one of zoho->pipedrive, pipedrive->zoho, both",
        "fields.organization[2].transform: must be one of strip, lower, upper",
        "fields.organization[2].pipedrive: must be one of address.admin_area_level_1",
        "fields.organization[2] writes zoho 'website' already written by [0]",
        "fields.person[0].zoho: is required",
        "sync.pipedrive_poll_minutes: must be at least 1",
        "sync.reserve_fraction: must be at least 0 and below 1",
        "sync.overlap_seconds: must be a whole number",
    ]
    for fragment in expected_fragments:
        assert any(p.startswith(fragment) for p in problems), (fragment, problems)
    assert len(problems) == len(expected_fragments)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"contacts": {"vendor_rule": "vendor"}}, "contacts.vendor_rule: must be one of"),
        ({"contacts": {"sync_contact_persons": "yes"}}, "must be true or false"),
        ({"contacts": {"sync_contact_persons": 1}}, "must be true or false"),
        ({"sync": {"read_before_write": "true"}}, "sync.read_before_write: must be true or false"),
        ({"contacts": {"individual_customers": "skip"}}, "contacts.individual_customers"),
        ({"contacts": {"inactive_rule": "archive"}}, "contacts.inactive_rule"),
        ({"contacts": "skip"}, "contacts: invalid input type"),
        ({"routing": {"rules": ["Germany"]}}, "routing.rules: must be a table"),
        ({"routing": {"rules": {"Germany": ""}}}, "routing.rules"),
        ({"routing": {"default": " "}}, "routing.default: must not be empty"),
        ({"deals": {"match_pattern": r"deal\d+"}}, "must contain a capture group"),
        ({"deals": {"statuses": []}}, "deals.statuses: must list at least one status"),
        ({"deals": {"statuses": "open"}}, "deals.statuses: must be a list of statuses"),
        ({"fields": {"deal": {"date": {"enabled": True}}}}, "name must not be empty"),
        ({"fields": {"deal": {"date": {"name": "X", "on": 1}}}}, "unknown keys on"),
        ({"fields": {"deal": {"date": {"enabled": "no"}}}}, "enabled must be true or false"),
        ({"fields": {"deal": {"date": {"name": 5}}}}, "name must be a string"),
        ({"fields": {"deal": {"colour": "x"}}}, "fields.deal.colour: unknown setting"),
        ({"fields": {"builtin": {"person_fax": False}}}, "fields.builtin.person_fax: unknown"),
        ({"fields": {"organization": {"zoho": "a"}}}, "fields.organization: must be an array"),
        (
            {"fields": {"organization": [{"zoho": "a b", "pipedrive": "name"}]}},
            "fields.organization[0].zoho: must be a dotted path",
        ),
        (
            {"fields": {"organization": [{"zoho": "a", "pipedrive": "custom: "}]}},
            "fields.organization[0].pipedrive: custom: must be followed by",
        ),
        (
            {"fields": {"person": [{"zoho": "a", "pipedrive": "address.street"}]}},
            "fields.person[0].pipedrive: must be one of email, first_name",
        ),
        (
            {"fields": {"person": [{"zoho": "a", "pipedrive": "email", "system_of_record": "x"}]}},
            "fields.person[0].system_of_record: must be one of zoho, pipedrive, newest",
        ),
        (
            {
                "fields": {
                    "person": [
                        {"zoho": "a", "pipedrive": "custom:X", "direction": "zoho->pipedrive"},
                        {"zoho": "b", "pipedrive": "custom:X"},
                    ]
                }
            },
            "fields.person[1] writes pipedrive 'custom:X' already written by [0]",
        ),
        ({"sync": {"backfill_token_cap": 0}}, "sync.backfill_token_cap: must be at least 1"),
        ({"sync": {"reserve_fraction": "0.1"}}, "sync.reserve_fraction"),
        ({"sync": {"zoho_reconcile_minutes": 1.0}}, "must be a whole number"),
        ({"sync": {"overlap_seconds": -1}}, "sync.overlap_seconds: must be at least 0"),
        ({"schedule": {}}, "schedule: unknown setting"),
    ],
)
def test_each_bad_setting_is_named_with_its_path(data, problem):
    problems = problems_of(data)
    assert any(problem in p for p in problems), problems


def test_one_way_mappings_may_share_a_target_in_opposite_directions():
    config = parse_config(
        {
            "fields": {
                "organization": [
                    {"zoho": "website", "pipedrive": "custom:A", "direction": "zoho->pipedrive"},
                    {"zoho": "website", "pipedrive": "custom:B", "direction": "pipedrive->zoho"},
                ]
            }
        }
    )
    assert len(config.fields.organization) == 2


def test_config_error_message_lists_every_problem():
    with pytest.raises(ConfigError) as info:
        parse_config({"contacts": {"vendor_rule": "x", "inactive_rule": "y"}})
    assert str(info.value).startswith("2 configuration problem(s):")
    assert "contacts.vendor_rule" in str(info.value)
    assert "contacts.inactive_rule" in str(info.value)


class TestMappings:
    def test_default_organization_mappings(self):
        mappings = SyncConfig().mappings("organization")
        pairs = [(m.zoho, m.pipedrive, m.direction, m.system_of_record) for m in mappings]
        assert pairs == [
            ("contact_id", "custom:Zoho Contact ID", "zoho->pipedrive", "zoho"),
            ("custom_fields.cf_pipedrive_id", "id", "pipedrive->zoho", "pipedrive"),
            ("contact_name", "name", "both", "newest"),
            ("billing_address.address", "address.street", "both", "newest"),
            ("billing_address.street2", "address.subpremise", "both", "newest"),
            ("billing_address.city", "address.locality", "both", "newest"),
            ("billing_address.state", "address.admin_area_level_1", "both", "newest"),
            ("billing_address.zip", "address.postal_code", "both", "newest"),
            ("billing_address.country", "address.country", "both", "newest"),
            ("currency_code", "custom:Zoho Currency", "zoho->pipedrive", "zoho"),
            ("payment_terms_label", "custom:Zoho Payment Terms", "zoho->pipedrive", "zoho"),
        ]

    def test_default_person_mappings(self):
        mappings = SyncConfig().mappings("person")
        assert [(m.zoho, m.pipedrive, m.transform) for m in mappings] == [
            ("contact_id", "custom:Zoho Contact ID", None),
            ("first_name", "first_name", None),
            ("last_name", "last_name", None),
            ("email", "email", "email"),
            ("phone", "phone", "phone"),
            ("mobile", "mobile", "phone"),
        ]

    def test_builtin_parts_can_be_switched_off(self):
        config = parse_config(
            {
                "fields": {
                    "zoho_contact_id": "",
                    "zoho_pipedrive_id": "",
                    "builtin": {
                        "organization_name": False,
                        "organization_address": False,
                        "organization_billing": False,
                        "person_name": False,
                        "person_email": False,
                        "person_phone": False,
                        "person_mobile": False,
                    },
                }
            }
        )
        assert config.mappings("organization") == ()
        assert config.mappings("person") == ()

    def test_a_billing_field_can_be_switched_off_alone(self):
        config = parse_config({"fields": {"currency": ""}})
        pipedrive_keys = [m.pipedrive for m in config.mappings("organization")]
        assert "custom:Zoho Currency" not in pipedrive_keys
        assert "custom:Zoho Payment Terms" in pipedrive_keys

    def test_extra_mapping_of_a_builtin_key_replaces_the_builtin(self):
        config = parse_config(
            {
                "fields": {
                    "organization": [
                        {
                            "zoho": "company_name",
                            "pipedrive": "name",
                            "direction": "zoho->pipedrive",
                            "system_of_record": "zoho",
                        }
                    ]
                }
            }
        )
        names = [m for m in config.mappings("organization") if m.pipedrive == "name"]
        assert names == [
            FieldMapping("company_name", "name", "zoho->pipedrive", system_of_record="zoho")
        ]

    def test_mark_rule_adds_the_status_field_both_entities(self):
        config = parse_config({"contacts": {"inactive_rule": "mark"}})
        for entity in ("organization", "person"):
            status = [m for m in config.mappings(entity) if m.zoho == "status"]
            assert status == [
                FieldMapping(
                    "status",
                    "custom:Zoho Status",
                    "zoho->pipedrive",
                    system_of_record="zoho",
                    builtin="status",
                )
            ]
        assert all(m.zoho != "status" for m in SyncConfig().mappings("organization"))


@pytest.mark.parametrize(
    ("direction", "to_pipedrive", "to_zoho"),
    [("both", True, True), ("zoho->pipedrive", True, False), ("pipedrive->zoho", False, True)],
)
def test_field_mapping_flows(direction, to_pipedrive, to_zoho):
    mapping = FieldMapping("a", "custom:A", direction)
    assert mapping.flows_to("pipedrive") is to_pipedrive
    assert mapping.flows_to("zoho") is to_zoho
    assert mapping.flows_from("zoho") is to_pipedrive
    assert mapping.flows_from("pipedrive") is to_zoho


def test_required_custom_fields_lists_names_and_types():
    config = parse_config(
        tomllib.loads(EXAMPLE_TOML)
        | {
            "contacts": {"inactive_rule": "mark"},
            "routing": {"field": "Region", "rules": {"DE": "zoho-eu"}},
        }
    )
    required = config.required_custom_fields()
    assert [s.name for s in required["organization"]] == [
        "Zoho Contact ID",
        "Zoho Currency",
        "Zoho Payment Terms",
        "Zoho Status",
        "Website",
        "VAT ID",
        "Region",
    ]
    assert [s.name for s in required["person"]] == ["Zoho Contact ID", "Zoho Status", "Job Title"]
    assert {(s.name, s.field_type) for s in required["deal"]} == {
        ("Zoho Invoice Total", "monetary"),
        ("Zoho Invoice Balance", "monetary"),
        ("Zoho Invoice Date", "date"),
        ("Zoho Invoice Due Date", "date"),
        ("Zoho Invoice Status", "varchar"),
        ("Zoho Invoice Number", "varchar"),
        ("Zoho Payment Status", "varchar"),
        ("Zoho Last Payment Date", "date"),
        ("Zoho Expected Payment Date", "date"),
    }


def test_required_custom_fields_leave_out_switched_off_deal_fields():
    config = parse_config({"fields": {"deal": {"total": "", "number": {"enabled": False}}}})
    names = {s.name for s in config.required_custom_fields()["deal"]}
    assert "Zoho Invoice Total" not in names
    assert "Zoho Invoice Number" not in names
    assert "Zoho Invoice Balance" in names


def test_config_is_frozen():
    config = SyncConfig()
    with pytest.raises(AttributeError):
        config.contacts = None  # type: ignore[misc, assignment]


toml_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 100)
    | st.floats(allow_nan=False)
    | st.sampled_from(["", "both", "skip", "custom:X", "name", "zoho->pipedrive", "(\\d+)", "("])
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["zoho", "pipedrive", "direction", "rules", "name", "enabled", "x"]),
            children,
            max_size=3,
        )
    ),
    max_leaves=8,
)
section_names = st.sampled_from(["contacts", "routing", "deals", "fields", "sync", "other"])
setting_names = st.sampled_from(
    [
        "vendor_rule",
        "inactive_rule",
        "rules",
        "default",
        "field",
        "match_pattern",
        "statuses",
        "deal",
        "builtin",
        "organization",
        "person",
        "total",
        "reserve_fraction",
        "backfill_token_cap",
        "zoho_status",
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        section_names,
        st.dictionaries(setting_names, toml_values, max_size=4) | toml_values,
        max_size=4,
    )
)
def test_any_document_gives_a_config_or_a_config_error(document):
    outcome: SyncConfig | list[str]
    try:
        outcome = parse_config(document)
    except ConfigError as exc:
        outcome = exc.problems
    if isinstance(outcome, list):
        assert outcome
        assert all(isinstance(p, str) and p for p in outcome)
    else:
        assert isinstance(outcome, SyncConfig)
