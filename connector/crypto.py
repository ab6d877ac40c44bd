"""Encryption of stored secrets with MultiFernet: the first key encrypts, every key decrypts.

Rotation without downtime: put a new key first in ``CONNECTOR_SECRET_KEY``, keep the old ones
after it, run ``connector secrets rotate``, then drop the old keys.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from connector.errors import ConfigError, CredentialError
from connector.settings import Secret

__all__ = ["SecretBox", "generate_key"]


def generate_key() -> str:
    """Return a new random Fernet key."""
    return Fernet.generate_key().decode()


class SecretBox:
    """Encrypts and decrypts strings and JSON documents with the configured keys."""

    def __init__(self, keys: Sequence[Secret | str]) -> None:
        if not keys:
            raise ConfigError(["CONNECTOR_SECRET_KEY is not set"])
        fernets = [Fernet((k.reveal() if isinstance(k, Secret) else k).encode()) for k in keys]
        self._fernet = MultiFernet(fernets)
        first = keys[0]
        self._primary = (first.reveal() if isinstance(first, Secret) else first).encode()

    def derive_key(self, purpose: str) -> str:
        """A stable secret for ``purpose`` (session signing, OAuth state), derived from the first key.

        Derived rather than reused so that a leak of one purpose's key says nothing of the others.
        """
        digest = hmac.new(self._primary, f"connector:{purpose}".encode(), hashlib.sha256)
        return digest.hexdigest()

    def encrypt(self, plaintext: str) -> str:
        """Encrypt ``plaintext`` under the first key."""
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        """Decrypt with whichever configured key fits.

        Raises:
            CredentialError: no configured key decrypts it.
        """
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise CredentialError(
                "a stored secret cannot be decrypted with any key in CONNECTOR_SECRET_KEY"
            ) from exc

    def encrypt_json(self, document: dict[str, Any]) -> str:
        """Encrypt a JSON-serialisable mapping."""
        return self.encrypt(json.dumps(document, sort_keys=True))

    def decrypt_json(self, ciphertext: str) -> dict[str, Any]:
        """Decrypt what :meth:`encrypt_json` produced."""
        value = json.loads(self.decrypt(ciphertext))
        if not isinstance(value, dict):
            raise CredentialError("a stored secret is not a JSON object")
        return value

    def rotate(self, ciphertext: str) -> str:
        """Re-encrypt ``ciphertext`` under the first key."""
        try:
            return self._fernet.rotate(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise CredentialError(
                "a stored secret cannot be decrypted with any key in CONNECTOR_SECRET_KEY"
            ) from exc
