"""index clicks per message: burst grading reads recent clicks without the opens

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_events_message_clicks",
            ["message_id", "occurred_at"],
            unique=False,
            postgresql_where=sa.text("type = 'click'"),
            sqlite_where=sa.text("type = 'click'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_message_clicks")
