"""Follow-up rules, the ledger of their firings, and the actions each firing owes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base
from app.models import Message, UTCDateTime, utcnow


class FollowUpRule(Base):
    """When to follow up and how: one trigger, one or more actions.

    An organisation rule (``user_id`` is None) applies to every rep of the
    organisation; a personal rule to its owner's messages only.
    """

    __tablename__ = "follow_up_rules"
    __table_args__ = (Index("ix_follow_up_rules_org", "org_id", "enabled"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # {"type": "first_open" | "nth_open" | "click" | "no_open", ...}; see rules.py.
    trigger: Mapped[dict[str, Any]] = mapped_column(JSON)
    # [{"type": "reminder"} | {"type": "crm_task", ...}]; see rules.py.
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # Signals older than this never fire the rule: set on creation, when it is
    # switched back on, and when its trigger changes.
    armed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class FollowUpFiring(Base):
    """The ledger: a rule fired for one (message, recipient), once and for all.

    The unique key is what makes a rule fire exactly once, however many events,
    retries and restarts; the rule as it stood is kept, so an edit after firing
    changes nothing for this message.
    """

    __tablename__ = "follow_up_firings"
    __table_args__ = (UniqueConstraint("rule_id", "message_id", "recipient"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(
        ForeignKey("follow_up_rules.id", ondelete="CASCADE")
    )
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    # The recipient the signal is attributed to; '' when the message went to
    # several people and one pixel cannot tell them apart.
    recipient: Mapped[str] = mapped_column(String(320))
    signal: Mapped[str] = mapped_column(String(500))
    rule_snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    message: Mapped[Message] = relationship()
    actions: Mapped[list[FollowUpAction]] = relationship(
        back_populates="firing", order_by="FollowUpAction.position"
    )


class FollowUpAction(Base):
    """One thing a firing owes: a reminder to deliver or a CRM task to create."""

    __tablename__ = "follow_up_actions"
    __table_args__ = (
        UniqueConstraint("firing_id", "position"),
        Index("ix_follow_up_actions_due", "state", "due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    firing_id: Mapped[int] = mapped_column(
        ForeignKey("follow_up_firings.id", ondelete="CASCADE")
    )
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # reminder, crm_task
    # Reminders: when to deliver (working hours). Tasks: when to create (at once).
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # pending, done, cancelled (the message was replied to)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    # What to write: title/body of a reminder; subject/body/priority/due of a task.
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    firing: Mapped[FollowUpFiring] = relationship(back_populates="actions")
