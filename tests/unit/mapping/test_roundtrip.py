"""Property tests: two-way fields survive a round trip; hashes react only to mapped fields;
an update planned on a snapshot of a Pipedrive record is the one planned on the whole record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from connector.mapping.config import Entity, Side, parse_config
from connector.mapping.contacts import (
    pipedrive_org_to_zoho_contact,
    pipedrive_person_to_zoho_contact_person,
    zoho_contact_to_organization,
    zoho_person_to_pipedrive,
)
from connector.mapping.fields import (
    fields_hash,
    is_empty,
    mapped_view,
    needs_whole_record,
    pipedrive_snapshot,
    plan_update,
)
from tests.unit.mapping.samples import ORG_KEYS, PERSON_KEYS

CONFIG = parse_config(
    {
        "fields": {
            "organization": [
                {"zoho": "website", "pipedrive": "custom:Website"},
                {
                    "zoho": "custom_fields.cf_region",
                    "pipedrive": "custom:Region",
                    "transform": "country_name",
                },
                {
                    "zoho": "custom_fields.cf_vat_id",
                    "pipedrive": "custom:VAT ID",
                    "transform": "upper",
                },
                {
                    "zoho": "custom_fields.Sector",
                    "pipedrive": "custom:Zoho Status",
                    "transform": "lower",
                },
            ],
            "person": [
                {"zoho": "designation", "pipedrive": "custom:Job Title", "transform": "strip"},
            ],
        }
    }
)

text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)
optional_text = st.none() | text
word = st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N")), max_size=10)
country = st.sampled_from(["Germany", "DE", "U.S.A", "India", "in", "Atlantis", "", "USA"]) | text


@st.composite
def zoho_contacts(draw):
    custom_fields = []
    for api_name, values in (("cf_region", country), ("cf_vat_id", text)):
        if draw(st.booleans()):
            custom_fields.append({"api_name": api_name, "value": draw(values)})
    if draw(st.booleans()):
        custom_fields.append({"label": "Sector", "value": draw(text), "index": 3})
    return {
        "contact_id": draw(st.from_regex(r"[1-9][0-9]{5,14}", fullmatch=True)),
        "contact_name": draw(text),
        "website": draw(optional_text),
        "currency_code": draw(st.sampled_from(["EUR", "USD", ""])),
        "billing_address": {
            "attention": draw(optional_text),
            "address": draw(optional_text),
            "street2": draw(optional_text),
            "city": draw(optional_text),
            "state": draw(optional_text),
            "zip": draw(optional_text),
            "country": draw(st.none() | country),
        },
        "custom_fields": custom_fields,
    }


@st.composite
def pipedrive_orgs(draw):
    address = draw(
        st.none()
        | st.fixed_dictionaries(
            {"value": optional_text},
            optional={
                part: optional_text
                for part in (
                    "route",
                    "street_number",
                    "subpremise",
                    "locality",
                    "sublocality",
                    "admin_area_level_1",
                    "admin_area_level_2",
                    "postal_code",
                    "formatted_address",
                )
            }
            | {"country": st.none() | country},
        )
    )
    custom_fields = {}
    for name, values in (
        ("Website", text),
        ("Region", country),
        ("VAT ID", text),
        ("Zoho Status", text),
        ("Zoho Currency", text),
    ):
        if draw(st.booleans()):
            custom_fields[ORG_KEYS[name]] = draw(values)
    return {
        "id": draw(st.integers(1, 10**9)),
        "name": draw(text),
        "address": address,
        "custom_fields": custom_fields,
        "update_time": "2024-01-01T00:00:00Z",
    }


@st.composite
def zoho_persons(draw):
    first = draw(word)
    # Pipedrive cannot hold a last name without a first one: "name" alone reads back as first.
    last = draw(text) if first else ""
    return {
        "contact_person_id": "1",
        "first_name": first,
        "last_name": last,
        "email": draw(optional_text),
        "phone": draw(optional_text),
        "mobile": draw(optional_text),
        "designation": draw(optional_text),
        "is_primary_contact": draw(st.booleans()),
    }


@st.composite
def pipedrive_persons(draw):
    first = draw(word)
    last = draw(word) if first else ""
    emails = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "value": text,
                    "primary": st.booleans(),
                    "label": st.sampled_from(["work", "home"]),
                }
            ),
            max_size=3,
        )
    )
    phones = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "value": text,
                    "primary": st.booleans(),
                    "label": st.sampled_from(["work", "mobile", "home", "other"]),
                }
            ),
            max_size=3,
        )
    )
    custom_fields = {PERSON_KEYS["Job Title"]: draw(text)} if draw(st.booleans()) else {}
    return {
        "id": draw(st.integers(1, 10**9)),
        "name": f"{first} {last}".strip(),
        "first_name": first or None,
        "last_name": last or None,
        "emails": emails,
        "phones": phones,
        "custom_fields": custom_fields,
    }


def both_ways(record: Any, entity: Entity, side: Side, keys: Mapping[str, str]) -> dict[str, Any]:
    return mapped_view(
        record, entity=entity, side=side, config=CONFIG, field_keys=keys, direction="both"
    )


@settings(max_examples=300, deadline=None)
@given(zoho_contacts())
def test_zoho_contact_survives_pipedrive_round_trip(contact):
    org = zoho_contact_to_organization(contact, CONFIG, ORG_KEYS) | {"id": 5}
    back = pipedrive_org_to_zoho_contact(org, CONFIG, ORG_KEYS)
    assert both_ways(back, "organization", "zoho", ORG_KEYS) == both_ways(
        contact, "organization", "zoho", ORG_KEYS
    )


@settings(max_examples=300, deadline=None)
@given(pipedrive_orgs())
def test_pipedrive_org_survives_zoho_round_trip(org):
    contact = pipedrive_org_to_zoho_contact(org, CONFIG, ORG_KEYS) | {"contact_id": "9"}
    back = zoho_contact_to_organization(contact, CONFIG, ORG_KEYS)
    assert both_ways(back, "organization", "pipedrive", ORG_KEYS) == both_ways(
        org, "organization", "pipedrive", ORG_KEYS
    )


@settings(max_examples=300, deadline=None)
@given(zoho_persons())
def test_zoho_person_survives_pipedrive_round_trip(person):
    body = zoho_person_to_pipedrive(
        person, org_id=3, zoho_contact_id="9", config=CONFIG, field_keys=PERSON_KEYS
    )
    back = pipedrive_person_to_zoho_contact_person(body | {"id": 4}, CONFIG, PERSON_KEYS)
    assert both_ways(back, "person", "zoho", PERSON_KEYS) == both_ways(
        person, "person", "zoho", PERSON_KEYS
    )


@settings(max_examples=300, deadline=None)
@given(pipedrive_persons())
def test_pipedrive_person_survives_zoho_round_trip(person):
    contact_person = pipedrive_person_to_zoho_contact_person(person, CONFIG, PERSON_KEYS)
    back = zoho_person_to_pipedrive(
        contact_person, org_id=None, zoho_contact_id="9", config=CONFIG, field_keys=PERSON_KEYS
    )
    assert both_ways(back, "person", "pipedrive", PERSON_KEYS) == both_ways(
        person, "person", "pipedrive", PERSON_KEYS
    )


def pipedrive_hash(org: dict[str, Any]) -> str:
    return fields_hash(
        mapped_view(
            org, entity="organization", side="pipedrive", config=CONFIG, field_keys=ORG_KEYS
        )
    )


@settings(max_examples=200, deadline=None)
@given(pipedrive_orgs(), st.integers(1, 10**6), text)
def test_hash_ignores_unmapped_fields_and_key_order(org, owner, unmapped):
    changed = dict(reversed(list(org.items())))
    changed["owner_id"] = owner
    changed["update_time"] = "2030-01-01T00:00:00Z"
    changed["custom_fields"] = {**org["custom_fields"], "q" * 40: unmapped}
    if isinstance(org["address"], dict):
        changed["address"] = {**org["address"], "formatted_address": unmapped}
    assert pipedrive_hash(changed) == pipedrive_hash(org)


@settings(max_examples=200, deadline=None)
@given(pipedrive_orgs(), word.filter(bool))
def test_hash_changes_with_a_mapped_field(org, suffix):
    renamed = org | {"name": f"{org['name'].strip()} {suffix}"}
    assert pipedrive_hash(renamed) != pipedrive_hash(org)
    website = org | {
        "custom_fields": {
            **org["custom_fields"],
            ORG_KEYS["Website"]: f"{org['custom_fields'].get(ORG_KEYS['Website']) or ''} {suffix}",
        }
    }
    assert pipedrive_hash(website) != pipedrive_hash(org)


def _views(record: Any, entity: Entity, keys: Mapping[str, str]) -> list[dict[str, Any]]:
    return [
        mapped_view(
            record, entity=entity, side="pipedrive", config=CONFIG, field_keys=keys, direction=d
        )
        for d in ("zoho->pipedrive", "pipedrive->zoho")
    ]


def _emptied(changes: dict[str, tuple[Any, Any]]) -> dict[str, tuple[Any, Any]]:
    return {path: (None if is_empty(old) else old, new) for path, (old, new) in changes.items()}


def _plans_alike(whole: Any, snapshot: Any, desired: Any, entity: Entity, keys: Any) -> None:
    plans = [
        plan_update(
            record,
            desired,
            entity=entity,
            target="pipedrive",
            config=CONFIG,
            field_keys=keys,
            target_modified=None,
        )
        for record in (whole, snapshot)
    ]
    # Old values may differ only in how empty they are ("" or None): the audit diff's "before".
    assert _emptied(plans[1].changes) == _emptied(plans[0].changes)
    assert plans[1].skipped == plans[0].skipped
    if not needs_whole_record(plans[1].payload, entity, CONFIG):
        assert plans[1].payload == plans[0].payload
    # A payload that carries what the snapshot lacks is always flagged.
    if plans[1].payload != plans[0].payload:
        assert needs_whole_record(plans[1].payload, entity, CONFIG)


@settings(max_examples=300, deadline=None)
@given(pipedrive_orgs(), zoho_contacts())
def test_organization_snapshot_views_and_plans_like_the_whole_record(org, contact):
    snapshot = pipedrive_snapshot(org, entity="organization", config=CONFIG, field_keys=ORG_KEYS)
    assert (snapshot["id"], snapshot["update_time"]) == (org["id"], org["update_time"])
    assert _views(snapshot, "organization", ORG_KEYS) == _views(org, "organization", ORG_KEYS)
    desired = zoho_contact_to_organization(contact, CONFIG, ORG_KEYS)
    _plans_alike(org, snapshot, desired, "organization", ORG_KEYS)


@settings(max_examples=300, deadline=None)
@given(pipedrive_persons(), zoho_persons(), st.none() | st.integers(1, 99))
def test_person_snapshot_views_and_plans_like_the_whole_record(person, zoho_person, org_id):
    person = person | {"org_id": org_id}
    snapshot = pipedrive_snapshot(person, entity="person", config=CONFIG, field_keys=PERSON_KEYS)
    assert snapshot["org_id"] == org_id
    assert _views(snapshot, "person", PERSON_KEYS) == _views(person, "person", PERSON_KEYS)
    desired = zoho_person_to_pipedrive(
        zoho_person, org_id=None, zoho_contact_id="7", config=CONFIG, field_keys=PERSON_KEYS
    )
    _plans_alike(person, snapshot, desired, "person", PERSON_KEYS)


def test_snapshot_leaves_out_what_no_mapping_reads():
    org = {
        "id": 3,
        "name": "Acme",
        "owner_id": 12,
        "update_time": "2024-01-01T00:00:00Z",
        "custom_fields": {ORG_KEYS["Website"]: "acme.example", "z" * 40: "secret"},
        "address": {"value": "1 Main St", "route": "Main St", "street_number": "1"},
        "label_ids": [1, 2],
    }
    snapshot = pipedrive_snapshot(org, entity="organization", config=CONFIG, field_keys=ORG_KEYS)
    assert "z" * 40 not in snapshot["custom_fields"]
    assert "owner_id" not in snapshot
    assert "label_ids" not in snapshot
    assert snapshot["name"] == "Acme"


def test_whole_record_is_needed_for_replaced_lists_and_half_mapped_names():
    assert needs_whole_record({"address": {}}, "organization", CONFIG)
    assert needs_whole_record({"emails": []}, "person", CONFIG)
    assert needs_whole_record({"phones": []}, "person", CONFIG)
    assert not needs_whole_record({"name": "X", "custom_fields": {}}, "organization", CONFIG)
    assert not needs_whole_record({"first_name": "A", "last_name": "B"}, "person", CONFIG)
    first_only = parse_config(
        {
            "fields": {
                "builtin": {"person_name": False},
                "person": [{"zoho": "first_name", "pipedrive": "first_name"}],
            }
        }
    )
    assert needs_whole_record({"first_name": "A", "last_name": "B"}, "person", first_only)
    assert needs_whole_record({"name": "A"}, "person", first_only)
