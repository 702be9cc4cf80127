"""Follow-up tasks in Salesforce: the emulated org over HTTPS, simple-salesforce, RQ."""
# ruff: noqa: F811 (fixtures imported from the Salesforce integration tests)

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from sqlalchemy import select, update

from app.db import Database
from app.followups.models import FollowUpAction
from app.followups.schedule import Schedule, due_date
from app.models import CrmConnection, CrmRecord
from emulators.salesforce import SalesforceEmulator
from tests.conftest import Account
from tests.test_followups import firings
from tests.test_salesforce_integration import (  # noqa: F401 (fixtures)
    admin,
    config,
    connected,
    db,
    hit,
    rep,
    salesforce,
    seed_deal,
    seed_rep,
    send,
    settle,
)
from workers import followups

RULE: dict[str, Any] = {
    "name": "Pricing clicked: call",
    "trigger": {"type": "click", "url_pattern": "*pricing*"},
    "actions": [
        {
            "type": "crm_task",
            "subject": "Call about {subject}",
            "due_days": 3,
            "priority": "high",
        }
    ],
}


def follow_ups(salesforce: SalesforceEmulator) -> list[dict[str, Any]]:
    return [t for t in salesforce.records("Task") if t["Subject"].startswith("Call")]


def test_a_click_rule_creates_one_open_task_due_in_business_days(
    app: Flask,
    connected: SalesforceEmulator,
    rep: Account,
    settle: Callable[..., None],
    db: Database,
) -> None:
    deal = seed_deal(connected, "dana@northwind.test")
    owner = seed_rep(connected)
    assert rep.post("/api/v1/rules", json=RULE).status_code == 201
    created = send(
        rep,
        subject="Renewal terms",
        to=["dana@northwind.test"],
        html='<p>Hi</p><a href="https://seller.test/pricing">Pricing</a>',
    )
    hit(rep.client, created["links"][0]["tracked_url"])
    settle()
    followups.sweep()
    settle()

    [task] = follow_ups(connected)
    assert task["Subject"] == "Call about Renewal terms"
    assert (task["Status"], task["Priority"]) == ("Not Started", "High")
    assert (task["WhoId"], task["WhatId"], task["OwnerId"]) == (
        deal["contact"],
        deal["opportunity"],
        owner,
    )
    [firing] = firings(app)
    assert task["ActivityDate"] == due_date(firing.fired_at, 3, Schedule()).isoformat()
    assert "seller.test/pricing" in task["Description"]
    with db.session_factory() as session:
        record = session.scalars(
            select(CrmRecord).where(CrmRecord.kind.like("followup:%"))
        ).one()
        assert (record.state, record.external_id) == ("created", task["Id"])
        assert record.marker in task["Description"]


def test_a_lost_answer_is_found_again_by_its_marker_not_created_twice(
    app: Flask,
    connected: SalesforceEmulator,
    rep: Account,
    settle: Callable[..., None],
    db: Database,
) -> None:
    seed_deal(connected, "dana@northwind.test")
    rep.post("/api/v1/rules", json=RULE)
    created = send(
        rep,
        subject="Lost answer",
        to=["dana@northwind.test"],
        html='<p>Hi</p><a href="https://seller.test/pricing">Pricing</a>',
    )
    hit(rep.client, created["links"][0]["tracked_url"])
    settle()
    [task] = follow_ups(connected)
    with db.begin() as session:  # as if the worker died before storing the id
        record = session.scalars(
            select(CrmRecord).where(CrmRecord.kind.like("followup:%"))
        ).one()
        record.external_id = None
        record.state = "pending"
    with db.begin() as session:
        session.execute(update(FollowUpAction).values(state="pending"))
    followups.create_tasks(_connection_id(db), _action_ids(db))
    assert [t["Id"] for t in follow_ups(connected)] == [task["Id"]]


def _connection_id(db: Database) -> int:
    with db.session_factory() as session:
        return session.scalars(select(CrmConnection.id)).one()


def _action_ids(db: Database) -> list[int]:
    with db.session_factory() as session:
        return list(session.scalars(select(FollowUpAction.id)))
