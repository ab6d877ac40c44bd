"""In-memory data of one simulated Pipedrive company: organizations, persons, deals and fields.

Records are kept in their API v2 shape (reference §3.3-3.5) with ``custom_fields`` holding only
the values that are set; :meth:`CompanyData.render` fills in the nulls. Input validation copies the
v2 strictness of reference §3.2: booleans must be booleans and numbers must not be strings.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as dt
import hashlib
import json
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from connector.errors import ApiError

__all__ = [
    "ENTITIES",
    "CompanyData",
    "EntityTable",
    "FieldDef",
    "SimulatorError",
    "entity_name",
    "fmt_time",
    "parse_time",
]

ENTITIES = ("organization", "person", "deal")
PLURALS = {"organization": "organizations", "person": "persons", "deal": "deals"}
_ALIASES = {
    **{name: name for name in ENTITIES},
    **{plural: name for name, plural in PLURALS.items()},
    "org": "organization",
    "orgs": "organization",
    "people": "person",
}
SEARCHABLE_TYPES = frozenset(
    {"address", "varchar", "text", "varchar_auto", "double", "monetary", "phone"}
)
CUSTOM_FIELD_TYPES = frozenset(
    {
        "address",
        "date",
        "daterange",
        "double",
        "enum",
        "monetary",
        "org",
        "people",
        "phone",
        "set",
        "text",
        "time",
        "timerange",
        "user",
        "varchar",
        "varchar_auto",
    }
)
ADDRESS_PARTS = (
    "value",
    "country",
    "admin_area_level_1",
    "admin_area_level_2",
    "locality",
    "sublocality",
    "route",
    "street_number",
    "subpremise",
    "postal_code",
)
STAGES = {
    1: "Lead In",
    2: "Contact Made",
    3: "Demo Scheduled",
    4: "Proposal Made",
    5: "Negotiations",
}
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME_RE = re.compile(r"^\d{2}:\d{2}(:\d{2})?$")
_RFC3339_RE = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$", re.IGNORECASE
)


class SimulatorError(ApiError):
    """A simulated API error: carries the HTTP status and the exact JSON body to answer with."""

    def __init__(
        self,
        status: int,
        error: str,
        *,
        error_info: str = "Please check developers.pipedrive.com for more information about Pipedrive API.",
        code: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(error, system="pipedrive-sim", status=status, code=code)
        self.payload: dict[str, Any] = body or {
            "success": False,
            "error": error,
            "error_info": error_info,
            "data": None,
            "additional_data": None,
        }
        if code is not None and body is None:
            self.payload["code"] = code


def bad_request(message: str) -> SimulatorError:
    """A 400 in the standard envelope."""
    return SimulatorError(400, message)


def not_found(message: str = "Entity was not found") -> SimulatorError:
    """A 404 shaped like the v2 spec's example."""
    return SimulatorError(404, message, error_info="Object was not found.")


def entity_name(name: str) -> str:
    """Canonical singular entity name for ``organizations``, ``org``, ``person`` and so on."""
    try:
        return _ALIASES[name]
    except KeyError:
        raise SimulatorError(404, f"unknown entity {name!r}") from None


def fmt_time(timestamp: float) -> str:
    """RFC 3339 in UTC with whole seconds, as Pipedrive v2 writes ``update_time``."""
    return dt.datetime.fromtimestamp(int(timestamp), tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fmt_time_v1(timestamp: float) -> str:
    """The v1 ``YYYY-MM-DD HH:MM:SS`` UTC form."""
    return dt.datetime.fromtimestamp(int(timestamp), tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def parse_time(text: str, *, allow_fraction: bool = True, name: str = "time") -> float:
    """Parse an RFC 3339 timestamp (``Z`` or offset; none means UTC) into epoch seconds."""
    match = _RFC3339_RE.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise bad_request(f'"{name}" must be a valid RFC 3339 date-time')
    date, clock, fraction, zone = match.groups()
    if fraction and not allow_fraction:
        raise bad_request(f'"{name}" must be in RFC 3339 format without milliseconds')
    zone = "+00:00" if not zone or zone.upper() == "Z" else zone
    if len(zone) == 5:
        zone = zone[:3] + ":" + zone[3:]
    try:
        parsed = dt.datetime.fromisoformat(f"{date}T{clock}{fraction or ''}{zone}")
    except ValueError:
        raise bad_request(f'"{name}" must be a valid RFC 3339 date-time') from None
    return parsed.timestamp()


def encode_cursor(payload: Mapping[str, Any]) -> str:
    """An opaque cursor, base64url of JSON like Pipedrive's (padding stripped)."""
    raw = json.dumps(dict(payload), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    """Decode a cursor from :func:`encode_cursor`; anything else is a 400."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error):
        raise bad_request("Invalid cursor") from None
    if not isinstance(value, dict):
        raise bad_request("Invalid cursor")
    return value


# --- type checks (v2 strictness) ---------------------------------------------------------------


def is_int(value: Any) -> bool:
    """An integer that is not a boolean."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An int or float that is not a boolean (strings are refused, reference §3.2)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _expect(ok: bool, key: str, kind: str) -> None:
    if not ok:
        raise bad_request(f'Validation failed: "{key}" must be {kind}')


@dataclass
class FieldDef:
    """A field definition, built-in or custom (custom ones have a 40-character hex key)."""

    id: int
    key: str
    name: str
    field_type: str
    entity: str
    custom: bool
    add_time: float
    update_time: float
    order_nr: int
    options: list[dict[str, Any]] | None = None
    add_visible_flag: bool = True
    mandatory: bool = False
    description: str | None = None
    created_by_user_id: int | None = None

    def option_ids(self) -> set[int]:
        """Ids of the enum/set options."""
        return {int(option["id"]) for option in self.options or ()}

    def v1(self) -> dict[str, Any]:
        """The v1 ``/dealFields`` row (reference §4.2)."""
        return {
            "id": self.id,
            "key": self.key,
            "name": self.name,
            "order_nr": self.order_nr,
            "field_type": self.field_type,
            "add_time": fmt_time_v1(self.add_time),
            "update_time": fmt_time_v1(self.update_time),
            "last_updated_by_user_id": self.created_by_user_id,
            "created_by_user_id": self.created_by_user_id,
            "active_flag": True,
            "edit_flag": self.custom,
            "index_visible_flag": True,
            "details_visible_flag": True,
            "add_visible_flag": self.add_visible_flag,
            "important_flag": False,
            "bulk_edit_allowed": True,
            "searchable_flag": self.custom and self.field_type in SEARCHABLE_TYPES,
            "filtering_allowed": True,
            "sortable_flag": True,
            "options": copy.deepcopy(self.options),
            "mandatory_flag": self.mandatory,
        }

    def v1_subfields(self) -> list[dict[str, Any]]:
        """The extra v1 rows for subfields (``<key>_currency``, ``<key>_until``)."""
        suffixes = {"monetary": ["currency"], "daterange": ["until"], "timerange": ["until"]}
        return [
            {
                "id": None,
                "key": f"{self.key}_{suffix}",
                "name": f"{self.name} ({suffix})",
                "field_type": "varchar",
                "edit_flag": self.custom,
                "is_subfield": True,
                "parent_id": self.id,
                "id_suffix": suffix,
            }
            for suffix in suffixes.get(self.field_type, [])
        ]

    def v2(self) -> dict[str, Any]:
        """The v2 ``/api/v2/dealFields`` item (reference §4.3)."""
        subfields: list[dict[str, Any]] | None = None
        if self.field_type == "monetary":
            subfields = [
                {
                    "field_code": "value",
                    "field_name": f"Amount of {self.name}",
                    "field_type": "double",
                },
                {
                    "field_code": "currency",
                    "field_name": f"Currency of {self.name}",
                    "field_type": "varchar",
                },
            ]
        elif self.field_type in ("daterange", "timerange"):
            kind = "date" if self.field_type == "daterange" else "time"
            subfields = [
                {"field_code": "value", "field_name": f"Start of {self.name}", "field_type": kind},
                {"field_code": "until", "field_name": f"End of {self.name}", "field_type": kind},
            ]
        return {
            "field_name": self.name,
            "field_code": self.key,
            "description": self.description,
            "field_type": self.field_type,
            "options": copy.deepcopy(self.options),
            "subfields": subfields,
            "is_custom_field": self.custom,
            "is_optional_response_field": False,
            "ui_visibility": {
                "add_visible_flag": self.add_visible_flag,
                "details_visible_flag": True,
            },
        }


# Built-in fields per entity: (key, name, type). Keys are the v1 API keys.
_BUILTIN_FIELDS: dict[str, list[tuple[str, str, str]]] = {
    "organization": [
        ("name", "Name", "varchar"),
        ("owner_id", "Owner", "user"),
        ("address", "Address", "address"),
        ("visible_to", "Visible to", "visible_to"),
        ("label_ids", "Labels", "set"),
        ("add_time", "Organization created", "date"),
        ("update_time", "Update time", "date"),
    ],
    "person": [
        ("name", "Name", "varchar"),
        ("first_name", "First name", "varchar"),
        ("last_name", "Last name", "varchar"),
        ("org_id", "Organization", "org"),
        ("email", "Email", "varchar"),
        ("phone", "Phone", "phone"),
        ("owner_id", "Owner", "user"),
        ("visible_to", "Visible to", "visible_to"),
        ("label_ids", "Labels", "set"),
        ("add_time", "Person created", "date"),
        ("update_time", "Update time", "date"),
    ],
    "deal": [
        ("title", "Title", "varchar"),
        ("value", "Value", "monetary"),
        ("currency", "Currency", "varchar"),
        ("status", "Status", "status"),
        ("org_id", "Organization", "org"),
        ("person_id", "Contact person", "people"),
        ("pipeline_id", "Pipeline", "double"),
        ("stage_id", "Stage", "stage"),
        ("owner_id", "Owner", "user"),
        ("won_time", "Won time", "date"),
        ("lost_time", "Lost time", "date"),
        ("close_time", "Deal closed on", "date"),
        ("expected_close_date", "Expected close date", "date"),
        ("probability", "Probability", "double"),
        ("lost_reason", "Lost reason", "varchar"),
        ("visible_to", "Visible to", "visible_to"),
        ("label_ids", "Labels", "set"),
        ("add_time", "Deal created", "date"),
        ("update_time", "Update time", "date"),
    ],
}


class EntityTable:
    """Records of one entity type, in id order, with cached sort orders for paging."""

    def __init__(self) -> None:
        self.records: dict[int, dict[str, Any]] = {}
        self.order: list[int] = []
        self.next_id = 1
        self.version = 0
        self._sorted: dict[str, tuple[int, list[tuple[Any, int]]]] = {}

    def add(self, record: dict[str, Any]) -> None:
        """Insert a record whose ``id`` came from :meth:`allocate`."""
        self.records[record["id"]] = record
        self.order.append(record["id"])
        self.version += 1

    def allocate(self) -> int:
        """The next id."""
        new_id = self.next_id
        self.next_id += 1
        return new_id

    def touch(self) -> None:
        """Invalidate cached sort orders after a change."""
        self.version += 1

    def keys_sorted(self, sort_by: str) -> list[tuple[Any, int]]:
        """``(sort value, id)`` pairs ascending; rebuilt only when the table changed."""
        if sort_by == "id":
            return [(record_id, record_id) for record_id in self.order]
        cached = self._sorted.get(sort_by)
        if cached and cached[0] == self.version:
            return cached[1]
        column = "_update_ts" if sort_by == "update_time" else "_add_ts"
        pairs = sorted((int(rec[column]), rec["id"]) for rec in self.records.values())
        self._sorted[sort_by] = (self.version, pairs)
        return pairs

    def iter_from(
        self, sort_by: str, descending: bool, after: tuple[Any, int] | None
    ) -> Iterator[dict[str, Any]]:
        """Records in sort order, strictly after the cursor position ``after``."""
        if sort_by == "id":
            order = self.order
            if not descending:
                start = bisect_right(order, after[1]) if after else 0
                for index in range(start, len(order)):
                    yield self.records[order[index]]
            else:
                stop = bisect_left(order, after[1]) if after else len(order)
                for index in range(stop - 1, -1, -1):
                    yield self.records[order[index]]
            return
        pairs = self.keys_sorted(sort_by)
        if not descending:
            start = bisect_right(pairs, (after[0], after[1])) if after else 0
            for index in range(start, len(pairs)):
                yield self.records[pairs[index][1]]
        else:
            stop = bisect_left(pairs, (after[0], after[1])) if after else len(pairs)
            for index in range(stop - 1, -1, -1):
                yield self.records[pairs[index][1]]


@dataclass
class Change:
    """What a write did, for webhooks: the entity, old and new full records, the action."""

    entity: str
    action: str  # create | change | delete
    entity_id: int
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    user_id: int
    change_source: str
    merged_to_id: int | None = None
    merged_from_id: int | None = None
    is_bulk_edit: bool = False


_ALLOWED_KEYS: dict[str, frozenset[str]] = {
    "organization": frozenset(
        {
            "name",
            "owner_id",
            "add_time",
            "update_time",
            "visible_to",
            "label_ids",
            "address",
            "custom_fields",
        }
    ),
    # The v2 person write schema (PersonRequestBody) has "name" and no first/last name; the
    # response still carries first_name/last_name, derived from the name.
    "person": frozenset(
        {
            "name",
            "owner_id",
            "org_id",
            "add_time",
            "update_time",
            "emails",
            "phones",
            "visible_to",
            "label_ids",
            "marketing_status",
            "custom_fields",
        }
    ),
    "deal": frozenset(
        {
            "title",
            "owner_id",
            "person_id",
            "org_id",
            "pipeline_id",
            "stage_id",
            "value",
            "currency",
            "is_deleted",
            "is_archived",
            "archive_time",
            "status",
            "probability",
            "lost_reason",
            "visible_to",
            "close_time",
            "won_time",
            "lost_time",
            "expected_close_date",
            "label_ids",
            "custom_fields",
        }
    ),
}


@dataclass
class CompanyData:
    """Every record and field definition of one company."""

    company_key: str
    now: Callable[[], float]
    user_ids: Callable[[], set[int]]
    default_user_id: int
    reject_unknown_keys: bool = True
    tables: dict[str, EntityTable] = field(default_factory=dict)
    fields: dict[str, list[FieldDef]] = field(default_factory=dict)
    field_index: dict[str, dict[str, FieldDef]] = field(default_factory=dict)
    next_field_id: int = 1
    next_option_id: int = 1
    field_counter: int = 0

    def __post_init__(self) -> None:
        created = self.now()
        for entity in ENTITIES:
            self.tables[entity] = EntityTable()
            self.fields[entity] = []
            self.field_index[entity] = {}
            for key, name, field_type in _BUILTIN_FIELDS[entity]:
                self._add_field(entity, key, name, field_type, custom=False, created=created)

    # --- fields ---------------------------------------------------------------------------------

    def _add_field(
        self,
        entity: str,
        key: str,
        name: str,
        field_type: str,
        *,
        custom: bool,
        created: float,
        options: list[dict[str, Any]] | None = None,
        user_id: int | None = None,
        add_visible_flag: bool = True,
        description: str | None = None,
    ) -> FieldDef:
        definition = FieldDef(
            id=self.next_field_id,
            key=key,
            name=name,
            field_type=field_type,
            entity=entity,
            custom=custom,
            add_time=created,
            update_time=created,
            order_nr=len(self.fields[entity]) + 1,
            options=options,
            add_visible_flag=add_visible_flag,
            description=description,
            created_by_user_id=user_id,
        )
        self.next_field_id += 1
        self.fields[entity].append(definition)
        self.field_index[entity][key] = definition
        return definition

    def custom_fields(self, entity: str) -> list[FieldDef]:
        """The entity's custom field definitions, in creation order."""
        return [definition for definition in self.fields[entity] if definition.custom]

    def custom_field_count(self) -> int:
        """Custom fields across all entities (the plan cap counts them all)."""
        return sum(len(self.custom_fields(entity)) for entity in ENTITIES)

    def field_by_key(self, entity: str, key: str) -> FieldDef:
        """A field by key / field_code, else 404."""
        definition = self.field_index[entity].get(key)
        if definition is None:
            raise not_found("Field not found")
        return definition

    def create_field(
        self,
        entity: str,
        name: Any,
        field_type: Any,
        options: Any = None,
        *,
        user_id: int | None = None,
        add_visible_flag: bool = True,
        limit: int | None = None,
        description: str | None = None,
    ) -> FieldDef:
        """Create a custom field; enforces name, type, options and the plan's field cap."""
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise bad_request('Validation failed: "name" is required (1-255 characters)')
        if field_type not in CUSTOM_FIELD_TYPES:
            raise bad_request(
                f'Validation failed: "field_type" must be one of {sorted(CUSTOM_FIELD_TYPES)}'
            )
        parsed_options: list[dict[str, Any]] | None = None
        if field_type in ("enum", "set"):
            if not isinstance(options, list) or not options:
                raise bad_request(
                    'Validation failed: "options" are required for enum and set fields'
                )
            parsed_options = []
            for option in options:
                if not isinstance(option, dict) or not isinstance(option.get("label"), str):
                    raise bad_request('Validation failed: every option needs a "label"')
                parsed_options.append({"id": self.next_option_id, "label": option["label"]})
                self.next_option_id += 1
        if limit is not None and self.custom_field_count() >= limit:
            raise SimulatorError(
                403,
                "Couldn't add the custom field. Custom fields limit reached.",
                code="feature_capping_custom_fields_limit",
            )
        self.field_counter += 1
        # Keys are random per company (reference §4.1): a hash of company, entity, name, counter.
        seed = f"{self.company_key}:{entity}:{name}:{self.field_counter}"
        key = hashlib.sha1(seed.encode(), usedforsecurity=False).hexdigest()
        return self._add_field(
            entity,
            key,
            name,
            field_type,
            custom=True,
            created=self.now(),
            options=parsed_options,
            user_id=user_id,
            add_visible_flag=add_visible_flag,
            description=description,
        )

    def update_field(self, entity: str, key: str, changes: Mapping[str, Any]) -> FieldDef:
        """Rename a custom field or add options (keys never change, reference §4.1)."""
        definition = self.field_by_key(entity, key)
        if not definition.custom:
            raise bad_request("Built-in fields cannot be changed")
        name = changes.get("field_name", changes.get("name"))
        if name is not None:
            if not isinstance(name, str) or not name.strip():
                raise bad_request('Validation failed: "name" must be a non-empty string')
            definition.name = name
        options = changes.get("options")
        if options is not None and definition.field_type in ("enum", "set"):
            if not isinstance(options, list):
                raise bad_request('Validation failed: "options" must be an array')
            known = {option["label"]: option for option in definition.options or []}
            merged: list[dict[str, Any]] = []
            for option in options:
                if not isinstance(option, dict) or not isinstance(option.get("label"), str):
                    raise bad_request('Validation failed: every option needs a "label"')
                existing = known.get(option["label"])
                if existing is None and is_int(option.get("id")):
                    existing = next(
                        (o for o in definition.options or [] if o["id"] == option["id"]), None
                    )
                if existing is not None:
                    existing["label"] = option["label"]
                    merged.append(existing)
                else:
                    merged.append({"id": self.next_option_id, "label": option["label"]})
                    self.next_option_id += 1
            definition.options = merged
        definition.update_time = self.now()
        return definition

    def delete_field(self, entity: str, key: str) -> FieldDef:
        """Remove a custom field and its values."""
        definition = self.field_by_key(entity, key)
        if not definition.custom:
            raise bad_request("Built-in fields cannot be deleted")
        self.fields[entity].remove(definition)
        del self.field_index[entity][key]
        for record in self.tables[entity].records.values():
            record["custom_fields"].pop(key, None)
        return definition

    # --- validation ---------------------------------------------------------------------------

    def _check_custom_value(self, definition: FieldDef, value: Any) -> Any:
        """Validate one v2 custom field value (reference §4.4); returns the value to store."""
        key, kind = definition.key, definition.field_type
        if value is None:
            return None
        if kind in ("varchar", "varchar_auto", "phone"):
            _expect(
                isinstance(value, str) and len(value) <= 255,
                key,
                "a string of up to 255 characters",
            )
        elif kind == "text":
            _expect(isinstance(value, str) and len(value) <= 65536, key, "a string")
        elif kind == "double":
            _expect(is_number(value), key, "a number")
        elif kind == "monetary":
            _expect(
                isinstance(value, dict)
                and is_number(value.get("value"))
                and (value.get("currency") is None or isinstance(value.get("currency"), str))
                and set(value) <= {"value", "currency"},
                key,
                'an object {"value": number, "currency": "ISO code"}',
            )
            return {"value": value["value"], "currency": value.get("currency")}
        elif kind == "enum":
            _expect(
                is_int(value) and value in definition.option_ids(), key, "an existing option id"
            )
        elif kind == "set":
            _expect(
                isinstance(value, list)
                and bool(value)
                and all(is_int(item) and item in definition.option_ids() for item in value),
                key,
                "a non-empty array of existing option ids (clear it with null)",
            )
            return list(dict.fromkeys(value))
        elif kind in ("user", "org", "people"):
            _expect(is_int(value), key, "an integer id")
            if kind == "user" and value not in self.user_ids():
                raise bad_request(f'Validation failed: "{key}" user does not exist')
            target = {"org": "organization", "people": "person"}.get(kind)
            if target and value not in self.tables[target].records:
                raise bad_request(f'Validation failed: "{key}" {target} does not exist')
        elif kind == "date":
            _expect(
                isinstance(value, str) and bool(_DATE_RE.match(value)), key, "a YYYY-MM-DD date"
            )
        elif kind == "daterange":
            _expect(
                isinstance(value, dict)
                and all(
                    isinstance(value.get(p), str) and _DATE_RE.match(value[p])
                    for p in ("value", "until")
                ),
                key,
                'an object {"value": date, "until": date}',
            )
        elif kind in ("time", "timerange"):
            if isinstance(value, str):
                _expect(kind == "time" and bool(_TIME_RE.match(value)), key, "a HH:MM:SS time")
            else:
                _expect(
                    isinstance(value, dict)
                    and isinstance(value.get("value"), str)
                    and bool(_TIME_RE.match(value["value"])),
                    key,
                    'an object {"value": "HH:MM:SS", ...}',
                )
        elif kind == "address":
            _expect(
                isinstance(value, dict) and isinstance(value.get("value"), str),
                key,
                'an object with a "value"',
            )
            return {part: value.get(part) for part in (*ADDRESS_PARTS, "formatted_address")}
        return copy.deepcopy(value)

    def check_custom_fields(self, entity: str, values: Any) -> dict[str, Any]:
        """Validate a ``custom_fields`` object; unknown keys are refused like Pipedrive does."""
        _expect(isinstance(values, dict), "custom_fields", "an object")
        checked: dict[str, Any] = {}
        for key, value in values.items():
            definition = self.field_index[entity].get(key)
            if definition is None or not definition.custom:
                raise bad_request(f"Custom field with key '{key}' does not exist")
            checked[key] = self._check_custom_value(definition, value)
        return checked

    def _check_ref(self, entity: str, key: str, value: Any, *, nullable: bool = True) -> None:
        if value is None and nullable:
            return
        _expect(is_int(value), key, "an integer")
        if (
            value not in self.tables[entity].records
            or self.tables[entity].records[value]["is_deleted"]
        ):
            raise bad_request(f'Validation failed: "{key}" {entity} with id {value} does not exist')

    def _check_owner(self, value: Any) -> None:
        _expect(is_int(value), "owner_id", "an integer")
        if value not in self.user_ids():
            raise bad_request(f'Validation failed: "owner_id" user {value} does not exist')

    @staticmethod
    def _check_labelled(key: str, items: Any) -> list[dict[str, Any]]:
        """``emails``/``phones``: label defaults to work; at most one primary; first is primary."""
        _expect(isinstance(items, list), key, "an array")
        result: list[dict[str, Any]] = []
        for item in items:
            _expect(
                isinstance(item, dict) and isinstance(item.get("value"), str),
                key,
                'an array of {"value": string}',
            )
            extra = set(item) - {"value", "primary", "label"}
            if extra:
                raise bad_request(f'Validation failed: "{key}" items do not allow {sorted(extra)}')
            primary = item.get("primary", False)
            _expect(isinstance(primary, bool), f"{key}.primary", "a boolean")
            label = item.get("label") or "work"
            _expect(isinstance(label, str), f"{key}.label", "a string")
            result.append({"value": item["value"], "primary": primary, "label": label})
        primaries = sum(1 for item in result if item["primary"])
        if primaries > 1:
            raise bad_request(f'Validation failed: only one of "{key}" can be primary')
        if result and primaries == 0:
            result[0]["primary"] = True
        return result

    def _check_common(self, entity: str, key: str, value: Any) -> Any:
        """Checks shared by the three entities; returns the value to store."""
        if key == "owner_id":
            self._check_owner(value)
        elif key == "visible_to":
            _expect(is_int(value) and value in (1, 3, 5, 7), key, "one of 1, 3, 5, 7")
        elif key == "label_ids":
            _expect(
                isinstance(value, list) and all(is_int(item) for item in value),
                key,
                "an array of integers",
            )
        elif key in ("add_time", "update_time"):
            _expect(isinstance(value, str), key, "an RFC 3339 string")
            return parse_time(value, name=key)
        elif key == "custom_fields":
            return self.check_custom_fields(entity, value)
        return value

    def validate(self, entity: str, body: Any, *, creating: bool) -> dict[str, Any]:
        """Check a POST/PATCH body; returns normalized values (times as epoch seconds)."""
        if not isinstance(body, dict):
            raise bad_request("Request body must be a JSON object")
        unknown = set(body) - _ALLOWED_KEYS[entity]
        if unknown and self.reject_unknown_keys:
            raise bad_request(f"Validation failed: unknown parameter(s) {sorted(unknown)}")
        clean: dict[str, Any] = {}
        for key, value in body.items():
            if key in unknown:
                continue
            if key in (
                "owner_id",
                "visible_to",
                "label_ids",
                "add_time",
                "update_time",
                "custom_fields",
            ):
                clean[key] = self._check_common(entity, key, value)
                continue
            if entity == "organization":
                clean[key] = self._check_org_key(key, value)
            elif entity == "person":
                clean[key] = self._check_person_key(key, value)
            else:
                clean[key] = self._check_deal_key(key, value)
        if creating:
            self._check_required(entity, clean)
        return clean

    def _check_required(self, entity: str, clean: dict[str, Any]) -> None:
        if entity == "organization" and not clean.get("name"):
            raise bad_request('Validation failed: "name" is required')
        if entity == "deal" and not clean.get("title"):
            raise bad_request('Validation failed: "title" is required')
        if entity == "person" and not clean.get("name"):
            raise bad_request('Validation failed: "name" is required')

    def _check_org_key(self, key: str, value: Any) -> Any:
        if key == "name":
            _expect(isinstance(value, str) and bool(value.strip()), key, "a non-empty string")
            return value
        if key == "address":
            if value is None:
                return None
            _expect(
                isinstance(value, dict) and isinstance(value.get("value"), str),
                key,
                'an object with a "value"',
            )
            unknown = set(value) - set(ADDRESS_PARTS) - {"formatted_address"}
            if unknown:
                raise bad_request(f'Validation failed: "address" does not allow {sorted(unknown)}')
            return {part: value.get(part) for part in ADDRESS_PARTS}
        return value

    def _check_person_key(self, key: str, value: Any) -> Any:
        if key in ("name", "first_name", "last_name"):
            _expect(isinstance(value, str), key, "a string")
            return value
        if key == "org_id":
            self._check_ref("organization", key, value)
            return value
        if key in ("emails", "phones"):
            return self._check_labelled(key, value)
        if key == "marketing_status":
            _expect(
                value in ("no_consent", "unsubscribed", "subscribed", "archived"),
                key,
                "a known status",
            )
        return value

    def _check_deal_key(self, key: str, value: Any) -> Any:
        if key == "title":
            _expect(isinstance(value, str) and bool(value.strip()), key, "a non-empty string")
        elif key == "org_id":
            self._check_ref("organization", key, value)
        elif key == "person_id":
            self._check_ref("person", key, value)
        elif key == "pipeline_id":
            _expect(value == 1, key, "an existing pipeline id (1)")
        elif key == "stage_id":
            _expect(
                is_int(value) and value in STAGES, key, f"an existing stage id {sorted(STAGES)}"
            )
        elif key in ("value", "probability"):
            _expect(value is None or is_number(value), key, "a number")
        elif key in ("currency", "lost_reason"):
            _expect(value is None or isinstance(value, str), key, "a string")
        elif key in ("is_deleted", "is_archived"):
            _expect(isinstance(value, bool), key, "a boolean")
        elif key == "status":
            _expect(value in ("open", "won", "lost"), key, "one of open, won, lost")
        elif key in ("won_time", "lost_time", "close_time", "archive_time"):
            if value is not None:
                _expect(isinstance(value, str), key, "an RFC 3339 string")
                return fmt_time(parse_time(value, name=key))
        elif key == "expected_close_date":
            _expect(
                value is None or (isinstance(value, str) and bool(_DATE_RE.match(value))),
                key,
                "a YYYY-MM-DD date",
            )
        return value

    # --- records ------------------------------------------------------------------------------

    def blank(self, entity: str, record_id: int, now: float, user_id: int) -> dict[str, Any]:
        """A new record with every v2 key at its default."""
        stamp = fmt_time(now)
        common: dict[str, Any] = {
            "owner_id": user_id,
            "add_time": stamp,
            "update_time": stamp,
            "is_deleted": False,
            "visible_to": 3,
            "label_ids": [],
            "custom_fields": {},
            "_add_ts": now,
            "_update_ts": now,
        }
        if entity == "organization":
            return {"id": record_id, "name": None, "address": None, **common}
        if entity == "person":
            return {
                "id": record_id,
                "name": None,
                "first_name": None,
                "last_name": None,
                "org_id": None,
                "emails": [],
                "phones": [],
                "picture_id": None,
                **common,
            }
        return {
            "id": record_id,
            "title": None,
            "creator_user_id": user_id,
            "value": 0,
            "person_id": None,
            "org_id": None,
            "stage_id": 1,
            "pipeline_id": 1,
            "currency": "USD",
            "archive_time": None,
            "stage_change_time": None,
            "status": "open",
            "is_archived": False,
            "probability": None,
            "lost_reason": None,
            "close_time": None,
            "won_time": None,
            "lost_time": None,
            "expected_close_date": None,
            "origin": "API",
            "origin_id": None,
            **common,
        }

    def apply(
        self, entity: str, record: dict[str, Any], clean: Mapping[str, Any], now: float
    ) -> None:
        """Write validated values into ``record`` (custom fields merge key by key)."""
        for key, value in clean.items():
            if key == "custom_fields":
                for field_key, field_value in value.items():
                    if field_value is None:
                        record["custom_fields"].pop(field_key, None)
                    else:
                        record["custom_fields"][field_key] = field_value
            elif key == "add_time":
                record["_add_ts"] = value
                record["add_time"] = fmt_time(value)
            elif key == "update_time":
                record["_update_ts"] = value
                record["update_time"] = fmt_time(value)
            else:
                record[key] = copy.deepcopy(value)
        if entity == "person":
            self._settle_person_names(record, clean)
        if entity == "deal":
            self._settle_deal_status(record, clean, now)

    @staticmethod
    def _settle_person_names(record: dict[str, Any], clean: Mapping[str, Any]) -> None:
        if ("first_name" in clean or "last_name" in clean) and "name" not in clean:
            parts = [record.get("first_name") or "", record.get("last_name") or ""]
            record["name"] = " ".join(part for part in parts if part)
        elif "name" in clean:
            first, _, last = (record["name"] or "").partition(" ")
            record.setdefault("first_name", None)
            if "first_name" not in clean:
                record["first_name"] = first or None
            if "last_name" not in clean:
                record["last_name"] = last or None

    @staticmethod
    def _settle_deal_status(record: dict[str, Any], clean: Mapping[str, Any], now: float) -> None:
        if "status" not in clean:
            return
        status = clean["status"]
        stamp = fmt_time(now)
        if status == "won":
            record["won_time"] = clean.get("won_time") or record.get("won_time") or stamp
            record["close_time"] = clean.get("close_time") or record["won_time"]
            record["lost_time"] = None
        elif status == "lost":
            record["lost_time"] = clean.get("lost_time") or record.get("lost_time") or stamp
            record["close_time"] = clean.get("close_time") or record["lost_time"]
            record["won_time"] = None
        else:
            record["won_time"] = record["lost_time"] = record["close_time"] = None

    def render(
        self,
        entity: str,
        record: Mapping[str, Any],
        custom_keys: list[str] | None = None,
    ) -> dict[str, Any]:
        """The v2 REST shape: private keys dropped, every custom field present (null if unset)."""
        shaped = {
            key: copy.deepcopy(value) for key, value in record.items() if not key.startswith("_")
        }
        keys = (
            custom_keys if custom_keys is not None else [d.key for d in self.custom_fields(entity)]
        )
        values = record["custom_fields"]
        shaped["custom_fields"] = {key: copy.deepcopy(values.get(key)) for key in keys}
        return shaped

    def get(self, entity: str, record_id: int) -> dict[str, Any]:
        """The stored record, else 404."""
        record = self.tables[entity].records.get(record_id)
        if record is None:
            raise not_found()
        return record

    def custom_field_types(self, entity: str) -> dict[str, str]:
        """``{key: field_type}`` of the entity's custom fields."""
        return {definition.key: definition.field_type for definition in self.custom_fields(entity)}
