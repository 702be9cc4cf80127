"""Privacy settings and do-not-track: what each choice leaves in the database."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, text

from app.db import Database
from app.models import DoNotTrack, Event, Message, Organization
from app.privacy.rules import in_eea_or_uk
from tests.conftest import ROOT, Account, worker_env
from tests.test_tracking import LINKOPING, hit

HTML = (
    '<html><body><p>Hi</p><a href="https://seller.test/offer">offer</a></body></html>'
)


@pytest.fixture
def admin(make_account: Callable[..., Account]) -> Account:
    return make_account("admin@seller.test", admin=True)


@pytest.fixture
def rep(make_account: Callable[..., Account], admin: Account) -> Account:
    return make_account("rep@seller.test")


def patch(account: Account, **changes: Any) -> Any:
    return account.client.patch(
        "/api/v1/settings/privacy", headers=account.headers, json=changes
    )


def stored_events(database: Database) -> list[Event]:
    with database.session_factory() as session:
        return list(session.scalars(select(Event).order_by(Event.id)))


def open_and_click(account: Account, to: str = "prospect@example.com") -> None:
    created = account.send(html=HTML, to=[to])
    hit(account.client, created["pixel_url"])
    hit(account.client, created["links"][0]["tracked_url"])


def anywhere_in_database(database: Database, needle: str) -> list[str]:
    """Tables with a row whose text holds ``needle``."""
    found = []
    with database.engine.connect() as conn:
        tables = conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        ).scalars()
        for table in tables:
            # The table names come from the catalogue, not from input.
            sql = f'SELECT count(*) FROM "{table}" t WHERE t::text LIKE :n'  # noqa: S608
            query = text(sql)
            if conn.execute(query, {"n": f"%{needle}%"}).scalar():
                found.append(table)
    return found


def test_defaults_truncate_the_address_after_the_city_lookup(
    admin: Account, database: Database, run_jobs: Callable[[], None]
) -> None:
    assert admin.get("/api/v1/settings/privacy").get_json() == {
        "ip_policy": "truncate",
        "location_precision": "city",
        "raw_retention_days": 90,
        "event_retention_days": None,
        "track_eea": True,
    }
    open_and_click(admin)
    run_jobs()
    events = stored_events(database)
    assert [e.type for e in events] == ["open", "click"]
    for event in events:
        assert event.ip == "89.160.20.0"
        assert event.ip_prefix == "89.160.20.0/24"
        assert event.city == "Linköping" and event.country == "Sweden"
    assert anywhere_in_database(database, LINKOPING) == []


def test_full_policy_keeps_the_whole_address(
    admin: Account, database: Database, run_jobs: Callable[[], None]
) -> None:
    assert patch(admin, ip_policy="full").status_code == 200
    open_and_click(admin)
    run_jobs()
    assert {e.ip for e in stored_events(database)} == {LINKOPING}


@pytest.mark.parametrize(
    ("remote", "kept"),
    [
        (f"::ffff:{LINKOPING}", LINKOPING),
        ("not-an-address", None),
        (f"{LINKOPING}:443", LINKOPING),  # as some proxies append the port
        (f"{LINKOPING}:https", None),
    ],
)
def test_full_policy_keeps_an_address_in_one_spelling_and_nothing_else(
    admin: Account,
    database: Database,
    run_jobs: Callable[[], None],
    remote: str,
    kept: str | None,
) -> None:
    assert patch(admin, ip_policy="full").status_code == 200
    created = admin.send(html=HTML)
    hit(admin.client, created["pixel_url"], environ_base={"REMOTE_ADDR": remote})
    run_jobs()
    assert [e.ip for e in stored_events(database)] == [kept]


def test_no_address_policy_writes_it_nowhere_not_even_in_worker_logs(
    admin: Account,
    database: Database,
    config: dict[str, Any],
    app: Any,
) -> None:
    assert patch(admin, ip_policy="none").status_code == 200
    open_and_click(admin)
    app.extensions["trailmark.spool"].flush()
    worker = subprocess.run(
        [sys.executable, "-m", "workers", "--burst", "--log-level", "DEBUG"],
        cwd=ROOT,
        env=worker_env(config),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stderr
    assert "workers.ingest ingested hits=" in worker.stderr
    assert LINKOPING not in worker.stderr + worker.stdout
    assert "89.160.20" not in worker.stderr + worker.stdout
    events = stored_events(database)
    assert len(events) == 2
    for event in events:
        assert event.ip is None and event.ip_prefix is None
        assert event.city == "Linköping"  # the lookup ran before the address went
    assert anywhere_in_database(database, "89.160.20") == []


@pytest.mark.parametrize(
    ("precision", "region", "city"),
    [
        ("city", "Östergötland County", "Linköping"),
        ("region", "Östergötland County", None),
        ("country", None, None),
    ],
)
def test_location_precision_limits_what_is_stored(
    admin: Account,
    database: Database,
    run_jobs: Callable[[], None],
    precision: str,
    region: str | None,
    city: str | None,
) -> None:
    assert patch(admin, location_precision=precision).status_code == 200
    open_and_click(admin)
    run_jobs()
    for event in stored_events(database):
        assert (event.country, event.region, event.city) == ("Sweden", region, city)
    if city is None:
        assert anywhere_in_database(database, "Linköping") == []


def test_settings_can_be_read_by_members_but_changed_by_admins_only(
    admin: Account, rep: Account
) -> None:
    assert rep.get("/api/v1/settings/privacy").status_code == 200
    response = patch(rep, ip_policy="full")
    assert response.status_code == 403
    assert "administrator" in response.get_json()["message"]
    assert admin.get("/api/v1/settings/privacy").get_json()["ip_policy"] == "truncate"


def test_settings_patch_validates_each_field(admin: Account) -> None:
    response = patch(
        admin,
        ip_policy="partial",
        location_precision="street",
        raw_retention_days=0,
        event_retention_days="soon",
        track_eea="maybe",
        colour="blue",
    )
    assert response.status_code == 422
    fields = response.get_json()["fields"]
    assert set(fields) == {
        "ip_policy",
        "location_precision",
        "raw_retention_days",
        "event_retention_days",
        "track_eea",
        "colour",
    }
    assert "full, truncate, none" in fields["ip_policy"][0]


def test_fractional_days_are_refused_not_rounded(admin: Account) -> None:
    response = patch(admin, raw_retention_days=1.5)
    assert response.status_code == 422
    assert "raw_retention_days" in response.get_json()["fields"]


def test_retention_days_can_be_switched_off_with_null(admin: Account) -> None:
    body = patch(admin, raw_retention_days=None, event_retention_days=365).get_json()
    assert body["raw_retention_days"] is None and body["event_retention_days"] == 365


def test_do_not_track_address_gets_untouched_html_and_the_reason(
    rep: Account, database: Database, run_jobs: Callable[[], None]
) -> None:
    body = {"value": " Ann@Example.COM "}
    added = rep.post("/api/v1/privacy/do-not-track", json=body)
    assert added.status_code == 201
    assert added.get_json()["value"] == "ann@example.com"
    assert added.get_json()["kind"] == "address"
    created = rep.send(html=HTML, to=["someone@else.test"], cc=["ann@example.com"])
    assert created["html"] == HTML
    assert created["pixel_url"] is None and created["links"] == []
    assert created["tracking"]["opens"] is False
    assert created["tracking"]["links"] is False
    assert "do-not-track" in created["tracking"]["reason"]
    message = rep.get(f"/api/v1/messages/{created['id']}").get_json()
    assert message["tracking"] == created["tracking"]
    with database.session_factory() as session:
        row = session.scalars(select(Message)).one()
        assert row.tracking_disabled_reason == created["tracking"]["reason"]
        assert row.links == []


def test_do_not_track_domain_covers_its_subdomains(rep: Account) -> None:
    rep.post("/api/v1/privacy/do-not-track", json={"value": "example.org"})
    assert rep.send(html=HTML, to=["a@eu.example.org"])["pixel_url"] is None
    assert rep.send(html=HTML, to=["a@example.org"])["pixel_url"] is None
    assert rep.send(html=HTML, to=["a@notexample.org"])["pixel_url"] is not None


def test_an_international_domain_is_listed_in_either_spelling(rep: Account) -> None:
    rep.post("/api/v1/privacy/do-not-track", json={"value": "bücher.de"})
    rep.post("/api/v1/privacy/do-not-track", json={"value": "xn--mnchen-3ya.de"})
    assert rep.send(html=HTML, to=["x@xn--bcher-kva.de"])["pixel_url"] is None
    assert rep.send(html=HTML, to=["x@Bücher.de"])["pixel_url"] is None
    assert rep.send(html=HTML, to=["x@münchen.de"])["pixel_url"] is None
    assert rep.send(html=HTML, to=["x@buecher.de"])["pixel_url"] is not None


def test_a_domain_with_sharp_s_is_listed_in_every_spelling(rep: Account) -> None:
    rep.post("/api/v1/privacy/do-not-track", json={"value": "straße.de"})
    rep.post("/api/v1/privacy/do-not-track", json={"value": "xn--fu-hia.de"})
    assert rep.send(html=HTML, to=["x@xn--strae-oqa.de"])["pixel_url"] is None
    assert rep.send(html=HTML, to=["x@Straße.de"])["pixel_url"] is None
    assert rep.send(html=HTML, to=["x@fuß.de"])["pixel_url"] is None
    # Since IDNA 2008, strasse.de is a domain of its own.
    assert rep.send(html=HTML, to=["x@strasse.de"])["pixel_url"] is not None


def test_an_entry_kept_in_the_older_spelling_still_covers_the_domain(
    rep: Account, database: Database
) -> None:
    with database.begin() as session:
        org_id = session.scalar(select(Organization.id))
        session.add(DoNotTrack(org_id=org_id, value="strasse.de", kind="domain"))
    assert rep.send(html=HTML, to=["x@straße.de"])["pixel_url"] is None


def test_a_recipient_listed_after_sending_is_not_tracked_any_more(
    rep: Account, database: Database, run_jobs: Callable[[], None]
) -> None:
    created = rep.send(html=HTML, to=["late@prospect.test"])
    rep.post("/api/v1/privacy/do-not-track", json={"value": "late@prospect.test"})
    hit(rep.client, created["pixel_url"])
    hit(rep.client, created["links"][0]["tracked_url"])
    run_jobs()
    assert stored_events(database) == []


def test_per_message_switch_leaves_the_html_untouched(rep: Account) -> None:
    created = rep.send(html=HTML, track=False)
    assert created["html"] == HTML and created["pixel_url"] is None
    assert created["tracking"] == {
        "opens": False,
        "links": False,
        "reason": "Tracking was turned off for this message by its sender.",
    }
    tracked = rep.send(html=HTML)
    assert tracked["tracking"] == {"opens": True, "links": True, "reason": None}


def test_eea_option_skips_recipients_with_an_eea_or_uk_country_domain(
    admin: Account,
) -> None:
    assert admin.send(html=HTML, to=["anna@firma.de"])["pixel_url"] is not None
    assert patch(admin, track_eea=False).status_code == 200
    for address in ("anna@firma.de", "bo@shop.co.uk", "eva@city.gov.se", "x@y.eu"):
        created = admin.send(html=HTML, to=[address])
        assert created["html"] == HTML, address
        assert "EEA" in created["tracking"]["reason"]
    for address in ("bob@company.com", "li@startup.io", "ana@empresa.com.br"):
        assert admin.send(html=HTML, to=[address])["pixel_url"] is not None, address


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("a@b.de", True),
        ("a@b.co.uk", True),
        ("a@B.NO.", True),
        ("a@b.ch", False),  # Switzerland is not in the EEA
        ("a@b.com", False),
        ("a@b.me", False),
        ("a@b.xn--90ae", True),
        ("a@b.\u0431\u0433", True),  # Bulgaria's Cyrillic ccTLD
    ],
)
def test_eea_decision_uses_country_code_domains_only(
    address: str, expected: bool
) -> None:
    assert in_eea_or_uk(address) is expected


def test_do_not_track_list_validation_and_permissions(
    admin: Account, rep: Account
) -> None:
    for value in ("not an address", "a@", "localhost", "-bad-.com", ""):
        response = rep.post("/api/v1/privacy/do-not-track", json={"value": value})
        assert response.status_code == 422, value
        assert "value" in response.get_json()["fields"]
    assert rep.post("/api/v1/privacy/do-not-track", json={}).status_code == 422
    rep.post("/api/v1/privacy/do-not-track", json={"value": "ann@example.com"})
    again = rep.post("/api/v1/privacy/do-not-track", json={"value": "ANN@example.com"})
    assert again.status_code == 200
    listed = rep.get("/api/v1/privacy/do-not-track").get_json()["entries"]
    assert [e["value"] for e in listed] == ["ann@example.com"]

    def remove(account: Account, value: str) -> Any:
        return account.client.delete(
            "/api/v1/privacy/do-not-track",
            headers=account.headers,
            json={"value": value},
        )

    assert remove(rep, "ann@example.com").status_code == 403
    assert remove(admin, "nobody@example.com").status_code == 404
    assert remove(admin, "ann@example.com").status_code == 200
    assert rep.get("/api/v1/privacy/do-not-track").get_json()["entries"] == []


def test_lists_are_per_organisation(make_account: Callable[..., Account]) -> None:
    ours = make_account("a@seller.test", org="Seller")
    theirs = make_account("b@other.test", org="Other")
    ours.post("/api/v1/privacy/do-not-track", json={"value": "ann@example.com"})
    assert theirs.get("/api/v1/privacy/do-not-track").get_json()["entries"] == []
    assert theirs.send(html=HTML, to=["ann@example.com"])["pixel_url"] is not None


def test_pixel_and_link_answers_set_no_cookie_even_for_a_signed_in_browser(
    admin: Account, client: FlaskClient
) -> None:
    created = admin.send(html=HTML)
    with client.session_transaction() as session:
        session["csrf"] = "t"
    client.post(
        "/login",
        data={
            "email": admin.email,
            "password": "correct horse",
            "csrf_token": "t",
        },
    )
    assert client.get("/").status_code == 200
    for url in (created["pixel_url"], created["links"][0]["tracked_url"]):
        response = hit(client, url)
        assert response.status_code in {200, 302}
        assert "Set-Cookie" not in response.headers


def sign_in(client: FlaskClient, account: Account) -> None:
    with client.session_transaction() as session:
        session["csrf"] = "t"
    response = client.post(
        "/login",
        data={"email": account.email, "password": "correct horse", "csrf_token": "t"},
    )
    assert response.status_code == 302
    with client.session_transaction() as session:
        session["csrf"] = "t"  # signing in starts a new session


def test_settings_page_changes_privacy_settings_and_the_list(
    admin: Account, client: FlaskClient, database: Database
) -> None:
    sign_in(client, admin)
    page = client.get("/settings").get_data(as_text=True)
    assert 'name="ip_policy"' in page and "Nobody yet." in page
    form = {
        "csrf_token": "t",
        "ip_policy": "none",
        "location_precision": "country",
        "raw_retention_days": "30",
        "event_retention_days": "",
        "skip_eea": "on",
    }
    assert client.post("/settings/privacy", data=form).status_code == 303
    assert admin.get("/api/v1/settings/privacy").get_json() == {
        "ip_policy": "none",
        "location_precision": "country",
        "raw_retention_days": 30,
        "event_retention_days": None,
        "track_eea": False,
    }
    added = client.post(
        "/settings/privacy/do-not-track",
        data={"csrf_token": "t", "value": "ann@example.com"},
    )
    assert added.status_code == 303
    page = client.get("/settings").get_data(as_text=True)
    assert 'data-value="ann@example.com"' in page
    assert "checked" in page
    client.post(
        "/settings/privacy/do-not-track/remove",
        data={"csrf_token": "t", "value": "ann@example.com"},
    )
    assert "Nobody yet." in client.get("/settings").get_data(as_text=True)


def test_settings_page_refuses_bad_values_and_missing_csrf(
    admin: Account, client: FlaskClient
) -> None:
    sign_in(client, admin)
    bad = {"csrf_token": "t", "ip_policy": "all", "location_precision": "city"}
    response = client.post("/settings/privacy", data=bad, follow_redirects=True)
    assert "Addresses: Choose one of" in response.get_data(as_text=True)
    forged = {"ip_policy": "full", "location_precision": "city"}
    assert client.post("/settings/privacy", data=forged).status_code == 400
    body = admin.get("/api/v1/settings/privacy").get_json()
    assert body["ip_policy"] == "truncate"


def test_settings_page_privacy_form_is_for_admins_only(
    rep: Account, client: FlaskClient
) -> None:
    sign_in(client, rep)
    data = {"csrf_token": "t", "ip_policy": "full", "location_precision": "city"}
    assert client.post("/settings/privacy", data=data).status_code == 403
