"""The Procfile's track server (app.tracking.server) as a process, over real HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from app.models import Event
from tests.conftest import ROOT, Account, path_of, wait_for, worker_env
from tests.test_tracking import CHROME, LINKOPING, assert_pixel, events


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TrackServer:
    """``python -m app.tracking.server`` with the tests' settings, in a session of its
    own so that a test can signal it as a terminal or a process manager would."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = _free_port()
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, processes: int = 2) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "app.tracking.server"),
                    *("--port", str(self.port), "--processes", str(processes)),
                ],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(lambda: len(self.children()) == processes and self._answers(), 20)

    def _answers(self) -> bool:
        try:
            return requests.get(f"{self.url}/o/ready.gif", timeout=1).ok
        except requests.ConnectionError:
            return False

    def children(self) -> list[int]:
        assert self.process is not None
        pid = self.process.pid
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as fh:
                return [int(child) for child in fh.read().split()]
        except FileNotFoundError:
            return []

    def stop(self, signum: int = signal.SIGTERM, group: bool = False) -> int:
        """Signal the supervisor (or, with ``group``, every process as Ctrl-C does)
        and return its exit status."""
        assert self.process is not None
        if group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)
        status = self.process.wait(15)
        self.process = None
        return status

    def kill(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):  # all gone already
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None


@pytest.fixture
def track_server(
    config: dict[str, Any], tmp_path: Path, app: Any
) -> Iterator[TrackServer]:
    env = {**worker_env({**config, "TRUSTED_PROXIES": 1}), "LOG_LEVEL": "INFO"}
    server = TrackServer(env, tmp_path / "track.log")
    yield server
    server.kill()


def test_pixels_and_links_are_answered_and_every_hit_is_stored(
    track_server: TrackServer, account: Account, run_jobs: Callable[[], None]
) -> None:
    created = account.send(
        html='<p>Hi</p><a href="https://example.com/p?q=1#top">x</a>'
    )
    pixel = track_server.url + path_of(created["pixel_url"])
    link = track_server.url + path_of(created["links"][0]["tracked_url"])
    track_server.start()
    headers = {"User-Agent": CHROME, "X-Forwarded-For": LINKOPING}

    with requests.Session() as browser:  # one connection, kept alive between hits
        for _ in range(20):
            assert_pixel(browser.get(pixel, headers=headers))
        head = browser.head(pixel, headers=headers)
        clicked = browser.get(link, headers=headers, allow_redirects=False)
        unknown = browser.get(f"{track_server.url}/c/not-a-token", headers=headers)
        elsewhere = browser.get(f"{track_server.url}/api/v1/messages", headers=headers)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == "42"
    assert clicked.status_code == 302
    assert clicked.headers["Location"] == "https://example.com/p?q=1#top"
    assert clicked.headers["Cache-Control"] == "no-store"
    assert unknown.status_code == 404 and "not valid" in unknown.text
    assert elsewhere.status_code == 404

    # Stopped as a process manager does: what each process spooled is shipped.
    assert track_server.stop() == 0
    run_jobs()
    stored = events(account, created["id"])
    assert [e["type"] for e in stored].count("open") == 21
    assert [e["type"] for e in stored].count("click") == 1
    human = [e for e in stored if e["classification"] == "human"]
    assert human[0]["location"]["city"] == "Linköping"
    assert human[0]["device"]["client"] == "Chrome"


@pytest.mark.parametrize(
    ("signum", "logged"),
    [
        (signal.SIGKILL, "was killed by SIGKILL"),
        # bjoern ends its loop on a SIGINT of its own, once its connections close.
        (signal.SIGINT, "exited with status 0"),
    ],
    ids=["sigkill", "sigint"],
)
def test_a_process_that_ends_is_replaced_and_no_answered_hit_is_lost(
    track_server: TrackServer,
    account: Account,
    run_jobs: Callable[[], None],
    signum: int,
    logged: str,
) -> None:
    created = account.send(html="<p>Hi</p>")
    track_server.start()
    pixel = track_server.url + path_of(created["pixel_url"])
    headers = {"User-Agent": CHROME}
    answered = 0
    for _ in range(10):
        answered += requests.get(pixel, headers=headers, timeout=5).ok

    victim = track_server.children()[0]
    os.kill(victim, signum)
    replaced = wait_for(
        lambda: (
            len(track_server.children()) == 2 and victim not in track_server.children()
        ),
        10,
    )
    assert replaced
    for _ in range(10):
        answered += requests.get(pixel, headers=headers, timeout=5).ok

    assert track_server.stop() == 0
    log = track_server.log.read_text()
    assert f"(pid {victim}) {logged}; starting another" in log
    run_jobs()
    assert answered == 20
    assert len(events(account, created["id"])) == 20


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stopped_under_load_every_answered_hit_is_stored_without_a_restart(
    track_server: TrackServer,
    account: Account,
    run_jobs: Callable[[], None],
    signum: int,
) -> None:
    created = account.send(html="<p>Hi</p>")
    track_server.start()
    pixel = track_server.url + path_of(created["pixel_url"])
    answered = [0] * 4
    stopping = threading.Event()

    def keep_asking(slot: int) -> None:
        with requests.Session() as browser:
            while not stopping.is_set():
                try:
                    if browser.get(pixel, timeout=5).status_code == 200:
                        answered[slot] += 1
                except requests.RequestException:
                    return

    clients = [threading.Thread(target=keep_asking, args=(n,)) for n in range(4)]
    for client in clients:
        client.start()
    wait_for(lambda: sum(answered) >= 200, 10)
    assert track_server.stop(signum, group=signum == signal.SIGINT) == 0
    stopping.set()
    for client in clients:
        client.join(10)
    run_jobs()
    stored = len(events(account, created["id"]))
    # A hit whose answer was cut off by the stop may be stored unanswered; never the
    # other way round.
    assert sum(answered) <= stored <= sum(answered) + len(clients)


def test_ctrl_c_stops_every_process_at_once_even_with_idle_connections(
    track_server: TrackServer, account: Account, run_jobs: Callable[[], None]
) -> None:
    created = account.send(html="<p>Hi</p>")
    track_server.start()
    # Keep-alive connections a browser left open: they must not hold the stop up.
    idle = []
    for _ in range(4):
        conn = socket.create_connection(("127.0.0.1", track_server.port))
        conn.sendall(
            f"GET {path_of(created['pixel_url'])} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
        )
        assert conn.recv(4096).startswith(b"HTTP/1.1 200 OK")
        idle.append(conn)
    children = track_server.children()
    started = time.monotonic()
    assert track_server.stop(signal.SIGINT, group=True) == 0
    assert time.monotonic() - started < 5
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
    for conn in idle:
        conn.close()
    run_jobs()
    assert len(events(account, created["id"])) == 4


def test_killed_outright_the_supervisor_takes_its_processes_with_it(
    track_server: TrackServer, account: Account, run_jobs: Callable[[], None]
) -> None:
    created = account.send(html="<p>Hi</p>")
    track_server.start()
    pixel = track_server.url + path_of(created["pixel_url"])
    for _ in range(5):
        assert_pixel(requests.get(pixel, timeout=5))
    children = track_server.children()
    assert track_server.process is not None
    track_server.process.kill()  # the supervisor alone, as the OOM killer would
    track_server.process.wait()
    wait_for(lambda: not [p for p in children if Path(f"/proc/{p}").exists()], 10)
    # Each shipped what it had spooled on its way out.
    run_jobs()
    assert len(events(account, created["id"])) == 5


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request)
        chunks = []
        while True:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b"Connection: close" not in chunk:
                break
        return b"".join(chunks)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", b"400"),
        (
            b"GET /o/x.gif HTTP/1.1\r\nHost: t\r\nX-Big: "
            + b"a" * 200_000
            + b"\r\n\r\n",
            b"400",
        ),
        (
            b"GET /o/x.gif HTTP/1.1\r\nHost: t\r\nUser-Agent: \xff\xfe\x00z\r\n\r\n",
            b"200",
        ),
        (b"GET /o/" + b"%" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", b"400"),
        (
            b"POST /c/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz\r\n",
            b"400",
        ),
    ],
    ids=["not-http", "huge-header", "binary-agent", "bad-escapes", "bad-chunks"],
)
def test_hostile_requests_get_an_answer_and_the_server_keeps_serving(
    track_server: TrackServer, request_bytes: bytes, status: bytes
) -> None:
    track_server.start(processes=1)
    [child] = track_server.children()
    answer = _raw(track_server.port, request_bytes)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
    assert_pixel(requests.get(f"{track_server.url}/o/x.gif", timeout=5))
    assert track_server.children() == [child]


def test_a_user_agent_in_utf8_is_stored_as_sent(
    track_server: TrackServer,
    account: Account,
    run_jobs: Callable[[], None],
    app: Any,
) -> None:
    created = account.send(html="<p>Hi</p>")
    track_server.start(processes=1)
    agent = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Åsa\u2019s Mail/1.0"
    request = (
        f"GET {path_of(created['pixel_url'])} HTTP/1.1\r\nHost: t\r\n".encode()
        + b"User-Agent: "
        + agent.encode()
        + b"\r\n\r\n"
    )
    assert _raw(track_server.port, request).startswith(b"HTTP/1.1 200 OK")
    assert track_server.stop() == 0
    run_jobs()
    with app.extensions["trailmark.db"].session_factory() as session:
        stored = session.scalars(select(Event.user_agent)).all()
    assert stored == [agent]


@pytest.mark.parametrize(
    ("args", "extra", "message"),
    [
        (["--host", "::1"], {}, "listens on IPv4 only"),
        (["--processes", "0"], {}, "must be 1 or more"),
        (["--processes", "abc"], {}, "not a whole number: 'abc'"),
        (["--port", "70000"], {}, "must be from 0 to 65535"),
        (["--host", ""], {}, "give an address to listen on"),
        ([], {"LOG_LEVEL": "loud"}, "track: LOG_LEVEL"),
        ([], {"SECRET_KEY": "short"}, "track: SECRET_KEY is too short"),
    ],
)
def test_a_start_that_cannot_work_says_why_in_one_line(
    config: dict[str, Any], args: list[str], extra: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.tracking.server", "--port", "0", *args],
        cwd=ROOT,
        env={**worker_env(config), **extra},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
