"""The pixel and link endpoints: always the image, only the recorded redirect."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from app.models import Event
from app.tracking.hotpath import GIF
from tests.conftest import Account, locks_waited_for, path_of

CHROME = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/103.0.0.0 Safari/537.36"
)
LINKOPING = "89.160.20.112"


def events(account: Account, message_id: str) -> list[dict[str, Any]]:
    body = account.get(f"/api/v1/messages/{message_id}/events").get_json()
    result: list[dict[str, Any]] = body["events"]
    return result


def hit(client: FlaskClient, url: str, method: str = "GET", **kwargs: Any) -> Any:
    environ = {"REMOTE_ADDR": LINKOPING, **kwargs.pop("environ_base", {})}
    headers = {"User-Agent": CHROME, **kwargs.pop("headers", {})}
    return client.open(
        path_of(url), method=method, headers=headers, environ_base=environ, **kwargs
    )


def assert_pixel(response: Any) -> None:
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/gif"
    assert response.headers["Content-Length"] == str(len(GIF))
    assert "no-store" in response.headers["Cache-Control"]
    assert "Set-Cookie" not in response.headers


def test_pixel_is_a_valid_1x1_transparent_gif() -> None:
    assert GIF[:6] == b"GIF89a"
    width, height = struct.unpack("<HH", GIF[6:10])
    assert (width, height) == (1, 1)
    assert b"\x21\xf9\x04\x01" in GIF  # graphic control extension with transparency


def test_open_is_stored_with_place_and_device(
    account: Account, run_jobs: Callable[[], None]
) -> None:
    created = account.send(html="<html><body><p>Hi</p></body></html>")
    assert_pixel(hit(account.client, created["pixel_url"]))
    run_jobs()
    [event] = events(account, created["id"])
    assert event["type"] == "open" and event["classification"] == "human"
    assert event["counted"] is True
    assert event["location"] == {
        "country": "Sweden",
        "region": "Östergötland County",
        "city": "Linköping",
    }
    assert event["device"] == {
        "client": "Chrome",
        "os": "Mac OS X 10.15.7",
        "type": "desktop",
    }
    assert event["recipient"] == "prospect@example.com"
    message = account.get(f"/api/v1/messages/{created['id']}").get_json()
    assert message["opens"] == 1 and message["first_opened_at"] is not None


def test_head_request_gets_headers_without_body_and_is_graded_scanner(
    account: Account, run_jobs: Callable[[], None]
) -> None:
    created = account.send(html="<p>Hi</p>")
    response = hit(account.client, created["pixel_url"], method="HEAD")
    assert_pixel(response)
    assert response.data == b""
    run_jobs()
    [event] = events(account, created["id"])
    assert event["classification"] == "scanner" and not event["counted"]
    assert "method:head" in event["reasons"]


@pytest.mark.parametrize(
    "path",
    [
        "/o/unknowntokenunknownto.gif",
        "/o/short.gif",
        "/o/../../etc/passwd",
        "/o/" + "a" * 5000 + ".gif",
        "/o/%00%ff.gif",
        "/o/",
    ],
)
def test_unknown_or_hostile_pixel_still_gets_the_image_and_records_nothing(
    account: Account, run_jobs: Callable[[], None], path: str
) -> None:
    created = account.send(html="<p>Hi</p>")
    response = account.client.get(path, headers={"User-Agent": "\x00\u2028<script>"})
    assert_pixel(response)
    run_jobs()
    assert events(account, created["id"]) == []


def test_a_doubled_slash_before_the_pixel_still_gets_the_image_and_the_open(
    account: Account, run_jobs: Callable[[], None]
) -> None:
    created = account.send(html="<p>Hi</p>")
    path = "/" + path_of(created["pixel_url"])
    response = account.client.get(
        "/",
        headers={"User-Agent": CHROME},
        environ_base={"REMOTE_ADDR": LINKOPING},
        environ_overrides={"PATH_INFO": path},
    )
    assert_pixel(response)
    run_jobs()
    [event] = events(account, created["id"])
    assert event["type"] == "open" and event["counted"] is True


def test_link_redirects_to_exactly_the_recorded_destination(
    account: Account, run_jobs: Callable[[], None]
) -> None:
    destination = "https://shop.test/p?q=a%20b&x=1&x=2#frag?not-query"
    created = account.send(html=f'<a href="{destination.replace("&", "&amp;")}">x</a>')
    [link] = created["links"]
    assert link["url"] == destination
    response = hit(
        account.client, link["tracked_url"] + "?utm_source=evil&next=https://evil.test"
    )
    assert response.status_code == 302
    assert response.headers["Location"] == destination
    assert response.headers["Cache-Control"] == "no-store"


def test_click_without_open_records_an_implied_open(
    account: Account, run_jobs: Callable[[], None]
) -> None:
    created = account.send(html='<a href="https://shop.test/">x</a>')
    hit(account.client, created["links"][0]["tracked_url"])
    run_jobs()
    opened, clicked = events(account, created["id"])
    assert (
        opened["type"],
        opened["implied"],
        "implied-by-click" in opened["reasons"],
    ) == (
        "open",
        True,
        True,
    )
    assert clicked["type"] == "click" and clicked["url"] == "https://shop.test/"
    message = account.get(f"/api/v1/messages/{created['id']}").get_json()
    assert (message["opens"], message["clicks"]) == (1, 1)


@pytest.mark.parametrize(
    "suffix",
    [
        "aaaaaaaaaaaaaaaaaaaaaa",
        "AAAAAAAAAAAAAAAAAAAAAA",
        "x",
        "%0d%0aLocation:%20https://evil.test",
        "",
    ],
)
def test_unknown_or_tampered_link_gets_404_page_never_a_redirect(
    client: FlaskClient, account: Account, suffix: str
) -> None:
    created = account.send(html='<a href="https://shop.test/">x</a>')
    real = path_of(created["links"][0]["tracked_url"])
    for path in (f"/c/{suffix}", real[:-1] + ("b" if real[-1] != "b" else "c")):
        response = client.get(path)
        assert response.status_code == 404
        assert "Location" not in response.headers
        assert b"not valid" in response.data


def test_several_recipients_are_somebody(
    account: Account, run_jobs: Callable[[], None]
) -> None:
    created = account.send(to=["a@x.test", "b@x.test"], html="<p>Hi</p>")
    hit(account.client, created["pixel_url"])
    run_jobs()
    [event] = events(account, created["id"])
    assert event["recipient"] is None and event["recipient_label"] == "somebody"


def test_gmail_proxy_counts_without_the_proxys_location(
    account: Account, run_jobs: Callable[[], None]
) -> None:
    created = account.send(html="<p>Hi</p>")
    gmail = (
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
        "(via ggpht.com GoogleImageProxy)"
    )
    hit(account.client, created["pixel_url"], headers={"User-Agent": gmail})
    run_jobs()
    [event] = events(account, created["id"])
    assert (event["classification"], event["counted"]) == ("proxy", True)
    assert event["location"] is None
    assert event["device"]["type"] == "unknown"


def test_a_hit_shipped_twice_is_stored_once(
    app: Any, account: Account, run_jobs: Callable[[], None]
) -> None:
    from workers.ingest import ingest_hits

    created = account.send(html="<p>Hi</p>")
    token = path_of(created["pixel_url"]).removeprefix("/o/").removesuffix(".gif")
    raw = {
        "id": "f" * 32,
        "kind": "open",
        "token": token,
        "at": 1.0e9 + 5,
        "ip": LINKOPING,
        "ua": CHROME,
        "method": "GET",
        "headers": {},
    }
    assert ingest_hits([raw]) == 1
    assert ingest_hits([raw]) == 0
    assert len(events(account, created["id"])) == 1


def test_a_batch_stored_by_another_job_at_the_same_time_is_stored_once(
    app: Any, account: Account, database: Any
) -> None:
    import threading

    from sqlalchemy import text

    from workers.ingest import ingest_hits

    created = account.send(html="<p>Hi</p>")
    token = path_of(created["pixel_url"]).removeprefix("/o/").removesuffix(".gif")
    raws = [
        {"id": f"{n}" * 32, "kind": "open", "token": token, "at": 1.0e9 + n}
        | {"ip": LINKOPING, "ua": CHROME, "method": "GET", "headers": {}}
        for n in (1, 2, 3)
    ]
    # Another job holds hit 2 in a transaction that has not committed yet.
    other = database.engine.connect()
    other.execute(
        text(
            "INSERT INTO events (hit_id, message_id, type, occurred_at, received_at,"
            " classification, counted, reasons, implied, possible_forward, method,"
            " device_type) SELECT :hit, id, 'open', now(), now(), 'human', true,"
            " '[]', false, false, 'GET', 'desktop' FROM messages"
        ),
        {"hit": raws[1]["id"]},
    )
    result: list[int] = []
    job = threading.Thread(target=lambda: result.append(ingest_hits(raws)))
    job.start()
    assert locks_waited_for(database) == 1  # blocked on hit 2's key
    other.commit()
    other.close()
    job.join(timeout=10)

    assert result == [2]
    assert len(events(account, created["id"])) == 3
    with database.engine.connect() as conn:
        hit_ids = conn.execute(text("SELECT hit_id FROM events")).scalars().all()
    assert sorted(hit_ids) == sorted(raw["id"] for raw in raws)


def test_two_jobs_regrading_the_same_click_take_it_off_the_counts_once(
    app: Any, account: Account, database: Any
) -> None:
    import threading
    import time

    from sqlalchemy import text

    from workers.ingest import ingest_hits

    links = "".join(f'<a href="https://shop.test/{n}">{n}</a>' for n in range(3))
    created = account.send(html=f"<html><body>{links}</body></html>")
    tokens = [path_of(x["tracked_url"]).removeprefix("/c/") for x in created["links"]]
    at = time.time() - 30

    def click(hit_id: str, token: str, offset: float) -> dict[str, Any]:
        return {"id": hit_id, "kind": "click", "token": token, "at": at + offset} | {
            "ip": LINKOPING,
            "ua": CHROME,
            "method": "GET",
            "headers": {},
        }

    ingest_hits([click("a" * 32, tokens[0], 0.0)])  # alone, it looks like a person
    other = database.engine.connect()
    other.execute(text("SELECT id FROM events FOR UPDATE"))  # hold every event
    jobs = [
        threading.Thread(target=ingest_hits, args=([click(h * 32, t, 0.5)],))
        for h, t in (("b", tokens[1]), ("c", tokens[2]))
    ]
    for job in jobs:
        job.start()
    locks_waited_for(database)
    time.sleep(0.5)  # both jobs reach the held rows
    other.commit()
    other.close()
    for job in jobs:
        job.join(timeout=10)

    message = account.get(f"/api/v1/messages/{created['id']}").get_json()
    assert (message["opens"], message["clicks"]) == (0, 0)
    assert not any(e["counted"] for e in events(account, created["id"]))


def test_a_forward_is_told_from_the_first_human_open_however_long_ago(
    app: Any, account: Account
) -> None:
    from workers.ingest import ingest_hits

    created = account.send(html="<p>Hi</p>")
    token = path_of(created["pixel_url"]).removeprefix("/o/").removesuffix(".gif")
    start = 1.0e9

    def raw(n: int, ip: str) -> dict[str, Any]:
        hit = {"id": f"{n:032d}", "kind": "open", "token": token, "at": start + n}
        return hit | {"ip": ip, "ua": CHROME, "method": "GET", "headers": {}}

    reader, elsewhere = LINKOPING, "81.2.69.160"  # Sweden, then London
    ingest_hits([raw(0, reader)])
    # Hundreds of opens from elsewhere: each one is measured against the first.
    for first in range(1, 601, 200):
        ingest_hits([raw(n, elsewhere) for n in range(first, first + 200)])

    stored = events(account, created["id"])
    assert len(stored) == 601
    assert not stored[0]["possible_forward"]
    assert all(e["possible_forward"] for e in stored[1:])


def test_client_ip_from_forwarded_for_only_when_proxies_are_trusted(
    account: Account, run_jobs: Callable[[], None], app: Any
) -> None:
    created = account.send(html="<p>Hi</p>")
    spoofed = {"X-Forwarded-For": LINKOPING}
    hit(
        account.client,
        created["pixel_url"],
        headers=spoofed,
        environ_base={"REMOTE_ADDR": "10.0.0.1"},
    )
    run_jobs()
    [event] = events(account, created["id"])
    assert event["location"] is None  # the header was ignored: TRUSTED_PROXIES is 0


def test_a_burst_of_clicks_across_links_is_graded_scanner_including_the_first(
    account: Account, run_jobs: Callable[[], None]
) -> None:
    links = "".join(f'<a href="https://shop.test/{n}">{n}</a>' for n in range(3))
    created = account.send(html=f"<html><body>{links}</body></html>")
    hit(account.client, created["links"][0]["tracked_url"])
    run_jobs()
    first = [e for e in events(account, created["id"]) if e["type"] == "click"]
    assert first[0]["classification"] == "human"  # alone, it looks like a person
    for link in created["links"][1:]:
        hit(account.client, link["tracked_url"])
    run_jobs()
    clicks = [e for e in events(account, created["id"]) if e["type"] == "click"]
    assert [c["classification"] for c in clicks] == ["scanner"] * 3
    assert any(r.startswith("burst:") for r in clicks[0]["reasons"])
    message = account.get(f"/api/v1/messages/{created['id']}").get_json()
    assert (message["opens"], message["clicks"]) == (0, 0)


def test_tabs_and_newlines_in_an_href_are_dropped_as_a_browser_does(
    account: Account,
) -> None:
    created = account.send(html='<a href=" https://exa\tmple.test/a\r\nb?q=1 ">x</a>')
    [link] = created["links"]
    assert link["url"] == "https://example.test/ab?q=1"
    response = hit(account.client, link["tracked_url"])
    assert response.headers["Location"] == "https://example.test/ab?q=1"


def test_an_international_host_is_sent_in_its_ascii_form_as_browsers_write_it(
    account: Account,
) -> None:
    created = account.send(
        html='<a href="https://straße.bücher.example:8443/ä?q=ö#ü">x</a>'
        '<a href="https://user@xn--bcher-kva.example/ä">y</a>'
    )
    first, second = (
        hit(account.client, link["tracked_url"]) for link in created["links"]
    )
    # UTS 46 nontransitional, as browsers: the sharp s stays (not "strasse").
    assert first.headers["Location"] == (
        "https://xn--strae-oqa.xn--bcher-kva.example:8443/%C3%A4?q=%C3%B6#%C3%BC"
    )
    assert second.headers["Location"] == "https://user@xn--bcher-kva.example/%C3%A4"

    # As browsers: a scheme in capitals, and names IDNA 2008 refuses but browsers take.
    created = account.send(
        html='<a href="HTTPS://bücher.example/ä">x</a><a href="https://💩.la/">y</a>'
        '<a href="https://bü_cher.example/">z</a>'
    )
    assert [
        hit(account.client, link["tracked_url"]).headers["Location"]
        for link in created["links"]
    ] == [
        "HTTPS://xn--bcher-kva.example/%C3%A4",
        "https://xn--ls8h.la/",
        "https://xn--b_cher-3ya.example/",
    ]

    # A host that has no ASCII form, or is no host at all, is escaped as it is.
    odd = account.send(html='<a href="https://bü..example/ä">x</a>')
    [link] = odd["links"]
    response = hit(account.client, link["tracked_url"])
    assert response.status_code == 302
    assert response.headers["Location"] == "https://b%C3%BC..example/%C3%A4"


def test_unknown_link_tokens_are_remembered_without_another_lookup(
    app: Any, account: Account
) -> None:
    created = account.send(html='<a href="https://shop.test/">x</a>')
    links = app.wsgi_app.links
    guess = "a" * 22
    assert links.location(guess) is None
    assert guess in links._cache and links._cache[guess] is None
    real = path_of(created["links"][0]["tracked_url"]).removeprefix("/c/")
    assert links.location(real) == "https://shop.test/"


def test_the_link_cache_holds_so_many_characters_of_destinations_at_most(
    app: Any, account: Account
) -> None:
    from app.tracking.hotpath import LinkCache

    long_url = "https://shop.test/" + "x" * 5000
    created = account.send(
        html=f'<a href="{long_url}?1">a</a><a href="{long_url}?2">b</a>'
        '<a href="https://shop.test/short">c</a>'
    )
    tokens = [
        path_of(link["tracked_url"]).removeprefix("/c/") for link in created["links"]
    ]
    cache = LinkCache(app.extensions["trailmark.db"].engine, chars=6000)
    for token, link in zip(tokens, created["links"], strict=True):
        assert cache.location(token) == link["url"]
    # The second long destination pushed the first out; the short one fits beside it.
    assert list(cache._cache) == tokens[1:]
    assert cache._held == len(long_url) + 2 + len("https://shop.test/short")
    assert cache.location(tokens[0]) == created["links"][0]["url"]  # looked up again


def test_a_hit_too_long_for_its_columns_is_cut_to_fit_and_holds_up_nothing(
    app: Any, account: Account
) -> None:
    from workers.ingest import ingest_hits

    created = account.send(html="<p>Hi</p>")
    token = path_of(created["pixel_url"]).removeprefix("/o/").removesuffix(".gif")
    android = (
        "Mozilla/5.0 (Linux; Android " + "1" * 150 + "; Pixel 7) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36"
    )

    def raw(n: int, **extra: Any) -> dict[str, Any]:
        hit = {"id": f"{n:032d}", "kind": "open", "token": token, "at": 1.0e9 + n}
        basics = {"ip": LINKOPING, "ua": CHROME, "method": "GET", "headers": {}}
        return hit | basics | extra

    # NUL cannot be stored in PostgreSQL text: it is left out, the hit kept.
    with_nul = raw(4, ua=CHROME[:20] + "\x00" + CHROME[20:])
    batch = [raw(1, method="VERYLONGMETHOD"), raw(2, ua=android), with_nul, raw(5)]
    assert ingest_hits(batch) == 4
    stored = events(account, created["id"])
    assert [e["classification"] for e in stored] == ["bot", "human", "human", "human"]
    assert len(stored[1]["device"]["os"]) <= 100
    assert stored[2]["device"]["client"] == "Chrome"
    with app.extensions["trailmark.db"].session_factory() as session:
        agents = session.scalars(select(Event.user_agent).order_by(Event.id)).all()
    assert agents[2] == CHROME


def test_the_tracking_only_entry_point_answers_hits_and_nothing_else(
    app: Any, account: Account, run_jobs: Callable[[], None]
) -> None:
    """``wsgi:track`` (the Procfile's track processes) serves the hot path alone."""
    from werkzeug.test import Client

    created = account.send(html='<p>Hi</p><a href="https://example.com/x?a=1">x</a>')
    track = Client(app.extensions["trailmark.tracking"].alone())
    headers = {"User-Agent": CHROME}
    environ = {"REMOTE_ADDR": LINKOPING}

    pixel = track.get(
        path_of(created["pixel_url"]), headers=headers, environ_base=environ
    )
    link = track.get(
        path_of(created["links"][0]["tracked_url"]),
        headers=headers,
        environ_base=environ,
    )
    assert_pixel(pixel)
    assert link.status_code == 302
    assert link.headers["Location"] == "https://example.com/x?a=1"
    for elsewhere in ("/", "/api/v1/messages", "/signin", "/c/not-a-token"):
        answer = track.get(elsewhere, headers=account.headers)
        assert answer.status_code == 404, elsewhere
        assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    run_jobs()
    events = account.get(f"/api/v1/messages/{created['id']}/events").get_json()
    assert [e["type"] for e in events["events"]] == ["open", "click"]


def _one_queued_batch(
    app: Any, account: Account, redis_conn: Any
) -> tuple[dict[str, Any], Any]:
    """A message with one pixel hit, shipped: the message and the batch's RQ job."""
    from rq import Queue

    created = account.send(html="<p>Hi</p>")
    hit(account.client, created["pixel_url"])
    app.extensions["trailmark.spool"].flush()
    [job] = Queue("hits", connection=redis_conn).jobs
    return created, job


def test_a_batch_whose_job_cannot_be_queued_is_not_kept_either(
    redis_conn: Any,
) -> None:
    """The batch and its job are written in one transaction: no raw hits are left in
    Redis that no job would ever store or remove."""
    from workers.ingest import ingest_batch
    from workers.queue import RqJobs

    with pytest.raises(KeyError):
        RqJobs(redis_conn).enqueue_batch(ingest_batch, b"{}\n", queue="nowhere")
    assert redis_conn.keys("trailmark:batch:*") == []


def test_a_queued_batch_of_hits_is_kept_beside_its_job_until_stored(
    app: Any, account: Account, redis_conn: Any, run_jobs: Any
) -> None:
    from workers.queue import load_batch

    created, job = _one_queued_batch(app, account, redis_conn)
    [key] = job.args
    assert job.func_name == "workers.ingest.ingest_batch"
    assert LINKOPING not in (job.description or "")  # a listing shows no hit
    assert redis_conn.ttl(key) > 7 * 86400  # outlives the failed job that names it
    batch = load_batch(redis_conn, key)
    assert batch is not None
    assert LINKOPING.encode() in batch  # the hit itself is all there

    run_jobs()
    assert redis_conn.exists(key) == 0
    events = account.get(f"/api/v1/messages/{created['id']}/events").get_json()
    assert [e["type"] for e in events["events"]] == ["open"]


def test_a_batch_job_whose_batch_is_gone_stores_nothing_and_does_not_fail(
    app: Any, redis_conn: Any, run_jobs: Any, caplog: Any
) -> None:
    from rq import Queue
    from rq.registry import FailedJobRegistry

    from workers.ingest import ingest_batch

    queue = Queue("hits", connection=redis_conn)
    queue.enqueue(ingest_batch, "trailmark:batch:0123456789abcdef")
    with caplog.at_level("WARNING", logger="workers.ingest"):
        run_jobs()
    assert FailedJobRegistry(queue=queue).count == 0
    assert "hit batch not found key=trailmark:batch:0123456789abcdef" in caplog.text


def test_a_batch_that_failed_every_retry_is_stored_once_queued_again(
    app: Any, account: Account, redis_conn: Any, run_jobs: Any
) -> None:
    from rq import Queue, SimpleWorker
    from rq.registry import FailedJobRegistry

    from app.db import Database
    from workers.context import current
    from workers.ingest import retry_failed_batches

    created, job = _one_queued_batch(app, account, redis_conn)
    queue = Queue("hits", connection=redis_conn)
    job.retries_left = 0  # as after RQ's last retry
    job.save()

    # The database does not answer while the job runs.
    ctx = current()
    working = ctx.db
    ctx.db = Database("postgresql://nobody@127.0.0.1:1/none")
    try:
        SimpleWorker([queue], connection=redis_conn).work(burst=True)
    finally:
        ctx.db = working
    failed = FailedJobRegistry(queue=queue)
    assert failed.get_job_ids() == [job.id]
    assert events(account, created["id"]) == []

    assert retry_failed_batches() == 1
    run_jobs()
    assert failed.count == 0
    assert [e["type"] for e in events(account, created["id"])] == ["open"]
    assert redis_conn.exists(job.args[0]) == 0
