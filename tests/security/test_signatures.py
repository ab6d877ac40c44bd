"""Webhook authentication under attack: forged, truncated, extended, replayed and borrowed
credentials, on both routes, with two Zoho organizations and two Pipedrive companies connected.

Constant time: the verifiers are checked to compare with :func:`hmac.compare_digest` (by
reading their source). A statistical timing test is deliberately absent: on a shared 2-core
machine its noise would make it flaky, and a flaky security test teaches people to ignore it.
"""

from __future__ import annotations

import base64
import inspect
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from connector.models import AuditEntry, WebhookEvent
from connector.pipedrive import webhooks as pd_webhooks
from connector.pipedrive.service import connect_pipedrive
from connector.zoho import webhooks as zoho_webhooks
from connector.zoho.webhooks import SIGNATURE_HEADER, sign_zoho_webhook
from tests.harness import World, world
from web import create_app

QUERY = {"event_type": "invoice.updated"}


@dataclass
class Env:
    world: World
    client: FlaskClient
    queued: list[tuple[str, list[Any], str]]
    zoho_secrets: dict[str, str]
    basic: dict[str, dict[str, str]]  # Pipedrive connection name -> username/password

    def events(self) -> list[WebhookEvent]:
        with self.world.context.session() as session:
            return list(session.scalars(sa.select(WebhookEvent).order_by(WebhookEvent.id)))

    def audit_count(self) -> int:
        with self.world.context.session() as session:
            return int(session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) or 0)


@pytest.fixture
def env(tmp_path, redis_url) -> Iterator[Env]:
    with world(f"sqlite:///{tmp_path / 'c.db'}", redis_url, data_centers=("us", "eu")) as w:
        w.pipedrive.create_company("beta", plan="growth")
        beta_token = w.pipedrive.create_api_token("beta")
        connect_pipedrive(
            w.context, api_token=beta_token, company_domain="beta", name="pipedrive-beta"
        )
        queued: list[tuple[str, list[Any], str]] = []
        app = create_app(
            {
                "TESTING": True,
                "CONNECTOR_CONTEXT": w.context,
                "CONNECTOR_ENQUEUE": lambda task, args, queue: queued.append((task, args, queue)),
            }
        )
        with w.context.session() as session:
            store = w.context.store(session)
            zoho = {
                name: str(store.webhook_secret(store.get(name))["secret"])
                for name in ("zoho-us", "zoho-eu")
            }
            basic = {
                name: {k: str(v) for k, v in store.webhook_secret(store.get(name)).items()}
                for name in ("pipedrive", "pipedrive-beta")
            }
        yield Env(w, app.test_client(), queued, zoho, basic)


def _invoice(w: World, dc: str = "us", invoice_id: str = "4600001") -> bytes:
    return json.dumps(
        {
            "invoice": {
                "invoice_id": invoice_id,
                "last_modified_time": "2026-03-02T10:00:00+0000",
                "organization_id": w.zoho_orgs[dc],
            }
        }
    ).encode()


def _zoho(env: Env, connection: str, raw: bytes, signature: str | None):
    return env.client.post(
        f"/webhooks/zoho/{connection}",
        query_string=QUERY,
        data=raw,
        content_type="application/json",
        headers={SIGNATURE_HEADER: signature} if signature is not None else {},
    )


def _assert_refused(env: Env, answer: Any) -> None:
    assert answer.status_code == 401, answer.get_json()
    assert env.events() == []
    assert env.audit_count() == 0
    assert env.queued == []


# Zoho HMAC -----------------------------------------------------------------------------------


def test_correct_signature_is_accepted(env):
    raw = _invoice(env.world)
    signature = sign_zoho_webhook(env.zoho_secrets["zoho-us"], params=QUERY, raw_body=raw)
    assert _zoho(env, "zoho-us", raw, signature).status_code == 202
    assert len(env.queued) == 1


def _good_signature(env: Env) -> tuple[bytes, str]:
    raw = _invoice(env.world)
    return raw, sign_zoho_webhook(env.zoho_secrets["zoho-us"], params=QUERY, raw_body=raw)


@pytest.mark.parametrize(
    "tamper",
    [
        "flipped-last-hex-digit",
        "truncated-by-one-byte",
        "truncated-to-half",
        "extended-by-one-byte",
        "extended-by-a-digest",
        "algorithm-prefix-on-forged-digest",
        "sha1-of-same-message",
        "base64-instead-of-hex",
        "empty-secret",
        "whitespace-only",
    ],
)
def test_forged_truncated_or_extended_signatures_are_refused(env, tamper):
    raw, good = _good_signature(env)
    secret = env.zoho_secrets["zoho-us"]
    last = "0" if good[-1] != "0" else "1"
    forged = {
        "flipped-last-hex-digit": good[:-1] + last,
        "truncated-by-one-byte": good[:-2],
        "truncated-to-half": good[:32],
        "extended-by-one-byte": good + "00",
        "extended-by-a-digest": good + good,
        # The receiver tolerates an "sha256=" label; the label must not change what is checked.
        "algorithm-prefix-on-forged-digest": "sha256=" + good[:-1] + last,
        "sha1-of-same-message": sign_zoho_webhook(
            secret, params=QUERY, raw_body=raw, algorithm="sha1"
        ),
        "base64-instead-of-hex": sign_zoho_webhook(
            secret, params=QUERY, raw_body=raw, encoding="base64"
        ),
        "empty-secret": sign_zoho_webhook("", params=QUERY, raw_body=raw),
        "whitespace-only": "   ",
    }[tamper]
    _assert_refused(env, _zoho(env, "zoho-us", raw, forged))


def test_signature_does_not_cover_a_changed_body_or_query(env):
    raw, good = _good_signature(env)
    tampered = raw.replace(b"4600001", b"4600002")
    _assert_refused(env, _zoho(env, "zoho-us", tampered, good))
    # The query is signed too: moving the event type changes what the event means.
    answer = env.client.post(
        "/webhooks/zoho/zoho-us",
        query_string={"event_type": "invoice.deleted"},
        data=raw,
        content_type="application/json",
        headers={SIGNATURE_HEADER: good},
    )
    _assert_refused(env, answer)


def test_signature_of_one_zoho_connection_does_not_open_another(env):
    raw = _invoice(env.world, "eu")
    made_for_us = sign_zoho_webhook(env.zoho_secrets["zoho-us"], params=QUERY, raw_body=raw)
    assert env.zoho_secrets["zoho-us"] != env.zoho_secrets["zoho-eu"]
    _assert_refused(env, _zoho(env, "zoho-eu", raw, made_for_us))
    # ...while the eu connection's own signature is accepted.
    made_for_eu = sign_zoho_webhook(env.zoho_secrets["zoho-eu"], params=QUERY, raw_body=raw)
    assert _zoho(env, "zoho-eu", raw, made_for_eu).status_code == 202


def test_zoho_signature_does_not_open_the_pipedrive_route_of_the_same_name(env):
    raw, good = _good_signature(env)
    answer = env.client.post(
        "/webhooks/pipedrive/zoho-us",
        data=raw,
        content_type="application/json",
        headers={SIGNATURE_HEADER: good},
    )
    _assert_refused(env, answer)


def test_replayed_zoho_delivery_is_a_duplicate_not_requeued(env):
    raw, good = _good_signature(env)
    assert _zoho(env, "zoho-us", raw, good).status_code == 202
    for _ in range(3):
        again = _zoho(env, "zoho-us", raw, good)
        assert again.status_code == 200
        assert "duplicate" in again.get_json()["message"]
    assert len(env.events()) == 1
    assert len(env.queued) == 1


def test_signed_event_for_another_organization_is_acknowledged_but_not_queued(env):
    # Signed with zoho-us's secret, but the body names the eu organization: not this one's.
    # Authenticated, so 2xx (a refusal only makes Zoho retry); nothing is stored or queued.
    raw = _invoice(env.world, "eu")
    signature = sign_zoho_webhook(env.zoho_secrets["zoho-us"], params=QUERY, raw_body=raw)
    answer = _zoho(env, "zoho-us", raw, signature)
    assert answer.status_code == 202
    assert "organization_id does not match" in answer.get_json()["message"]
    assert env.events() == []
    assert env.queued == []


# Pipedrive Basic + relay HMAC ----------------------------------------------------------------


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _pd_body(env: Env, connection: str, event_id: str = "ea17c64f") -> bytes:
    company_id = str(env.world.connection(connection).options["company_id"])
    return json.dumps(
        {
            "data": {"id": 5, "name": "Acme", "update_time": "2026-03-02T10:00:00Z"},
            "previous": {"name": "Old"},
            "meta": {
                "action": "change",
                "entity": "organization",
                "entity_id": "5",
                "id": event_id,
                "company_id": company_id,
                "version": "2.0",
            },
        }
    ).encode()


def _pd(env: Env, connection: str, raw: bytes, headers: dict[str, str]):
    return env.client.post(
        f"/webhooks/pipedrive/{connection}",
        data=raw,
        headers={"Content-Type": "application/json", **headers},
    )


def test_each_pipedrive_connection_has_its_own_credentials(env):
    ours, theirs = env.basic["pipedrive"], env.basic["pipedrive-beta"]
    assert ours["username"] != theirs["username"]
    assert ours["password"] != theirs["password"]
    own = _pd(
        env,
        "pipedrive-beta",
        _pd_body(env, "pipedrive-beta"),
        {"Authorization": _basic(theirs["username"], theirs["password"])},
    )
    assert own.status_code == 202


@pytest.mark.parametrize("direction", ["alpha-on-beta", "beta-on-alpha"])
def test_basic_credentials_of_one_pipedrive_connection_do_not_open_another(env, direction):
    source, target = (
        ("pipedrive", "pipedrive-beta")
        if direction == "alpha-on-beta"
        else ("pipedrive-beta", "pipedrive")
    )
    creds = env.basic[source]
    answer = _pd(
        env,
        target,
        _pd_body(env, target),
        {"Authorization": _basic(creds["username"], creds["password"])},
    )
    _assert_refused(env, answer)
    assert answer.headers["WWW-Authenticate"] == "Basic"


@pytest.mark.parametrize(
    "variant",
    [
        "password-truncated",
        "password-extended",
        "password-case-changed",
        "user-and-password-swapped",
        "mixed-user-of-one-password-of-other",
        "no-colon",
        "empty-user",
        "empty-password",
        "trailing-newline",
    ],
)
def test_near_miss_basic_credentials_are_refused(env, variant):
    creds, other = env.basic["pipedrive"], env.basic["pipedrive-beta"]
    user, password = creds["username"], creds["password"]
    header = {
        "password-truncated": _basic(user, password[:-1]),
        "password-extended": _basic(user, password + "x"),
        "password-case-changed": _basic(user, password.swapcase()),
        "user-and-password-swapped": _basic(password, user),
        "mixed-user-of-one-password-of-other": _basic(user, other["password"]),
        "no-colon": "Basic " + base64.b64encode(f"{user}{password}".encode()).decode(),
        "empty-user": _basic("", password),
        "empty-password": _basic(user, ""),
        "trailing-newline": _basic(user, password + "\n"),
    }[variant]
    _assert_refused(
        env, _pd(env, "pipedrive", _pd_body(env, "pipedrive"), {"Authorization": header})
    )


def test_replayed_pipedrive_delivery_is_a_duplicate_not_requeued(env):
    creds = env.basic["pipedrive"]
    auth = {"Authorization": _basic(creds["username"], creds["password"])}
    raw = _pd_body(env, "pipedrive")
    assert _pd(env, "pipedrive", raw, auth).status_code == 202
    assert _pd(env, "pipedrive", raw, auth).status_code == 200
    assert len(env.events()) == 1
    assert len(env.queued) == 1


def test_relay_signature_of_one_connection_does_not_open_another(env):
    from connector.pipedrive.webhooks import RELAY_SIGNATURE_HEADER, sign_relay_body

    with env.world.context.session() as session:
        store = env.world.context.store(session)
        for name, relay in (
            ("pipedrive", "relay-alpha-123456"),
            ("pipedrive-beta", "relay-beta-654321"),
        ):
            store.set_webhook_secret(store.get(name), {**env.basic[name], "relay_secret": relay})
    creds = env.basic["pipedrive"]
    raw = _pd_body(env, "pipedrive")
    auth = {"Authorization": _basic(creds["username"], creds["password"])}
    signed = sign_relay_body("relay-alpha-123456", raw)
    for forged in (
        sign_relay_body("relay-beta-654321", raw),  # the other connection's relay secret
        signed[:-2],  # truncated
        signed + "00",  # extended
        signed.replace("sha256=", "sha1="),
        "sha256=" + "0" * 64,
    ):
        _assert_refused(env, _pd(env, "pipedrive", raw, {**auth, RELAY_SIGNATURE_HEADER: forged}))
    assert _pd(env, "pipedrive", raw, {**auth, RELAY_SIGNATURE_HEADER: signed}).status_code == 202


# Constant-time comparison --------------------------------------------------------------------


@pytest.mark.parametrize(
    "verifier",
    [
        zoho_webhooks.verify_zoho_signature,
        pd_webhooks.verify_basic_auth,
        pd_webhooks.verify_relay_signature,
    ],
    ids=lambda f: f.__name__,
)
def test_verifiers_compare_secrets_in_constant_time(verifier):
    source = inspect.getsource(verifier)
    assert "hmac.compare_digest(" in source
    # No early-exit equality on the secret material itself.
    for shortcut in ("expected ==", "== expected", "expected !=", "!= expected", "password =="):
        assert shortcut not in source, shortcut


def test_basic_auth_runs_both_comparisons_whatever_fails_first():
    # Both parts are compared before deciding, so a wrong user costs what a wrong password costs:
    # the user comparison is not short-circuited with ``and``.
    source = inspect.getsource(pd_webhooks.verify_basic_auth)
    assert source.count("hmac.compare_digest(") == 2
    assert "user_ok and password_ok" not in source
