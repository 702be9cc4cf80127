"""Business days, quiet hours, time zones: when reminders go out and tasks fall due.

All functions take and return aware datetimes; they compute in the rep's local time
(wall-clock arithmetic: a day is a calendar day across DST changes), answer in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MONDAY_TO_FRIDAY = frozenset(range(5))


@dataclass(frozen=True)
class Schedule:
    """A rep's working week: which weekdays count, and the hours nothing is delivered.

    ``quiet_start``/``quiet_end`` may wrap midnight (20:00-08:00) or not (12:00-13:00);
    equal values mean there are no quiet hours.
    """

    timezone: str = "UTC"
    working_days: frozenset[int] = MONDAY_TO_FRIDAY
    quiet_start: time = time(20, 0)
    quiet_end: time = time(8, 0)

    def __post_init__(self) -> None:
        if not self.working_days or not self.working_days <= set(range(7)):
            raise ValueError("working_days must name at least one weekday, 0-6.")

    @property
    def zone(self) -> ZoneInfo:
        return zone_of(self.timezone)

    def is_working_day(self, day: date) -> bool:
        return day.weekday() in self.working_days

    def is_quiet(self, moment: time) -> bool:
        start, end = self.quiet_start, self.quiet_end
        if start == end:
            return False
        if start < end:
            return start <= moment < end
        return moment >= start or moment < end


def zone_of(name: str) -> ZoneInfo:
    """The IANA zone by name; an unknown name falls back to UTC."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _wall(day: date, at: time, zone: ZoneInfo) -> datetime:
    """A local wall-clock moment as UTC; a time skipped by DST moves on by the gap."""
    local = datetime.combine(day, at, tzinfo=zone)
    return local.astimezone(UTC)


def next_working_day(day: date, schedule: Schedule) -> date:
    """The first working day strictly after ``day``."""
    day += timedelta(days=1)
    while not schedule.is_working_day(day):
        day += timedelta(days=1)
    return day


def add_business_days(moment: datetime, days: int, schedule: Schedule) -> datetime:
    """The same local time ``days`` working days later.

    A moment on a non-working day counts from the start (00:00) of the next working
    day, so something sent on Saturday is one business day old at the end of Monday.
    """
    if days < 0:
        raise ValueError("days must be zero or more.")
    zone = schedule.zone
    local = moment.astimezone(zone)
    day, at = local.date(), local.timetz().replace(tzinfo=None)
    if not schedule.is_working_day(day):
        day, at = next_working_day(day, schedule), time(0, 0)
    for _ in range(days):
        day = next_working_day(day, schedule)
    return _wall(day, at, zone)


def due_date(moment: datetime, days: int, schedule: Schedule) -> date:
    """The local date a task made at ``moment`` falls due, ``days`` working days on."""
    return add_business_days(moment, days, schedule).astimezone(schedule.zone).date()


def working_morning(day: date, schedule: Schedule) -> datetime:
    """When the working day ``day`` begins: the end of the quiet hours (UTC)."""
    start = schedule.quiet_end if schedule.quiet_start != schedule.quiet_end else time()
    return _wall(day, start, schedule.zone)


def deliverable_at(moment: datetime, schedule: Schedule) -> datetime:
    """The earliest moment at or after ``moment`` that is a working day outside quiet
    hours: a reminder due at night or on a weekend waits for the next working morning.
    """
    zone = schedule.zone
    candidate = moment.astimezone(zone)
    # A week of non-working days and a quiet night each take one step.
    for _ in range(16):
        day = candidate.date()
        if not schedule.is_working_day(day):
            candidate = _wall(day + timedelta(days=1), time(0), zone).astimezone(zone)
            continue
        clock = candidate.timetz().replace(tzinfo=None)
        if schedule.is_quiet(clock):
            end = schedule.quiet_end
            wake_day = day if clock < end else day + timedelta(days=1)
            candidate = _wall(wake_day, end, zone).astimezone(zone)
            continue
        return candidate.astimezone(UTC)
    raise ValueError("The schedule leaves no time to deliver anything.")


def local_date(moment: datetime, schedule: Schedule) -> date:
    """The rep's calendar date at ``moment``."""
    return moment.astimezone(schedule.zone).date()
