"""A seeded database and app for the status-page tests (unit and browser)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import redis

from connector.connections import token_fingerprint
from connector.context import AppContext
from connector.crypto import generate_key
from connector.db import upgrade
from connector.models import (
    AuditEntry,
    DeadLetter,
    InvoiceLink,
    Link,
    ReviewItem,
    SyncCursor,
    WebhookEvent,
    utcnow,
)
from connector.settings import Settings

PASSWORD = "correct horse battery staple"
PIPEDRIVE_TOKEN = "pd-api-token-0123456789abcdef"


def make_context(
    database_url: str,
    redis_client: redis.Redis | None = None,
    *,
    redis_url: str = "redis://127.0.0.1:6379/15",
    password: str = PASSWORD,
    extra: dict[str, str] | None = None,
) -> AppContext:
    """An AppContext over ``database_url`` (migrated); ``redis_client`` replaces the real one."""
    environ = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CONNECTOR_SECRET_KEY": generate_key(),
        "CONNECTOR_ADMIN_PASSWORD": password,
        "ZOHO_CLIENT_ID": "1000.client",
        "ZOHO_CLIENT_SECRET": "zoho-client-secret",
        "FLOWER_URL": "http://127.0.0.1:5555",
        **(extra or {}),
    }
    context = AppContext(settings=Settings.from_env(environ, dotenv_path=None))
    if redis_client is not None:
        context._redis = redis_client
    upgrade(database_url)
    return context


def seed(context: AppContext) -> dict[str, Any]:
    """Connections (one needing re-authorization), audit rows with diffs, review, dead letter."""
    from connector.pipedrive.limiter import PipedriveLimiter
    from connector.zoho.auth import TokenResponse
    from connector.zoho.service import build_token_manager

    now = utcnow()
    with context.session() as session:
        store = context.store(session)
        zoho = store.upsert(
            name="zoho-eu",
            system="zoho",
            external_id="20071234",
            auth_kind="oauth",
            credentials={"refresh_token": "1000.refresh"},
            display_name="Acme GmbH",
            data_center="eu",
            accounts_server="https://accounts.zoho.eu",
            api_base="https://www.zohoapis.eu",
        )
        stale = store.upsert(
            name="zoho-in",
            system="zoho",
            external_id="60012345",
            auth_kind="oauth",
            credentials={"refresh_token": "1000.revoked"},
            display_name="Acme India Pvt Ltd",
            data_center="in",
            accounts_server="https://accounts.zoho.in",
            api_base="https://www.zohoapis.in",
        )
        store.mark_needs_reauth(stale, "Zoho refused the refresh token (invalid_code)")
        pipedrive = store.upsert(
            name="pipedrive-acme",
            system="pipedrive",
            external_id="7001",
            auth_kind="api_token",
            credentials={"api_token": PIPEDRIVE_TOKEN},
            display_name="Acme Sales",
            api_base="https://acme.pipedrive.com",
            options={"plan": "growth", "seats": 3, "company_id": "7001", "timezone": "UTC"},
            webhook_secret={"username": "pd-user", "password": "pd-pass"},
        )
        store.mark_success(zoho)
        store.mark_success(pipedrive)
        zoho.last_webhook_at = now - dt.timedelta(minutes=4)
        pipedrive.last_webhook_at = now - dt.timedelta(minutes=11)
        ids = {"zoho": zoho.id, "stale": stale.id, "pipedrive": pipedrive.id}
        session.add(
            SyncCursor(
                connection_id=pipedrive.id,
                entity="organization",
                position=now - dt.timedelta(minutes=20),
                last_run_at=now - dt.timedelta(minutes=9),
            )
        )
        session.add(
            Link(
                zoho_connection_id=zoho.id,
                zoho_entity="contact",
                zoho_id="460000000026049",
                pipedrive_connection_id=pipedrive.id,
                pipedrive_entity="organization",
                pipedrive_id="812",
            )
        )
        session.add(
            InvoiceLink(
                zoho_connection_id=zoho.id,
                invoice_id="460000000031001",
                customer_id="460000000026049",
                pipedrive_connection_id=pipedrive.id,
                deal_id="3301",
                match_method="deal id field",
                invoice_number="INV-000123",
                status="sent",
                currency_code="EUR",
            )
        )
        rows = [
            (
                "contact",
                "460000000026049",
                "812",
                "update",
                "ok",
                "webhook",
                {
                    "name": {"before": "Acme", "after": "Acme GmbH"},
                    "phone": {"before": None, "after": "+49 30 123456"},
                },
                "",
                3,
                2,
            ),
            (
                "contact",
                "460000000026049",
                "812",
                "create",
                "ok",
                "backfill",
                {"name": {"before": None, "after": "Acme"}},
                "",
                5,
                3,
            ),
            (
                "invoice",
                "460000000031001",
                "3301",
                "update",
                "ok",
                "webhook",
                {"value": {"before": "100.00", "after": "250.00"}},
                "",
                10,
                2,
            ),
            (
                "contact_person",
                "460000000026077",
                "",
                "create",
                "failed",
                "webhook",
                {},
                "Pipedrive answered 400: email is invalid",
                2,
                1,
            ),
            ("invoice", "460000000031002", "", "match", "review", "schedule", {}, "", 20, 3),
        ]
        # Oldest first, so ids grow with time as they do in production.
        for age, row in reversed(list(enumerate(rows))):
            entity, zid, pid, action, outcome, trigger, diff, error, tokens, calls = row
            session.add(
                AuditEntry(
                    created_at=now - dt.timedelta(minutes=5 + age * 47),
                    trigger=trigger,
                    direction="zoho->pipedrive",
                    zoho_connection_id=zoho.id,
                    pipedrive_connection_id=pipedrive.id,
                    entity=entity,
                    zoho_id=zid,
                    pipedrive_id=pid,
                    action=action,
                    outcome=outcome,
                    reason=f"{action} {entity} {zid}",
                    diff=diff,
                    error=error,
                    tokens_spent=tokens,
                    api_calls=calls,
                    duration_ms=120 + age * 30,
                )
            )
        review = ReviewItem(
            kind="ambiguous_match",
            connection_id=zoho.id,
            entity="contact",
            record_id="460000000026099",
            summary="Contact 'Globex' matches 2 Pipedrive organizations",
            candidates=[{"id": 901, "name": "Globex Corp"}, {"id": 902, "name": "Globex Ltd"}],
        )
        session.add(review)
        letter = DeadLetter(
            task_name="workers.tasks.sync_record",
            args={"args": [zoho.id, "contact", "460000000026077"], "kwargs": {}},
            error="ValidationError: Pipedrive answered 400: email is invalid",
            attempts=5,
            failed_at=now - dt.timedelta(minutes=30),
        )
        session.add(letter)
        session.add(
            WebhookEvent(
                source="zoho",
                connection_id=zoho.id,
                dedupe_key="evt-1",
                event_kind="contact.updated",
                entity="contact",
                entity_id="460000000026049",
                status="done",
            )
        )
        session.flush()
        ids.update(review=review.id, dead_letter=letter.id)
        zoho_row = zoho
        pipedrive_row = pipedrive
    # A cached Zoho token (age and next refresh) and some Pipedrive spending (the gauge).
    build_token_manager(context, zoho_row).store_token(
        TokenResponse(access_token="1000.access", api_domain="https://www.zohoapis.eu")
    )
    limiter = PipedriveLimiter(
        redis=context.redis,
        company_key="7001",
        token_key=token_fingerprint(PIPEDRIVE_TOKEN),
        plan="growth",
        seats=3,
        auth_kind="api_token",
        timezone="UTC",
        reserve_fraction=0.10,
    )
    for _ in range(6):
        assert limiter.try_acquire(2000).granted
    del pipedrive_row
    return ids
