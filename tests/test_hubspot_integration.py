"""HubSpot end to end: the real client, the emulator, RQ workers and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from hubspot import HubSpot
from hubspot.crm import AssociationType
from sqlalchemy import func, select

from app import create_app
from app.models import CrmConnection, CrmRecord, Event
from emulators.hubspot import HubSpotEmulator
from integrations.crypto import TokenCipher
from tests.conftest import Account, path_of, wait_for
from tests.test_pages import sign_in
from tests.test_tracking import hit
from workers.context import current

Worker = Callable[..., subprocess.Popen[bytes]]
TOKEN_PATH = "/oauth/v1/token"


@pytest.fixture
def emu() -> Iterator[HubSpotEmulator]:
    with HubSpotEmulator(client_id="hs-client", client_secret="hs-secret") as emulator:
        yield emulator


@pytest.fixture
def config(config: dict[str, Any], emu: HubSpotEmulator) -> dict[str, Any]:
    return {**config, **hubspot_settings(emu)}


def hubspot_settings(emu: HubSpotEmulator) -> dict[str, Any]:
    """The app's HubSpot settings, pointing at the emulator."""
    return {
        "HUBSPOT_CLIENT_ID": emu.client_id,
        "HUBSPOT_CLIENT_SECRET": emu.client_secret,
        "HUBSPOT_API_URL": emu.url,
        "HUBSPOT_AUTHORIZE_URL": f"{emu.url}/oauth/authorize",
        "HUBSPOT_TIMEOUT": 1.5,
        "CRM_IN_DOUBT_SECONDS": 10.0,
    }


def consent(emu: HubSpotEmulator, authorize_url: str) -> str:
    """Press the emulator's consent button; return where HubSpot sends us back."""
    assert authorize_url.startswith(f"{emu.url}/oauth/authorize?")
    page = requests.get(authorize_url, timeout=5).text
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', page))
    form = {k: v.replace("&amp;", "&") for k, v in fields.items()}
    answer = requests.post(
        f"{emu.url}/oauth/authorize",
        data={**form, "decision": "grant"},
        allow_redirects=False,
        timeout=5,
    )
    assert answer.status_code == 302, answer.text
    return str(answer.headers["Location"])


def connect(client: FlaskClient, emu: HubSpotEmulator) -> str:
    """Connect HubSpot from the settings page as the signed-in admin."""
    page = client.get("/settings").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf and re.search(r"(Connect|Reconnect) HubSpot", page)
    answer = client.post(
        "/settings/crm/hubspot/connect", data={"csrf_token": csrf.group(1)}
    )
    assert answer.status_code == 302
    authorize_url = str(answer.headers["Location"])
    back = client.get(path_of(consent(emu, authorize_url)))
    assert back.status_code == 302
    return authorize_url


@pytest.fixture
def team(make_account: Callable[..., Account]) -> tuple[Account, Account]:
    """An admin and a rep of one organisation."""
    admin = make_account("admin@seller.test", admin=True)
    rep = make_account("rep@seller.test")
    return admin, rep


@pytest.fixture
def portal(
    emu: HubSpotEmulator,
    team: tuple[Account, Account],
    client: FlaskClient,
    run_jobs: Callable[[], None],
) -> dict[str, str]:
    """The portal's people and deals, connected from the settings page."""
    admin, _ = team
    seeded = seed(emu)
    sign_in(client, admin.email)
    connect(client, emu)
    run_jobs()
    return seeded


def seed(emu: HubSpotEmulator) -> dict[str, str]:
    """Ada has four deals; the open one the rep owns was modified least recently."""
    rep = emu.seed_owner("rep@seller.test", "Riley", "Rep")
    other = emu.seed_owner("other@seller.test", "Olive", "Other")
    ada = emu.seed_contact("ada@buyer.test", "Ada", "Lovelace", owner_id=rep)
    emu.seed_deal("Won long ago", "closedwon", contact_ids=[ada])
    mine = emu.seed_deal("Ada pilot", contact_ids=[ada])
    theirs = emu.seed_deal("Someone else's", contact_ids=[ada])
    emu.seed_deal("Lost", "closedlost", contact_ids=[ada])
    own_deal(emu, mine, rep)
    time.sleep(0.01)
    own_deal(emu, theirs, other)  # now the most recently modified
    alan = emu.seed_contact("alan@buyer.test", "Alan", "Turing")
    return {"rep": rep, "other": other, "ada": ada, "deal": mine, "alan": alan}


def own_deal(emu: HubSpotEmulator, deal_id: str, owner_id: str) -> None:
    """Give a deal an owner, as a HubSpot user would in the portal."""
    token = emu.issue_token(["crm.objects.deals.read", "crm.objects.deals.write"])
    hubspot = HubSpot(access_token=token["access_token"], host=emu.url)
    body = {"properties": {"hubspot_owner_id": owner_id}}
    hubspot.crm.deals.basic_api.update(deal_id, body)


def connection_of(app: Flask) -> CrmConnection:
    with app.extensions["trailmark.db"].session_factory() as session:
        connection = session.scalars(select(CrmConnection)).one()
        session.expunge(connection)
        return connection


def ledger(app: Flask) -> list[CrmRecord]:
    with app.extensions["trailmark.db"].session_factory() as session:
        rows = list(session.scalars(select(CrmRecord).order_by(CrmRecord.id)))
        session.expunge_all()
        return rows


def update_connection(app: Flask, **values: Any) -> None:
    with app.extensions["trailmark.db"].session_factory() as session:
        connection = session.scalars(select(CrmConnection)).one()
        for key, value in values.items():
            setattr(connection, key, value)
        session.commit()


def send_opened(rep: Account, to: list[str], opens: int = 1, clicks: int = 0) -> Any:
    """Send a tracked message, then open it and click its link."""
    created = rep.send(
        subject="Pilot pricing",
        to=to,
        html='<p>Hi</p><a href="https://seller.test/pricing">pricing</a>',
    )
    for _ in range(opens):
        hit(rep.client, created["pixel_url"])
    for _ in range(clicks):
        hit(rep.client, created["links"][0]["tracked_url"])
    return created


def links(
    emu: HubSpotEmulator, type_name: str, object_id: str
) -> set[tuple[str, str, int]]:
    return set(emu.associations(type_name, object_id))


def token_requests(emu: HubSpotEmulator) -> int:
    return sum(1 for _, method, path, *_ in emu.requests if path == TOKEN_PATH)


def test_connecting_asks_only_needed_scopes_and_shows_the_hub_id(
    app: Flask,
    emu: HubSpotEmulator,
    team: tuple[Account, Account],
    client: FlaskClient,
) -> None:
    sign_in(client, team[0].email)
    authorize_url = connect(client, emu)
    query = dict(re.findall(r"([a-z_]+)=([^&]*)", urlsplit(authorize_url).query))
    assert query["scope"].split("+") == [
        "oauth",
        "crm.objects.contacts.read",
        "crm.objects.contacts.write",
        "crm.objects.deals.read",
        "crm.objects.owners.read",
    ]
    assert query["state"] and "code_challenge" not in query
    connection = connection_of(app)
    assert (connection.status, connection.external_account_id) == ("connected", "4242")
    assert connection.external_user_name == "admin@example.com"
    assert connection.token_expires_at is not None
    assert connection.token_expires_at > datetime.now(UTC) + timedelta(minutes=25)
    cipher = TokenCipher(app.config["TOKEN_ENCRYPTION_KEYS"])
    assert connection.access_token and not connection.access_token.startswith("C")
    assert (cipher.decrypt(connection.access_token) or "").startswith("C")
    page = client.get("/settings").get_data(as_text=True)
    assert '<dd class="account">4242</dd>' in page


def test_opens_and_clicks_become_one_note_each_beside_the_sent_email(
    app: Flask,
    emu: HubSpotEmulator,
    portal: dict[str, str],
    team: tuple[Account, Account],
    run_jobs: Callable[[], None],
) -> None:
    rep = team[1]
    created = send_opened(rep, ["ada@buyer.test"], opens=2, clicks=1)
    run_jobs()
    [email] = emu.objects("emails")
    props = email["properties"]
    assert (props["hs_email_status"], props["hs_email_direction"]) == ("SENT", "EMAIL")
    assert props["hs_email_subject"] == "Pilot pricing"
    assert props["hubspot_owner_id"] == portal["rep"]
    assert links(emu, "emails", email["id"]) == {
        ("contacts", portal["ada"], AssociationType.EMAIL_TO_CONTACT),
        ("deals", portal["deal"], AssociationType.EMAIL_TO_DEAL),
    }
    notes = emu.objects("notes")
    assert len(notes) == 2
    for note in notes:
        assert links(emu, "notes", note["id"]) == {
            ("contacts", portal["ada"], AssociationType.NOTE_TO_CONTACT),
            ("deals", portal["deal"], AssociationType.NOTE_TO_DEAL),
        }
        assert note["properties"]["hubspot_owner_id"] == portal["rep"]
    bodies = sorted(n["properties"]["hs_note_body"] for n in notes)
    assert "Email opened: Pilot pricing" in bodies[0] and "2 open(s)" in bodies[0]
    assert "Link clicked" in bodies[1] and "seller.test" in bodies[1]

    hit(rep.client, created["pixel_url"])
    run_jobs()
    assert [n["id"] for n in emu.objects("notes")] == [n["id"] for n in notes]
    assert len(emu.objects("emails")) == 1
    opened = next(n for n in emu.objects("notes") if "opened" in str(n["properties"]))
    assert "3 open(s)" in opened["properties"]["hs_note_body"]
    assert {r.state for r in ledger(app)} == {"created"}


def test_several_recipients_each_get_the_activity_with_the_ambiguity_stated(
    app: Flask,
    emu: HubSpotEmulator,
    portal: dict[str, str],
    team: tuple[Account, Account],
    run_jobs: Callable[[], None],
) -> None:
    to = ["ada@buyer.test", "Alan@Buyer.test", "nobody@buyer.test"]
    send_opened(team[1], to, opens=1)
    run_jobs()
    notes = emu.objects("notes")
    assert len(notes) == 2
    contacts = {
        to_id
        for note in notes
        for to_type, to_id, _ in emu.associations("notes", note["id"])
        if to_type == "contacts"
    }
    assert contacts == {portal["ada"], portal["alan"]}
    for note in notes:
        assert "one tracking pixel cannot tell" in note["properties"]["hs_note_body"]
    alan_note = next(
        n for n in notes if ("contacts", portal["alan"], 202) in n["associations"]
    )
    assert not [t for t, *_ in alan_note["associations"] if t == "deals"]
    states = {(r.recipient, r.kind): r.state for r in ledger(app)}
    assert states[("nobody@buyer.test", "open")] == "no_match"
    assert states[("alan@buyer.test", "open")] == "created"


def test_with_a_copy_each_recipients_note_tells_of_their_own_opens_only(
    app: Flask,
    emu: HubSpotEmulator,
    portal: dict[str, str],
    team: tuple[Account, Account],
    run_jobs: Callable[[], None],
) -> None:
    rep = team[1]
    created = rep.send(
        subject="Pilot pricing",
        to=["ada@buyer.test", "alan@buyer.test"],
        html='<p>Hi</p><a href="https://seller.test/pricing">pricing</a>',
        per_recipient=True,
    )
    ada, alan = created["copies"]
    for _ in range(2):
        hit(rep.client, ada["pixel_url"])
    hit(rep.client, alan["links"][0]["tracked_url"])
    run_jobs()

    def notes_of(contact: str) -> list[str]:
        return sorted(
            n["properties"]["hs_note_body"]
            for n in emu.objects("notes")
            if ("contacts", contact, AssociationType.NOTE_TO_CONTACT)
            in links(emu, "notes", n["id"])
        )

    [ada_opens] = notes_of(portal["ada"])
    assert "2 open(s)" in ada_opens
    alan_opens, alan_clicks = notes_of(portal["alan"])
    assert "1 click(s)" in alan_opens or "1 click(s)" in alan_clicks
    assert "1 open(s)" in alan_opens + alan_clicks  # the open his click implied
    for body in (ada_opens, alan_opens, alan_clicks):
        assert "cannot tell" not in body
    # Nothing more to write: every recipient's row has caught up with their events.
    run_jobs()
    from integrations.jobs import unsynced_messages

    with app.extensions["trailmark.db"].session_factory() as session:
        connection = session.scalars(select(CrmConnection)).one()
        assert unsynced_messages(session, connection) == []
    assert {r.state for r in ledger(app)} == {"created"}


def test_token_is_refreshed_ahead_of_expiry_and_the_new_one_kept(
    app: Flask,
    emu: HubSpotEmulator,
    portal: dict[str, str],
    team: tuple[Account, Account],
    run_jobs: Callable[[], None],
) -> None:
    before = connection_of(app)
    update_connection(app, token_expires_at=datetime.now(UTC) + timedelta(minutes=2))
    send_opened(team[1], ["ada@buyer.test"])
    run_jobs()
    after = connection_of(app)
    assert token_requests(emu) == 2  # the code exchange, then one refresh
    assert after.token_version == before.token_version + 1
    assert after.access_token != before.access_token
    assert after.token_expires_at is not None
    assert after.token_expires_at > datetime.now(UTC) + timedelta(minutes=25)
    assert len(emu.objects("notes")) == 1
    statuses = {status for *_, status, _ in emu.requests}
    assert 401 not in statuses


def test_expired_token_is_refreshed_once_for_two_workers(
    app: Flask,
    emu: HubSpotEmulator,
    portal: dict[str, str],
    team: tuple[Account, Account],
    worker_process: Worker,
) -> None:
    emu.expire_tokens()
    for address in ("ada@buyer.test", "alan@buyer.test"):
        send_opened(team[1], [address], opens=2)
    app.extensions["trailmark.spool"].flush()
    worker_process()
    worker_process()
    wait_for(lambda: len(emu.objects("notes")) == 2, 30)
    wait_for(lambda: {r.state for r in ledger(app)} == {"created"}, 10)
    assert token_requests(emu) == 2
    assert connection_of(app).token_version == 2
    assert len(emu.objects("emails")) == 2


def test_refused_refresh_waits_for_reconnect_then_replays_once(
    app: Flask,
    emu: HubSpotEmulator,
    portal: dict[str, str],
    team: tuple[Account, Account],
    client: FlaskClient,
    run_jobs: Callable[[], None],
) -> None:
    emu.expire_tokens()
    emu.fault("refresh_refused", times=1)
    send_opened(team[1], ["ada@buyer.test"], opens=2, clicks=1)
    run_jobs()
    connection = connection_of(app)
    assert connection.status == "needs_reconnect"
    assert "refused" in (connection.status_reason or "")
    assert emu.objects("notes") == [] and emu.objects("emails") == []
    page = client.get("/settings").get_data(as_text=True)
    assert "needs reconnect" in page and "Reconnect HubSpot" in page

    connect(client, emu)
    run_jobs()
    run_jobs()
    assert connection_of(app).status == "connected"
    assert len(emu.objects("emails")) == 1
    assert len(emu.objects("notes")) == 2


def test_rate_limit_pauses_then_writes_everything(
    app: Flask,
    emu: HubSpotEmulator,
    portal: dict[str, str],
    team: tuple[Account, Account],
    worker_process: Worker,
) -> None:
    emu.fault("rate_limit", times=3, path_contains="/crm/", policy="SECONDLY")
    send_opened(team[1], ["ada@buyer.test"], opens=1, clicks=1)
    app.extensions["trailmark.spool"].flush()
    worker_process()
    wait_for(lambda: len(emu.objects("notes")) == 2, 40)
    wait_for(lambda: {r.state for r in ledger(app)} == {"created"}, 10)
    assert len(emu.objects("emails")) == 1
    assert sum(1 for *_, status, _ in emu.requests if status == 429) == 3


@pytest.mark.parametrize(
    ("fault", "options"),
    [
        ("server_error", {"status": 502}),
        ("slow", {"seconds": 2.5}),
        ("drop_after_commit", {}),
    ],
)
def test_failed_or_lost_writes_are_retried_into_exactly_one_object(
    app: Flask,
    emu: HubSpotEmulator,
    portal: dict[str, str],
    team: tuple[Account, Account],
    worker_process: Worker,
    fault: str,
    options: dict[str, Any],
) -> None:
    emu.fault(fault, times=1, path_contains="/crm/v3/objects/emails", **options)
    emu.fault(fault, times=1, path_contains="/crm/v3/objects/notes", **options)
    send_opened(team[1], ["ada@buyer.test"], opens=1, clicks=1)
    app.extensions["trailmark.spool"].flush()
    worker_process()
    wait_for(lambda: {r.state for r in ledger(app)} == {"created"}, 40)
    time.sleep(0.5)
    assert len(emu.objects("emails")) == 1
    assert len(emu.objects("notes")) == 2
    assert {r.external_id for r in ledger(app)} == {
        o["id"] for o in emu.objects("emails") + emu.objects("notes")
    }


class Conflicting:
    """A loopback stand-in for HubSpot that answers one create with a 409."""

    def __init__(self, upstream: str, path: str, existing: str) -> None:
        self.upstream, self.path, self.existing = upstream, path, existing
        self.armed = True
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.armed and self.command == "POST" and self.path == proxy.path:
                    proxy.armed = False
                    message = f"Conflict creating object. Existing ID: {proxy.existing}"
                    self._answer(
                        409,
                        {"status": "error", "message": message, "category": "CONFLICT"},
                        {},
                    )
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = requests.request(
                    self.command,
                    proxy.upstream + self.path,
                    data=body,
                    headers=headers,
                    timeout=10,
                )
                self._answer(answer.status_code, answer.content, dict(answer.headers))

            def _answer(self, status: int, body: Any, headers: dict[str, str]) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower().startswith("x-hubspot"):
                        self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _relay

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_conflict_on_create_takes_the_existing_id(
    app: Flask,
    emu: HubSpotEmulator,
    portal: dict[str, str],
    team: tuple[Account, Account],
    run_jobs: Callable[[], None],
) -> None:
    existing = emu.seed_contact("placeholder@buyer.test")  # any id HubSpot names
    proxy = Conflicting(emu.url, "/crm/v3/objects/notes", existing)
    try:
        current().settings["HUBSPOT_API_URL"] = proxy.url
        send_opened(team[1], ["ada@buyer.test"], opens=1)
        run_jobs()
    finally:
        current().settings["HUBSPOT_API_URL"] = emu.url
        proxy.stop()
    [note_row] = [r for r in ledger(app) if r.kind == "open"]
    assert (note_row.state, note_row.external_id) == ("created", existing)
    assert emu.objects("notes") == []


BURST_MESSAGES = 100
BURST_OPENS = 7
BURST_CLICKS = 3


def counted_events(app: Flask) -> dict[tuple[int, str], int]:
    """Counted events per (message id, type), as the database holds them."""
    with app.extensions["trailmark.db"].session_factory() as session:
        rows = session.execute(
            select(Event.message_id, Event.type, func.count())
            .where(Event.counted.is_(True))
            .group_by(Event.message_id, Event.type)
        )
        return {(m, t): int(n) for m, t, n in rows}


def busiest_window(times: list[float], length: float) -> int:
    """The most requests that fall within any ``length`` seconds."""
    times = sorted(times)
    start, most = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= length:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_burst_of_a_thousand_events_stays_within_budget_and_loses_nothing(
    app: Flask,
    emu: HubSpotEmulator,
    portal: dict[str, str],
    team: tuple[Account, Account],
    worker_process: Worker,
) -> None:
    rep = team[1]
    addresses = [f"buyer{n}@burst.test" for n in range(BURST_MESSAGES)]
    for address in addresses:
        contact = emu.seed_contact(address)
        emu.seed_deal(f"Deal {address}", contact_ids=[contact])
    started = len(emu.requests)
    for address in addresses:
        send_opened(rep, [address], opens=BURST_OPENS, clicks=BURST_CLICKS)
    app.extensions["trailmark.spool"].flush()
    worker_process()
    worker_process()

    def complete() -> bool:
        counted = counted_events(app)
        rows = [r for r in ledger(app) if r.recipient.endswith("@burst.test")]
        return len(rows) == 3 * BURST_MESSAGES and all(
            r.state == "created"
            and r.synced_event_count == counted.get((r.message_id, r.kind), 1)
            for r in rows
        )

    wait_for(complete, 240)
    time.sleep(1)
    # A click that is stored before its message's open implies an open of its own.
    events = sum(counted_events(app).values())
    assert events >= BURST_MESSAGES * (BURST_OPENS + BURST_CLICKS)
    emails, notes = emu.objects("emails"), emu.objects("notes")
    assert (len(emails), len(notes)) == (BURST_MESSAGES, 2 * BURST_MESSAGES)
    opened = [n for n in notes if "Email opened" in n["properties"]["hs_note_body"]]
    assert len(opened) == BURST_MESSAGES
    counts = {r.external_id: r.synced_event_count for r in ledger(app)}
    for note in opened:
        assert f"{counts[note['id']]} open(s)" in note["properties"]["hs_note_body"]
    ids = [r.external_id for r in ledger(app)]
    assert len(ids) == len(set(ids)) == len({o["id"] for o in emails + notes})
    log = emu.requests[started:]
    assert all(status != 429 for *_, status, _ in log)
    api = [t for t, _, path, *_ in log if path.startswith("/crm/")]
    assert busiest_window(api, 10.0) <= 100  # our budget: 110 less a margin of 10
    report = {"events": events, "requests": len(api), "per_event": len(api) / events}
    print(f"\nhubspot burst: {json.dumps(report)}")
    path = os.environ.get("HUBSPOT_BURST_REPORT")
    if path:
        with open(path, "w") as out:
            json.dump({**report, "busiest_10s": busiest_window(api, 10.0)}, out)


def _csrf(client: FlaskClient) -> str:
    page = client.get("/settings").get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found
    return found.group(1)


@pytest.mark.parametrize(
    "unset", ["TOKEN_ENCRYPTION_KEYS", "HUBSPOT_CLIENT_ID"], ids=["no-key", "no-client"]
)
def test_connecting_without_what_it_needs_is_refused_before_the_consent(
    config: dict[str, Any], team: tuple[Account, Account], unset: str
) -> None:
    app = create_app({**config, unset: ""})
    client = app.test_client()
    sign_in(client, team[0].email)
    answer = client.post(
        "/settings/crm/hubspot/connect", data={"csrf_token": _csrf(client)}
    )
    assert answer.status_code == 503 and "Location" not in answer.headers
    assert unset in answer.get_data(as_text=True)
    app.extensions["trailmark.spool"].stop()


def test_unfinished_sign_ins_do_not_pile_up_in_the_cookie(
    app: Flask, team: tuple[Account, Account]
) -> None:
    client = app.test_client()
    sign_in(client, team[0].email)
    csrf = _csrf(client)
    for _ in range(30):
        started = client.post(
            "/settings/crm/hubspot/connect", data={"csrf_token": csrf}
        )
        assert started.status_code == 302
    with client.session_transaction() as kept:
        assert len(kept["oauth"]) == 3
    state = parse_qs(urlsplit(started.headers["Location"]).query)["state"][0]
    with client.session_transaction() as kept:
        assert state in kept["oauth"]  # the latest one can still be finished


def test_an_encryption_key_that_is_not_one_stops_the_start(
    config: dict[str, Any],
) -> None:
    with pytest.raises(RuntimeError, match="TOKEN_ENCRYPTION_KEYS"):
        create_app({**config, "TOKEN_ENCRYPTION_KEYS": "notakey"})
