"""Whether a rule fires on a message, and what it then owes: pure functions of data."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app.followups.rules import describe_trigger, render
from app.followups.schedule import (
    Schedule,
    add_business_days,
    deliverable_at,
    due_date,
    local_date,
    working_morning,
)
from app.models import Event, Message


@dataclass(frozen=True)
class Signal:
    """What a prospect did (or did not do) that fires a rule."""

    at: datetime
    text: str
    event_id: int | None = None
    received_at: datetime | None = None


@dataclass(frozen=True)
class CountedEvent:
    """The facts of one counted event that triggers look at."""

    id: int
    type: str
    occurred_at: datetime
    received_at: datetime
    url: str | None = None


@dataclass(frozen=True)
class PlannedAction:
    """One action of a firing, ready to store."""

    kind: str
    due_at: datetime
    payload: dict[str, Any]


def recipient_of(recipients: Sequence[str]) -> str:
    """Who a signal is attributed to: the one recipient, or '' for several."""
    return recipients[0].lower() if len(recipients) == 1 else ""


def url_matches(pattern: str | None, url: str | None) -> bool:
    """A clicked link against a pattern: a glob (``*pricing*``) or a substring."""
    if not pattern:
        return True
    if url is None:
        return False
    pattern, url = pattern.lower(), url.lower()
    if any(char in pattern for char in "*?["):
        return fnmatch.fnmatchcase(url, pattern)
    return pattern in url


def _when(moment: datetime, schedule: Schedule) -> str:
    return moment.astimezone(schedule.zone).strftime("%a %d %b %H:%M")


def event_signal(
    trigger: dict[str, Any], events: Sequence[CountedEvent], schedule: Schedule
) -> Signal | None:
    """The event that makes an event trigger true, or None while it is not."""
    ordered = sorted(events, key=lambda e: (e.occurred_at, e.id))
    opens = [e for e in ordered if e.type == "open"]
    kind = trigger["type"]
    crossing: CountedEvent | None = None
    if kind == "first_open" and opens:
        crossing = opens[0]
    elif kind == "nth_open":
        crossing = _nth_open(opens, trigger, schedule)
    elif kind == "click":
        pattern = trigger.get("url_pattern")
        clicks = [
            e for e in ordered if e.type == "click" and url_matches(pattern, e.url)
        ]
        crossing = clicks[0] if clicks else None
    if crossing is None:
        return None
    text = f"{describe_trigger(trigger)}, {_when(crossing.occurred_at, schedule)}"
    if kind == "click" and crossing.url:
        text += f" ({crossing.url[:200]})"
    return Signal(crossing.occurred_at, text, crossing.id, crossing.received_at)


def _nth_open(
    opens: Sequence[CountedEvent], trigger: dict[str, Any], schedule: Schedule
) -> CountedEvent | None:
    count = int(trigger["count"])
    if not trigger.get("distinct_days"):
        return opens[count - 1] if len(opens) >= count else None
    days: set[Any] = set()
    for event in opens:
        days.add(local_date(event.occurred_at, schedule))
        if len(days) == count:
            return event
    return None


def no_open_deadline(
    trigger: dict[str, Any], sent_at: datetime, schedule: Schedule
) -> datetime:
    """When a message sent at ``sent_at`` has gone unopened for too long."""
    return add_business_days(sent_at, int(trigger["days"]), schedule)


def no_open_signal(
    trigger: dict[str, Any],
    sent_at: datetime,
    opens_before: Sequence[datetime],
    now: datetime,
    schedule: Schedule,
) -> Signal | None:
    """The deadline passed with no counted open before ``now``: the rule fires."""
    deadline = no_open_deadline(trigger, sent_at, schedule)
    if deadline > now or any(at < now for at in opens_before):
        return None
    return Signal(deadline, f"{describe_trigger(trigger)} ({_when(sent_at, schedule)})")


def plan_actions(
    actions: Sequence[dict[str, Any]],
    values: dict[str, str],
    fired_at: datetime,
    schedule: Schedule,
) -> list[PlannedAction]:
    """What a firing at ``fired_at`` owes, in the rule's order."""
    planned = []
    for action in actions:
        if action["type"] == "reminder":
            body = render(action.get("body") or "", values)
            payload = {"title": f"Follow up: {values['subject']}"[:300], "body": body}
            planned.append(
                PlannedAction("reminder", deliverable_at(fired_at, schedule), payload)
            )
        else:
            planned.append(_task(action, values, fired_at, schedule))
    return planned


def _task(
    action: dict[str, Any],
    values: dict[str, str],
    fired_at: datetime,
    schedule: Schedule,
) -> PlannedAction:
    day = due_date(fired_at, int(action["due_days"]), schedule)
    payload = {
        "subject": render(action["subject"], values)[:255],
        "body": render(action.get("body") or "", values)[:32000],
        "priority": action["priority"],
        "due_date": day.isoformat(),
        "due_at": working_morning(day, schedule).isoformat(),
    }
    return PlannedAction("crm_task", fired_at, payload)


def lookback_for(trigger: dict[str, Any]) -> timedelta:
    """How far before now a no-open rule's messages can have been sent and be due."""
    # Each business day spans at most three calendar days around a week end; the
    # margin covers a long holiday-free stretch of non-working days.
    return timedelta(days=int(trigger.get("days") or 1) * 3 + 10)


def counted_events_by_recipient(
    session: Session, message: Message
) -> list[tuple[str, list[CountedEvent]]]:
    """Whose counted events a rule weighs, and who a firing is for: each recipient's
    own copy's (``per_recipient``), or the message's as a whole, attributed to its one
    recipient or to nobody ('')."""
    events = session.scalars(
        select(Event)
        .where(Event.message_id == message.id, Event.counted.is_(True))
        .options(selectinload(Event.link))
    ).all()

    def counted(recipient: str | None) -> list[CountedEvent]:
        return [
            CountedEvent(
                e.id,
                e.type,
                e.occurred_at,
                e.received_at,
                e.link.url if e.link else None,
            )
            for e in events
            if recipient is None or e.recipient == recipient
        ]

    if not message.copies:
        return [(recipient_of(message.recipients), counted(None))]
    # A copy's events name its recipient as spelled in the copy.
    return [(c.recipient_key, counted(c.recipient)) for c in message.copies]


def spelled_as_sent(message: Message, recipient: str) -> str:
    """A firing's recipient (lower case; '' for everyone) as the message spells it."""
    if not recipient:
        return ", ".join(message.recipients)
    return next((r for r in message.recipients if r.lower() == recipient), recipient)
