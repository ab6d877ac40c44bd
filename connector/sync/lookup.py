"""Finding Pipedrive records to match against, by cross-reference, email and name.

Two strategies with one interface:
- :class:`RemoteLookup` asks the search endpoints: right for a single webhook-driven record.
- :class:`IndexedLookup` lists every organization, person and deal once (10 tokens per 500
  records) and answers from memory: right for backfills and plans, where searching per record
  would cost 20 tokens each.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from connector.errors import NotFoundError
from connector.mapping.normalize import normalize_email, normalize_name

__all__ = ["IndexedLookup", "PipedriveLookup", "RemoteLookup"]

# A listing costs 10 tokens per 500 records and a read by id 1: below ten reads, read by id.
SINGLE_READS_BEFORE_LISTING = 9

Record = dict[str, Any]


class PipedriveLookup(Protocol):
    """What the engine asks while matching."""

    def organization(self, org_id: str) -> Record | None:
        """One organization, or ``None`` when gone."""

    def person(self, person_id: str) -> Record | None:
        """One person, or ``None`` when gone."""

    def deal(self, deal_id: str) -> Record | None:
        """One deal, or ``None`` when gone."""

    def organizations_by_reference(self, zoho_id: str) -> list[Record]:
        """Organizations whose cross-reference field holds ``zoho_id``."""

    def persons_by_reference(self, zoho_id: str) -> list[Record]:
        """Persons whose cross-reference field holds ``zoho_id``."""

    def organizations_by_name(self, name: str) -> list[Record]:
        """Organizations whose normalised name equals ``name``'s."""

    def persons_by_email(self, email: str) -> list[Record]:
        """Persons with ``email`` among their emails."""

    def persons_of_organization(self, org_id: str) -> list[Record]:
        """Every person of an organization."""

    def deals_of_organization(self, org_id: str) -> list[Record]:
        """Every (not deleted, not archived) deal of an organization."""

    def remember(self, entity: str, record: Record) -> None:
        """Record a write so later lookups in the same run see it."""


def _emails(person: Record) -> list[str]:
    values = person.get("emails") or person.get("email") or []
    result = []
    for item in values:
        value = item.get("value") if isinstance(item, dict) else item
        if value:
            result.append(normalize_email(str(value)))
    return result


def _reference(record: Record, key: str | None) -> str:
    if not key:
        return ""
    value = (record.get("custom_fields") or {}).get(key)
    if isinstance(value, dict):
        value = value.get("value")
    return str(value).strip() if value not in (None, "") else ""


class RemoteLookup:
    """Answers through the API, one search per question."""

    def __init__(
        self, client: Any, *, org_reference_key: str | None, person_reference_key: str | None
    ) -> None:
        self.client = client
        self.org_key = org_reference_key
        self.person_key = person_reference_key

    def _get(self, resource: Any, record_id: str) -> Record | None:
        try:
            record = resource.get(record_id)
        except NotFoundError:
            return None
        if record.get("is_deleted"):
            return None
        return dict(record)

    def organization(self, org_id: str) -> Record | None:
        return self._get(self.client.organizations, org_id)

    def person(self, person_id: str) -> Record | None:
        return self._get(self.client.persons, person_id)

    def deal(self, deal_id: str) -> Record | None:
        return self._get(self.client.deals, deal_id)

    def _by_reference(self, resource: Any, key: str | None, zoho_id: str) -> list[Record]:
        if not key or not zoho_id:
            return []
        found = resource.search(zoho_id, fields=["custom_fields"], exact_match=True)
        # Search results are a reduced shape: read each candidate to confirm the field exactly.
        confirmed = []
        for item in found:
            record = self._get(resource, str(item["id"]))
            if record is not None and _reference(record, key) == zoho_id:
                confirmed.append(record)
        return confirmed

    def organizations_by_reference(self, zoho_id: str) -> list[Record]:
        return self._by_reference(self.client.organizations, self.org_key, zoho_id)

    def persons_by_reference(self, zoho_id: str) -> list[Record]:
        return self._by_reference(self.client.persons, self.person_key, zoho_id)

    def organizations_by_name(self, name: str) -> list[Record]:
        wanted = normalize_name(name)
        if len(name.strip()) < 2 or not wanted:
            return []
        found = self.client.organizations.search(name.strip(), fields=["name"])
        matches = [i for i in found if normalize_name(str(i.get("name") or "")) == wanted]
        full = [self._get(self.client.organizations, str(i["id"])) for i in matches]
        return [o for o in full if o is not None]

    def persons_by_email(self, email: str) -> list[Record]:
        wanted = normalize_email(email)
        if not wanted:
            return []
        found = self.client.persons.search(wanted, fields=["email"], exact_match=True)
        # Search results are a reduced shape (flat email lists, nested organization): read the
        # few real matches in full, since they are compared field by field afterwards.
        full = [self._get(self.client.persons, str(i["id"])) for i in found if wanted in _emails(i)]
        return [p for p in full if p is not None]

    def persons_of_organization(self, org_id: str) -> list[Record]:
        return [dict(p) for p in self.client.persons.iter(org_id=int(org_id))]

    def deals_of_organization(self, org_id: str) -> list[Record]:
        return [dict(d) for d in self.client.deals.iter(org_id=int(org_id))]

    def remember(self, entity: str, record: Record) -> None:
        """Nothing to remember: every question goes to the API."""


class IndexedLookup:
    """Answers from one full listing of each entity, built on first use."""

    def __init__(
        self, client: Any, *, org_reference_key: str | None, person_reference_key: str | None
    ) -> None:
        self.client = client
        self.org_key = org_reference_key
        self.person_key = person_reference_key
        self._built: set[str] = set()
        self._orgs: dict[str, Record] = {}
        self._persons: dict[str, Record] = {}
        self._deals: dict[str, Record] = {}
        self._single_reads: dict[str, int] = {}

    def _ensure(self, entity: str) -> None:
        if entity in self._built:
            return
        source: Callable[[], Iterable[Record]]
        target: dict[str, Record]
        if entity == "organization":
            source, target = self.client.organizations.iter, self._orgs
        elif entity == "person":
            source, target = self.client.persons.iter, self._persons
        else:
            source, target = self.client.deals.iter, self._deals
        for record in source():
            if not record.get("is_deleted"):
                target[str(record["id"])] = dict(record)
        self._built.add(entity)

    def _one(self, entity: str, record_id: str, store: dict[str, Record]) -> Record | None:
        """One record by id: a 1-token read until enough reads make a listing cheaper."""
        if entity not in self._built:
            self._single_reads[entity] = self._single_reads.get(entity, 0) + 1
            if self._single_reads[entity] <= SINGLE_READS_BEFORE_LISTING:
                resource = {
                    "organization": self.client.organizations,
                    "person": self.client.persons,
                    "deal": self.client.deals,
                }[entity]
                try:
                    record = dict(resource.get(record_id))
                except NotFoundError:
                    return None
                return None if record.get("is_deleted") else record
        self._ensure(entity)
        return store.get(str(record_id))

    def organization(self, org_id: str) -> Record | None:
        return self._one("organization", org_id, self._orgs)

    def person(self, person_id: str) -> Record | None:
        return self._one("person", person_id, self._persons)

    def deal(self, deal_id: str) -> Record | None:
        return self._one("deal", deal_id, self._deals)

    def organizations_by_reference(self, zoho_id: str) -> list[Record]:
        self._ensure("organization")
        return [
            o for o in self._orgs.values() if zoho_id and _reference(o, self.org_key) == zoho_id
        ]

    def persons_by_reference(self, zoho_id: str) -> list[Record]:
        self._ensure("person")
        return [
            p
            for p in self._persons.values()
            if zoho_id and _reference(p, self.person_key) == zoho_id
        ]

    def organizations_by_name(self, name: str) -> list[Record]:
        self._ensure("organization")
        wanted = normalize_name(name)
        if not wanted:
            return []
        return [
            o for o in self._orgs.values() if normalize_name(str(o.get("name") or "")) == wanted
        ]

    def persons_by_email(self, email: str) -> list[Record]:
        self._ensure("person")
        wanted = normalize_email(email)
        if not wanted:
            return []
        return [p for p in self._persons.values() if wanted in _emails(p)]

    def persons_of_organization(self, org_id: str) -> list[Record]:
        self._ensure("person")
        return [p for p in self._persons.values() if str(p.get("org_id")) == str(org_id)]

    def deals_of_organization(self, org_id: str) -> list[Record]:
        self._ensure("deal")
        return [d for d in self._deals.values() if str(d.get("org_id")) == str(org_id)]

    def remember(self, entity: str, record: Record) -> None:
        """Keep the index in step with writes made during the run."""
        store = {"organization": self._orgs, "person": self._persons, "deal": self._deals}[entity]
        if entity in self._built and record.get("id") is not None:
            store[str(record["id"])] = dict(record)

    def stats(self) -> dict[str, int]:
        """How many records of each entity are indexed."""
        return {
            "organizations": len(self._orgs),
            "persons": len(self._persons),
            "deals": len(self._deals),
        }


def group_by(records: Iterable[Record], key: str) -> dict[str, list[Record]]:
    """Group records by the string value of ``key``."""
    groups: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        groups[str(record.get(key))].append(record)
    return groups
