"""Invoice snapshots, per-deal sums, currency conversion, payment status and the deal payload."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from connector.errors import ConfigError, SyncError
from connector.mapping.config import SyncConfig, parse_config
from connector.mapping.invoices import (
    DealInvoiceSummary,
    InvoiceSnapshot,
    aggregate_deal_invoices,
    deal_fields_payload,
    invoice_snapshot,
    payment_status,
)
from tests.unit.mapping.samples import DEAL_KEYS, zoho_invoice

D = Decimal


def snap(invoice_id: str, **changes: Any) -> InvoiceSnapshot:
    return invoice_snapshot(zoho_invoice(invoice_id, **changes))


class TestSnapshot:
    def test_oas_example_shape(self):
        s = invoice_snapshot(
            {
                "invoice_id": "982000000567114",
                "status": "Draft",
                "invoice_number": "INV-00003",
                "reference_number": " Deal 12 ",
                "date": "2013-11-17",
                "due_date": "2013-12-03",
                "currency_code": "usd",
                "total": 10000.0,
                "balance": 40.6,
                "last_modified_time": "2013-11-18T02:02:51-0800",
                "exchange_rate": 1,
                "last_payment_date": "2013-11-20",
                "payment_expected_date": "",
            }
        )
        assert s.invoice_id == "982000000567114"
        assert s.number == "INV-00003"
        assert s.status == "draft"
        assert s.date == dt.date(2013, 11, 17)
        assert s.due_date == dt.date(2013, 12, 3)
        assert s.total == D("10000.0")
        assert s.balance == D("40.6")
        assert s.currency_code == "USD"
        assert s.exchange_rate == D(1)
        assert s.last_modified_time == dt.datetime(
            2013, 11, 18, 2, 2, 51, tzinfo=dt.timezone(dt.timedelta(hours=-8))
        )
        assert s.last_payment_date == dt.date(2013, 11, 20)
        assert s.payment_expected_date is None
        assert s.reference_number == "Deal 12"

    @pytest.mark.parametrize(
        ("raw", "amount"),
        [
            (40.6, D("40.6")),
            ("40.60", D("40.60")),
            ("1,234.50", D("1234.50")),
            (7, D(7)),
            (None, D(0)),
            ("", D(0)),
        ],
    )
    def test_amounts_become_decimals(self, raw, amount):
        assert snap("1", total=raw).total == amount

    def test_float_amounts_do_not_pick_up_binary_noise(self):
        assert snap("1", total=0.1).total + snap("2", total=0.2).total == D("0.3")

    @pytest.mark.parametrize("rate", [0, None, "", -1])
    def test_unusable_exchange_rate_means_one(self, rate):
        assert snap("1", exchange_rate=rate).exchange_rate == D(1)

    @pytest.mark.parametrize(
        "changes",
        [{"total": "ten"}, {"balance": True}, {"total": "NaN"}, {"date": "17/11/2013"}],
    )
    def test_unreadable_values_are_sync_errors(self, changes):
        with pytest.raises(SyncError, match="invoice 1"):
            snap("1", **changes)

    def test_missing_optional_values(self):
        s = invoice_snapshot({"invoice_id": "9"})
        assert (s.date, s.due_date, s.last_modified_time) == (None, None, None)
        assert s.total == D(0)
        assert s.exchange_rate == D(1)
        assert (
            invoice_snapshot({"invoice_id": "9", "last_modified_time": "soon"}).last_modified_time
            is None
        )


class TestAggregate:
    def test_sums_latest_and_oldest_unpaid(self):
        invoices = [
            snap(
                "1",
                date="2024-01-10",
                due_date="2024-02-10",
                total=100,
                balance=0,
                status="paid",
                last_payment_date="2024-02-01",
            ),
            snap(
                "2",
                date="2024-03-01",
                due_date="2024-03-31",
                total="250.50",
                balance="250.50",
                invoice_number="INV-2",
            ),
            snap(
                "3",
                date="2024-02-01",
                due_date="2024-03-01",
                total=80,
                balance=30,
                status="partially_paid",
                last_payment_date="2024-02-15",
                payment_expected_date="2024-03-20",
            ),
        ]
        summary = aggregate_deal_invoices(invoices, "EUR", "EUR")
        assert summary.invoice_ids == ("1", "2", "3")
        assert summary.invoice_count == 3
        assert summary.total == D("430.50")
        assert summary.balance == D("280.50")
        assert summary.currency == "EUR"
        assert (summary.latest_date, summary.latest_number, summary.latest_status) == (
            dt.date(2024, 3, 1),
            "INV-2",
            "sent",
        )
        assert summary.due_date == dt.date(2024, 3, 1)
        assert summary.expected_payment_date == dt.date(2024, 3, 20)
        assert summary.last_payment_date == dt.date(2024, 2, 15)
        assert summary.currency_mismatch is False

    def test_void_invoices_drop_out(self):
        invoices = [
            snap("1", total=100, balance=100),
            snap("2", total=999, balance=999, status="void", date="2030-01-01"),
        ]
        summary = aggregate_deal_invoices(invoices, "EUR", "EUR")
        assert summary.invoice_ids == ("1",)
        assert summary.total == D(100)
        assert summary.latest_date == dt.date(2024, 3, 1)

    def test_drafts_are_excluded_unless_asked(self):
        invoices = [snap("1"), snap("2", status="draft", total=50, balance=50)]
        assert aggregate_deal_invoices(invoices, "EUR", None).total == D(100)
        assert aggregate_deal_invoices(invoices, "EUR", None, include_drafts=True).total == D(150)

    def test_no_invoices(self):
        summary = aggregate_deal_invoices([], "EUR", "USD")
        assert summary.invoice_ids == ()
        assert summary.total == summary.balance == D(0)
        assert summary.currency == "EUR"
        assert summary.latest_date is None
        assert summary.due_date is None

    def test_foreign_invoices_convert_to_base_currency_deal(self):
        invoices = [
            snap("1", currency_code="EUR", total=100, balance=0),
            snap("2", currency_code="USD", total="100.00", balance="50.00", exchange_rate="0.9234"),
        ]
        summary = aggregate_deal_invoices(invoices, "eur", "EUR")
        assert summary.total == D("192.34")
        assert summary.balance == D("46.17")
        assert summary.currency == "EUR"
        assert summary.currency_mismatch is False

    def test_conversion_rounds_half_up_to_cents(self):
        summary = aggregate_deal_invoices(
            [snap("1", currency_code="USD", total="0.05", balance=0, exchange_rate="0.5")],
            "EUR",
            "EUR",
        )
        assert summary.total == D("0.03")

    def test_impossible_conversion_is_reported(self):
        invoices = [snap("1", currency_code="EUR"), snap("2", currency_code="GBP", total=70)]
        summary = aggregate_deal_invoices(invoices, "USD", "EUR")
        assert summary.currency_mismatch is True
        assert summary.mismatched_invoice_ids == ("1", "2")
        assert summary.total == D(0)

    def test_partly_convertible(self):
        invoices = [snap("1", currency_code="EUR"), snap("2", currency_code="GBP", total=70)]
        summary = aggregate_deal_invoices(invoices, "EUR", None)
        assert summary.currency_mismatch is True
        assert summary.mismatched_invoice_ids == ("2",)
        assert summary.invoice_ids == ("1",)
        assert summary.total == D(100)

    @pytest.mark.parametrize(
        ("currencies", "base", "currency", "mismatch"),
        [
            (["GBP", "GBP"], None, "GBP", False),
            (["GBP", "USD"], "EUR", "EUR", False),
            (["GBP", "USD"], None, None, True),
        ],
    )
    def test_deal_without_currency(self, currencies, base, currency, mismatch):
        invoices = [snap(str(i), currency_code=c) for i, c in enumerate(currencies)]
        summary = aggregate_deal_invoices(invoices, None, base)
        assert summary.currency == currency
        assert summary.currency_mismatch is mismatch

    def test_invoice_without_currency_counts_as_the_deals(self):
        summary = aggregate_deal_invoices([snap("1", currency_code="")], "EUR", None)
        assert summary.total == D(100)
        assert not summary.currency_mismatch


def summary_of(**kwargs: Any) -> DealInvoiceSummary:
    defaults: dict[str, Any] = {
        "invoice_ids": ("1",),
        "total": D(100),
        "balance": D(100),
        "currency": "EUR",
    }
    return DealInvoiceSummary(**(defaults | kwargs))


@pytest.mark.parametrize(
    ("kwargs", "as_of", "status"),
    [
        ({"invoice_ids": ()}, dt.date(2024, 1, 1), None),
        ({"balance": D(0)}, dt.date(2024, 1, 1), "paid"),
        ({"balance": D(-5)}, dt.date(2024, 1, 1), "paid"),
        ({"due_date": dt.date(2024, 1, 1)}, dt.date(2024, 1, 2), "overdue"),
        ({"due_date": dt.date(2024, 1, 1)}, dt.date(2024, 1, 1), "unpaid"),
        ({"due_date": dt.date(2024, 1, 1), "balance": D(40)}, dt.date(2024, 1, 2), "overdue"),
        (
            {"due_date": dt.date(2024, 1, 9), "balance": D(40)},
            dt.date(2024, 1, 2),
            "partially_paid",
        ),
        ({}, dt.date(2024, 1, 2), "unpaid"),
    ],
)
def test_payment_status(kwargs, as_of, status):
    assert payment_status(summary_of(**kwargs), as_of) == status


class TestDealPayload:
    def test_every_field(self):
        summary = summary_of(
            total=D("430.50"),
            balance=D("280"),
            latest_date=dt.date(2024, 3, 1),
            latest_number="INV-2",
            latest_status="sent",
            due_date=dt.date(2024, 3, 1),
            expected_payment_date=dt.date(2024, 3, 20),
            last_payment_date=dt.date(2024, 2, 15),
        )
        payload = deal_fields_payload(summary, SyncConfig(), DEAL_KEYS, as_of=dt.date(2024, 3, 5))
        assert payload == {
            "custom_fields": {
                DEAL_KEYS["Zoho Invoice Total"]: {"value": 430.5, "currency": "EUR"},
                DEAL_KEYS["Zoho Invoice Balance"]: {"value": 280, "currency": "EUR"},
                DEAL_KEYS["Zoho Invoice Date"]: "2024-03-01",
                DEAL_KEYS["Zoho Invoice Due Date"]: "2024-03-01",
                DEAL_KEYS["Zoho Invoice Status"]: "sent",
                DEAL_KEYS["Zoho Invoice Number"]: "INV-2",
                DEAL_KEYS["Zoho Last Payment Date"]: "2024-02-15",
                DEAL_KEYS["Zoho Expected Payment Date"]: "2024-03-20",
                DEAL_KEYS["Zoho Payment Status"]: "overdue",
            }
        }
        assert isinstance(payload["custom_fields"][DEAL_KEYS["Zoho Invoice Balance"]]["value"], int)

    def test_payment_status_only_with_as_of(self):
        payload = deal_fields_payload(summary_of(), SyncConfig(), DEAL_KEYS)
        assert DEAL_KEYS["Zoho Payment Status"] not in payload["custom_fields"]

    def test_empty_values_clear_fields(self):
        summary = aggregate_deal_invoices([], "EUR", None)
        fields = deal_fields_payload(summary, SyncConfig(), DEAL_KEYS)["custom_fields"]
        assert fields[DEAL_KEYS["Zoho Invoice Total"]] == {"value": 0, "currency": "EUR"}
        assert fields[DEAL_KEYS["Zoho Invoice Date"]] is None
        assert fields[DEAL_KEYS["Zoho Invoice Status"]] is None

    def test_currency_mismatch_leaves_out_money(self):
        summary = summary_of(currency_mismatch=True, mismatched_invoice_ids=("2",))
        fields = deal_fields_payload(summary, SyncConfig(), DEAL_KEYS)["custom_fields"]
        assert DEAL_KEYS["Zoho Invoice Total"] not in fields
        assert DEAL_KEYS["Zoho Invoice Balance"] not in fields
        assert DEAL_KEYS["Zoho Invoice Number"] in fields

    def test_switched_off_fields_are_not_written_nor_need_keys(self):
        config = parse_config(
            {
                "fields": {
                    "deal": {
                        "total": "",
                        "balance": "",
                        "payment_status": {"enabled": False},
                    }
                }
            }
        )
        keys = {
            k: v
            for k, v in DEAL_KEYS.items()
            if k not in ("Zoho Invoice Total", "Zoho Invoice Balance", "Zoho Payment Status")
        }
        fields = deal_fields_payload(summary_of(), config, keys, as_of=dt.date(2024, 1, 1))[
            "custom_fields"
        ]
        assert set(fields) == set(keys.values())

    def test_missing_keys_are_all_reported(self):
        with pytest.raises(ConfigError) as info:
            deal_fields_payload(summary_of(), SyncConfig(), {})
        assert len(info.value.problems) == 8
        assert "fields.deal.total" in info.value.problems[0]
