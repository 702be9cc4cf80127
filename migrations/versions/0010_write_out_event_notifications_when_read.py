"""write out event notifications when read: their title and body are no longer stored

A notification of an event is described from the event when it is listed or streamed,
so the worker stores only whom it is for and which event; a follow-up reminder keeps
its own words. Notifications stored before keep theirs, and read as they were.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.alter_column("title", existing_type=sa.String(300), nullable=True)
        batch_op.alter_column("body", existing_type=sa.String(500), nullable=True)


def downgrade() -> None:
    # What was left to be written out when read is written out here, crudely: the
    # application of this revision's time would show these words.
    op.execute(
        "UPDATE notifications SET title = 'Tracked email activity' "
        "WHERE title IS NULL"
    )
    op.execute("UPDATE notifications SET body = '' WHERE body IS NULL")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.alter_column("title", existing_type=sa.String(300), nullable=False)
        batch_op.alter_column("body", existing_type=sa.String(500), nullable=False)
