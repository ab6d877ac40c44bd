"""Stored connections: Zoho organizations and Pipedrive companies, credentials encrypted.

Credentials are a JSON object encrypted as a whole with :class:`~connector.crypto.SecretBox`;
the database never holds a token in clear text. Connection options (plan, seats, time zone,
limits) are plain JSON because they are not secret.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from connector.crypto import SecretBox
from connector.errors import ConfigError, ReplacementNeededError
from connector.models import (
    Connection,
    InvoiceLink,
    Link,
    ReviewItem,
    SyncCursor,
    WebhookEvent,
    utcnow,
)

__all__ = ["ConnectGuard", "ConnectionStore", "token_fingerprint"]

ZOHO = "zoho"
PIPEDRIVE = "pipedrive"

STATUS_ACTIVE = "active"
STATUS_NEEDS_REAUTH = "needs_reauth"


def token_fingerprint(secret: str) -> str:
    """A short, non-reversible id for a secret, safe for Redis keys and logs."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ConnectGuard:
    """An admin-initiated connect (the OAuth callback): never replace another account silently.

    Attributes:
        actor: who connects, recorded in the audit trail (``admin``).
        confirmed_replace: the external id the actor confirmed may be replaced ("" for none).
    """

    actor: str
    confirmed_replace: str = ""

    def check(self, existing: Connection | None, new_external_id: str, credential: Any) -> None:
        """Raise :class:`ReplacementNeededError` unless the connect keeps or may replace ``existing``."""
        if existing is None or existing.external_id in ("", new_external_id):
            return
        if existing.external_id == self.confirmed_replace:
            return
        raise ReplacementNeededError(
            system=existing.system,
            name=existing.name,
            old_external_id=existing.external_id,
            new_external_id=new_external_id,
            credential=credential,
        )

    def record(self, session: Session, connection: Connection, old_external_id: str) -> None:
        """Audit who connected, reconnected or replaced what (in the connect's transaction)."""
        from connector.sync.audit import AuditLog, Trigger

        new = connection.external_id
        if not old_external_id:
            action, reason = "connect", f"{self.actor} connected account {new}"
        elif old_external_id == new:
            action, reason = "reconnect", f"{self.actor} refreshed the tokens of account {new}"
        else:
            action = "replace"
            reason = f"{self.actor} replaced account {old_external_id} with {new}"
        session.flush()
        is_zoho = connection.system == ZOHO
        AuditLog(session, trigger=Trigger.MANUAL).record(
            direction="",
            entity="connection",
            action=action,
            outcome="ok",
            reason=f"{reason} (connection {connection.name})",
            diff={
                "external_id": {"before": old_external_id or None, "after": new},
                "actor": self.actor,
            },
            zoho_connection_id=connection.id if is_zoho else None,
            pipedrive_connection_id=None if is_zoho else connection.id,
        )


class ConnectionStore:
    """Reads and writes :class:`~connector.models.Connection` rows.

    Args:
        session: an open SQLAlchemy session; the caller commits.
        box: encrypts and decrypts credentials.
    """

    def __init__(self, session: Session, box: SecretBox) -> None:
        self.session = session
        self.box = box

    # Reading ---------------------------------------------------------------------------

    def get(self, name_or_id: str | int) -> Connection:
        """Find a connection by name or numeric id.

        Raises:
            ConfigError: when there is no such connection.
        """
        query = sa.select(Connection)
        if isinstance(name_or_id, str) and "\x00" in name_or_id:
            raise ConfigError(["a connection name cannot contain NUL"])
        if isinstance(name_or_id, int) or (str(name_or_id).isascii() and str(name_or_id).isdigit()):
            found = self.session.get(Connection, int(name_or_id))
            if found is None:
                found = self.session.scalar(query.where(Connection.name == str(name_or_id)))
        else:
            found = self.session.scalar(query.where(Connection.name == name_or_id))
        if found is None:
            known = ", ".join(c.name for c in self.list()) or "none yet"
            raise ConfigError([f"no connection named {name_or_id!r} (known: {known})"])
        return found

    def list(self, system: str | None = None) -> list[Connection]:
        """Every connection, optionally of one system, in creation order."""
        query = sa.select(Connection).order_by(Connection.id)
        if system:
            query = query.where(Connection.system == system)
        return list(self.session.scalars(query))

    def credentials(self, connection: Connection) -> dict[str, Any]:
        """Decrypt a connection's credentials."""
        return self.box.decrypt_json(connection.credentials_ciphertext)

    def webhook_secret(self, connection: Connection) -> dict[str, Any]:
        """Decrypt a connection's webhook secret material (empty when none is set)."""
        if not connection.webhook_secret_ciphertext:
            return {}
        return self.box.decrypt_json(connection.webhook_secret_ciphertext)

    # Writing ---------------------------------------------------------------------------

    def upsert(
        self,
        *,
        name: str,
        system: str,
        external_id: str,
        auth_kind: str,
        credentials: Mapping[str, Any],
        display_name: str = "",
        data_center: str = "",
        accounts_server: str = "",
        api_base: str = "",
        options: Mapping[str, Any] | None = None,
        webhook_secret: Mapping[str, Any] | None = None,
    ) -> Connection:
        """Create a connection or update the one with the same name, and mark it active."""
        if system not in {ZOHO, PIPEDRIVE}:
            raise ConfigError([f"unknown system {system!r}"])
        connection = self.session.scalar(sa.select(Connection).where(Connection.name == name))
        if connection is None:
            connection = Connection(name=name, system=system)
            self.session.add(connection)
        elif connection.system != system:
            raise ConfigError(
                [f"connection {name!r} is a {connection.system} connection, not {system}"]
            )
        connection.external_id = external_id
        connection.auth_kind = auth_kind
        connection.credentials_ciphertext = self.box.encrypt_json(dict(credentials))
        connection.display_name = display_name or connection.display_name or ""
        connection.data_center = data_center
        connection.accounts_server = accounts_server
        connection.api_base = api_base
        merged = dict(connection.options or {})
        merged.update(options or {})
        connection.options = merged
        if webhook_secret is not None:
            connection.webhook_secret_ciphertext = self.box.encrypt_json(dict(webhook_secret))
        connection.status = STATUS_ACTIVE
        connection.status_reason = ""
        self.session.flush()
        return connection

    def set_credentials(self, connection: Connection, credentials: Mapping[str, Any]) -> None:
        """Replace a connection's credentials (e.g. a rotated refresh token)."""
        connection.credentials_ciphertext = self.box.encrypt_json(dict(credentials))
        self.session.flush()

    def set_webhook_secret(self, connection: Connection, secret: Mapping[str, Any]) -> None:
        """Replace a connection's webhook secret material."""
        connection.webhook_secret_ciphertext = self.box.encrypt_json(dict(secret))
        self.session.flush()

    def set_options(self, connection: Connection, **options: Any) -> None:
        """Merge non-secret options into a connection."""
        merged = dict(connection.options or {})
        merged.update(options)
        connection.options = merged
        self.session.flush()

    def mark_needs_reauth(self, connection: Connection, reason: str) -> None:
        """Flag a connection whose refresh token no longer works; a human must reconnect."""
        connection.status = STATUS_NEEDS_REAUTH
        connection.status_reason = reason
        connection.last_error_at = utcnow()
        self.session.flush()

    def mark_success(self, connection: Connection) -> None:
        """Record a successful call."""
        connection.last_success_at = utcnow()
        if connection.status != STATUS_ACTIVE and connection.status != "disabled":
            connection.status = STATUS_ACTIVE
            connection.status_reason = ""
        self.session.flush()

    def delete(self, connection: Connection) -> None:
        """Remove a connection and its links, cursors, events and review items.

        Audit rows, parked jobs and dead letters are kept: history outlives the connection.
        """
        cid = connection.id
        for model, columns in (
            (Link, (Link.zoho_connection_id, Link.pipedrive_connection_id)),
            (
                InvoiceLink,
                (InvoiceLink.zoho_connection_id, InvoiceLink.pipedrive_connection_id),
            ),
            (SyncCursor, (SyncCursor.connection_id,)),
            (WebhookEvent, (WebhookEvent.connection_id,)),
            (ReviewItem, (ReviewItem.connection_id,)),
        ):
            self.session.execute(sa.delete(model).where(sa.or_(*(c == cid for c in columns))))
        self.session.delete(connection)
        self.session.flush()

    def rotate_secrets(self) -> int:
        """Re-encrypt every stored secret under the newest key; returns how many were rewritten."""
        rotated = 0
        for connection in self.list():
            connection.credentials_ciphertext = self.box.rotate(connection.credentials_ciphertext)
            rotated += 1
            if connection.webhook_secret_ciphertext:
                connection.webhook_secret_ciphertext = self.box.rotate(
                    connection.webhook_secret_ciphertext
                )
                rotated += 1
        self.session.flush()
        return rotated
