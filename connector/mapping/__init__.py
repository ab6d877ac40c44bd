"""Pure mapping between Zoho Books and Pipedrive records: plain dicts in, dicts out.

No I/O, no clock, no Redis, no database, no HTTP. The configuration that drives the mapping is
described (with a full TOML example) in :mod:`connector.mapping.config`.
"""

from __future__ import annotations

from connector.mapping.config import (
    EXAMPLE_TOML,
    CustomFieldSpec,
    FieldMapping,
    SyncConfig,
    load_config,
    parse_config,
)
from connector.mapping.contacts import (
    ContactPlan,
    ContactPlanKind,
    classify_contact,
    individual_to_person,
    order_contact_persons,
    pipedrive_org_to_zoho_contact,
    pipedrive_person_to_zoho_contact,
    pipedrive_person_to_zoho_contact_person,
    route_organization,
    zoho_contact_to_organization,
    zoho_person_to_pipedrive,
)
from connector.mapping.deals import DealChoice, choose_deal, find_deal_id_in_invoice
from connector.mapping.fields import UpdatePlan, diff, fields_hash, mapped_view, plan_update
from connector.mapping.invoices import (
    DealInvoiceSummary,
    InvoiceSnapshot,
    aggregate_deal_invoices,
    deal_fields_payload,
    invoice_snapshot,
    payment_status,
)
from connector.mapping.normalize import normalize_email, normalize_name, normalize_phone

__all__ = [
    "EXAMPLE_TOML",
    "ContactPlan",
    "ContactPlanKind",
    "CustomFieldSpec",
    "DealChoice",
    "DealInvoiceSummary",
    "FieldMapping",
    "InvoiceSnapshot",
    "SyncConfig",
    "UpdatePlan",
    "aggregate_deal_invoices",
    "choose_deal",
    "classify_contact",
    "deal_fields_payload",
    "diff",
    "fields_hash",
    "find_deal_id_in_invoice",
    "individual_to_person",
    "invoice_snapshot",
    "load_config",
    "mapped_view",
    "normalize_email",
    "normalize_name",
    "normalize_phone",
    "order_contact_persons",
    "parse_config",
    "payment_status",
    "pipedrive_org_to_zoho_contact",
    "pipedrive_person_to_zoho_contact",
    "pipedrive_person_to_zoho_contact_person",
    "plan_update",
    "route_organization",
    "zoho_contact_to_organization",
    "zoho_person_to_pipedrive",
]
