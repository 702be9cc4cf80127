"""No answered hit is lost: not when Redis stops, not when a web process dies."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from rq import SimpleWorker
from sqlalchemy import func, select

from app import create_app
from app.models import Event
from app.tracking.spool import Spool, decode, encode
from tests.conftest import ROOT, Account, path_of, wait_for
from workers.queue import QUEUES, RqJobs


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnRedis:
    """A redis-server of this test's own, so it can be stopped and started."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for(self._answers)

    def _answers(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port).ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def _app_and_rep(
    config: dict[str, Any], redis_url: str, **settings: Any
) -> tuple[Flask, Account]:
    """An app on a Redis of the test's own, and a rep made with the real CLI."""
    app = create_app({**config, "REDIS_URL": redis_url, **settings})
    account = Account(app.test_client(), "rep@seller.test", "")
    result = app.test_cli_runner().invoke(
        args=["user", "create", account.email, "--org", "Seller"]
    )
    account.token = result.output.strip().splitlines()[-1]
    return app, account


def _stored(app: Flask) -> int:
    with app.extensions["trailmark.db"].session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(Event)) or 0)


def _drain(app: Flask, url: str) -> None:
    worker = SimpleWorker(list(QUEUES), connection=redis.Redis.from_url(url))
    worker.work(burst=True)


def test_hits_answered_while_redis_is_down_are_stored_after_it_returns(
    config: dict[str, Any], own_redis: OwnRedis, make_account: Callable[..., Account]
) -> None:
    app, account = _app_and_rep(config, own_redis.url, SPOOL_FLUSH_INTERVAL=0.02)
    pixel = path_of(account.send(html="<p>Hi</p>")["pixel_url"])
    for _ in range(20):
        assert account.client.get(pixel).status_code == 200
    app.extensions["trailmark.spool"].flush()
    _drain(app, own_redis.url)
    assert _stored(app) == 20

    own_redis.stop()
    for _ in range(30):
        response = account.client.get(pixel)
        assert response.status_code == 200 and response.data[:6] == b"GIF89a"
    own_redis.start()

    wait_for(lambda: _queued(own_redis), timeout=15)
    _drain(app, own_redis.url)
    assert _stored(app) == 50
    app.extensions["trailmark.spool"].stop()


def _queued(server: OwnRedis) -> bool:
    try:
        return bool(redis.Redis(port=server.port).llen("rq:queue:hits"))
    except redis.ConnectionError:
        return False


_WRITER = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, sys.argv[2])
    from app.tracking.spool import Spool

    def refuse(hits):
        raise RuntimeError("queue unreachable")

    spool = Spool(sys.argv[1], refuse, background=False)
    for n in range(int(sys.argv[3])):
        spool.append({"id": f"{n:032x}", "kind": "open", "token": "t", "at": 1.0})
    print("written", flush=True)
    time.sleep(60)
    """
)


def test_a_killed_processs_spool_is_shipped_by_another(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(directory), str(ROOT), "250"],
        stdout=subprocess.PIPE,
    )
    assert writer.stdout is not None and writer.stdout.readline() == b"written\n"
    shipped: list[dict[str, Any]] = []
    survivor = Spool(
        str(directory), lambda b: shipped.extend(decode(b)), background=False
    )
    survivor.append({"id": "s" * 32, "kind": "open", "token": "t", "at": 2.0})
    assert survivor.ship_orphans() == 0  # the writer is alive and holds its lock

    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert survivor.ship_orphans() == 250
    orphaned = sorted(h["id"] for h in shipped if h["id"] != "s" * 32)
    assert orphaned == [f"{n:032x}" for n in range(250)]
    assert [p.name for p in directory.iterdir() if p.suffix == ".log"] == [
        Path(survivor._current.path).name  # type: ignore[union-attr]
    ]
    survivor.stop()


def test_a_started_process_ships_what_a_dead_one_left_without_a_new_hit(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "spool"
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(directory), str(ROOT), "40"],
        stdout=subprocess.PIPE,
    )
    assert writer.stdout is not None and writer.stdout.readline() == b"written\n"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    shipped: list[dict[str, Any]] = []
    restarted = Spool(str(directory), lambda b: shipped.extend(decode(b)))

    restarted.start()

    wait_for(lambda: len(shipped) == 40)
    assert sorted(h["id"] for h in shipped) == [f"{n:032x}" for n in range(40)]
    restarted.stop()


def test_shipping_resumes_after_the_last_committed_batch(tmp_path: Path) -> None:
    batches: list[list[dict[str, Any]]] = []
    failing = {"on": True}

    def sink(block: bytes) -> None:
        if failing["on"]:
            raise ConnectionError("down")
        batches.append(decode(block))

    spool = Spool(str(tmp_path), sink, background=False, batch_size=10)
    for n in range(25):
        spool.append({"id": str(n)})
    with pytest.raises(ConnectionError):
        spool.flush()
    failing["on"] = False
    spool.flush()
    spool.flush()
    assert [len(b) for b in batches] == [10, 10, 5]
    assert [h["id"] for b in batches for h in b] == [str(n) for n in range(25)]
    spool.stop()


def test_a_torn_last_line_is_not_shipped_until_complete(tmp_path: Path) -> None:
    shipped: list[dict[str, Any]] = []
    spool = Spool(str(tmp_path), lambda b: shipped.extend(decode(b)), background=False)
    spool.append({"id": "a"})
    assert spool._current is not None
    import os

    os.write(spool._current.fd, b'{"id": "b"')
    spool.flush()
    assert [h["id"] for h in shipped] == ["a"]
    os.write(spool._current.fd, b"}\n")
    spool.flush()
    assert [h["id"] for h in shipped] == ["a", "b"]
    spool.stop()


def test_a_part_filled_batch_grows_while_the_workers_are_behind(
    tmp_path: Path,
) -> None:
    batches: list[list[dict[str, Any]]] = []
    queued = {"jobs": 0}
    spool = Spool(
        str(tmp_path),
        lambda block: batches.append(decode(block)),
        background=False,
        batch_size=10,
        backlog=lambda: queued["jobs"],
        max_wait=3600,
    )
    spool.append({"id": "0"})
    spool.ship_due()
    assert [len(batch) for batch in batches] == [1]  # the workers keep up
    queued["jobs"] = 3
    for n in range(1, 5):
        spool.append({"id": str(n)})
    spool.ship_due()
    assert [len(batch) for batch in batches] == [1]  # three jobs wait: let it fill up
    for n in range(5, 13):
        spool.append({"id": str(n)})
    spool.ship_due()
    assert [len(batch) for batch in batches] == [1, 10, 2]  # a full batch goes at once
    spool.append({"id": "13"})
    queued["jobs"] = 0
    spool.ship_due()
    assert [h["id"] for h in batches[-1]] == ["13"]  # caught up: ship straight away
    spool.stop()


def test_hits_that_arrive_while_a_batch_ships_wait_to_fill_the_next_one(
    tmp_path: Path,
) -> None:
    batches: list[list[dict[str, Any]]] = []

    def ship(block: bytes) -> None:
        batches.append(decode(block))
        spool.append({"id": f"late-{len(batches)}"})  # a request answered meanwhile

    spool = Spool(str(tmp_path), ship, background=False, batch_size=3)
    for n in range(5):
        spool.append({"id": str(n)})
    spool.flush()
    assert [[h["id"] for h in batch] for batch in batches] == [
        ["0", "1", "2"],
        ["3", "4"],
    ]
    spool.flush()
    assert [h["id"] for h in batches[-1]] == ["late-1", "late-2"]
    spool.stop()


def test_a_held_batch_is_shipped_after_the_longest_wait(tmp_path: Path) -> None:
    batches: list[list[dict[str, Any]]] = []
    spool = Spool(
        str(tmp_path),
        lambda block: batches.append(decode(block)),
        background=False,
        backlog=lambda: 50,
        max_wait=0.2,
    )
    spool.append({"id": "a"})
    spool.ship_due()  # the first batch is never held: it tells the size of a hit
    spool.append({"id": "b"})
    spool.ship_due()
    assert [h["id"] for b in batches for h in b] == ["a"]
    time.sleep(0.25)
    spool.ship_due()
    assert [h["id"] for b in batches for h in b] == ["a", "b"]
    spool.stop()


def test_a_shipped_file_is_replaced_and_deleted_within_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.tracking import spool as spool_module

    monkeypatch.setattr(spool_module, "_ROTATE_SECONDS", 0.0)
    monkeypatch.setattr(spool_module, "_RETIRE_GRACE", 0.2)
    shipped: list[dict[str, Any]] = []
    spool = Spool(str(tmp_path), lambda b: shipped.extend(decode(b)), background=False)
    spool.append({"id": "a", "ip": "81.2.69.142"})
    first = spool._current
    assert first is not None
    spool.ship_due()
    assert spool._current is not first  # shipped, so replaced at once
    # An append that picked the old file just before the swap is still shipped.
    os.write(first.fd, b'{"id":"late"}\n')
    spool.ship_due()
    assert Path(first.path).exists()  # kept for the grace period
    time.sleep(0.25)
    spool.ship_due()
    assert not Path(first.path).exists()
    assert [h["id"] for h in shipped] == ["a", "late"]
    logs = list(tmp_path.glob("*.log"))
    assert logs == [] or all("81.2.69.142" not in p.read_text() for p in logs)
    spool.stop()


def test_a_forked_process_numbers_its_hits_apart_from_its_parent() -> None:
    from app.tracking.hotpath import hit_id

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id, then straight out
        os.write(write, hit_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    parent = hit_id()
    assert child and parent and child[:16] != parent[:16]
    assert len({hit_id() for _ in range(1000)}) == 1000


def test_lines_keep_every_value_and_torn_lines_are_skipped() -> None:
    hit = {
        "id": "a1",
        "at": 1733300000.123456,
        "ua": "Mozilla/5.0 (Linux; Android 14; SM-S918B) Öffnen “quoted”",
        "headers": {"accept-language": "sv-SE,sv;q=0.9"},
    }
    # A value that is not UTF-8 (a lone surrogate) costs that character, not the hit.
    odd = {"id": "a2", "at": 1.5, "ua": "broken \udc80 agent"}

    block = encode(hit) + encode(odd) + b'{"id": "torn", "at'

    assert decode(block) == [hit, {**odd, "ua": "broken ? agent"}]


def test_a_web_process_started_while_redis_is_down_queues_its_hits_once_it_is_up(
    config: dict[str, Any], tmp_path: Path, make_account: Callable[..., Account]
) -> None:
    (tmp_path / "late").mkdir()
    server = OwnRedis(tmp_path / "late")
    app, account = _app_and_rep(config, server.url, SPOOL_FLUSH_INTERVAL=0.02)
    assert isinstance(app.extensions["trailmark.jobs"], RqJobs)  # not in-process
    sent = account.send(html="<p>Hi</p>")
    pixel = path_of(sent["pixel_url"])
    for _ in range(5):
        assert account.client.get(pixel).data[:6] == b"GIF89a"
    replied = account.post(f"/api/v1/messages/{sent['id']}/replied")
    assert replied.status_code in {200, 503}  # never a 500 while Redis is down
    assert _stored(app) == 0

    server.start()
    wait_for(lambda: _queued(server), timeout=15)
    _drain(app, server.url)
    assert _stored(app) == 5
    app.extensions["trailmark.spool"].stop()
    server.stop()


def test_a_message_registered_while_redis_is_down_is_stored_once_and_synced_later(
    config: dict[str, Any], own_redis: OwnRedis
) -> None:
    """Its CRM sync cannot be queued, but the message is kept and answered 201."""
    from app.models import CrmConnection, Message, User
    from integrations.jobs import unsynced_messages

    app, account = _app_and_rep(config, own_redis.url)
    db = app.extensions["trailmark.db"]
    with db.begin() as session:
        org_id = session.scalars(select(User.org_id)).one()
        session.add(
            CrmConnection(org_id=org_id, provider="hubspot", external_account_id="1")
        )
    own_redis.stop()

    created = account.send(subject="During the outage", html="<p>Hi</p>")

    listed = account.get("/api/v1/messages").get_json()["messages"]
    assert [m["subject"] for m in listed] == ["During the outage"]
    with db.session_factory() as session:
        connection = session.scalars(select(CrmConnection)).one()
        message_id = session.scalars(
            select(Message.id).where(Message.public_id == created["id"])
        ).one()
        # What the periodic CRM sweep queues once Redis answers again.
        assert unsynced_messages(session, connection) == [message_id]


def test_a_stream_opened_while_redis_is_down_answers_from_the_database(
    config: dict[str, Any], own_redis: OwnRedis
) -> None:
    from app.models import Message, Notification, User

    app, account = _app_and_rep(config, own_redis.url)
    account.send(subject="Renewal", html="<p>Hi</p>")
    db = app.extensions["trailmark.db"]
    with db.begin() as session:
        user_id = session.scalars(select(User.id)).one()
        message_id = session.scalars(select(Message.id)).one()
        session.add(
            Notification(
                user_id=user_id, message_id=message_id, title="Call Ann", body="today"
            )
        )
    own_redis.stop()

    for resume in ("0", "2147483648"):
        answer = account.client.get(
            "/api/v1/notifications/stream",
            headers={**account.headers, "Last-Event-ID": resume},
        )
        body = answer.get_data(as_text=True)
        assert answer.status_code == 200
        assert "retry: 5000" in body  # ask again in a few seconds
        if resume == "0":
            assert '"title": "Call Ann"' in body
        else:  # an id past the latest resumes from the latest
            assert "event: notification" not in body
