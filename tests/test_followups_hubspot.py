"""Follow-up tasks in HubSpot: the real client, the emulator, RQ workers, PostgreSQL."""
# ruff: noqa: F811 (fixtures imported from the HubSpot integration tests)

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from hubspot.crm import AssociationType

from app.followups.schedule import Schedule, due_date, working_morning
from emulators.hubspot import HubSpotEmulator
from tests.conftest import Account
from tests.test_followups import actions, firings, reminders, time_passes
from tests.test_hubspot_integration import (  # noqa: F401 (fixtures)
    config,
    emu,
    links,
    portal,
    send_opened,
    team,
    update_connection,
)
from workers import followups

Jobs = Callable[[], None]
TASK_RULE: dict[str, Any] = {
    "name": "Call back on first open",
    "scope": "org",
    "trigger": {"type": "first_open"},
    "actions": [
        {
            "type": "crm_task",
            "subject": "Call {recipient} about {subject}",
            "body": "Signal: {signal}",
            "due_days": 2,
            "priority": "high",
        },
        {"type": "reminder"},
    ],
}


def follow_up_tasks(emu: HubSpotEmulator) -> list[dict[str, Any]]:
    return [
        t
        for t in emu.objects("tasks")
        if t["properties"].get("hs_task_subject", "").startswith("Call ")
    ]


def test_a_rule_creates_one_open_task_on_contact_and_deal_owned_by_the_sender(
    app: Flask,
    emu: HubSpotEmulator,
    portal: dict[str, str],
    team: tuple[Account, Account],
    run_jobs: Jobs,
) -> None:
    admin, rep = team
    assert admin.post("/api/v1/rules", json=TASK_RULE).status_code == 201
    send_opened(rep, ["ada@buyer.test"], opens=2)
    run_jobs()
    followups.sweep()
    run_jobs()

    [task] = follow_up_tasks(emu)
    props = task["properties"]
    assert props["hs_task_subject"] == "Call ada@buyer.test about Pilot pricing"
    assert props["hs_task_status"] == "NOT_STARTED"
    assert props["hs_task_priority"] == "HIGH"
    assert props["hubspot_owner_id"] == portal["rep"]
    assert "Signal: the first counted open" in props["hs_task_body"]
    [firing] = firings(app)
    day = due_date(firing.fired_at, 2, Schedule())
    due = datetime.fromisoformat(props["hs_timestamp"].replace("Z", "+00:00"))
    assert due == working_morning(day, Schedule())
    assert links(emu, "tasks", task["id"]) == {
        ("contacts", portal["ada"], AssociationType.TASK_TO_CONTACT),
        ("deals", portal["deal"], AssociationType.TASK_TO_DEAL),
    }
    assert actions(app)[0].state == "done"


def test_rate_limited_tasks_wait_and_the_reminder_still_arrives(
    app: Flask,
    emu: HubSpotEmulator,
    portal: dict[str, str],
    team: tuple[Account, Account],
    run_jobs: Jobs,
) -> None:
    admin, rep = team
    admin.post("/api/v1/rules", json=TASK_RULE)
    emu.fault("rate_limit", times=50, path_contains="/crm/v3/objects/tasks")
    send_opened(rep, ["ada@buyer.test"])
    run_jobs()
    time_passes(app)
    followups.sweep()
    run_jobs()
    assert follow_up_tasks(emu) == []
    assert len(reminders(app)) == 1
    assert actions(app)[0].state == "pending"

    emu.clear_faults()
    update_connection(app, paused_until=datetime.now(UTC) - timedelta(seconds=1))
    _owed_tasks_are_old(app)
    followups.sweep()
    run_jobs()
    followups.sweep()
    run_jobs()
    assert len(follow_up_tasks(emu)) == 1
    assert actions(app)[0].state == "done"


def test_a_disconnected_crm_delays_tasks_and_loses_none(
    app: Flask,
    emu: HubSpotEmulator,
    portal: dict[str, str],
    team: tuple[Account, Account],
    run_jobs: Jobs,
) -> None:
    admin, rep = team
    admin.post("/api/v1/rules", json=TASK_RULE)
    update_connection(app, status="disconnected")
    send_opened(rep, ["ada@buyer.test"])
    run_jobs()
    _owed_tasks_are_old(app)
    followups.sweep()
    run_jobs()
    assert follow_up_tasks(emu) == []

    update_connection(app, status="connected")
    for _ in range(3):
        _owed_tasks_are_old(app)
        followups.sweep()
        run_jobs()
    assert len(follow_up_tasks(emu)) == 1


def _owed_tasks_are_old(app: Flask) -> None:
    """Tasks owed for a while: the sweep picks them up (past its grace period)."""
    from sqlalchemy import update

    from app.followups.models import FollowUpAction
    from tests.test_followups import db_of

    with db_of(app).begin() as session:
        session.execute(
            update(FollowUpAction)
            .where(FollowUpAction.kind == "crm_task")
            .values(due_at=datetime.now(UTC) - timedelta(minutes=5))
        )
