"""Vendor bill totals: a vendor's Zoho bills summed for its Pipedrive organization.

Pure functions over bill records as the Zoho API lists them (``total``, ``balance``, ``status``,
``currency_code``). Void bills owe nothing and drafts are not owed yet, so both are left out.
Amounts are only added up in one currency: a bill in another currency than the vendor's makes
the sums unknown rather than wrong.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from connector.errors import ConfigError
from connector.mapping.config import SyncConfig

__all__ = [
    "EXCLUDED_BILL_STATUSES",
    "VendorBillTotals",
    "sum_vendor_bills",
    "vendor_totals_payload",
]

EXCLUDED_BILL_STATUSES = frozenset({"void", "draft"})


@dataclasses.dataclass(frozen=True)
class VendorBillTotals:
    """A vendor's bills summed in the vendor's currency.

    Attributes:
        currency: the currency of the sums (the vendor's), upper case; ``""`` when unknown.
        total: sum of the counted bills' totals.
        balance: sum of the counted bills' balances (what is still owed).
        counted: how many bills were added up.
        mismatched_bill_ids: bills in another currency; when any, the sums must not be written.
    """

    currency: str
    total: Decimal = Decimal(0)
    balance: Decimal = Decimal(0)
    counted: int = 0
    mismatched_bill_ids: tuple[str, ...] = ()

    @property
    def currency_mismatch(self) -> bool:
        """Some bills are in another currency than the vendor's."""
        return bool(self.mismatched_bill_ids)


def _amount(value: Any) -> Decimal:
    if value in (None, ""):
        return Decimal(0)
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return Decimal(0)


def sum_vendor_bills(bills: Iterable[Mapping[str, Any]], currency: str) -> VendorBillTotals:
    """Add up the totals and balances of a vendor's bills.

    Args:
        bills: the vendor's bills (list or detail shape).
        currency: the vendor's currency code; a bill without one counts as in this currency.
    """
    wanted = currency.strip().upper()
    total = balance = Decimal(0)
    counted = 0
    mismatched: list[str] = []
    for bill in bills:
        if str(bill.get("status") or "").lower() in EXCLUDED_BILL_STATUSES:
            continue
        code = str(bill.get("currency_code") or wanted).strip().upper()
        if code != wanted:
            mismatched.append(str(bill.get("bill_id") or ""))
            continue
        total += _amount(bill.get("total"))
        balance += _amount(bill.get("balance"))
        counted += 1
    return VendorBillTotals(
        currency=wanted,
        total=total,
        balance=balance,
        counted=counted,
        mismatched_bill_ids=tuple(mismatched),
    )


def _number(amount: Decimal) -> int | float:
    # Pipedrive's v2 API refuses numeric strings, and JSON has no decimal type.
    if amount == amount.to_integral_value():
        return int(amount)
    return float(amount)


def vendor_totals_payload(
    totals: VendorBillTotals, config: SyncConfig, field_keys: Mapping[str, str]
) -> dict[str, Any]:
    """The organization custom field values for ``totals``: ``{key: {"value", "currency"}}``.

    Empty when vendor totals are off or the sums cannot be written (currency mismatch or
    unknown currency).

    Raises:
        ConfigError: a configured vendor field has no key in ``field_keys``.
    """
    if totals.currency_mismatch or not totals.currency:
        return {}
    names = config.fields
    values: dict[str, Any] = {}
    missing: list[str] = []
    for attr, amount in (
        ("vendor_bills_total", totals.total),
        ("vendor_bills_balance", totals.balance),
    ):
        name = getattr(names, attr)
        if not name or name not in config.vendor_total_fields:
            continue
        key = field_keys.get(name)
        if key is None:
            missing.append(
                f"Pipedrive organization field {name!r} has no key: run "
                f"`connector pipedrive setup-fields` or fix fields.{attr}"
            )
            continue
        values[key] = {"value": _number(amount), "currency": totals.currency}
    if missing:
        raise ConfigError(missing)
    return values
