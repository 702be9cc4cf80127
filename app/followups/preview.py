"""What a rule would have done on the last 30 days of a rep's messages.

The preview replays the rule over stored counted events, ignoring when it was armed
and what already fired, so a rep can judge a rule before switching it on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.followups.schedule import Schedule
from app.followups.triggers import (
    CountedEvent,
    Signal,
    counted_events_by_recipient,
    event_signal,
    no_open_signal,
    plan_actions,
    spelled_as_sent,
)
from app.models import Message, User

PREVIEW_DAYS = 30
PREVIEW_LIMIT = 500


@dataclass(frozen=True)
class PreviewRow:
    message_public_id: str
    subject: str
    recipient: str
    fired_at: datetime
    signal: str
    outcomes: list[str]


def preview(
    session: Session, user: User, rule: dict[str, Any], now: datetime | None = None
) -> tuple[int, list[PreviewRow]]:
    """(messages looked at, what the rule would have done), newest first."""
    now = now or datetime.now(UTC)
    schedule = Schedule(timezone=user.timezone or "UTC")
    messages = session.scalars(
        select(Message)
        .where(
            Message.user_id == user.id,
            Message.sent_at >= now - timedelta(days=PREVIEW_DAYS),
        )
        .order_by(Message.sent_at.desc())
        .limit(PREVIEW_LIMIT)
    ).all()
    rows = []
    for message in messages:
        for recipient, events in counted_events_by_recipient(session, message):
            signal = _signal(rule["trigger"], message, events, now, schedule)
            if signal is not None:
                rows.append(_row(rule, message, recipient, signal, schedule))
    return len(messages), rows


def _signal(
    trigger: dict[str, Any],
    message: Message,
    events: list[CountedEvent],
    now: datetime,
    schedule: Schedule,
) -> Signal | None:
    if message.replied_at is not None:
        now = min(now, message.replied_at)
    if trigger["type"] != "no_open":
        signal = event_signal(trigger, events, schedule)
        return signal if signal and signal.at <= now else None
    opens = [e.occurred_at for e in events if e.type == "open"]
    deadline_check = no_open_signal(trigger, message.sent_at, [], now, schedule)
    if deadline_check is None or any(at < deadline_check.at for at in opens):
        return None
    return deadline_check


def _row(
    rule: dict[str, Any],
    message: Message,
    recipient: str,
    signal: Signal,
    schedule: Schedule,
) -> PreviewRow:
    values = {
        "subject": message.subject,
        "recipient": spelled_as_sent(message, recipient),
        "signal": signal.text,
    }
    planned = plan_actions(rule["actions"], values, signal.at, schedule)
    outcomes = []
    for action, plan in zip(rule["actions"], planned, strict=True):
        if plan.kind == "reminder":
            at = plan.due_at.astimezone(schedule.zone).strftime("%a %d %b %H:%M")
            outcomes.append(f"reminder at {at}: {plan.payload['body']}")
        else:
            outcomes.append(
                f"CRM task \u201c{plan.payload['subject']}\u201d, "
                f"{action['priority']} priority, due {plan.payload['due_date']}"
            )
    return PreviewRow(
        message_public_id=message.public_id,
        subject=message.subject,
        recipient=values["recipient"],
        fired_at=signal.at,
        signal=signal.text,
        outcomes=outcomes,
    )
