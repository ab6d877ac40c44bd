"""The data-center table and the lookups that fall back for non-Zoho hosts."""

from __future__ import annotations

import pytest

from connector.errors import ConfigError
from connector.zoho.regions import (
    DATA_CENTERS,
    dc_from_accounts_server,
    dc_from_api_domain,
    dc_from_location,
    get_data_center,
    resolve_accounts_server,
)


@pytest.mark.parametrize(
    ("dc", "accounts", "api"),
    [
        ("us", "https://accounts.zoho.com", "https://www.zohoapis.com"),
        ("eu", "https://accounts.zoho.eu", "https://www.zohoapis.eu"),
        ("in", "https://accounts.zoho.in", "https://www.zohoapis.in"),
        ("au", "https://accounts.zoho.com.au", "https://www.zohoapis.com.au"),
        ("jp", "https://accounts.zoho.jp", "https://www.zohoapis.jp"),
        ("ca", "https://accounts.zohocloud.ca", "https://www.zohoapis.ca"),
        ("cn", "https://accounts.zoho.com.cn", "https://www.zohoapis.com.cn"),
        ("sa", "https://accounts.zoho.sa", "https://www.zohoapis.sa"),
    ],
)
def test_table_matches_the_reference(dc, accounts, api):
    assert DATA_CENTERS[dc].accounts_server == accounts
    assert DATA_CENTERS[dc].api_domain == api
    assert DATA_CENTERS[dc].confirmed
    assert dc_from_accounts_server(accounts + "/") == dc
    assert dc_from_api_domain(api) == dc
    assert dc_from_location(dc.upper()) == dc


def test_uk_is_an_unconfirmed_extra():
    assert not DATA_CENTERS["uk"].confirmed
    assert dc_from_accounts_server("https://accounts.zoho.uk") == "uk"


def test_unknown_hosts_fall_back_to_location():
    assert dc_from_accounts_server("http://127.0.0.1:5000/eu/accounts") is None
    assert dc_from_accounts_server("http://127.0.0.1:5000/eu/accounts", fallback="eu") == "eu"
    assert dc_from_api_domain("http://127.0.0.1:5000/in/api", fallback="in") == "in"
    assert dc_from_api_domain("https://evil.example", fallback="mars") is None
    assert dc_from_accounts_server("https://accounts.zoho.au") == "au"


def test_resolution_order():
    assert (
        resolve_accounts_server(
            accounts_server="https://accounts.zoho.in/", configured="https://x", location="eu"
        )
        == "https://accounts.zoho.in"
    )
    assert (
        resolve_accounts_server(configured="https://sim/accounts/", location="eu")
        == "https://sim/accounts"
    )
    assert resolve_accounts_server(location="ca") == "https://accounts.zohocloud.ca"
    assert resolve_accounts_server() == "https://accounts.zoho.com"
    with pytest.raises(ConfigError):
        resolve_accounts_server(location="mars")
    with pytest.raises(ConfigError):
        get_data_center("mars")
