"""Live notifications: counted events reach the sender's stream, machine ones do not."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Account
from tests.test_tracking import hit

GMAIL = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
    "(via ggpht.com GoogleImageProxy)"
)


@pytest.fixture
def config(config: dict[str, Any]) -> dict[str, Any]:
    """Every counted open notifies here; repeats are tested on their own."""
    return {**config, "NOTIFY_REPEAT_SECONDS": 0}


def _events(lines: Iterator[bytes]) -> Iterator[dict[str, Any]]:
    """Parse an SSE byte stream into its 'notification' events."""
    buffer = b""
    for chunk in lines:
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            fields = dict(
                line.split(": ", 1)
                for line in block.decode().splitlines()
                if ": " in line
            )
            if fields.get("event") == "notification":
                yield {"id": fields["id"], **json.loads(fields["data"])}


def test_an_open_reaches_the_live_stream_with_place_and_device(
    account: Account, run_jobs: Callable[[], None]
) -> None:
    created = account.send(subject="Q3 pricing", html="<p>Hi</p>")
    stream = account.get("/api/v1/notifications/stream", buffered=False)
    assert stream.status_code == 200
    assert stream.mimetype == "text/event-stream"
    chunks = iter(stream.response)
    assert b"retry:" in next(chunks)  # the stream is open before the hit
    received: queue.Queue[dict[str, Any]] = queue.Queue()
    reader = threading.Thread(
        target=lambda: [received.put(e) for e in _events(chunks)], daemon=True
    )
    reader.start()
    hit(account.client, created["pixel_url"], headers={"User-Agent": GMAIL})
    hit(account.client, created["pixel_url"])
    run_jobs()
    first, second = received.get(timeout=10), received.get(timeout=10)
    reader.join(timeout=10)  # the stream ends by itself after STREAM_SECONDS
    assert first["title"] == "prospect@example.com opened “Q3 pricing”"
    assert "proxy" in first["body"]
    assert second["body"] == "in Linköping, Sweden · on Chrome on Mac OS X 10.15.7"
    assert second["message_id"] == created["id"]


def test_machine_events_make_no_notification(
    account: Account, run_jobs: Callable[[], None]
) -> None:
    created = account.send(html="<p>Hi</p>")
    hit(account.client, created["pixel_url"], method="HEAD")
    hit(account.client, created["pixel_url"], headers={"User-Agent": "curl/8.0"})
    run_jobs()
    assert account.get("/api/v1/notifications").get_json() == {"notifications": []}


def test_stream_resumes_after_last_event_id(
    account: Account, run_jobs: Callable[[], None]
) -> None:
    created = account.send(html="<p>Hi</p>")
    hit(account.client, created["pixel_url"])
    run_jobs()
    [latest] = account.get("/api/v1/notifications").get_json()["notifications"]
    replay = account.client.get(
        "/api/v1/notifications/stream",
        headers={**account.headers, "Last-Event-ID": "0"},
        buffered=False,
    )
    [again] = list(_events(iter(replay.response)))
    assert again["id"] == latest["id"]


def test_streams_past_the_limit_catch_up_and_close_instead_of_holding_a_thread(
    app: Any, account: Account, run_jobs: Callable[[], None]
) -> None:
    app.config["STREAM_LIMIT"] = 1
    created = account.send(html="<p>Hi</p>")
    hit(account.client, created["pixel_url"])
    run_jobs()
    held = account.get("/api/v1/notifications/stream?after=0", buffered=False)
    first = iter(held.response)
    assert b"retry: 1000" in next(first)  # this one holds the only slot
    busy = account.get("/api/v1/notifications/stream?after=0")
    body = busy.get_data(as_text=True)
    assert "retry: 5000" in body
    assert body.count("event: notification") == 1
    assert list(_events(first))  # the held stream delivers and ends by itself
    again = account.get("/api/v1/notifications/stream?after=0", buffered=False)
    assert b"retry: 1000" in next(iter(again.response))  # the slot came back


def test_a_strange_resume_id_from_a_browser_starts_from_now(account: Account) -> None:
    for odd in ("²", "99999999999999999999999", "-1", "abc"):
        response = account.client.get(
            "/api/v1/notifications/stream",
            headers={**account.headers, "Last-Event-ID": odd},
        )
        assert response.status_code == 200
        assert "retry:" in response.get_data(as_text=True)


def test_a_strange_after_asked_for_by_a_person_is_refused(account: Account) -> None:
    for odd in ("%C2%B2", "99999999999999999999999", "-1", "abc", "1.5", "1&after=2"):
        response = account.get(f"/api/v1/notifications/stream?after={odd}")
        assert response.status_code == 422, odd
        assert "after" in response.get_json()["fields"], odd
    # A browser's resume id takes the place of after, whatever after says.
    resumed = account.client.get(
        "/api/v1/notifications/stream?after=abc",
        headers={**account.headers, "Last-Event-ID": "0"},
    )
    assert resumed.status_code == 200


def test_the_list_gives_what_came_after_an_id_and_refuses_a_bad_one(
    account: Account, run_jobs: Callable[[], None]
) -> None:
    created = account.send(html="<p>Hi</p>")
    hit(account.client, created["pixel_url"], headers={"User-Agent": GMAIL})
    hit(account.client, created["pixel_url"])
    run_jobs()
    newer, older = account.get("/api/v1/notifications").get_json()["notifications"]

    after = account.get(f"/api/v1/notifications?after={older['id']}").get_json()

    assert [n["id"] for n in after["notifications"]] == [newer["id"]]
    for bad in ("abc", "", "-1", "1.5", "99999999999999999999"):
        response = account.get(f"/api/v1/notifications?after={bad}")
        assert response.status_code == 422, bad
        assert list(response.get_json()["fields"]) == ["after"]
