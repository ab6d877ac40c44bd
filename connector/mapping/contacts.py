"""Zoho Books contacts <-> Pipedrive organizations and persons, as pure functions over dicts.

Zoho shapes are the detail contact (``GET /contacts/{id}``) with ``contact_persons``; Pipedrive
shapes are v2 organizations and persons. Every function returns a new dict (a create body, also
usable as the ``desired`` side of :func:`connector.mapping.fields.plan_update`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from connector.errors import ConfigError
from connector.mapping.config import CUSTOM_PREFIX, InactiveRule, SyncConfig
from connector.mapping.countries import country_code
from connector.mapping.fields import build_record, is_empty, read_pipedrive

__all__ = [
    "ContactPlan",
    "ContactPlanKind",
    "classify_contact",
    "individual_to_person",
    "order_contact_persons",
    "pipedrive_org_to_zoho_contact",
    "pipedrive_person_to_zoho_contact",
    "pipedrive_person_to_zoho_contact_person",
    "route_organization",
    "zoho_contact_to_organization",
    "zoho_person_to_pipedrive",
]

ContactPlanKind = Literal["organization", "person", "skip"]


@dataclass(frozen=True)
class ContactPlan:
    """What a Zoho contact becomes in Pipedrive.

    Attributes:
        kind: ``organization``, ``person`` (without organization) or ``skip``.
        reason: a sentence for the audit trail.
        inactive: the Zoho contact is inactive.
        inactive_action: the configured ``inactive_rule`` when ``inactive``, else ``None``.
    """

    kind: ContactPlanKind
    reason: str
    inactive: bool = False
    inactive_action: InactiveRule | None = None


def classify_contact(contact: Mapping[str, Any], config: SyncConfig) -> ContactPlan:
    """Apply the vendor, individual-customer and inactive rules to a Zoho contact."""
    rules = config.contacts
    contact_type = str(contact.get("contact_type") or "customer").lower()
    kind: ContactPlanKind
    if contact_type == "vendor":
        kind = rules.vendor_rule
        reason = (
            "vendor skipped (contacts.vendor_rule = skip)"
            if kind == "skip"
            else f"vendor synced as {kind} (contacts.vendor_rule)"
        )
    elif str(contact.get("customer_sub_type") or "").lower() == "individual":
        kind = rules.individual_customers
        reason = f"individual customer synced as {kind} (contacts.individual_customers)"
    else:
        kind = "organization"
        reason = "business customer synced as organization"
    inactive = str(contact.get("status") or "active").lower() == "inactive"
    if inactive and kind != "skip":
        reason += f"; contact is inactive (contacts.inactive_rule = {rules.inactive_rule})"
    return ContactPlan(
        kind=kind,
        reason=reason,
        inactive=inactive,
        inactive_action=rules.inactive_rule if inactive else None,
    )


def order_contact_persons(persons: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Return contact persons with the primary contact first, others in their original order."""
    return sorted(persons, key=lambda person: not person.get("is_primary_contact"))


def zoho_contact_to_organization(
    contact: Mapping[str, Any], config: SyncConfig, field_keys: Mapping[str, str]
) -> dict[str, Any]:
    """Map a Zoho contact to a Pipedrive v2 organization body.

    Includes ``name``, ``address`` (object with ``value`` and parts), and ``custom_fields``
    (``Zoho Contact ID``, billing fields, mapped extra fields), keyed by ``field_keys``.

    Raises:
        ConfigError: a configured Pipedrive field name has no key in ``field_keys``.
    """
    return build_record(
        contact,
        entity="organization",
        source_side="zoho",
        config=config,
        field_keys=field_keys,
    )


def zoho_person_to_pipedrive(
    contact_person: Mapping[str, Any],
    *,
    org_id: int | None,
    zoho_contact_id: str | None,
    config: SyncConfig,
    field_keys: Mapping[str, str],
    contact_status: str | None = None,
) -> dict[str, Any]:
    """Map a Zoho contact person to a Pipedrive v2 person body.

    ``emails`` gets the email (label ``work``, primary); ``phones`` the phone (label ``work``)
    and the mobile (label ``mobile``). Names go as ``first_name`` + ``last_name`` when both are
    known, else as ``name``.

    Args:
        contact_person: an item of the Zoho contact's ``contact_persons``.
        org_id: the Pipedrive organization to attach the person to, if any.
        zoho_contact_id: the parent Zoho contact's id, written to ``Zoho Contact ID``.
        config: the sync configuration.
        field_keys: Pipedrive person custom field name -> key.
        contact_status: the parent contact's status, written when ``inactive_rule = "mark"``.
    """
    source = dict(contact_person)
    source["contact_id"] = zoho_contact_id
    source["status"] = contact_status
    body = build_record(
        source, entity="person", source_side="zoho", config=config, field_keys=field_keys
    )
    if org_id is not None:
        body["org_id"] = org_id
    return body


def individual_to_person(
    contact: Mapping[str, Any], config: SyncConfig, field_keys: Mapping[str, str]
) -> dict[str, Any]:
    """Map an individual Zoho customer to a Pipedrive person without organization.

    The primary contact person supplies name, email and phones; paths it lacks (custom fields
    and other contact-level data) are read from the contact. Without any person name, the
    contact's ``contact_name`` becomes the person's name.
    """
    persons = order_contact_persons(contact.get("contact_persons") or [])
    primary = persons[0] if persons else {}
    source: dict[str, Any] = {k: v for k, v in contact.items() if k != "contact_persons"}
    source.update({k: v for k, v in primary.items() if not is_empty(v)})
    body = zoho_person_to_pipedrive(
        source,
        org_id=None,
        zoho_contact_id=contact.get("contact_id"),
        config=config,
        field_keys=field_keys,
        contact_status=contact.get("status"),
    )
    has_name = any(not is_empty(body.get(k)) for k in ("name", "first_name", "last_name"))
    if not has_name and not is_empty(contact.get("contact_name")):
        body["name"] = str(contact["contact_name"]).strip()
    return body


def pipedrive_org_to_zoho_contact(
    org: Mapping[str, Any], config: SyncConfig, field_keys: Mapping[str, str]
) -> dict[str, Any]:
    """Map a Pipedrive v2 organization to a Zoho Books contact create/update body.

    Gives ``contact_name`` and ``company_name`` (the org name), ``contact_type`` ``customer``,
    ``billing_address`` from the address object, ``custom_fields`` with the Pipedrive id
    (``cf_pipedrive_id`` by default) and the mapped extra fields.
    """
    body = build_record(
        org, entity="organization", source_side="pipedrive", config=config, field_keys=field_keys
    )
    body["contact_type"] = "customer"
    body["customer_sub_type"] = "business"
    if not is_empty(body.get("contact_name")):
        body["company_name"] = body["contact_name"]
    return body


def pipedrive_person_to_zoho_contact_person(
    person: Mapping[str, Any], config: SyncConfig, field_keys: Mapping[str, str]
) -> dict[str, Any]:
    """Map a Pipedrive v2 person to a Zoho contact person body (first/last name, email, phones)."""
    return build_record(
        person, entity="person", source_side="pipedrive", config=config, field_keys=field_keys
    )


def pipedrive_person_to_zoho_contact(
    person: Mapping[str, Any], config: SyncConfig, field_keys: Mapping[str, str]
) -> dict[str, Any]:
    """Map a Pipedrive person without organization to an individual Zoho customer body.

    The person becomes the contact's primary contact person; the Pipedrive person id goes to the
    cross-reference custom field.
    """
    contact_person = pipedrive_person_to_zoho_contact_person(person, config, field_keys)
    contact_person["is_primary_contact"] = True
    full_name = (
        " ".join(
            str(contact_person[k]).strip()
            for k in ("first_name", "last_name")
            if not is_empty(contact_person.get(k))
        )
        or str(person.get("name") or "").strip()
    )
    body: dict[str, Any] = {
        "contact_name": full_name,
        "contact_type": "customer",
        "customer_sub_type": "individual",
        "contact_persons": [contact_person],
    }
    id_field = config.fields.zoho_pipedrive_id
    if id_field and person.get("id") is not None:
        body["custom_fields"] = [{"api_name": id_field, "value": str(person["id"])}]
    return body


def _routing_matches(rule_value: str, field_value: str) -> bool:
    if rule_value.casefold() == field_value.casefold():
        return True
    rule_country, field_country = country_code(rule_value), country_code(field_value)
    return rule_country is not None and rule_country == field_country


def route_organization(
    org: Mapping[str, Any],
    config: SyncConfig,
    field_keys: Mapping[str, str],
    connections: Sequence[str],
) -> str:
    """Pick the Zoho connection a Pipedrive organization belongs to.

    The routing field's value is matched against ``routing.rules`` ignoring case (country
    values also match by country, so "DE" matches a "Germany" rule). No match: the default.
    No default: the only connection, if there is just one.

    Args:
        org: a Pipedrive v2 organization.
        config: the sync configuration.
        field_keys: Pipedrive organization custom field name -> key.
        connections: names of the connected Zoho organizations.

    Raises:
        ConfigError: the rule or default names an unknown connection, or no rule decides.
    """
    routing = config.routing
    if not connections:
        raise ConfigError(["routing: no Zoho organization is connected"])
    key = routing.pipedrive_key
    value = read_pipedrive(org, key, field_keys) if routing.rules else None
    if isinstance(value, str) and value.strip():
        for rule_value, connection in routing.rules:
            if _routing_matches(rule_value, value.strip()):
                if connection not in connections:
                    raise ConfigError(
                        [
                            f"routing.rules: {rule_value!r} routes to unknown connection {connection!r}"
                        ]
                    )
                return connection
    if routing.default:
        if routing.default not in connections:
            raise ConfigError([f"routing.default: unknown connection {routing.default!r}"])
        return routing.default
    if len(connections) == 1:
        return connections[0]
    shown = key[len(CUSTOM_PREFIX) :] if key.startswith(CUSTOM_PREFIX) else key
    raise ConfigError(
        [f"routing: no rule matches {shown} = {value!r} and routing.default is not set"]
    )
