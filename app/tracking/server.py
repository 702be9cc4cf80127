"""A leaner server for the ``track`` processes behind a reverse proxy: bjoern, forked.

    python -m app.tracking.server --host 0.0.0.0 --port 5001 --processes 2

The Procfile's ``track`` runs granian, which is safe to face the internet. This is the
alternative for track processes that only a reverse proxy reaches. The pixel and link
endpoints are all they serve, and what they do for a hit (note it in the spool file,
answer from memory) never waits on anything. bjoern parses HTTP in C and calls the WSGI
app from a single thread: measured with a bare app returning the GIF, it costs about 10
µs of CPU a request where granian costs about 22, half of what the track processes
spend on a hit.

bjoern leaves to the proxy in front what a server facing the internet must do, so it
must never be reached directly: it answers only the last of several requests a client
pipelines on one connection, and a pipelined request split across two reads crashes
the process (SIGSEGV). It listens on IPv4 only, reads a request's whole body into
memory, and keeps an idle connection open for as long as the client does. nginx,
HAProxy and the cloud load balancers never pipeline to a backend and bound the rest;
the README says how to set nginx for it.

The supervisor binds the socket, loads the app once and forks the serving processes,
which share the socket. A process that dies is replaced; the hits it answered are in
its spool file, which another process ships. SIGTERM or SIGINT stops every process:
each stops answering, ships what it spooled, and exits.
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
from dataclasses import dataclass
from types import FrameType
from typing import Any

from app import create_app
from app.tracking.hotpath import StartResponse, WSGIApp
from config.settings import ConfigError, configure_logging
from workers.lifecycle import children_stop_with_this_process

logger = logging.getLogger("trailmark.track")

# How long a stopping process gets to ship its spool before it is killed; what it
# leaves is shipped by the next process to start, so nothing is lost either way.
STOP_GRACE = 10.0
# A process that dies within this long of starting waits longer before it is started
# again, each time: an app that cannot start would otherwise be forked for ever.
QUICK_DEATH = 5.0
PAUSES = (0.5, 1.0, 2.0, 5.0, 10.0)
_TICK = 0.05


class _Stop(Exception):
    """Raised in the supervisor by SIGTERM or SIGINT."""


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        configure_logging()
    except ConfigError as exc:
        print(f"track: {exc}", file=sys.stderr)
        return 2
    try:
        listener = bind(args.host, args.port, args.backlog)
    except (OSError, ValueError) as exc:
        print(
            f"track: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 2
    try:
        app = create_app()
    except ConfigError as exc:
        # A setting that stops the start (SECRET_KEY, PUBLIC_URL): the message alone.
        print(f"track: {exc}", file=sys.stderr)
        return 2
    gate = threading.Lock()
    front = _gated(app.extensions["trailmark.tracking"].alone(), gate)
    spool = app.extensions["trailmark.spool"]
    engine = app.extensions["trailmark.db"].engine

    def start() -> None:
        # Connections pooled before the fork are the supervisor's: never shared.
        engine.dispose(close=False)
        spool.start()

    def stop() -> None:
        # Held for good: a request arriving now waits unanswered until the process
        # exits, so every hit that was answered is in the spool this ships.
        gate.acquire()
        spool.stop()

    # What start-up made is shared by the forked processes and never collected.
    gc.freeze()
    # Killed outright, the supervisor takes its serving processes with it.
    children_stop_with_this_process()
    return Supervisor(listener, front, start, stop, args.processes).run()


def _gated(app: WSGIApp, gate: threading.Lock) -> WSGIApp:
    def gated(
        environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        with gate:
            return app(environ, start_response)

    return gated


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app.tracking.server",
        description="Serve the pixel and link endpoints with bjoern, behind a proxy.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="an IPv4 address")
    parser.add_argument("--port", type=_port, default=5001)
    parser.add_argument("--processes", type=_at_least_one, default=2)
    parser.add_argument("--backlog", type=_at_least_one, default=1024)
    return parser.parse_args(argv)


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def _at_least_one(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _port(text: str) -> int:
    value = _whole(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be from 0 to 65535")
    return value


def bind(host: str, port: int, backlog: int) -> socket.socket:
    """The listening socket the serving processes share.

    IPv4 only: bjoern reads the client's address as an IPv4 one, so on an IPv6
    socket every hit would be stored with a wrong address.
    """
    if not host.strip():
        raise ValueError("give an address to listen on, such as 0.0.0.0")
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


@dataclass
class _Slot:
    """One serving process's place: who holds it, and when to fill it again."""

    number: int
    pid: int = 0
    started: float = 0.0
    quick_deaths: int = 0
    due: float = 0.0  # when an empty slot gets its next process


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
        self.slots = [_Slot(number) for number in range(processes)]

    def run(self) -> int:
        signal.signal(signal.SIGTERM, _raise_stop)
        signal.signal(signal.SIGINT, _raise_stop)
        host, port = self.listener.getsockname()[:2]
        logger.info(
            "track server (bjoern) listening on http://%s:%d with %d processes",
            host,
            port,
            len(self.slots),
        )
        try:
            while True:
                self._reap()
                now = time.monotonic()
                for slot in self.slots:
                    if not slot.pid and now >= slot.due:
                        self._spawn(slot)
                time.sleep(_TICK)
        except _Stop:
            pass
        self._stop_all()
        return 0

    def _reap(self) -> None:
        """Note every serving process that ended, and when to replace it."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            lived = time.monotonic() - slot.started
            slot.quick_deaths = slot.quick_deaths + 1 if lived < QUICK_DEATH else 0
            pause = PAUSES[min(slot.quick_deaths, len(PAUSES) - 1)]
            slot.pid, slot.due = 0, time.monotonic() + pause
            logger.warning(
                "track process %d (pid %d) %s; starting another in %.1f s",
                slot.number,
                pid,
                _how_it_ended(status),
                pause,
            )

    def _spawn(self, slot: _Slot) -> None:
        # Held off until the new process is on the books (and, in it, until its own
        # handling is in place): a stop in between would leave it running.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
        try:
            pid = os.fork()
            if pid == 0:
                os._exit(self._serve(slot.number))
            slot.pid, slot.started = pid, time.monotonic()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)

    def _serve(self, number: int) -> int:
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
            logger.info("track process %d started (pid %d)", number, os.getpid())
            bjoern.server_run(self.listener, self.app)
            # bjoern's loop ends by itself on a SIGINT sent to this process alone.
            self.on_stop()
        except Exception:
            logger.exception("track process %d failed", number)
            return 1
        return 0

    def _leave_on_sigterm(self) -> None:
        """Wait for SIGTERM, then stop answering, ship what was spooled, and exit."""
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
        running = {slot.pid for slot in self.slots if slot.pid}
        for pid in running:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while running and time.monotonic() < deadline:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                running.discard(pid)
            else:
                time.sleep(_TICK)
        for pid in running:
            logger.warning("track process pid %d did not stop in time; killed", pid)
            _signal(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


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
