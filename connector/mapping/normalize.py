"""Normalisation for matching records across Zoho Books and Pipedrive.

These functions decide when two values "are the same": they never change what is written, only
what is compared (duplicate detection, compare-before-write, echo suppression).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["normalize_email", "normalize_name", "normalize_phone"]

# Legal-form words stripped from the END of a company name, after dots are removed and the name
# is casefolded ("S.A." -> "sa", "Pvt. Ltd." -> "pvt ltd"). Only trailing words go, so
# "Limited Editions Ltd" keeps its "limited".
_LEGAL_SUFFIXES = frozenset(
    {
        "ab",
        "ag",
        "as",
        "asa",
        "bv",
        "bvba",
        "co",
        "company",
        "corp",
        "corporation",
        "gbr",
        "gmbh",
        "inc",
        "incorporated",
        "kg",
        "kk",
        "limited",
        "llc",
        "llp",
        "lp",
        "ltd",
        "ltda",
        "nv",
        "oy",
        "oyj",
        "plc",
        "private",
        "pte",
        "pty",
        "pvt",
        "sa",
        "sarl",
        "sas",
        "spa",
        "srl",
        "ug",
    }
)
# Joining words left dangling once a suffix is gone ("Bowman and Co" -> "bowman").
_DANGLING = frozenset({"and", "und", "et", "y"})

_PHONE_TRUNK = re.compile(r"\(\s*0\s*\)")


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def normalize_email(value: str | None) -> str:
    """Return the email address as compared: trimmed, ``mailto:`` removed, lower case.

    Returns an empty string for ``None`` or blank input.
    """
    if not value:
        return ""
    text = value.strip()
    if text.lower().startswith("mailto:"):
        text = text[len("mailto:") :]
    return text.strip().lower()


def normalize_name(value: str | None) -> str:
    """Return a company or person name as compared for duplicate detection.

    Casefolds, drops accents and punctuation, turns ``&`` into ``and``, removes trailing legal
    forms (Inc, LLC, Ltd, GmbH, Pvt Ltd, S.A. ...) and collapses spaces. A name made only of a
    legal form keeps it, so "Ltd" does not become empty.
    """
    if not value:
        return ""
    text = _fold(value).replace("&", " and ").replace(".", "")
    cleaned = "".join(ch if ch.isalnum() else " " for ch in text)
    words = cleaned.split()
    while len(words) > 1 and (words[-1] in _LEGAL_SUFFIXES or words[-1] in _DANGLING):
        words.pop()
    return " ".join(words)


def normalize_phone(value: str | None) -> str:
    """Return a phone number as compared: digits only, with a leading ``+`` when international.

    ``00`` as international prefix becomes ``+``; a trunk ``(0)`` after a country code is
    dropped ("+49 (0)30 1234" -> "+49301234"). Extensions stay as digits.
    """
    if not value:
        return ""
    text = _PHONE_TRUNK.sub("", value.strip())
    digits = "".join(ch for ch in text if ch in "0123456789")
    if text.startswith("+"):
        return f"+{digits}" if digits else ""
    if digits.startswith("00") and len(digits) > 2:
        return f"+{digits[2:]}"
    return digits
