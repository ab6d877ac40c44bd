"""gunicorn's access log without credentials: no Basic user, no OAuth ``code`` or ``state``, no
token in a query string or referrer, no Authorization or Cookie header.

gunicorn logs ``%(u)s`` (the Basic user name, i.e. Pipedrive's webhook credential) and the whole
request line by default, and the OAuth callback carries the grant code in its query string.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from gunicorn import glogging

__all__ = ["REDACTED", "RedactingLogger", "redact_query", "redact_url"]

REDACTED = "REDACTED"
# Query keys whose value is a credential, a one-time code or a token, whatever the route.
_SECRET_KEYS = re.compile(r"(?i)^(code|state|.*token.*|.*secret.*|.*password.*|signature|key)$")
# Header atoms (``{name}i``, ``{name}o``, ``{name}e``) that carry credentials.
_SECRET_HEADERS = {
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-zoho-webhook-signature",
    "x-connector-signature",
    "x-api-token",
    "http_authorization",
    "http_proxy_authorization",
    "http_cookie",
    "http_x_zoho_webhook_signature",
    "http_x_connector_signature",
    "http_x_api_token",
}


def redact_query(query: str) -> str:
    """``query`` with the value of every secret-named key replaced (order and others kept)."""
    if not query:
        return query
    pairs = parse_qsl(query, keep_blank_values=True)
    return "&".join(
        f"{quote(key, safe='')}={REDACTED if _SECRET_KEYS.match(key) else quote(value, safe='')}"
        for key, value in pairs
    )


def redact_url(url: str) -> str:
    """A URL or request target with its query redacted (and any user:password dropped)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, redact_query(parts.query), ""))


class RedactingLogger(glogging.Logger):  # type: ignore[misc]  # gunicorn ships no types
    """gunicorn's logger whose access-log atoms never hold a credential."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> Any:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        target = redact_url(str(environ.get("RAW_URI", "")))
        atoms["u"] = "-"
        atoms["r"] = f"{environ.get('REQUEST_METHOD')} {target} {environ.get('SERVER_PROTOCOL')}"
        atoms["q"] = redact_query(str(environ.get("QUERY_STRING", "")))
        referer = environ.get("HTTP_REFERER")
        atoms["f"] = redact_url(str(referer)) if referer else "-"
        for key in list(atoms):
            if key.startswith("{") and key[-2:] in ("}i", "}o", "}e"):
                name = key[1:-2]
                if name in _SECRET_HEADERS:
                    atoms[key] = REDACTED
                elif name in ("raw_uri", "query_string", "http_referer"):
                    atoms[key] = redact_url(str(atoms[key]))
        return atoms
