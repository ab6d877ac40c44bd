"""Books data of the Zoho Books simulator: organizations, contacts, invoices, payments and bills.

Pure state and rules, no Flask. Operations raise :class:`connector.errors.ApiError` with the HTTP
status and Zoho ``code`` to answer; the simulator turns that into the JSON envelope.

Shapes follow the official OAS examples (reference §4-5): IDs are numeric-looking strings,
amounts are numbers, timestamps ``YYYY-MM-DDThh:mm:ss+0000``, dates ``yyyy-mm-dd``. List items
are the reduced shape; details carry contact persons, addresses, line items.

Error codes the reference marks OFFICIAL or COMMUNITY are used as documented (1002, 6041, 1038,
57, 44, 45, 1070, 1000). The others below are the simulator's choice (UNCONFIRMED), kept in one
place so they are easy to change: 2 = invalid value, 4 = required field missing, 1001 = duplicate
value, 3062 = duplicate contact name, 1040 = operation not allowed in the record's state.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import random
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from connector.errors import ApiError
from connector.sandbox.common import Clock

__all__ = [
    "CODE_DUPLICATE",
    "CODE_DUPLICATE_NAME",
    "CODE_INVALID_VALUE",
    "CODE_NOT_ALLOWED",
    "CODE_NOT_FOUND",
    "CODE_REQUIRED",
    "PLANS",
    "BooksStore",
    "CustomFieldDef",
    "Event",
    "Organization",
    "format_timestamp",
]

CODE_INVALID_VALUE = 2
CODE_REQUIRED = 4
CODE_DUPLICATE = 1001
CODE_NOT_FOUND = 1002
CODE_NOT_ALLOWED = 1040
CODE_DUPLICATE_NAME = 3062

PLANS: dict[str, int] = {
    "free": 1000,
    "standard": 2000,
    "professional": 5000,
    "premium": 10000,
    "elite": 10000,
    "ultimate": 10000,
}
"""Daily API call limit per plan (reference §6.3)."""

MAX_PER_PAGE = 200

_CONTACT_SIMPLE_FIELDS = (
    "company_name",
    "website",
    "contact_type",
    "customer_sub_type",
    "payment_terms",
    "payment_terms_label",
    "notes",
    "language_code",
    "credit_limit",
    "is_portal_enabled",
    "facebook",
    "twitter",
)
_ADDRESS_FIELDS = (
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
_PERSON_FIELDS = (
    "salutation",
    "first_name",
    "last_name",
    "email",
    "phone",
    "mobile",
    "designation",
    "department",
    "skype",
    "enable_portal",
)
_CONTACT_LIST_FIELDS = (
    "contact_id",
    "contact_name",
    "company_name",
    "contact_type",
    "status",
    "payment_terms",
    "payment_terms_label",
    "currency_id",
    "currency_code",
    "outstanding_receivable_amount",
    "unused_credits_receivable_amount",
    "first_name",
    "last_name",
    "email",
    "phone",
    "mobile",
    "created_time",
    "last_modified_time",
)
_INVOICE_LIST_FIELDS = (
    "invoice_id",
    "customer_name",
    "customer_id",
    "status",
    "invoice_number",
    "reference_number",
    "date",
    "due_date",
    "due_days",
    "currency_id",
    "currency_code",
    "total",
    "balance",
    "created_time",
    "last_modified_time",
    "is_emailed",
    "custom_fields",
    "exchange_rate",
)
_PAYMENT_LIST_FIELDS = (
    "payment_id",
    "payment_number",
    "invoice_numbers",
    "date",
    "payment_mode",
    "amount",
    "bcy_amount",
    "unused_amount",
    "customer_id",
    "customer_name",
    "reference_number",
    "description",
    "currency_code",
    "created_time",
    "last_modified_time",
)
_BILL_LIST_FIELDS = (
    "bill_id",
    "bill_number",
    "vendor_id",
    "vendor_name",
    "status",
    "date",
    "due_date",
    "reference_number",
    "currency_id",
    "currency_code",
    "total",
    "balance",
    "created_time",
    "last_modified_time",
)
_BILL_STATUSES = ("open", "partially_paid", "paid", "overdue", "void")
_CONTACT_FILTERS = {
    "Status.All": None,
    "Status.Active": "active",
    "Status.Inactive": "inactive",
}
_INVOICE_STATUSES = (
    "sent",
    "draft",
    "overdue",
    "paid",
    "void",
    "unpaid",
    "partially_paid",
    "viewed",
)


def format_timestamp(moment: dt.datetime) -> str:
    """Zoho's timestamp form: ISO 8601 with a colon-free offset (always UTC here)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def _error(status: int, code: int, message: str) -> ApiError:
    return ApiError(message, system="zoho-sim", status=status, code=code)


def _invalid(name: str) -> ApiError:
    return _error(400, CODE_INVALID_VALUE, f"Invalid value passed for {name}")


def _required(name: str) -> ApiError:
    return _error(400, CODE_REQUIRED, f"{name} is required.")


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise _invalid(name)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _invalid(name) from None


def _date(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise _invalid(name)
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise _invalid(name) from None


def _public(record: Mapping[str, Any]) -> dict[str, Any]:
    return {key: copy.deepcopy(value) for key, value in record.items() if not key.startswith("_")}


@dataclass
class CustomFieldDef:
    """A custom field of one module (contact or invoice) of an organization."""

    customfield_id: str
    api_name: str
    label: str
    index: int
    data_type: str = "string"
    unique: bool = False


@dataclass
class Event:
    """A record change that may trigger webhooks."""

    organization_id: str
    entity: str
    action: str
    entity_id: str
    record: dict[str, Any]


@dataclass
class Organization:
    """One Books organization and everything in it."""

    organization_id: str
    name: str
    dc: str
    plan: str
    users: set[str]
    currency_id: str
    currency_code: str
    created_date: str
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    person_owner: dict[str, str] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    custom_fields: dict[str, list[CustomFieldDef]] = field(default_factory=dict)
    unique_index: dict[tuple[str, str, str], str] = field(default_factory=dict)
    contact_names: dict[str, str] = field(default_factory=dict)
    invoice_numbers: dict[str, str] = field(default_factory=dict)
    invoices_by_customer: dict[str, set[str]] = field(default_factory=dict)
    bills: dict[str, dict[str, Any]] = field(default_factory=dict)
    bills_by_vendor: dict[str, set[str]] = field(default_factory=dict)
    vendor_payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    next_invoice_number: int = 1
    next_payment_number: int = 1
    next_bill_number: int = 1
    next_vendor_payment_number: int = 1
    version: int = 0
    list_cache: dict[tuple[Any, ...], list[str]] = field(default_factory=dict)

    @property
    def daily_limit(self) -> int:
        """API calls per day allowed by the plan."""
        return PLANS.get(self.plan, 1000)

    @property
    def concurrency_limit(self) -> int:
        """Requests in flight allowed at once: 5 on the free plan, 10 otherwise."""
        return 5 if self.plan == "free" else 10

    def summary(self) -> dict[str, Any]:
        """The ``organizations`` list item (reference §3 example)."""
        return {
            "organization_id": self.organization_id,
            "name": self.name,
            "contact_name": sorted(self.users)[0] if self.users else "",
            "email": sorted(self.users)[0] if self.users else "",
            "is_default_org": False,
            "language_code": "en",
            "fiscal_year_start_month": 0,
            "account_created_date": self.created_date,
            "time_zone": "UTC",
            "is_org_active": True,
            "currency_id": self.currency_id,
            "currency_code": self.currency_code,
            "currency_symbol": "$" if self.currency_code == "USD" else self.currency_code,
            "currency_format": "###,##0.00",
            "price_precision": 2,
            "plan_type": 0,
            "plan_name": self.plan.upper(),
            "plan_period": "monthly",
        }


class BooksStore:
    """All organizations of the simulator plus the rules for changing their records.

    Args:
        clock: the simulator clock (timestamps, "today" for due dates and overdue).
        unique_contact_names: reject a second contact with the same name (code 3062).
        sent_status: status of a sent invoice with no payment that is not overdue (Zoho shows
            ``sent``; ``unpaid`` is the other documented value).
        contacts_default_filter: ``filter_by`` applied when a contacts list names none.
        contacts_last_modified_filter: honour ``last_modified_time`` on ``GET /contacts``
            (not documented for contacts: off by default, reference §4.2).
        list_custom_fields: add ``cf_<api_name>`` keys to list items (UNCONFIRMED; off).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        unique_contact_names: bool = True,
        sent_status: str = "sent",
        contacts_default_filter: str = "Status.All",
        contacts_last_modified_filter: bool = False,
        list_custom_fields: bool = False,
    ) -> None:
        self.clock = clock
        self.unique_contact_names = unique_contact_names
        self.sent_status = sent_status
        self.contacts_default_filter = contacts_default_filter
        self.contacts_last_modified_filter = contacts_last_modified_filter
        self.list_custom_fields = list_custom_fields
        self.orgs: dict[str, Organization] = {}
        self.lock = threading.RLock()
        self._ids = itertools.count(460000000026049)
        self._org_ids = itertools.count(10234695)

    # -- helpers ---------------------------------------------------------------------------------

    def new_id(self) -> str:
        """A fresh numeric-looking string id."""
        return str(next(self._ids))

    def _now(self) -> tuple[str, float]:
        moment = self.clock.now()
        return format_timestamp(moment), moment.timestamp()

    def today(self) -> str:
        """The simulator's current date (UTC)."""
        return self.clock.now().date().isoformat()

    def _touch(self, org: Organization, record: dict[str, Any], *, created: bool = False) -> None:
        stamp, epoch = self._now()
        record["last_modified_time"] = stamp
        record["_mtime"] = epoch
        if created:
            record["created_time"] = stamp
            record["_ctime"] = epoch
        org.version += 1

    # -- organizations -----------------------------------------------------------------------------

    def create_organization(
        self,
        *,
        dc: str,
        name: str,
        plan: str = "professional",
        organization_id: str | None = None,
        users: Iterable[str] = ("admin@example.com",),
        currency_code: str = "USD",
        custom_fields: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
    ) -> Organization:
        """Create an organization in ``dc``.

        ``custom_fields`` maps ``contact``/``invoice`` to field definitions
        (``api_name``, ``label``, ``unique``, ``data_type``, optional ``index``); by default each
        org has a unique ``cf_pipedrive_id`` on contacts and ``cf_pipedrive_deal_id`` on invoices.
        """
        if plan not in PLANS:
            raise ValueError(f"unknown plan {plan!r}; one of {sorted(PLANS)}")
        with self.lock:
            org_id = organization_id or str(next(self._org_ids))
            if org_id in self.orgs:
                raise ValueError(f"organization {org_id} exists")
            org = Organization(
                organization_id=org_id,
                name=name,
                dc=dc,
                plan=plan,
                users=set(users),
                currency_id=self.new_id(),
                currency_code=currency_code,
                created_date=self.today(),
            )
            definitions = custom_fields or {
                "contact": [
                    {"api_name": "cf_pipedrive_id", "label": "Pipedrive ID", "unique": True}
                ],
                "invoice": [
                    {
                        "api_name": "cf_pipedrive_deal_id",
                        "label": "Pipedrive Deal ID",
                        "unique": True,
                    }
                ],
            }
            for entity, fields in definitions.items():
                for position, spec in enumerate(fields, start=1):
                    org.custom_fields.setdefault(entity, []).append(
                        CustomFieldDef(
                            customfield_id=self.new_id(),
                            api_name=str(spec["api_name"]),
                            label=str(spec.get("label", spec["api_name"])),
                            index=int(spec.get("index", position)),
                            data_type=str(spec.get("data_type", "string")),
                            unique=bool(spec.get("unique", False)),
                        )
                    )
            self.orgs[org_id] = org
            return org

    # -- custom fields -----------------------------------------------------------------------------

    def _field_def(self, org: Organization, entity: str, item: Mapping[str, Any]) -> CustomFieldDef:
        for definition in org.custom_fields.get(entity, []):
            if (
                "customfield_id" in item
                and str(item["customfield_id"]) == definition.customfield_id
            ):
                return definition
            if "api_name" in item and item["api_name"] == definition.api_name:
                return definition
            if "index" in item and str(item["index"]) == str(definition.index):
                return definition
            if "label" in item and item["label"] == definition.label:
                return definition
        raise _invalid("custom_fields")

    def _apply_custom_fields(
        self,
        org: Organization,
        entity: str,
        record_id: str,
        current: list[dict[str, Any]],
        items: Any,
    ) -> list[dict[str, Any]]:
        """Merge ``items`` into ``current`` (fields not mentioned keep their value)."""
        if items is None:
            return current
        if not isinstance(items, list):
            raise _invalid("custom_fields")
        values = {entry["customfield_id"]: entry for entry in current}
        for item in items:
            if not isinstance(item, Mapping):
                raise _invalid("custom_fields")
            definition = self._field_def(org, entity, item)
            value = item.get("value", "")
            if definition.unique and value not in ("", None):
                owner = org.unique_index.get((entity, definition.api_name, str(value)))
                if owner is not None and owner != record_id:
                    raise _error(
                        400,
                        CODE_DUPLICATE,
                        f"The value entered for {definition.label} already exists.",
                    )
            values[definition.customfield_id] = {
                "customfield_id": definition.customfield_id,
                "index": definition.index,
                "label": definition.label,
                "api_name": definition.api_name,
                "data_type": definition.data_type,
                "value": value,
                "value_formatted": "" if value is None else str(value),
            }
        order = {d.customfield_id: d.index for d in org.custom_fields.get(entity, [])}
        return sorted(
            (entry for entry in values.values() if entry["value"] not in ("", None)),
            key=lambda entry: order.get(entry["customfield_id"], 0),
        )

    def _reindex_unique(
        self,
        org: Organization,
        entity: str,
        record_id: str,
        old: list[dict[str, Any]],
        new: list[dict[str, Any]],
    ) -> None:
        unique = {d.api_name for d in org.custom_fields.get(entity, []) if d.unique}
        for entry in old:
            if entry["api_name"] in unique:
                org.unique_index.pop((entity, entry["api_name"], str(entry["value"])), None)
        for entry in new:
            if entry["api_name"] in unique:
                org.unique_index[(entity, entry["api_name"], str(entry["value"]))] = record_id

    def find_by_unique(
        self, org: Organization, entity: str, api_name: str, value: str
    ) -> str | None:
        """The id of the record whose unique custom field ``api_name`` equals ``value``.

        Raises:
            ApiError: ``api_name`` is not a unique custom field of the module.
        """
        if not any(d.api_name == api_name and d.unique for d in org.custom_fields.get(entity, [])):
            raise _invalid("X-Unique-Identifier-Key")
        return org.unique_index.get((entity, api_name, value))

    # -- contacts ----------------------------------------------------------------------------------

    def contact(self, org: Organization, contact_id: str) -> dict[str, Any]:
        """The stored contact, or a 404 ``ApiError``."""
        found = org.contacts.get(contact_id)
        if found is None:
            raise _error(404, CODE_NOT_FOUND, "Contact does not exist.")
        return found

    def _person(self, data: Mapping[str, Any], person_id: str) -> dict[str, Any]:
        person = {name: data.get(name, "") for name in _PERSON_FIELDS}
        person["enable_portal"] = bool(data.get("enable_portal", False))
        person["contact_person_id"] = person_id
        person["is_primary_contact"] = bool(data.get("is_primary_contact", False))
        return person

    @staticmethod
    def _address(data: Any) -> dict[str, Any]:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise _invalid("address")
        return {name: str(data.get(name, "")) for name in _ADDRESS_FIELDS}

    def _plan_persons(self, contact: Mapping[str, Any], items: Any) -> list[dict[str, Any]]:
        """Validate a replacement ``contact_persons`` list and build it without touching state.

        Listed ids are updated, entries without an id are new, persons not listed are removed.
        """
        if not isinstance(items, list):
            raise _invalid("contact_persons")
        existing = {p["contact_person_id"]: p for p in contact.get("contact_persons", [])}
        persons: list[dict[str, Any]] = []
        for item in items:
            if not isinstance(item, Mapping):
                raise _invalid("contact_persons")
            person_id = str(item.get("contact_person_id", "") or "")
            if person_id:
                if person_id not in existing:
                    raise _invalid("contact_person_id")
                merged = copy.deepcopy(existing[person_id])
                merged.update({k: v for k, v in item.items() if k in _PERSON_FIELDS})
                if "is_primary_contact" in item:
                    merged["is_primary_contact"] = bool(item["is_primary_contact"])
                persons.append(merged)
            else:
                persons.append(self._person(item, self.new_id()))
        return persons

    def _apply_persons(
        self, org: Organization, contact: dict[str, Any], persons: list[dict[str, Any]]
    ) -> None:
        for person in contact.get("contact_persons", []):
            org.person_owner.pop(person["contact_person_id"], None)
        for person in persons:
            org.person_owner[person["contact_person_id"]] = contact["contact_id"]
        contact["contact_persons"] = persons
        self._fix_primary(contact)

    @staticmethod
    def _fix_primary(contact: dict[str, Any], primary_id: str | None = None) -> None:
        persons = contact["contact_persons"]
        if primary_id is None:
            flagged = [p for p in persons if p.get("is_primary_contact")]
            primary_id = flagged[-1]["contact_person_id"] if flagged else None
            if primary_id is None and persons:
                primary_id = persons[0]["contact_person_id"]
        for person in persons:
            person["is_primary_contact"] = person["contact_person_id"] == primary_id
        contact["primary_contact_id"] = primary_id or ""

    def _check_name(self, org: Organization, contact_id: str, name: Any) -> str:
        if not isinstance(name, str) or not name.strip():
            raise _required("contact_name")
        if len(name) > 200:
            raise _invalid("contact_name")
        owner = org.contact_names.get(name.strip().casefold())
        if self.unique_contact_names and owner is not None and owner != contact_id:
            raise _error(
                400,
                CODE_DUPLICATE_NAME,
                f'The customer "{name}" already exists. Please specify a different name.',
            )
        return name

    @staticmethod
    def _assign_name(org: Organization, contact: dict[str, Any], name: str) -> None:
        old = contact.get("contact_name")
        if isinstance(old, str):
            old_key = old.strip().casefold()
            if org.contact_names.get(old_key) == contact["contact_id"]:
                del org.contact_names[old_key]
        contact["contact_name"] = name
        org.contact_names.setdefault(name.strip().casefold(), contact["contact_id"])

    def create_contact(
        self, org: Organization, data: Mapping[str, Any], *, render: bool = True
    ) -> tuple[dict[str, Any], list[Event]]:
        """Create a contact (``POST /contacts``); returns the detail shape and events.

        ``render=False`` (bulk seeding) skips the detail and events and returns only the id.
        """
        contact_id = self.new_id()
        contact: dict[str, Any] = {
            "contact_id": contact_id,
            "contact_name": None,
            "company_name": "",
            "has_transaction": False,
            "contact_type": "customer",
            "customer_sub_type": "business",
            "is_linked_with_zohocrm": False,
            "website": "",
            "primary_contact_id": "",
            "payment_terms": 0,
            "payment_terms_label": "Due on Receipt",
            "currency_id": org.currency_id,
            "currency_code": org.currency_code,
            "currency_symbol": "$" if org.currency_code == "USD" else org.currency_code,
            "outstanding_receivable_amount": 0.0,
            "unused_credits_receivable_amount": 0.0,
            "status": "active",
            "payment_reminder_enabled": True,
            "custom_fields": [],
            "billing_address": self._address(None),
            "shipping_address": self._address(None),
            "contact_persons": [],
            "notes": "",
        }
        # Validate everything before any index changes, so a refused request leaves no trace.
        self._check_contact_fields(data)
        name = self._check_name(org, contact_id, data.get("contact_name"))
        new_fields = self._apply_custom_fields(
            org, "contact", contact_id, [], data.get("custom_fields")
        )
        persons = self._plan_persons(contact, data.get("contact_persons", []))
        self._copy_contact_fields(contact, data)
        self._assign_name(org, contact, name)
        self._apply_persons(org, contact, persons)
        contact["custom_fields"] = new_fields
        self._reindex_unique(org, "contact", contact_id, [], new_fields)
        self._touch(org, contact, created=True)
        org.contacts[contact_id] = contact
        if not render:
            return {"contact_id": contact_id}, []
        detail = self.render_contact(org, contact)
        return detail, [Event(org.organization_id, "contact", "created", contact_id, detail)]

    @staticmethod
    def _check_contact_fields(data: Mapping[str, Any]) -> None:
        if "contact_type" in data and data["contact_type"] not in ("customer", "vendor"):
            raise _invalid("contact_type")
        if "payment_terms" in data:
            _number(data["payment_terms"], "payment_terms")

    def _copy_contact_fields(self, contact: dict[str, Any], data: Mapping[str, Any]) -> None:
        for name in _CONTACT_SIMPLE_FIELDS:
            if name in data:
                contact[name] = data[name]
        if "payment_terms" in data:
            contact["payment_terms"] = int(_number(data["payment_terms"], "payment_terms"))
        for name in ("billing_address", "shipping_address"):
            if name in data:
                contact[name] = self._address(data[name])

    def update_contact(
        self, org: Organization, contact_id: str, data: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[Event]]:
        """Update a contact (``PUT /contacts/{id}``); partial bodies are accepted."""
        contact = self.contact(org, contact_id)
        self._check_contact_fields(data)
        name = (
            self._check_name(org, contact_id, data["contact_name"])
            if "contact_name" in data
            else None
        )
        old_fields = contact["custom_fields"]
        new_fields = self._apply_custom_fields(
            org, "contact", contact_id, old_fields, data.get("custom_fields")
        )
        persons = (
            self._plan_persons(contact, data["contact_persons"])
            if "contact_persons" in data
            else None
        )
        if "billing_address" in data:
            self._address(data["billing_address"])
        if "shipping_address" in data:
            self._address(data["shipping_address"])
        self._copy_contact_fields(contact, data)
        if name is not None:
            self._assign_name(org, contact, name)
        if persons is not None:
            self._apply_persons(org, contact, persons)
        contact["custom_fields"] = new_fields
        self._reindex_unique(org, "contact", contact_id, old_fields, new_fields)
        self._touch(org, contact)
        detail = self.render_contact(org, contact)
        return detail, [Event(org.organization_id, "contact", "updated", contact_id, detail)]

    def delete_contact(self, org: Organization, contact_id: str) -> list[Event]:
        """Delete a contact that has no transactions."""
        contact = self.contact(org, contact_id)
        if org.invoices_by_customer.get(contact_id) or org.bills_by_vendor.get(contact_id):
            raise _error(
                400,
                CODE_NOT_ALLOWED,
                "The contact cannot be deleted as there are transactions associated with it.",
            )
        detail = self.render_contact(org, contact)
        self._reindex_unique(org, "contact", contact_id, contact["custom_fields"], [])
        name_key = str(contact["contact_name"]).strip().casefold()
        if org.contact_names.get(name_key) == contact_id:
            del org.contact_names[name_key]
        for person in contact["contact_persons"]:
            org.person_owner.pop(person["contact_person_id"], None)
        del org.contacts[contact_id]
        org.version += 1
        return [Event(org.organization_id, "contact", "deleted", contact_id, detail)]

    def set_contact_status(self, org: Organization, contact_id: str, status: str) -> list[Event]:
        """Mark a contact active or inactive."""
        contact = self.contact(org, contact_id)
        contact["status"] = status
        self._touch(org, contact)
        detail = self.render_contact(org, contact)
        return [Event(org.organization_id, "contact", "updated", contact_id, detail)]

    def _outstanding(self, org: Organization, contact_id: str) -> float:
        total = 0.0
        for invoice_id in org.invoices_by_customer.get(contact_id, ()):
            invoice = org.invoices[invoice_id]
            if invoice["_state"] == "sent":
                total += invoice["balance"]
        return round(total, 2)

    def render_contact(self, org: Organization, contact: Mapping[str, Any]) -> dict[str, Any]:
        """The detail shape of a contact."""
        detail = _public(contact)
        detail["outstanding_receivable_amount"] = self._outstanding(org, contact["contact_id"])
        detail["has_transaction"] = bool(
            org.invoices_by_customer.get(contact["contact_id"])
            or org.bills_by_vendor.get(contact["contact_id"])
        )
        return detail

    def _contact_list_item(self, org: Organization, contact: Mapping[str, Any]) -> dict[str, Any]:
        primary = next(
            (p for p in contact["contact_persons"] if p["is_primary_contact"]),
            None,
        )
        item: dict[str, Any] = {}
        for name in _CONTACT_LIST_FIELDS:
            if name in ("first_name", "last_name", "email", "phone", "mobile"):
                item[name] = primary.get(name, "") if primary else ""
            elif name == "outstanding_receivable_amount":
                item[name] = self._outstanding(org, contact["contact_id"])
            else:
                item[name] = contact.get(name)
        if self.list_custom_fields:
            for entry in contact["custom_fields"]:
                item[entry["api_name"]] = entry["value"]
        return item

    def list_contacts(self, org: Organization, args: Mapping[str, str]) -> dict[str, Any]:
        """``GET /contacts``: filtered, sorted, paginated, reduced items."""
        filter_by = args.get("filter_by") or self.contacts_default_filter
        if filter_by not in _CONTACT_FILTERS:
            raise _invalid("filter_by")
        sort_column = args.get("sort_column") or "contact_name"
        sort_keys: dict[str, Callable[[dict[str, Any]], Any]] = {
            "contact_name": lambda c: str(c["contact_name"]).casefold(),
            "first_name": lambda c: self._primary_field(c, "first_name"),
            "last_name": lambda c: self._primary_field(c, "last_name"),
            "email": lambda c: self._primary_field(c, "email"),
            "outstanding_receivable_amount": lambda c: self._outstanding(org, c["contact_id"]),
            "created_time": lambda c: c["_ctime"],
            "last_modified_time": lambda c: c["_mtime"],
        }
        if sort_column not in sort_keys:
            raise _invalid("sort_column")
        sort_order = self._sort_order(args, "A")
        since = None
        if self.contacts_last_modified_filter and args.get("last_modified_time"):
            since = self._parse_since(args["last_modified_time"])
        status = _CONTACT_FILTERS[filter_by]
        text_filters = self._text_filters(
            args,
            {
                "contact_name": lambda c: str(c["contact_name"]),
                "company_name": lambda c: str(c.get("company_name", "")),
                "first_name": lambda c: self._primary_field(c, "first_name"),
                "last_name": lambda c: self._primary_field(c, "last_name"),
                "phone": lambda c: self._primary_field(c, "phone"),
            },
        )
        email = args.get("email", "").casefold()
        search = args.get("search_text", "").casefold()
        contact_type = args.get("contact_type")

        def keep(contact: dict[str, Any]) -> bool:
            if status is not None and contact["status"] != status:
                return False
            if contact_type and contact.get("contact_type") != contact_type:
                return False
            if since is not None and contact["_mtime"] < since:
                return False
            if email and not any(
                str(p.get("email", "")).casefold() == email for p in contact["contact_persons"]
            ):
                return False
            if search and not any(
                search in str(value).casefold()
                for value in (
                    contact["contact_name"],
                    contact.get("company_name", ""),
                    self._primary_field(contact, "email"),
                )
            ):
                return False
            return all(test(contact) for test in text_filters)

        ids = self._cached_ids(
            org,
            "contacts",
            args,
            lambda: self._select(
                self._contact_candidates(org, args), keep, sort_keys[sort_column], sort_order
            ),
        )
        page, per_page, page_ids, more = self._page(args, ids)
        return {
            "contacts": [self._contact_list_item(org, org.contacts[i]) for i in page_ids],
            "page_context": {
                "page": page,
                "per_page": per_page,
                "has_more_page": more,
                "report_name": "Contacts",
                "applied_filter": filter_by,
                "sort_column": sort_column,
                "sort_order": sort_order,
            },
        }

    def _contact_candidates(
        self, org: Organization, args: Mapping[str, str]
    ) -> Mapping[str, dict[str, Any]]:
        # Exact-name lookups are how a sync engine finds matches; use the name index for them.
        name = args.get("contact_name")
        if name and self.unique_contact_names:
            found = org.contact_names.get(name.strip().casefold())
            return {found: org.contacts[found]} if found else {}
        return org.contacts

    @staticmethod
    def _invoice_candidates(
        org: Organization, customer_id: str | None
    ) -> Mapping[str, dict[str, Any]]:
        if customer_id:
            ids = sorted(org.invoices_by_customer.get(customer_id, ()), key=int)
            return {i: org.invoices[i] for i in ids}
        return org.invoices

    @staticmethod
    def _primary_field(contact: Mapping[str, Any], name: str) -> str:
        for person in contact["contact_persons"]:
            if person["is_primary_contact"]:
                return str(person.get(name, "")).casefold()
        return ""

    # -- contact persons ---------------------------------------------------------------------------

    def _owner_of(self, org: Organization, person_id: str) -> dict[str, Any]:
        contact_id = org.person_owner.get(person_id)
        if contact_id is None:
            raise _error(404, CODE_NOT_FOUND, "Contact person does not exist.")
        return org.contacts[contact_id]

    def person(self, org: Organization, person_id: str) -> dict[str, Any]:
        """A contact person with its ``contact_id``."""
        contact = self._owner_of(org, person_id)
        for person in contact["contact_persons"]:
            if person["contact_person_id"] == person_id:
                return {"contact_id": contact["contact_id"], **copy.deepcopy(person)}
        raise _error(404, CODE_NOT_FOUND, "Contact person does not exist.")

    def create_person(
        self, org: Organization, data: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[Event]]:
        """``POST /contacts/contactpersons`` (body carries ``contact_id``)."""
        contact_id = str(data.get("contact_id") or "")
        if not contact_id:
            raise _required("contact_id")
        contact = self.contact(org, contact_id)
        if not data.get("first_name"):
            raise _required("first_name")
        person = self._person(data, self.new_id())
        org.person_owner[person["contact_person_id"]] = contact_id
        contact["contact_persons"].append(person)
        self._fix_primary(
            contact, person["contact_person_id"] if person["is_primary_contact"] else None
        )
        self._touch(org, contact)
        detail = self.render_contact(org, contact)
        return self.person(org, person["contact_person_id"]), [
            Event(org.organization_id, "contact", "updated", contact_id, detail)
        ]

    def update_person(
        self, org: Organization, person_id: str, data: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[Event]]:
        """``PUT /contacts/contactpersons/{id}``."""
        contact = self._owner_of(org, person_id)
        for person in contact["contact_persons"]:
            if person["contact_person_id"] == person_id:
                for name in _PERSON_FIELDS:
                    if name in data:
                        person[name] = data[name]
        if data.get("is_primary_contact"):
            self._fix_primary(contact, person_id)
        self._touch(org, contact)
        detail = self.render_contact(org, contact)
        return self.person(org, person_id), [
            Event(org.organization_id, "contact", "updated", contact["contact_id"], detail)
        ]

    def delete_person(self, org: Organization, person_id: str) -> list[Event]:
        """``DELETE /contacts/contactpersons/{id}``."""
        contact = self._owner_of(org, person_id)
        contact["contact_persons"] = [
            p for p in contact["contact_persons"] if p["contact_person_id"] != person_id
        ]
        del org.person_owner[person_id]
        self._fix_primary(contact)
        self._touch(org, contact)
        detail = self.render_contact(org, contact)
        return [Event(org.organization_id, "contact", "updated", contact["contact_id"], detail)]

    def mark_primary(self, org: Organization, person_id: str) -> list[Event]:
        """``POST /contacts/contactpersons/{id}/primary``."""
        contact = self._owner_of(org, person_id)
        self._fix_primary(contact, person_id)
        self._touch(org, contact)
        detail = self.render_contact(org, contact)
        return [Event(org.organization_id, "contact", "updated", contact["contact_id"], detail)]

    def list_persons(
        self, org: Organization, contact_id: str, args: Mapping[str, str]
    ) -> dict[str, Any]:
        """``GET /contacts/{id}/contactpersons``."""
        contact = self.contact(org, contact_id)
        ids = [p["contact_person_id"] for p in contact["contact_persons"]]
        page, per_page, page_ids, more = self._page(args, ids)
        return {
            "contact_persons": [self.person(org, i) for i in page_ids],
            "page_context": {
                "page": page,
                "per_page": per_page,
                "has_more_page": more,
                "sort_column": "contact_person_id",
                "sort_order": "A",
            },
        }

    # -- invoices ----------------------------------------------------------------------------------

    def invoice(self, org: Organization, invoice_id: str) -> dict[str, Any]:
        """The stored invoice, or a 404 ``ApiError``."""
        found = org.invoices.get(invoice_id)
        if found is None:
            raise _error(404, CODE_NOT_FOUND, "Invoice does not exist.")
        return found

    def _line_items(self, items: Any) -> list[dict[str, Any]]:
        if not isinstance(items, list) or not items:
            raise _required("line_items")
        result = []
        for item in items:
            if not isinstance(item, Mapping):
                raise _invalid("line_items")
            rate = _number(item.get("rate", 0), "rate")
            quantity = _number(item.get("quantity", 1), "quantity")
            result.append(
                {
                    "line_item_id": str(item.get("line_item_id") or self.new_id()),
                    "item_id": str(item.get("item_id", "")),
                    "name": str(item.get("name", "")),
                    "description": str(item.get("description", "")),
                    "rate": rate,
                    "quantity": quantity,
                    "unit": str(item.get("unit", "")),
                    "discount": 0,
                    "tax_id": str(item.get("tax_id", "")),
                    "item_total": round(rate * quantity, 2),
                }
            )
        return result

    def _invoice_status(self, invoice: Mapping[str, Any], today: str) -> str:
        state = invoice["_state"]
        if state in ("draft", "void"):
            return str(state)
        if invoice["balance"] <= 0:
            return "paid"
        if invoice["due_date"] and invoice["due_date"] < today:
            return "overdue"
        if invoice["payment_made"] > 0:
            return "partially_paid"
        return self.sent_status

    def _recompute_invoice(self, org: Organization, invoice: dict[str, Any]) -> None:
        sub_total = round(sum(item["item_total"] for item in invoice["line_items"]), 2)
        invoice["sub_total"] = sub_total
        invoice["tax_total"] = 0.0
        invoice["total"] = round(sub_total + float(invoice.get("adjustment", 0) or 0), 2)
        paid = round(sum(amount for _, amount, _ in invoice["_payments"].values()), 2)
        invoice["payment_made"] = paid
        invoice["balance"] = round(invoice["total"] - paid, 2)
        dates = [date for _, _, date in invoice["_payments"].values()]
        invoice["last_payment_date"] = max(dates) if dates else ""

    def create_invoice(
        self, org: Organization, data: Mapping[str, Any], *, send: bool = False, render: bool = True
    ) -> tuple[dict[str, Any], list[Event]]:
        """``POST /invoices``: requires ``customer_id`` and ``line_items``; starts as draft.

        ``send`` creates it as sent; ``render=False`` (bulk seeding) returns only the id.
        """
        customer_id = str(data.get("customer_id") or "")
        if not customer_id:
            raise _required("customer_id")
        if customer_id not in org.contacts:
            raise _invalid("customer_id")
        customer = org.contacts[customer_id]
        line_items = self._line_items(data.get("line_items"))
        invoice_id = self.new_id()
        number = data.get("invoice_number")
        if number:
            if str(number) in org.invoice_numbers:
                raise _error(400, CODE_DUPLICATE, f'Invoice "{number}" already exists.')
        else:
            while f"INV-{org.next_invoice_number:06d}" in org.invoice_numbers:
                org.next_invoice_number += 1
            number = f"INV-{org.next_invoice_number:06d}"
            org.next_invoice_number += 1
        date = _date(data["date"], "date") if data.get("date") else self.today()
        terms = int(
            _number(data.get("payment_terms", customer.get("payment_terms", 0)), "payment_terms")
        )
        due_date = (
            _date(data["due_date"], "due_date")
            if data.get("due_date")
            else (dt.date.fromisoformat(date) + dt.timedelta(days=terms)).isoformat()
        )
        custom_fields = self._apply_custom_fields(
            org, "invoice", invoice_id, [], data.get("custom_fields")
        )
        invoice: dict[str, Any] = {
            "invoice_id": invoice_id,
            "invoice_number": str(number),
            "customer_id": customer_id,
            "customer_name": customer["contact_name"],
            "status": "draft",
            "date": date,
            "due_date": due_date,
            "payment_terms": terms,
            "currency_id": org.currency_id,
            "currency_code": customer.get("currency_code", org.currency_code),
            "exchange_rate": _number(data.get("exchange_rate", 1), "exchange_rate"),
            "reference_number": str(data.get("reference_number", "")),
            "is_emailed": False,
            "line_items": line_items,
            "adjustment": _number(data.get("adjustment", 0), "adjustment"),
            "notes": str(data.get("notes", "")),
            "terms": str(data.get("terms", "")),
            "custom_fields": custom_fields,
            "credits_applied": 0.0,
            "write_off_amount": 0.0,
            "_state": "sent" if send else "draft",
            "_payments": {},
        }
        self._recompute_invoice(org, invoice)
        self._touch(org, invoice, created=True)
        org.invoices[invoice_id] = invoice
        org.invoice_numbers[invoice["invoice_number"]] = invoice_id
        org.invoices_by_customer.setdefault(customer_id, set()).add(invoice_id)
        self._reindex_unique(org, "invoice", invoice_id, [], custom_fields)
        if not render:
            return {"invoice_id": invoice_id}, []
        detail = self.render_invoice(org, invoice)
        return detail, [Event(org.organization_id, "invoice", "created", invoice_id, detail)]

    def update_invoice(
        self, org: Organization, invoice_id: str, data: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[Event]]:
        """``PUT /invoices/{id}``: partial update; line items replace the old ones."""
        invoice = self.invoice(org, invoice_id)
        if invoice["_state"] == "void":
            raise _error(400, CODE_NOT_ALLOWED, "Void invoices cannot be edited.")
        changes: dict[str, Any] = {}
        if "customer_id" in data and str(data["customer_id"]) != invoice["customer_id"]:
            if str(data["customer_id"]) not in org.contacts:
                raise _invalid("customer_id")
            if invoice["_payments"]:
                raise _error(
                    400, CODE_NOT_ALLOWED, "The customer of a paid invoice cannot be changed."
                )
            changes["customer_id"] = str(data["customer_id"])
        if "line_items" in data:
            changes["line_items"] = self._line_items(data["line_items"])
        for name in ("date", "due_date"):
            if data.get(name):
                changes[name] = _date(data[name], name)
        if "invoice_number" in data and data["invoice_number"] != invoice["invoice_number"]:
            number = str(data["invoice_number"])
            if number in org.invoice_numbers:
                raise _error(400, CODE_DUPLICATE, f'Invoice "{number}" already exists.')
            changes["invoice_number"] = number
        for name in ("reference_number", "notes", "terms"):
            if name in data:
                changes[name] = str(data[name])
        for name in ("exchange_rate", "adjustment"):
            if name in data:
                changes[name] = _number(data[name], name)
        old_fields = invoice["custom_fields"]
        new_fields = self._apply_custom_fields(
            org, "invoice", invoice_id, old_fields, data.get("custom_fields")
        )
        trial = {**invoice, **changes}
        self._recompute_invoice(org, trial)
        if trial["balance"] < 0:
            raise _error(
                400, CODE_NOT_ALLOWED, "The invoice total cannot be less than the payments made."
            )
        if "customer_id" in changes:
            org.invoices_by_customer[invoice["customer_id"]].discard(invoice_id)
            org.invoices_by_customer.setdefault(changes["customer_id"], set()).add(invoice_id)
            changes["customer_name"] = org.contacts[changes["customer_id"]]["contact_name"]
        if "invoice_number" in changes:
            del org.invoice_numbers[invoice["invoice_number"]]
            org.invoice_numbers[changes["invoice_number"]] = invoice_id
        invoice.update(changes)
        invoice["custom_fields"] = new_fields
        self._reindex_unique(org, "invoice", invoice_id, old_fields, new_fields)
        self._recompute_invoice(org, invoice)
        self._touch(org, invoice)
        detail = self.render_invoice(org, invoice)
        return detail, [Event(org.organization_id, "invoice", "updated", invoice_id, detail)]

    def delete_invoice(self, org: Organization, invoice_id: str) -> list[Event]:
        """``DELETE /invoices/{id}`` (refused while payments are applied)."""
        invoice = self.invoice(org, invoice_id)
        if invoice["_payments"]:
            raise _error(
                400,
                CODE_NOT_ALLOWED,
                "Invoices which have payments applied cannot be deleted. Delete the payments first.",
            )
        detail = self.render_invoice(org, invoice)
        self._reindex_unique(org, "invoice", invoice_id, invoice["custom_fields"], [])
        del org.invoice_numbers[invoice["invoice_number"]]
        org.invoices_by_customer[invoice["customer_id"]].discard(invoice_id)
        del org.invoices[invoice_id]
        org.version += 1
        return [Event(org.organization_id, "invoice", "deleted", invoice_id, detail)]

    def set_invoice_status(self, org: Organization, invoice_id: str, target: str) -> list[Event]:
        """``POST /invoices/{id}/status/sent|void|draft``."""
        invoice = self.invoice(org, invoice_id)
        if target not in ("sent", "void", "draft"):
            raise _error(404, 5, "Invalid URL Passed")
        if target in ("void", "draft") and invoice["_payments"]:
            raise _error(
                400, CODE_NOT_ALLOWED, "Invoices with payments cannot be marked as void or draft."
            )
        invoice["_state"] = target
        if target == "sent":
            invoice["is_emailed"] = invoice.get("is_emailed", False)
        self._touch(org, invoice)
        detail = self.render_invoice(org, invoice)
        return [Event(org.organization_id, "invoice", "updated", invoice_id, detail)]

    def render_invoice(self, org: Organization, invoice: Mapping[str, Any]) -> dict[str, Any]:
        """The detail shape of an invoice (status computed against today's date)."""
        detail = _public(invoice)
        detail["status"] = self._invoice_status(invoice, self.today())
        if invoice["_state"] == "void":
            detail["balance"] = 0.0
        return detail

    def _invoice_list_item(self, invoice: Mapping[str, Any], today: str) -> dict[str, Any]:
        item = {
            name: copy.deepcopy(invoice.get(name))
            for name in _INVOICE_LIST_FIELDS
            if name != "due_days"
        }
        item["status"] = self._invoice_status(invoice, today)
        if invoice["_state"] == "void":
            item["balance"] = 0.0
        if item["status"] in ("paid", "void", "draft"):
            item["due_days"] = ""
        else:
            days = (dt.date.fromisoformat(invoice["due_date"]) - dt.date.fromisoformat(today)).days
            item["due_days"] = (
                f"Due in {days} day(s)" if days >= 0 else f"Overdue by {-days} day(s)"
            )
        if self.list_custom_fields:
            for entry in invoice["custom_fields"]:
                item[entry["api_name"]] = entry["value"]
        return item

    def list_invoices(self, org: Organization, args: Mapping[str, str]) -> dict[str, Any]:
        """``GET /invoices`` with the documented filters (reference §5.2)."""
        today = self.today()
        sort_column = args.get("sort_column") or "created_time"
        sort_keys: dict[str, Callable[[dict[str, Any]], Any]] = {
            "customer_name": lambda i: str(i["customer_name"]).casefold(),
            "invoice_number": lambda i: i["invoice_number"],
            "date": lambda i: i["date"],
            "due_date": lambda i: i["due_date"],
            "total": lambda i: i["total"],
            "balance": lambda i: i["balance"],
            "created_time": lambda i: i["_ctime"],
            "last_modified_time": lambda i: i["_mtime"],
        }
        if sort_column not in sort_keys:
            raise _invalid("sort_column")
        sort_order = self._sort_order(args, "D")
        status = args.get("status")
        if status and status not in _INVOICE_STATUSES:
            raise _invalid("status")
        filter_by = args.get("filter_by", "Status.All")
        if not filter_by.startswith("Status."):
            raise _invalid("filter_by")
        filter_status = filter_by.split(".", 1)[1].lower()
        if filter_status == "all":
            filter_status = ""
        if filter_status == "partiallypaid":
            filter_status = "partially_paid"
        since = (
            self._parse_since(args["last_modified_time"])
            if args.get("last_modified_time")
            else None
        )
        customer_id = args.get("customer_id")
        reference = args.get("reference_number")
        search = args.get("search_text", "").casefold()
        ranges = self._date_ranges(args, "date") + self._date_ranges(args, "due_date")
        text_filters = self._text_filters(
            args,
            {
                "invoice_number": lambda i: i["invoice_number"],
                "customer_name": lambda i: str(i["customer_name"]),
            },
        )

        def status_matches(invoice: Mapping[str, Any], wanted: str) -> bool:
            actual = self._invoice_status(invoice, today)
            if wanted == "unpaid":
                return actual in ("sent", "unpaid", "overdue", "partially_paid")
            if wanted == "sent":
                return bool(invoice["_state"] == "sent")
            if wanted == "viewed":
                return False
            return actual == wanted

        def keep(invoice: dict[str, Any]) -> bool:
            if customer_id and invoice["customer_id"] != customer_id:
                return False
            if since is not None and invoice["_mtime"] < since:
                return False
            if reference and invoice["reference_number"] != reference:
                return False
            if status and not status_matches(invoice, status):
                return False
            if filter_status and not status_matches(invoice, filter_status):
                return False
            if search and not any(
                search in str(value).casefold()
                for value in (
                    invoice["invoice_number"],
                    invoice["customer_name"],
                    invoice["reference_number"],
                )
            ):
                return False
            if not all(test(invoice) for test in ranges):
                return False
            return all(test(invoice) for test in text_filters)

        ids = self._cached_ids(
            org,
            "invoices",
            {**args, "_today": today},
            lambda: self._select(
                self._invoice_candidates(org, customer_id), keep, sort_keys[sort_column], sort_order
            ),
        )
        page, per_page, page_ids, more = self._page(args, ids)
        return {
            "invoices": [self._invoice_list_item(org.invoices[i], today) for i in page_ids],
            "page_context": {
                "page": page,
                "per_page": per_page,
                "has_more_page": more,
                "report_name": "Invoices",
                "applied_filter": filter_by,
                "sort_column": sort_column,
                "sort_order": sort_order,
            },
        }

    def invoice_payments(self, org: Organization, invoice_id: str) -> list[dict[str, Any]]:
        """``GET /invoices/{id}/payments`` items."""
        invoice = self.invoice(org, invoice_id)
        result = []
        for payment_id, (link_id, amount, _date_value) in invoice["_payments"].items():
            payment = org.payments[payment_id]
            result.append(
                {
                    "payment_id": payment_id,
                    "payment_number": payment["payment_number"],
                    "invoice_id": invoice_id,
                    "invoice_payment_id": link_id,
                    "payment_mode": payment["payment_mode"],
                    "description": payment["description"],
                    "date": payment["date"],
                    "reference_number": payment["reference_number"],
                    "exchange_rate": payment["exchange_rate"],
                    "amount": amount,
                    "tax_amount_withheld": 0.0,
                    "is_single_invoice_payment": len(payment["invoices"]) == 1,
                }
            )
        return result

    # -- customer payments -------------------------------------------------------------------------

    def payment(self, org: Organization, payment_id: str) -> dict[str, Any]:
        """The stored payment, or a 404 ``ApiError``."""
        found = org.payments.get(payment_id)
        if found is None:
            raise _error(404, CODE_NOT_FOUND, "Payment does not exist.")
        return found

    def _applications(
        self, org: Organization, customer_id: str, amount: float, items: Any, payment_id: str
    ) -> list[tuple[dict[str, Any], float]]:
        if items is None:
            items = []
        if not isinstance(items, list):
            raise _invalid("invoices")
        applications: list[tuple[dict[str, Any], float]] = []
        for item in items:
            if not isinstance(item, Mapping) or not item.get("invoice_id"):
                raise _required("invoice_id")
            invoice = org.invoices.get(str(item["invoice_id"]))
            if invoice is None or invoice["customer_id"] != customer_id:
                raise _invalid("invoice_id")
            applied = _number(item.get("amount_applied"), "amount_applied")
            if applied <= 0:
                raise _invalid("amount_applied")
            if invoice["_state"] == "void":
                raise _error(
                    400, CODE_NOT_ALLOWED, "Payments cannot be recorded for void invoices."
                )
            already = invoice["_payments"].get(payment_id, ("", 0.0, ""))[1]
            if applied > round(invoice["balance"] + already, 2) + 1e-9:
                raise _error(
                    400,
                    CODE_NOT_ALLOWED,
                    f"The amount applied to {invoice['invoice_number']} is more than its balance.",
                )
            applications.append((invoice, applied))
        if sum(applied for _, applied in applications) > amount + 1e-9:
            raise _error(
                400, CODE_NOT_ALLOWED, "The amount applied to invoices exceeds the payment amount."
            )
        return applications

    def _attach(
        self,
        org: Organization,
        payment: dict[str, Any],
        applications: list[tuple[dict[str, Any], float]],
    ) -> list[Event]:
        events = []
        entries = []
        for invoice, applied in applications:
            link_id = self.new_id()
            invoice["_payments"][payment["payment_id"]] = (link_id, applied, payment["date"])
            if invoice["_state"] == "draft":
                invoice["_state"] = "sent"
            self._recompute_invoice(org, invoice)
            self._touch(org, invoice)
            entries.append(
                {
                    "invoice_payment_id": link_id,
                    "invoice_id": invoice["invoice_id"],
                    "invoice_number": invoice["invoice_number"],
                    "date": invoice["date"],
                    "invoice_amount": invoice["total"],
                    "amount_applied": applied,
                    "balance_amount": invoice["balance"],
                }
            )
            detail = self.render_invoice(org, invoice)
            events.append(
                Event(org.organization_id, "invoice", "updated", invoice["invoice_id"], detail)
            )
        payment["invoices"] = entries
        payment["invoice_numbers"] = ",".join(e["invoice_number"] for e in entries)
        payment["unused_amount"] = round(payment["amount"] - sum(a for _, a in applications), 2)
        return events

    def _detach(self, org: Organization, payment: dict[str, Any]) -> list[Event]:
        events = []
        for entry in payment.get("invoices", []):
            invoice = org.invoices.get(entry["invoice_id"])
            if invoice is None:
                continue
            invoice["_payments"].pop(payment["payment_id"], None)
            self._recompute_invoice(org, invoice)
            self._touch(org, invoice)
            detail = self.render_invoice(org, invoice)
            events.append(
                Event(org.organization_id, "invoice", "updated", invoice["invoice_id"], detail)
            )
        payment["invoices"] = []
        return events

    def create_payment(
        self, org: Organization, data: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[Event]]:
        """``POST /customerpayments``: applies ``invoices[].amount_applied`` to invoice balances."""
        customer_id = str(data.get("customer_id") or "")
        if not customer_id:
            raise _required("customer_id")
        if customer_id not in org.contacts:
            raise _invalid("customer_id")
        if "amount" not in data:
            raise _required("amount")
        amount = _number(data["amount"], "amount")
        if amount <= 0:
            raise _invalid("amount")
        payment_id = self.new_id()
        applications = self._applications(
            org, customer_id, amount, data.get("invoices"), payment_id
        )
        payment: dict[str, Any] = {
            "payment_id": payment_id,
            "payment_number": str(org.next_payment_number),
            "date": _date(data["date"], "date") if data.get("date") else self.today(),
            "payment_mode": str(data.get("payment_mode", "cash")),
            "amount": amount,
            "bcy_amount": amount,
            "unused_amount": amount,
            "exchange_rate": _number(data.get("exchange_rate", 1), "exchange_rate"),
            "customer_id": customer_id,
            "customer_name": org.contacts[customer_id]["contact_name"],
            "reference_number": str(data.get("reference_number", "")),
            "description": str(data.get("description", "")),
            "currency_code": org.contacts[customer_id].get("currency_code", org.currency_code),
            "invoices": [],
            "invoice_numbers": "",
        }
        org.next_payment_number += 1
        self._touch(org, payment, created=True)
        org.payments[payment_id] = payment
        events = self._attach(org, payment, applications)
        detail = _public(payment)
        return detail, [
            Event(org.organization_id, "customerpayment", "created", payment_id, detail),
            *events,
        ]

    def update_payment(
        self, org: Organization, payment_id: str, data: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[Event]]:
        """``PUT /customerpayments/{id}``: re-applies the (new) invoice list."""
        payment = self.payment(org, payment_id)
        customer_id = str(data.get("customer_id") or payment["customer_id"])
        if customer_id not in org.contacts:
            raise _invalid("customer_id")
        amount = _number(data.get("amount", payment["amount"]), "amount")
        if amount <= 0:
            raise _invalid("amount")
        items = data.get("invoices")
        if items is None:
            items = [
                {"invoice_id": e["invoice_id"], "amount_applied": e["amount_applied"]}
                for e in payment["invoices"]
            ]
        applications = self._applications(org, customer_id, amount, items, payment_id)
        events = self._detach(org, payment)
        payment.update(
            {
                "customer_id": customer_id,
                "customer_name": org.contacts[customer_id]["contact_name"],
                "amount": amount,
                "bcy_amount": amount,
            }
        )
        if data.get("date"):
            payment["date"] = _date(data["date"], "date")
        for name in ("payment_mode", "reference_number", "description"):
            if name in data:
                payment[name] = str(data[name])
        self._touch(org, payment)
        attached = self._attach(org, payment, applications)
        detail = _public(payment)
        return detail, [
            Event(org.organization_id, "customerpayment", "updated", payment_id, detail),
            *_dedupe(events + attached),
        ]

    def delete_payment(self, org: Organization, payment_id: str) -> list[Event]:
        """``DELETE /customerpayments/{id}``: gives the amounts back to the invoices."""
        payment = self.payment(org, payment_id)
        detail = _public(payment)
        events = self._detach(org, payment)
        del org.payments[payment_id]
        org.version += 1
        return [
            Event(org.organization_id, "customerpayment", "deleted", payment_id, detail),
            *events,
        ]

    def list_payments(self, org: Organization, args: Mapping[str, str]) -> dict[str, Any]:
        """``GET /customerpayments``: list node ``customerpayments``, newest ``date`` first.

        Node, default sort and report name as in a recorded live answer
        (``shared/recordings/zoho_api/customerpayments_list.json``); the OAS's
        ``customer_payments`` node is a defect of the spec.
        """
        sort_column = args.get("sort_column") or "date"
        sort_keys: dict[str, Callable[[dict[str, Any]], Any]] = {
            "customer_name": lambda p: str(p["customer_name"]).casefold(),
            "payment_number": lambda p: int(p["payment_number"]),
            "date": lambda p: p["date"],
            "amount": lambda p: p["amount"],
            "reference_number": lambda p: p["reference_number"],
            "created_time": lambda p: p["_ctime"],
            "last_modified_time": lambda p: p["_mtime"],
        }
        if sort_column not in sort_keys:
            raise _invalid("sort_column")
        sort_order = self._sort_order(args, "D")
        customer_id = args.get("customer_id")
        reference = args.get("reference_number")
        mode = args.get("payment_mode")
        date = args.get("date")

        def keep(payment: dict[str, Any]) -> bool:
            if customer_id and payment["customer_id"] != customer_id:
                return False
            if reference and payment["reference_number"] != reference:
                return False
            if mode and payment["payment_mode"] != mode:
                return False
            return not (date and payment["date"] != date)

        ids = self._cached_ids(
            org,
            "payments",
            args,
            lambda: self._select(org.payments, keep, sort_keys[sort_column], sort_order),
        )
        page, per_page, page_ids, more = self._page(args, ids)
        return {
            "customerpayments": [
                {name: org.payments[i].get(name) for name in _PAYMENT_LIST_FIELDS} for i in page_ids
            ],
            "page_context": {
                "page": page,
                "per_page": per_page,
                "has_more_page": more,
                "report_name": "Payments Received",
                "applied_filter": args.get("filter_by", "PaymentMode.All"),
                "custom_fields": [],
                "sort_column": sort_column,
                "sort_order": sort_order,
            },
        }

    # -- bills (vendor side) ---------------------------------------------------------------------

    def bill(self, org: Organization, bill_id: str) -> dict[str, Any]:
        """The stored bill, or a 404 ``ApiError``."""
        found = org.bills.get(bill_id)
        if found is None:
            raise _error(404, CODE_NOT_FOUND, "Bill does not exist.")
        return found

    def _vendor(self, org: Organization, vendor_id: str) -> dict[str, Any]:
        vendor = org.contacts.get(vendor_id)
        if vendor is None or vendor.get("contact_type") != "vendor":
            raise _invalid("vendor_id")
        return vendor

    @staticmethod
    def _bill_status(bill: Mapping[str, Any], today: str) -> str:
        if bill["_state"] == "void":
            return "void"
        if bill["balance"] <= 0:
            return "paid"
        if bill["due_date"] and bill["due_date"] < today:
            return "overdue"
        if bill["payment_made"] > 0:
            return "partially_paid"
        return "open"

    @staticmethod
    def _recompute_bill(bill: dict[str, Any]) -> None:
        sub_total = round(sum(item["item_total"] for item in bill["line_items"]), 2)
        bill["sub_total"] = sub_total
        bill["tax_total"] = 0.0
        bill["total"] = round(sub_total + float(bill.get("adjustment", 0) or 0), 2)
        paid = round(sum(bill["_payments"].values()), 2)
        bill["payment_made"] = paid
        bill["balance"] = round(bill["total"] - paid, 2)

    def create_bill(
        self, org: Organization, data: Mapping[str, Any], *, render: bool = True
    ) -> tuple[dict[str, Any], list[Event]]:
        """``POST /bills``: requires a vendor's ``vendor_id`` and ``line_items``; starts open.

        ``status = "void"`` creates it void (seeding); ``render=False`` returns only the id.
        """
        vendor_id = str(data.get("vendor_id") or "")
        if not vendor_id:
            raise _required("vendor_id")
        vendor = self._vendor(org, vendor_id)
        line_items = self._line_items(data.get("line_items"))
        state = str(data.get("status") or "open")
        if state not in ("open", "void"):
            raise _invalid("status")
        number = str(data.get("bill_number") or "")
        if not number:
            number = f"BILL-{org.next_bill_number:06d}"
            org.next_bill_number += 1
        date = _date(data["date"], "date") if data.get("date") else self.today()
        terms = int(
            _number(data.get("payment_terms", vendor.get("payment_terms", 0)), "payment_terms")
        )
        due_date = (
            _date(data["due_date"], "due_date")
            if data.get("due_date")
            else (dt.date.fromisoformat(date) + dt.timedelta(days=terms)).isoformat()
        )
        bill_id = self.new_id()
        bill: dict[str, Any] = {
            "bill_id": bill_id,
            "bill_number": number,
            "vendor_id": vendor_id,
            "vendor_name": vendor["contact_name"],
            "status": "open",
            "date": date,
            "due_date": due_date,
            "payment_terms": terms,
            "currency_id": vendor.get("currency_id", org.currency_id),
            "currency_code": vendor.get("currency_code", org.currency_code),
            "exchange_rate": _number(data.get("exchange_rate", 1), "exchange_rate"),
            "reference_number": str(data.get("reference_number", "")),
            "line_items": line_items,
            "adjustment": _number(data.get("adjustment", 0), "adjustment"),
            "notes": str(data.get("notes", "")),
            "_state": state,
            "_payments": {},
        }
        self._recompute_bill(bill)
        self._touch(org, bill, created=True)
        org.bills[bill_id] = bill
        org.bills_by_vendor.setdefault(vendor_id, set()).add(bill_id)
        if not render:
            return {"bill_id": bill_id}, []
        detail = self.render_bill(org, bill)
        return detail, [Event(org.organization_id, "bill", "created", bill_id, detail)]

    def update_bill(
        self, org: Organization, bill_id: str, data: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[Event]]:
        """``PUT /bills/{id}``: partial update; line items replace the old ones."""
        bill = self.bill(org, bill_id)
        if bill["_state"] == "void":
            raise _error(400, CODE_NOT_ALLOWED, "Void bills cannot be edited.")
        changes: dict[str, Any] = {}
        if "vendor_id" in data and str(data["vendor_id"]) != bill["vendor_id"]:
            vendor = self._vendor(org, str(data["vendor_id"]))
            if bill["_payments"]:
                raise _error(400, CODE_NOT_ALLOWED, "The vendor of a paid bill cannot be changed.")
            changes["vendor_id"] = str(data["vendor_id"])
            changes["vendor_name"] = vendor["contact_name"]
        if "line_items" in data:
            changes["line_items"] = self._line_items(data["line_items"])
        for name in ("date", "due_date"):
            if data.get(name):
                changes[name] = _date(data[name], name)
        for name in ("bill_number", "reference_number", "notes"):
            if name in data:
                changes[name] = str(data[name])
        for name in ("exchange_rate", "adjustment"):
            if name in data:
                changes[name] = _number(data[name], name)
        trial = {**bill, **changes}
        self._recompute_bill(trial)
        if trial["balance"] < 0:
            raise _error(
                400, CODE_NOT_ALLOWED, "The bill total cannot be less than the payments made."
            )
        if "vendor_id" in changes:
            org.bills_by_vendor[bill["vendor_id"]].discard(bill_id)
            org.bills_by_vendor.setdefault(changes["vendor_id"], set()).add(bill_id)
        bill.update(changes)
        self._recompute_bill(bill)
        self._touch(org, bill)
        detail = self.render_bill(org, bill)
        return detail, [Event(org.organization_id, "bill", "updated", bill_id, detail)]

    def delete_bill(self, org: Organization, bill_id: str) -> list[Event]:
        """``DELETE /bills/{id}`` (refused while vendor payments are applied)."""
        bill = self.bill(org, bill_id)
        if bill["_payments"]:
            raise _error(
                400,
                CODE_NOT_ALLOWED,
                "Bills which have payments applied cannot be deleted. Delete the payments first.",
            )
        detail = self.render_bill(org, bill)
        org.bills_by_vendor[bill["vendor_id"]].discard(bill_id)
        del org.bills[bill_id]
        org.version += 1
        return [Event(org.organization_id, "bill", "deleted", bill_id, detail)]

    def set_bill_status(self, org: Organization, bill_id: str, target: str) -> list[Event]:
        """``POST /bills/{id}/status/open|void``."""
        bill = self.bill(org, bill_id)
        if target not in ("open", "void"):
            raise _error(404, 5, "Invalid URL Passed")
        if target == "void" and bill["_payments"]:
            raise _error(400, CODE_NOT_ALLOWED, "Bills with payments cannot be marked as void.")
        bill["_state"] = target
        self._touch(org, bill)
        detail = self.render_bill(org, bill)
        return [Event(org.organization_id, "bill", "updated", bill_id, detail)]

    def render_bill(self, org: Organization, bill: Mapping[str, Any]) -> dict[str, Any]:
        """The detail shape of a bill (status computed against today's date)."""
        detail = _public(bill)
        detail["status"] = self._bill_status(bill, self.today())
        if bill["_state"] == "void":
            detail["balance"] = 0.0
        return detail

    def list_bills(self, org: Organization, args: Mapping[str, str]) -> dict[str, Any]:
        """``GET /bills``: ``vendor_id``, ``status``, ``last_modified_time`` filters, paging."""
        today = self.today()
        sort_column = args.get("sort_column") or "created_time"
        sort_keys: dict[str, Callable[[dict[str, Any]], Any]] = {
            "vendor_name": lambda b: str(b["vendor_name"]).casefold(),
            "bill_number": lambda b: b["bill_number"],
            "date": lambda b: b["date"],
            "due_date": lambda b: b["due_date"],
            "total": lambda b: b["total"],
            "balance": lambda b: b["balance"],
            "created_time": lambda b: b["_ctime"],
            "last_modified_time": lambda b: b["_mtime"],
        }
        if sort_column not in sort_keys:
            raise _invalid("sort_column")
        sort_order = self._sort_order(args, "D")
        status = args.get("status")
        if status and status not in _BILL_STATUSES:
            raise _invalid("status")
        since = (
            self._parse_since(args["last_modified_time"])
            if args.get("last_modified_time")
            else None
        )
        vendor_id = args.get("vendor_id")

        def keep(bill: dict[str, Any]) -> bool:
            if since is not None and bill["_mtime"] < since:
                return False
            return not (status and self._bill_status(bill, today) != status)

        candidates: Mapping[str, dict[str, Any]] = org.bills
        if vendor_id:
            ids = sorted(org.bills_by_vendor.get(vendor_id, ()), key=int)
            candidates = {i: org.bills[i] for i in ids}
        ids = self._cached_ids(
            org,
            "bills",
            {**args, "_today": today},
            lambda: self._select(candidates, keep, sort_keys[sort_column], sort_order),
        )
        page, per_page, page_ids, more = self._page(args, ids)
        items = []
        for bill_id in page_ids:
            bill = org.bills[bill_id]
            item = {name: copy.deepcopy(bill.get(name)) for name in _BILL_LIST_FIELDS}
            item["status"] = self._bill_status(bill, today)
            if bill["_state"] == "void":
                item["balance"] = 0.0
            items.append(item)
        return {
            "bills": items,
            "page_context": {
                "page": page,
                "per_page": per_page,
                "has_more_page": more,
                "report_name": "Bills",
                "applied_filter": args.get("filter_by", "Status.All"),
                "sort_column": sort_column,
                "sort_order": sort_order,
            },
        }

    # -- vendor payments ---------------------------------------------------------------------------

    def vendor_payment(self, org: Organization, payment_id: str) -> dict[str, Any]:
        """The stored vendor payment, or a 404 ``ApiError``."""
        found = org.vendor_payments.get(payment_id)
        if found is None:
            raise _error(404, CODE_NOT_FOUND, "Vendor payment does not exist.")
        return found

    def create_vendor_payment(
        self, org: Organization, data: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[Event]]:
        """``POST /vendorpayments``: applies ``bills[].amount_applied`` to bill balances."""
        vendor_id = str(data.get("vendor_id") or "")
        if not vendor_id:
            raise _required("vendor_id")
        vendor = self._vendor(org, vendor_id)
        if "amount" not in data:
            raise _required("amount")
        amount = _number(data["amount"], "amount")
        if amount <= 0:
            raise _invalid("amount")
        items = data.get("bills") or []
        if not isinstance(items, list):
            raise _invalid("bills")
        applications: list[tuple[dict[str, Any], float]] = []
        for item in items:
            if not isinstance(item, Mapping) or not item.get("bill_id"):
                raise _required("bill_id")
            bill = org.bills.get(str(item["bill_id"]))
            if bill is None or bill["vendor_id"] != vendor_id:
                raise _invalid("bill_id")
            applied = _number(item.get("amount_applied"), "amount_applied")
            if applied <= 0:
                raise _invalid("amount_applied")
            if bill["_state"] == "void":
                raise _error(400, CODE_NOT_ALLOWED, "Payments cannot be recorded for void bills.")
            if applied > bill["balance"] + 1e-9:
                raise _error(
                    400,
                    CODE_NOT_ALLOWED,
                    f"The amount applied to {bill['bill_number']} is more than its balance.",
                )
            applications.append((bill, applied))
        if sum(applied for _, applied in applications) > amount + 1e-9:
            raise _error(
                400, CODE_NOT_ALLOWED, "The amount applied to bills exceeds the payment amount."
            )
        payment_id = self.new_id()
        payment: dict[str, Any] = {
            "payment_id": payment_id,
            "payment_number": str(org.next_vendor_payment_number),
            "vendor_id": vendor_id,
            "vendor_name": vendor["contact_name"],
            "date": _date(data["date"], "date") if data.get("date") else self.today(),
            "payment_mode": str(data.get("payment_mode", "cash")),
            "amount": amount,
            "reference_number": str(data.get("reference_number", "")),
            "description": str(data.get("description", "")),
            "currency_code": vendor.get("currency_code", org.currency_code),
            "bills": [],
        }
        org.next_vendor_payment_number += 1
        self._touch(org, payment, created=True)
        events = []
        for bill, applied in applications:
            bill["_payments"][payment_id] = applied
            self._recompute_bill(bill)
            self._touch(org, bill)
            payment["bills"].append(
                {
                    "bill_payment_id": self.new_id(),
                    "bill_id": bill["bill_id"],
                    "bill_number": bill["bill_number"],
                    "amount_applied": applied,
                }
            )
            detail = self.render_bill(org, bill)
            events.append(Event(org.organization_id, "bill", "updated", bill["bill_id"], detail))
        org.vendor_payments[payment_id] = payment
        detail = _public(payment)
        return detail, [
            Event(org.organization_id, "vendorpayment", "created", payment_id, detail),
            *events,
        ]

    def delete_vendor_payment(self, org: Organization, payment_id: str) -> list[Event]:
        """``DELETE /vendorpayments/{id}``: gives the amounts back to the bills."""
        payment = self.vendor_payment(org, payment_id)
        detail = _public(payment)
        events = []
        for entry in payment["bills"]:
            bill = org.bills.get(entry["bill_id"])
            if bill is None:
                continue
            bill["_payments"].pop(payment_id, None)
            self._recompute_bill(bill)
            self._touch(org, bill)
            events.append(
                Event(
                    org.organization_id,
                    "bill",
                    "updated",
                    bill["bill_id"],
                    self.render_bill(org, bill),
                )
            )
        del org.vendor_payments[payment_id]
        org.version += 1
        return [
            Event(org.organization_id, "vendorpayment", "deleted", payment_id, detail),
            *events,
        ]

    # -- listing machinery -------------------------------------------------------------------------

    @staticmethod
    def _sort_order(args: Mapping[str, str], default: str) -> str:
        order = args.get("sort_order") or default
        if order not in ("A", "D"):
            raise _invalid("sort_order")
        return order

    @staticmethod
    def _parse_since(value: str) -> float:
        try:
            return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z").timestamp()
        except ValueError:
            # An unencoded "+" arrives as a space and lands here, as it does on Zoho.
            raise _invalid("last_modified_time") from None

    @staticmethod
    def _text_filters(
        args: Mapping[str, str], fields: Mapping[str, Callable[[dict[str, Any]], str]]
    ) -> list[Callable[[dict[str, Any]], bool]]:
        tests: list[Callable[[dict[str, Any]], bool]] = []
        for name, getter in fields.items():
            for suffix in ("", "_startswith", "_contains"):
                wanted = args.get(name + suffix)
                if not wanted:
                    continue
                if len(wanted) > 100:
                    raise _invalid(name + suffix)
                tests.append(_text_test(getter, suffix, wanted.casefold()))
        return tests

    @staticmethod
    def _date_ranges(args: Mapping[str, str], name: str) -> list[Callable[[dict[str, Any]], bool]]:
        tests: list[Callable[[dict[str, Any]], bool]] = []
        for suffix in ("", "_start", "_end", "_before", "_after"):
            wanted = args.get(name + suffix)
            if wanted:
                tests.append(_date_test(name, suffix, _date(wanted, name + suffix)))
        return tests

    @staticmethod
    def _select(
        records: Mapping[str, dict[str, Any]],
        keep: Callable[[dict[str, Any]], bool],
        key: Callable[[dict[str, Any]], Any],
        order: str,
    ) -> list[str]:
        chosen = [record for record in records.values() if keep(record)]
        # Python's sort is stable, so ties stay in creation order (ids are increasing).
        chosen.sort(key=key, reverse=order == "D")
        id_key = next(
            (
                k
                for k in ("contact_id", "invoice_id", "payment_id", "bill_id")
                if chosen and k in chosen[0]
            ),
            "",
        )
        return [record[id_key] for record in chosen]

    @staticmethod
    def _cached_ids(
        org: Organization, entity: str, args: Mapping[str, str], compute: Callable[[], list[str]]
    ) -> list[str]:
        # Paging through 40,000 invoices re-runs the same filter for every page; cache the ordered
        # ids until anything in the org changes.
        relevant = tuple(
            sorted(
                (k, v) for k, v in args.items() if k not in ("page", "per_page", "organization_id")
            )
        )
        key = (entity, org.version, relevant)
        cached = org.list_cache.get(key)
        if cached is None:
            if len(org.list_cache) > 32:
                org.list_cache.clear()
            cached = compute()
            org.list_cache[key] = cached
        return cached

    @staticmethod
    def _page(args: Mapping[str, str], ids: list[str]) -> tuple[int, int, list[str], bool]:
        try:
            page = int(args.get("page", "1") or "1")
        except ValueError:
            raise _invalid("page") from None
        try:
            per_page = int(args.get("per_page", str(MAX_PER_PAGE)) or MAX_PER_PAGE)
        except ValueError:
            raise _invalid("per_page") from None
        if page < 1:
            raise _invalid("page")
        if per_page < 1:
            raise _invalid("per_page")
        per_page = min(per_page, MAX_PER_PAGE)
        start = (page - 1) * per_page
        return page, per_page, ids[start : start + per_page], len(ids) > start + per_page

    # -- bulk seeding ------------------------------------------------------------------------------

    def bulk(
        self, org: Organization, entity: str, records: Iterable[Mapping[str, Any]]
    ) -> list[str]:
        """Create many records fast, without webhooks (for seeding); returns their ids."""
        create: Callable[[Organization, Mapping[str, Any]], tuple[dict[str, Any], list[Event]]]
        if entity == "contacts":
            create = self._bulk_contact
        elif entity == "invoices":
            create = self._bulk_invoice
        elif entity in ("customerpayments", "payments"):
            create = self.create_payment
        elif entity == "bills":
            create = self._bulk_bill
        elif entity == "vendorpayments":
            create = self.create_vendor_payment
        else:
            raise ValueError(f"unknown entity {entity!r}")
        ids = []
        for record in records:
            detail, _ = create(org, record)
            ids.append(next(str(v) for k, v in detail.items() if k.endswith("_id")))
        return ids

    def _bulk_contact(
        self, org: Organization, data: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[Event]]:
        return self.create_contact(org, data, render=False)

    def _bulk_invoice(
        self, org: Organization, data: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[Event]]:
        state = str(data.get("status", "draft"))
        return self.create_invoice(
            org, data, send=state in ("sent", "unpaid", "overdue"), render=False
        )

    def _bulk_bill(
        self, org: Organization, data: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[Event]]:
        return self.create_bill(org, data, render=False)

    def seed(
        self, org: Organization, *, contacts: int = 0, invoices: int = 0, seed: int = 0
    ) -> dict[str, int]:
        """Generate synthetic contacts and invoices (invoices spread over the contacts)."""
        rng = random.Random(seed)
        start = len(org.contacts)
        for n in range(start, start + contacts):
            self._bulk_contact(
                org,
                {
                    "contact_name": f"Seed Customer {org.organization_id}-{n:06d}",
                    "company_name": f"Seed Co {n:06d}",
                    "contact_persons": [
                        {
                            "first_name": f"First{n}",
                            "last_name": f"Last{n}",
                            "email": f"customer{n}@example.test",
                            "is_primary_contact": True,
                        }
                    ],
                },
            )
        customer_ids = list(org.contacts)
        if invoices and not customer_ids:
            raise ValueError("seeding invoices needs contacts")
        for _ in range(invoices):
            self._bulk_invoice(
                org,
                {
                    "customer_id": customer_ids[rng.randrange(len(customer_ids))],
                    "status": "sent",
                    "line_items": [
                        {
                            "name": "Service",
                            "rate": round(rng.uniform(10, 1000), 2),
                            "quantity": rng.randint(1, 5),
                        }
                    ],
                },
            )
        return {"contacts": len(org.contacts), "invoices": len(org.invoices)}


def _text_test(
    getter: Callable[[dict[str, Any]], str], suffix: str, needle: str
) -> Callable[[dict[str, Any]], bool]:
    def test(record: dict[str, Any]) -> bool:
        have = getter(record).casefold()
        if suffix == "_startswith":
            return have.startswith(needle)
        if suffix == "_contains":
            return needle in have
        return have == needle

    return test


def _date_test(name: str, suffix: str, bound: str) -> Callable[[dict[str, Any]], bool]:
    def test(record: dict[str, Any]) -> bool:
        have = str(record[name])
        if suffix == "_start":
            return have >= bound
        if suffix == "_end":
            return have <= bound
        if suffix == "_before":
            return have < bound
        if suffix == "_after":
            return have > bound
        return have == bound

    return test


def _dedupe(events: list[Event]) -> list[Event]:
    """Keep the last event per (entity, id)."""
    latest: dict[tuple[str, str], Event] = {}
    for event in events:
        latest.pop((event.entity, event.entity_id), None)
        latest[(event.entity, event.entity_id)] = event
    return list(latest.values())
