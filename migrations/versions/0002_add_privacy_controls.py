"""add privacy controls: do-not-track list, indexes for the retention job

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "do_not_track",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("value", sa.String(length=320), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by_user_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["created_by_user_id"], ["users.id"], ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("org_id", "value"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        # Finds events whose raw details are still due to be cleared; shrinks as
        # the retention job works through them.
        batch_op.create_index(
            "ix_events_unpurged_time",
            ["occurred_at"],
            unique=False,
            postgresql_where=sa.text("raw_purged_at IS NULL"),
            sqlite_where=sa.text("raw_purged_at IS NULL"),
        )
        batch_op.create_index("ix_events_occurred_at", ["occurred_at"], unique=False)
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_messages_org_sent", ["org_id", "sent_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_org_sent")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_occurred_at")
        batch_op.drop_index("ix_events_unpurged_time")
    op.drop_table("do_not_track")
