"""Salesforce end to end: the emulated org over HTTPS, simple-salesforce, real RQ.

Every test connects through the settings page's OAuth flow, sends tracked email
through the API, lets real workers run, and asserts on the records the emulator
holds: Tasks written exactly once, whatever fails on the way.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
import requests
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue, SimpleWorker
from rq.registry import ScheduledJobRegistry
from sqlalchemy import select

from app.db import Database
from app.models import CrmConnection, CrmRecord, Event, User
from emulators.salesforce import SalesforceEmulator
from integrations.base import Tokens
from integrations.crypto import TokenCipher
from integrations.salesforce.provider import PROVIDER
from integrations.tokens import refresh
from tests.conftest import Account, path_of, sign_in_browser, wait_for
from tests.test_pages import sign_in
from workers.queue import QUEUES

CHROME = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/103.0.0.0 Safari/537.36"
)
LINKOPING = "89.160.20.112"
REP = "rep@seller.test"


@pytest.fixture
def salesforce() -> Iterator[SalesforceEmulator]:
    emulator = SalesforceEmulator().start()
    yield emulator
    emulator.stop()


@pytest.fixture
def config(config: dict[str, Any], salesforce: SalesforceEmulator) -> dict[str, Any]:
    return {
        **config,
        "SALESFORCE_CLIENT_ID": salesforce.client_id,
        "SALESFORCE_CLIENT_SECRET": salesforce.client_secret,
        "SALESFORCE_LOGIN_URL": salesforce.url,
        "SALESFORCE_CA_BUNDLE": salesforce.ca_path,
        "SALESFORCE_TIMEOUT": 1.0,
        "CRM_SWEEP_INTERVAL": 1.0,
        "CRM_IN_DOUBT_SECONDS": 3.0,
    }


@pytest.fixture
def db(app: Flask) -> Database:
    database: Database = app.extensions["trailmark.db"]
    return database


@pytest.fixture
def settle(app: Flask, redis_conn: redis.Redis) -> Callable[..., None]:
    """Run real RQ work, retries and scheduled jobs included, until none is left."""

    def run(timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            app.extensions["trailmark.spool"].flush()
            worker = SimpleWorker(list(QUEUES), connection=redis_conn)
            worker.work(burst=True, with_scheduler=True)
            if not _pending(redis_conn, horizon=10):
                return
            assert time.monotonic() < deadline, "jobs still pending"
            time.sleep(0.2)

    return run


def _pending(conn: redis.Redis, horizon: float) -> bool:
    """Whether any job is queued, or scheduled to run within ``horizon`` seconds."""
    soon = datetime.now(UTC) + timedelta(seconds=horizon)
    for name in QUEUES:
        if Queue(name, connection=conn).count:
            return True
        registry = ScheduledJobRegistry(name, connection=conn)
        if registry.get_job_ids(0, -1) and any(
            registry.get_scheduled_time(j) <= soon for j in registry.get_job_ids()
        ):
            return True
    return False


def connect(client: FlaskClient, salesforce: SalesforceEmulator, admin: User) -> str:
    """Run the settings page's OAuth flow against the emulator; the callback path."""
    sign_in_browser(client, admin.id)
    with client.session_transaction() as session:
        session["csrf"] = "csrf-test"
    started = client.post(
        "/settings/crm/salesforce/connect",
        data={"csrf_token": "csrf-test", "environment": "default"},
    )
    assert started.status_code == 302
    authorize = started.headers["Location"]
    assert authorize.startswith(f"{salesforce.url}/services/oauth2/authorize?")
    query = parse_qs(urlsplit(authorize).query)
    assert query["scope"] == ["api refresh_token id"]
    assert query["code_challenge_method"] == ["S256"]
    page = requests.get(authorize, verify=salesforce.ca_path, timeout=5)
    consent = re.search(r'name="consent" value="([^"]+)"', page.text)
    assert consent, page.text
    allowed = requests.post(
        f"{salesforce.url}/services/oauth2/authorize",
        data={"consent": consent[1], "decision": "allow"},
        verify=salesforce.ca_path,
        allow_redirects=False,
        timeout=5,
    )
    callback = path_of(allowed.headers["Location"])
    done = client.get(callback)
    assert done.status_code == 302, done.get_data(as_text=True)
    return callback


@pytest.fixture
def admin(make_account: Callable[..., Account], db: Database) -> User:
    make_account("admin@seller.test", admin=True)
    with db.session_factory() as session:
        user = session.scalars(select(User).filter_by(email="admin@seller.test")).one()
        session.expunge(user)
        return user


@pytest.fixture
def rep(make_account: Callable[..., Account]) -> Account:
    return make_account(REP)


@pytest.fixture
def connected(
    client: FlaskClient, salesforce: SalesforceEmulator, admin: User
) -> SalesforceEmulator:
    connect(client, salesforce, admin)
    return salesforce


def send(rep: Account, **message: Any) -> dict[str, Any]:
    return rep.send(**{"html": "<p>Hello</p>", **message})


def hit(client: FlaskClient, url: str) -> None:
    response = client.get(
        path_of(url),
        headers={"User-Agent": CHROME},
        environ_base={"REMOTE_ADDR": LINKOPING},
    )
    assert response.status_code in (200, 302)


def connection_of(db: Database) -> CrmConnection:
    with db.session_factory() as session:
        found = session.scalars(select(CrmConnection)).one()
        session.expunge(found)
        return found


def ledger(db: Database) -> list[CrmRecord]:
    with db.session_factory() as session:
        rows = list(session.scalars(select(CrmRecord).order_by(CrmRecord.id)))
        session.expunge_all()
        return rows


def tasks(salesforce: SalesforceEmulator) -> list[dict[str, Any]]:
    return salesforce.records("Task")


def subjects(salesforce: SalesforceEmulator) -> list[str]:
    return sorted(t["Subject"] for t in tasks(salesforce))


def seed_deal(salesforce: SalesforceEmulator, email: str) -> dict[str, str]:
    """A Contact on an open Opportunity of its Account."""
    account = salesforce.seed("Account", {"Name": "Northwind"})
    contact = salesforce.seed(
        "Contact", {"LastName": "Dana", "Email": email, "AccountId": account}
    )
    opportunity = salesforce.seed(
        "Opportunity",
        {
            "Name": "Northwind renewal",
            "StageName": "Proposal/Price Quote",
            "CloseDate": "2027-03-31",
            "AccountId": account,
        },
    )
    salesforce.seed(
        "OpportunityContactRole",
        {"ContactId": contact, "OpportunityId": opportunity, "IsPrimary": True},
    )
    return {"account": account, "contact": contact, "opportunity": opportunity}


def seed_rep(salesforce: SalesforceEmulator) -> str:
    return salesforce.seed(
        "User",
        {"LastName": "Rep", "Username": "rep@seller.sf", "Email": REP, "Alias": "rep"},
    )


def sf_client(salesforce: SalesforceEmulator, config: dict[str, Any]) -> Any:
    issued = salesforce.issue_tokens()
    tokens = Tokens(issued["access_token"], None, instance_url=issued["instance_url"])
    return PROVIDER.client(config, tokens)


# Matching


@pytest.mark.parametrize(
    "address",
    ["o'brien@acme.test", "back\\slash@acme.test", "dana+crm@acme.test"],
)
def test_addresses_with_quotes_backslashes_and_plus_match_exactly(
    salesforce: SalesforceEmulator, config: dict[str, Any], address: str
) -> None:
    contact = salesforce.seed("Contact", {"LastName": "X", "Email": address})
    salesforce.seed("Contact", {"LastName": "Near", "Email": "dana@acme.test"})
    client = sf_client(salesforce, config)
    match = client.match(address)
    assert (match.person_type, match.person_id) == ("Contact", contact)
    assert client.match(address.replace("@", "x@")) is None


def test_an_address_cannot_inject_soql(
    salesforce: SalesforceEmulator, config: dict[str, Any]
) -> None:
    salesforce.seed("Contact", {"LastName": "Someone", "Email": "someone@acme.test"})
    salesforce.seed("Lead", {"LastName": "L", "Company": "C", "Email": "l@acme.test"})
    client = sf_client(salesforce, config)
    for hostile in ("x' OR Email != 'x", "x\\' OR Email != \\'x", "' OR Id != null--"):
        assert client.match(hostile) is None


def test_contact_on_open_opportunity_wins_over_more_active_contact_and_lead(
    salesforce: SalesforceEmulator, config: dict[str, Any]
) -> None:
    email = "shared@acme.test"
    salesforce.seed("Lead", {"LastName": "Lead", "Company": "Acme", "Email": email})
    busy = salesforce.seed(
        "Contact",
        {"LastName": "Busy", "Email": email, "LastActivityDate": "2026-11-30"},
    )
    deal = seed_deal(salesforce, email)
    closed = salesforce.seed(
        "Opportunity",
        {"Name": "Lost", "StageName": "Closed Lost", "CloseDate": "2026-01-01"},
    )
    salesforce.seed(
        "OpportunityContactRole", {"ContactId": busy, "OpportunityId": closed}
    )
    match = sf_client(salesforce, config).match(email)
    assert (match.person_type, match.person_id) == ("Contact", deal["contact"])
    assert match.deal_id == deal["opportunity"]
    assert "2 Contacts share this address" in match.why


def test_without_open_opportunity_the_most_recently_active_contact_wins(
    salesforce: SalesforceEmulator, config: dict[str, Any]
) -> None:
    email = "two@acme.test"
    account = salesforce.seed("Account", {"Name": "Acme"})
    salesforce.seed(
        "Contact", {"LastName": "Old", "Email": email, "LastActivityDate": "2025-01-01"}
    )
    recent = salesforce.seed(
        "Contact",
        {
            "LastName": "Recent",
            "Email": email,
            "AccountId": account,
            "LastActivityDate": "2026-11-01",
        },
    )
    match = sf_client(salesforce, config).match(email)
    assert (match.person_id, match.deal_id, match.account_id) == (recent, None, account)


def test_unconverted_lead_matches_when_no_contact_does(
    salesforce: SalesforceEmulator, config: dict[str, Any]
) -> None:
    email = "lead@acme.test"
    salesforce.seed(
        "Lead",
        {"LastName": "Converted", "Company": "A", "Email": email, "IsConverted": True},
    )
    older, newer = (
        salesforce.seed(
            "Lead",
            {"LastName": name, "Company": "A", "Email": email, "CreatedDate": when},
        )
        for name, when in (
            ("Old", "2026-01-01T00:00:00.000+0000"),
            ("New", "2026-06-01T00:00:00.000+0000"),
        )
    )
    match = sf_client(salesforce, config).match(email)
    assert (match.person_type, match.person_id) == ("Lead", newer)
    assert older != newer


# Writing


def test_sent_open_and_click_tasks_on_contact_and_open_opportunity(
    connected: SalesforceEmulator,
    rep: Account,
    settle: Callable[..., None],
    db: Database,
) -> None:
    deal = seed_deal(connected, "dana@northwind.test")
    owner = seed_rep(connected)
    created = send(
        rep,
        subject="Renewal terms",
        to=["dana@northwind.test"],
        html='<p>Hi</p><a href="https://seller.test/pricing">Pricing</a>',
    )
    hit(rep.client, created["pixel_url"])
    hit(rep.client, created["links"][0]["tracked_url"])
    settle()

    found = {t["Subject"]: t for t in tasks(connected)}
    assert sorted(found) == [
        "Email opened: Renewal terms",
        "Email: Renewal terms",
        "Link clicked: Renewal terms",
    ]
    for task in found.values():
        assert (task["WhoId"], task["WhatId"], task["OwnerId"]) == (
            deal["contact"],
            deal["opportunity"],
            owner,
        )
        assert task["Status"] == "Completed"
    assert found["Email: Renewal terms"]["TaskSubtype"] == "Email"
    assert found["Email opened: Renewal terms"]["TaskSubtype"] == "Task"
    assert (
        "seller.test/pricing (1x)"
        in found["Link clicked: Renewal terms"]["Description"]
    )
    assert "1 open(s) counted" in found["Email opened: Renewal terms"]["Description"]

    hit(rep.client, created["pixel_url"])
    settle()
    again = {t["Subject"]: t for t in tasks(connected)}
    assert len(tasks(connected)) == 3
    opened = again["Email opened: Renewal terms"]
    assert opened["Id"] == found["Email opened: Renewal terms"]["Id"]
    assert "2 open(s) counted" in opened["Description"]
    assert connection_of(db).api_usage is not None


def test_several_recipients_each_get_the_activity_with_the_ambiguity_said(
    connected: SalesforceEmulator,
    rep: Account,
    settle: Callable[..., None],
    db: Database,
) -> None:
    contact = connected.seed("Contact", {"LastName": "C", "Email": "c@acme.test"})
    lead = connected.seed(
        "Lead", {"LastName": "L", "Company": "Acme", "Email": "l@acme.test"}
    )
    created = send(
        rep, subject="Team intro", to=["c@acme.test", "l@acme.test", "nobody@acme.test"]
    )
    hit(rep.client, created["pixel_url"])
    settle()

    opens = [t for t in tasks(connected) if t["Subject"] == "Email opened: Team intro"]
    assert sorted(t["WhoId"] for t in opens) == sorted([contact, lead])
    for task in opens:
        assert "one tracking pixel cannot tell them apart" in task["Description"]
    assert next(t for t in opens if t["WhoId"] == lead)["WhatId"] is None
    states = {(r.recipient, r.kind): r.state for r in ledger(db)}
    assert states[("nobody@acme.test", "sent")] == "no_match"
    assert states[("nobody@acme.test", "open")] == "no_match"
    assert len(tasks(connected)) == 4  # two sent, two opened


def test_no_match_writes_nothing_and_the_ledger_says_so(
    connected: SalesforceEmulator,
    rep: Account,
    settle: Callable[..., None],
    db: Database,
) -> None:
    created = send(rep, subject="Cold", to=["stranger@nowhere.test"])
    hit(rep.client, created["pixel_url"])
    settle()
    assert tasks(connected) == []
    assert {(r.kind, r.state) for r in ledger(db)} == {
        ("sent", "no_match"),
        ("open", "no_match"),
    }
    sign_in(rep.client, rep.email)
    page = rep.client.get(f"/messages/{created['id']}").get_data(as_text=True)
    assert page.count("no Salesforce record has this address") == 2


# Tokens


def test_expired_session_refreshes_once_persists_rotated_tokens_and_retries(
    connected: SalesforceEmulator,
    rep: Account,
    settle: Callable[..., None],
    db: Database,
    config: dict[str, Any],
) -> None:
    seed_deal(connected, "dana@northwind.test")
    cipher = TokenCipher(config["TOKEN_ENCRYPTION_KEYS"])
    before = connection_of(db)
    old_refresh = cipher.decrypt(before.refresh_token)
    connected.expire_access_tokens()
    send(rep, subject="After lunch", to=["dana@northwind.test"])
    settle()

    assert subjects(connected) == ["Email: After lunch"]
    refreshes = [c for c in connected.calls if c.path == "/services/oauth2/token"]
    assert len(refreshes) == 2  # the code exchange, then one refresh
    after = connection_of(db)
    assert after.token_version == before.token_version + 1
    assert cipher.decrypt(after.refresh_token) not in (None, old_refresh)
    assert after.status == "connected"


def test_two_workers_refreshing_at_once_refresh_once_and_both_succeed(
    connected: SalesforceEmulator, db: Database, config: dict[str, Any]
) -> None:
    seen = connection_of(db)
    results: list[Tokens] = []

    def worker() -> None:
        results.append(refresh(db, config, seen.id, seen.token_version))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    refreshes = [c for c in connected.calls if c.path == "/services/oauth2/token"]
    assert len(refreshes) == 2  # the code exchange and a single refresh
    assert len(results) == 2
    assert results[0].access_token == results[1].access_token
    client = PROVIDER.client(config, results[1])
    assert client.owner_for("admin@example.com") == connected.user_id


def test_refused_refresh_needs_reconnect_keeps_events_and_replays_once(
    client: FlaskClient,
    connected: SalesforceEmulator,
    admin: User,
    rep: Account,
    settle: Callable[..., None],
    db: Database,
) -> None:
    seed_deal(connected, "dana@northwind.test")
    connected.expire_access_tokens()
    connected.fault("refresh_refused")
    created = send(rep, subject="Quarterly", to=["dana@northwind.test"])
    hit(rep.client, created["pixel_url"])
    settle()

    lost = connection_of(db)
    assert lost.status == "needs_reconnect"
    assert "invalid_grant" in (lost.status_reason or "")
    assert tasks(connected) == []
    with db.session_factory() as session:
        assert session.scalars(select(Event).where(Event.counted)).all()
    page = client.get("/settings").get_data(as_text=True)
    assert "needs reconnect" in page

    connect(client, connected, admin)
    settle()
    assert subjects(connected) == ["Email opened: Quarterly", "Email: Quarterly"]
    assert connection_of(db).status == "connected"
    settle()
    assert len(tasks(connected)) == 2


def test_forged_or_replayed_state_stores_no_connection(
    client: FlaskClient, salesforce: SalesforceEmulator, admin: User, db: Database
) -> None:
    callback = connect(client, salesforce, admin)
    with db.session_factory() as session:
        session.query(CrmConnection).delete()
        session.commit()
    replayed = client.get(callback)
    assert replayed.status_code == 400
    forged = client.get("/settings/crm/salesforce/callback?code=abc&state=forged")
    assert forged.status_code == 400
    missing = client.get("/settings/crm/salesforce/callback?code=abc")
    assert missing.status_code == 400
    with db.session_factory() as session:
        assert session.scalars(select(CrmConnection)).all() == []


# Limits and failures


def test_request_limit_pauses_writes_and_resumes_with_nothing_lost(
    connected: SalesforceEmulator,
    rep: Account,
    settle: Callable[..., None],
    db: Database,
    redis_conn: redis.Redis,
) -> None:
    seed_deal(connected, "dana@northwind.test")
    connected.fault("request_limit", times=1)
    created = send(rep, subject="Limits", to=["dana@northwind.test"])
    hit(rep.client, created["pixel_url"])
    settle()

    paused = connection_of(db)
    assert paused.paused_until is not None
    assert paused.paused_until > datetime.now(UTC) + timedelta(minutes=10)
    assert paused.status == "connected"
    assert tasks(connected) == []
    scheduled = ScheduledJobRegistry("crm", connection=redis_conn).get_job_ids()
    assert scheduled, "a resume is scheduled"

    with db.session_factory() as session:  # the quarter of an hour goes by
        row = session.get(CrmConnection, paused.id)
        assert row is not None
        row.paused_until = datetime.now(UTC) - timedelta(seconds=1)
        session.commit()
    Queue("crm", connection=redis_conn).enqueue("integrations.jobs.sweep")
    settle()
    assert subjects(connected) == ["Email opened: Limits", "Email: Limits"]


def test_near_the_daily_limit_writes_slow_down(
    connected: SalesforceEmulator,
    rep: Account,
    settle: Callable[..., None],
    db: Database,
) -> None:
    seed_deal(connected, "dana@northwind.test")
    connected.api_usage = 14000
    send(rep, subject="Busy org", to=["dana@northwind.test"])
    settle()
    paused = connection_of(db)
    assert paused.paused_until is not None
    wait = paused.paused_until - datetime.now(UTC)
    assert timedelta(seconds=30) < wait <= timedelta(seconds=60)
    assert "API usage" in (paused.last_error or "")
    assert tasks(connected) == []


@pytest.mark.parametrize(
    "kind, options",
    [
        ("server_error", {"times": 2}),
        ("server_error", {"times": 1, "status": 503}),
        ("slow", {"times": 1, "seconds": 1.5}),
        ("drop_after_commit", {"times": 1}),
    ],
)
def test_failed_or_lost_writes_are_retried_into_exactly_one_task(
    connected: SalesforceEmulator,
    rep: Account,
    settle: Callable[..., None],
    db: Database,
    kind: str,
    options: dict[str, Any],
) -> None:
    deal = seed_deal(connected, "dana@northwind.test")
    connected.fault(kind, path_contains="sobjects/Task", **options)
    send(rep, subject="Flaky", to=["dana@northwind.test"])
    settle()

    [task] = tasks(connected)
    assert (task["Subject"], task["WhoId"]) == ("Email: Flaky", deal["contact"])
    [row] = ledger(db)
    assert (row.state, row.external_id) == ("created", task["Id"])
    writes = [c for c in connected.calls if c.method == "POST" and "Task" in c.path]
    assert len(writes) >= 1


def _descendants(pid: int) -> list[int]:
    """Process ids whose parent chain leads to ``pid`` (the RQ work horses)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_worker_killed_mid_write_leaves_exactly_one_task(
    connected: SalesforceEmulator,
    rep: Account,
    db: Database,
    redis_conn: redis.Redis,
    worker_process: Callable[..., subprocess.Popen[bytes]],
) -> None:
    seed_deal(connected, "dana@northwind.test")
    connected.fault("slow", path_contains="sobjects/Task", seconds=3.0)
    first = worker_process()
    send(rep, subject="Killed", to=["dana@northwind.test"])

    wait_for(lambda: any(r.attempted_at for r in ledger(db)), 20)
    time.sleep(0.3)  # the create request is at Salesforce now
    for pid in [*_descendants(first.pid), first.pid]:
        os.kill(pid, signal.SIGKILL)
    first.wait(5)
    [row] = ledger(db)
    assert row.external_id is None
    wait_for(lambda: tasks(connected), 10)  # Salesforce committed it anyway

    worker_process()
    wait_for(lambda: ledger(db)[0].external_id, 30)
    [task] = tasks(connected)
    assert ledger(db)[0].external_id == task["Id"]


def test_a_burst_for_many_messages_goes_out_in_sobject_collections(
    client: FlaskClient,
    salesforce: SalesforceEmulator,
    admin: User,
    rep: Account,
    settle: Callable[..., None],
) -> None:
    count = 110
    for n in range(count):
        salesforce.seed("Contact", {"LastName": f"P{n}", "Email": f"p{n}@acme.test"})
    for n in range(count):
        created = send(rep, subject=f"Offer {n}", to=[f"p{n}@acme.test"])
        hit(rep.client, created["pixel_url"])
    settle()  # not connected yet: the events wait in the database

    connect(client, salesforce, admin)
    settle(timeout=60)
    assert len(tasks(salesforce)) == 2 * count
    assert len(set(subjects(salesforce))) == 2 * count
    posts = [c for c in salesforce.calls if c.method == "POST"]
    collections = [c for c in posts if c.path.endswith("/composite/sobjects")]
    assert len(collections) >= 2
    assert not [c for c in posts if c.path.endswith("/sobjects/Task")]


def test_settings_page_shows_org_user_and_usage(
    client: FlaskClient,
    connected: SalesforceEmulator,
    rep: Account,
    settle: Callable[..., None],
) -> None:
    seed_deal(connected, "dana@northwind.test")
    send(rep, subject="Hello", to=["dana@northwind.test"])
    settle()
    page = client.get("/settings").get_data(as_text=True)
    assert connected.org_id in page
    assert "Ada Admin (admin@emulated-org.example.com)" in page
    assert "api_requests_today" in page


@pytest.mark.parametrize(
    ("domain", "accepted"),
    [
        ("acme.my.salesforce.com", True),
        ("https://acme--uat.sandbox.my.salesforce.com/", True),
        ("evil.test\\.my.salesforce.com", False),
        ("evil.test/.my.salesforce.com", False),
        ("a@evil.test.my.salesforce.com", False),
        ("https://[::1", False),
        ("my.salesforce.com", False),
    ],
)
def test_a_my_domain_must_be_a_salesforce_host(
    client: FlaskClient, admin: User, domain: str, accepted: bool
) -> None:
    sign_in_browser(client, admin.id)
    with client.session_transaction() as session:
        session["csrf"] = "csrf-test"
    form = {"csrf_token": "csrf-test", "environment": "custom", "my_domain": domain}
    started = client.post("/settings/crm/salesforce/connect", data=form)
    if accepted:
        assert started.status_code == 302
        host = urlsplit(started.headers["Location"]).hostname or ""
        assert host.endswith(".my.salesforce.com") and host in domain
    else:
        assert started.status_code == 400
