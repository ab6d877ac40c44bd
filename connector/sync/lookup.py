"""Finding Pipedrive records to match against, by cross-reference, email and name.

Two strategies with one interface:
- :class:`RemoteLookup` asks the search endpoints: right for a single webhook-driven record.
- :class:`IndexedLookup` lists every organization, person and deal once (10 tokens per 500
  records) and answers from an index: right for backfills and plans, where searching per record
  would cost 20 tokens each.

The index keeps keys, not records, so a worker's memory stays small whatever the size of the
company: each matching key (cross-reference, normalised name, email, organization of a person or
deal) costs about 16 bytes (:class:`KeyIndex`), and at most :data:`RECORDS_KEPT` full records
per entity are held (the most recently listed, read or written). A candidate found by key is
taken from those records or read again (1 token, or 10 tokens per 100 through an ``ids``
listing) and checked against the live record, so stale keys (a renamed or deleted record) cost a
read, never a wrong match.

Worker processes run backfill chunk after chunk. The index of the company then lives in the
process (:func:`process_index`) and is shared by the chunks: the first lists everything, the
next ones list only what changed since (``updated_since``, 10 tokens per 500 changed records) as
long as the company has more than :data:`RECORDS_KEPT` records of the entity; a small company is
simply listed again (at most 100 tokens per entity).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from array import array
from bisect import bisect_left
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Iterator, MutableMapping
from heapq import merge
from typing import Any, Protocol

from connector.errors import NotFoundError
from connector.mapping.normalize import normalize_email, normalize_name

__all__ = [
    "IndexedLookup",
    "KeyIndex",
    "PipedriveIndex",
    "PipedriveLookup",
    "RemoteLookup",
    "process_index",
]

# A listing costs 10 tokens per 500 records and a read by id 1: below ten reads, read by id.
SINGLE_READS_BEFORE_LISTING = 9
# Full records held per entity by one lookup. 5,000 organizations take about 6 MB; a company up
# to this size is answered without a single read by id, as when every record was held.
RECORDS_KEPT = 5000
# The v2 list filter ``ids`` takes at most 100 ids.
IDS_PER_LISTING = 100
# A process's index is rebuilt from a full listing after this long, shedding the keys of deleted
# and renamed records (they cost a read each when hit until then).
INDEX_MAX_AGE = 24 * 3600.0
# Keys wait in a dict until this many, then become a sorted run.
_MERGE_AT = 1024
ENTITIES = ("organization", "person", "deal")

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


class KeyIndex:
    """Text keys to record ids in about 16 bytes per entry.

    A key is kept as its hash (per process, which is all this index lives for) beside the id, in
    sorted runs of 64-bit integer arrays, each at least twice as long as the next (so an entry
    is merged about log2(n / 1,024) times and big arrays are rarely rebuilt); additions wait in
    a small dict until there are 1,024 of them. Python dicts of strings would cost ten times
    more. Hash collisions and stale entries only add candidates, which the caller checks against
    the record itself.
    """

    def __init__(self) -> None:
        self._runs: list[tuple[array[int], array[int]]] = []
        self._pending: dict[int, list[int]] = {}
        self._pending_count = 0

    def __len__(self) -> int:
        """Entries held (a pair added twice counts twice until merged)."""
        return sum(len(hashes) for hashes, _ in self._runs) + self._pending_count

    def add(self, key: str, record_id: int) -> None:
        """Remember that ``record_id`` has ``key`` (empty keys are ignored)."""
        if not key:
            return
        bucket = self._pending.setdefault(hash(key), [])
        if record_id not in bucket:
            bucket.append(record_id)
            self._pending_count += 1
            if self._pending_count >= _MERGE_AT:
                self._flush()

    def get(self, key: str) -> set[int]:
        """Ids that had ``key`` (a superset: check each against its record)."""
        if not key:
            return set()
        wanted = hash(key)
        found = set(self._pending.get(wanted, ()))
        for hashes, ids in self._runs:
            position = bisect_left(hashes, wanted)
            while position < len(hashes) and hashes[position] == wanted:
                found.add(ids[position])
                position += 1
        return found

    def _flush(self) -> None:
        pending = sorted((h, i) for h, ids in self._pending.items() for i in ids)
        self._pending = {}
        self._pending_count = 0
        self._runs.append(_run(pending))
        while len(self._runs) > 1 and len(self._runs[-2][0]) <= 2 * len(self._runs[-1][0]):
            newer, older = self._runs.pop(), self._runs.pop()
            self._runs.append(_run(merge(zip(*older), zip(*newer))))


def _run(pairs: Iterable[tuple[int, int]]) -> tuple[array[int], array[int]]:
    """Sorted ``(hash, id)`` pairs as two arrays, repeated pairs dropped."""
    hashes, ids = array("q"), array("q")
    last: tuple[int, int] | None = None
    for pair in pairs:
        if pair != last:
            hashes.append(pair[0])
            ids.append(pair[1])
            last = pair
    return hashes, ids


class _EntityKeys:
    """The keys of one entity, and how current they are."""

    def __init__(self) -> None:
        self.by: dict[str, KeyIndex] = defaultdict(KeyIndex)
        # Records indexed since the last full listing (about: a record listed again counts again).
        self.known = 0
        # The newest ``update_time`` listed: the next listing asks for changes since then.
        self.watermark = ""
        self.built_at: float | None = None


class PipedriveIndex:
    """What one process knows of a company's records between lookups: keys only.

    Shared by the lookups of the engine sessions that a worker process runs one after another
    (and guarded by a lock in case a pool runs them in threads).
    """

    def __init__(self, *, max_age: float = INDEX_MAX_AGE) -> None:
        self.lock = threading.RLock()
        self.max_age = max_age
        self.reference_keys: tuple[str | None, str | None] = (None, None)
        self.entities: dict[str, _EntityKeys] = {e: _EntityKeys() for e in ENTITIES}

    def clear(self, entity: str | None = None) -> None:
        """Forget one entity, or everything."""
        for name in [entity] if entity else list(ENTITIES):
            self.entities[name] = _EntityKeys()

    def current(self, entity: str, now: float) -> bool:
        """Whether the keys of ``entity`` came from a full listing younger than ``max_age``."""
        built = self.entities[entity].built_at
        return built is not None and now - built < self.max_age

    def count(self, entity: str) -> int:
        """How many records of ``entity`` are known (about: stale ones included)."""
        return self.entities[entity].known


def process_index(cache: MutableMapping[str, Any], scope: str) -> PipedriveIndex:
    """The index this process keeps for one Pipedrive company (``scope``) in ``cache``.

    One company at a time: asking for another drops the previous one.
    """
    key = f"pipedrive-index:{scope}"
    index = cache.get(key)
    if not isinstance(index, PipedriveIndex):
        for other in [k for k in cache if k.startswith("pipedrive-index:")]:
            del cache[other]
        index = cache[key] = PipedriveIndex()
    return index


def _update_time(record: Record) -> str:
    return str(record.get("update_time") or "")


def _since(watermark: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(watermark.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


class IndexedLookup:
    """Answers from one listing of each entity, made on first use.

    Args:
        client: the Pipedrive client.
        org_reference_key: the organizations' cross-reference custom field key.
        person_reference_key: the persons' cross-reference custom field key.
        shared: a process's index to share with other lookups (default: a private one).
        records_kept: full records held per entity (default :data:`RECORDS_KEPT`).
    """

    def __init__(
        self,
        client: Any,
        *,
        org_reference_key: str | None,
        person_reference_key: str | None,
        shared: PipedriveIndex | None = None,
        records_kept: int | None = None,
    ) -> None:
        self.client = client
        self.org_key = org_reference_key
        self.person_key = person_reference_key
        self.records_kept = RECORDS_KEPT if records_kept is None else records_kept
        self.index = PipedriveIndex()
        self.index.reference_keys = (org_reference_key, person_reference_key)
        if shared is not None:
            self.use_shared(shared)
        # Entities listed (in full or their changes) by this lookup, and how.
        self.listings: dict[str, str] = {}
        self._records: dict[str, OrderedDict[int, Record]] = {e: OrderedDict() for e in ENTITIES}
        # Entities whose every live record this lookup holds (listed in full, none dropped):
        # an id not held is then gone, without a read.
        self._complete: set[str] = set()
        self._single_reads: dict[str, int] = {}

    def use_shared(self, index: PipedriveIndex) -> None:
        """Answer from ``index``, shared with other lookups of this process (before any use)."""
        with index.lock:
            keys = (self.org_key, self.person_key)
            if index.reference_keys != keys:
                # Keys built for other cross-reference fields would miss matches.
                index.clear()
                index.reference_keys = keys
        self.index = index

    def _resource(self, entity: str) -> Any:
        return {
            "organization": self.client.organizations,
            "person": self.client.persons,
            "deal": self.client.deals,
        }[entity]

    def _ensure(self, entity: str) -> None:
        if entity in self.listings:
            return
        with self.index.lock:
            keys = self.index.entities[entity]
            since = _since(keys.watermark) if keys.watermark else None
            changes_only = (
                since is not None
                and self.index.current(entity, time.monotonic())
                and self.index.count(entity) > self.records_kept
            )
            records: Iterator[Record]
            if changes_only:
                assert since is not None
                records = self._resource(entity).iter_updated_since(since)
            else:
                # Oldest change first: a record changed while this listing runs moves past the
                # cursor and is listed later, or by the next listing from the watermark.
                self.index.clear(entity)
                keys = self.index.entities[entity]
                records = self._resource(entity).iter(sort_by="update_time", sort_direction="asc")
            for record in records:
                keys.watermark = max(keys.watermark, _update_time(record))
                if not record.get("is_deleted"):
                    self._index(entity, record)
                    self._keep(entity, dict(record))
            if not changes_only:
                keys.built_at = time.monotonic()
                if len(self._records[entity]) == keys.known:
                    self._complete.add(entity)
        self.listings[entity] = "changes" if changes_only else "full"

    def _index(self, entity: str, record: Record) -> None:
        """Add the keys of ``record`` (the caller holds the lock)."""
        keys = self.index.entities[entity]
        record_id = int(record["id"])
        keys.known += 1
        if entity == "organization":
            keys.by["reference"].add(_reference(record, self.org_key), record_id)
            keys.by["name"].add(normalize_name(str(record.get("name") or "")), record_id)
        elif entity == "person":
            keys.by["reference"].add(_reference(record, self.person_key), record_id)
            for email in _emails(record):
                keys.by["email"].add(email, record_id)
        if entity in ("person", "deal") and record.get("org_id"):
            keys.by["org"].add(str(record.get("org_id")), record_id)

    def _keep(self, entity: str, record: Record) -> None:
        """Hold a full record, dropping the oldest held beyond ``records_kept``."""
        store = self._records[entity]
        record_id = int(record["id"])
        store[record_id] = record
        store.move_to_end(record_id)
        while len(store) > self.records_kept:
            store.popitem(last=False)
            self._complete.discard(entity)

    def _read(self, entity: str, record_id: int | str) -> Record | None:
        try:
            record = dict(self._resource(entity).get(record_id))
        except NotFoundError:
            return None
        return None if record.get("is_deleted") else record

    def _fetch(self, entity: str, ids: Iterable[int]) -> list[Record]:
        """The live records of ``ids``: held ones, the others read (gone ones left out)."""
        store = self._records[entity]
        found: list[Record] = []
        missing: list[int] = []
        for record_id in sorted(ids):
            record = store.get(record_id)
            if record is None:
                missing.append(record_id)
            else:
                found.append(record)
        fetched: list[Record] = []
        if len(missing) <= SINGLE_READS_BEFORE_LISTING:
            for record_id in missing:
                record = self._read(entity, record_id)
                if record is not None:
                    fetched.append(record)
        else:
            for start in range(0, len(missing), IDS_PER_LISTING):
                batch = missing[start : start + IDS_PER_LISTING]
                listed = self._resource(entity).iter(ids=batch)
                fetched.extend(dict(r) for r in listed if not r.get("is_deleted"))
        for record in fetched:
            self._keep(entity, record)
        return sorted(found + fetched, key=lambda r: int(r["id"]))

    def _candidates(self, entity: str, kind: str, key: str) -> list[Record]:
        with self.index.lock:
            ids = self.index.entities[entity].by[kind].get(key)
        return self._fetch(entity, ids)

    def _one(self, entity: str, record_id: str) -> Record | None:
        """One record by id: a 1-token read until enough reads make a listing cheaper."""
        if entity not in self.listings:
            self._single_reads[entity] = self._single_reads.get(entity, 0) + 1
            if self._single_reads[entity] <= SINGLE_READS_BEFORE_LISTING:
                return self._read(entity, record_id)
        self._ensure(entity)
        try:
            wanted = int(record_id)
        except (TypeError, ValueError):
            return None
        held = self._records[entity].get(wanted)
        if held is not None:
            return held
        if entity in self._complete:
            return None
        found = self._fetch(entity, [wanted])
        return found[0] if found else None

    def organization(self, org_id: str) -> Record | None:
        return self._one("organization", org_id)

    def person(self, person_id: str) -> Record | None:
        return self._one("person", person_id)

    def deal(self, deal_id: str) -> Record | None:
        return self._one("deal", deal_id)

    def organizations_by_reference(self, zoho_id: str) -> list[Record]:
        self._ensure("organization")
        if not zoho_id or not self.org_key:
            return []
        found = self._candidates("organization", "reference", zoho_id)
        return [o for o in found if _reference(o, self.org_key) == zoho_id]

    def persons_by_reference(self, zoho_id: str) -> list[Record]:
        self._ensure("person")
        if not zoho_id or not self.person_key:
            return []
        found = self._candidates("person", "reference", zoho_id)
        return [p for p in found if _reference(p, self.person_key) == zoho_id]

    def organizations_by_name(self, name: str) -> list[Record]:
        self._ensure("organization")
        wanted = normalize_name(name)
        if not wanted:
            return []
        found = self._candidates("organization", "name", wanted)
        return [o for o in found if normalize_name(str(o.get("name") or "")) == wanted]

    def persons_by_email(self, email: str) -> list[Record]:
        self._ensure("person")
        wanted = normalize_email(email)
        if not wanted:
            return []
        return [p for p in self._candidates("person", "email", wanted) if wanted in _emails(p)]

    def persons_of_organization(self, org_id: str) -> list[Record]:
        self._ensure("person")
        found = self._candidates("person", "org", str(org_id))
        return [p for p in found if str(p.get("org_id")) == str(org_id)]

    def deals_of_organization(self, org_id: str) -> list[Record]:
        self._ensure("deal")
        found = self._candidates("deal", "org", str(org_id))
        return [
            d
            for d in found
            if str(d.get("org_id")) == str(org_id)
            and not d.get("is_archived")
            and d.get("status") != "deleted"
        ]

    def remember(self, entity: str, record: Record) -> None:
        """Keep the index in step with writes made during the run."""
        if not str(record.get("id") or "").isdigit():
            return
        with self.index.lock:
            if self.index.entities[entity].built_at is not None:
                self._index(entity, record)
        if entity in self.listings:
            self._keep(entity, dict(record))

    def stats(self) -> dict[str, int]:
        """How many records of each entity are known, and how many are held in full."""
        return {
            "organizations": self.index.count("organization"),
            "persons": self.index.count("person"),
            "deals": self.index.count("deal"),
            "records_held": sum(len(store) for store in self._records.values()),
        }

    def held(self, entity: str) -> list[int]:
        """Ids of the full records of ``entity`` held now."""
        return list(self._records[entity])


def group_by(records: Iterable[Record], key: str) -> dict[str, list[Record]]:
    """Group records by the string value of ``key``."""
    groups: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        groups[str(record.get(key))].append(record)
    return groups
