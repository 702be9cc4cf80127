"""A person's data: export all held about an address, erase it, report the rest."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.db import Database
from app.messages import hold_messages
from app.models import CrmConnection, CrmRecord, Event, Message, Notification, User
from app.privacy.rules import DO_NOT_TRACK_REASON
from tests.conftest import Account, locks_waited_for
from tests.test_tracking import hit

ANN = "ann@example.com"
HTML = '<p>Hi</p><a href="https://seller.test/offer">offer</a>'


def tables_holding(database: Database, needle: str) -> list[str]:
    """Tables with a row whose text holds ``needle``, in any letter case."""
    found = []
    with database.engine.connect() as conn:
        tables = conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        ).scalars()
        for table in tables:
            # The table names come from the catalogue, not from input.
            sql = f'SELECT count(*) FROM "{table}" t WHERE t::text ILIKE :n'  # noqa: S608
            if conn.execute(text(sql), {"n": f"%{needle}%"}).scalar():
                found.append(table)
    return sorted(found)


@pytest.fixture
def admin(make_account: Callable[..., Account]) -> Account:
    return make_account("admin@seller.test", admin=True)


@pytest.fixture
def story(
    admin: Account, database: Database, run_jobs: Callable[[], None]
) -> dict[str, str]:
    """Ann alone on one message, with Bob on another; Bob alone on a third."""
    alone = admin.send(html=HTML, to=["Ann@Example.com"], subject="Just for Ann")
    shared = admin.send(
        html=HTML, to=["bob@example.net"], cc=[ANN], bcc=["carol@example.org"]
    )
    bobs = admin.send(html=HTML, to=["bob@example.net"], subject="Just for Bob")
    for created in (alone, shared, bobs):
        hit(admin.client, created["pixel_url"])
        hit(admin.client, created["links"][0]["tracked_url"])
    run_jobs()
    _ledger(database, alone["id"], shared["id"])
    admin.post("/api/v1/privacy/do-not-track", json={"value": ANN})
    return {"alone": alone["id"], "shared": shared["id"], "bobs": bobs["id"]}


def _ledger(database: Database, alone: str, shared: str) -> None:
    """What the CRM sync would have written: created, attempted, unmatched rows."""
    with database.begin() as session:
        admin = session.scalars(select(User)).one()
        connection = CrmConnection(
            org_id=admin.org_id, provider="hubspot", external_account_id="portal-1"
        )
        session.add(connection)
        session.flush()
        ids = {
            m.public_id: m.id
            for m in session.scalars(
                select(Message).where(Message.public_id.in_([alone, shared]))
            )
        }
        rows = [
            (ids[alone], "sent", ANN, "email", "101", "created", True),
            (ids[alone], "open", ANN, None, None, "pending", True),
            (ids[alone], "click", ANN, None, None, "no_match", False),
            (ids[shared], "sent", ANN, "email", "102", "created", True),
            (ids[shared], "sent", "bob@example.net", "email", "103", "created", True),
        ]
        for message_id, kind, recipient, object_type, external_id, state, tried in rows:
            session.add(
                CrmRecord(
                    connection_id=connection.id,
                    message_id=message_id,
                    kind=kind,
                    recipient=recipient,
                    object_type=object_type,
                    external_id=external_id,
                    marker=f"marker-{message_id}-{kind}-{recipient}",
                    state=state,
                    attempted_at=datetime.now(UTC) if tried else None,
                    match={"email": recipient},
                )
            )


def test_export_holds_messages_events_and_crm_records_of_the_address(
    admin: Account, story: dict[str, str]
) -> None:
    response = admin.get("/api/v1/privacy/export", query_string={"address": ANN})
    assert response.status_code == 200
    data = response.get_json()
    assert data["address"] == ANN
    by_id = {m["id"]: m for m in data["messages"]}
    assert set(by_id) == {story["alone"], story["shared"]}

    alone = by_id[story["alone"]]
    assert alone["only_recipient"] is True and alone["subject"] == "Just for Ann"
    assert [e["type"] for e in alone["events"]] == ["open", "click"]
    assert alone["events"][0]["ip"] == "89.160.20.0"
    assert alone["events"][0]["user_agent"].startswith("Mozilla/5.0")
    assert alone["links"] == ["https://seller.test/offer"]
    opened, clicked = alone["notifications"]  # Ann's counted open and click
    assert opened["title"] == "Ann@Example.com opened “Just for Ann”"
    assert clicked["title"] == "Ann@Example.com clicked a link in “Just for Ann”"
    assert clicked["body"].startswith("seller.test/offer")
    assert {(r["external_id"], r["state"]) for r in alone["crm_records"]} == {
        ("101", "created"),
        (None, "pending"),
        (None, "no_match"),
    }

    shared = by_id[story["shared"]]
    assert shared["only_recipient"] is False
    assert shared["bcc"] == []  # Carol's blind copy is not Ann's to see
    assert shared["events"] == []  # nothing is attributed to one of two people
    assert [e["type"] for e in shared["events_of_any_recipient"]] == ["open", "click"]
    assert "ip" not in shared["events_of_any_recipient"][0]
    assert [r["external_id"] for r in shared["crm_records"]] == ["102"]
    assert data["do_not_track"][0]["value"] == ANN


def test_export_command_writes_the_same_json(
    app: Flask, admin: Account, story: dict[str, str], tmp_path: Any
) -> None:
    out = tmp_path / "ann.json"
    result = app.test_cli_runner().invoke(
        args=["privacy", "export", "ANN@example.com", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert {m["id"] for m in data["messages"]} == {story["alone"], story["shared"]}
    bad = app.test_cli_runner().invoke(args=["privacy", "export", "not-an-address"])
    assert bad.exit_code != 0 and "email address" in bad.output


def _erase_report_ids(report: dict[str, Any]) -> set[tuple[str, str | None]]:
    return {(r["provider"], r["external_id"]) for r in report["crm_records"]}


def test_erase_leaves_nothing_but_what_the_report_lists(
    admin: Account, database: Database, story: dict[str, str]
) -> None:
    assert "messages" in tables_holding(database, ANN)
    response = admin.post("/api/v1/privacy/erase", json={"address": ANN})
    assert response.status_code == 200
    report = response.get_json()
    assert report["messages_deleted"] == 1 and report["messages_updated"] == 1
    assert report["events_deleted"] == 2 and report["events_cleared"] == 2
    # Records in the CRM: the created ones, and one attempted whose id never came
    # back (found there by its marker); the unmatched row never reached the CRM.
    assert _erase_report_ids(report) == {
        ("hubspot", "101"),
        ("hubspot", None),
        ("hubspot", "102"),
    }
    pending = next(r for r in report["crm_records"] if r["external_id"] is None)
    assert pending["marker"] and pending["account"] == "portal-1"
    assert [e["value"] for e in report["kept"]["do_not_track"]] == [ANN]

    # Held here afterwards: only the do-not-track entry the report lists as kept.
    assert tables_holding(database, ANN) == ["do_not_track"]
    with database.session_factory() as session:
        messages = {m.public_id: m for m in session.scalars(select(Message))}
        assert set(messages) == {story["shared"], story["bobs"]}
        shared = messages[story["shared"]]
        assert shared.to == ["bob@example.net"] and shared.cc == []
        assert shared.bcc == ["carol@example.org"]
        shared_events = session.scalars(
            select(Event).where(Event.message_id == shared.id)
        ).all()
        assert len(shared_events) == 2
        for event in shared_events:
            assert event.ip is None and event.user_agent is None
            assert event.city is None and event.raw_purged_at is not None
            assert event.classification  # the grade stays
        bobs = messages[story["bobs"]]
        bob_events = session.scalars(
            select(Event).where(Event.message_id == bobs.id)
        ).all()
        assert all(e.ip == "89.160.20.0" for e in bob_events)  # not Ann's
        ledger = session.scalars(select(CrmRecord)).all()
        assert [(r.recipient, r.external_id) for r in ledger] == [
            ("bob@example.net", "103")
        ]
    again = admin.post("/api/v1/privacy/erase", json={"address": ANN}).get_json()
    assert again["messages_deleted"] == 0 and again["crm_records"] == []


def test_erase_command_reports_the_crm_records_left(
    app: Flask, database: Database, story: dict[str, str]
) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["privacy", "erase", ANN, "--yes"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert _erase_report_ids(report) == {
        ("hubspot", "101"),
        ("hubspot", None),
        ("hubspot", "102"),
    }
    assert tables_holding(database, ANN) == ["do_not_track"]


def test_erase_asks_before_it_deletes(
    app: Flask, database: Database, story: dict[str, str]
) -> None:
    result = app.test_cli_runner().invoke(args=["privacy", "erase", ANN], input="n\n")
    assert result.exit_code != 0
    assert "messages" in tables_holding(database, ANN)


def test_erase_names_an_unknown_organisation_before_asking(
    app: Flask, database: Database, story: dict[str, str]
) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["privacy", "erase", ANN, "--org", "Nope"], input="y\n")
    assert result.exit_code != 0
    assert "no organisation named Nope" in result.output
    assert "Erase everything" not in result.output
    export = runner.invoke(args=["privacy", "export", ANN, "--org", "SELLER"])
    assert export.exit_code == 0, export.output  # any case names the organisation
    assert "messages" in tables_holding(database, ANN)


def test_person_endpoints_are_for_admins_and_validate_the_address(
    admin: Account, make_account: Callable[..., Account]
) -> None:
    rep = make_account("rep@seller.test")
    export = rep.get("/api/v1/privacy/export", query_string={"address": ANN})
    assert export.status_code == 403
    assert "administrator" in export.get_json()["message"]
    assert rep.post("/api/v1/privacy/erase", json={"address": ANN}).status_code == 403
    missing = admin.get("/api/v1/privacy/export")
    assert missing.status_code == 422 and "address" in missing.get_json()["fields"]
    bad = admin.post("/api/v1/privacy/erase", json={"address": "nope", "x": 1})
    assert bad.status_code == 422
    assert set(bad.get_json()["fields"]) == {"address", "x"}


def test_erase_through_the_api_stays_within_the_organisation(
    admin: Account, make_account: Callable[..., Account], database: Database
) -> None:
    other = make_account("admin@other.test", org="Other", admin=True)
    other.send(html=HTML, to=[ANN])
    report = admin.post("/api/v1/privacy/erase", json={"address": ANN}).get_json()
    assert report["messages_deleted"] == 0
    assert tables_holding(database, ANN) == ["do_not_track", "messages"]
    assert other.send(html=HTML, to=[ANN])["tracking"]["opens"] is True


def test_erasing_a_person_keeps_them_untracked(admin: Account) -> None:
    admin.send(html=HTML, to=[ANN])
    report = admin.post("/api/v1/privacy/erase", json={"address": ANN}).get_json()
    kept = report["kept"]["do_not_track"]
    assert [(e["value"], e["kind"]) for e in kept] == [(ANN, "address")]

    later = admin.send(html=HTML, to=["ANN@Example.COM"])

    assert later["tracking"] == {
        "opens": False,
        "links": False,
        "reason": DO_NOT_TRACK_REASON,
    }
    assert later["html"] == HTML and later["pixel_url"] is None


def test_erasing_from_the_command_line_keeps_them_untracked_everywhere(
    app: Flask, admin: Account, make_account: Callable[..., Account]
) -> None:
    other = make_account("admin@other.test", org="Other", admin=True)
    runner = app.test_cli_runner()

    result = runner.invoke(args=["privacy", "erase", "Ann@Example.com", "--yes"])

    assert result.exit_code == 0, result.output
    kept = json.loads(result.stdout)["kept"]["do_not_track"]
    assert sorted(e["organization"] for e in kept) == ["Other", "Seller"]
    for account in (admin, other):
        assert account.send(html=HTML, to=[ANN])["tracking"]["opens"] is False


def store_an_event(
    session: Session, message_id: int, user_id: int, recipient: str = ANN
) -> None:
    """What a batch of hits writes for one counted open: an event, a notification."""
    event = Event(
        hit_id="held-batch",
        message_id=message_id,
        type="open",
        occurred_at=datetime.now(UTC),
        classification="human",
        counted=True,
        reasons=[],
        recipient=recipient,
        ip="89.160.20.112",
        device_type="desktop",
    )
    session.add(event)
    session.flush()
    session.add(
        Notification(
            user_id=user_id,
            message_id=message_id,
            event_id=event.id,
            title=f"{recipient} opened",
            body="in Linköping",
        )
    )


def erase_beside_a_batch(admin: Account, database: Database, address: str) -> Any:
    """Erase an address while a batch of hits holds the only message; the erase must
    wait for the batch, which then stores an open of the address and commits. Returns
    the erase's answer."""
    with database.session_factory() as session:
        message = session.scalars(select(Message)).one()
        message_id, user_id = message.id, message.user_id
    batch = database.session_factory()
    assert hold_messages(batch, [message_id]) == {message_id}  # a batch has begun
    answers: list[Any] = []
    erase = threading.Thread(
        target=lambda: answers.append(
            admin.post("/api/v1/privacy/erase", json={"address": address})
        )
    )
    erase.start()
    assert locks_waited_for(database) == 1
    assert erase.is_alive()  # the erase waits for the batch to commit
    store_an_event(batch, message_id, user_id, address)
    batch.commit()
    batch.close()
    erase.join(timeout=10)
    return answers[0]


def test_an_erase_waits_for_hits_being_stored_and_deletes_them_too(
    admin: Account, database: Database
) -> None:
    sent = admin.send(html=HTML, to=[ANN])
    answer = erase_beside_a_batch(admin, database, ANN)

    assert answer.status_code == 200
    assert answer.get_json()["events_deleted"] == 1
    assert tables_holding(database, ANN) == ["do_not_track"]
    assert admin.get(f"/api/v1/messages/{sent['id']}").status_code == 404


def test_hits_stored_after_an_erase_find_no_message(
    admin: Account, database: Database
) -> None:
    admin.send(html=HTML, to=[ANN])
    with database.session_factory() as session:
        message_id = session.scalars(select(Message.id)).one()
    assert admin.post("/api/v1/privacy/erase", json={"address": ANN}).status_code == 200
    with database.session_factory() as session:
        assert hold_messages(session, [message_id]) == set()
