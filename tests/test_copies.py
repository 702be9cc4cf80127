"""One copy per recipient: each recipient's opens and clicks name that recipient."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, update

from app.db import Database
from app.followups.models import FollowUpRule
from app.followups.preview import preview
from app.messages import MAX_COPIES, MAX_COPY_BYTES, MAX_COPY_LINKS
from app.models import Link, Message, MessageCopy, Notification, User
from tests.conftest import Account
from tests.test_followups import actions, add_rule, db_of, firings
from tests.test_privacy_person import erase_beside_a_batch
from tests.test_tracking import events, hit
from workers import followups

ANN = "ann@prospect.test"
BOB = "bob@prospect.test"
LONDON = "81.2.69.142"
MILTON = "216.160.83.56"
HTML = (
    '<html><body><p>Hi {{first_name}},</p><a href="https://example.com/a?x=1&amp;y=2">'
    'A</a> <a href="https://example.com/b">B</a></body></html>'
)


def _send(account: Account, **extra: Any) -> dict[str, Any]:
    # Sent an hour ago: past the window in which delivery-time scanners fetch.
    sent_at = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    body = {
        "to": [ANN],
        "cc": [BOB, "ANN@prospect.test"],
        "html": HTML,
        "text": "Hi, see https://example.com/a",
        "track_text_links": True,
        "per_recipient": True,
        "sent_at": sent_at,
    }
    return account.send(**{**body, **extra})


def _tokens(url: str) -> str:
    return url.rsplit("/", 1)[-1].removesuffix(".gif")


def test_each_recipient_gets_a_copy_that_differs_only_in_its_tokens(
    account: Account,
) -> None:
    created = _send(account)

    ann, bob = created["copies"]
    assert [ann["recipient"], bob["recipient"]] == [ANN, BOB]
    shared = [created["pixel_url"], *(link["tracked_url"] for link in created["links"])]
    for copy in (ann, bob):
        own = [copy["pixel_url"], *(link["tracked_url"] for link in copy["links"])]
        assert [link["url"] for link in copy["links"]] == [
            link["url"] for link in created["links"]
        ]
        assert not set(own) & set(shared)
        # Put the message's own tokens back: every other byte is the same.
        html, text = copy["html"], copy["text"]
        for mine, theirs in zip(own, shared, strict=True):
            html = html.replace(_tokens(mine), _tokens(theirs))
            text = text.replace(_tokens(mine), _tokens(theirs))
        assert html == created["html"]
        assert text == created["text"]
        assert "{{first_name}}" in copy["html"]
    assert ann["pixel_url"] != bob["pixel_url"]

    detail = account.get(f"/api/v1/messages/{created['id']}").get_json()
    assert detail["per_recipient"] is True
    assert [r["recipient"] for r in detail["by_recipient"]] == [ANN, BOB]


def test_copy_links_redirect_to_the_recorded_destination(account: Account) -> None:
    created = _send(account)
    for copy in created["copies"]:
        for link in copy["links"]:
            response = hit(account.client, link["tracked_url"])
            assert response.status_code == 302
            assert response.headers["Location"] == link["url"]
    assert created["copies"][0]["links"][0]["url"] == "https://example.com/a?x=1&y=2"


def test_without_per_recipient_there_are_no_copies(account: Account) -> None:
    created = account.send(to=[ANN, BOB], html=HTML)
    assert created["copies"] == []
    detail = account.get(f"/api/v1/messages/{created['id']}").get_json()
    assert detail["per_recipient"] is False
    assert detail["by_recipient"] == []


def test_too_many_recipients_for_copies_is_a_clear_422(account: Account) -> None:
    to = [f"p{i}@prospect.test" for i in range(MAX_COPIES + 1)]
    response = account.post(
        "/api/v1/messages",
        json={"subject": "Hi", "to": to, "html": HTML, "per_recipient": True},
    )
    assert response.status_code == 422
    [message] = response.get_json()["fields"]["per_recipient"]
    assert f"at most {MAX_COPIES} recipients" in message
    assert account.get("/api/v1/messages").get_json()["total"] == 0


def test_copies_too_large_or_with_too_many_links_are_a_clear_422(
    account: Account, database: Database
) -> None:
    to = [f"p{i}@prospect.test" for i in range(MAX_COPIES)]
    big = "<p>" + "x" * (MAX_COPY_BYTES // MAX_COPIES) + "</p>"
    many = "".join(
        f'<a href="https://example.com/{n}">{n}</a>'
        for n in range(MAX_COPY_LINKS // MAX_COPIES + 1)
    )
    for html, why in ((big, "bytes"), (many, "links")):
        response = account.post(
            "/api/v1/messages",
            json={"subject": "Hi", "to": to, "html": html, "per_recipient": True},
        )
        assert response.status_code == 422
        [message] = response.get_json()["fields"]["per_recipient"]
        assert why in message and "fewer" in message
    assert account.get("/api/v1/messages").get_json()["total"] == 0
    with database.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Link)) == 0
    # The same links for fewer people fit.
    assert len(_send(account, to=to[:2], cc=[], html=many)["copies"]) == 2


def test_a_non_boolean_per_recipient_is_refused(account: Account) -> None:
    response = account.post(
        "/api/v1/messages",
        json={"subject": "Hi", "to": [ANN], "html": HTML, "per_recipient": "maybe"},
    )
    assert response.status_code == 422
    assert "per_recipient" in response.get_json()["fields"]


def test_opens_and_clicks_name_the_recipient_of_their_copy(
    account: Account, run_jobs: Callable[[], None]
) -> None:
    created = _send(account)
    ann, bob = created["copies"]
    hit(account.client, ann["pixel_url"])
    run_jobs()
    # Bob reads at home: another network than Ann's, and not a forward of hers.
    hit(
        account.client,
        bob["links"][1]["tracked_url"],
        environ_base={"REMOTE_ADDR": LONDON},
    )
    run_jobs()
    # Ann opens again from elsewhere: that is a forward of her copy.
    hit(account.client, ann["pixel_url"], environ_base={"REMOTE_ADDR": MILTON})
    # And the sender looks at the copy in their Sent folder (the message's own).
    hit(account.client, created["pixel_url"], environ_base={"REMOTE_ADDR": LONDON})
    run_jobs()

    got = [
        (
            e["type"],
            e["recipient"],
            e["recipient_label"],
            e["implied"],
            e["possible_forward"],
        )
        for e in events(account, created["id"])
    ]
    assert got == [
        ("open", ANN, ANN, False, False),
        ("open", BOB, BOB, True, False),  # implied by his click: he had not opened
        ("click", BOB, BOB, False, False),
        ("open", ANN, ANN, False, True),
        ("open", None, "somebody", False, False),
    ]
    detail = account.get(f"/api/v1/messages/{created['id']}").get_json()
    assert (detail["opens"], detail["clicks"]) == (4, 1)
    activity = {
        r["recipient"]: (r["opens"], r["clicks"]) for r in detail["by_recipient"]
    }
    assert activity == {ANN: (2, 0), BOB: (1, 1)}


def test_each_recipients_first_open_is_told_even_within_the_quiet_span(
    account: Account, run_jobs: Callable[[], None]
) -> None:
    created = _send(account)
    ann, bob = created["copies"]
    hit(account.client, ann["pixel_url"])
    hit(account.client, ann["pixel_url"])  # a repeat: stored, not told again
    run_jobs()
    hit(account.client, bob["pixel_url"], environ_base={"REMOTE_ADDR": LONDON})
    run_jobs()

    listed = account.get("/api/v1/notifications").get_json()["notifications"]
    titles = sorted(n["title"] for n in listed)
    assert titles == [f"{ANN} opened “Hello”", f"{BOB} opened “Hello”"]


def test_a_scanner_burst_on_one_copy_leaves_another_recipients_click_counted(
    account: Account, run_jobs: Callable[[], None]
) -> None:
    created = _send(account)
    ann, bob = created["copies"]
    hit(account.client, ann["links"][0]["tracked_url"])
    run_jobs()
    # Bob's mail gateway follows both links of his copy at once.
    for link in bob["links"]:
        hit(account.client, link["tracked_url"], environ_base={"REMOTE_ADDR": LONDON})
    run_jobs()

    clicks = [e for e in events(account, created["id"]) if e["type"] == "click"]
    by_recipient = {(e["recipient"], e["counted"], e["classification"]) for e in clicks}
    assert by_recipient == {(ANN, True, "human"), (BOB, False, "scanner")}
    assert account.get(f"/api/v1/messages/{created['id']}").get_json()["clicks"] == 1


def test_erasing_a_recipient_takes_their_copy_and_leaves_the_others(
    make_account: Callable[..., Account],
    database: Database,
    run_jobs: Callable[[], None],
) -> None:
    admin = make_account("admin@seller.test", admin=True)
    created = _send(admin)
    ann, bob = created["copies"]
    hit(admin.client, bob["pixel_url"], environ_base={"REMOTE_ADDR": LONDON})
    hit(admin.client, ann["pixel_url"])
    run_jobs()

    response = admin.post("/api/v1/privacy/erase", json={"address": BOB})
    assert response.status_code == 200, response.get_json()

    with database.engine.connect() as conn:
        left = conn.scalars(select(MessageCopy.recipient)).all()
        links = conn.scalar(
            select(func.count()).select_from(Link).where(Link.copy_id.is_not(None))
        )
    assert left == [ANN]
    assert links == len(ann["links"]) == 3
    assert [e["recipient"] for e in events(admin, created["id"])] == [ANN]
    detail = admin.get(f"/api/v1/messages/{created['id']}").get_json()
    assert [r["recipient"] for r in detail["by_recipient"]] == [ANN]
    assert BOB not in str(detail)


def test_the_openapi_document_describes_copies(client: Any) -> None:
    document = client.get("/api/v1/openapi.json").get_json()
    schemas = document["components"]["schemas"]
    assert "per_recipient" in schemas["MessageCreate"]["properties"]
    assert "copies" in schemas["MessageCreated"]["properties"]
    assert "by_recipient" in schemas["MessageDetail"]["properties"]
    assert re.search(r"at most 50", str(schemas["MessageCreate"]))


def test_the_message_page_shows_each_recipients_activity(
    account: Account, run_jobs: Callable[[], None]
) -> None:
    from tests.test_pages import sign_in

    created = _send(account, subject="<b>Offer</b>", cc=["eve@prospect.test"])
    ann, _ = created["copies"]
    hit(account.client, ann["pixel_url"])
    run_jobs()
    sign_in(account.client, account.email)
    page = account.client.get(f"/messages/{created['id']}").get_data(as_text=True)

    rows = re.findall(
        r'<tr data-recipient="([^"]+)"><td>[^<]*</td><td class="opens">(\d+)</td>\s*'
        r'<td class="clicks">(\d+)</td><td>([^<]+)</td>',
        page,
    )
    assert rows == [
        (ANN, "1", "0", "just now"),
        ("eve@prospect.test", "0", "0", "not yet"),
    ]
    assert "one pixel cannot tell them apart" not in page
    assert "<b>Offer</b>" not in page


def test_a_follow_up_rule_fires_once_for_each_recipient_who_opens(
    app: Flask, account: Account, run_jobs: Callable[[], None]
) -> None:
    add_rule(account, {"type": "first_open"})
    created = _send(account, subject="Pilot pricing")
    ann, bob = created["copies"]
    hit(account.client, ann["pixel_url"])
    hit(account.client, ann["pixel_url"])
    run_jobs()
    assert [f.recipient for f in firings(app)] == [ANN]

    hit(account.client, bob["pixel_url"], environ_base={"REMOTE_ADDR": LONDON})
    run_jobs()
    assert [f.recipient for f in firings(app)] == [ANN, BOB]
    bodies = [a.payload["body"] for a in actions(app)]
    assert ANN in bodies[0] and BOB in bodies[1]


def test_no_open_reminds_of_each_recipient_who_has_not_opened_their_copy(
    app: Flask, account: Account, run_jobs: Callable[[], None]
) -> None:
    add_rule(account, {"type": "no_open", "days": 2})
    long_ago = (datetime.now(UTC) - timedelta(days=9)).isoformat()
    created = _send(account, sent_at=long_ago)
    carl = account.send(to=[ANN, BOB], html=HTML, sent_at=long_ago)  # no copies
    hit(account.client, created["copies"][0]["pixel_url"])  # Ann opened hers
    run_jobs()
    with db_of(app).begin() as session:  # the rule has been there for a month
        session.execute(
            update(FollowUpRule).values(armed_at=datetime.now(UTC) - timedelta(days=30))
        )

    followups.sweep()
    followups.sweep()  # and again: nothing more is due
    fired = {(f.message_id, f.recipient) for f in firings(app)}
    with db_of(app).session_factory() as session:
        ids = {
            m.public_id: m.id
            for m in session.scalars(select(Message).where(Message.id > 0))
        }
    assert fired == {(ids[created["id"]], BOB), (ids[carl["id"]], "")}


def test_the_rule_preview_shows_each_recipient(
    app: Flask, account: Account, run_jobs: Callable[[], None]
) -> None:
    created = _send(account)
    ann, bob = created["copies"]
    hit(account.client, ann["pixel_url"])
    hit(account.client, bob["pixel_url"], environ_base={"REMOTE_ADDR": LONDON})
    run_jobs()
    rule = {"trigger": {"type": "first_open"}, "actions": [{"type": "reminder"}]}
    with db_of(app).session_factory() as session:
        user = session.scalars(select(User)).one()
        looked_at, rows = preview(session, user, rule)
    assert looked_at == 1
    assert sorted(row.recipient for row in rows) == [ANN, BOB]


def test_an_erase_from_a_shared_message_waits_for_hits_being_stored(
    make_account: Callable[..., Account], database: Database
) -> None:
    admin = make_account("admin@seller.test", admin=True)
    created = _send(admin)
    answer = erase_beside_a_batch(admin, database, BOB)

    assert answer.status_code == 200
    assert answer.get_json()["events_deleted"] == 1
    assert events(admin, created["id"]) == []


@pytest.mark.parametrize("erased", ["ÜLLA@example.com", "ΣΑΣ@example.com"])
def test_an_erase_finds_addresses_the_database_lower_cases_otherwise(
    make_account: Callable[..., Account],
    database: Database,
    run_jobs: Callable[[], None],
    erased: str,
) -> None:
    admin = make_account("admin@seller.test", admin=True)
    created = _send(admin, to=[ANN, erased], cc=[])
    theirs = created["copies"][1]
    hit(admin.client, theirs["pixel_url"], environ_base={"REMOTE_ADDR": LONDON})
    run_jobs()
    assert [e["recipient"] for e in events(admin, created["id"])] == [erased]

    answer = admin.post("/api/v1/privacy/erase", json={"address": erased.lower()})
    assert answer.get_json()["events_deleted"] == 1
    hit(admin.client, theirs["pixel_url"], environ_base={"REMOTE_ADDR": LONDON})
    run_jobs()
    assert events(admin, created["id"]) == []
    detail = admin.get(f"/api/v1/messages/{created['id']}").get_json()
    assert [r["recipient"] for r in detail["by_recipient"]] == [ANN]


def test_after_an_erase_the_messages_own_pixel_is_no_longer_tracked(
    make_account: Callable[..., Account], run_jobs: Callable[[], None]
) -> None:
    admin = make_account("admin@seller.test", admin=True)
    shared = admin.send(to=[ANN, BOB], html=HTML)  # no copies
    copied = _send(admin)
    assert admin.post("/api/v1/privacy/erase", json={"address": BOB}).status_code == 200
    # Bob still has the email: its own pixel may be him. Ann's copy is hers alone.
    hit(admin.client, shared["pixel_url"], environ_base={"REMOTE_ADDR": MILTON})
    hit(admin.client, copied["pixel_url"], environ_base={"REMOTE_ADDR": MILTON})
    hit(admin.client, copied["copies"][0]["pixel_url"])
    run_jobs()

    assert events(admin, shared["id"]) == []
    assert [e["recipient"] for e in events(admin, copied["id"])] == [ANN]


def test_with_one_recipient_the_messages_own_copy_is_nobody_in_particular(
    account: Account, run_jobs: Callable[[], None]
) -> None:
    created = _send(account, cc=[])
    [ann] = created["copies"]
    # The sender reads the Sent folder from home, then Ann clicks in her copy.
    hit(account.client, created["pixel_url"], environ_base={"REMOTE_ADDR": LONDON})
    run_jobs()
    hit(account.client, ann["links"][1]["tracked_url"])
    run_jobs()

    got = [
        (e["type"], e["recipient"], e["implied"], e["possible_forward"])
        for e in events(account, created["id"])
    ]
    assert got == [
        ("open", None, False, False),
        ("open", ANN, True, False),
        ("click", ANN, False, False),
    ]
    detail = account.get(f"/api/v1/messages/{created['id']}").get_json()
    assert [(r["opens"], r["clicks"]) for r in detail["by_recipient"]] == [(1, 1)]


def test_copies_of_a_thousand_links_each_hold_their_own_tokens(
    account: Account,
) -> None:
    many = "".join(f'<a href="https://example.com/{n}">{n}</a>' for n in range(1000))
    body = many + "<p>" + "x" * 1_500_000 + "</p>"
    created = _send(
        account, to=[ANN, BOB, "carl@prospect.test"], cc=[], html=body, text="Hi"
    )
    assert len(created["copies"]) == 3
    theirs = {_tokens(link["tracked_url"]) for link in created["links"]}
    for copy in created["copies"]:
        mine = [_tokens(link["tracked_url"]) for link in copy["links"]]
        assert len(set(mine)) == 1000
        found = re.findall(r"/c/([0-9a-z]{22})", copy["html"])
        assert sorted(found) == sorted(mine)
        assert not theirs & set(found)


def test_copies_are_measured_once_tracked(account: Account) -> None:
    # Short links made long by tracking: the input fits, the copies would not.
    body = '<base href="https://a.b/">' + "<a href=x>" * 60_000
    response = account.post(
        "/api/v1/messages",
        json={
            "subject": "Hi",
            "to": [f"p{i}@prospect.test" for i in range(8)],
            "html": body,
            "per_recipient": True,
            "track_links": True,
        },
    )
    assert response.status_code == 422
    [message] = response.get_json()["fields"]["per_recipient"]
    assert "once tracked" in message


def test_a_recipient_listed_after_sending_is_not_tracked_on_their_copy_alone(
    account: Account, run_jobs: Callable[[], None]
) -> None:
    created = _send(account)
    ann, bob = created["copies"]
    listed = account.post("/api/v1/privacy/do-not-track", json={"value": BOB})
    assert listed.status_code == 201
    hit(account.client, bob["pixel_url"], environ_base={"REMOTE_ADDR": LONDON})
    hit(account.client, created["pixel_url"], environ_base={"REMOTE_ADDR": MILTON})
    hit(account.client, ann["pixel_url"])
    run_jobs()

    assert [e["recipient"] for e in events(account, created["id"])] == [ANN]


def test_the_answer_is_measured_in_its_escaped_bytes(account: Account) -> None:
    # 400 KB of emoji as UTF-8, 1.2 MB as the answer's JSON: 15 copies are too many.
    response = account.post(
        "/api/v1/messages",
        json={
            "subject": "Hi",
            "to": [f"p{i}@prospect.test" for i in range(15)],
            "html": "\U0001f600" * 100_000,
            "per_recipient": True,
        },
    )
    assert response.status_code == 422
    [message] = response.get_json()["fields"]["per_recipient"]
    assert "bytes" in message


KELVIN = "\u212aATE@example.com"  # the Kelvin sign lower-cases to an ASCII "k"
SOFIA = "ΣΟΦΙΑΣ@example.com"


def test_an_erase_finds_an_address_spelled_with_letters_that_lower_case_to_ascii(
    make_account: Callable[..., Account], run_jobs: Callable[[], None]
) -> None:
    admin = make_account("admin@seller.test", admin=True)
    created = _send(admin, to=[KELVIN, ANN], cc=[])
    kate = created["copies"][0]
    hit(admin.client, kate["pixel_url"], environ_base={"REMOTE_ADDR": LONDON})
    run_jobs()

    exported = admin.get("/api/v1/privacy/export?address=kate@example.com").get_json()
    assert len(exported["messages"]) == 1
    answer = admin.post("/api/v1/privacy/erase", json={"address": "kate@example.com"})
    assert answer.get_json()["messages_updated"] == 1
    assert answer.get_json()["events_deleted"] == 1
    assert events(admin, created["id"]) == []


def test_an_erased_recipients_links_still_redirect_and_record_nothing(
    make_account: Callable[..., Account], run_jobs: Callable[[], None]
) -> None:
    admin = make_account("admin@seller.test", admin=True)
    created = _send(admin)
    bob = created["copies"][1]
    assert admin.post("/api/v1/privacy/erase", json={"address": BOB}).status_code == 200

    for link in bob["links"]:
        response = hit(admin.client, link["tracked_url"])
        assert response.status_code == 302
        assert response.headers["Location"] == link["url"]
    assert hit(admin.client, bob["pixel_url"]).status_code == 200
    run_jobs()
    assert events(admin, created["id"]) == []
    exported = admin.get(f"/api/v1/privacy/export?address={ANN}").get_json()
    [message] = exported["messages"]
    assert len(message["links"]) == len(set(message["links"])) == 3


def test_an_erase_forgets_the_follow_ups_of_the_person(
    app: Flask, make_account: Callable[..., Account], run_jobs: Callable[[], None]
) -> None:
    admin = make_account("admin@seller.test", admin=True)
    add_rule(
        admin,
        {"type": "first_open"},
        actions=[{"type": "reminder", "body": "nudge {recipient}"}],
    )
    created = _send(admin, to=[SOFIA, ANN], cc=[])
    sofia, ann = created["copies"]
    hit(admin.client, sofia["pixel_url"], environ_base={"REMOTE_ADDR": LONDON})
    hit(admin.client, ann["pixel_url"])
    run_jobs()
    assert sorted(f.recipient for f in firings(app)) == sorted([SOFIA.lower(), ANN])
    with db_of(app).begin() as session:  # Sofia's reminder has been delivered
        message = session.scalars(select(Message)).one()
        session.add(
            Notification(
                user_id=message.user_id,
                message_id=message.id,
                event_id=None,
                title="Follow up: Hello",
                body=f"nudge {SOFIA.lower()}",
            )
        )

    reminded = sorted(a.payload["body"] for a in actions(app))
    assert reminded == sorted([f"nudge {SOFIA}", f"nudge {ANN}"])  # as sent
    assert (
        admin.post("/api/v1/privacy/erase", json={"address": SOFIA}).status_code == 200
    )
    assert [f.recipient for f in firings(app)] == [ANN]
    assert [a.payload["body"] for a in actions(app)] == [f"nudge {ANN}"]
    with db_of(app).session_factory() as session:
        bodies = [n.body for n in session.scalars(select(Notification))]
    assert not any(SOFIA.lower() in (body or "") for body in bodies)


def test_an_erase_drops_pending_follow_ups_that_name_the_person_and_no_one_elses(
    app: Flask, make_account: Callable[..., Account], run_jobs: Callable[[], None]
) -> None:
    admin = make_account("admin@seller.test", admin=True)
    nudge = [{"type": "reminder", "body": "nudge {recipient}"}]
    add_rule(admin, {"type": "first_open"}, actions=nudge)
    whole = admin.send(to=["kate@example.com", BOB], html=HTML)  # no copies
    hit(admin.client, whole["pixel_url"])
    copied = _send(admin, to=["xkate@example.com"], cc=[])
    hit(admin.client, copied["copies"][0]["pixel_url"])
    run_jobs()
    assert len(actions(app)) == 2
    with db_of(app).begin() as session:  # a delivered reminder for xkate
        message = session.scalars(select(Message).order_by(Message.id.desc())).first()
        assert message is not None
        session.add(
            Notification(
                user_id=message.user_id,
                message_id=message.id,
                event_id=None,
                title="Follow up: Hello",
                body="nudge xkate@example.com",
            )
        )

    erased = {"address": "kate@example.com"}
    assert admin.post("/api/v1/privacy/erase", json=erased).status_code == 200
    assert [a.payload["body"] for a in actions(app)] == ["nudge xkate@example.com"]
    with db_of(app).session_factory() as session:
        bodies = [n.body for n in session.scalars(select(Notification))]
    assert "nudge xkate@example.com" in bodies


def test_long_destinations_are_refused_before_they_are_stored(
    account: Account, database: Database
) -> None:
    base = "https://example.com/" + "a" * 20_000
    html = f'<base href="{base}">' + "".join(
        f"<a href='?{n}'>{n}</a>" for n in range(100)
    )
    response = account.post(
        "/api/v1/messages", json={"subject": "Hi", "to": [ANN], "html": html}
    )
    assert response.status_code == 422
    [message] = response.get_json()["fields"]["html"]
    assert "<base href>" in message
    with database.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Link)) == 0
