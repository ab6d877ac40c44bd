"""marshmallow schemas for what Pipedrive sends us: v2 records and webhook payloads (v2 and v1).

Unknown keys are excluded everywhere: Pipedrive adds fields without notice and the sync reads
only what it maps. ``custom_fields`` stays a raw dict keyed by the 40-character field keys,
exactly as received (never case- or snake-converted). Ids in v2 webhook ``meta`` are strings
(reference §5.3); :class:`StringId` accepts numbers too, so v1 payloads load with the same code.
"""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, fields

__all__ = [
    "DealSchema",
    "OrganizationSchema",
    "PersonSchema",
    "StringId",
    "WebhookV1MetaSchema",
    "WebhookV1Schema",
    "WebhookV2MetaSchema",
    "WebhookV2Schema",
]


class StringId(fields.Field):  # type: ignore[type-arg]
    """An id that may arrive as a number or a string; always loaded as a string."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise self.make_error("invalid")
        text = str(value).strip()
        if not text:
            raise self.make_error("invalid")
        return text

    default_error_messages = {"invalid": "Not a valid id."}  # noqa: RUF012 - marshmallow API


class _Base(Schema):
    class Meta:
        unknown = EXCLUDE


class _Record(_Base):
    id = fields.Integer(required=True)
    owner_id = fields.Integer(allow_none=True)
    add_time = fields.DateTime(allow_none=True)
    update_time = fields.DateTime(allow_none=True)
    is_deleted = fields.Boolean(load_default=False)
    visible_to = fields.Raw(allow_none=True)
    label_ids = fields.List(fields.Integer(), allow_none=True)
    custom_fields = fields.Dict(keys=fields.String(), load_default=dict, allow_none=True)


class OrganizationSchema(_Record):
    """A v2 organization (``GET /api/v2/organizations/{id}``)."""

    name = fields.String(allow_none=True)
    address = fields.Dict(allow_none=True)


class PersonSchema(_Record):
    """A v2 person."""

    name = fields.String(allow_none=True)
    first_name = fields.String(allow_none=True)
    last_name = fields.String(allow_none=True)
    org_id = fields.Integer(allow_none=True)
    emails = fields.List(fields.Dict(), load_default=list, allow_none=True)
    phones = fields.List(fields.Dict(), load_default=list, allow_none=True)


class DealSchema(_Record):
    """A v2 deal."""

    title = fields.String(allow_none=True)
    value = fields.Decimal(allow_none=True, as_string=False)
    currency = fields.String(allow_none=True)
    org_id = fields.Integer(allow_none=True)
    person_id = fields.Integer(allow_none=True)
    pipeline_id = fields.Integer(allow_none=True)
    stage_id = fields.Integer(allow_none=True)
    status = fields.String(allow_none=True)
    is_archived = fields.Boolean(load_default=False)
    expected_close_date = fields.String(allow_none=True)


class WebhookV2MetaSchema(_Base):
    """``meta`` of a v2 webhook (§5.3): every id is a string."""

    id = StringId(required=True)
    action = fields.String(required=True)
    entity = fields.String(required=True)
    entity_id = StringId(required=True)
    company_id = StringId(allow_none=True)
    user_id = StringId(allow_none=True)
    webhook_id = StringId(allow_none=True)
    webhook_owner_id = StringId(allow_none=True)
    correlation_id = fields.String(allow_none=True)
    change_source = fields.String(allow_none=True)
    timestamp = fields.String(allow_none=True)
    version = fields.String(allow_none=True)
    host = fields.String(allow_none=True)
    attempt = fields.Integer(allow_none=True)
    is_bulk_edit = fields.Boolean(allow_none=True)
    type = fields.String(allow_none=True)
    merged_to_id = StringId(allow_none=True)
    merged_from_id = StringId(allow_none=True)


class WebhookV2Schema(_Base):
    """A v2 webhook body: ``data`` / ``previous`` / ``meta``."""

    data = fields.Dict(allow_none=True, load_default=None)
    previous = fields.Dict(allow_none=True, load_default=None)
    meta = fields.Nested(WebhookV2MetaSchema, required=True)


class WebhookV1MetaSchema(_Base):
    """``meta`` of a v1 webhook (§5.2): numeric ids, ``action`` like ``updated``."""

    v = fields.Integer(allow_none=True)
    action = fields.String(required=True)
    object = fields.String(required=True)
    id = StringId(allow_none=True)
    company_id = StringId(allow_none=True)
    user_id = StringId(allow_none=True)
    webhook_id = StringId(allow_none=True)
    host = fields.String(allow_none=True)
    change_source = fields.String(allow_none=True)
    timestamp = fields.Integer(allow_none=True)
    timestamp_micro = fields.Integer(allow_none=True)
    merged_to_id = StringId(allow_none=True)


class WebhookV1Schema(_Base):
    """A v1 webhook body: ``current`` / ``previous`` / ``meta`` / ``event`` / ``retry``."""

    v = fields.Integer(allow_none=True)
    event = fields.String(allow_none=True)
    retry = fields.Integer(allow_none=True)
    current = fields.Raw(allow_none=True, load_default=None)
    previous = fields.Raw(allow_none=True, load_default=None)
    meta = fields.Nested(WebhookV1MetaSchema, required=True)
