"""Fixtures for the pages in a real browser: a live server, workers, Chromium."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import requests
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Playwright,
    Route,
    sync_playwright,
)

from tests.conftest import ROOT, wait_for, worker_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Names never resolve, so a page can reach nothing but loopback addresses.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
LOOPBACK = {"127.0.0.1", "::1", "[::1]"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def live_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def config(config: dict[str, Any], live_url: str) -> dict[str, Any]:
    """Settings for the live server, its workers and the in-process app alike."""
    # One proxy is trusted, so a browser context can stand in for a prospect
    # elsewhere on the internet by sending X-Forwarded-For.
    return {**config, "PUBLIC_URL": live_url, "TRUSTED_PROXIES": 1}


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


class LiveServer:
    """The web process as the Procfile runs it (granian), on a loopback port."""

    def __init__(self, url: str, env: dict[str, str]) -> None:
        self.url = url
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            *(sys.executable, "-m", "granian", "--interface", "wsgi"),
            *("--host", "127.0.0.1", "--port", str(urlsplit(self.url).port)),
            *("--workers", "2", "--runtime-mode", "st", "--blocking-threads", "4"),
            *("--log-level", "warning", "wsgi:app"),
        ]
        # A session of its own, so that its worker process goes down with it.
        process = subprocess.Popen(
            command, cwd=ROOT, env=self.env, start_new_session=True
        )
        self.process = process
        wait_for(
            lambda: process.poll() is not None or _answers(f"{self.url}/login"), 20
        )
        assert process.poll() is None, "the web process exited at start"

    def stop(self) -> None:
        """Shut down as an operator does; killed if that takes too long."""
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None

    def kill(self) -> None:
        """End the web process and its worker at once, as a crash does."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None


@pytest.fixture
def live_server(
    config: dict[str, Any], live_url: str, redis_conn: redis.Redis
) -> Iterator[LiveServer]:
    """The real app served over HTTP, with PUBLIC_URL pointing at it."""
    server = LiveServer(live_url, {**worker_env(config), "LOG_LEVEL": "WARNING"})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def worker(worker_process: Callable[..., subprocess.Popen[bytes]]) -> None:
    """One real `python -m workers` process for the test."""
    worker_process()


class Destination:
    """The prospect's website: a page for every path, and a record of visits."""

    def __init__(self) -> None:
        self.url = ""
        self.visits: list[str] = []


def _destination_handler(site: Destination) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/favicon.ico":
                self.send_error(404)
                return
            site.visits.append(self.path)
            body = b"<!doctype html><title>Prospect site</title><h1>Welcome</h1>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def destination() -> Iterator[Destination]:
    """A small HTTP server on loopback standing in for the prospect's website."""
    site = Destination()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _destination_handler(site))
    site.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's headless Chromium."""
    chromium = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )
    yield chromium
    chromium.close()


def _loopback_only(route: Route) -> None:
    host = urlsplit(route.request.url).hostname or ""
    if route.request.url.startswith(("data:", "about:")) or host in LOOPBACK:
        route.continue_()
    else:
        route.abort()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    """Fresh browser contexts (separate cookies), closed after the test."""
    opened: list[BrowserContext] = []

    def make(**options: Any) -> BrowserContext:
        context = browser.new_context(**options)
        context.set_default_timeout(10_000)
        opened.append(context)
        return context

    yield make
    for context in opened:
        context.close()


@pytest.fixture
def prospect_context(
    new_context: Callable[..., BrowserContext],
) -> Callable[..., BrowserContext]:
    """A context for the recipient, whose requests may go to loopback only."""

    def make(**options: Any) -> BrowserContext:
        context = new_context(**options)
        context.route("**/*", _loopback_only)
        return context

    return make
