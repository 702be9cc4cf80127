"""remember when senders were last notified, so repeat opens and clicks stay quiet

A message remembers the time of the latest open its sender was notified of, and a link
the time of its latest notified click. The worker still stores and counts every
repeat, but one soon after the last notified one makes no new notification.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("open_notified_at", sa.DateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("links", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("click_notified_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("links", schema=None) as batch_op:
        batch_op.drop_column("click_notified_at")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("open_notified_at")
