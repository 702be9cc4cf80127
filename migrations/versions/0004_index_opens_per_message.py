"""index opens per message: grading finds a message's first open without a scan

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_events_message_opens",
            ["message_id", "occurred_at"],
            unique=False,
            postgresql_where=sa.text("type = 'open'"),
            sqlite_where=sa.text("type = 'open'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_message_opens")
