"""The pages: signing in, the inbox, a message's timeline, settings for admins only."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import Account
from tests.test_tracking import hit


def sign_in(
    client: FlaskClient, email: str, password: str = "correct horse", query: str = ""
) -> Any:
    page = client.get(f"/login{query}").get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the sign-in form carries a CSRF token"
    form = {"email": email, "password": password, "csrf_token": match.group(1)}
    return client.post(f"/login{query}", data=form)


def test_signed_out_visitors_are_sent_to_sign_in(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/"
    with_query = client.get("/rules?x=1")
    assert with_query.headers["Location"] == "/login?next=/rules?x%3D1"


def test_wrong_password_says_so_and_signs_nobody_in(
    client: FlaskClient, account: Account
) -> None:
    response = sign_in(client, account.email, "wrong")
    assert response.status_code == 401
    assert "do not match" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


@pytest.mark.parametrize("token", [None, "\u00fc"])
def test_sign_in_without_the_right_csrf_token_is_refused(
    client: FlaskClient, account: Account, token: str | None
) -> None:
    client.get("/login")
    form = {"email": account.email, "password": "x"}
    response = client.post(
        "/login", data=form | ({"csrf_token": token} if token else {})
    )
    assert response.status_code == 400
    assert "expired" in response.get_data(as_text=True)


def test_sign_in_never_redirects_off_site(
    client: FlaskClient, account: Account
) -> None:
    response = sign_in(client, account.email, query="?next=//evil.test/x")
    assert response.status_code == 302
    assert "evil.test" not in response.headers["Location"]


def test_a_next_with_a_newline_lands_on_the_inbox(
    client: FlaskClient, account: Account
) -> None:
    response = sign_in(client, account.email, query="?next=/%0A%5Cevil.test")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize("rule_id", ["abc", "1.0", "99999999999999999999"])
def test_a_rule_form_with_a_bad_rule_id_is_404(
    client: FlaskClient, account: Account, rule_id: str
) -> None:
    sign_in(client, account.email)
    client.get("/rules")  # the form's page hands out the CSRF token
    response = client.post(
        "/rules", data={"csrf_token": _csrf(client), "rule_id": rule_id}
    )
    assert response.status_code == 404


def test_inbox_escapes_subjects_and_shows_the_latest_event(
    client: FlaskClient, account: Account, run_jobs: Callable[[], None]
) -> None:
    created = account.send(subject="<script>alert(1)</script> Q3", html="<p>Hi</p>")
    hit(client, created["pixel_url"])
    run_jobs()
    sign_in(client, account.email)
    page = client.get("/").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Q3" in page
    assert "opened just now in Linköping, Sweden on Chrome on Mac OS X" in page


def test_message_page_greys_out_machine_events_with_reasons(
    client: FlaskClient, account: Account, run_jobs: Callable[[], None]
) -> None:
    created = account.send(html="<p>Hi</p>")
    hit(client, created["pixel_url"])
    hit(
        client,
        created["pixel_url"],
        headers={"User-Agent": "python-requests/2.31 <b>x</b>"},
    )
    run_jobs()
    sign_in(client, account.email)
    page = client.get(f"/messages/{created['id']}").get_data(as_text=True)
    assert page.count('class="event counted"') == 1
    assert page.count('class="event graded-out"') == 1
    assert "ua:bot" in page
    assert "<b>x</b>" not in page


def test_a_busy_message_lists_its_newest_events_and_charts_them_all(
    client: FlaskClient,
    account: Account,
    run_jobs: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.pages import views

    monkeypatch.setattr(views, "TIMELINE_LIMIT", 3)
    created = account.send(html="<p>Hi</p>")
    for _ in range(5):
        hit(client, created["pixel_url"])
    run_jobs()
    sign_in(client, account.email)

    page = client.get(f"/messages/{created['id']}").get_data(as_text=True)
    timeline = client.get(f"/messages/{created['id']}/timeline").get_data(as_text=True)

    for shown in (page, timeline):
        assert shown.count('class="event counted"') == 3
        assert "The latest 3 of 5 events" in shown
        assert "5 counted, 0 graded out" in shown  # the chart has every open


def test_the_senders_own_click_reads_as_a_click(
    client: FlaskClient, account: Account, run_jobs: Callable[[], None]
) -> None:
    created = account.send(html='<a href="https://example.com/x">x</a>')
    # From the address that registered the message, moments after: the sender's own.
    hit(
        client,
        created["links"][0]["tracked_url"],
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
    )
    run_jobs()
    sign_in(client, account.email)

    page = client.get(f"/messages/{created['id']}").get_data(as_text=True)

    assert 'data-classification="self"' in page
    assert "Your own click" in page and "Your own open" in page  # and its implied open


def test_another_organisations_message_page_is_404(
    client: FlaskClient, make_account: Callable[..., Account]
) -> None:
    ours = make_account("ann@seller.test", org="Seller")
    make_account("bob@rival.test", org="Rival")
    created = ours.send(text="hi")
    sign_in(client, "bob@rival.test")
    assert client.get(f"/messages/{created['id']}").status_code == 404


def test_settings_are_for_admins_only(
    client: FlaskClient, make_account: Callable[..., Account]
) -> None:
    make_account("rep@seller.test", org="Seller")
    make_account("boss@seller.test", org="Seller", admin=True)
    sign_in(client, "rep@seller.test")
    assert client.get("/settings").status_code == 403
    client.post("/logout", data={"csrf_token": _csrf(client)})
    sign_in(client, "boss@seller.test")
    page = client.get("/settings").get_data(as_text=True)
    assert "<h2>CRM connections</h2>" in page


def test_a_crm_without_a_client_id_says_so_instead_of_offering_to_connect(
    client: FlaskClient, make_account: Callable[..., Account], app: Any
) -> None:
    make_account("boss@seller.test", org="Seller", admin=True)
    sign_in(client, "boss@seller.test")
    app.config["HUBSPOT_CLIENT_ID"] = "hs-client"  # Salesforce stays unconfigured

    page = client.get("/settings").get_data(as_text=True)

    assert "Connect HubSpot" in page
    assert "Connect Salesforce" not in page
    assert "Connecting Salesforce needs SALESFORCE_CLIENT_ID" in page


def _csrf(client: FlaskClient) -> str:
    with client.session_transaction() as session:
        return str(session["csrf"])


@pytest.mark.parametrize(
    "path", ["/login", "/", "/settings", "/rules", "/messages/no-such-message"]
)
def test_every_page_refuses_to_be_framed(
    client: FlaskClient, make_account: Callable[..., Account], path: str
) -> None:
    make_account("boss@seller.test", org="Seller", admin=True)
    sign_in(client, "boss@seller.test")

    response = client.get(path)

    assert response.mimetype == "text/html"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_the_tracking_pixel_and_the_api_carry_no_page_headers(
    account: Account,
) -> None:
    created = account.send(html="<p>Hi</p>")
    for response in (
        hit(account.client, created["pixel_url"]),
        account.get("/api/v1/messages"),
    ):
        assert "X-Frame-Options" not in response.headers
        assert "Content-Security-Policy" not in response.headers
