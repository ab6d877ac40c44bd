"""What the sync needs to exist before it runs: the Pipedrive custom fields of the mapping."""

from __future__ import annotations

from connector.mapping.config import SyncConfig
from connector.pipedrive.fields import FieldSpec

__all__ = ["required_field_specs"]


def required_field_specs(config: SyncConfig) -> list[FieldSpec]:
    """Every Pipedrive custom field the configured mapping reads or writes, with its type."""
    specs: list[FieldSpec] = []
    for entity, fields in config.required_custom_fields().items():
        for field in fields:
            specs.append(FieldSpec(entity, field.name, field.field_type))
    return specs
