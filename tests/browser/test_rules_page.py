"""The follow-up rules page in a real browser, with a live server and a real worker.

A rep previews a rule on what their prospects did in the last 30 days, adds it,
edits it, switches it off and on, sees a reminder pop up when a prospect opens the
next message, and deletes the rule.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from flask import Flask
from playwright.sync_api import BrowserContext, Page, expect
from sqlalchemy import update

from app.followups.schedule import Schedule, deliverable_at
from app.models import User
from tests.browser.conftest import LiveServer
from tests.browser.test_dashboard_e2e import (
    CHROME_ON_WINDOWS,
    LONDON,
    RECORD_TOASTS,
    register,
    sign_in,
)
from tests.conftest import Account, wait_for

pytestmark = pytest.mark.browser

ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Asia/Kolkata",
    "Pacific/Auckland",
    "America/Sao_Paulo",
)


def working_zone() -> str | None:
    """A time zone where it is working hours right now, if there is one."""
    now = datetime.now(UTC)
    for zone in ZONES:
        if deliverable_at(now, Schedule(timezone=zone)) == now:
            return zone
    return None


def prospect_opens(base: str, rep: Account, created: dict[str, Any]) -> None:
    """The prospect's mail client fetches the pixel; wait until it is counted."""
    answer = requests.get(
        created["pixel_url"],
        headers={"User-Agent": CHROME_ON_WINDOWS, "X-Forwarded-For": LONDON},
        timeout=5,
    )
    assert answer.status_code == 200

    def counted() -> bool:
        events = requests.get(
            f"{base}/api/v1/messages/{created['id']}/events",
            headers=rep.headers,
            timeout=5,
        ).json()["events"]
        return any(e["counted"] for e in events)

    wait_for(counted, 20)


def rule_row(page: Page, name: str) -> Any:
    return page.locator(f"tr.rule[data-rule='{name}']")


def test_a_rep_previews_adds_edits_switches_off_and_deletes_a_rule(
    app: Flask,
    live_server: LiveServer,
    worker: None,
    make_account: Callable[..., Account],
    new_context: Callable[..., BrowserContext],
) -> None:
    base = live_server.url
    rep = make_account("rep@seller.test")
    zone = working_zone()
    with app.extensions["trailmark.db"].begin() as session:
        session.execute(
            update(User).where(User.email == rep.email).values(timezone=zone or "UTC")
        )
    earlier = register(base, rep, subject="Pilot pricing", html="<p>Hello</p>")
    prospect_opens(base, rep, earlier)

    page = new_context().new_page()
    page.add_init_script(RECORD_TOASTS)
    sign_in(page, base, rep.email)
    page.get_by_role("link", name="Follow-ups").click()
    expect(page.get_by_role("heading", name="Follow-up rules")).to_be_visible()
    expect(page.locator("#rule-list .empty")).to_have_text("No rules yet.")

    # A rule without a name is refused, with the reason beside the field.
    page.get_by_role("button", name="Add rule").click()
    expect(page.locator("[data-error='name']")).to_be_visible()

    page.get_by_label("Name").fill("Nudge on first open")
    page.get_by_label("Trigger").select_option("first_open")
    page.get_by_role("button", name="Preview on my last 30 days").click()
    preview = page.locator("#preview")
    expect(preview).to_contain_text("this rule would have fired for 1")
    expect(preview.locator(".preview-row")).to_have_count(1)
    expect(preview).to_contain_text("Pilot pricing")
    expect(preview).to_contain_text("reminder at")

    page.get_by_role("button", name="Add rule").click()
    row = rule_row(page, "Nudge on first open")
    expect(row).to_be_visible()
    expect(row.locator(".state")).to_have_text("on")
    expect(row.locator(".summary")).to_contain_text("the first counted open")

    row.get_by_role("link", name="Edit").click()
    page.get_by_label("Name").fill("Call after first open")
    page.get_by_label("CRM follow-up task").check()
    page.get_by_label("Task subject").fill("Call {recipient}")
    page.get_by_label("Priority").select_option("high")
    page.get_by_role("button", name="Save rule").click()
    row = rule_row(page, "Call after first open")
    expect(row.locator(".summary")).to_contain_text("high priority")
    expect(rule_row(page, "Nudge on first open")).to_have_count(0)

    row.get_by_role("button", name="Switch off").click()
    expect(rule_row(page, "Call after first open").locator(".state")).to_have_text(
        "off"
    )
    rule_row(page, "Call after first open").get_by_role(
        "button", name="Switch on"
    ).click()
    expect(rule_row(page, "Call after first open").locator(".state")).to_have_text("on")

    if zone is not None:
        # Working hours somewhere: the reminder pops up as soon as the worker fires.
        expect(page.locator("html")).to_have_attribute("data-stream", "open")
        latest = register(base, rep, subject="Renewal terms", html="<p>Hi</p>")
        prospect_opens(base, rep, latest)
        wait_for(
            lambda: any(
                "Follow up: Renewal terms" in text
                for text in page.evaluate("window.shownToasts")
            ),
            30,
        )

    page.once("dialog", lambda dialog: dialog.accept())
    _delete(page, "Call after first open")
    expect(page.locator("#rule-list .empty")).to_have_text("No rules yet.")
    assert requests.get(
        f"{base}/api/v1/rules", headers=rep.headers, timeout=5
    ).json() == {"rules": []}


def _delete(page: Page, name: str) -> None:
    rule_row(page, name).get_by_role("button", name="Delete").click()
