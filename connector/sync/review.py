"""Resolving review items: link, create or ignore, each leaving an audit row."""

from __future__ import annotations

from connector.context import AppContext
from connector.errors import ConfigError
from connector.models import ReviewItem, utcnow
from connector.sync.audit import AuditLog, Trigger

__all__ = ["resolve_create", "resolve_ignore", "resolve_link"]


def _item(session: object, item_id: int) -> ReviewItem:
    found = session.get(ReviewItem, item_id)  # type: ignore[attr-defined]
    if found is None:
        raise ConfigError([f"no review item #{item_id}"])
    assert isinstance(found, ReviewItem)
    return found


def resolve_ignore(context: AppContext, item_id: int) -> str:
    """Close an item; the record stays unsynced until it changes again."""
    with context.session() as session:
        item = _item(session, item_id)
        item.status = "ignored"
        item.resolution = "ignored by a human"
        item.resolved_at = utcnow()
        # Organization items (routing, ambiguous name) name a Pipedrive record and company.
        pipedrive_side = item.entity == "organization"
        AuditLog(session, Trigger.REVIEW).record(
            direction="",
            entity=item.entity,
            action="ignore",
            outcome="skipped",
            zoho_connection_id=None if pipedrive_side else item.connection_id,
            pipedrive_connection_id=item.connection_id if pipedrive_side else None,
            zoho_id="" if pipedrive_side else item.record_id,
            pipedrive_id=item.record_id if pipedrive_side else "",
            reason=f"review #{item.id} ignored: {item.summary}",
        )
    return f"review item #{item_id} ignored"


def resolve_link(context: AppContext, item_id: int, pipedrive_id: str) -> str:
    """Link the record to the Pipedrive record a human chose, then sync it."""
    from connector.sync.engine import engine_session

    with context.session() as session:
        item = _item(session, item_id)
        kind, entity, record_id, connection_id = (
            item.kind,
            item.entity,
            item.record_id,
            item.connection_id,
        )
    with engine_session(context, trigger=Trigger.REVIEW) as engine:
        if entity == "invoice":
            stored = engine.links.invoice_or_new(connection_id, record_id)
            stored.deal_id = str(pipedrive_id)
            stored.pipedrive_connection_id = engine.pd.connection.id
            stored.match_method = "review"
            stored.status = stored.status or "pending"
            engine.session.flush()
            outcome = engine.sync_zoho_invoice(connection_id, record_id)
        elif entity in {"contact", "contact_person"}:
            engine.links.link(
                zoho_connection_id=connection_id,
                zoho_entity=entity,
                zoho_id=record_id,
                pipedrive_connection_id=engine.pd.connection.id,
                pipedrive_entity="organization" if entity == "contact" else "person",
                pipedrive_id=pipedrive_id,
            )
            outcome = (
                engine.sync_zoho_contact(connection_id, record_id)
                if entity == "contact"
                else "linked"
            )
        else:
            raise ConfigError([f"review items of kind {kind}/{entity} cannot be linked from here"])
        item = _item(engine.session, item_id)
        item.status = "resolved"
        item.resolution = f"linked to Pipedrive {pipedrive_id}"
        item.resolved_at = utcnow()
        engine.audit.record(
            direction="",
            entity=entity,
            action="link",
            outcome="ok",
            zoho_connection_id=connection_id,
            zoho_id=record_id,
            pipedrive_id=pipedrive_id,
            reason=f"review #{item_id}: linked by a human",
        )
    return f"review item #{item_id} linked to {pipedrive_id}: {outcome}"


def resolve_create(context: AppContext, item_id: int, zoho: str | None = None) -> str:
    """Create a new record instead of choosing among ambiguous candidates.

    For a ``routing`` item, ``zoho`` names the Zoho connection the Pipedrive organization is
    created in (and linked to).
    """
    from connector.sync.engine import SyncEngine, engine_session

    with context.session() as session:
        item = _item(session, item_id)
        kind, entity, record_id = item.kind, item.entity, item.record_id
        connection_id = item.connection_id
    if kind == "routing":
        return _create_routed(context, item_id, record_id, connection_id, zoho)
    if entity != "contact":
        raise ConfigError(["only ambiguous contact matches can be resolved by creating"])
    with engine_session(context, trigger=Trigger.REVIEW) as engine:
        original = engine._match_organization
        engine._match_organization = lambda contact: SyncEngine.Match()  # type: ignore[method-assign]
        try:
            outcome = engine.sync_zoho_contact(connection_id, record_id)
        finally:
            engine._match_organization = original  # type: ignore[method-assign]
        item = _item(engine.session, item_id)
        item.status = "resolved"
        item.resolution = "created a new record"
        item.resolved_at = utcnow()
    return f"review item #{item_id}: {outcome}"


def _create_routed(
    context: AppContext, item_id: int, org_id: str, pipedrive_id: int, zoho: str | None
) -> str:
    """Create an organization no routing rule placed in the Zoho connection a human chose."""
    from connector.sync.engine import engine_session

    if not zoho:
        raise ConfigError([f"review item #{item_id} needs the Zoho connection: add --zoho NAME"])
    with context.session() as session:
        target = context.store(session).get(zoho)
        if target.system != "zoho":
            raise ConfigError([f"connection {zoho!r} is not a Zoho connection"])
        target_id = target.id
    with engine_session(
        context, trigger=Trigger.REVIEW, pipedrive_connection=pipedrive_id
    ) as engine:
        outcome = engine.sync_pipedrive_organization(org_id, zoho_connection_id=target_id)
        item = _item(engine.session, item_id)
        item.status = "resolved"
        item.resolution = f"placed in {zoho} by a human: {outcome}"
        item.resolved_at = utcnow()
    return f"review item #{item_id}: Pipedrive organization {org_id} -> {zoho}: {outcome}"
