"""Fixtures for the Zoho tests: a migrated SQLite database, an AppContext, a fake Zoho."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import pytest
import redis
import responses

from connector.context import AppContext
from connector.db import upgrade
from connector.settings import Secret, Settings
from connector.zoho.regions import DATA_CENTERS

ORG_ID = "10234695"
CLIENT_ID = "1000.CLIENTID"
CLIENT_SECRET = "client-secret-value-1234"
REFRESH_TOKEN = "1000.refresh.token.secret.abcdef"


def make_context(
    db_url: str, redis_client: redis.Redis, keys: list[str], **overrides: Any
) -> AppContext:
    values: dict[str, Any] = {
        "database_url": db_url,
        "secret_keys": tuple(Secret(k) for k in keys),
        "zoho_client_id": CLIENT_ID,
        "zoho_client_secret": Secret(CLIENT_SECRET),
        "http_timeout": 5.0,
    }
    values.update(overrides)
    return AppContext(settings=Settings(**values), _redis=redis_client)


@pytest.fixture
def db_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path}/connector.db"
    upgrade(url)
    return url


@pytest.fixture
def context(db_url: str, fake_redis: redis.Redis, secret_key: str) -> Iterator[AppContext]:
    ctx = make_context(db_url, fake_redis, [secret_key])
    yield ctx
    if ctx._engine is not None:
        ctx._engine.dispose()


@dataclass
class FakeZoho:
    """A minimal Zoho Accounts + Books served through ``responses`` (written from the reference)."""

    rsps: responses.RequestsMock
    dc: str = "us"
    organizations: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"organization_id": ORG_ID, "name": "Zillum", "plan_name": "PROFESSIONAL"}
        ]
    )
    token_error: str | None = None
    token_status: int = 200
    grants: list[dict[str, str]] = field(default_factory=list)
    counter: Any = field(default_factory=lambda: itertools.count(1))
    valid_tokens: set[str] = field(default_factory=set)
    expires_in: Any = 3600

    @property
    def accounts(self) -> str:
        return DATA_CENTERS[self.dc].accounts_server

    @property
    def api(self) -> str:
        return DATA_CENTERS[self.dc].api_domain

    def install(self) -> FakeZoho:
        self.rsps.add_callback(
            responses.POST, f"{self.accounts}/oauth/v2/token", callback=self._token
        )
        self.rsps.add_callback(
            responses.GET, f"{self.api}/books/v3/organizations", callback=self._organizations
        )
        return self

    def _token(self, request: Any) -> tuple[int, dict[str, str], str]:
        form = {k: v[0] for k, v in parse_qs(request.body or "").items()}
        self.grants.append(form)
        if self.token_error:
            return self.token_status, {}, json.dumps({"error": self.token_error})
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return 200, {}, json.dumps({"error": "invalid_client"})
        token = f"1000.access.{next(self.counter)}"
        self.valid_tokens.add(token)
        body: dict[str, Any] = {
            "access_token": token,
            "api_domain": self.api,
            "token_type": "Bearer",
        }
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        if form.get("grant_type") == "authorization_code":
            if form.get("code") != "1000.grant.code":
                return 200, {}, json.dumps({"error": "invalid_code"})
            body["refresh_token"] = REFRESH_TOKEN
        elif form.get("refresh_token") != REFRESH_TOKEN:
            return 200, {}, json.dumps({"error": "invalid_code"})
        return 200, {}, json.dumps(body)

    def authorized(self, request: Any) -> bool:
        header = request.headers.get("Authorization", "")
        return (
            header.startswith("Zoho-oauthtoken ") and header.split(" ", 1)[1] in self.valid_tokens
        )

    def _organizations(self, request: Any) -> tuple[int, dict[str, str], str]:
        if not self.authorized(request):
            return (
                401,
                {},
                json.dumps(
                    {"code": 57, "message": "You are not authorized to perform this operation"}
                ),
            )
        return (
            200,
            {},
            json.dumps({"code": 0, "message": "success", "organizations": self.organizations}),
        )


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture(params=["fake", "real"])
def any_redis(request: pytest.FixtureRequest) -> redis.Redis:
    """Both the in-memory Redis and the real one: the token manager must behave the same."""
    name = "fake_redis" if request.param == "fake" else "real_redis"
    client: redis.Redis = request.getfixturevalue(name)
    return client
