"""The indexed lookup keeps keys, not records: its memory is bounded whatever the company's size,
and it still answers as a full listing would (stale keys cost a read, never a wrong match)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from connector.errors import NotFoundError
from connector.sync import lookup as lookup_module
from connector.sync.lookup import IndexedLookup, KeyIndex, PipedriveIndex, process_index

REF = "ref_key"


class FakeEntity:
    """One v2 entity: list (sorted, ``updated_since``, ``ids``) and read by id, calls counted."""

    def __init__(self) -> None:
        self.records: dict[int, dict[str, Any]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.clock = 0

    def put(self, record_id: int, **fields: Any) -> None:
        self.clock += 1
        stamp = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=self.clock)
        self.records[record_id] = {
            "id": record_id,
            "update_time": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            **fields,
        }

    def iter(self, **filters: Any) -> Iterator[dict[str, Any]]:
        self.calls.append(("list", filters))
        since = filters.get("updated_since", "")
        ids = {int(i) for i in filters.get("ids") or []}
        for record in sorted(self.records.values(), key=lambda r: (r["update_time"], r["id"])):
            if record["update_time"] >= since and (not ids or record["id"] in ids):
                yield dict(record)

    def iter_updated_since(self, since: dt.datetime) -> Iterator[dict[str, Any]]:
        return self.iter(updated_since=since.strftime("%Y-%m-%dT%H:%M:%SZ"))

    def get(self, record_id: int | str) -> dict[str, Any]:
        self.calls.append(("get", {"id": record_id}))
        if int(record_id) not in self.records:
            raise NotFoundError("gone", system="pipedrive")
        return dict(self.records[int(record_id)])

    def listings(self) -> list[dict[str, Any]]:
        return [filters for kind, filters in self.calls if kind == "list"]

    def reads(self) -> int:
        return sum(1 for kind, _ in self.calls if kind == "get")


class FakeClient:
    def __init__(self) -> None:
        self.organizations = FakeEntity()
        self.persons = FakeEntity()
        self.deals = FakeEntity()


def _org(client: FakeClient, record_id: int, name: str, ref: str = "") -> None:
    client.organizations.put(record_id, name=name, custom_fields={REF: ref} if ref else {})


def _lookup(client: FakeClient, **options: Any) -> IndexedLookup:
    return IndexedLookup(client, org_reference_key=REF, person_reference_key=None, **options)


def test_key_index_answers_across_runs_and_drops_duplicates() -> None:
    index = KeyIndex()
    total = lookup_module._MERGE_AT * 9 + 17
    for n in range(total):
        index.add(f"name {n % 1000}", n)
        index.add(f"name {n % 1000}", n)  # the same pair again: kept once (but across a flush)
    index.add("", 1)
    assert total <= len(index) <= total + total // lookup_module._MERGE_AT
    # Runs halve in length: a handful, however many keys.
    assert len(index._runs) <= 4
    assert index.get("name 7") == {n for n in range(total) if n % 1000 == 7}
    assert index.get("nobody") == set()
    assert index.get("") == set()


def test_a_big_company_is_answered_with_a_bounded_number_of_records_held() -> None:
    client = FakeClient()
    for n in range(1, 51):
        _org(client, n, f"Company {n} GmbH", ref=f"Z{n}")
    lookup = _lookup(client, records_kept=5)

    (found,) = lookup.organizations_by_name("company 3 gmbh")
    assert found["id"] == 3
    assert [o["id"] for o in lookup.organizations_by_reference("Z4")] == [4]
    assert lookup.organization("49") is not None
    assert lookup.organization("999") is None
    assert len(lookup.held("organization")) <= 5
    assert len(client.organizations.listings()) == 1


def test_stale_keys_cost_a_read_but_never_match() -> None:
    client = FakeClient()
    for n in range(1, 21):
        _org(client, n, f"Company {n}")
    lookup = _lookup(client, records_kept=2)
    assert lookup.organizations_by_name("Company 5")
    # Renamed and deleted behind the index's back.
    client.organizations.records[5]["name"] = "Renamed"
    del client.organizations.records[6]
    lookup._records["organization"].clear()
    assert lookup.organizations_by_name("Company 5") == []
    assert lookup.organizations_by_name("Company 6") == []
    assert lookup.organization("6") is None


def test_lookups_sharing_a_process_index_list_only_changes() -> None:
    client = FakeClient()
    for n in range(1, 31):
        _org(client, n, f"Company {n}")
    shared = PipedriveIndex()
    first = _lookup(client, shared=shared, records_kept=10)
    assert first.organizations_by_name("Company 1")
    assert first.listings == {"organization": "full"}
    # Another process creates an organization; this one writes one itself.
    _org(client, 31, "Newcomer AG")
    first.remember("organization", {"id": 32, "name": "Written Here", "custom_fields": {}})

    second = _lookup(client, shared=shared, records_kept=10)
    (newcomer,) = second.organizations_by_name("Newcomer AG")
    assert newcomer["id"] == 31
    assert second.listings == {"organization": "changes"}
    assert client.organizations.listings()[-1].get("updated_since")
    # What the first lookup held is not carried over: the second holds only what it listed.
    assert set(second.held("organization")) <= {30, 31}
    # Keys written by the first lookup are known to the second (read when asked for).
    client.organizations.put(32, name="Written Here", custom_fields={})
    assert [o["id"] for o in second.organizations_by_name("Written Here")] == [32]


def test_a_small_company_is_listed_again_instead_of_read_record_by_record() -> None:
    client = FakeClient()
    for n in range(1, 6):
        _org(client, n, f"Company {n}")
    shared = PipedriveIndex()
    _lookup(client, shared=shared).organizations_by_name("Company 1")
    second = _lookup(client, shared=shared)
    assert second.organizations_by_name("Company 2")
    assert second.listings == {"organization": "full"}
    # Everything is held: an id not among them is gone, no read needed.
    assert second.organization("4") is not None
    assert second.organization("999") is None
    assert client.organizations.reads() == 0


def test_many_candidates_are_read_through_an_ids_listing() -> None:
    client = FakeClient()
    for n in range(1, 41):
        _org(client, n, "Same Name")
    lookup = _lookup(client, records_kept=3)
    assert len(lookup.organizations_by_name("Same Name")) == 40
    assert client.organizations.reads() == 0
    by_ids = [f for f in client.organizations.listings() if f.get("ids")]
    assert len(by_ids) == 1
    assert len(lookup.held("organization")) == 3


def test_process_index_keeps_one_company_and_resets_on_other_reference_fields() -> None:
    cache: dict[str, Any] = {"other": 1}
    first = process_index(cache, "1:acme")
    assert process_index(cache, "1:acme") is first
    second = process_index(cache, "2:globex")
    assert second is not first
    assert "pipedrive-index:1:acme" not in cache
    assert cache["other"] == 1

    client = FakeClient()
    _org(client, 1, "Company 1", ref="Z1")
    _lookup(client, shared=second).organizations_by_reference("Z1")
    assert second.count("organization") == 1
    IndexedLookup(client, org_reference_key="other_key", person_reference_key=None, shared=second)
    assert second.count("organization") == 0


@pytest.mark.parametrize("entity", ["person", "deal"])
def test_persons_and_deals_of_an_organization(entity: str) -> None:
    client = FakeClient()
    resource = client.persons if entity == "person" else client.deals
    for n in range(1, 13):
        resource.put(n, name=f"R{n}", title=f"R{n}", org_id=1 + n % 3, emails=[])
    resource.put(13, name="archived", title="archived", org_id=1, is_archived=True)
    lookup = _lookup(client, records_kept=2)
    found = (
        lookup.persons_of_organization("1")
        if entity == "person"
        else lookup.deals_of_organization("1")
    )
    expected = [n for n in range(1, 13) if 1 + n % 3 == 1]
    if entity == "person":
        expected.append(13)
    assert [r["id"] for r in found] == expected
