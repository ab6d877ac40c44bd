"""Settings read from the environment (and a ``.env`` file when present), validated once.

Every problem is reported at once in a single :class:`~connector.errors.ConfigError`. Secret
values are wrapped in :class:`Secret`, whose ``repr`` and ``str`` never show the value.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from dotenv import dotenv_values

from connector.errors import ConfigError

__all__ = ["Secret", "Settings"]


class Secret:
    """A string that never shows itself in ``repr``, ``str``, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value; call only where it is sent or used for crypto."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def _is_file(path: str) -> bool:
    try:
        return Path(path).is_file()
    except (OSError, ValueError):  # a name too long for the file system, for one
        return False


def _url_problem(name: str, value: str, schemes: tuple[str, ...]) -> str | None:
    try:
        parts = urlsplit(value)
    except ValueError:
        return f"{name} is not a valid URL"
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in schemes:
        return f"{name} must be a URL starting with one of {', '.join(schemes)} (got {scheme!r})"
    return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Process-wide settings, shared by the CLI, the web app and the workers."""

    database_url: str = "sqlite:///connector.db"
    redis_url: str = "redis://localhost:6379/0"
    broker_url: str = ""
    secret_keys: tuple[Secret, ...] = ()
    zoho_client_id: str = ""
    zoho_client_secret: Secret = dataclasses.field(default_factory=lambda: Secret(""))
    zoho_accounts_url: str = ""
    zoho_redirect_uri: str = ""
    pipedrive_api_url: str = ""
    pipedrive_oauth_url: str = ""
    pipedrive_client_id: str = ""
    pipedrive_client_secret: Secret = dataclasses.field(default_factory=lambda: Secret(""))
    pipedrive_redirect_uri: str = ""
    config_path: str = ""
    public_url: str = "http://localhost:5000"
    admin_password: Secret = dataclasses.field(default_factory=lambda: Secret(""))
    metrics_token: Secret = dataclasses.field(default_factory=lambda: Secret(""))
    flower_url: str = ""
    webhook_max_bytes: int = 256 * 1024
    webhook_backlog_limit: int = 10_000
    # Reverse proxies in front of the web process whose X-Forwarded-For/-Proto are believed.
    trusted_proxies: int = 0
    http_timeout: float = 30.0
    log_format: str = "auto"
    log_level: str = "INFO"

    @property
    def celery_broker_url(self) -> str:
        """The broker URL; the Redis URL unless ``CELERY_BROKER_URL`` says otherwise."""
        return self.broker_url or self.redis_url

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        dotenv_path: str | os.PathLike[str] | None = ".env",
    ) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``) plus a ``.env`` file.

        Values in the environment win over the ``.env`` file.

        Raises:
            ConfigError: listing every invalid or missing value.
        """
        env: dict[str, str] = {}
        if dotenv_path is not None and Path(dotenv_path).is_file():
            env.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
        env.update(os.environ if environ is None else environ)
        problems: list[str] = []

        def get(name: str, default: str = "") -> str:
            return env.get(name, default).strip()

        values: dict[str, Any] = {}
        values["database_url"] = get("DATABASE_URL", cls.database_url)
        if problem := _url_problem(
            "DATABASE_URL", values["database_url"], ("sqlite", "postgresql", "postgres")
        ):
            problems.append(problem)
        values["redis_url"] = get("REDIS_URL", cls.redis_url)
        if problem := _url_problem("REDIS_URL", values["redis_url"], ("redis", "rediss", "unix")):
            problems.append(problem)
        values["broker_url"] = get("CELERY_BROKER_URL")
        if values["broker_url"] and (
            problem := _url_problem(
                "CELERY_BROKER_URL", values["broker_url"], ("redis", "rediss", "amqp", "pyamqp")
            )
        ):
            problems.append(problem)

        raw_keys = [k.strip() for k in get("CONNECTOR_SECRET_KEY").split(",") if k.strip()]
        if not raw_keys:
            problems.append(
                "CONNECTOR_SECRET_KEY is not set: give one or more Fernet keys, comma separated "
                "(make one with `connector secrets generate-key`)"
            )
        for position, key in enumerate(raw_keys, start=1):
            try:
                Fernet(key.encode())
            except (ValueError, TypeError):
                problems.append(
                    f"CONNECTOR_SECRET_KEY key #{position} is not a valid Fernet key "
                    "(32 url-safe base64-encoded bytes)"
                )
        values["secret_keys"] = tuple(Secret(k) for k in raw_keys)

        values["zoho_client_id"] = get("ZOHO_CLIENT_ID")
        values["zoho_client_secret"] = Secret(get("ZOHO_CLIENT_SECRET"))
        if bool(values["zoho_client_id"]) != bool(values["zoho_client_secret"]):
            problems.append("ZOHO_CLIENT_ID and ZOHO_CLIENT_SECRET must be set together")
        for name, key in (
            ("ZOHO_ACCOUNTS_URL", "zoho_accounts_url"),
            ("ZOHO_REDIRECT_URI", "zoho_redirect_uri"),
            ("PIPEDRIVE_API_URL", "pipedrive_api_url"),
            ("PIPEDRIVE_OAUTH_URL", "pipedrive_oauth_url"),
            ("PIPEDRIVE_REDIRECT_URI", "pipedrive_redirect_uri"),
            ("CONNECTOR_PUBLIC_URL", "public_url"),
            ("FLOWER_URL", "flower_url"),
        ):
            value = get(name, getattr(cls, key))
            values[key] = value.rstrip("/")
            if value and (problem := _url_problem(name, value, ("http", "https"))):
                problems.append(problem)
        values["pipedrive_client_id"] = get("PIPEDRIVE_CLIENT_ID")
        values["pipedrive_client_secret"] = Secret(get("PIPEDRIVE_CLIENT_SECRET"))
        if bool(values["pipedrive_client_id"]) != bool(values["pipedrive_client_secret"]):
            problems.append("PIPEDRIVE_CLIENT_ID and PIPEDRIVE_CLIENT_SECRET must be set together")

        values["config_path"] = get("CONNECTOR_CONFIG")
        if values["config_path"] and not _is_file(values["config_path"]):
            problems.append(
                f"CONNECTOR_CONFIG names {values['config_path']!r}, which is not a file"
            )
        values["admin_password"] = Secret(get("CONNECTOR_ADMIN_PASSWORD"))
        values["metrics_token"] = Secret(get("CONNECTOR_METRICS_TOKEN"))

        for name, key, minimum in (
            ("CONNECTOR_WEBHOOK_MAX_BYTES", "webhook_max_bytes", 1024),
            ("CONNECTOR_WEBHOOK_BACKLOG_LIMIT", "webhook_backlog_limit", 1),
            ("CONNECTOR_TRUSTED_PROXIES", "trusted_proxies", 0),
        ):
            raw = get(name)
            if not raw:
                continue
            try:
                number = int(raw)
            except ValueError:
                problems.append(f"{name} must be a whole number (got {raw!r})")
                continue
            if number < minimum:
                problems.append(f"{name} must be at least {minimum} (got {number})")
            values[key] = number
        raw_timeout = get("CONNECTOR_HTTP_TIMEOUT")
        if raw_timeout:
            try:
                values["http_timeout"] = float(raw_timeout)
                if not 0 < values["http_timeout"] < float("inf"):
                    raise ValueError
            except ValueError:
                problems.append(
                    f"CONNECTOR_HTTP_TIMEOUT must be a positive number (got {raw_timeout!r})"
                )
        values["log_format"] = get("CONNECTOR_LOG_FORMAT", "auto").lower()
        if values["log_format"] not in {"auto", "json", "text"}:
            problems.append("CONNECTOR_LOG_FORMAT must be auto, json or text")
        values["log_level"] = get("CONNECTOR_LOG_LEVEL", "INFO").upper()
        if values["log_level"] not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            problems.append("CONNECTOR_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")

        if problems:
            raise ConfigError(problems)
        return cls(**values)
