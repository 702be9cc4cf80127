"""index clicks per link, and the counted clicks a scanner burst may regrade

Burst grading asks of each link its first and last click in a few seconds, which an
index per link answers in two probes however busy the message is; regrading a burst
reads only the counted clicks (and the opens they implied) of its window.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

REGRADABLE = "counted IS true AND (type = 'click' OR implied IS true)"


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_message_clicks")
        batch_op.create_index(
            "ix_events_link_clicks",
            ["link_id", "occurred_at"],
            unique=False,
            postgresql_where=sa.text("type = 'click'"),
            sqlite_where=sa.text("type = 'click'"),
        )
        batch_op.create_index(
            "ix_events_message_regradable",
            ["message_id", "occurred_at"],
            unique=False,
            postgresql_where=sa.text(REGRADABLE),
            sqlite_where=sa.text(REGRADABLE),
        )


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_message_regradable")
        batch_op.drop_index("ix_events_link_clicks")
        batch_op.create_index(
            "ix_events_message_clicks",
            ["message_id", "occurred_at"],
            unique=False,
            postgresql_where=sa.text("type = 'click'"),
            sqlite_where=sa.text("type = 'click'"),
        )
