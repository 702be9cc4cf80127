"""The retention job: forget raw hit details, then whole messages, when they are due.

Each organisation chooses two limits. After ``raw_retention_days`` an event loses
its address, network prefix and user agent (it keeps its type, time, grade, place
and device, so counts and timelines stay right) and gets ``raw_purged_at``. After
``event_retention_days`` messages sent before then are deleted with everything
hanging off them, and so are events that happened before then.

Work is done in short transactions over ranges of ids, so no statement holds its
locks for long and ingestion carries on beside it. Running twice is harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, func, or_, select, update
from sqlalchemy.orm import Session

from app import signin
from app.db import Database
from app.messages import delete_messages, delete_notifications_of
from app.models import Event, Message, Organization
from workers.context import current

logger = logging.getLogger(__name__)

BATCH_SIZE = 5000
# How often the workers queue this job (seconds), and how long one run may take.
INTERVAL = 3600
TIMEOUT = 3 * 3600


def run_retention(
    batch_size: int = BATCH_SIZE, now: datetime | None = None
) -> dict[str, int]:
    """Apply every organisation's retention limits; return the rows changed."""
    db = current().db
    now = now or datetime.now(UTC)
    totals = {"raw_cleared": 0, "events_deleted": 0, "messages_deleted": 0}
    with db.session_factory() as session:
        orgs = session.execute(
            select(
                Organization.id,
                Organization.raw_retention_days,
                Organization.event_retention_days,
            ).order_by(Organization.id)
        ).all()
    for org_id, raw_days, event_days in orgs:
        if event_days:
            cutoff = now - timedelta(days=event_days)
            deleted = delete_old(db, org_id, cutoff, batch_size)
            totals["events_deleted"] += deleted["events"]
            totals["messages_deleted"] += deleted["messages"]
        if raw_days:
            cutoff = now - timedelta(days=raw_days)
            totals["raw_cleared"] += clear_raw(db, org_id, cutoff, now, batch_size)
    logger.info(
        "retention done orgs=%d raw_cleared=%d events_deleted=%d messages_deleted=%d",
        len(orgs),
        totals["raw_cleared"],
        totals["events_deleted"],
        totals["messages_deleted"],
    )
    return totals


def _bounds(db: Database, column: Any, *where: ColumnElement[bool]) -> range:
    """The id range, in steps of one batch, that holds every row matching ``where``."""
    with db.session_factory() as session:
        low, high = session.execute(
            select(func.min(column), func.max(column)).where(*where)
        ).one()
    return range(0) if low is None else range(low, high + 1)


def _org_messages(org_id: int) -> Select[Any]:
    return select(Message.id).where(Message.org_id == org_id)


def clear_raw(
    db: Database, org_id: int, cutoff: datetime, now: datetime, batch_size: int
) -> int:
    """Clear address, prefix and user agent of the org's events before cutoff."""
    due = (
        Event.raw_purged_at.is_(None),
        Event.occurred_at < cutoff,
        Event.message_id.in_(_org_messages(org_id)),
    )
    ids = _bounds(db, Event.id, *due)
    cleared = 0
    for start in range(ids.start, ids.stop, batch_size):
        with db.begin() as session:
            result = session.execute(
                update(Event)
                .where(Event.id >= start, Event.id < start + batch_size, *due)
                .values(ip=None, ip_prefix=None, user_agent=None, raw_purged_at=now)
                .execution_options(synchronize_session=False)
            )
            cleared += getattr(result, "rowcount", 0)
    if cleared:
        logger.info(
            "retention cleared raw details org_id=%s events=%d", org_id, cleared
        )
    return cleared


def delete_old(
    db: Database, org_id: int, cutoff: datetime, batch_size: int
) -> dict[str, int]:
    """Delete the organisation's messages sent, and events that happened, before cutoff.

    Notifications, links and CRM ledger rows go with them.
    """
    old_messages = _org_messages(org_id).where(Message.sent_at < cutoff)
    due = (
        Event.message_id.in_(_org_messages(org_id)),
        or_(Event.occurred_at < cutoff, Event.message_id.in_(old_messages)),
    )
    kept = _kept_with_old_events(db, org_id, cutoff)
    events = _delete_events(db, due, batch_size)
    messages = _delete_messages(
        db, (Message.org_id == org_id, Message.sent_at < cutoff), batch_size
    )
    if kept:
        _recount(db, kept)
    if events or messages:
        logger.info(
            "retention deleted org_id=%s events=%d messages=%d",
            org_id,
            events,
            messages,
        )
    return {"events": events, "messages": messages}


def _kept_with_old_events(db: Database, org_id: int, cutoff: datetime) -> list[int]:
    """Messages that stay but lose some events (their clocks disagreed); rare."""
    with db.session_factory() as session:
        query = (
            select(Message.id)
            .join(Event, Event.message_id == Message.id)
            .where(
                Message.org_id == org_id,
                Message.sent_at >= cutoff,
                Event.occurred_at < cutoff,
            )
            .distinct()
        )
        return list(session.scalars(query))


Where = tuple[ColumnElement[bool], ...]


def _in_id_ranges(
    db: Database,
    column: Any,
    where: Where,
    batch_size: int,
    remove: Callable[[Session, Where], int],
) -> int:
    """Run ``remove`` over the matching rows a range of ids at a time, one short
    transaction each; return how many it removed."""
    ids = _bounds(db, column, *where)
    removed = 0
    for start in range(ids.start, ids.stop, batch_size):
        batch = (column >= start, column < start + batch_size, *where)
        with db.begin() as session:
            removed += remove(session, batch)
    return removed


def _delete_events(db: Database, where: Where, batch_size: int) -> int:
    """Delete matching events with their notifications."""

    def remove(session: Session, batch: Where) -> int:
        delete_notifications_of(session, select(Event.id).where(*batch))
        result = session.execute(
            delete(Event).where(*batch).execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0))

    return _in_id_ranges(db, Event.id, where, batch_size, remove)


def _delete_messages(db: Database, where: Where, batch_size: int) -> int:
    """Delete matching messages with all that hangs off them."""

    def remove(session: Session, batch: Where) -> int:
        found = list(session.scalars(select(Message.id).where(*batch)))
        return delete_messages(session, found)["messages"]

    return _in_id_ranges(db, Message.id, where, batch_size, remove)


def _recount(db: Database, message_ids: list[int]) -> None:
    from workers.ingest import recount_message

    with db.begin() as session:
        for message_id in message_ids:
            recount_message(session, message_id)


def prune_sign_ins() -> None:
    """Delete page sessions past their time and wrong passwords past their window."""
    with current().db.begin() as session:
        signin.prune(session)
