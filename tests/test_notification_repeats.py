"""Repeat opens and clicks: all stored and counted, told to the sender once a while."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Account
from tests.test_tracking import hit
from workers.grading import BURST_WINDOW

QUIET = 2.0  # NOTIFY_REPEAT_SECONDS in this module: short, so a test can outwait it
LONDON = "81.2.69.142"


@pytest.fixture
def config(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "NOTIFY_REPEAT_SECONDS": QUIET}


def _notifications(account: Account) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = account.get("/api/v1/notifications").get_json()[
        "notifications"
    ]
    return listed[::-1]  # oldest first


def test_repeat_opens_are_counted_but_notified_once(
    account: Account, run_jobs: Callable[[], None]
) -> None:
    created = account.send(subject="Renewal", html="<p>Hi</p>")
    for _ in range(4):
        hit(account.client, created["pixel_url"])
    run_jobs()

    message = account.get(f"/api/v1/messages/{created['id']}").get_json()
    events = account.get(f"/api/v1/messages/{created['id']}/events").get_json()
    assert message["opens"] == 4
    assert [e["counted"] for e in events["events"]] == [True] * 4
    [told] = _notifications(account)
    assert told["title"] == "prospect@example.com opened “Renewal”"
    assert told["event_id"] == events["events"][0]["id"]


def test_repeats_across_batches_stay_quiet_and_notify_again_after_the_span(
    account: Account, run_jobs: Callable[[], None]
) -> None:
    created = account.send(html="<p>Hi</p>")
    hit(account.client, created["pixel_url"])
    run_jobs()
    hit(account.client, created["pixel_url"])
    run_jobs()
    assert len(_notifications(account)) == 1

    time.sleep(QUIET + 0.2)
    hit(account.client, created["pixel_url"])
    run_jobs()

    assert len(_notifications(account)) == 2
    assert account.get(f"/api/v1/messages/{created['id']}").get_json()["opens"] == 3


def test_each_link_is_told_once_and_a_click_always_after_an_open(
    account: Account, run_jobs: Callable[[], None]
) -> None:
    html = '<a href="https://example.com/a">A</a> <a href="https://example.com/b">B</a>'
    created = account.send(html=html)
    first, second = (link["tracked_url"] for link in created["links"])
    hit(account.client, created["pixel_url"])
    run_jobs()
    for url in (first, first):
        assert hit(account.client, url).status_code == 302
    run_jobs()
    time.sleep(BURST_WINDOW.total_seconds() + 0.2)  # two links at once is a scanner
    assert hit(account.client, second).status_code == 302
    run_jobs()

    told = [n["body"].split(" · ")[0] for n in _notifications(account)[1:]]
    assert told == ["example.com/a", "example.com/b"]
    message = account.get(f"/api/v1/messages/{created['id']}").get_json()
    assert message["clicks"] == 3


def test_an_open_from_another_network_is_told_once_even_in_the_quiet_span(
    account: Account, run_jobs: Callable[[], None]
) -> None:
    created = account.send(html="<p>Hi</p>")
    hit(account.client, created["pixel_url"])
    run_jobs()
    london = {"REMOTE_ADDR": LONDON}
    for _ in range(3):  # the new reader opens it again and again
        hit(account.client, created["pixel_url"], environ_base=london)
    run_jobs()
    hit(account.client, created["pixel_url"], environ_base=london)
    run_jobs()

    first, forwarded = _notifications(account)
    assert "possibly forwarded" not in first["body"]
    assert "possibly forwarded" in forwarded["body"]
    assert account.get(f"/api/v1/messages/{created['id']}").get_json()["opens"] == 5


def test_a_quiet_span_of_zero_notifies_every_counted_open(
    app: Any, account: Account, run_jobs: Callable[[], None]
) -> None:
    from workers.context import current

    current().settings["NOTIFY_REPEAT_SECONDS"] = 0
    created = account.send(html="<p>Hi</p>")
    for _ in range(3):
        hit(account.client, created["pixel_url"])
    run_jobs()

    assert len(_notifications(account)) == 3


def test_a_negative_quiet_span_stops_the_start(config: dict[str, Any]) -> None:
    from app import create_app

    with pytest.raises(RuntimeError, match="NOTIFY_REPEAT_SECONDS"):
        create_app({**config, "NOTIFY_REPEAT_SECONDS": -1})
