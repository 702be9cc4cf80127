"""The worker process: ``python -m workers`` (RQ worker with its scheduler).

It also runs the maintenance loop that queues the periodic jobs.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import redis
from rq import SimpleWorker, Worker
from rq.defaults import DEFAULT_WORKER_TTL

from config.settings import ConfigError, check_databases, configure_logging, log_level
from integrations.crypto import check_keys
from workers.context import current
from workers.lifecycle import children_stop_with_this_process
from workers.maintenance import Maintenance
from workers.queue import QUEUES, RqJobs

logger = logging.getLogger("workers")

JOB_MODULES = (
    "workers.ingest",
    "workers.sync",
    "workers.followups",
    "workers.retention",
    "integrations.jobs",
)

# Held by the maintenance thread while it talks to Redis, and taken around every fork:
# a work horse forked while a thread held a Redis pool or logging lock would hang.
_FORK_GUARD = threading.Lock()


def _guard_forks() -> None:
    os.register_at_fork(
        before=_FORK_GUARD.acquire,
        after_in_parent=_FORK_GUARD.release,
        after_in_child=_FORK_GUARD.release,
    )


class _StopNoted:
    """Notes that a signal asked the worker to stop, as RQ's own state does not say.

    RQ's ``work()`` returns both when asked to stop and when it quits on an error
    it does not handle; only the first should end this process.
    """

    stop_was_requested = False

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_was_requested = True
        super().request_stop(signum, frame)  # type: ignore[misc]


class _InProcessWorker(_StopNoted, SimpleWorker):
    pass


class _ForkingWorker(_StopNoted, Worker):
    pass


# How long to wait before a new RQ worker after one quit on an error, growing to the
# last while errors go on; a worker that ran this long starts the count again.
_RESTART_PAUSES = (1.0, 2.0, 5.0, 10.0, 30.0)
_RAN_WELL = 60.0


def keep_working(
    make_worker: Callable[[], _StopNoted], work: Callable[[Any], None]
) -> None:
    """Run RQ's worker until a signal stops it; a new one whenever it quits on an error.

    RQ's worker waits out a Redis outage only while it waits for jobs: when Redis
    goes away as it finishes a job, it quits, and the process would end, leaving the
    queues without a worker until something started another. The job it was running
    is taken up again once RQ finds it abandoned.
    """
    failures = 0
    while True:
        worker = None
        started = time.monotonic()
        try:
            worker = make_worker()
            work(worker)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            logger.warning("RQ's worker lost Redis (%s)", exc)
        finally:
            if worker is not None:
                _let_go(worker)
        if worker is not None and worker.stop_was_requested:
            return
        if time.monotonic() - started >= _RAN_WELL:
            failures = 0  # a new outage, not the same one going on
        pause = _RESTART_PAUSES[min(failures, len(_RESTART_PAUSES) - 1)]
        failures += 1
        logger.warning("RQ's worker quit; a new one starts in %.0f s", pause)
        if _pause_unless_signalled(pause):
            return


def _let_go(worker: Any) -> None:
    """Stop what an RQ worker that quit without signing off left running.

    Its thread listening for commands (which would go on retrying Redis, and hold a
    connection, for as long as the process lives) and its connections.
    """
    listener = getattr(worker, "pubsub_thread", None)
    if listener is not None and listener.is_alive():
        listener.stop()
        listener.join(timeout=5)
    pubsub = getattr(worker, "pubsub", None)
    if pubsub is not None:
        with contextlib.suppress(redis.RedisError, OSError):
            pubsub.close()
    worker.connection.close()


def _pause_unless_signalled(seconds: float) -> bool:
    """Sleep, unless SIGTERM or SIGINT comes first; return whether one came."""
    signalled: list[int] = []

    def note(signum: int, _frame: FrameType | None) -> None:
        signalled.append(signum)

    stops = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, note) for sig in stops}
    try:
        deadline = time.monotonic() + seconds
        while not signalled and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return bool(signalled)


class _OutageInOneLine(logging.Filter):
    """When RQ's worker quits because Redis went away, it logs the traceback of the
    lost connection: say it in one line, as the outage is the news, not RQ's code.
    (RQ's scheduler writes its own traceback to stderr, out of this filter's reach.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, redis.ConnectionError | redis.TimeoutError):
            record.msg = f"{record.getMessage()} (Redis: {error})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_redis_outages() -> None:
    log = logging.getLogger("rq.worker")
    if not any(isinstance(f, _OutageInOneLine) for f in log.filters):
        log.addFilter(_OutageInOneLine())


def worker_connection(redis_url: str) -> redis.Redis:
    """A Redis connection of the worker's own, for RQ to wait on for jobs.

    RQ blocks waiting for the next job for its worker TTL less 15 s (here
    ``WORKER_MAINTENANCE_INTERVAL``, 30 s). A connection that reads with redis-py's
    default 5 s timeout, as the jobs' one does, times out while the queues are quiet;
    RQ takes that for a lost Redis and stops listening for up to a minute, so a hit
    after a quiet spell would wait as long.
    """
    return redis.Redis.from_url(
        redis_url, socket_connect_timeout=5, socket_timeout=DEFAULT_WORKER_TTL
    )


def _warm_up() -> None:
    """Import every job's module and map the models before the first job arrives.

    Then keep what start-up made out of the garbage collector's passes: it lives as
    long as the process, and a batch of hits allocates enough to set off the
    collector's older generations, which would walk all of it each time (a fifth of
    the CPU a hit costs, measured in-process on batches of 2,000 hits).
    """
    from sqlalchemy.orm import configure_mappers

    for name in JOB_MODULES:
        importlib.import_module(name)
    configure_mappers()
    gc.collect()
    gc.freeze()


def _log_level(text: str) -> str:
    try:
        return log_level(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m workers", description="Run a Trailmark worker."
    )
    parser.add_argument(
        "--burst", action="store_true", help="Stop when queues are empty."
    )
    parser.add_argument(
        "--fork",
        action="store_true",
        help="Run each job in a forked process (isolation at a cost per job).",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="Lower this process's CPU priority by this much (0 to 19).",
    )
    parser.add_argument(
        "--log-level",
        type=_log_level,
        default=os.environ.get("LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR (default: LOG_LEVEL, else INFO)",
    )
    args = parser.parse_args()
    if args.nice:
        # On a host shared with web processes, the tracking endpoints answer first
        # and the worker drains what they spooled from the CPU they leave over.
        os.nice(max(0, min(args.nice, 19)))
    configure_logging(args.log_level)
    _quiet_redis_outages()
    try:
        ctx = current()
        # What it reads that would otherwise fail only in its jobs.
        check_keys(ctx.settings)
        check_databases(ctx.settings)
    except ConfigError as exc:
        raise SystemExit(f"worker: {exc}") from None
    if not isinstance(ctx.jobs, RqJobs):
        raise SystemExit("REDIS_URL must point at a reachable Redis to run a worker.")
    _warm_up()
    # RQ runs its scheduler in a forked child: killed outright (the OOM killer,
    # SIGKILL from a supervisor), the worker would leave it polling Redis forever.
    children_stop_with_this_process()
    # By default jobs run in this process (RQ's SimpleWorker): the user-agent and
    # GeoIP caches, compiled SQL and pooled connections serve every job, where a fork
    # per job would start each one cold. RQ's job timeouts apply either way.
    worker_class = _ForkingWorker if args.fork else _InProcessWorker
    every = max(1, int(ctx.settings["WORKER_MAINTENANCE_INTERVAL"]))

    def make_worker() -> _InProcessWorker | _ForkingWorker:
        # A job is logged by its id alone: a busy worker starts several a second.
        return worker_class(
            list(QUEUES),
            connection=worker_connection(ctx.settings["REDIS_URL"]),
            log_job_description=False,
            # RQ's scheduler child exits when Redis goes away, and the worker only
            # starts it again at its next maintenance, which an idle worker reaches
            # when its wait for a job (its TTL less 15 s) runs out: delayed jobs (CRM
            # retries, reminders) would wait up to ten minutes after a blip of Redis.
            maintenance_interval=every,
            worker_ttl=every + 15,
        )

    def work(worker: Any) -> None:
        worker.work(
            burst=args.burst, with_scheduler=True, logging_level=args.log_level.upper()
        )

    stop = threading.Event()
    if not args.burst:
        if args.fork:
            _guard_forks()
        stop = Maintenance(ctx, guard=_FORK_GUARD).start()
    try:
        if args.burst:
            work(make_worker())
        else:
            keep_working(make_worker, work)
    finally:
        stop.set()


if __name__ == "__main__":
    main()
