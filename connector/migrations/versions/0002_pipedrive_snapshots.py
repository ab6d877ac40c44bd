"""pipedrive snapshots: mapped fields per link, invoice fields and currency per deal

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 00:00:00.000000

Existing links get no snapshot: their next write reads the Pipedrive record first, as before,
and stores one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import connector.db

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("links", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pipedrive_snapshot", sa.JSON(), nullable=True))

    op.create_table(
        "deal_snapshots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pipedrive_connection_id", sa.Integer(), nullable=False),
        sa.Column("deal_id", sa.String(length=64), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("currency", sa.String(length=10), nullable=False),
        sa.Column("custom_fields", sa.JSON(), nullable=False),
        sa.Column("pipedrive_modified_at", connector.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", connector.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["pipedrive_connection_id"],
            ["connections.id"],
            name=op.f("fk_deal_snapshots_pipedrive_connection_id_connections"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deal_snapshots")),
        sa.UniqueConstraint(
            "pipedrive_connection_id",
            "deal_id",
            name=op.f("uq_deal_snapshots_pipedrive_connection_id_deal_id"),
        ),
    )


def downgrade() -> None:
    op.drop_table("deal_snapshots")
    with op.batch_alter_table("links", schema=None) as batch_op:
        batch_op.drop_column("pipedrive_snapshot")
