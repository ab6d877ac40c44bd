"""Zoho Books invoices -> the invoice summary written onto a Pipedrive deal.

Amounts are :class:`~decimal.Decimal` throughout (Zoho sends numbers, sometimes strings). Dates
are :class:`datetime.date`. Nothing here reads a clock: "overdue" needs an ``as_of`` date.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Literal

from connector.errors import ConfigError, SyncError
from connector.mapping.config import SyncConfig

__all__ = [
    "DealInvoiceSummary",
    "InvoiceSnapshot",
    "PaymentStatus",
    "aggregate_deal_invoices",
    "deal_fields_payload",
    "invoice_snapshot",
    "payment_status",
]

PaymentStatus = Literal["unpaid", "partially_paid", "paid", "overdue"]

_CENT = Decimal("0.01")
_ZERO = Decimal(0)


@dataclass(frozen=True)
class InvoiceSnapshot:
    """The parts of a Zoho invoice that matter for its deal."""

    invoice_id: str
    number: str
    status: str
    date: dt.date | None
    due_date: dt.date | None
    total: Decimal
    balance: Decimal
    currency_code: str
    exchange_rate: Decimal
    last_modified_time: dt.datetime | None = None
    last_payment_date: dt.date | None = None
    payment_expected_date: dt.date | None = None
    reference_number: str = ""


def _decimal(value: Any, name: str, invoice_id: str) -> Decimal:
    if value is None or (isinstance(value, str) and not value.strip()):
        return _ZERO
    if isinstance(value, bool):
        raise SyncError(f"invoice {invoice_id}: {name} is not an amount")
    try:
        text = value.replace(",", "").strip() if isinstance(value, str) else str(value)
        amount = Decimal(text)
    except (InvalidOperation, ValueError):
        raise SyncError(f"invoice {invoice_id}: {name} is not an amount") from None
    if not amount.is_finite():
        raise SyncError(f"invoice {invoice_id}: {name} is not an amount")
    return amount


def _date(value: Any, name: str, invoice_id: str) -> dt.date | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return dt.date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        raise SyncError(f"invoice {invoice_id}: {name} is not a date") from None


def _datetime(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None


def invoice_snapshot(invoice: Mapping[str, Any]) -> InvoiceSnapshot:
    """Build an :class:`InvoiceSnapshot` from a Zoho invoice (list item or detail).

    Raises:
        SyncError: an amount or date cannot be read.
    """
    invoice_id = str(invoice.get("invoice_id") or "")
    rate = _decimal(invoice.get("exchange_rate"), "exchange_rate", invoice_id)
    return InvoiceSnapshot(
        invoice_id=invoice_id,
        number=str(invoice.get("invoice_number") or ""),
        status=str(invoice.get("status") or "").lower(),
        date=_date(invoice.get("date"), "date", invoice_id),
        due_date=_date(invoice.get("due_date"), "due_date", invoice_id),
        total=_decimal(invoice.get("total"), "total", invoice_id),
        balance=_decimal(invoice.get("balance"), "balance", invoice_id),
        currency_code=str(invoice.get("currency_code") or "").upper(),
        exchange_rate=rate if rate > 0 else Decimal(1),
        last_modified_time=_datetime(invoice.get("last_modified_time")),
        last_payment_date=_date(invoice.get("last_payment_date"), "last_payment_date", invoice_id),
        payment_expected_date=_date(
            invoice.get("payment_expected_date"), "payment_expected_date", invoice_id
        ),
        reference_number=str(invoice.get("reference_number") or "").strip(),
    )


@dataclass(frozen=True)
class DealInvoiceSummary:
    """The invoices of one deal, summed in one currency.

    Attributes:
        invoice_ids: invoices counted (void ones, and drafts unless included, are not).
        total: sum of totals. balance: sum of outstanding balances.
        currency: the currency of ``total``/``balance``; ``None`` when unknown.
        latest_date, latest_number, latest_status: of the most recent invoice by date.
        due_date: due date of the oldest unpaid invoice.
        expected_payment_date: that invoice's expected payment date, else its due date.
        last_payment_date: the latest payment over all counted invoices.
        currency_mismatch: some invoices could not be converted to ``currency``; they are left
            out of the sums (``mismatched_invoice_ids``) and the deal should go to review.
    """

    invoice_ids: tuple[str, ...]
    total: Decimal
    balance: Decimal
    currency: str | None
    latest_date: dt.date | None = None
    latest_number: str | None = None
    latest_status: str | None = None
    due_date: dt.date | None = None
    expected_payment_date: dt.date | None = None
    last_payment_date: dt.date | None = None
    currency_mismatch: bool = False
    mismatched_invoice_ids: tuple[str, ...] = ()

    @property
    def invoice_count(self) -> int:
        """How many invoices were counted."""
        return len(self.invoice_ids)


def _target_currency(
    invoices: list[InvoiceSnapshot], deal_currency: str | None, base_currency: str | None
) -> str | None:
    if deal_currency:
        return deal_currency.upper()
    currencies = {i.currency_code for i in invoices if i.currency_code}
    if len(currencies) == 1:
        return currencies.pop()
    if base_currency:
        return base_currency.upper()
    return None


def aggregate_deal_invoices(
    snapshots: Iterable[InvoiceSnapshot],
    deal_currency: str | None,
    base_currency: str | None,
    *,
    include_drafts: bool = False,
) -> DealInvoiceSummary:
    """Sum a deal's invoices in the deal's currency.

    Void invoices never count; drafts count only with ``include_drafts``. An invoice in another
    currency is converted through its ``exchange_rate`` (Zoho: base units per invoice unit) when
    the deal's currency is the Zoho organization's base currency; otherwise it is reported in
    ``mismatched_invoice_ids`` with ``currency_mismatch=True``.

    Args:
        snapshots: the deal's invoices.
        deal_currency: the Pipedrive deal's currency (``None``: the invoices' own, if single).
        base_currency: the Zoho organization's base currency, if known.
        include_drafts: count draft invoices too.
    """
    counted = [
        s for s in snapshots if s.status != "void" and (include_drafts or s.status != "draft")
    ]
    currency = _target_currency(counted, deal_currency, base_currency)
    base = base_currency.upper() if base_currency else None
    total = balance = _ZERO
    converted: list[tuple[InvoiceSnapshot, Decimal]] = []
    mismatched: list[str] = []
    for invoice in counted:
        if not invoice.currency_code or invoice.currency_code == currency:
            factor = None
        elif base is not None and currency == base:
            factor = invoice.exchange_rate
        else:
            mismatched.append(invoice.invoice_id)
            continue
        inv_total = (
            invoice.total
            if factor is None
            else (invoice.total * factor).quantize(_CENT, ROUND_HALF_UP)
        )
        inv_balance = (
            invoice.balance
            if factor is None
            else (invoice.balance * factor).quantize(_CENT, ROUND_HALF_UP)
        )
        total += inv_total
        balance += inv_balance
        converted.append((invoice, inv_balance))

    # Dates, numbers and statuses do not depend on currency: every counted invoice informs them,
    # even one whose amount cannot be converted (its money is what goes to review).
    included = [invoice for invoice, _ in converted]
    latest = max(
        counted,
        key=lambda i: (i.date or dt.date.min, i.number),
        default=None,
    )
    unpaid = [i for i in counted if i.balance > 0 and i.status != "paid"]
    oldest_unpaid = min(
        unpaid,
        key=lambda i: (i.due_date or i.date or dt.date.max, i.number),
        default=None,
    )
    payments = [i.last_payment_date for i in counted if i.last_payment_date]
    return DealInvoiceSummary(
        invoice_ids=tuple(i.invoice_id for i in included),
        total=total,
        balance=balance,
        currency=currency,
        latest_date=latest.date if latest else None,
        latest_number=latest.number if latest else None,
        latest_status=latest.status if latest else None,
        due_date=oldest_unpaid.due_date if oldest_unpaid else None,
        expected_payment_date=(
            (oldest_unpaid.payment_expected_date or oldest_unpaid.due_date)
            if oldest_unpaid
            else None
        ),
        last_payment_date=max(payments, default=None),
        currency_mismatch=bool(mismatched),
        mismatched_invoice_ids=tuple(mismatched),
    )


def payment_status(summary: DealInvoiceSummary, as_of: dt.date) -> PaymentStatus | None:
    """Payment status of a deal's invoices on ``as_of``; ``None`` when there are none.

    ``paid``: nothing outstanding. ``overdue``: the oldest unpaid invoice was due before
    ``as_of``. ``partially_paid``: some of the total was paid. Else ``unpaid``.
    """
    if not summary.invoice_ids:
        return None
    if summary.balance <= 0:
        return "paid"
    if summary.due_date is not None and summary.due_date < as_of:
        return "overdue"
    if summary.balance < summary.total:
        return "partially_paid"
    return "unpaid"


def _number(amount: Decimal) -> int | float:
    # Pipedrive's v2 API refuses numeric strings, and JSON has no decimal type.
    if amount == amount.to_integral_value():
        return int(amount)
    return float(amount)


def deal_fields_payload(
    summary: DealInvoiceSummary,
    config: SyncConfig,
    field_keys: Mapping[str, str],
    *,
    as_of: dt.date | None = None,
) -> dict[str, Any]:
    """Build the v2 deal update body ``{"custom_fields": {...}}`` from an invoice summary.

    Monetary fields are ``{"value": number, "currency": "EUR"}``; they are left out when
    ``currency_mismatch`` (the sums would be wrong) or the currency is unknown. Dates are
    ``YYYY-MM-DD``; missing values are ``None`` (clears the field). The payment status is
    written only when ``as_of`` is given. Switched-off fields are never written.

    Raises:
        ConfigError: a configured deal field name has no key in ``field_keys``.
    """
    names = config.fields.deal
    values: dict[str, Any] = {}
    if not summary.currency_mismatch and summary.currency:
        values["total"] = {"value": _number(summary.total), "currency": summary.currency}
        values["balance"] = {"value": _number(summary.balance), "currency": summary.currency}
    values["date"] = summary.latest_date.isoformat() if summary.latest_date else None
    values["due_date"] = summary.due_date.isoformat() if summary.due_date else None
    values["status"] = summary.latest_status
    values["number"] = summary.latest_number
    values["last_payment_date"] = (
        summary.last_payment_date.isoformat() if summary.last_payment_date else None
    )
    values["expected_payment_date"] = (
        summary.expected_payment_date.isoformat() if summary.expected_payment_date else None
    )
    if as_of is not None:
        values["payment_status"] = payment_status(summary, as_of)
    custom_fields: dict[str, Any] = {}
    missing: list[str] = []
    for attr, value in values.items():
        name = getattr(names, attr)
        if not name:
            continue
        key = field_keys.get(name)
        if key is None:
            missing.append(
                f"Pipedrive deal field {name!r} has no key: create it or fix fields.deal.{attr}"
            )
            continue
        custom_fields[key] = value
    if missing:
        raise ConfigError(missing)
    return {"custom_fields": custom_fields}
