"""Business days, quiet hours and time zones, across week ends and DST changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from app.followups.schedule import (
    Schedule,
    add_business_days,
    deliverable_at,
    due_date,
    working_morning,
)

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
TOKYO = "Asia/Tokyo"


def local(zone: str, *parts: int) -> datetime:
    return datetime(*parts, tzinfo=ZoneInfo(zone))  # type: ignore[misc]


def as_local(moment: datetime, zone: str) -> datetime:
    return moment.astimezone(ZoneInfo(zone))


@pytest.mark.parametrize(
    ("sent", "days", "expected"),
    [
        # Wednesday 2026-12-02 10:00 in Berlin.
        ((2026, 12, 2, 10, 0), 1, (2026, 12, 3, 10, 0)),
        ((2026, 12, 2, 10, 0), 2, (2026, 12, 4, 10, 0)),
        # Two business days from Thursday skip the week end.
        ((2026, 12, 3, 10, 0), 2, (2026, 12, 7, 10, 0)),
        ((2026, 12, 4, 15, 0), 1, (2026, 12, 7, 15, 0)),
        ((2026, 12, 4, 15, 0), 5, (2026, 12, 11, 15, 0)),
        ((2026, 12, 4, 15, 0), 6, (2026, 12, 14, 15, 0)),
        # Sent on a Saturday or a Sunday: counting starts on Monday at midnight.
        ((2026, 12, 5, 10, 0), 1, (2026, 12, 8, 0, 0)),
        ((2026, 12, 6, 23, 30), 1, (2026, 12, 8, 0, 0)),
        ((2026, 12, 5, 10, 0), 0, (2026, 12, 7, 0, 0)),
        # Zero days on a working day is the moment itself.
        ((2026, 12, 2, 10, 0), 0, (2026, 12, 2, 10, 0)),
    ],
)
def test_business_days_skip_the_week_end(
    sent: tuple[int, ...], days: int, expected: tuple[int, ...]
) -> None:
    schedule = Schedule(timezone=BERLIN)
    due = add_business_days(local(BERLIN, *sent), days, schedule)
    assert as_local(due, BERLIN) == local(BERLIN, *expected)
    assert due.tzinfo is UTC


def test_business_days_keep_the_wall_clock_across_spring_forward() -> None:
    # Europe moves to summer time on Sunday 2026-03-29: the wall clock stays 09:00,
    # so one fewer hour passes in UTC.
    schedule = Schedule(timezone=BERLIN)
    due = add_business_days(local(BERLIN, 2026, 3, 27, 9, 0), 1, schedule)
    assert as_local(due, BERLIN) == local(BERLIN, 2026, 3, 30, 9, 0)
    assert due == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)
    assert local(BERLIN, 2026, 3, 27, 9, 0).astimezone(UTC).hour == 8


def test_business_days_keep_the_wall_clock_across_fall_back() -> None:
    # The United States leave daylight time on Sunday 2026-11-01.
    schedule = Schedule(timezone=NEW_YORK)
    due = add_business_days(local(NEW_YORK, 2026, 10, 30, 17, 0), 1, schedule)
    assert due == datetime(2026, 11, 2, 22, 0, tzinfo=UTC)


def test_the_same_instant_is_a_week_end_in_one_zone_and_a_friday_in_another() -> None:
    # Friday 2026-12-04 23:30 UTC is already Saturday morning in Tokyo.
    instant = datetime(2026, 12, 4, 23, 30, tzinfo=UTC)
    in_tokyo = add_business_days(instant, 1, Schedule(timezone=TOKYO))
    in_new_york = add_business_days(instant, 1, Schedule(timezone=NEW_YORK))
    assert as_local(in_tokyo, TOKYO) == local(TOKYO, 2026, 12, 8, 0, 0)
    assert as_local(in_new_york, NEW_YORK) == local(NEW_YORK, 2026, 12, 7, 18, 30)


def test_a_custom_working_week_counts_only_its_days() -> None:
    sunday_to_thursday = Schedule(
        timezone="Asia/Jerusalem", working_days=frozenset({6, 0, 1, 2, 3})
    )
    thursday = local("Asia/Jerusalem", 2026, 12, 3, 12, 0)
    due = add_business_days(thursday, 1, sunday_to_thursday)
    assert as_local(due, "Asia/Jerusalem") == local("Asia/Jerusalem", 2026, 12, 6, 12)


def test_negative_days_and_an_empty_week_are_refused() -> None:
    with pytest.raises(ValueError, match="zero or more"):
        add_business_days(datetime.now(UTC), -1, Schedule())
    with pytest.raises(ValueError, match="at least one weekday"):
        Schedule(working_days=frozenset())


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        # Tuesday 14:00: a working day outside quiet hours goes out at once.
        ((2026, 12, 1, 14, 0), (2026, 12, 1, 14, 0)),
        # Tuesday 21:15: waits for Wednesday morning.
        ((2026, 12, 1, 21, 15), (2026, 12, 2, 8, 0)),
        # Tuesday 06:59: waits for the same morning.
        ((2026, 12, 1, 6, 59), (2026, 12, 1, 8, 0)),
        # Exactly the end and the start of quiet hours.
        ((2026, 12, 1, 8, 0), (2026, 12, 1, 8, 0)),
        ((2026, 12, 1, 20, 0), (2026, 12, 2, 8, 0)),
        ((2026, 12, 1, 19, 59), (2026, 12, 1, 19, 59)),
        # Friday evening and the week end wait for Monday morning.
        ((2026, 12, 4, 20, 30), (2026, 12, 7, 8, 0)),
        ((2026, 12, 5, 11, 0), (2026, 12, 7, 8, 0)),
        ((2026, 12, 6, 23, 59), (2026, 12, 7, 8, 0)),
    ],
)
def test_reminders_wait_for_the_next_working_morning(
    moment: tuple[int, ...], expected: tuple[int, ...]
) -> None:
    schedule = Schedule(timezone=BERLIN)
    at = deliverable_at(local(BERLIN, *moment), schedule)
    assert as_local(at, BERLIN) == local(BERLIN, *expected)


def test_quiet_hours_follow_the_reps_zone_not_the_servers() -> None:
    # 13:00 UTC on a Tuesday is 08:00 in New York (deliver) and 22:00 in Tokyo.
    instant = datetime(2026, 12, 1, 13, 0, tzinfo=UTC)
    assert deliverable_at(instant, Schedule(timezone=NEW_YORK)) == instant
    in_tokyo = deliverable_at(instant, Schedule(timezone=TOKYO))
    assert as_local(in_tokyo, TOKYO) == local(TOKYO, 2026, 12, 2, 8, 0)


def test_quiet_hours_within_a_day_and_none_at_all() -> None:
    lunch = Schedule(timezone=BERLIN, quiet_start=time(12), quiet_end=time(13))
    at = deliverable_at(local(BERLIN, 2026, 12, 1, 12, 30), lunch)
    assert as_local(at, BERLIN) == local(BERLIN, 2026, 12, 1, 13, 0)
    always = Schedule(timezone=BERLIN, quiet_start=time(0), quiet_end=time(0))
    late = local(BERLIN, 2026, 12, 1, 23, 30)
    assert deliverable_at(late, always) == late.astimezone(UTC)
    saturday = deliverable_at(local(BERLIN, 2026, 12, 5, 9), always)
    assert as_local(saturday, BERLIN) == local(BERLIN, 2026, 12, 7, 0, 0)


def test_the_working_morning_after_a_dst_night_is_local_eight() -> None:
    schedule = Schedule(timezone=BERLIN)
    # Saturday 2026-03-28 21:00 (winter time) waits for Monday 08:00 summer time.
    at = deliverable_at(local(BERLIN, 2026, 3, 28, 21, 0), schedule)
    assert at == datetime(2026, 3, 30, 6, 0, tzinfo=UTC)
    assert working_morning(date(2026, 10, 26), schedule) == datetime(
        2026, 10, 26, 7, 0, tzinfo=UTC
    )


def test_a_quiet_end_inside_the_dst_gap_moves_on_by_the_gap() -> None:
    night = Schedule(timezone=BERLIN, quiet_start=time(1), quiet_end=time(2, 30))
    at = deliverable_at(local(BERLIN, 2026, 3, 30, 1, 30), night)
    assert as_local(at, BERLIN) == local(BERLIN, 2026, 3, 30, 2, 30)
    # On Sunday 2026-03-29 02:30 does not exist in Berlin; Monday is unaffected,
    # and a day with the gap gives 03:30 summer time.
    gap_day = Schedule(
        timezone=BERLIN,
        working_days=frozenset(range(7)),
        quiet_start=time(1),
        quiet_end=time(2, 30),
    )
    at = deliverable_at(local(BERLIN, 2026, 3, 29, 1, 30), gap_day)
    assert at == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_task_due_dates_are_local_dates() -> None:
    schedule = Schedule(timezone=NEW_YORK)
    # Friday 2026-12-04 22:00 in New York is already Saturday in UTC.
    friday_night = local(NEW_YORK, 2026, 12, 4, 22, 0)
    assert due_date(friday_night, 1, schedule) == date(2026, 12, 7)
    assert due_date(friday_night, 0, schedule) == date(2026, 12, 4)
    assert due_date(friday_night, 3, schedule) == date(2026, 12, 9)


def test_an_unknown_time_zone_falls_back_to_utc() -> None:
    schedule = Schedule(timezone="Mars/Olympus_Mons")
    moment = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
    assert add_business_days(moment, 1, schedule) == datetime(
        2026, 12, 2, 14, 0, tzinfo=UTC
    )
