"""Every loader of outside data either succeeds or raises the project's own error.

Fuzzed inputs go through each marshmallow schema of both APIs, both webhook parsers, the sync
configuration and the settings. The allowed failures are the documented ones: a
:class:`~connector.errors.ConnectorError` subclass (``PayloadError``, ``ConfigError``...) or, for
the bare marshmallow schemas, marshmallow's ``ValidationError``. Anything else (``TypeError``,
``KeyError``, ``OverflowError``, ``RecursionError``...) would turn a bad delivery or a typo in
the operator's file into a crash, so it fails the test.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from typing import Any

import marshmallow
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from connector.errors import ConnectorError
from connector.mapping.config import parse_config
from connector.pipedrive import schemas as pd_schemas
from connector.pipedrive.webhooks import parse_pipedrive_webhook
from connector.settings import Settings
from connector.zoho import schemas as zoho_schemas
from connector.zoho.schemas import load_record, parse_zoho_webhook

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Values near the edges of what datetime can hold: shifting them to UTC leaves its range.
EDGE_TIMES = [
    "0001-01-01T00:00:00+0100",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-0100",
    "9999-12-31T23:59:59-01:00",
    "2026-03-02T10:00:00+0000",
    "2026-03-02T10:00:00Z",
    "2026-03-02 10:00:00",
    "2026-02-30T10:00:00+0000",
    "",
]
NASTY_TEXT = ["\x00", "\ud800", "\u202e", "a" * 5000, "  ", "NaN", "1e999999", "-0"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(EDGE_TIMES + NASTY_TEXT),
)


def json_values(keys: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Any]:
    """JSON-like structures; ``keys`` biases object keys towards a schema's field names."""
    key_strategy = st.text(max_size=12) if keys is None else st.one_of(keys, st.text(max_size=8))
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(key_strategy, children, max_size=6),
        ),
        max_leaves=25,
    )


def _field_names(schema: marshmallow.Schema) -> list[str]:
    names: set[str] = set()
    for name, field in schema.fields.items():
        names.add(field.data_key or name)
        inner = getattr(field, "inner", None)
        nested = getattr(inner, "schema", None) or getattr(field, "schema", None)
        if isinstance(nested, marshmallow.Schema):
            names.update(_field_names(nested))
    return sorted(names)


def documents_for(schema: marshmallow.Schema) -> st.SearchStrategy[Any]:
    """Mostly objects keyed by the schema's own fields, sometimes anything at all."""
    keys = st.sampled_from(_field_names(schema))
    return st.one_of(
        st.dictionaries(keys, json_values(keys), max_size=12),
        json_values(keys),
    )


ZOHO_SCHEMAS = [
    zoho_schemas.AddressSchema(),
    zoho_schemas.CustomFieldSchema(),
    zoho_schemas.ContactPersonSchema(),
    zoho_schemas.ContactSchema(),
    zoho_schemas.LineItemSchema(),
    zoho_schemas.InvoiceSchema(),
    zoho_schemas.PaymentInvoiceSchema(),
    zoho_schemas.CustomerPaymentSchema(),
    zoho_schemas.OrganizationSchema(),
]
PIPEDRIVE_SCHEMAS = [
    pd_schemas.OrganizationSchema(),
    pd_schemas.PersonSchema(),
    pd_schemas.DealSchema(),
    pd_schemas.WebhookV1MetaSchema(),
    pd_schemas.WebhookV1Schema(),
    pd_schemas.WebhookV2MetaSchema(),
    pd_schemas.WebhookV2Schema(),
]


def _expect_project_error_or_success(call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return call(*args, **kwargs)
    except ConnectorError:
        return None


@pytest.mark.parametrize("schema", ZOHO_SCHEMAS, ids=lambda s: type(s).__name__)
@FUZZ
@given(data=st.data())
def test_zoho_schemas_load_or_raise_payload_error(schema, data):
    document = data.draw(documents_for(schema))
    loaded = _expect_project_error_or_success(load_record, schema, document)
    assert loaded is None or isinstance(loaded, dict)


@pytest.mark.parametrize("schema", PIPEDRIVE_SCHEMAS, ids=lambda s: type(s).__name__)
@FUZZ
@given(data=st.data())
def test_pipedrive_schemas_load_or_raise_validation_error(schema, data):
    document = data.draw(documents_for(schema))
    try:
        loaded = schema.load(document)
    except marshmallow.ValidationError:
        return
    assert isinstance(loaded, dict)


# Webhook parsers -----------------------------------------------------------------------------

ZOHO_ENTITY_KEYS = ["invoice", "contact", "customerpayment", "contactperson", "creditnote", "bill"]
zoho_record = st.fixed_dictionaries(
    {},
    optional={
        "invoice_id": scalars,
        "contact_id": scalars,
        "payment_id": scalars,
        "contact_person_id": scalars,
        "creditnote_id": scalars,
        "bill_id": scalars,
        "last_modified_time": st.one_of(st.sampled_from(EDGE_TIMES), scalars),
        "organization_id": scalars,
        "invoices": json_values(st.sampled_from(["invoice_id", "amount_applied"])),
        "total": scalars,
        "contact_persons": json_values(st.sampled_from(["first_name", "email"])),
    },
)
zoho_documents = st.one_of(
    st.dictionaries(st.sampled_from(ZOHO_ENTITY_KEYS), st.one_of(zoho_record, scalars), max_size=2),
    st.fixed_dictionaries(
        {},
        optional={
            "entity": st.one_of(st.sampled_from(ZOHO_ENTITY_KEYS), scalars),
            "entity_id": scalars,
            "event": scalars,
            "event_type": scalars,
            "organization_id": scalars,
            "last_modified_time": st.one_of(st.sampled_from(EDGE_TIMES), scalars),
        },
    ),
    json_values(),
)


def _dump(document: Any) -> bytes:
    # allow_nan: Python's json reads NaN and Infinity, so senders can put them in a body.
    return json.dumps(document, allow_nan=True).encode("utf-8", errors="surrogatepass")


raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.integers(min_value=1, max_value=50_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(min_value=1, max_value=50_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
)
content_types = st.sampled_from(
    ["application/json", "application/x-www-form-urlencoded", "text/plain", "", "x/y; a=b"]
)
queries = st.dictionaries(
    st.sampled_from(["event_type", "event", "organization_id", "x"]), st.text(max_size=20)
)


@FUZZ
@given(document=zoho_documents, content_type=content_types, query=queries)
@example(
    document={"invoice": {"invoice_id": "1", "last_modified_time": "0001-01-01T00:00:00+0100"}},
    content_type="application/json",
    query={},
).via("datetime overflow when the key is made")
@example(
    document={
        "entity": "invoice",
        "entity_id": "1",
        "last_modified_time": "9999-12-31T23:59:59-0100",
    },
    content_type="application/json",
    query={},
).via("datetime overflow when the key is made")
def test_parse_zoho_webhook_documents(document, content_type, query):
    event = _expect_project_error_or_success(
        parse_zoho_webhook, _dump(document), content_type, query
    )
    if event is not None:
        # Everything stored from an event must fit its database column (VARCHAR lengths).
        assert 0 < len(event.entity_id) <= 64
        assert len(event.event_kind) <= 60, event.event_kind
        assert "\x00" not in event.event_kind


@FUZZ
@given(body=raw_bodies, content_type=content_types, query=queries)
@example(body=b"[" * 100_000, content_type="application/json", query={}).via("deep nesting")
@example(
    body=b"a=" + b"%7B%22a%22%3A" * 5_000,
    content_type="application/x-www-form-urlencoded",
    query={},
).via("deep nesting inside a form field")
def test_parse_zoho_webhook_raw_bodies(body, content_type, query):
    _expect_project_error_or_success(parse_zoho_webhook, body, content_type, query)


pd_meta = st.fixed_dictionaries(
    {},
    optional={
        "id": scalars,
        "action": st.one_of(st.sampled_from(["create", "change", "delete", "updated"]), scalars),
        "entity": st.one_of(st.sampled_from(["organization", "person", "deal"]), scalars),
        "entity_id": scalars,
        "object": st.one_of(st.sampled_from(["organization", "person", "deal"]), scalars),
        "company_id": scalars,
        "merged_from_id": scalars,
        "attempt": scalars,
        "timestamp_micro": scalars,
        "v": st.one_of(st.just(1), scalars),
    },
)
pd_record = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "id": scalars,
            "update_time": st.one_of(st.sampled_from(EDGE_TIMES), scalars),
            "name": scalars,
        },
    ),
    json_values(),
)
pd_documents = st.one_of(
    st.fixed_dictionaries(
        {"meta": pd_meta},
        optional={
            "data": pd_record,
            "previous": pd_record,
            "current": pd_record,
            "retry": scalars,
            "v": scalars,
        },
    ),
    json_values(),
)

_V2_META = {"id": "e1", "action": "change", "entity": "organization", "entity_id": "5"}


@FUZZ
@given(document=pd_documents)
@example(document={"meta": _V2_META, "data": {"update_time": "0001-01-01T00:00:00+01:00"}}).via(
    "datetime overflow when converted to UTC"
)
def test_parse_pipedrive_webhook_documents(document):
    event = _expect_project_error_or_success(parse_pipedrive_webhook, _dump(document))
    if event is not None:
        assert 0 < len(event.entity_id) <= 64, "entity_id must fit webhook_events.entity_id"
        assert "\x00" not in event.entity_id


@FUZZ
@given(body=raw_bodies)
@example(body=b"[" * 100_000).via("deep nesting")
def test_parse_pipedrive_webhook_raw_bodies(body):
    _expect_project_error_or_success(parse_pipedrive_webhook, body)


# Configuration and settings ------------------------------------------------------------------

CONFIG_SECTIONS = {
    "contacts": ["vendor_rule", "individual_customers", "inactive_rule", "sync_contact_persons"],
    "routing": ["default", "field", "rules"],
    "deals": [
        "match_pattern",
        "match_custom_field",
        "choose",
        "statuses",
        "include_draft_invoices",
    ],
    "fields": [
        "zoho_contact_id",
        "currency",
        "zoho_status",
        "deal",
        "builtin",
        "organization",
        "person",
    ],
    "sync": ["pipedrive_poll_minutes", "overlap_seconds", "reserve_fraction", "backfill_token_cap"],
}
CONFIG_WORDS = [
    "skip",
    "mark",
    "record",
    "person",
    "both",
    "zoho->pipedrive",
    "website",
    "name",
    "custom:VAT",
    "(\\d+)",
    "(" * 5000 + "a" + ")" * 5000,
    "[",
    "open",
    "enabled",
    "zoho",
    "pipedrive",
    "direction",
]
toml_scalars = st.one_of(
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(CONFIG_WORDS),
)
toml_values = st.recursive(
    toml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(CONFIG_WORDS) | st.text(max_size=6), children, max_size=4),
    ),
    max_leaves=15,
)
config_documents = st.dictionaries(
    st.sampled_from([*CONFIG_SECTIONS, "other"]),
    st.one_of(
        st.dictionaries(
            st.sampled_from([key for keys in CONFIG_SECTIONS.values() for key in keys]),
            toml_values,
            max_size=5,
        ),
        toml_values,
    ),
    max_size=5,
)


@FUZZ
@given(document=config_documents)
@example(document={"deals": {"match_pattern": "(" * 5000 + "a" + ")" * 5000}}).via(
    "regular expression too deeply nested"
)
def test_parse_config_accepts_or_raises_config_error(document):
    _expect_project_error_or_success(parse_config, document)


SETTINGS_NAMES = [
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "CONNECTOR_SECRET_KEY",
    "ZOHO_CLIENT_ID",
    "ZOHO_CLIENT_SECRET",
    "ZOHO_ACCOUNTS_URL",
    "PIPEDRIVE_API_URL",
    "PIPEDRIVE_CLIENT_ID",
    "PIPEDRIVE_CLIENT_SECRET",
    "CONNECTOR_PUBLIC_URL",
    "CONNECTOR_CONFIG",
    "CONNECTOR_WEBHOOK_MAX_BYTES",
    "CONNECTOR_WEBHOOK_BACKLOG_LIMIT",
    "CONNECTOR_HTTP_TIMEOUT",
    "CONNECTOR_LOG_FORMAT",
    "CONNECTOR_LOG_LEVEL",
]
setting_values = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=string.digits + "-+._e", max_size=12),
    st.sampled_from(
        [
            "nan",
            "inf",
            "-inf",
            "1" * 5000,
            "\x00",
            "postgresql://x",
            "http://[::1",
            "https://[bad",
            "redis://:p@h:99999999/0",
            "sqlite:///\x00",
            "/dev/null\x00x",
            "aGVsbG8=",
        ]
    ),
)


@FUZZ
@given(env=st.dictionaries(st.sampled_from(SETTINGS_NAMES), setting_values))
@example(env={"CONNECTOR_SECRET_KEY": "x", "DATABASE_URL": "http://[::1"}).via("IPv6 bracket")
@example(env={"CONNECTOR_SECRET_KEY": "x", "CONNECTOR_CONFIG": "1" * 5000}).via("name too long")
@example(env={"CONNECTOR_HTTP_TIMEOUT": "nan"}).via("NaN timeout")
def test_settings_from_env_accepts_or_raises_config_error(env: Mapping[str, str]) -> None:
    loaded = _expect_project_error_or_success(Settings.from_env, env, dotenv_path=None)
    if loaded is not None:
        # A timeout that is not a finite positive number fails only later, inside requests.
        assert 0 < loaded.http_timeout < float("inf"), loaded.http_timeout
