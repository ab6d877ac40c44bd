"""Migrations and the connection store on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from connector.connections import ConnectionStore
from connector.crypto import SecretBox, generate_key
from connector.db import current_revision, head_revision, make_engine, make_session_factory, upgrade
from connector.errors import ConfigError
from connector.models import DealSnapshot, InvoiceLink, Link


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'connector.db'}"
    return request.getfixturevalue("postgres_url")


def test_migrations_reach_head_and_are_idempotent(database_url):
    upgrade(database_url)
    upgrade(database_url)
    engine = make_engine(database_url)
    assert current_revision(engine) == head_revision()
    names = set(sa.inspect(engine).get_table_names())
    assert {
        "connections",
        "links",
        "invoice_links",
        "sync_cursors",
        "webhook_events",
        "audit_entries",
        "parked_jobs",
        "dead_letters",
        "review_items",
        "deal_snapshots",
    } <= names
    assert "pipedrive_snapshot" in {c["name"] for c in sa.inspect(engine).get_columns("links")}
    engine.dispose()


def test_links_made_before_snapshots_keep_working_without_one(database_url):
    upgrade(database_url, "0001")
    engine = make_engine(database_url)
    now = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO connections (name, system, external_id, display_name, data_center,"
                " accounts_server, api_base, auth_kind, credentials_ciphertext, options, status,"
                " status_reason, created_at, updated_at) VALUES ('pd', 'pipedrive', '1', '', '',"
                " '', '', 'api_token', 'x', '{}', 'active', '', :now, :now)"
            ),
            {"now": now},
        )
        conn.execute(
            sa.text(
                "INSERT INTO links (zoho_connection_id, zoho_entity, zoho_id,"
                " pipedrive_connection_id, pipedrive_entity, pipedrive_id, zoho_hash, state,"
                " created_at, updated_at) VALUES (1, 'contact', '7', 1, 'organization', '9',"
                " 'h', 'active', :now, :now)"
            ),
            {"now": now},
        )
    upgrade(database_url)
    with make_session_factory(engine)() as session:
        link = session.scalars(sa.select(Link)).one()
        assert (link.pipedrive_id, link.zoho_hash, link.pipedrive_snapshot) == ("9", "h", None)
        link.pipedrive_snapshot = {"id": 9, "name": "Acme"}
        session.add(DealSnapshot(pipedrive_connection_id=1, deal_id="5", custom_fields={"k": 1}))
        session.commit()
    with make_session_factory(engine)() as session:
        assert session.scalars(sa.select(Link)).one().pipedrive_snapshot == {
            "id": 9,
            "name": "Acme",
        }
        assert session.scalars(sa.select(DealSnapshot)).one().custom_fields == {"k": 1}
    engine.dispose()


def _dump(engine) -> str:
    """Every value in every table, as text: what a database dump would show."""
    chunks = []
    with engine.connect() as conn:
        for name in sa.inspect(engine).get_table_names():
            table = sa.Table(name, sa.MetaData(), autoload_with=engine)
            for row in conn.execute(sa.select(table)):
                chunks.append(repr(tuple(row)))
    return "\n".join(chunks)


def test_credentials_are_ciphertext_and_rotate(database_url):
    upgrade(database_url)
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    old_key, new_key = generate_key(), generate_key()
    with sessions() as session:
        store = ConnectionStore(session, SecretBox([old_key]))
        store.upsert(
            name="zoho-eu",
            system="zoho",
            external_id="20001",
            auth_kind="oauth",
            credentials={"refresh_token": "1000.refresh-token-in-clear"},
            webhook_secret={"secret": "webhooksecret123"},
            data_center="eu",
        )
        session.commit()
    dump = _dump(engine)
    assert "1000.refresh-token-in-clear" not in dump
    assert "webhooksecret123" not in dump
    assert "zoho-eu" in dump  # the dump itself works

    with sessions() as session:
        store = ConnectionStore(session, SecretBox([new_key, old_key]))
        assert store.rotate_secrets() == 2
        session.commit()
    with sessions() as session:
        store = ConnectionStore(session, SecretBox([new_key]))
        connection = store.get("zoho-eu")
        assert store.credentials(connection) == {"refresh_token": "1000.refresh-token-in-clear"}
        assert store.webhook_secret(connection) == {"secret": "webhooksecret123"}
    engine.dispose()


def test_links_are_unique_on_each_side(database_url):
    upgrade(database_url)
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    with sessions() as session:
        store = ConnectionStore(session, SecretBox([generate_key()]))
        zoho = store.upsert(
            name="z", system="zoho", external_id="1", auth_kind="oauth", credentials={}
        )
        pd = store.upsert(
            name="p", system="pipedrive", external_id="9", auth_kind="api_token", credentials={}
        )
        session.add(
            Link(
                zoho_connection_id=zoho.id,
                zoho_entity="contact",
                zoho_id="100",
                pipedrive_connection_id=pd.id,
                pipedrive_entity="organization",
                pipedrive_id="5",
            )
        )
        session.commit()
        session.add(
            Link(
                zoho_connection_id=zoho.id,
                zoho_entity="contact",
                zoho_id="101",
                pipedrive_connection_id=pd.id,
                pipedrive_entity="organization",
                pipedrive_id="5",
            )
        )
        with pytest.raises(sa.exc.IntegrityError):
            session.commit()
    engine.dispose()


def test_money_and_time_round_trip(database_url):
    upgrade(database_url)
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    when = dt.datetime(2026, 3, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
    with sessions() as session:
        store = ConnectionStore(session, SecretBox([generate_key()]))
        zoho = store.upsert(
            name="z", system="zoho", external_id="1", auth_kind="oauth", credentials={}
        )
        session.add(
            InvoiceLink(
                zoho_connection_id=zoho.id,
                invoice_id="77",
                total=Decimal("1234.5678"),
                balance=Decimal("0.10"),
                zoho_modified_at=when,
            )
        )
        session.commit()
    with sessions() as session:
        row = session.scalars(sa.select(InvoiceLink)).one()
        assert row.total == Decimal("1234.5678")
        assert row.balance == Decimal("0.10")
        assert row.zoho_modified_at == when
        assert row.zoho_modified_at.tzinfo is not None
    engine.dispose()


def test_unknown_connection_names_the_known_ones(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    upgrade(url)
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        store = ConnectionStore(session, SecretBox([generate_key()]))
        store.upsert(
            name="zoho-us", system="zoho", external_id="1", auth_kind="oauth", credentials={}
        )
        with pytest.raises(ConfigError, match="zoho-us"):
            store.get("nope")
    engine.dispose()
