"""Reading and writing mapped fields, canonical views, hashes and compare-before-write plans.

Records are plain dicts in the real API shapes: a Zoho Books contact (or contact person) and a
Pipedrive v2 organization (or person) whose ``custom_fields`` are keyed by 40-character keys.
Custom field NAMES are turned into keys through ``field_keys`` (name -> key, for the entity type
at hand), which the caller resolves from Pipedrive's field registry.

The three uses:

* :func:`build_record` maps a record from one side into the other side's shape (create body).
* :func:`mapped_view` / :func:`fields_hash` give a canonical, hashable view of only the mapped
  fields, for echo suppression: store the hash of what was written, skip an inbound change whose
  view hashes the same.
* :func:`plan_update` / :func:`diff` compare a target record with the desired one and apply the
  conflict rules, producing the audit diff and a payload holding only what changed.
* :func:`pipedrive_snapshot` keeps only the mapped fields of a Pipedrive record, so later updates
  can be planned against it without reading the record again; :func:`needs_whole_record` tells
  when such a plan would send values the snapshot does not hold.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from connector.errors import ConfigError
from connector.mapping.config import (
    CUSTOM_PREFIX,
    Direction,
    Entity,
    FieldMapping,
    Side,
    SyncConfig,
)
from connector.mapping.transforms import TRANSFORMS

__all__ = [
    "UpdatePlan",
    "build_record",
    "diff",
    "fields_hash",
    "finish_pipedrive",
    "format_address",
    "is_empty",
    "mapped_view",
    "needs_whole_record",
    "pipedrive_snapshot",
    "plan_update",
    "read_pipedrive",
    "read_zoho",
    "write_pipedrive",
    "write_zoho",
]

_ZOHO_ADDRESS_KEYS = (
    "attention",
    "address",
    "street2",
    "state_code",
    "city",
    "state",
    "zip",
    "country",
    "fax",
    "phone",
)
_ADDRESS_SUBFIELDS = (
    "route",
    "street_number",
    "subpremise",
    "locality",
    "sublocality",
    "admin_area_level_1",
    "admin_area_level_2",
    "postal_code",
    "country",
)


def is_empty(value: Any) -> bool:
    """Whether a value counts as empty: ``None``, blank text, or an empty list or mapping."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | tuple | dict):
        return not value
    return False


def _other(side: Side) -> Side:
    return "zoho" if side == "pipedrive" else "pipedrive"


# --------------------------------------------------------------------------------------------
# Zoho paths
# --------------------------------------------------------------------------------------------


def _zoho_custom_field_matches(item: Mapping[str, Any], name: str) -> bool:
    if item.get("api_name") == name:
        return True
    label = item.get("label")
    if isinstance(label, str) and label.casefold() == name.casefold():
        return True
    return name.isdigit() and str(item.get("index", "")) == name


def read_zoho(record: Mapping[str, Any], path: str) -> Any:
    """Read a dotted path from a Zoho record.

    ``custom_fields.<name>`` finds the custom field whose ``api_name`` is ``<name>``, whose
    ``label`` equals it ignoring case, or whose ``index`` is it (digits). Missing -> ``None``.
    """
    head, _, rest = path.partition(".")
    if head == "custom_fields" and rest:
        for item in record.get("custom_fields") or ():
            if isinstance(item, Mapping) and _zoho_custom_field_matches(item, rest):
                return item.get("value")
        return None
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def write_zoho(record: dict[str, Any], path: str, value: Any) -> None:
    """Write a dotted path into a Zoho create/update body.

    Custom fields are written as ``{"api_name": name, "value": value}`` when the name starts
    with ``cf_``, as ``{"index": n, ...}`` for digits, else as ``{"label": name, ...}``.
    """
    head, _, rest = path.partition(".")
    if head == "custom_fields" and rest:
        items: list[dict[str, Any]] = record.setdefault("custom_fields", [])
        for item in items:
            if _zoho_custom_field_matches(item, rest):
                item["value"] = value
                return
        if rest.startswith("cf_"):
            items.append({"api_name": rest, "value": value})
        elif rest.isdigit():
            items.append({"index": int(rest), "value": value})
        else:
            items.append({"label": rest, "value": value})
        return
    parts = path.split(".")
    target = record
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


# --------------------------------------------------------------------------------------------
# Pipedrive keys
# --------------------------------------------------------------------------------------------


def _custom_key(name: str, field_keys: Mapping[str, str]) -> str:
    try:
        return field_keys[name]
    except KeyError:
        raise ConfigError(
            [f"Pipedrive field {name!r} has no key: create it or fix its name in the config"]
        ) from None


def _address(record: Mapping[str, Any]) -> Mapping[str, Any]:
    address = record.get("address")
    if isinstance(address, Mapping):
        return address
    if isinstance(address, str):
        # Search results and v1 payloads carry the address as one string.
        return {"value": address}
    return {}


def _street(address: Mapping[str, Any]) -> Any:
    route, number = address.get("route"), address.get("street_number")
    if not is_empty(route) and not is_empty(number):
        # The typed value tells the local order ("Hauptstrasse 5" vs "5 Main St").
        value = address.get("value") or ""
        if isinstance(value, str) and f"{route} {number}" in value:
            return f"{route} {number}"
        return f"{number} {route}"
    if not is_empty(route):
        return route
    if all(is_empty(address.get(part)) for part in _ADDRESS_SUBFIELDS):
        # Not geocoded: the only thing Pipedrive has is the line the user typed.
        return address.get("value")
    return None


def _find_email(emails: list[Any]) -> int | None:
    for index, item in enumerate(emails):
        if isinstance(item, Mapping) and item.get("primary"):
            return index
    return 0 if emails and isinstance(emails[0], Mapping) else None


def _find_phone(phones: list[Any], label: str) -> int | None:
    for index, item in enumerate(phones):
        if isinstance(item, Mapping) and item.get("label") == label:
            return index
    if label == "work":
        for index, item in enumerate(phones):
            if (
                isinstance(item, Mapping)
                and item.get("primary")
                and item.get("label")
                in (
                    None,
                    "",
                    "other",
                )
            ):
                return index
    return None


def _person_names(record: Mapping[str, Any]) -> tuple[Any, Any]:
    first, last = record.get("first_name"), record.get("last_name")
    if is_empty(first) and is_empty(last):
        name = record.get("name")
        if isinstance(name, str) and name.strip():
            first, _, last = name.strip().partition(" ")
            return first, last.strip() or None
    return first, last


def read_pipedrive(record: Mapping[str, Any], key: str, field_keys: Mapping[str, str]) -> Any:
    """Read a mapping key from a Pipedrive v2 organization or person.

    Keys: ``custom:<name>`` (monetary/address values give their ``value``), ``address.street``
    (route with street number) and other ``address.<part>``, ``email`` (primary), ``phone``
    (labelled ``work``), ``mobile`` (labelled ``mobile``), ``first_name``/``last_name``
    (split from ``name`` when absent), or any top-level key.

    Raises:
        ConfigError: a custom field name has no key in ``field_keys``.
    """
    if key.startswith(CUSTOM_PREFIX):
        field_key = _custom_key(key[len(CUSTOM_PREFIX) :], field_keys)
        value = (record.get("custom_fields") or {}).get(field_key)
        if isinstance(value, Mapping) and "value" in value:
            return value["value"]
        return value
    if key.startswith("address."):
        part = key[len("address.") :]
        address = _address(record)
        return _street(address) if part == "street" else address.get(part)
    if key == "email":
        emails = list(record.get("emails") or ())
        index = _find_email(emails)
        return None if index is None else emails[index].get("value")
    if key in ("phone", "mobile"):
        phones = list(record.get("phones") or ())
        index = _find_phone(phones, "work" if key == "phone" else "mobile")
        return None if index is None else phones[index].get("value")
    if key in ("first_name", "last_name"):
        first, last = _person_names(record)
        return first if key == "first_name" else last
    return record.get(key)


def write_pipedrive(
    record: dict[str, Any], key: str, value: Any, field_keys: Mapping[str, str]
) -> None:
    """Write a mapping key into a Pipedrive v2 create/update body (see :func:`read_pipedrive`).

    ``emails``/``phones`` items already in ``record`` are updated in place, so other addresses
    and numbers survive. ``address.street`` goes to ``route`` and clears ``street_number``.
    ``id`` is never written. Call :func:`finish_pipedrive` once all keys are written.
    """
    if key == "id":
        return
    if key.startswith(CUSTOM_PREFIX):
        field_key = _custom_key(key[len(CUSTOM_PREFIX) :], field_keys)
        record.setdefault("custom_fields", {})[field_key] = value
        return
    if key.startswith("address."):
        part = key[len("address.") :]
        address = record.setdefault("address", {})
        if part == "street":
            address["route"] = value
            address.pop("street_number", None)
        else:
            address[part] = value
        return
    if key == "email":
        emails = record.setdefault("emails", [])
        index = _find_email(emails)
        if index is not None:
            emails[index] = {**emails[index], "value": value}
        elif not is_empty(value):
            emails.insert(0, {"value": value, "primary": True, "label": "work"})
        return
    if key in ("phone", "mobile"):
        label = "work" if key == "phone" else "mobile"
        phones = record.setdefault("phones", [])
        index = _find_phone(phones, label)
        if index is not None:
            phones[index] = {**phones[index], "value": value}
        elif not is_empty(value):
            item = {"value": value, "primary": False, "label": label}
            # The work phone leads, as Zoho's "phone" is the main number.
            phones.insert(0 if label == "work" else len(phones), item)
        return
    record[key] = value


def format_address(address: Mapping[str, Any]) -> str:
    """The one-line ``value`` Pipedrive requires for an address, built from its parts."""
    street = _street(address) if not is_empty(address.get("route")) else None
    region = " ".join(
        str(address[p]).strip()
        for p in ("admin_area_level_1", "postal_code")
        if not is_empty(address.get(p))
    )
    parts = [street, address.get("subpremise"), address.get("locality"), region]
    parts.append(address.get("country"))
    return ", ".join(str(p).strip() for p in parts if not is_empty(p))


def finish_pipedrive(record: dict[str, Any], entity: Entity) -> dict[str, Any]:
    """Make a Pipedrive body valid: drop empty list items, fill ``address.value``, fix names."""
    for list_key in ("emails", "phones"):
        if list_key in record:
            items = [i for i in record[list_key] if not is_empty(i.get("value"))]
            if items and not any(i.get("primary") for i in items):
                items[0] = {**items[0], "primary": True}
            record[list_key] = items
    if "address" in record:
        address = {k: v for k, v in record["address"].items() if k != "formatted_address"}
        address = {k: v for k, v in address.items() if k == "value" or not is_empty(v)}
        if any(k != "value" for k in address):
            address["value"] = format_address(address)
        elif is_empty(address.get("value")):
            address = {}
        record["address"] = address or None
    if entity == "person" and ("first_name" in record or "last_name" in record):
        # Pipedrive v2 person writes take "name" only (first/last exist in responses alone).
        first, last = record.pop("first_name", None), record.pop("last_name", None)
        name = " ".join(str(part).strip() for part in (first, last) if not is_empty(part))
        if name:
            record["name"] = name
    return record


# --------------------------------------------------------------------------------------------
# Canonical views
# --------------------------------------------------------------------------------------------


def _read(record: Mapping[str, Any], side: Side, path: str, field_keys: Mapping[str, str]) -> Any:
    if side == "zoho":
        return read_zoho(record, path)
    return read_pipedrive(record, path, field_keys)


def _convert(value: Any, mapping: FieldMapping, to_side: Side) -> Any:
    if mapping.transform is None or not isinstance(value, str):
        return value
    transform = TRANSFORMS[mapping.transform]
    return transform.to_pipedrive(value) if to_side == "pipedrive" else transform.to_zoho(value)


def _canonical(value: Any, mapping: FieldMapping, side: Side) -> Any:
    if is_empty(value):
        return None
    if isinstance(value, str):
        text = value.strip()
        if mapping.transform is not None:
            # Compare through the round-trip image so one-way transforms settle.
            text = _convert(_convert(text, mapping, _other(side)), mapping, side)
            text = TRANSFORMS[mapping.transform].canonical(text)
        return text or None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal):
        return format(Decimal(str(value)).normalize(), "f")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _selected(config: SyncConfig, entity: Entity, direction: Direction) -> Iterable[FieldMapping]:
    for mapping in config.mappings(entity):
        if direction == "both":
            if mapping.direction == "both":
                yield mapping
        elif mapping.direction in (direction, "both"):
            yield mapping


def mapped_view(
    record: Mapping[str, Any],
    *,
    entity: Entity,
    side: Side,
    config: SyncConfig,
    field_keys: Mapping[str, str],
    direction: Direction | None = None,
) -> dict[str, Any]:
    """Return the canonical values of only the mapped fields of ``record``.

    Args:
        record: a record of ``side`` (a fetched one, or a body built for writing).
        entity: ``organization`` (Zoho contact <-> org) or ``person`` (contact person <-> person).
        side: which system's shape ``record`` has.
        config: the sync configuration.
        field_keys: Pipedrive custom field name -> key for this entity type.
        direction: which mappings to include: those of this direction plus ``both``; ``"both"``
            alone selects only two-way mappings. Default: the direction flowing out of ``side``,
            i.e. the fields whose change there would be synced to the other side.

    Returns:
        ``{path on side: canonical value}``; empty values are ``None``, numbers are decimal
        strings, strings are trimmed and passed through the mapping's transform.
    """
    chosen = direction or ("zoho->pipedrive" if side == "zoho" else "pipedrive->zoho")
    return {
        m.path(side): _canonical(_read(record, side, m.path(side), field_keys), m, side)
        for m in _selected(config, entity, chosen)
    }


def fields_hash(view: Mapping[str, Any]) -> str:
    """Return a stable sha256 hex digest of a mapped view (key order does not matter)."""
    canonical = json.dumps(
        view, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------
# Mapping a whole record
# --------------------------------------------------------------------------------------------


def build_record(
    source: Mapping[str, Any],
    *,
    entity: Entity,
    source_side: Side,
    config: SyncConfig,
    field_keys: Mapping[str, str],
) -> dict[str, Any]:
    """Map every field flowing out of ``source_side`` into a body in the other side's shape.

    Empty source values are left out, so the result is suitable as a create body and as the
    ``desired`` argument of :func:`plan_update`.
    """
    target_side = _other(source_side)
    result: dict[str, Any] = {}
    for mapping in config.mappings(entity):
        if not mapping.flows_to(target_side):
            continue
        value = _read(source, source_side, mapping.path(source_side), field_keys)
        if is_empty(value):
            continue
        if isinstance(value, str):
            value = value.strip()
        if source_side == "pipedrive" and mapping.pipedrive == "id":
            value = str(value)
        value = _convert(value, mapping, target_side)
        if target_side == "zoho":
            write_zoho(result, mapping.zoho, value)
        else:
            write_pipedrive(result, mapping.pipedrive, value, field_keys)
    if target_side == "pipedrive":
        finish_pipedrive(result, entity)
    return result


# --------------------------------------------------------------------------------------------
# Compare before write
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpdatePlan:
    """What to write to a target record, and why other differences were left alone.

    Attributes:
        changes: ``{path: (old, new)}`` for the audit trail; paths are the target side's.
        payload: update body with only the changed fields (empty: nothing to write).
        skipped: ``{path: reason}`` for differences the conflict rules kept from being written.
    """

    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _skip_reason(
    mapping: FieldMapping,
    old: Any,
    new: Any,
    target: Side,
    source_modified: dt.datetime | None,
    target_modified: dt.datetime | None,
) -> str | None:
    if is_empty(new) and not mapping.overwrite_with_empty:
        return "an empty value does not overwrite a filled one"
    if is_empty(old):
        return None
    if mapping.system_of_record == target:
        return f"{target} is the system of record for this field"
    if (
        mapping.system_of_record == "newest"
        and source_modified is not None
        and target_modified is not None
        and target_modified > source_modified
    ):
        return f"{target} was changed more recently"
    return None


def _pipedrive_payload(
    current: Mapping[str, Any],
    desired: Mapping[str, Any],
    changed: list[FieldMapping],
    entity: Entity,
    field_keys: Mapping[str, str],
) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    paths = {m.pipedrive for m in changed}
    if any(p.startswith("address.") for p in paths):
        # PATCH sets left-out address parts to null, so the whole address is sent.
        payload["address"] = {
            k: v for k, v in _address(current).items() if k in (*_ADDRESS_SUBFIELDS, "value")
        }
    if "email" in paths:
        payload["emails"] = [dict(i) for i in current.get("emails") or ()]
    if paths & {"phone", "mobile"}:
        payload["phones"] = [dict(i) for i in current.get("phones") or ()]
    if paths & {"first_name", "last_name"}:
        first, last = _person_names(current)
        payload["first_name"], payload["last_name"] = first, last
    for mapping in changed:
        value = read_pipedrive(desired, mapping.pipedrive, field_keys)
        write_pipedrive(payload, mapping.pipedrive, value, field_keys)
    finish_pipedrive(payload, entity)
    return payload


def _zoho_payload(
    current: Mapping[str, Any], desired: Mapping[str, Any], changed: list[FieldMapping]
) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    for mapping in changed:
        head = mapping.zoho.partition(".")[0]
        if head == "billing_address" and "billing_address" not in payload:
            # Sent whole so that parts the sync does not map (attention, fax...) are kept.
            existing = current.get("billing_address") or {}
            payload["billing_address"] = {
                k: v for k, v in existing.items() if k in _ZOHO_ADDRESS_KEYS
            }
        write_zoho(payload, mapping.zoho, read_zoho(desired, mapping.zoho))
    return payload


def plan_update(
    current: Mapping[str, Any],
    desired: Mapping[str, Any],
    *,
    entity: Entity,
    target: Side,
    config: SyncConfig,
    field_keys: Mapping[str, str],
    source_modified: dt.datetime | None = None,
    target_modified: dt.datetime | None = None,
) -> UpdatePlan:
    """Compare a target record with the desired one and decide what to write.

    Only fields mapped towards ``target`` are considered, compared canonically. Per field:
    an empty desired value never clears a filled one unless ``overwrite_with_empty``; when the
    target is the field's system of record a filled target value is kept; with ``newest`` the
    target is kept when ``target_modified`` is later than ``source_modified`` (both given).
    Equal times, or a missing time, let the source win.

    Args:
        current: the target record as fetched.
        desired: the body built from the source (e.g. by :func:`build_record`).
        entity: ``organization`` or ``person``.
        target: the side being written.
        config: the sync configuration.
        field_keys: Pipedrive custom field name -> key for this entity type.
        source_modified: when the source record last changed.
        target_modified: when the target record last changed.
    """
    changes: dict[str, tuple[Any, Any]] = {}
    skipped: dict[str, str] = {}
    changed: list[FieldMapping] = []
    for mapping in config.mappings(entity):
        if not mapping.flows_to(target) or (target == "pipedrive" and mapping.pipedrive == "id"):
            continue
        path = mapping.path(target)
        old = _read(current, target, path, field_keys)
        new = _read(desired, target, path, field_keys)
        if _canonical(old, mapping, target) == _canonical(new, mapping, target):
            continue
        reason = _skip_reason(mapping, old, new, target, source_modified, target_modified)
        if reason:
            skipped[path] = reason
            continue
        changes[path] = (old, new)
        changed.append(mapping)
    if not changed:
        return UpdatePlan(changes, {}, skipped)
    if target == "pipedrive":
        payload = _pipedrive_payload(current, desired, changed, entity, field_keys)
    else:
        payload = _zoho_payload(current, desired, changed)
    return UpdatePlan(changes, payload, skipped)


def diff(
    current: Mapping[str, Any],
    desired: Mapping[str, Any],
    *,
    entity: Entity,
    target: Side,
    config: SyncConfig,
    field_keys: Mapping[str, str],
    source_modified: dt.datetime | None = None,
    target_modified: dt.datetime | None = None,
) -> dict[str, tuple[Any, Any]]:
    """The field diff ``{path: (old, new)}`` of :func:`plan_update` (what would be written)."""
    return plan_update(
        current,
        desired,
        entity=entity,
        target=target,
        config=config,
        field_keys=field_keys,
        source_modified=source_modified,
        target_modified=target_modified,
    ).changes


# --------------------------------------------------------------------------------------------
# Snapshots of Pipedrive records
# --------------------------------------------------------------------------------------------

# Keys a Pipedrive PATCH replaces whole, carrying parts no mapping holds (other emails and
# phones, unmapped address parts): an update touching them is planned on the record as it is.
_WHOLE_KEYS = ("address", "emails", "phones")


def pipedrive_snapshot(
    record: Mapping[str, Any],
    *,
    entity: Entity,
    config: SyncConfig,
    field_keys: Mapping[str, str],
) -> dict[str, Any]:
    """The mapped fields of a Pipedrive v2 record, in the record's own shape.

    Holds what every mapping of ``entity`` reads (custom fields by key, address parts, primary
    email, work and mobile phones, names, ...) plus ``id``, ``update_time`` and, for persons,
    ``org_id``; :func:`mapped_view` and :func:`plan_update` give the same answers on it as on
    the whole record. Unmapped data is left out (see :func:`needs_whole_record`).

    Raises:
        ConfigError: a custom field name has no key in ``field_keys``.
    """
    snapshot: dict[str, Any] = {}
    for mapping in config.mappings(entity):
        if mapping.pipedrive == "id":
            continue
        value = read_pipedrive(record, mapping.pipedrive, field_keys)
        write_pipedrive(snapshot, mapping.pipedrive, value, field_keys)
    snapshot["id"] = record.get("id")
    snapshot["update_time"] = record.get("update_time")
    if entity == "person":
        snapshot["org_id"] = record.get("org_id")
    return snapshot


def needs_whole_record(payload: Mapping[str, Any], entity: Entity, config: SyncConfig) -> bool:
    """Whether an update payload planned on a snapshot would send values the snapshot lacks.

    Addresses, email lists and phone lists are replaced whole by a PATCH; a person's name is sent
    as both parts, which is only safe when both parts are mapped towards Pipedrive.
    """
    if any(key in payload for key in _WHOLE_KEYS):
        return True
    if entity == "person" and {"first_name", "last_name", "name"} & set(payload):
        mapped = {m.pipedrive for m in config.mappings("person") if m.flows_to("pipedrive")}
        return not {"first_name", "last_name"} <= mapped
    return False
