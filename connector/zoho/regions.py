"""Zoho data centers: where each one exchanges tokens and where it serves the Books API.

The table follows reference §1: eight data centers are official for Books; UK is listed by Zoho
Accounts but not by the Books docs, so it is kept as an UNCONFIRMED extra. Canada is asymmetric:
tokens at ``accounts.zohocloud.ca`` but API calls at ``www.zohoapis.ca``.

Hosts that are not Zoho's (a simulator, a sandbox) are not guessed at: the lookups return
``None`` and callers fall back to the ``location`` from the OAuth callback or an explicit code.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from connector.errors import AuthError, ConfigError

__all__ = [
    "DATA_CENTERS",
    "DEFAULT_DATA_CENTER",
    "DataCenter",
    "allowed_accounts_server",
    "dc_from_accounts_server",
    "dc_from_api_domain",
    "dc_from_location",
    "get_data_center",
    "resolve_accounts_server",
    "table_api_domain",
]


@dataclass(frozen=True)
class DataCenter:
    """One Zoho data center.

    Attributes:
        code: short code, as Zoho's ``location`` callback parameter spells it (``us``, ``eu``...).
        name: human name.
        accounts_server: OAuth server (tokens are exchanged and refreshed here).
        api_domain: API host; Books lives under ``{api_domain}/books/v3``.
        confirmed: False where the Books docs do not list the data center.
    """

    code: str
    name: str
    accounts_server: str
    api_domain: str
    confirmed: bool = True


DATA_CENTERS: dict[str, DataCenter] = {
    dc.code: dc
    for dc in (
        DataCenter("us", "United States", "https://accounts.zoho.com", "https://www.zohoapis.com"),
        DataCenter("eu", "Europe", "https://accounts.zoho.eu", "https://www.zohoapis.eu"),
        DataCenter("in", "India", "https://accounts.zoho.in", "https://www.zohoapis.in"),
        DataCenter(
            "au", "Australia", "https://accounts.zoho.com.au", "https://www.zohoapis.com.au"
        ),
        DataCenter("jp", "Japan", "https://accounts.zoho.jp", "https://www.zohoapis.jp"),
        # The CA asymmetry: the accounts host is zohocloud.ca, the API host zohoapis.ca.
        DataCenter("ca", "Canada", "https://accounts.zohocloud.ca", "https://www.zohoapis.ca"),
        DataCenter("cn", "China", "https://accounts.zoho.com.cn", "https://www.zohoapis.com.cn"),
        DataCenter("sa", "Saudi Arabia", "https://accounts.zoho.sa", "https://www.zohoapis.sa"),
        DataCenter(
            "uk",
            "United Kingdom (UNCONFIRMED for Books)",
            "https://accounts.zoho.uk",
            "https://www.zohoapis.uk",
            confirmed=False,
        ),
    )
}

DEFAULT_DATA_CENTER = "us"

# Location strings seen in callbacks that are not the table's own codes.
_LOCATION_ALIASES = {"com": "us", "com.au": "au", "com.cn": "cn", "zohocloud.ca": "ca"}
# Non-Books Zoho pages show accounts.zoho.au for Australia; accept it when reading a URL.
_EXTRA_ACCOUNTS_HOSTS = {"accounts.zoho.au": "au"}


def get_data_center(code: str) -> DataCenter:
    """Look up a data center by code.

    Raises:
        ConfigError: the code is not a known data center.
    """
    found = dc_from_location(code)
    if found is None:
        known = ", ".join(DATA_CENTERS)
        raise ConfigError([f"unknown Zoho data center {code!r} (known: {known})"])
    return DATA_CENTERS[found]


def dc_from_location(location: str | None) -> str | None:
    """Map the OAuth callback's ``location`` parameter to a data center code, if known."""
    if not location:
        return None
    key = location.strip().lower()
    key = _LOCATION_ALIASES.get(key, key)
    return key if key in DATA_CENTERS else None


def _host(url: str) -> str:
    parts = urlsplit(url if "//" in url else f"https://{url}")
    return (parts.hostname or "").lower()


def dc_from_accounts_server(url: str | None, *, fallback: str | None = None) -> str | None:
    """Which data center an accounts-server URL belongs to.

    Args:
        url: e.g. ``https://accounts.zoho.eu``.
        fallback: returned (after validation) when the host is not one of Zoho's, e.g. the
            ``location`` from the callback when a simulator serves the accounts server.
    """
    host = _host(url or "")
    for dc in DATA_CENTERS.values():
        if host == _host(dc.accounts_server):
            return dc.code
    if host in _EXTRA_ACCOUNTS_HOSTS:
        return _EXTRA_ACCOUNTS_HOSTS[host]
    return dc_from_location(fallback)


def dc_from_api_domain(url: str | None, *, fallback: str | None = None) -> str | None:
    """Which data center an ``api_domain`` (from a token response) belongs to.

    Args:
        url: e.g. ``https://www.zohoapis.in``.
        fallback: code or location used when the host is not one of Zoho's.
    """
    host = _host(url or "")
    for dc in DATA_CENTERS.values():
        api_host = _host(dc.api_domain)
        # Accept the bare domain too (zohoapis.eu) as some libraries strip the www.
        if host in (api_host, api_host.removeprefix("www.")):
            return dc.code
    return dc_from_location(fallback)


def resolve_accounts_server(
    *,
    accounts_server: str | None = None,
    configured: str | None = None,
    location: str | None = None,
) -> str:
    """Pick the accounts server to exchange a code at.

    Order: the explicit URL (the callback's ``accounts-server``), then the configured
    ``ZOHO_ACCOUNTS_URL``, then the data center named by ``location``, then the US server.

    Raises:
        ConfigError: ``location`` is given but names no known data center.
    """
    if accounts_server:
        return accounts_server.rstrip("/")
    if configured:
        return configured.rstrip("/")
    if location:
        return get_data_center(location).accounts_server
    return DATA_CENTERS[DEFAULT_DATA_CENTER].accounts_server


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return (parts.scheme.lower(), parts.netloc.lower())


def allowed_accounts_server(candidate: str, *, configured: str | None = None) -> str:
    """The accounts server to use for a callback's untrusted ``accounts-server``.

    Only the accounts hosts of :data:`DATA_CENTERS` (reference §1.2; always over https, whatever
    scheme the candidate names) and the origin of the configured ``ZOHO_ACCOUNTS_URL`` (a
    simulator, a proxy) are accepted: the code and the client secret are POSTed there.

    Raises:
        AuthError: any other host.
    """
    for dc in DATA_CENTERS.values():
        if _host(candidate) == _host(dc.accounts_server):
            return dc.accounts_server
    value = candidate.strip().rstrip("/")
    if configured and _origin(value) == _origin(configured) and _origin(value)[1]:
        return value
    raise AuthError(
        "the callback's accounts-server is not one of Zoho's accounts servers nor ZOHO_ACCOUNTS_URL",
        system="zoho",
    )


def table_api_domain(accounts_server: str) -> str | None:
    """The API host the data center table pairs with a Zoho accounts server (None elsewhere)."""
    code = dc_from_accounts_server(accounts_server)
    return DATA_CENTERS[code].api_domain if code else None
