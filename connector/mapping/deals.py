"""Finding the Pipedrive deal a Zoho invoice belongs to.

First the invoice may name its deal (:func:`find_deal_id_in_invoice`); otherwise the deals of
the customer's organization are narrowed down by :func:`choose_deal`, which never guesses: more
than one equally good candidate is ``ambiguous`` and goes to review.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from connector.mapping.config import SyncConfig

__all__ = ["DealChoice", "DealChoiceKind", "choose_deal", "find_deal_id_in_invoice"]

DealChoiceKind = Literal["chosen", "ambiguous", "none"]

_DIGITS = re.compile(r"\d+")
_NEVER = dt.datetime.min.replace(tzinfo=dt.UTC)


def _deal_id(text: str) -> int | None:
    if _DIGITS.fullmatch(text):
        number = int(text)
        return number if number > 0 else None
    return None


def _custom_field_value(invoice: Mapping[str, Any], name: str) -> Any:
    for item in invoice.get("custom_fields") or ():
        if not isinstance(item, Mapping):
            continue
        label = item.get("label")
        if (
            item.get("api_name") == name
            or str(item.get("customfield_id", "")) == name
            or (isinstance(label, str) and label.casefold() == name.casefold())
        ):
            return item.get("value")
    return None


def find_deal_id_in_invoice(invoice: Mapping[str, Any], config: SyncConfig) -> int | None:
    """Return the Pipedrive deal id an invoice names, or ``None``.

    Looks in ``reference_number`` with ``deals.match_pattern`` (group 1 is the id), then in the
    invoice custom field ``deals.match_custom_field`` (api_name, label or customfield_id), which
    may hold the bare id or text matching the pattern.
    """
    pattern = config.deals.pattern
    reference = invoice.get("reference_number")
    if isinstance(reference, str):
        match = pattern.search(reference)
        if match and (found := _deal_id(match.group(1) or "")):
            return found
    name = config.deals.match_custom_field
    if name:
        value = _custom_field_value(invoice, name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value if value > 0 else None
        if isinstance(value, str):
            text = value.strip()
            if found := _deal_id(text):
                return found
            match = pattern.search(text)
            if match:
                return _deal_id(match.group(1) or "")
    return None


@dataclass(frozen=True)
class DealChoice:
    """The outcome of :func:`choose_deal`.

    Attributes:
        kind: ``chosen`` (``deal_id`` is set), ``ambiguous`` (``candidates`` lists the tie) or
            ``none`` (no eligible deal).
        deal_id: the chosen deal.
        candidates: the deals a human has to choose between.
        reason: a sentence for the audit trail and the review queue.
    """

    kind: DealChoiceKind
    deal_id: int | None = None
    candidates: tuple[int, ...] = ()
    reason: str = ""


def _time(deal: Mapping[str, Any], *keys: str) -> dt.datetime:
    for key in keys:
        value = deal.get(key)
        if isinstance(value, str) and value.strip():
            try:
                parsed = dt.datetime.fromisoformat(value.strip())
            except ValueError:
                continue
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return _NEVER


def _most_recent(deals: list[Mapping[str, Any]], what: str, *keys: str) -> DealChoice:
    ranked = sorted(deals, key=lambda d: _time(d, *keys), reverse=True)
    best = _time(ranked[0], *keys)
    tied = [int(d["id"]) for d in ranked if _time(d, *keys) == best]
    if len(tied) > 1:
        return DealChoice(
            "ambiguous",
            candidates=tuple(tied),
            reason=f"{len(tied)} {what} deals tie as most recent",
        )
    return DealChoice("chosen", deal_id=tied[0], reason=f"the most recent {what} deal")


def _single(deals: list[Mapping[str, Any]], what: str) -> DealChoice:
    if len(deals) == 1:
        return DealChoice("chosen", deal_id=int(deals[0]["id"]), reason=f"the only {what} deal")
    return DealChoice(
        "ambiguous",
        candidates=tuple(int(d["id"]) for d in deals),
        reason=f"{len(deals)} {what} deals",
    )


def choose_deal(deals: Sequence[Mapping[str, Any]], config: SyncConfig) -> DealChoice:
    """Pick the deal an invoice belongs to among an organization's (or person's) deals.

    Only deals whose status is in ``deals.statuses`` and that are neither deleted nor archived
    (archived deals cannot be edited) are eligible. Then, by ``deals.choose``:

    * ``recent_won_else_single_open``: the most recently won deal; else the only open deal;
      else the only remaining (e.g. lost) deal. Ties and several open deals are ambiguous.
    * ``most_recent``: the deal won, or else updated, most recently; ties are ambiguous.
    * ``review``: only a single eligible deal is chosen; several are ambiguous.
    """
    statuses = config.deals.statuses
    eligible = [
        d
        for d in deals
        if d.get("id") is not None
        and not d.get("is_deleted")
        and not d.get("is_archived")
        and d.get("status") in statuses
    ]
    if not eligible:
        return DealChoice("none", reason=f"no deal with status {' or '.join(statuses)}")
    rule = config.deals.choose
    if rule == "review":
        return _single(eligible, "eligible")
    if rule == "most_recent":
        return _most_recent(eligible, "eligible", "won_time", "update_time", "add_time")
    won = [d for d in eligible if d.get("status") == "won"]
    if won:
        return _most_recent(won, "won", "won_time", "close_time", "update_time")
    open_deals = [d for d in eligible if d.get("status") == "open"]
    if open_deals:
        return _single(open_deals, "open")
    return _single(eligible, "eligible")
