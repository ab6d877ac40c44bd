"""Webhook signatures: the Billing canonical string (sorted params + raw body), constant-time check."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest

from connector.errors import ConfigError, InvalidSignatureError
from connector.zoho.webhooks import (
    canonical_string,
    sign_zoho_webhook,
    signature_inputs,
    verify_zoho_signature,
)

SECRET = "Abc123def456Ghi789"
BODY = b'{"created_date":"2019-03-06","event_id":"5675"}'
PARAMS = {"subscription_id": "90343", "name": "basic"}


def sign(params: Any, body: bytes, secret: str = SECRET, **kwargs: Any) -> str:
    return sign_zoho_webhook(secret, params=params, raw_body=body, **kwargs)


def test_canonical_string_matches_the_documented_example():
    assert (
        canonical_string(PARAMS, BODY)
        == b'namebasicsubscription_id90343{"created_date":"2019-03-06","event_id":"5675"}'
    )


def test_signature_is_hmac_sha256_hex_of_the_canonical_string():
    expected = hmac.new(SECRET.encode(), canonical_string(PARAMS, BODY), hashlib.sha256).hexdigest()
    assert sign(PARAMS, BODY) == expected


def test_valid_signature_passes():
    verify_zoho_signature(SECRET, params=PARAMS, raw_body=BODY, signature_header=sign(PARAMS, BODY))


def test_param_order_does_not_matter_but_values_do():
    reordered = [("subscription_id", "90343"), ("name", "basic")]
    verify_zoho_signature(
        SECRET, params=reordered, raw_body=BODY, signature_header=sign(PARAMS, BODY)
    )
    with pytest.raises(InvalidSignatureError) as info:
        verify_zoho_signature(
            SECRET,
            params={**PARAMS, "name": "pro"},
            raw_body=BODY,
            signature_header=sign(PARAMS, BODY),
        )
    assert info.value.reason == "mismatch"


def test_the_raw_body_is_signed_not_a_reserialisation():
    spaced = b'{"created_date": "2019-03-06", "event_id": "5675"}'
    with pytest.raises(InvalidSignatureError, match="mismatch"):
        verify_zoho_signature(
            SECRET, params=PARAMS, raw_body=spaced, signature_header=sign(PARAMS, BODY)
        )


def test_forged_body_is_a_mismatch():
    forged = BODY.replace(b"5675", b"5676")
    with pytest.raises(InvalidSignatureError) as info:
        verify_zoho_signature(
            SECRET, params=PARAMS, raw_body=forged, signature_header=sign(PARAMS, BODY)
        )
    assert info.value.reason == "mismatch"


def test_wrong_secret_is_a_mismatch():
    with pytest.raises(InvalidSignatureError) as info:
        verify_zoho_signature(
            SECRET,
            params=PARAMS,
            raw_body=BODY,
            signature_header=sign(PARAMS, BODY, secret="Other1234567890"),
        )
    assert info.value.reason == "mismatch"


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_signature(header):
    with pytest.raises(InvalidSignatureError) as info:
        verify_zoho_signature(SECRET, params=PARAMS, raw_body=BODY, signature_header=header)
    assert info.value.reason == "missing"


@pytest.mark.parametrize(
    "header",
    [
        sign(PARAMS, BODY)[:-2],  # truncated
        sign(PARAMS, BODY)[:32],  # half of it
        "zz" * 32,  # not hex
        sign(PARAMS, BODY) + "00",  # too long
    ],
)
def test_truncated_or_garbled_signature_is_malformed(header):
    with pytest.raises(InvalidSignatureError) as info:
        verify_zoho_signature(SECRET, params=PARAMS, raw_body=BODY, signature_header=header)
    assert info.value.reason == "malformed"


def test_base64_and_other_algorithms_are_configurable():
    digest = hmac.new(SECRET.encode(), canonical_string(PARAMS, BODY), hashlib.sha512).digest()
    header = base64.b64encode(digest).decode()
    assert sign(PARAMS, BODY, algorithm="sha512", encoding="base64") == header
    verify_zoho_signature(
        SECRET,
        params=PARAMS,
        raw_body=BODY,
        signature_header=header,
        algorithm="sha512",
        encoding="base64",
    )
    with pytest.raises(InvalidSignatureError, match="malformed"):
        verify_zoho_signature(
            SECRET,
            params=PARAMS,
            raw_body=BODY,
            signature_header="!!!",
            algorithm="sha512",
            encoding="base64",
        )
    with pytest.raises(ConfigError):
        verify_zoho_signature(
            SECRET, params=PARAMS, raw_body=BODY, signature_header=header, algorithm="md5"
        )
    with pytest.raises(ConfigError):
        verify_zoho_signature("", params=PARAMS, raw_body=BODY, signature_header=header)


def test_uppercase_hex_and_prefix_are_accepted():
    header = sign(PARAMS, BODY)
    verify_zoho_signature(SECRET, params=PARAMS, raw_body=BODY, signature_header=header.upper())
    verify_zoho_signature(SECRET, params=PARAMS, raw_body=BODY, signature_header=f"sha256={header}")


def test_form_bodies_sign_their_decoded_pairs():
    body = b"entity=invoice&entity_id=123&event=invoice.updated&note=a%2Bb+c"
    pairs, raw = signature_inputs(
        {"event_type": "invoice.updated"}, "application/x-www-form-urlencoded; charset=utf-8", body
    )
    assert raw == b""
    assert ("note", "a+b c") in pairs
    header = sign(pairs, b"")
    verify_zoho_signature(SECRET, params=pairs, raw_body=raw, signature_header=header)
    pairs_json, raw_json = signature_inputs({"a": "1"}, "application/json", BODY)
    assert raw_json == BODY
    assert pairs_json == [("a", "1")]


def test_agrees_with_the_simulator_signer():
    from connector.sandbox.zoho_webhooks import sign_zoho_webhook as sim_sign

    assert sim_sign(SECRET, PARAMS, BODY) == sign(PARAMS, BODY)
