"""Property-based fuzzing of the status pages, signed in, over the real PostgreSQL and Redis.

Whatever the query string, path segment or form field, a page answers below 500: bad input is a
4xx or an empty result, never a crash. PostgreSQL rather than SQLite, for the same reason as the
receiver's fuzz: it refuses NUL characters and bounds integers.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest
import redis
import sqlalchemy as sa
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import POSTGRES_URL, REDIS_URL
from tests.harness import world
from web import create_app

pytestmark = pytest.mark.integration

PAGES = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
PASSWORD = "fuzz-admin-password"


@dataclass
class Pages:
    client: FlaskClient
    csrf: str


@pytest.fixture(scope="module")
def pages() -> Iterator[Pages]:
    schema = f"fuzzpages_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in POSTGRES_URL else "?"
    database_url = f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    cache = redis.Redis.from_url(REDIS_URL)
    cache.flushdb()
    try:
        extra = {"CONNECTOR_ADMIN_PASSWORD": PASSWORD}
        with world(database_url, REDIS_URL, settings_extra=extra) as w:
            app = create_app({"CONNECTOR_CONTEXT": w.context, "CONNECTOR_ENQUEUE": lambda *a: None})
            client = app.test_client()
            token = _csrf(client, "/login")
            assert (
                client.post("/login", data={"csrf_token": token, "password": PASSWORD}).status_code
                == 302
            )
            yield Pages(client, _csrf(client, "/review"))
            w.context.close()
    finally:
        cache.flushdb()
        cache.close()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _csrf(client: FlaskClient, path: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert match, path
    return match.group(1)


values = (
    st.text(max_size=30)
    | st.integers().map(str)
    | st.sampled_from(["", "0", "-1", "1e9", "9" * 30, "\x00", "%00", "%FF", "NaN"])
)
segments = values.filter(lambda v: v not in ("", ".", "..") and "/" not in v)


def _quoted(value: str) -> str:
    return quote(value.encode("utf-8", errors="surrogatepass"), safe="")


@PAGES
@given(
    path=st.sampled_from(["/", "/budget", "/queues", "/history", "/review", "/dead-letters"]),
    query=st.dictionaries(
        st.sampled_from(["page", "connection", "entity", "outcome", "text", "show", "next"]),
        values,
        max_size=4,
    ),
)
@example(path="/history", query={"page": "99999999999999999999"})
@example(path="/history", query={"text": "\x00"})
def test_pages_never_answer_5xx_for_any_query(pages: Pages, path: str, query: dict[str, str]):
    url = path + "?" + "&".join(f"{_quoted(k)}={_quoted(v)}" for k, v in query.items())
    assert pages.client.get(url).status_code < 500, url


@PAGES
@given(system=st.sampled_from(["zoho", "pipedrive"]) | segments, entity=segments, record=segments)
@example(system="zoho", entity="contact", record="\x00")
def test_record_pages_never_answer_5xx(pages: Pages, system: str, entity: str, record: str):
    url = f"/records/{_quoted(system)}/{_quoted(entity)}/{_quoted(record)}"
    assert pages.client.get(url).status_code < 500, url


@PAGES
@given(
    item=segments,
    action=st.sampled_from(["link", "create", "ignore"]) | segments,
    pipedrive_id=values,
)
@example(item="99999999999999999999", action="ignore", pipedrive_id="")
@example(item="1", action="link", pipedrive_id="\x00")
def test_review_actions_never_answer_5xx(pages: Pages, item: str, action: str, pipedrive_id: str):
    url = f"/review/{_quoted(item)}/{_quoted(action)}"
    data = {"csrf_token": pages.csrf, "pipedrive_id": pipedrive_id}
    assert pages.client.post(url, data=data).status_code < 500, url
