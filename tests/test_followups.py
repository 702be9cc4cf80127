"""Follow-up rules in the workers: triggers, reminders, exactly once, durability.

Everything runs over PostgreSQL and Redis with real RQ workers; hits come in through
the tracking endpoints as a prospect's mail client would send them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from flask import Flask
from sqlalchemy import select, update

from app.db import Database
from app.followups.models import FollowUpAction, FollowUpFiring, FollowUpRule
from app.followups.schedule import Schedule, deliverable_at
from app.followups.triggers import CountedEvent, event_signal, url_matches
from app.models import Notification, User
from tests.conftest import Account, wait_for
from tests.test_tracking import hit
from workers import followups

Jobs = Callable[[], None]
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"  # noqa: E501
PRICING = '<p>Hi</p><a href="https://seller.test/pricing">pricing</a>'
PRICING += '<a href="https://seller.test/blog">blog</a>'


def db_of(app: Flask) -> Database:
    database: Database = app.extensions["trailmark.db"]
    return database


def add_rule(account: Account, trigger: dict[str, Any], **extra: Any) -> int:
    body = {
        "name": f"When {trigger['type']}",
        "trigger": trigger,
        "actions": [{"type": "reminder"}],
        **extra,
    }
    response = account.post("/api/v1/rules", json=body)
    assert response.status_code == 201, response.get_json()
    rule_id: int = response.get_json()["id"]
    return rule_id


def firings(app: Flask) -> list[FollowUpFiring]:
    with db_of(app).session_factory() as session:
        rows = list(session.scalars(select(FollowUpFiring).order_by(FollowUpFiring.id)))
        session.expunge_all()
        return rows


def actions(app: Flask) -> list[FollowUpAction]:
    with db_of(app).session_factory() as session:
        rows = list(session.scalars(select(FollowUpAction).order_by(FollowUpAction.id)))
        session.expunge_all()
        return rows


def reminders(app: Flask) -> list[Notification]:
    with db_of(app).session_factory() as session:
        rows = list(
            session.scalars(
                select(Notification)
                .where(Notification.event_id.is_(None))
                .order_by(Notification.id)
            )
        )
        session.expunge_all()
        return rows


def time_passes(app: Flask) -> None:
    """Every pending reminder falls due (as if the working morning had come)."""
    with db_of(app).begin() as session:
        session.execute(
            update(FollowUpAction)
            .where(FollowUpAction.state == "pending")
            .values(due_at=datetime.now(UTC) - timedelta(seconds=1))
        )


def set_timezone(app: Flask, email: str, zone: str) -> None:
    with db_of(app).begin() as session:
        session.execute(update(User).where(User.email == email).values(timezone=zone))


def zone_at_night() -> str:
    """A time zone where it is about two in the morning now: reminders must wait."""
    offset = (2 - datetime.now(UTC).hour) % 24
    offset = offset - 24 if offset > 12 else offset
    return f"Etc/GMT{-offset:+d}"  # POSIX spelling: Etc/GMT-3 is three hours ahead


def opened(account: Account, times: int = 1, **message: Any) -> dict[str, Any]:
    sent = account.send(html=PRICING, **message)
    for _ in range(times):
        hit(account.client, sent["pixel_url"])
    return sent


def test_first_counted_open_fires_once_and_the_reminder_waits_for_working_hours(
    app: Flask, account: Account, run_jobs: Jobs
) -> None:
    set_timezone(app, account.email, "Asia/Tokyo")
    add_rule(account, {"type": "first_open"})
    sent = opened(account, times=3, subject="Pilot pricing")
    run_jobs()

    [firing] = firings(app)
    assert firing.recipient == "prospect@example.com"
    assert firing.signal.startswith("the first counted open")
    [reminder] = actions(app)
    expected = deliverable_at(firing.fired_at, Schedule(timezone="Asia/Tokyo"))
    assert reminder.due_at == expected
    if expected > datetime.now(UTC) + timedelta(seconds=5):
        assert reminder.state == "pending" and reminders(app) == []

    time_passes(app)
    followups.sweep()
    run_jobs()
    [note] = reminders(app)
    assert note.title == "Follow up: Pilot pricing"
    assert "prospect@example.com" in note.body and "Pilot pricing" in note.body
    listed = account.get("/api/v1/notifications").get_json()["notifications"]
    assert listed[0]["title"] == "Follow up: Pilot pricing"
    assert listed[0]["message_id"] == sent["id"]


def test_retries_restarts_and_more_events_never_fire_a_rule_twice(
    app: Flask, account: Account, run_jobs: Jobs
) -> None:
    add_rule(account, {"type": "first_open"})
    sent = opened(account)
    run_jobs()
    assert len(firings(app)) == 1
    event_ids = [
        e["id"]
        for e in account.get(f"/api/v1/messages/{sent['id']}/events").get_json()[
            "events"
        ]
    ]

    # The same job again (an RQ retry), the sweep, and a second worker's run.
    assert followups.evaluate_events(event_ids) == 0
    followups.sweep()
    hit(account.client, sent["pixel_url"])
    run_jobs()
    time_passes(app)
    followups.sweep()
    followups.sweep()
    run_jobs()
    assert len(firings(app)) == 1
    assert len(actions(app)) == 1
    assert len(reminders(app)) == 1


def test_a_rule_edited_after_firing_does_not_fire_again_for_that_message(
    app: Flask, account: Account, run_jobs: Jobs
) -> None:
    rule_id = add_rule(account, {"type": "nth_open", "count": 2})
    sent = opened(account, times=2)
    run_jobs()
    assert len(firings(app)) == 1

    changed = account.client.patch(
        f"/api/v1/rules/{rule_id}",
        headers=account.headers,
        json={"trigger": {"type": "nth_open", "count": 3}, "name": "Third"},
    )
    assert changed.status_code == 200
    hit(account.client, sent["pixel_url"])
    run_jobs()
    followups.sweep()
    run_jobs()
    assert len(firings(app)) == 1
    # The firing keeps the rule as it stood.
    assert firings(app)[0].rule_snapshot["trigger"]["count"] == 2


def test_a_new_rule_does_not_fire_on_history_and_a_switched_off_rule_never_fires(
    app: Flask, account: Account, run_jobs: Jobs
) -> None:
    earlier = opened(account)
    run_jobs()
    add_rule(account, {"type": "first_open"})
    hit(account.client, earlier["pixel_url"])
    off = add_rule(account, {"type": "nth_open", "count": 2}, enabled=False)
    run_jobs()
    assert firings(app) == []

    opened(account, times=2)
    run_jobs()
    assert [f.rule_id for f in firings(app)] != [off]
    assert all(f.rule_id != off for f in firings(app))
    assert len(firings(app)) == 1


def test_nth_open_counts_only_counted_opens(
    app: Flask, account: Account, run_jobs: Jobs
) -> None:
    add_rule(account, {"type": "nth_open", "count": 2})
    sent = account.send(html=PRICING)
    # A scanner's HEAD request is graded and kept, but never counted.
    hit(account.client, sent["pixel_url"], method="HEAD")
    hit(account.client, sent["pixel_url"])
    run_jobs()
    assert firings(app) == []
    hit(account.client, sent["pixel_url"], headers={"User-Agent": GMAIL_PROXY})
    run_jobs()
    assert len(firings(app)) == 1


def test_a_click_on_a_matching_link_fires_and_other_links_do_not(
    app: Flask, account: Account, run_jobs: Jobs
) -> None:
    pattern_rule = add_rule(account, {"type": "click", "url_pattern": "*/pricing*"})
    any_link = add_rule(account, {"type": "click"})

    def click(label: str) -> None:
        # One click per message: several links at once would look like a scanner.
        sent = account.send(html=PRICING)
        link = next(link for link in sent["links"] if label in link["url"])
        hit(account.client, link["tracked_url"])
        run_jobs()

    click("blog")
    assert [f.rule_id for f in firings(app)] == [any_link]
    click("pricing")
    fired = firings(app)
    assert sorted(f.rule_id for f in fired[1:]) == sorted([pattern_rule, any_link])
    assert all("seller.test/pricing" in f.signal for f in fired[1:])


def test_nth_open_on_different_days_in_the_reps_time_zone() -> None:
    berlin = Schedule(timezone="Europe/Berlin")
    sent = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

    def opens(*hours: float) -> list[CountedEvent]:
        return [
            CountedEvent(
                i, "open", sent + timedelta(hours=h), sent + timedelta(hours=h)
            )
            for i, h in enumerate(hours)
        ]

    trigger = {"type": "nth_open", "count": 3, "distinct_days": True}
    # Three opens the same day are not three days.
    assert event_signal(trigger, opens(1, 2, 3), berlin) is None
    # 23:30 UTC on 1 December is already 2 December in Berlin, not in UTC.
    third = event_signal(trigger, opens(1, 14.5, 40), berlin)
    assert third is not None and third.event_id == 2
    assert event_signal(trigger, opens(1, 14.5, 40), Schedule()) is None
    assert event_signal(trigger, opens(1, 14.5, 30), berlin) is None
    plain = {"type": "nth_open", "count": 3, "distinct_days": False}
    assert event_signal(plain, opens(1, 2, 3), berlin) is not None


def test_url_patterns_are_globs_or_substrings_without_case() -> None:
    assert url_matches("*/pricing*", "https://seller.test/Pricing?x=1")
    assert url_matches("pricing", "https://seller.test/plans/pricing")
    assert not url_matches("*/pricing", "https://seller.test/pricing/eu")
    assert url_matches(None, "https://anything.test/")
    assert not url_matches("pricing", None)


def test_no_open_within_business_days_fires_from_the_periodic_check(
    app: Flask, account: Account, run_jobs: Jobs
) -> None:
    add_rule(account, {"type": "no_open", "days": 2})
    long_ago = (datetime.now(UTC) - timedelta(days=9)).isoformat()
    recent = datetime.now(UTC).isoformat()
    silent = account.send(html=PRICING, subject="Silent", sent_at=long_ago)
    read = account.send(html=PRICING, subject="Read", sent_at=long_ago)
    replied = account.send(html=PRICING, subject="Replied", sent_at=long_ago)
    account.send(html=PRICING, subject="Too new", sent_at=recent)
    hit(account.client, read["pixel_url"])
    account.post(f"/api/v1/messages/{replied['id']}/replied")
    run_jobs()

    # A rule set up today does not remind of messages that went quiet before it.
    followups.sweep()
    assert firings(app) == []

    with db_of(app).begin() as session:  # the rule has been there for a month
        session.execute(
            update(FollowUpRule).values(armed_at=datetime.now(UTC) - timedelta(days=30))
        )
    followups.sweep()
    run_jobs()
    followups.sweep()
    [firing] = firings(app)
    with db_of(app).session_factory() as session:
        assert session.get(FollowUpFiring, firing.id).message.subject == "Silent"  # type: ignore[union-attr]
    assert firing.signal.startswith("no counted open within 2 business days")
    assert silent["id"]


def test_marking_replied_cancels_pending_reminders(
    app: Flask, account: Account, run_jobs: Jobs
) -> None:
    set_timezone(app, account.email, zone_at_night())
    add_rule(account, {"type": "first_open"})
    sent = opened(account)
    run_jobs()
    with db_of(app).begin() as session:
        session.execute(
            update(FollowUpAction).values(due_at=datetime.now(UTC) + timedelta(hours=3))
        )
    answer = account.post(f"/api/v1/messages/{sent['id']}/replied").get_json()
    assert answer["cancelled"] == 1
    time_passes(app)
    followups.sweep()
    run_jobs()
    assert [a.state for a in actions(app)] == ["cancelled"]
    assert reminders(app) == []


def test_a_replied_message_fires_nothing_new(
    app: Flask, account: Account, run_jobs: Jobs
) -> None:
    add_rule(account, {"type": "nth_open", "count": 2})
    sent = opened(account)
    run_jobs()
    account.post(f"/api/v1/messages/{sent['id']}/replied")
    hit(account.client, sent["pixel_url"])
    run_jobs()
    followups.sweep()
    assert firings(app) == []


def test_jobs_lost_with_redis_are_rebuilt_from_the_database(
    app: Flask, account: Account, run_jobs: Jobs, redis_conn: redis.Redis
) -> None:
    add_rule(account, {"type": "first_open"})
    add_rule(account, {"type": "nth_open", "count": 2})
    sent = opened(account)
    app.extensions["trailmark.spool"].flush()
    # Only ingest runs; then Redis loses everything, the evaluation job included.
    from rq import Queue, SimpleWorker

    SimpleWorker([Queue("hits", connection=redis_conn)], connection=redis_conn).work(
        burst=True
    )
    redis_conn.flushdb()
    assert firings(app) == []

    followups.sweep()
    run_jobs()
    assert len(firings(app)) == 1
    # A scheduled reminder lost with Redis is delivered by the sweep when due.
    redis_conn.flushdb()
    time_passes(app)
    followups.sweep()
    assert len(reminders(app)) == 1

    hit(account.client, sent["pixel_url"])
    run_jobs()
    assert len(firings(app)) == 2


def test_an_organisation_rule_fires_for_every_rep_a_personal_rule_for_its_owner(
    app: Flask, make_account: Callable[..., Account], run_jobs: Jobs
) -> None:
    admin = make_account("admin@seller.test", admin=True)
    ann = make_account("ann@seller.test")
    bob = make_account("bob@seller.test")
    add_rule(admin, {"type": "first_open"}, scope="org")
    add_rule(ann, {"type": "nth_open", "count": 2})
    opened(ann, times=2)
    opened(bob, times=2)
    run_jobs()
    fired = firings(app)
    assert len(fired) == 3
    time_passes(app)
    followups.sweep()
    with db_of(app).session_factory() as session:
        owners = sorted(
            session.get(User, n.user_id).email  # type: ignore[union-attr]
            for n in session.scalars(
                select(Notification).where(Notification.event_id.is_(None))
            )
        )
    assert owners == ["ann@seller.test", "ann@seller.test", "bob@seller.test"]


def test_a_killed_worker_and_a_wiped_redis_lose_no_reminder(
    app: Flask,
    account: Account,
    redis_conn: redis.Redis,
    worker_process: Callable[..., Any],
) -> None:
    add_rule(account, {"type": "first_open"})
    opened(account, subject="Restarts")
    app.extensions["trailmark.spool"].flush()
    first = worker_process(CRM_SWEEP_INTERVAL="1")
    wait_for(lambda: firings(app), 40)
    first.kill()
    first.wait(10)
    redis_conn.flushdb()
    time_passes(app)

    worker_process(CRM_SWEEP_INTERVAL="1")
    wait_for(lambda: reminders(app), 40)
    assert [n.title for n in reminders(app)] == ["Follow up: Restarts"]
    assert len(firings(app)) == 1
