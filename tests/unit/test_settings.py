from __future__ import annotations

import pytest

from connector.crypto import generate_key
from connector.errors import ConfigError
from connector.settings import Secret, Settings


def test_defaults_with_only_a_key(tmp_path):
    key = generate_key()
    settings = Settings.from_env({"CONNECTOR_SECRET_KEY": key}, dotenv_path=tmp_path / "none")
    assert settings.database_url == "sqlite:///connector.db"
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.celery_broker_url == settings.redis_url
    assert [k.reveal() for k in settings.secret_keys] == [key]


def test_every_problem_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {
                "DATABASE_URL": "mysql://x",
                "REDIS_URL": "http://nope",
                "CONNECTOR_SECRET_KEY": "not-a-key",
                "ZOHO_CLIENT_ID": "id-without-secret",
                "CONNECTOR_CONFIG": str(tmp_path / "missing.toml"),
                "CONNECTOR_WEBHOOK_MAX_BYTES": "lots",
                "CONNECTOR_LOG_FORMAT": "xml",
            },
            dotenv_path=None,
        )
    problems = caught.value.problems
    assert len(problems) == 7
    joined = "\n".join(problems)
    for needle in (
        "DATABASE_URL",
        "REDIS_URL",
        "CONNECTOR_SECRET_KEY key #1",
        "ZOHO_CLIENT_ID and ZOHO_CLIENT_SECRET",
        "CONNECTOR_CONFIG",
        "CONNECTOR_WEBHOOK_MAX_BYTES",
        "CONNECTOR_LOG_FORMAT",
    ):
        assert needle in joined


def test_missing_key_is_a_problem():
    with pytest.raises(ConfigError, match="CONNECTOR_SECRET_KEY is not set"):
        Settings.from_env({}, dotenv_path=None)


def test_dotenv_read_and_environment_wins(tmp_path):
    key_in_file, key_in_env = generate_key(), generate_key()
    env_file = tmp_path / ".env"
    env_file.write_text(f"CONNECTOR_SECRET_KEY={key_in_file}\nREDIS_URL=redis://filehost:6379/1\n")
    settings = Settings.from_env({"CONNECTOR_SECRET_KEY": key_in_env}, dotenv_path=env_file)
    assert settings.redis_url == "redis://filehost:6379/1"
    assert settings.secret_keys[0].reveal() == key_in_env


def test_secrets_never_in_repr():
    key = generate_key()
    settings = Settings.from_env(
        {
            "CONNECTOR_SECRET_KEY": key,
            "ZOHO_CLIENT_ID": "cid",
            "ZOHO_CLIENT_SECRET": "very-secret-value",
            "CONNECTOR_ADMIN_PASSWORD": "hunter2hunter2",
        },
        dotenv_path=None,
    )
    text = repr(settings) + str(settings)
    assert key not in text
    assert "very-secret-value" not in text
    assert "hunter2hunter2" not in text
    assert repr(Secret("x")) == "Secret('**********')"
    assert settings.zoho_client_secret.reveal() == "very-secret-value"
