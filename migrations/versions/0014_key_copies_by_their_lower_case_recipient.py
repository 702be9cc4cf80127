"""key copies by their lower-case recipient, as follow-ups and CRM records name them

Follow-up firings and CRM records name a recipient in lower case as Python writes it,
which the database's lower() does not always match (SQLite lower-cases ASCII only;
PostgreSQL and Python differ on a few letters). A copy now keeps that spelling too.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("message_copies", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("recipient_key", sa.String(length=400), nullable=True)
        )
    copies = sa.table(
        "message_copies",
        sa.column("id", sa.Integer()),
        sa.column("recipient", sa.String()),
        sa.column("recipient_key", sa.String()),
    )
    connection = op.get_bind()
    rows = connection.execute(sa.select(copies.c.id, copies.c.recipient)).all()
    for copy_id, recipient in rows:
        connection.execute(
            copies.update()
            .where(copies.c.id == copy_id)
            .values(recipient_key=recipient.lower())
        )
    with op.batch_alter_table("message_copies", schema=None) as batch_op:
        batch_op.alter_column("recipient_key", nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("message_copies", schema=None) as batch_op:
        batch_op.drop_column("recipient_key")
