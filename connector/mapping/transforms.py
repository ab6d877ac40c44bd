"""The fixed registry of named value transforms a field mapping may use.

A transform has three parts:

* ``to_pipedrive``: applied to a Zoho value written to Pipedrive;
* ``to_zoho``: applied to a Pipedrive value written to Zoho;
* ``canonical``: how values are *compared* (compare-before-write, echo-suppression hashes).

A side's value is compared through its round-trip image, e.g. a Zoho value ``z`` as
``canonical(to_zoho(to_pipedrive(z)))``. So a one-way transform such as ``upper`` still compares
equal after a round trip, and a value that merely differs in spelling ("U.S.A" vs
"United States" under ``country``) never triggers a write.

Names: ``strip``, ``lower``, ``upper``, ``email``, ``phone``, ``country``, ``country_name``,
``country_code``. Unknown names in the configuration are configuration errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from connector.mapping.countries import country_code, country_name
from connector.mapping.normalize import normalize_email, normalize_phone

__all__ = ["TRANSFORMS", "Transform"]


def _identity(value: str) -> str:
    return value


def _strip(value: str) -> str:
    return value.strip()


def _lower(value: str) -> str:
    return value.strip().lower()


def _upper(value: str) -> str:
    return value.strip().upper()


def _to_country_name(value: str) -> str:
    return country_name(value) or value.strip()


def _to_country_code(value: str) -> str:
    return country_code(value) or value.strip()


def _country_key(value: str) -> str:
    return country_code(value) or value.strip().casefold()


@dataclass(frozen=True)
class Transform:
    """A named value transform; functions take and return strings (non-strings pass through)."""

    name: str
    to_pipedrive: Callable[[str], str]
    to_zoho: Callable[[str], str]
    canonical: Callable[[str], str] = _identity
    description: str = ""


TRANSFORMS: dict[str, Transform] = {
    t.name: t
    for t in (
        Transform("strip", _strip, _strip, description="trim surrounding whitespace both ways"),
        Transform("lower", _lower, _strip, _lower, "lower case in Pipedrive; compared lower case"),
        Transform("upper", _upper, _strip, _upper, "upper case in Pipedrive; compared upper case"),
        Transform("email", _strip, _strip, normalize_email, "compared as email addresses"),
        Transform("phone", _strip, _strip, normalize_phone, "compared as phone numbers"),
        Transform("country", _strip, _strip, _country_key, "compared as countries, written as is"),
        Transform(
            "country_name",
            _to_country_name,
            _to_country_code,
            _country_key,
            "ISO code in Zoho, English country name in Pipedrive",
        ),
        Transform(
            "country_code",
            _to_country_code,
            _to_country_name,
            _country_key,
            "English country name in Zoho, ISO code in Pipedrive",
        ),
    )
}
