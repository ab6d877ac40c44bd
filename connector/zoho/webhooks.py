"""Zoho Books webhook signatures (``X-Zoho-Webhook-Signature``).

Reference §7.3 (the Zoho Billing scheme, UNCONFIRMED for Books, hence the configurable
algorithm and encoding): sort every query-string and form pair by key, concatenate them as
``key1value1key2value2...`` with no separators, append the RAW body exactly as received, and
HMAC the result with the webhook's secret. Doc example: query ``subscription_id=90343,
name=basic`` and body ``{"created_date":"2019-03-06","event_id":"5675"}`` sign
``namebasicsubscription_id90343{"created_date":"2019-03-06","event_id":"5675"}``.

There is no timestamp in the scheme, so there is no replay protection here: receivers dedupe
on the event's entity, id and ``last_modified_time``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from connector.errors import ConfigError, InvalidSignatureError

__all__ = [
    "SIGNATURE_HEADER",
    "canonical_string",
    "decode_pairs",
    "sign_zoho_webhook",
    "signature_inputs",
    "verify_zoho_signature",
    "webhook_event_urls",
]

SIGNATURE_HEADER = "X-Zoho-Webhook-Signature"

_ALGORITHMS: dict[str, Callable[..., Any]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}
_ENCODINGS = ("hex", "base64")

Params = Mapping[str, str] | Iterable[tuple[str, str]]


def _pairs(params: Params) -> list[tuple[str, str]]:
    return list(params.items()) if isinstance(params, Mapping) else list(params)


def canonical_string(params: Params, raw_body: bytes) -> bytes:
    """The bytes Zoho signs: pairs sorted by key as ``keyvalue...``, then the raw body.

    Args:
        params: query and form pairs, URL-decoded; a list keeps repeated keys.
        raw_body: the body bytes as received (``b""`` for a form body, whose pairs are in
            ``params``).
    """
    pairs = _pairs(params)
    # Sort by key only (a stable sort keeps repeated keys in arrival order), as the doc says.
    pairs.sort(key=lambda pair: pair[0])
    return "".join(f"{key}{value}" for key, value in pairs).encode() + raw_body


def _digest(secret: str, message: bytes, algorithm: str) -> bytes:
    if algorithm not in _ALGORITHMS:
        raise ConfigError([f"unknown Zoho webhook signature algorithm {algorithm!r}"])
    return hmac.new(secret.encode(), message, _ALGORITHMS[algorithm]).digest()


def sign_zoho_webhook(
    secret: str,
    *,
    params: Params,
    raw_body: bytes,
    algorithm: str = "sha256",
    encoding: str = "hex",
) -> str:
    """Compute the ``X-Zoho-Webhook-Signature`` value (tests and the simulator).

    Raises:
        ConfigError: unknown algorithm or encoding.
    """
    digest = _digest(secret, canonical_string(params, raw_body), algorithm)
    if encoding == "hex":
        return digest.hex()
    if encoding == "base64":
        return base64.b64encode(digest).decode()
    raise ConfigError([f"unknown Zoho webhook signature encoding {encoding!r}"])


def _decode(signature: str, encoding: str, size: int) -> bytes:
    text = signature.strip()
    # Some senders prefix the algorithm ("sha256=..."); accept it rather than fail on it.
    if "=" in text[:8] and text.split("=", 1)[0].lower() in _ALGORITHMS:
        text = text.split("=", 1)[1]
    try:
        if encoding == "hex":
            decoded = bytes.fromhex(text)
        elif encoding == "base64":
            decoded = base64.b64decode(text, validate=True)
        else:
            raise ConfigError([f"unknown Zoho webhook signature encoding {encoding!r}"])
    except (ValueError, binascii.Error):
        raise InvalidSignatureError("malformed") from None
    if len(decoded) != size:
        raise InvalidSignatureError("malformed")
    return decoded


def verify_zoho_signature(
    secret: str,
    *,
    params: Params,
    raw_body: bytes,
    signature_header: str | None,
    algorithm: str = "sha256",
    encoding: str = "hex",
) -> None:
    """Check a webhook's signature in constant time.

    Args:
        secret: the webhook's secret (stored encrypted on the connection).
        params: query-string plus form pairs, URL-decoded (see :func:`signature_inputs`).
        raw_body: the body exactly as received (``b""`` for form bodies).
        signature_header: the ``X-Zoho-Webhook-Signature`` value, or ``None`` when absent.
        algorithm: ``sha256`` (default), ``sha1`` or ``sha512``.
        encoding: ``hex`` (default) or ``base64``.

    Raises:
        InvalidSignatureError: reason ``missing``, ``malformed`` or ``mismatch``.
        ConfigError: no secret, or an unknown algorithm or encoding.
    """
    if not secret:
        raise ConfigError(["no Zoho webhook secret is configured for this connection"])
    if algorithm not in _ALGORITHMS:
        raise ConfigError([f"unknown Zoho webhook signature algorithm {algorithm!r}"])
    if encoding not in _ENCODINGS:
        raise ConfigError([f"unknown Zoho webhook signature encoding {encoding!r}"])
    if signature_header is None or not signature_header.strip():
        raise InvalidSignatureError("missing")
    expected = _digest(secret, canonical_string(params, raw_body), algorithm)
    received = _decode(signature_header, encoding, len(expected))
    if not hmac.compare_digest(expected, received):
        raise InvalidSignatureError("mismatch")


def decode_pairs(raw: bytes) -> list[tuple[str, str]]:
    """URL-decode a query string or form body into its pairs, repeated and blank keys kept.

    The query and a form body go through this one decoder, so both are signed as the same
    text whatever bytes arrive (invalid UTF-8 becomes U+FFFD on both sides).
    """
    return parse_qsl(raw.decode("utf-8", errors="replace"), keep_blank_values=True)


def signature_inputs(
    query: Params, content_type: str, raw_body: bytes
) -> tuple[list[tuple[str, str]], bytes]:
    """Split a request into what is signed: the pairs (query + form) and the body part.

    A form-encoded body contributes its decoded pairs and no raw body; any other body is
    appended raw.
    """
    pairs = _pairs(query)
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == "application/x-www-form-urlencoded":
        return pairs + decode_pairs(raw_body), b""
    return pairs, raw_body


WEBHOOK_MODULES = {
    "contact": "Contacts",
    "invoice": "Invoices",
    "customerpayment": "Customer Payments",
    "creditnote": "Credit Notes",
    "bill": "Bills",
    "vendorpayment": "Vendor Payments",
}
"""The Zoho Books module of each entity's workflow rules, in the order they are printed."""


def webhook_event_urls(
    base_url: str, entities: Iterable[str], actions: Iterable[str]
) -> list[dict[str, str]]:
    """One URL per event (``<base>?event=<entity>.<action>``), grouped by module.

    Zoho Books does not say in a delivery which event fired, so each workflow rule event gets
    its own webhook whose URL names it; the query is signed with the rest.
    """
    wanted = set(entities)
    return [
        {
            "module": module,
            "event": f"{entity}.{action}",
            "url": f"{base_url}?event={entity}.{action}",
        }
        for entity, module in WEBHOOK_MODULES.items()
        if entity in wanted
        for action in actions
    ]
