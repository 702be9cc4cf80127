"""add one copy per recipient: a pixel and links of its own for each recipient

A message registered with per_recipient gets a copy for each recipient, with a pixel
token and links of its own, so that the opens and clicks of several recipients are
told apart. The copy remembers when its recipient's opens were last told of.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "message_copies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("open_notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("forward_notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_copies_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_copies")),
        sa.UniqueConstraint("token", name=op.f("uq_message_copies_token")),
    )
    op.create_index(
        op.f("ix_message_copies_message_id"),
        "message_copies",
        ["message_id"],
        unique=False,
    )
    with op.batch_alter_table("links", schema=None) as batch_op:
        batch_op.add_column(sa.Column("copy_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_links_copy_id"), ["copy_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_links_copy_id_message_copies"),
            "message_copies",
            ["copy_id"],
            ["id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    with op.batch_alter_table("links", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_links_copy_id_message_copies"), type_="foreignkey"
        )
        batch_op.drop_index(batch_op.f("ix_links_copy_id"))
        batch_op.drop_column("copy_id")
    op.drop_index(op.f("ix_message_copies_message_id"), table_name="message_copies")
    op.drop_table("message_copies")
