"""ui sessions: signed-in status-page sessions, ended server-side on logout

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 00:00:00.000000

Sessions opened before this migration carry no session id and must log in again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import connector.db

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ui_sessions",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", connector.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", connector.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_ui_sessions")),
    )
    with op.batch_alter_table("ui_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ui_sessions_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ui_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ui_sessions_expires_at"))
    op.drop_table("ui_sessions")
