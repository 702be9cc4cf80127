"""The product's promise, in a real browser: a person opens or clicks, the rep sees it.

A live web process and a real worker run the whole path: the prospect's browser
fetches the pixel and follows a tracked link, the worker grades and stores the hits,
and the rep's pages show popups, fresh inbox counts and the timeline as it happens.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import BrowserContext, Dialog, Page, Route, expect
from sqlalchemy import select

from app.models import User
from tests.browser.conftest import Destination, LiveServer
from tests.conftest import DATA, Account, wait_for

pytestmark = pytest.mark.browser

PASSWORD = "correct horse"  # what make_account gives every user
PROSPECT = "dana@prospect.test"
LONDON = "81.2.69.142"  # in MaxMind's City test database
CHROME_ON_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)

# Keeps the text of every popup a page shows, however briefly it stays up.
RECORD_TOASTS = """
window.shownToasts = [];
new MutationObserver(function (records) {
  records.forEach(function (record) {
    record.addedNodes.forEach(function (node) {
      if (node.classList && node.classList.contains("toast")) {
        window.shownToasts.push(node.textContent);
      }
    });
  });
}).observe(document, { childList: true, subtree: true });
"""

_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def render(template: str, values: dict[str, str]) -> str:
    """Fill a template's placeholders, escaped as a mail template engine does."""
    return _PLACEHOLDER.sub(lambda match: html.escape(values[match[1]]), template)


def sign_in(page: Page, base: str, email: str, password: str = PASSWORD) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def register(base: str, rep: Account, **message: Any) -> dict[str, Any]:
    """Register a message through the live API, as a mail add-on does."""
    body = {"to": [PROSPECT], **message}
    response = requests.post(
        f"{base}/api/v1/messages", json=body, headers=rep.headers, timeout=10
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def notifications(base: str, rep: Account) -> list[dict[str, Any]]:
    response = requests.get(
        f"{base}/api/v1/notifications", headers=rep.headers, timeout=5
    )
    found: list[dict[str, Any]] = response.json()["notifications"]
    return found


def expect_live(page: Page) -> None:
    """Wait until the page's notification stream is connected."""
    expect(page.locator("html")).to_have_attribute("data-stream", "open")


def open_live(page: Page, url: str) -> None:
    page.goto(url)
    expect_live(page)


def record_dialogs(page: Page) -> list[str]:
    shown: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        shown.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    return shown


def welcome_email(site: Destination) -> tuple[str, str]:
    """Postmark's welcome template, rendered with links to the prospect's site."""
    action_url = f"{site.url}/welcome/start?plan=pro%20trial&ref=email#next-steps"
    values = {
        "name": "Dana",
        "action_url": action_url,
        "login_url": f"{site.url}/login",
        "username": "dana",
        "trial_length": "14",
        "trial_start_date": "1 December 2026",
        "trial_end_date": "15 December 2026",
        "support_email": "support@seller.test",
        "live_chat_url": f"{site.url}/chat",
        "help_url": f"{site.url}/help",
    }
    template = (DATA / "emails" / "postmark-welcome.html").read_text()
    return render(template, values), action_url


def test_rep_sees_a_prospects_open_and_click_live(
    live_server: LiveServer,
    worker: None,
    destination: Destination,
    make_account: Callable[..., Account],
    new_context: Callable[..., BrowserContext],
    prospect_context: Callable[..., BrowserContext],
) -> None:
    base = live_server.url
    rep = make_account()
    desk = new_context()
    desk.add_init_script(RECORD_TOASTS)
    inbox = desk.new_page()
    dialogs = record_dialogs(inbox)
    sign_in(inbox, base, rep.email)
    expect_live(inbox)

    email_html, action_url = welcome_email(destination)
    created = register(base, rep, subject="Welcome to Northwind", html=email_html)
    assert action_url in [link["url"] for link in created["links"]]
    message_page = desk.new_page()
    open_live(message_page, f"{base}/messages/{created['id']}")
    expect(message_page.locator("ol.timeline")).to_contain_text("Nothing yet")

    # Machines first: a gateway's HEAD and a script's fetch are kept, not notified.
    pixel, from_elsewhere = created["pixel_url"], {"X-Forwarded-For": LONDON}
    user_agents = {"HEAD": CHROME_ON_WINDOWS, "GET": "python-requests/2.31"}
    for method, agent in user_agents.items():
        headers = {**from_elsewhere, "User-Agent": agent}
        response = requests.request(method, pixel, headers=headers, timeout=5)
        assert response.status_code == 200

    prospect = prospect_context(
        user_agent=CHROME_ON_WINDOWS, extra_http_headers=from_elsewhere
    )
    mail = prospect.new_page()
    with mail.expect_response(pixel) as fetched:
        mail.set_content(created["html"])
    assert fetched.value.status == 200
    assert fetched.value.headers["content-type"] == "image/gif"

    toasts = inbox.locator(".toast")
    expect(toasts).to_have_count(1)
    expect(toasts.locator("strong")).to_have_text(
        f"{PROSPECT} opened “Welcome to Northwind”"
    )
    expect(toasts).to_contain_text(
        "in London, United Kingdom · on Chrome on Windows 10"
    )
    row = inbox.locator(f'tr[data-message="{created["id"]}"]')
    expect(row.locator(".opens")).to_have_text("1")
    expect(row.locator(".clicks")).to_have_text("0")
    expect(row.locator(".latest")).to_have_text(
        "opened just now in London, United Kingdom on Chrome on Windows 10"
    )

    with prospect.expect_page() as opened_tab:
        mail.get_by_role("link", name="Do this Next").click()
    landed = opened_tab.value
    landed.wait_for_load_state()
    assert landed.url == action_url
    expect(landed).to_have_title("Prospect site")
    parts = urlsplit(action_url)
    assert destination.visits == [f"{parts.path}?{parts.query}"]

    link_label = f"{parts.netloc}{parts.path}"
    click_toast = toasts.filter(has_text="clicked a link in")
    expect(click_toast.locator("strong")).to_have_text(
        f"{PROSPECT} clicked a link in “Welcome to Northwind”"
    )
    expect(click_toast).to_contain_text(f"{link_label} · in London, United Kingdom")
    expect(row.locator(".clicks")).to_have_text("1")
    expect(row.locator(".opens")).to_have_text("1")
    expect(row.locator(".latest")).to_contain_text("clicked just now in London")

    timeline = message_page.locator("ol.timeline")
    counted = timeline.locator("li.event.counted")
    expect(counted).to_have_count(2)
    clicked, opened = counted.nth(0), counted.nth(1)
    expect(clicked).to_have_attribute("data-classification", "human")
    expect(clicked.locator(".what")).to_contain_text(f"{PROSPECT} clicked {link_label}")
    expect(clicked.locator(".what a")).to_have_attribute("href", action_url)
    expect(opened).to_have_attribute("data-classification", "human")
    expect(opened.locator(".what")).to_have_text(f"{PROSPECT} opened")
    expect(opened.locator(".where")).to_have_text("in London, United Kingdom")
    expect(opened.locator(".device")).to_have_text("on Chrome on Windows 10")
    expect(opened.locator(".grade")).to_have_text("A person")
    expect(message_page.locator(".stats .opens")).to_have_text("1")
    expect(message_page.locator(".stats .clicks")).to_have_text("1")

    greyed = timeline.locator("li.event.graded-out")
    expect(greyed).to_have_count(2)
    scanner = greyed.filter(has_text="method:head")
    expect(scanner).to_have_attribute("data-classification", "scanner")
    expect(scanner.locator(".grade")).to_have_text("Security scanner")
    script = greyed.filter(has_text="ua:bot")
    expect(script).to_have_attribute("data-classification", "bot")
    expect(script.locator(".reasons")).to_have_text("ua:bot")
    for entry in (scanner, script):
        expect(entry).to_have_css("opacity", re.compile(r"^0\.\d+$"))

    # Only what the person did made a popup, on each of the rep's pages.
    for page in (inbox, message_page):
        shown = page.evaluate("window.shownToasts")
        assert len(shown) == 2, shown
        assert "opened “Welcome to Northwind”" in shown[0]
        assert "clicked a link in “Welcome to Northwind”" in shown[1]
    assert dialogs == []


def test_markup_in_a_subject_or_user_agent_is_shown_as_text(
    live_server: LiveServer,
    worker: None,
    make_account: Callable[..., Account],
    new_context: Callable[..., BrowserContext],
) -> None:
    subject = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    agent = "<img src=x onerror=alert(3)>Mail/1.0 CFNetwork/1.0 Darwin/20.0"
    base = live_server.url
    rep = make_account()
    desk = new_context()
    inbox = desk.new_page()
    dialogs = record_dialogs(inbox)
    sign_in(inbox, base, rep.email)
    expect_live(inbox)
    created = register(base, rep, subject=subject, html="<p>Hello</p>")
    message_page = desk.new_page()
    dialogs += record_dialogs(message_page)
    open_live(message_page, f"{base}/messages/{created['id']}")

    headers = {"User-Agent": agent, "X-Forwarded-For": LONDON}
    assert requests.get(created["pixel_url"], headers=headers, timeout=5).ok

    device = "<img src=x onerror=alert(3)>Mail on iOS 14"
    toast = inbox.locator(".toast")
    expect(toast.locator("strong")).to_have_text(f"{PROSPECT} opened “{subject}”")
    expect(toast).to_contain_text(f"on {device}")
    row = inbox.locator(f'tr[data-message="{created["id"]}"]')
    expect(row.get_by_role("link")).to_have_text(subject)
    expect(row.locator(".latest")).to_contain_text(device)
    expect(message_page.locator("h1")).to_have_text(subject)
    expect(message_page).to_have_title(f"{subject} · Trailmark")
    expect(message_page.locator("li.event .device")).to_have_text(f"on {device}")
    expect(message_page.locator(".toast strong")).to_contain_text(subject)

    for page in (inbox, message_page):
        expect(page.locator("img")).to_have_count(0)
        expect(page.locator("script")).to_have_count(1)
    assert dialogs == []


def test_sign_in_with_a_wrong_password_then_sign_out(
    live_server: LiveServer,
    make_account: Callable[..., Account],
    new_context: Callable[..., BrowserContext],
) -> None:
    base = live_server.url
    rep = make_account()
    page = new_context().new_page()

    page.goto(f"{base}/")
    expect(page).to_have_url(re.compile(r"/login\?next=/"))
    expect(page.get_by_role("heading")).to_have_text("Sign in")

    sign_in(page, base, rep.email, "wrong horse")
    expect(page.get_by_role("alert")).to_have_text(
        "That email and password do not match an account."
    )
    expect(page.get_by_label("Email")).to_have_value(rep.email)
    expect(page.get_by_label("Password")).to_have_value("")

    sign_in(page, base, rep.email)
    expect(page.get_by_role("heading", name="Tracked messages")).to_be_visible()
    expect(page.locator(".who")).to_have_text(rep.email)
    expect(page.locator("#inbox-rows")).to_contain_text("No tracked messages yet")

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{base}/login")
    page.goto(f"{base}/")
    expect(page).to_have_url(re.compile(r"/login\?next=/"))
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)


def test_a_notification_made_while_the_stream_was_down_still_pops_up(
    live_server: LiveServer,
    worker: None,
    make_account: Callable[..., Account],
    new_context: Callable[..., BrowserContext],
) -> None:
    base = live_server.url
    rep = make_account()
    desk = new_context()
    inbox = desk.new_page()
    sign_in(inbox, base, rep.email)
    expect_live(inbox)
    created = register(base, rep, subject="Quarterly pricing", html="<p>Hi</p>")

    # The web process goes down and comes back; the browser's reconnection is
    # held back until an open has been stored in between.
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)

    inbox.route("**/api/v1/notifications/stream*", hold)
    with inbox.expect_request("**/api/v1/notifications/stream*"):
        live_server.kill()
        live_server.start()
    headers = {"User-Agent": CHROME_ON_WINDOWS, "X-Forwarded-For": LONDON}
    assert requests.get(created["pixel_url"], headers=headers, timeout=5).ok
    wait_for(lambda: notifications(base, rep))
    for _ in range(100):
        if held:
            break
        inbox.wait_for_timeout(20)  # Playwright hands routes over between calls
    assert held, "the browser did not reconnect"

    held[0].continue_()
    inbox.unroute("**/api/v1/notifications/stream*")
    expect(inbox.locator(".toast strong")).to_have_text(
        f"{PROSPECT} opened “Quarterly pricing”"
    )


def test_a_burst_of_activity_reloads_the_timeline_twice_not_once_an_event(
    app: Any,
    live_server: LiveServer,
    make_account: Callable[..., Account],
    new_context: Callable[..., BrowserContext],
) -> None:
    base = live_server.url
    rep = make_account()
    created = register(base, rep, subject="Busy message", html="<p>Hi</p>")
    page = new_context().new_page()
    sign_in(page, base, rep.email)
    open_live(page, f"{base}/messages/{created['id']}")
    loads: list[str] = []
    page.on(
        "request",
        lambda request: loads.append(request.url) if "/timeline" in request.url else 0,
    )
    with app.extensions["trailmark.db"].session_factory() as session:
        user_id = session.scalar(select(User.id).where(User.email == rep.email))
    notifier = app.extensions["trailmark.notifier"]

    for _ in range(30):  # as a busy message's batches wake an open page
        notifier.publish(user_id, created["id"])
        page.wait_for_timeout(30)
    page.wait_for_timeout(3000)

    assert 1 <= len(loads) <= 2, loads
