"""Connecting HubSpot in a real browser; an open and a click reach the portal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hubspot.crm import AssociationType
from playwright.sync_api import BrowserContext, expect

from emulators.hubspot import HubSpotEmulator
from tests.browser.conftest import Destination, LiveServer
from tests.browser.test_dashboard_e2e import CHROME_ON_WINDOWS, LONDON, register
from tests.browser.test_dashboard_e2e import sign_in as sign_in_page
from tests.conftest import Account, wait_for
from tests.test_hubspot_integration import hubspot_settings

pytestmark = pytest.mark.browser


@pytest.fixture
def emu() -> Iterator[HubSpotEmulator]:
    with HubSpotEmulator(client_id="hs-client", client_secret="hs-secret") as emulator:
        yield emulator


@pytest.fixture
def config(config: dict[str, Any], emu: HubSpotEmulator) -> dict[str, Any]:
    return {**config, **hubspot_settings(emu), "HUBSPOT_TIMEOUT": 10.0}


def test_admin_connects_hubspot_and_a_reps_open_and_click_reach_the_portal(
    emu: HubSpotEmulator,
    live_server: LiveServer,
    worker: None,
    destination: Destination,
    make_account: Callable[..., Account],
    new_context: Callable[..., BrowserContext],
    prospect_context: Callable[..., BrowserContext],
) -> None:
    base = live_server.url
    admin = make_account("admin@seller.test", admin=True)
    rep = make_account("rep@seller.test")
    owner = emu.seed_owner(rep.email, "Riley", "Rep")
    dana = emu.seed_contact("dana@prospect.test", "Dana", "Scully")
    deal = emu.seed_deal("Northwind pilot", contact_ids=[dana])
    emu.seed_deal("Last year's renewal", "closedwon", contact_ids=[dana])

    page = new_context().new_page()
    sign_in_page(page, base, admin.email)
    page.goto(f"{base}/settings")
    page.get_by_role("button", name="Connect HubSpot").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(
        f"Connect app to portal {emu.hub_id}"
    )
    page.get_by_role("button", name="Connect app").click()
    section = page.locator('.connection[data-provider="hubspot"]')
    expect(section.locator("[data-status]")).to_have_attribute(
        "data-status", "connected"
    )
    expect(section.locator(".account")).to_have_text(str(emu.hub_id))

    url = f"{destination.url}/pricing"
    created = register(
        base,
        rep,
        subject="Northwind pricing",
        html=f'<p>Hello Dana</p><p><a href="{url}">Our pricing</a></p>',
    )
    prospect = prospect_context(
        user_agent=CHROME_ON_WINDOWS, extra_http_headers={"X-Forwarded-For": LONDON}
    )
    mail = prospect.new_page()
    with mail.expect_response(created["pixel_url"]):
        mail.set_content(created["html"])
    mail.get_by_role("link", name="Our pricing").click()
    mail.wait_for_url(url)

    def written() -> bool:
        notes = emu.objects("notes")
        return len(emu.objects("emails")) == 1 and len(notes) == 2

    wait_for(written, 30)
    [email] = emu.objects("emails")
    assert email["properties"]["hs_email_status"] == "SENT"
    assert email["properties"]["hubspot_owner_id"] == owner
    assert set(email["associations"]) == {
        ("contacts", dana, AssociationType.EMAIL_TO_CONTACT),
        ("deals", deal, AssociationType.EMAIL_TO_DEAL),
    }
    bodies = {}
    for note in emu.objects("notes"):
        assert set(note["associations"]) == {
            ("contacts", dana, AssociationType.NOTE_TO_CONTACT),
            ("deals", deal, AssociationType.NOTE_TO_DEAL),
        }
        body = note["properties"]["hs_note_body"]
        bodies["open" if "Email opened" in body else "click"] = body
    assert "1 open(s) counted" in bodies["open"]
    assert "London" in bodies["open"]
    assert "1 click(s) counted" in bodies["click"]
