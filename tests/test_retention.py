"""The retention job over a table of 100,000 events, through a real RQ worker."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select, text

from app.db import Database
from app.models import Event, Message, Notification, Organization, User
from tests.conftest import Account
from workers.retention import run_retention

MESSAGES = 100
EVENTS_PER_MESSAGE = 1000


def _ids(database: Database, email: str) -> tuple[int, int]:
    with database.session_factory() as session:
        user = session.scalars(select(User).where(User.email == email)).one()
        return user.org_id, user.id


def bulk_insert(database: Database, org_id: int, user_id: int) -> None:
    """Message i was sent an hour short of i*2 days ago; 1,000 events within 17 min."""
    with database.engine.begin() as conn:
        conn.execute(
            text(
                """
                INSERT INTO messages (public_id, org_id, user_id, token, subject, "to",
                    cc, bcc, sent_at, created_at, track_opens, track_links,
                    open_count, click_count)
                SELECT 'm' || i, :org, :user, 't' || i, 'Hello', '["p@x.test"]',
                    '[]', '[]', now() - i * interval '2 days' + interval '1 hour',
                    now(), true, true,
                    1000, 0
                FROM generate_series(0, :last) AS i
                """
            ),
            {"org": org_id, "user": user_id, "last": MESSAGES - 1},
        )
        conn.execute(
            text(
                """
                INSERT INTO events (hit_id, message_id, type, occurred_at,
                    received_at, classification, counted, reasons, implied,
                    possible_forward, recipient, method, ip, user_agent, ip_prefix,
                    country, city, device_type)
                SELECT 'h' || g, m.id, 'open', m.sent_at + (g % :per) * interval '1 s',
                    now(), 'human', true, '[]', false, false, 'p@x.test', 'GET',
                    '89.160.20.0', 'Mozilla/5.0', '89.160.20.0/24', 'Sweden',
                    'Linköping', 'desktop'
                FROM generate_series(0, :total - 1) AS g
                JOIN messages m ON m.public_id = 'm' || (g / :per)
                """
            ),
            {"per": EVENTS_PER_MESSAGE, "total": MESSAGES * EVENTS_PER_MESSAGE},
        )
        conn.execute(
            text(
                """
                INSERT INTO notifications (user_id, message_id, event_id, created_at,
                    title, body)
                SELECT :user, e.message_id, e.id, now(), 'p@x.test opened', ''
                FROM events e WHERE e.hit_id LIKE 'h%000'
                """
            ),
            {"user": user_id},
        )
        # A follow-up reminder on every message: notifications without an event.
        conn.execute(
            text(
                """
                INSERT INTO notifications (user_id, message_id, event_id, created_at,
                    title, body)
                SELECT :user, m.id, NULL, now(), 'Follow up: Hello', 'p@x.test'
                FROM messages m
                """
            ),
            {"user": user_id},
        )


@pytest.fixture
def filled(make_account: Callable[..., Account], database: Database) -> tuple[int, int]:
    account = make_account("admin@seller.test", admin=True)
    org_id, user_id = _ids(database, account.email)
    bulk_insert(database, org_id, user_id)
    return org_id, user_id


def _count(database: Database, *where: object) -> int:
    with database.session_factory() as session:
        return int(session.scalar(select(func.count(Event.id)).where(*where)) or 0)


def _set_limits(
    database: Database, org_id: int, raw: int | None, days: int | None
) -> None:
    with database.begin() as session:
        org = session.get(Organization, org_id)
        assert org is not None
        org.raw_retention_days = raw
        org.event_retention_days = days


def test_retention_on_100000_events_clears_and_deletes_what_is_due(
    app: Flask,
    database: Database,
    filled: tuple[int, int],
    run_jobs: Callable[[], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    org_id, _user_id = filled
    assert _count(database) == 100_000
    _set_limits(database, org_id, raw=90, days=150)
    caplog.set_level(logging.INFO, logger="workers.retention")

    app.extensions["trailmark.jobs"].enqueue(run_retention)
    run_jobs()

    # Messages 76..99 were sent more than 150 days ago: gone, with their events.
    assert _count(database) == 76_000
    with database.session_factory() as session:
        assert session.scalar(select(func.count(Message.id))) == 76
        orphans = select(func.count(Notification.id)).where(
            Notification.event_id.not_in(select(Event.id))
            | Notification.message_id.not_in(select(Message.id))
        )
        assert session.scalar(orphans) == 0
        # Messages 1..75 each keep the notification of their event h1000, h2000, ...
        events_notified = Notification.event_id.is_not(None)
        count = select(func.count(Notification.id))
        assert session.scalar(count.where(events_notified)) == 75
        # ... and every message kept (0..75) its reminder.
        assert session.scalar(count.where(Notification.event_id.is_(None))) == 76
    # Messages 46..75 are older than 90 days: counts and grades stay, raw goes.
    purged = _count(database, Event.raw_purged_at.is_not(None))
    assert purged == 30_000
    assert (
        _count(database, Event.raw_purged_at.is_not(None), Event.ip.is_not(None)) == 0
    )
    assert (
        _count(
            database,
            Event.raw_purged_at.is_not(None),
            Event.user_agent.is_(None),
            Event.ip_prefix.is_(None),
            Event.classification == "human",
            Event.city == "Linköping",
        )
        == 30_000
    )
    assert _count(database, Event.ip == "89.160.20.0") == 46_000
    done = [
        r.getMessage() for r in caplog.records if "retention done" in r.getMessage()
    ]
    assert done == [
        "retention done orgs=1 raw_cleared=30000 events_deleted=24000 "
        "messages_deleted=24"
    ]


def test_retention_twice_changes_nothing_the_second_time(
    app: Flask, database: Database, filled: tuple[int, int]
) -> None:
    org_id, _user_id = filled
    _set_limits(database, org_id, raw=90, days=None)
    with app.app_context():
        first = run_retention()
        second = run_retention()
    assert first == {"raw_cleared": 54_000, "events_deleted": 0, "messages_deleted": 0}
    assert second == {"raw_cleared": 0, "events_deleted": 0, "messages_deleted": 0}
    assert _count(database) == 100_000


def test_no_limits_keep_everything(
    app: Flask, database: Database, filled: tuple[int, int]
) -> None:
    org_id, _user_id = filled
    _set_limits(database, org_id, raw=None, days=None)
    with app.app_context():
        assert run_retention() == {
            "raw_cleared": 0,
            "events_deleted": 0,
            "messages_deleted": 0,
        }
    assert _count(database, Event.ip.is_not(None)) == 100_000


def test_a_kept_message_that_loses_old_events_is_recounted(
    app: Flask, database: Database, make_account: Callable[..., Account]
) -> None:
    account = make_account("admin@seller.test", admin=True)
    org_id, user_id = _ids(database, account.email)
    now = datetime.now(UTC)
    with database.begin() as session:
        message = Message(
            public_id="skewed",
            org_id=org_id,
            user_id=user_id,
            token="skewed",
            subject="Clock skew",
            to=["p@x.test"],
            sent_at=now - timedelta(days=1),
            open_count=2,
        )
        session.add(message)
        session.flush()
        for hit_id, at in (("old", now - timedelta(days=40)), ("new", now)):
            session.add(
                Event(
                    hit_id=hit_id,
                    message_id=message.id,
                    type="open",
                    occurred_at=at,
                    classification="human",
                    counted=True,
                )
            )
    _set_limits(database, org_id, raw=None, days=30)
    with app.app_context():
        assert run_retention()["events_deleted"] == 1
    with database.session_factory() as session:
        kept = session.scalars(select(Message)).one()
        assert kept.open_count == 1
