"""leases: owner and expiry on claimed webhook events, backfill chunk rows

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 00:00:00.000000

Work owned by a worker that died is taken over when its lease runs out (the reaper task),
instead of waiting for the broker's visibility timeout or the 10-minute sweep.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import connector.db

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=200), nullable=True))
        batch_op.add_column(
            sa.Column("lease_expires_at", connector.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            batch_op.f("ix_webhook_events_lease_expires_at"), ["lease_expires_at"], unique=False
        )

    op.create_table(
        "backfill_chunks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("chunk", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", connector.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", connector.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backfill_chunks")),
        sa.UniqueConstraint("run_id", "number", name=op.f("uq_backfill_chunks_run_id_number")),
    )
    with op.batch_alter_table("backfill_chunks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_backfill_chunks_status"), ["status"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_backfill_chunks_lease_expires_at"), ["lease_expires_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("backfill_chunks")
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_events_lease_expires_at"))
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("lease_owner")
