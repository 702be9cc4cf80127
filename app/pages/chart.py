"""A small chart of opens over time, drawn as inline SVG on the server."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Event, as_utc

MAX_BARS = 30


@dataclass(frozen=True)
class Bar:
    label: str
    counted: int
    other: int
    x: float
    counted_height: float
    other_height: float


def _bucket(moment: datetime, by_hour: bool) -> datetime:
    if by_hour:
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def opens_of(session: Session, message_id: int) -> list[tuple[datetime, bool]]:
    """When each open of a message happened, and whether it counted (clicks' implied
    opens left out): the chart's input, read as plain rows however many there are."""
    rows = session.execute(
        select(Event.occurred_at, Event.counted).where(
            Event.message_id == message_id,
            Event.type == "open",
            Event.implied.is_(False),
        )
    )
    return [(occurred_at, counted) for occurred_at, counted in rows]


def open_bars(
    opens: list[tuple[datetime, bool]], sent_at: datetime, now: datetime | None = None
) -> list[Bar]:
    """Opens per hour (first two days) or per day, counted and graded-out apart."""
    now = now or datetime.now(UTC)
    start = as_utc(sent_at) or now
    by_hour = now - start <= timedelta(days=2)
    step = timedelta(hours=1) if by_hour else timedelta(days=1)
    counted: Counter[datetime] = Counter()
    other: Counter[datetime] = Counter()
    for occurred_at, was_counted in opens:
        moment = _bucket(as_utc(occurred_at) or now, by_hour)
        (counted if was_counted else other)[moment] += 1
    first = _bucket(start, by_hour)
    slots = []
    moment = max(first, _bucket(now, by_hour) - step * (MAX_BARS - 1))
    while moment <= _bucket(now, by_hour):
        slots.append(moment)
        moment += step
    tallest = max([counted[s] + other[s] for s in slots] + [1])
    width = 100 / max(len(slots), 1)
    fmt = "%H:00" if by_hour else "%b %d"
    return [
        Bar(
            label=slot.strftime(fmt),
            counted=counted[slot],
            other=other[slot],
            x=i * width,
            counted_height=60 * counted[slot] / tallest,
            other_height=60 * other[slot] / tallest,
        )
        for i, slot in enumerate(slots)
    ]
