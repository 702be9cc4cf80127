"""Connecting Salesforce in a real browser, then a prospect's open and click in it.

An admin connects the emulated org from the settings page (the consent page's
"Allow" button included); a rep's tracked email to a Contact on an open
Opportunity is opened and clicked in another browser; a real worker writes the
Tasks the org then holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from playwright.sync_api import BrowserContext, Page, expect

from emulators.salesforce import SalesforceEmulator
from tests.browser.conftest import Destination
from tests.conftest import Account, wait_for

pytestmark = pytest.mark.browser

PASSWORD = "correct horse"
REP = "rep@seller.test"
PROSPECT = "dana@northwind.test"
LONDON = "81.2.69.142"
CHROME_ON_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)


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
    }


def sign_in(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def seed_org(salesforce: SalesforceEmulator) -> dict[str, str]:
    """Dana, a Contact on Northwind's open renewal, and the rep as a User."""
    account = salesforce.seed("Account", {"Name": "Northwind"})
    contact = salesforce.seed(
        "Contact", {"LastName": "Dana", "Email": PROSPECT, "AccountId": account}
    )
    opportunity = salesforce.seed(
        "Opportunity",
        {
            "Name": "Northwind renewal",
            "StageName": "Negotiation/Review",
            "CloseDate": "2027-03-31",
            "AccountId": account,
        },
    )
    salesforce.seed(
        "OpportunityContactRole", {"ContactId": contact, "OpportunityId": opportunity}
    )
    owner = salesforce.seed(
        "User",
        {"LastName": "Rep", "Username": "rep@seller.sf", "Email": REP, "Alias": "rep"},
    )
    return {"contact": contact, "opportunity": opportunity, "owner": owner}


def test_admin_connects_salesforce_and_an_open_and_click_become_tasks(
    live_server: Any,
    live_url: str,
    worker: None,
    salesforce: SalesforceEmulator,
    destination: Destination,
    make_account: Callable[..., Account],
    new_context: Callable[..., BrowserContext],
    prospect_context: Callable[..., BrowserContext],
) -> None:
    make_account("admin@seller.test", admin=True)
    rep = make_account(REP)
    org = seed_org(salesforce)

    # The emulator's certificate is its own; the browser is told to accept it.
    admin = new_context(ignore_https_errors=True).new_page()
    sign_in(admin, live_url, "admin@seller.test")
    admin.goto(f"{live_url}/settings")
    admin.get_by_role("button", name="Connect Salesforce").click()
    expect(admin).to_have_title("Allow Access?")
    assert admin.url.startswith(f"{salesforce.url}/services/oauth2/authorize")
    admin.get_by_role("button", name="Allow").click()
    admin.wait_for_url(f"{live_url}/settings")
    card = admin.locator('.connection[data-provider="salesforce"]')
    expect(card.locator("[data-status]")).to_have_attribute("data-status", "connected")
    expect(card.locator(".account")).to_have_text(salesforce.org_id)
    expect(card.locator(".user")).to_have_text(
        "Ada Admin (admin@emulated-org.example.com)"
    )

    link = f"{destination.url}/renewal/terms"
    response = requests.post(
        f"{live_url}/api/v1/messages",
        json={
            "subject": "Renewal terms",
            "to": [PROSPECT],
            "html": f'<p>Dana, the terms:</p><a href="{link}">Read the terms</a>',
        },
        headers=rep.headers,
        timeout=10,
    )
    assert response.status_code == 201, response.text
    created = response.json()

    prospect = prospect_context(
        user_agent=CHROME_ON_WINDOWS, extra_http_headers={"X-Forwarded-For": LONDON}
    )
    mail = prospect.new_page()
    with mail.expect_response(created["pixel_url"]):
        mail.set_content(created["html"])
    mail.get_by_role("link", name="Read the terms").click()
    mail.wait_for_url(link)
    assert destination.visits == ["/renewal/terms"]

    def three_tasks() -> list[dict[str, Any]]:
        found = salesforce.records("Task")
        return found if len(found) >= 3 else []

    wait_for(three_tasks, 30)
    found = {t["Subject"]: t for t in salesforce.records("Task")}
    assert sorted(found) == [
        "Email opened: Renewal terms",
        "Email: Renewal terms",
        "Link clicked: Renewal terms",
    ]
    for task in found.values():
        assert (task["WhoId"], task["WhatId"], task["OwnerId"]) == (
            org["contact"],
            org["opportunity"],
            org["owner"],
        )
    assert "London" in found["Email opened: Renewal terms"]["Description"]
    assert "/renewal/terms" in found["Link clicked: Renewal terms"]["Description"]
