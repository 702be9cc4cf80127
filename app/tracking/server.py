"""The server of the ``track`` processes: bjoern's event loop in a few forked processes.

    python -m app.tracking.server --host 0.0.0.0 --port 5001 --processes 2

The pixel and link endpoints are all these processes serve, and what they do for a hit
(note it in the spool file, answer from memory) never waits on anything. bjoern parses
HTTP in C and calls the WSGI app from a single thread, with no hand-off between threads:
measured with a bare app returning the GIF, it costs about 10 µs of CPU a request where
granian costs about 22, which is a third of everything the service spends on a hit.

The supervisor binds the socket, loads the app once and forks the serving processes,
which share the socket. A process that dies is replaced; hits it answered are in its
spool file, which another process ships. SIGTERM or SIGINT stops every process: each
ships what it spooled, and whatever it could not ship is shipped at the next start.

bjoern does only what a serving process behind a reverse proxy needs, and the proxy
(which terminates TLS for the tracking URLs anyway) does the rest: it listens on IPv4
only, reads a request's whole body into memory, and keeps an idle connection open for
as long as the client does. The README says how to set the proxy for it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from workers.lifecycle import children_stop_with_this_process

logger = logging.getLogger("trailmark.track")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# How long a stopping process gets to ship its spool before it is killed; what it
# leaves is shipped by the next process to start, so nothing is lost either way.
STOP_GRACE = 10.0
# A process that dies within this long of starting is not started again at once: an
# app that cannot start would otherwise be forked as fast as the machine allows.
QUICK_DEATH = 2.0
PAUSES = (0.5, 1.0, 2.0, 5.0, 10.0)


class _Stop(Exception):
    """Raised in the supervisor by SIGTERM or SIGINT."""


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        listener = bind(args.host, args.port, args.backlog)
    except (OSError, ValueError) as exc:
        print(
            f"track: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 2
    from app import create_app
    from config.settings import ConfigError

    try:
        app = create_app()
    except ConfigError as exc:
        # A setting that stops the start (SECRET_KEY, PUBLIC_URL): the message alone.
        print(f"track: {exc}", file=sys.stderr)
        return 2
    front = app.extensions["trailmark.tracking"].alone()
    spool = app.extensions["trailmark.spool"]
    engine = app.extensions["trailmark.db"].engine

    def start() -> None:
        # Connections pooled before the fork are the supervisor's: never shared.
        engine.dispose(close=False)
        spool.start()

    # What start-up made is shared by the forked processes and never collected.
    gc.freeze()
    # Killed outright, the supervisor takes its serving processes with it.
    children_stop_with_this_process()
    supervisor = Supervisor(listener, front, start, spool.stop, args.processes)
    return supervisor.run()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app.tracking.server",
        description="Serve the pixel and link endpoints (the Procfile's track).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="an IPv4 address")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--processes", type=_positive, default=2)
    parser.add_argument("--backlog", type=_positive, default=1024)
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def bind(host: str, port: int, backlog: int) -> socket.socket:
    """The listening socket the serving processes share.

    IPv4 only: bjoern reads the client's address as an IPv4 one, so on an IPv6
    socket every hit would be stored with a wrong address.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = ipaddress.ip_address(socket.gethostbyname(host))
    if address.version != 4:
        raise ValueError(
            "the track server listens on IPv4 only; put a proxy in front for IPv6"
        )
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((str(address), port))
        listener.listen(backlog)
    except OSError:
        listener.close()
        raise
    listener.setblocking(False)
    return listener


class Supervisor:
    """Forks the serving processes, replaces those that die, and stops them all."""

    def __init__(
        self,
        listener: socket.socket,
        app: WSGIApp,
        on_start: Callable[[], None],
        on_stop: Callable[[], None],
        processes: int,
    ) -> None:
        self.listener = listener
        self.app = app
        self.on_start = on_start
        self.on_stop = on_stop
        self.processes = processes
        self.children: dict[int, tuple[int, float]] = {}  # pid: (slot, started)
        self.failures = 0

    def run(self) -> int:
        signal.signal(signal.SIGTERM, _raise_stop)
        signal.signal(signal.SIGINT, _raise_stop)
        host, port = self.listener.getsockname()[:2]
        logger.info(
            "track server listening on http://%s:%d with %d processes",
            host,
            port,
            self.processes,
        )
        try:
            for slot in range(self.processes):
                self._spawn(slot)
            while True:
                pid, status = os.wait()
                self._replace(pid, status)
        except _Stop:
            pass
        self._stop_all()
        return 0

    def _spawn(self, slot: int) -> None:
        # Held off until the new process is on the books (and, in it, until its own
        # handling is in place): a stop in between would leave it running.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
        try:
            pid = os.fork()
            if pid == 0:
                os._exit(self._serve(slot))
            self.children[pid] = (slot, time.monotonic())
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)

    def _replace(self, pid: int, status: int) -> None:
        slot, started = self.children.pop(pid, (-1, 0.0))
        if slot < 0:
            return
        logger.warning(
            "track process %d (pid %d) %s; starting another",
            slot,
            pid,
            _how_it_ended(status),
        )
        if time.monotonic() - started < QUICK_DEATH:
            self.failures += 1
            time.sleep(PAUSES[min(self.failures, len(PAUSES)) - 1])
        else:
            self.failures = 0
            time.sleep(PAUSES[0])
        self._spawn(slot)

    def _serve(self, slot: int) -> int:
        """The body of a serving process; returns its exit status."""
        import bjoern

        # The supervisor decides when to stop: a terminal's Ctrl-C reaches it too.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        # SIGTERM stays blocked in every thread of this process and is taken by a
        # thread of its own: bjoern's loop runs Python's handlers only now and then.
        threading.Thread(
            target=self._leave_on_sigterm, name="stop", daemon=True
        ).start()
        try:
            self.on_start()
            logger.info("track process %d started (pid %d)", slot, os.getpid())
            bjoern.server_run(self.listener, self.app)
            # bjoern's loop ends by itself on a SIGINT sent to this process alone.
            self.on_stop()
        except Exception:
            logger.exception("track process %d failed", slot)
            return 1
        return 0

    def _leave_on_sigterm(self) -> None:
        """Wait for SIGTERM, then ship what this process spooled and exit.

        A hit is written to the spool in one call before it is answered, so none is
        half written; a request being answered right now loses its answer, not its hit.
        """
        signal.sigwait({signal.SIGTERM})
        try:
            self.on_stop()
        finally:
            logging.shutdown()
            os._exit(0)

    def _stop_all(self) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        logger.info("track server stopping")
        for pid in self.children:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while self.children and time.monotonic() < deadline:
            pid, _status = os.waitpid(-1, os.WNOHANG)
            if pid:
                self.children.pop(pid, None)
            else:
                time.sleep(0.05)
        for pid in self.children:
            logger.warning("track process pid %d did not stop in time; killed", pid)
            _signal(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        self.children.clear()


_STOPS = {signal.SIGTERM, signal.SIGINT}


def _raise_stop(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _how_it_ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


if __name__ == "__main__":
    sys.exit(main())
