"""Finding the deal an invoice belongs to."""

from __future__ import annotations

from typing import Any

import pytest

from connector.mapping.config import SyncConfig, parse_config
from connector.mapping.deals import DealChoice, choose_deal, find_deal_id_in_invoice
from tests.unit.mapping.samples import deal, zoho_invoice

WITH_FIELD = parse_config({"deals": {"match_custom_field": "cf_deal_id"}})


@pytest.mark.parametrize(
    ("reference", "deal_id"),
    [
        ("Deal 42", 42),
        ("deal#42", 42),
        ("DEAL: 42", 42),
        ("PO 7 / deal-1234", 1234),
        ("Deal 0", None),
        ("Deal", None),
        ("42", None),
        (" ", None),
        (None, None),
    ],
)
def test_reference_number_pattern(reference, deal_id):
    invoice = zoho_invoice("1", reference_number=reference)
    assert find_deal_id_in_invoice(invoice, SyncConfig()) == deal_id


def test_configured_pattern():
    config = parse_config({"deals": {"match_pattern": r"PD-(\d+)"}})
    assert find_deal_id_in_invoice(zoho_invoice("1", reference_number="x PD-9"), config) == 9
    assert find_deal_id_in_invoice(zoho_invoice("1", reference_number="Deal 9"), config) is None


@pytest.mark.parametrize(
    ("custom_fields", "deal_id"),
    [
        ([{"api_name": "cf_deal_id", "value": "77"}], 77),
        ([{"api_name": "cf_deal_id", "value": 77}], 77),
        ([{"label": "CF_DEAL_ID", "value": " 78 "}], 78),
        ([{"customfield_id": "cf_deal_id", "value": "79"}], 79),
        ([{"api_name": "cf_deal_id", "value": "see deal #80"}], 80),
        ([{"api_name": "cf_deal_id", "value": "n/a"}], None),
        ([{"api_name": "cf_deal_id", "value": 0}], None),
        ([{"api_name": "cf_deal_id", "value": True}], None),
        ([{"api_name": "cf_other", "value": "81"}], None),
        (["junk"], None),
        ([], None),
    ],
)
def test_custom_field(custom_fields, deal_id):
    invoice = zoho_invoice("1", custom_fields=custom_fields)
    assert find_deal_id_in_invoice(invoice, WITH_FIELD) == deal_id


def test_reference_number_wins_over_custom_field():
    invoice = zoho_invoice(
        "1", reference_number="Deal 5", custom_fields=[{"api_name": "cf_deal_id", "value": "6"}]
    )
    assert find_deal_id_in_invoice(invoice, WITH_FIELD) == 5


def test_custom_field_ignored_when_not_configured():
    invoice = zoho_invoice("1", custom_fields=[{"api_name": "cf_deal_id", "value": "6"}])
    assert find_deal_id_in_invoice(invoice, SyncConfig()) is None


def won(deal_id: int, when: str, **changes: Any) -> dict[str, Any]:
    return deal(deal_id, "won", won_time=when, **changes)


class TestRecentWonElseSingleOpen:
    config = SyncConfig()

    @pytest.mark.parametrize(
        ("deals", "expected"),
        [
            ([], DealChoice("none", reason="no deal with status open or won")),
            (
                [won(1, "2024-01-01T00:00:00Z"), won(2, "2024-02-01T00:00:00Z"), deal(3, "open")],
                DealChoice("chosen", deal_id=2, reason="the most recent won deal"),
            ),
            ([deal(3, "open")], DealChoice("chosen", deal_id=3, reason="the only open deal")),
            (
                [deal(3, "open"), deal(4, "open")],
                DealChoice("ambiguous", candidates=(3, 4), reason="2 open deals"),
            ),
            (
                [won(1, "2024-01-01T00:00:00Z"), won(2, "2024-01-01T00:00:00+00:00")],
                DealChoice("ambiguous", candidates=(1, 2), reason="2 won deals tie as most recent"),
            ),
            ([deal(5, "lost")], DealChoice("none", reason="no deal with status open or won")),
        ],
    )
    def test_rule(self, deals, expected):
        assert choose_deal(deals, self.config) == expected

    @pytest.mark.parametrize(
        "excluded",
        [
            {"is_deleted": True},
            {"is_archived": True},
            {"status": "deleted"},
            {"id": None},
        ],
    )
    def test_ineligible_deals_are_ignored(self, excluded):
        other = deal(2, "open")
        other.update(excluded)
        deals = [deal(1, "open"), other]
        assert choose_deal(deals, self.config) == DealChoice(
            "chosen", deal_id=1, reason="the only open deal"
        )

    def test_won_time_falls_back_to_close_then_update_time(self):
        by_close = deal(1, "won", close_time="2024-03-01T00:00:00Z")
        by_update = deal(2, "won", update_time="2024-04-01T00:00:00Z")
        by_won = deal(3, "won", won_time="2024-02-01T00:00:00Z")
        assert choose_deal([by_close, by_won], self.config).deal_id == 1
        assert choose_deal([by_update, by_won], self.config).deal_id == 2
        assert (
            choose_deal(
                [
                    by_won,
                    deal(
                        4,
                        "won",
                        won_time="2024-01-01T00:00:00Z",
                        update_time="2025-01-01T00:00:00Z",
                    ),
                ],
                self.config,
            ).deal_id
            == 3
        )

    def test_timezones_are_compared_as_instants(self):
        deals = [won(1, "2024-01-01T10:00:00+02:00"), won(2, "2024-01-01T09:00:00Z")]
        assert choose_deal(deals, self.config).deal_id == 2

    def test_lost_deals_when_allowed(self):
        config = parse_config({"deals": {"statuses": ["open", "won", "lost"]}})
        assert choose_deal([deal(5, "lost")], config).deal_id == 5
        assert choose_deal([deal(5, "lost"), deal(6, "lost")], config).kind == "ambiguous"
        assert choose_deal([deal(5, "lost"), deal(6, "open")], config).deal_id == 6

    def test_only_won_statuses(self):
        config = parse_config({"deals": {"statuses": ["won"]}})
        assert choose_deal([deal(3, "open")], config).kind == "none"


def test_most_recent_rule():
    config = parse_config({"deals": {"choose": "most_recent"}})
    deals = [
        deal(1, "open", update_time="2024-05-01T00:00:00Z"),
        won(2, "2024-04-01T00:00:00Z"),
        deal(3, "open", update_time="bad", add_time="2024-01-01T00:00:00Z"),
    ]
    assert choose_deal(deals, config) == DealChoice(
        "chosen", deal_id=1, reason="the most recent eligible deal"
    )
    tie = [
        deal(1, "open", update_time="2024-05-01T00:00:00Z"),
        deal(2, "open", update_time="2024-05-01T00:00:00Z"),
    ]
    assert choose_deal(tie, config).candidates == (1, 2)


def test_review_rule():
    config = parse_config({"deals": {"choose": "review"}})
    assert choose_deal([deal(1, "won", won_time="2024-01-01T00:00:00Z")], config).deal_id == 1
    choice = choose_deal([won(1, "2024-01-01T00:00:00Z"), deal(2, "open")], config)
    assert choice == DealChoice("ambiguous", candidates=(1, 2), reason="2 eligible deals")
