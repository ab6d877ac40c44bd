"""Normalisation for matching, the transform registry and the country table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.mapping.countries import country_code, country_name
from connector.mapping.normalize import normalize_email, normalize_name, normalize_phone
from connector.mapping.transforms import TRANSFORMS


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Will.Smith@Bowman.COM ", "will.smith@bowman.com"),
        ("mailto:ann@x.io", "ann@x.io"),
        ("MAILTO: Ann@X.io", "ann@x.io"),
        ("", ""),
        (None, ""),
    ],
)
def test_normalize_email(raw, expected):
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Bowman and Co", "bowman"),
        ("Bowman & Co.", "bowman"),
        ("ACME, Inc.", "acme"),
        ("Acme Inc", "acme"),
        ("Acme LLC", "acme"),
        ("Acme Ltd.", "acme"),
        ("Acme Limited", "acme"),
        ("Müller GmbH", "muller"),
        ("Mueller  GmbH & Co. KG", "mueller"),
        ("Tata Consultancy Services Pvt. Ltd.", "tata consultancy services"),
        ("Infosys Private Limited", "infosys"),
        ("Telefónica S.A.", "telefonica"),
        ("Telefonica SA", "telefonica"),
        ("  Zoho   Corp  ", "zoho"),
        ("Limited Editions Ltd", "limited editions"),
        ("Ltd", "ltd"),
        ("Inc.", "inc"),
        ("O'Brien-Smith Plc", "o brien smith"),
        ("", ""),
        (None, ""),
    ],
)
def test_normalize_name(raw, expected):
    assert normalize_name(raw) == expected


def test_normalize_name_makes_spelling_variants_equal():
    variants = ["Bowman & Co", "BOWMAN AND CO.", "bowman, co", "Bowman Co Ltd"]
    assert len({normalize_name(v) for v in variants}) == 1


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+1-925-921-9201", "+19259219201"),
        ("+1 (925) 921 9201", "+19259219201"),
        ("0049 30 1234567", "+49301234567"),
        ("+49 (0)30 1234567", "+49301234567"),
        ("030 1234567", "0301234567"),
        ("555-0100 ext. 12", "555010012"),
        ("+", ""),
        ("", ""),
        (None, ""),
        ("٣٤٥", ""),  # non-ASCII digits are not phone digits
    ],
)
def test_normalize_phone(raw, expected):
    assert normalize_phone(raw) == expected


@given(st.text(max_size=30))
def test_normalisers_are_idempotent(text):
    for normalize in (normalize_email, normalize_name, normalize_phone):
        once = normalize(text)
        assert normalize(once) == once


@pytest.mark.parametrize(
    ("raw", "code", "name"),
    [
        ("DE", "DE", "Germany"),
        ("de", "DE", "Germany"),
        ("Germany", "DE", "Germany"),
        ("deutschland", "DE", "Germany"),
        ("U.S.A", "US", "United States"),
        ("USA", "US", "United States"),
        ("United States of America", "US", "United States"),
        ("UK", "GB", "United Kingdom"),
        ("Côte d'Ivoire", "CI", "Côte d'Ivoire"),
        ("Cote d'Ivoire", "CI", "Côte d'Ivoire"),
        (" India ", "IN", "India"),
        ("Atlantis", None, None),
        ("", None, None),
    ],
)
def test_country_lookup(raw, code, name):
    assert country_code(raw) == code
    assert country_name(raw) == name


class TestTransforms:
    def test_registry_names(self):
        assert set(TRANSFORMS) == {
            "strip",
            "lower",
            "upper",
            "email",
            "phone",
            "country",
            "country_name",
            "country_code",
        }

    @pytest.mark.parametrize(
        ("name", "value", "to_pipedrive", "to_zoho"),
        [
            ("strip", "  a b ", "a b", "a b"),
            ("lower", " ABC ", "abc", "ABC"),
            ("upper", " abc ", "ABC", "abc"),
            ("email", " Ann@X.io ", "Ann@X.io", "Ann@X.io"),
            ("phone", " +1 925 ", "+1 925", "+1 925"),
            ("country", " U.S.A ", "U.S.A", "U.S.A"),
            ("country_name", "DE", "Germany", "DE"),
            ("country_name", "Germany", "Germany", "DE"),
            ("country_name", "Atlantis", "Atlantis", "Atlantis"),
            ("country_code", "Germany", "DE", "Germany"),
            ("country_code", "de", "DE", "Germany"),
        ],
    )
    def test_directions(self, name, value, to_pipedrive, to_zoho):
        transform = TRANSFORMS[name]
        assert transform.to_pipedrive(value) == to_pipedrive
        assert transform.to_zoho(value) == to_zoho

    @pytest.mark.parametrize(
        ("name", "left", "right"),
        [
            ("email", "Ann@X.io", "ann@x.io"),
            ("phone", "+1-925-921-9201", "+1 925 921 9201"),
            ("country", "U.S.A", "United States"),
            ("country_name", "DE", "Germany"),
            ("lower", "ABC", "abc"),
            ("upper", "ABC", "abc"),
        ],
    )
    def test_canonical_makes_equivalent_spellings_equal(self, name, left, right):
        canonical = TRANSFORMS[name].canonical
        assert canonical(left) == canonical(right)

    @pytest.mark.parametrize("name", sorted(TRANSFORMS))
    @given(value=st.text(max_size=12))
    def test_round_trip_is_stable_after_canonicalisation(self, name, value):
        transform = TRANSFORMS[name]
        once = transform.to_zoho(transform.to_pipedrive(value))
        twice = transform.to_zoho(transform.to_pipedrive(once))
        assert transform.canonical(once) == transform.canonical(twice)
