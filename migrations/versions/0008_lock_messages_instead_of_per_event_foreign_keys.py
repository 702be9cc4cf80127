"""lock messages instead of per-event foreign keys: stored hits no longer check each row

Every event and every notification the worker stores used to make PostgreSQL check its
message, link, event and user one row at a time, most of the database's work per hit.
A batch of hits now locks its messages once (FOR KEY SHARE), and whatever deletes a
message locks it first and deletes what hangs off it itself, so no event or
notification outlives its message. Reminders (notifications without an event) get an
index of their own for those deletes.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# (table, column, referred table, ON DELETE)
DROPPED = (
    ("events", "message_id", "messages", "CASCADE"),
    ("events", "link_id", "links", "SET NULL"),
    ("notifications", "user_id", "users", "CASCADE"),
    ("notifications", "message_id", "messages", "CASCADE"),
    ("notifications", "event_id", "events", "CASCADE"),
)
# SQLite keeps these constraints unnamed: batch mode names them by this convention.
SQLITE_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def _name(table: str, column: str, referred: str) -> str:
    if op.get_bind().dialect.name == "sqlite":
        return f"fk_{table}_{column}_{referred}"
    return f"{table}_{column}_fkey"


def upgrade() -> None:
    for table in ("events", "notifications"):
        with op.batch_alter_table(table, naming_convention=SQLITE_NAMES) as batch_op:
            for owner, column, referred, _ in DROPPED:
                if owner == table:
                    batch_op.drop_constraint(
                        _name(table, column, referred), type_="foreignkey"
                    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index(
            "ix_notifications_reminders",
            ["message_id"],
            unique=False,
            postgresql_where=sa.text("event_id IS NULL"),
            sqlite_where=sa.text("event_id IS NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_reminders")
    for table in ("events", "notifications"):
        with op.batch_alter_table(table, naming_convention=SQLITE_NAMES) as batch_op:
            for owner, column, referred, ondelete in DROPPED:
                if owner == table:
                    batch_op.create_foreign_key(
                        _name(table, column, referred),
                        referred,
                        [column],
                        ["id"],
                        ondelete=ondelete,
                    )
