from __future__ import annotations

import pytest

from connector.crypto import SecretBox, generate_key
from connector.errors import ConfigError, CredentialError


def test_round_trip_and_ciphertext_hides_value():
    box = SecretBox([generate_key()])
    token = box.encrypt("1000.refresh.secret")
    assert "1000.refresh.secret" not in token
    assert box.decrypt(token) == "1000.refresh.secret"
    assert box.decrypt_json(box.encrypt_json({"a": 1})) == {"a": 1}


def test_rotation_first_key_encrypts_all_decrypt():
    old, new = generate_key(), generate_key()
    under_old = SecretBox([old]).encrypt("s3cret")
    both = SecretBox([new, old])
    assert both.decrypt(under_old) == "s3cret"
    rotated = both.rotate(under_old)
    assert SecretBox([new]).decrypt(rotated) == "s3cret"
    with pytest.raises(CredentialError):
        SecretBox([old]).decrypt(rotated)


def test_wrong_key_is_a_clear_error_without_the_value():
    token = SecretBox([generate_key()]).encrypt("s3cret")
    with pytest.raises(CredentialError) as caught:
        SecretBox([generate_key()]).decrypt(token)
    assert "s3cret" not in str(caught.value)


def test_no_keys_is_a_config_error():
    with pytest.raises(ConfigError):
        SecretBox([])
