"""The declarative sync configuration: a TOML file, validated once, all problems reported at once.

The file named by the ``CONNECTOR_CONFIG`` environment variable is read with :func:`load_config`.
Every key is optional: a missing or empty file gives the defaults shown below. Problems are
collected from the whole file and raised together as one :class:`~connector.errors.ConfigError`
whose ``problems`` name the TOML path of each, e.g.
``fields.organization[2].direction: must be one of zoho->pipedrive, pipedrive->zoho, both``
(list positions count from 0).

Pipedrive custom fields are always named by their display NAME, never by their 40-character key:
keys differ per Pipedrive company and are resolved at start-up.

Full example (every value shown is the default unless marked "example")::

    # --- Which Zoho contacts become what in Pipedrive -------------------------------------
    [contacts]
    vendor_rule = "skip"             # Zoho vendors: skip | organization | person
    individual_customers = "person"  # customer_sub_type "individual": person (no org) | organization
    inactive_rule = "record"         # inactive Zoho contacts: record (audit only, never delete) |
                                     # mark (write the "Zoho Status" field) | delete
    sync_contact_persons = true      # Zoho contact persons <-> Pipedrive persons of the organization
    vendor_totals = false            # with vendor_rule = "organization": sum each vendor's bills
                                     # (void ones excluded) into two organization fields

    # --- Which Zoho organization a new Pipedrive organization is created in -----------------
    # Only needed when several Zoho Books organizations are connected.
    [routing]
    default = "zoho-eu"              # example: a connection name
    field = "address.country"        # name | address.<part> | custom:<Pipedrive field name>
    rules = { "Germany" = "zoho-eu", "India" = "zoho-in" }   # example; matched case-insensitively

    # --- How an invoice finds its deal ------------------------------------------------------
    [deals]
    match_pattern = '(?i)deal[\\s#:-]*(\\d+)'   # searched in reference_number; group 1 = deal id
    match_custom_field = ""          # example "cf_deal_id": Zoho invoice custom field (api_name or label)
    choose = "recent_won_else_single_open"      # | most_recent | review
    statuses = ["open", "won"]       # deal statuses an invoice may attach to (open, won, lost)
    include_draft_invoices = false   # count draft invoices in the deal sums

    # --- Field names ------------------------------------------------------------------------
    [fields]
    zoho_contact_id = "Zoho Contact ID"    # Pipedrive org/person field holding the Zoho contact_id
    zoho_pipedrive_id = "cf_pipedrive_id"  # Zoho contact custom field (api_name) holding the Pipedrive id
    currency = "Zoho Currency"             # Pipedrive org field: the contact's currency code
    payment_terms = "Zoho Payment Terms"   # Pipedrive org field: the contact's payment terms label
    zoho_status = "Zoho Status"            # Pipedrive org/person field, used when inactive_rule = "mark"
    vendor_bills_total = "Zoho Bills Total"      # Pipedrive org field (monetary), with vendor_totals
    vendor_bills_balance = "Zoho Bills Balance"  # Pipedrive org field (monetary), with vendor_totals

    [fields.deal]                          # Pipedrive deal fields filled from the deal's invoices
    total = "Zoho Invoice Total"           # monetary
    balance = "Zoho Invoice Balance"       # monetary
    date = "Zoho Invoice Date"             # date of the latest invoice
    due_date = "Zoho Invoice Due Date"     # due date of the oldest unpaid invoice
    status = "Zoho Invoice Status"         # status of the latest invoice
    number = "Zoho Invoice Number"         # number of the latest invoice
    payment_status = "Zoho Payment Status" # unpaid | partially_paid | paid | overdue
    last_payment_date = "Zoho Last Payment Date"
    expected_payment_date = { name = "Zoho Expected Payment Date", enabled = true }
    # any of them can be switched off with "" or { enabled = false }

    [fields.builtin]                       # the built-in mapping, each part can be switched off
    organization_name = true       # org name <-> contact_name (both ways, newest wins)
    organization_address = true    # org address <-> billing_address (both ways, newest wins)
    organization_billing = true    # currency, payment terms -> org fields (Zoho is system of record)
    person_name = true             # first/last name <-> contact person first/last name
    person_email = true            # primary email <-> contact person email
    person_phone = true            # phone labelled "work" <-> contact person phone
    person_mobile = true           # phone labelled "mobile" <-> contact person mobile

    # --- Extra mapped fields (examples) -------------------------------------------------------
    # zoho: dotted path in the Zoho contact (for persons: in the contact person), e.g. "website",
    #       "billing_address.city", "custom_fields.cf_vat_id" (custom field api_name or label)
    # pipedrive: a built-in key (organizations: name, owner_id, visible_to, address.street,
    #       address.subpremise, address.locality, address.sublocality, address.admin_area_level_1,
    #       address.admin_area_level_2, address.postal_code, address.country; persons: first_name,
    #       last_name, email, phone, mobile, owner_id, visible_to) or "custom:<field name>".
    #       A built-in key mapped here replaces the built-in mapping of that key.
    # direction: zoho->pipedrive | pipedrive->zoho | both
    # transform: strip | lower | upper | email | phone | country | country_name | country_code
    # system_of_record: newest (default) | zoho | pipedrive
    # overwrite_with_empty: false (default): an empty value never wipes a filled one
    [[fields.organization]]
    zoho = "website"
    pipedrive = "custom:Website"
    direction = "both"

    [[fields.organization]]
    zoho = "custom_fields.cf_vat_id"
    pipedrive = "custom:VAT ID"
    direction = "zoho->pipedrive"
    transform = "upper"
    system_of_record = "zoho"
    overwrite_with_empty = true

    [[fields.person]]
    zoho = "designation"
    pipedrive = "custom:Job Title"
    direction = "both"

    # --- Schedules and budgets --------------------------------------------------------------
    [sync]
    pipedrive_poll_minutes = 5       # poll Pipedrive for changes every N minutes
    zoho_reconcile_minutes = 60      # reconcile recently modified Zoho invoices every N minutes
    contacts_full_read_hours = 24    # re-read every Zoho contact every N hours
    overlap_seconds = 300            # incremental reads start this far before the last cursor
    reserve_fraction = 0.10          # share of each API budget kept free for webhooks and humans
    backfill_token_cap = 20000       # example: at most this many Pipedrive tokens per day for back-fills
    read_before_write = false        # true: read each Pipedrive record before updating it (1 token
                                     # each) instead of planning against what we last wrote or read

Conflict rules, per mapped field: ``system_of_record = "newest"`` lets the side changed last win
(modification times are passed in by the caller); ``"zoho"``/``"pipedrive"`` makes that side win:
the other side may only fill it while it is empty. An empty value never overwrites a filled one
unless ``overwrite_with_empty = true``. Updates to Pipedrive are planned against what the
connector last wrote or read of the record (kept per link, and per deal for the invoice fields),
so the target's modification time is the one of that snapshot; a Pipedrive change reported by
webhook or by the poll refreshes or drops the snapshot, and the next write then reads first.
Address, email and phone changes always read first: Pipedrive replaces them whole and they hold
parts the sync does not map. See the README (conflicts) for the remaining edge.

Vendor totals: with ``vendor_totals = true`` (which needs ``vendor_rule = "organization"``) every
bill or vendor-payment webhook re-reads that vendor's bills through the Zoho API and writes the
sum of their totals and of their balances, in the vendor's currency, to the two organization
fields; void and draft bills are left out. Bills in another currency than the vendor's leave the
fields unchanged and open a review item. Without it, bills and vendor payments are only recorded.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args

from marshmallow import Schema, ValidationError, validate, validates_schema
from marshmallow import fields as mf

from connector.errors import ConfigError
from connector.mapping.transforms import TRANSFORMS

__all__ = [
    "DEFAULT_MATCH_PATTERN",
    "EXAMPLE_TOML",
    "ORGANIZATION_PIPEDRIVE_KEYS",
    "PERSON_PIPEDRIVE_KEYS",
    "BuiltinMappings",
    "ContactsConfig",
    "CustomFieldSpec",
    "DealFieldNames",
    "DealsConfig",
    "Direction",
    "Entity",
    "FieldMapping",
    "FieldsConfig",
    "RoutingConfig",
    "Side",
    "SyncConfig",
    "SyncTiming",
    "SystemOfRecord",
    "load_config",
    "parse_config",
]

Side = Literal["zoho", "pipedrive"]
Entity = Literal["organization", "person"]
Direction = Literal["zoho->pipedrive", "pipedrive->zoho", "both"]
SystemOfRecord = Literal["zoho", "pipedrive", "newest"]
VendorRule = Literal["skip", "organization", "person"]
IndividualRule = Literal["person", "organization"]
InactiveRule = Literal["record", "mark", "delete"]
DealChoiceRule = Literal["recent_won_else_single_open", "most_recent", "review"]

DEFAULT_MATCH_PATTERN = r"(?i)deal[\s#:-]*(\d+)"

_ADDRESS_PARTS = (
    "street",
    "subpremise",
    "locality",
    "sublocality",
    "admin_area_level_1",
    "admin_area_level_2",
    "postal_code",
    "country",
)
ORGANIZATION_PIPEDRIVE_KEYS: frozenset[str] = frozenset(
    {"name", "owner_id", "visible_to", *(f"address.{part}" for part in _ADDRESS_PARTS)}
)
"""Built-in Pipedrive organization keys a mapping may name (besides ``custom:<name>``).

``address.street`` is the street line: ``route`` with ``street_number`` when Pipedrive split it.
"""
PERSON_PIPEDRIVE_KEYS: frozenset[str] = frozenset(
    {"first_name", "last_name", "email", "phone", "mobile", "owner_id", "visible_to"}
)
"""Built-in Pipedrive person keys a mapping may name (besides ``custom:<name>``).

``email`` is the primary email; ``phone`` the phone labelled ``work``; ``mobile`` the phone
labelled ``mobile``.
"""

CUSTOM_PREFIX = "custom:"
_ZOHO_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[^.\s][^.]*)*$")


# --------------------------------------------------------------------------------------------
# Result dataclasses
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldMapping:
    """One field mapped between a Zoho record and a Pipedrive record.

    Attributes:
        zoho: dotted path in the Zoho contact (or contact person), e.g. ``billing_address.city``.
        pipedrive: built-in key (see ``*_PIPEDRIVE_KEYS``) or ``custom:<field name>``.
        direction: which way values flow.
        transform: name of a :data:`~connector.mapping.transforms.TRANSFORMS` entry, if any.
        system_of_record: who wins a conflict: ``zoho``, ``pipedrive`` or ``newest``.
        overwrite_with_empty: whether an empty source value may clear a filled target.
        builtin: name of the built-in group this mapping belongs to; ``None`` for user mappings.
    """

    zoho: str
    pipedrive: str
    direction: Direction = "both"
    transform: str | None = None
    system_of_record: SystemOfRecord = "newest"
    overwrite_with_empty: bool = False
    builtin: str | None = None

    def flows_to(self, side: Side) -> bool:
        """Whether values of this field are written to ``side``."""
        if self.direction == "both":
            return True
        return self.direction == ("zoho->pipedrive" if side == "pipedrive" else "pipedrive->zoho")

    def flows_from(self, side: Side) -> bool:
        """Whether values of this field are read from ``side`` and written to the other one."""
        return self.flows_to("zoho" if side == "pipedrive" else "pipedrive")

    def path(self, side: Side) -> str:
        """This field's path on ``side``."""
        return self.zoho if side == "zoho" else self.pipedrive

    @property
    def custom_field_name(self) -> str | None:
        """The Pipedrive custom field name, when the Pipedrive side is a custom field."""
        if self.pipedrive.startswith(CUSTOM_PREFIX):
            return self.pipedrive[len(CUSTOM_PREFIX) :]
        return None


@dataclass(frozen=True)
class ContactsConfig:
    """``[contacts]``: which Zoho contacts become what in Pipedrive."""

    vendor_rule: VendorRule = "skip"
    individual_customers: IndividualRule = "person"
    inactive_rule: InactiveRule = "record"
    sync_contact_persons: bool = True
    vendor_totals: bool = False


@dataclass(frozen=True)
class RoutingConfig:
    """``[routing]``: which Zoho connection a Pipedrive organization is created in.

    ``rules`` pairs a field value with a connection name; values match case-insensitively.
    """

    default: str | None = None
    field: str = "address.country"
    rules: tuple[tuple[str, str], ...] = ()

    @property
    def pipedrive_key(self) -> str:
        """The routing field as a mapping key: built-in key or ``custom:<name>``."""
        if self.field.startswith(CUSTOM_PREFIX) or self.field in ORGANIZATION_PIPEDRIVE_KEYS:
            return self.field
        return CUSTOM_PREFIX + self.field


@dataclass(frozen=True)
class DealsConfig:
    """``[deals]``: how an invoice finds its Pipedrive deal."""

    match_pattern: str = DEFAULT_MATCH_PATTERN
    match_custom_field: str | None = None
    choose: DealChoiceRule = "recent_won_else_single_open"
    statuses: tuple[str, ...] = ("open", "won")
    include_draft_invoices: bool = False

    @property
    def pattern(self) -> re.Pattern[str]:
        """The compiled ``match_pattern``."""
        return re.compile(self.match_pattern)


@dataclass(frozen=True)
class DealFieldNames:
    """``[fields.deal]``: Pipedrive deal custom field names; ``None`` means switched off."""

    total: str | None = "Zoho Invoice Total"
    balance: str | None = "Zoho Invoice Balance"
    date: str | None = "Zoho Invoice Date"
    due_date: str | None = "Zoho Invoice Due Date"
    status: str | None = "Zoho Invoice Status"
    number: str | None = "Zoho Invoice Number"
    payment_status: str | None = "Zoho Payment Status"
    last_payment_date: str | None = "Zoho Last Payment Date"
    expected_payment_date: str | None = "Zoho Expected Payment Date"


_DEAL_FIELD_TYPES: dict[str, str] = {
    "total": "monetary",
    "balance": "monetary",
    "date": "date",
    "due_date": "date",
    "status": "varchar",
    "number": "varchar",
    "payment_status": "varchar",
    "last_payment_date": "date",
    "expected_payment_date": "date",
}


@dataclass(frozen=True)
class BuiltinMappings:
    """``[fields.builtin]``: switches for each part of the built-in mapping."""

    organization_name: bool = True
    organization_address: bool = True
    organization_billing: bool = True
    person_name: bool = True
    person_email: bool = True
    person_phone: bool = True
    person_mobile: bool = True


@dataclass(frozen=True)
class FieldsConfig:
    """``[fields]``: field names and the extra mapped fields."""

    zoho_contact_id: str | None = "Zoho Contact ID"
    zoho_pipedrive_id: str | None = "cf_pipedrive_id"
    currency: str | None = "Zoho Currency"
    payment_terms: str | None = "Zoho Payment Terms"
    zoho_status: str | None = "Zoho Status"
    vendor_bills_total: str | None = "Zoho Bills Total"
    vendor_bills_balance: str | None = "Zoho Bills Balance"
    deal: DealFieldNames = field(default_factory=DealFieldNames)
    builtin: BuiltinMappings = field(default_factory=BuiltinMappings)
    organization: tuple[FieldMapping, ...] = ()
    person: tuple[FieldMapping, ...] = ()


@dataclass(frozen=True)
class SyncTiming:
    """``[sync]``: schedules and budget shares."""

    pipedrive_poll_minutes: int = 5
    zoho_reconcile_minutes: int = 60
    contacts_full_read_hours: int = 24
    overlap_seconds: int = 300
    reserve_fraction: float = 0.10
    backfill_token_cap: int | None = None
    read_before_write: bool = False


@dataclass(frozen=True)
class CustomFieldSpec:
    """A Pipedrive custom field the configuration needs: its name and the type to create."""

    name: str
    field_type: str


@dataclass(frozen=True)
class SyncConfig:
    """The whole validated sync configuration."""

    contacts: ContactsConfig = field(default_factory=ContactsConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    deals: DealsConfig = field(default_factory=DealsConfig)
    fields: FieldsConfig = field(default_factory=FieldsConfig)
    sync: SyncTiming = field(default_factory=SyncTiming)

    def mappings(self, entity: Entity) -> tuple[FieldMapping, ...]:
        """Every field mapped for ``entity``: built-in ones first, then the configured extras.

        An extra mapping naming the same Pipedrive key as a built-in one replaces it.
        """
        extras = self.fields.organization if entity == "organization" else self.fields.person
        overridden = {m.pipedrive for m in extras}
        builtins = [m for m in _builtin_mappings(self, entity) if m.pipedrive not in overridden]
        return (*builtins, *extras)

    @property
    def vendor_total_fields(self) -> tuple[str, ...]:
        """The organization fields vendor bill sums go to; empty when vendor totals are off.

        Totals need vendors synced as organizations, so any other ``vendor_rule`` turns them off.
        """
        if not self.contacts.vendor_totals or self.contacts.vendor_rule != "organization":
            return ()
        names = (self.fields.vendor_bills_total, self.fields.vendor_bills_balance)
        return tuple(name for name in names if name)

    def required_custom_fields(self) -> dict[str, tuple[CustomFieldSpec, ...]]:
        """Pipedrive custom fields this configuration reads or writes, per entity type.

        Keys are ``organization``, ``person`` and ``deal``. Extra mapped fields are listed as
        ``varchar`` (the type used if the field has to be created).
        """
        result: dict[str, tuple[CustomFieldSpec, ...]] = {}
        for entity in ("organization", "person"):
            specs: dict[str, CustomFieldSpec] = {}
            for mapping in self.mappings(entity):
                name = mapping.custom_field_name
                if name and name not in specs:
                    specs[name] = CustomFieldSpec(name, "varchar")
            if self.contacts.inactive_rule == "mark" and self.fields.zoho_status:
                specs.setdefault(
                    self.fields.zoho_status, CustomFieldSpec(self.fields.zoho_status, "varchar")
                )
            if entity == "organization" and self.routing.pipedrive_key.startswith(CUSTOM_PREFIX):
                name = self.routing.pipedrive_key[len(CUSTOM_PREFIX) :]
                specs.setdefault(name, CustomFieldSpec(name, "varchar"))
            if entity == "organization":
                for name in self.vendor_total_fields:
                    specs.setdefault(name, CustomFieldSpec(name, "monetary"))
            result[entity] = tuple(specs.values())
        deal_specs = []
        for attr, field_type in _DEAL_FIELD_TYPES.items():
            name = getattr(self.fields.deal, attr)
            if name:
                deal_specs.append(CustomFieldSpec(name, field_type))
        result["deal"] = tuple(deal_specs)
        return result


def _builtin_mappings(config: SyncConfig, entity: Entity) -> Iterator[FieldMapping]:
    names = config.fields
    on = names.builtin
    if entity == "organization":
        if names.zoho_contact_id:
            yield FieldMapping(
                "contact_id",
                CUSTOM_PREFIX + names.zoho_contact_id,
                "zoho->pipedrive",
                system_of_record="zoho",
                overwrite_with_empty=False,
                builtin="cross_reference",
            )
        if names.zoho_pipedrive_id:
            yield FieldMapping(
                f"custom_fields.{names.zoho_pipedrive_id}",
                "id",
                "pipedrive->zoho",
                system_of_record="pipedrive",
                builtin="cross_reference",
            )
        if on.organization_name:
            yield FieldMapping("contact_name", "name", builtin="organization_name")
        if on.organization_address:
            for zoho_part, pipedrive_part, transform in (
                ("address", "street", None),
                ("street2", "subpremise", None),
                ("city", "locality", None),
                ("state", "admin_area_level_1", None),
                ("zip", "postal_code", None),
                ("country", "country", "country"),
            ):
                yield FieldMapping(
                    f"billing_address.{zoho_part}",
                    f"address.{pipedrive_part}",
                    transform=transform,
                    builtin="organization_address",
                )
        if on.organization_billing:
            for zoho_path, name in (
                ("currency_code", names.currency),
                ("payment_terms_label", names.payment_terms),
            ):
                if name:
                    yield FieldMapping(
                        zoho_path,
                        CUSTOM_PREFIX + name,
                        "zoho->pipedrive",
                        system_of_record="zoho",
                        builtin="organization_billing",
                    )
    else:
        if names.zoho_contact_id:
            yield FieldMapping(
                "contact_id",
                CUSTOM_PREFIX + names.zoho_contact_id,
                "zoho->pipedrive",
                system_of_record="zoho",
                builtin="cross_reference",
            )
        if on.person_name:
            yield FieldMapping("first_name", "first_name", builtin="person_name")
            yield FieldMapping("last_name", "last_name", builtin="person_name")
        if on.person_email:
            yield FieldMapping("email", "email", transform="email", builtin="person_email")
        if on.person_phone:
            yield FieldMapping("phone", "phone", transform="phone", builtin="person_phone")
        if on.person_mobile:
            yield FieldMapping("mobile", "mobile", transform="phone", builtin="person_mobile")
    if config.contacts.inactive_rule == "mark" and names.zoho_status:
        yield FieldMapping(
            "status",
            CUSTOM_PREFIX + names.zoho_status,
            "zoho->pipedrive",
            system_of_record="zoho",
            builtin="status",
        )


# --------------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------------


def _one_of(choices: tuple[str, ...] | list[str]) -> validate.OneOf:
    return validate.OneOf(choices, error="must be one of {choices}")


def _valid_pattern(value: str) -> None:
    try:
        compiled = re.compile(value)
    except re.error as exc:
        raise ValidationError(f"not a valid regular expression ({exc})") from exc
    except (RecursionError, OverflowError) as exc:
        raise ValidationError("regular expression is too deeply nested or too large") from exc
    if compiled.groups < 1:
        raise ValidationError("must contain a capture group around the deal id, e.g. (\\d+)")


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("must not be empty")


def _valid_zoho_path(value: str) -> None:
    if not _ZOHO_PATH.match(value):
        raise ValidationError(
            "must be a dotted path like website, billing_address.city or custom_fields.cf_vat_id"
        )


def _pipedrive_key_validator(allowed: frozenset[str], entity: str) -> validate.Validator:
    class _Key(validate.Validator):
        def __call__(self, value: Any) -> Any:
            if isinstance(value, str) and value.startswith(CUSTOM_PREFIX):
                if not value[len(CUSTOM_PREFIX) :].strip():
                    raise ValidationError("custom: must be followed by a Pipedrive field name")
                return value
            if value not in allowed:
                raise ValidationError(
                    f"must be one of {', '.join(sorted(allowed))} or custom:<{entity} field name>"
                )
            return value

    return _Key()


class _FieldName(mf.Field):  # type: ignore[type-arg]
    """A Pipedrive field name: a string ("" disables it) or ``{ name = "...", enabled = bool }``."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str | None:
        if isinstance(value, str):
            return value.strip() or None
        if isinstance(value, Mapping):
            unknown = set(value) - {"name", "enabled"}
            if unknown:
                raise ValidationError(f"unknown keys {', '.join(sorted(unknown))}")
            enabled = value.get("enabled", True)
            if not isinstance(enabled, bool):
                raise ValidationError("enabled must be true or false")
            name = value.get("name", "")
            if not isinstance(name, str):
                raise ValidationError("name must be a string")
            if not enabled:
                return None
            if not name.strip():
                raise ValidationError("name must not be empty when enabled")
            return name.strip()
        raise ValidationError('must be a field name or a table { name = "...", enabled = true }')


def _strict_str(**kwargs: Any) -> mf.String:
    return mf.String(error_messages={"invalid": "must be a string"}, **kwargs)


class _StrictBoolean(mf.Boolean):
    """TOML has real booleans; refusing "yes" or 1 catches quoting mistakes."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class _StrictFloat(mf.Float):
    """A TOML number (integer or float), never a numeric string."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


def _strict_bool(**kwargs: Any) -> mf.Boolean:
    return _StrictBoolean(error_messages={"invalid": "must be true or false"}, **kwargs)


def _strict_int(minimum: int, **kwargs: Any) -> mf.Integer:
    return mf.Integer(
        strict=True,
        validate=validate.Range(min=minimum, error="must be at least {min}"),
        error_messages={"invalid": "must be a whole number"},
        **kwargs,
    )


class _ContactsSchema(Schema):
    vendor_rule = _strict_str(load_default="skip", validate=_one_of(get_args(VendorRule)))
    individual_customers = _strict_str(
        load_default="person", validate=_one_of(get_args(IndividualRule))
    )
    inactive_rule = _strict_str(load_default="record", validate=_one_of(get_args(InactiveRule)))
    sync_contact_persons = _strict_bool(load_default=True)
    vendor_totals = _strict_bool(load_default=False)


class _RoutingSchema(Schema):
    default = _strict_str(load_default=None, validate=_not_blank)
    field = _strict_str(load_default="address.country", validate=_not_blank)
    rules = mf.Dict(
        keys=mf.String(validate=_not_blank),
        values=_strict_str(validate=_not_blank),
        load_default=dict,
        # Doubled braces: marshmallow formats its error messages.
        error_messages={"invalid": 'must be a table like {{ "Germany" = "zoho-eu" }}'},
    )

    @validates_schema(skip_on_field_errors=False)
    def _no_duplicate_rules(self, data: dict[str, Any], **kwargs: Any) -> None:
        seen: dict[str, str] = {}
        for value in data.get("rules") or {}:
            folded = value.casefold()
            if folded in seen:
                raise ValidationError(
                    f"{value!r} and {seen[folded]!r} are the same value (matching ignores case)",
                    "rules",
                )
            seen[folded] = value


class _DealsSchema(Schema):
    match_pattern = _strict_str(load_default=DEFAULT_MATCH_PATTERN, validate=_valid_pattern)
    match_custom_field = _strict_str(load_default=None)
    choose = _strict_str(
        load_default="recent_won_else_single_open", validate=_one_of(get_args(DealChoiceRule))
    )
    statuses = mf.List(
        _strict_str(validate=_one_of(("open", "won", "lost"))),
        load_default=lambda: ["open", "won"],
        validate=validate.Length(min=1, error="must list at least one status"),
        error_messages={"invalid": "must be a list of statuses"},
    )
    include_draft_invoices = _strict_bool(load_default=False)


def _field_name(default: str) -> _FieldName:
    return _FieldName(load_default=default)


class _DealFieldsSchema(Schema):
    total = _field_name("Zoho Invoice Total")
    balance = _field_name("Zoho Invoice Balance")
    date = _field_name("Zoho Invoice Date")
    due_date = _field_name("Zoho Invoice Due Date")
    status = _field_name("Zoho Invoice Status")
    number = _field_name("Zoho Invoice Number")
    payment_status = _field_name("Zoho Payment Status")
    last_payment_date = _field_name("Zoho Last Payment Date")
    expected_payment_date = _field_name("Zoho Expected Payment Date")


class _BuiltinSchema(Schema):
    organization_name = _strict_bool(load_default=True)
    organization_address = _strict_bool(load_default=True)
    organization_billing = _strict_bool(load_default=True)
    person_name = _strict_bool(load_default=True)
    person_email = _strict_bool(load_default=True)
    person_phone = _strict_bool(load_default=True)
    person_mobile = _strict_bool(load_default=True)


class _MappingSchema(Schema):
    allowed_keys: frozenset[str] = frozenset()
    entity = ""

    zoho = _strict_str(required=True, validate=_valid_zoho_path)
    pipedrive = _strict_str(required=True)
    direction = _strict_str(load_default="both", validate=_one_of(get_args(Direction)))
    transform = _strict_str(load_default=None, validate=_one_of(tuple(TRANSFORMS)))
    system_of_record = _strict_str(
        load_default="newest", validate=_one_of(get_args(SystemOfRecord))
    )
    overwrite_with_empty = _strict_bool(load_default=False)


class _OrganizationMappingSchema(_MappingSchema):
    allowed_keys = ORGANIZATION_PIPEDRIVE_KEYS
    entity = "organization"

    @validates_schema(skip_on_field_errors=False)
    def _known_pipedrive_key(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "pipedrive" in data:
            try:
                _pipedrive_key_validator(self.allowed_keys, self.entity)(data["pipedrive"])
            except ValidationError as exc:
                raise ValidationError(exc.messages, "pipedrive") from exc


class _PersonMappingSchema(_OrganizationMappingSchema):
    allowed_keys = PERSON_PIPEDRIVE_KEYS
    entity = "person"


def _duplicate_targets(mappings: Any) -> list[str]:
    if not isinstance(mappings, list):
        return []
    mappings = [m if isinstance(m, Mapping) else {} for m in mappings]
    problems: list[str] = []
    for side, flows in (("pipedrive", "zoho->pipedrive"), ("zoho", "pipedrive->zoho")):
        seen: dict[str, int] = {}
        for index, mapping in enumerate(mappings):
            if mapping.get("direction", "both") not in (flows, "both"):
                continue
            target = mapping.get(side)
            if not isinstance(target, str):
                continue
            if target in seen:
                problems.append(
                    f"[{index}] writes {side} {target!r} already written by [{seen[target]}]"
                )
            seen.setdefault(target, index)
    return problems


class _FieldsSchema(Schema):
    zoho_contact_id = _field_name("Zoho Contact ID")
    zoho_pipedrive_id = _field_name("cf_pipedrive_id")
    currency = _field_name("Zoho Currency")
    payment_terms = _field_name("Zoho Payment Terms")
    zoho_status = _field_name("Zoho Status")
    vendor_bills_total = _field_name("Zoho Bills Total")
    vendor_bills_balance = _field_name("Zoho Bills Balance")
    deal = mf.Nested(_DealFieldsSchema, load_default=lambda: _DealFieldsSchema().load({}))
    builtin = mf.Nested(_BuiltinSchema, load_default=lambda: _BuiltinSchema().load({}))
    organization = mf.List(
        mf.Nested(_OrganizationMappingSchema),
        load_default=list,
        error_messages={"invalid": "must be an array of tables ([[fields.organization]])"},
    )
    person = mf.List(
        mf.Nested(_PersonMappingSchema),
        load_default=list,
        error_messages={"invalid": "must be an array of tables ([[fields.person]])"},
    )

    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def _no_duplicate_targets(self, data: dict[str, Any], original: Any, **kwargs: Any) -> None:
        # Checked on the original input so that a typo in one entry does not hide a clash.
        if not isinstance(original, Mapping):
            return
        errors = {
            entity: problems
            for entity in ("organization", "person")
            if (problems := _duplicate_targets(original.get(entity)))
        }
        if errors:
            raise ValidationError(errors)


class _SyncSchema(Schema):
    pipedrive_poll_minutes = _strict_int(1, load_default=5)
    zoho_reconcile_minutes = _strict_int(1, load_default=60)
    contacts_full_read_hours = _strict_int(1, load_default=24)
    overlap_seconds = _strict_int(0, load_default=300)
    reserve_fraction = _StrictFloat(
        load_default=0.10,
        allow_nan=False,
        validate=validate.Range(
            min=0, max=1, max_inclusive=False, error="must be at least 0 and below 1"
        ),
        error_messages={"invalid": "must be a number"},
    )
    backfill_token_cap = _strict_int(1, load_default=None)
    read_before_write = _strict_bool(load_default=False)


class _ConfigSchema(Schema):
    contacts = mf.Nested(_ContactsSchema, load_default=lambda: _ContactsSchema().load({}))
    routing = mf.Nested(_RoutingSchema, load_default=lambda: _RoutingSchema().load({}))
    deals = mf.Nested(_DealsSchema, load_default=lambda: _DealsSchema().load({}))
    # Not named ``fields``: that attribute belongs to marshmallow's Schema.
    field_names = mf.Nested(
        _FieldsSchema, data_key="fields", load_default=lambda: _FieldsSchema().load({})
    )
    sync = mf.Nested(_SyncSchema, load_default=lambda: _SyncSchema().load({}))

    @validates_schema(skip_on_field_errors=False)
    def _mark_needs_status_field(self, data: dict[str, Any], **kwargs: Any) -> None:
        contacts = data.get("contacts") or {}
        names = data.get("field_names") or {}
        if contacts.get("inactive_rule") == "mark" and not names.get("zoho_status", "x"):
            raise ValidationError(
                'inactive_rule = "mark" needs fields.zoho_status (a Pipedrive field name)',
                "contacts",
            )

    @validates_schema(skip_on_field_errors=False)
    def _vendor_totals_need_organizations(self, data: dict[str, Any], **kwargs: Any) -> None:
        contacts = data.get("contacts") or {}
        if not contacts.get("vendor_totals"):
            return
        names = data.get("field_names") or {}
        problems = []
        if contacts.get("vendor_rule", "skip") != "organization":
            problems.append(
                'vendor_totals = true needs vendor_rule = "organization" (vendors synced as '
                "organizations)"
            )
        if not names.get("vendor_bills_total", "x") and not names.get("vendor_bills_balance", "x"):
            problems.append(
                "vendor_totals = true needs fields.vendor_bills_total or "
                "fields.vendor_bills_balance (a Pipedrive field name)"
            )
        if problems:
            raise ValidationError(problems, "contacts")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _flatten(messages: Any, path: str = "") -> Iterator[str]:
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            if key == "_schema":
                child = path
            elif isinstance(key, int):
                child = f"{path}[{key}]"
            else:
                child = f"{path}.{key}" if path else str(key)
            yield from _flatten(value, child)
    elif isinstance(messages, list | tuple):
        for item in messages:
            yield from _flatten(item, path)
    else:
        text = str(messages)
        if text == "Unknown field.":
            text = "unknown setting"
        elif text == "Missing data for required field.":
            text = "is required"
        text = text[:1].lower() + text[1:]
        text = text.removesuffix(".")
        if text.startswith("["):
            # List-level messages that point at an item already carry its position.
            yield f"{path}{text}"
        else:
            yield f"{path}: {text}" if path else text


def _mapping_from(data: Mapping[str, Any]) -> FieldMapping:
    return FieldMapping(
        zoho=data["zoho"],
        pipedrive=data["pipedrive"],
        direction=cast(Direction, data["direction"]),
        transform=data["transform"],
        system_of_record=cast(SystemOfRecord, data["system_of_record"]),
        overwrite_with_empty=data["overwrite_with_empty"],
    )


def _build(data: Mapping[str, Any]) -> SyncConfig:
    contacts, routing, deals = data["contacts"], data["routing"], data["deals"]
    names, timing = data["field_names"], data["sync"]
    return SyncConfig(
        contacts=ContactsConfig(
            vendor_rule=contacts["vendor_rule"],
            individual_customers=contacts["individual_customers"],
            inactive_rule=contacts["inactive_rule"],
            sync_contact_persons=contacts["sync_contact_persons"],
            vendor_totals=contacts["vendor_totals"],
        ),
        routing=RoutingConfig(
            default=routing["default"],
            field=routing["field"].strip(),
            rules=tuple((key.strip(), value.strip()) for key, value in routing["rules"].items()),
        ),
        deals=DealsConfig(
            match_pattern=deals["match_pattern"],
            match_custom_field=(deals["match_custom_field"] or "").strip() or None,
            choose=deals["choose"],
            statuses=tuple(dict.fromkeys(deals["statuses"])),
            include_draft_invoices=deals["include_draft_invoices"],
        ),
        fields=FieldsConfig(
            zoho_contact_id=names["zoho_contact_id"],
            zoho_pipedrive_id=names["zoho_pipedrive_id"],
            currency=names["currency"],
            payment_terms=names["payment_terms"],
            zoho_status=names["zoho_status"],
            vendor_bills_total=names["vendor_bills_total"],
            vendor_bills_balance=names["vendor_bills_balance"],
            deal=DealFieldNames(**names["deal"]),
            builtin=BuiltinMappings(**names["builtin"]),
            organization=tuple(_mapping_from(m) for m in names["organization"]),
            person=tuple(_mapping_from(m) for m in names["person"]),
        ),
        sync=SyncTiming(**timing),
    )


def parse_config(data: Mapping[str, Any]) -> SyncConfig:
    """Validate already-parsed TOML data and build the configuration.

    Args:
        data: the TOML document as a mapping (``{}`` gives every default).

    Raises:
        ConfigError: listing every problem found, each prefixed with its TOML path.
    """
    try:
        loaded = _ConfigSchema().load(dict(data))
    except ValidationError as exc:
        raise ConfigError(list(_flatten(exc.messages))) from exc
    return _build(loaded)


def load_config(path: str | Path | None) -> SyncConfig:
    """Read and validate the TOML configuration file at ``path``.

    Args:
        path: the file named by ``CONNECTOR_CONFIG``; ``None`` or ``""`` gives the defaults.

    Raises:
        ConfigError: the file is missing, unreadable, not TOML, or invalid (all problems at once).
    """
    if path is None or str(path) == "":
        return SyncConfig()
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError([f"{file}: configuration file not found"]) from exc
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read configuration file ({exc.strerror})"]) from exc
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{file}: not UTF-8 text"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{file}: not valid TOML ({exc})"]) from exc
    return parse_config(document)


def _example_from_docstring() -> str:
    doc = __doc__ or ""
    start = doc.index("Full example")
    block = doc[doc.index("::\n", start) + 3 : doc.index("\nConflict rules")]
    lines = [line[4:] if line.startswith("    ") else line for line in block.splitlines()]
    return "\n".join(lines).strip() + "\n"


EXAMPLE_TOML = _example_from_docstring()
"""The full example from this module's docstring, ready to paste into a file or a README."""
