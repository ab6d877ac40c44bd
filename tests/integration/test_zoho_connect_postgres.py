"""Connect a Zoho organization with the real PostgreSQL and Redis: secrets stay ciphertext."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import responses
import sqlalchemy as sa

from connector.context import AppContext
from connector.db import upgrade
from connector.errors import ReauthorizationRequired
from connector.zoho import service
from tests.unit.zoho.conftest import ORG_ID, REFRESH_TOKEN, FakeZoho, make_context

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_context(postgres_url: str, real_redis, secret_key: str) -> Iterator[AppContext]:
    upgrade(postgres_url)
    context = make_context(postgres_url, real_redis, [secret_key])
    yield context
    context.engine.dispose()


def _everything_in(context: AppContext, real_redis) -> str:
    with context.engine.connect() as db:
        rows = db.execute(sa.text("SELECT * FROM connections")).all()
    values = [str(row) for row in rows]
    for key in real_redis.keys("*"):
        values.append(key.decode())
        if real_redis.type(key) == b"string":
            values.append(real_redis.get(key).decode())
    return "\n".join(values)


def test_connect_refresh_and_revocation_on_postgres(pg_context, real_redis):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeZoho(rsps, dc="eu").install()
        connection = service.connect_zoho(
            pg_context, organization_id=ORG_ID, grant_code="1000.grant.code", location="eu"
        )
        with pg_context.session() as db:
            store = pg_context.store(db)
            row = store.get(connection.id)
            webhook_secret = store.webhook_secret(row)["secret"]
            assert row.data_center == "eu"
            assert store.credentials(row) == {"refresh_token": REFRESH_TOKEN}

        dump = _everything_in(pg_context, real_redis)
        for secret in (REFRESH_TOKEN, webhook_secret, *fake.valid_tokens):
            assert secret not in dump
        assert f"connector:zoho:token:{connection.id}" in dump

        # Revoked: the connection is flagged in PostgreSQL and Redis stops every process.
        real_redis.delete(f"connector:zoho:token:{connection.id}")
        fake.token_error = "invalid_code"
        client = service.build_zoho_client(pg_context, connection, limiter=None)
        with pytest.raises(ReauthorizationRequired):
            client.organizations.list()
        with pytest.raises(ReauthorizationRequired):
            service.build_zoho_client(pg_context, connection, limiter=None).organizations.list()
        assert [g["grant_type"] for g in fake.grants] == ["authorization_code", "refresh_token"]
        with pg_context.session() as db:
            assert pg_context.store(db).get(connection.id).status == "needs_reauth"
