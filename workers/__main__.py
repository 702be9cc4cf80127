"""The worker process: ``python -m workers`` (RQ worker with its scheduler)."""

from __future__ import annotations

import argparse
import logging
import os
import threading

import redis
from rq import Queue, Worker

from workers.context import WorkerContext, current
from workers.queue import QUEUES, RqJobs

logger = logging.getLogger("workers")

SWEEP_LOCK = "trailmark:crm-sweep"
FOLLOWUP_LOCK = "trailmark:followup-sweep"
RETENTION_LOCK = "trailmark:retention"

# Held by the timer threads while they talk to Redis, and taken around every fork:
# a work horse forked while a thread held a Redis pool or logging lock would hang.
_FORK_GUARD = threading.Lock()


def _guard_forks() -> None:
    os.register_at_fork(
        before=_FORK_GUARD.acquire,
        after_in_parent=_FORK_GUARD.release,
        after_in_child=_FORK_GUARD.release,
    )


def _sweep_now(ctx: WorkerContext, interval: float) -> None:
    """Queue one CRM sweep per interval, whichever worker gets the lock first."""
    from integrations.jobs import sweep

    assert isinstance(ctx.jobs, RqJobs)
    ttl = max(int(interval) - 1, 1)
    if ctx.jobs.connection.set(SWEEP_LOCK, os.getpid(), nx=True, ex=ttl):
        ctx.jobs.enqueue(sweep, queue="crm")
        logger.debug("crm sweep queued pid=%s", os.getpid())
    _followup_sweep_now(ctx, ttl)


def _followup_sweep_now(ctx: WorkerContext, ttl: int) -> None:
    """Queue one follow-up sweep (due checks, reminders, owed tasks) per interval."""
    from workers.followups import sweep

    assert isinstance(ctx.jobs, RqJobs)
    if ctx.jobs.connection.set(FOLLOWUP_LOCK, os.getpid(), nx=True, ex=ttl):
        ctx.jobs.enqueue(sweep)


def _sweeper(ctx: WorkerContext, stop: threading.Event) -> None:
    """Replay lost jobs and ended pauses of CRM connections, every interval."""
    interval = float(ctx.settings["CRM_SWEEP_INTERVAL"])
    while True:
        try:
            with _FORK_GUARD:
                _sweep_now(ctx, interval)
        except redis.RedisError as exc:
            logger.warning("crm sweep not queued error=%s", exc)
        if stop.wait(interval):
            return


def _retention_now(ctx: WorkerContext) -> None:
    """Queue the retention job once per interval, whichever worker gets the lock."""
    from workers.retention import INTERVAL, TIMEOUT, run_retention

    assert isinstance(ctx.jobs, RqJobs)
    if ctx.jobs.connection.set(RETENTION_LOCK, os.getpid(), nx=True, ex=INTERVAL):
        queue = Queue("default", connection=ctx.jobs.connection)
        queue.enqueue(run_retention, job_timeout=TIMEOUT)
        logger.debug("retention queued pid=%s", os.getpid())


def _retention(ctx: WorkerContext, stop: threading.Event) -> None:
    """Apply the privacy settings' retention limits, about once an hour."""
    while True:
        try:
            with _FORK_GUARD:
                _retention_now(ctx)
        except redis.RedisError as exc:
            logger.warning("retention not queued error=%s", exc)
        if stop.wait(60):
            return


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a Trailmark worker.")
    parser.add_argument(
        "--burst", action="store_true", help="Stop when queues are empty."
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # Built before RQ forks its work horses, so each job starts with it ready.
    ctx = current()
    if not isinstance(ctx.jobs, RqJobs):
        raise SystemExit("REDIS_URL must point at a reachable Redis to run a worker.")
    # A job's description holds its arguments: raw hits, with full addresses.
    worker = Worker(
        list(QUEUES), connection=ctx.jobs.connection, log_job_description=False
    )
    stop = threading.Event()
    if not args.burst:
        _guard_forks()
        threading.Thread(
            target=_sweeper, args=(ctx, stop), name="crm-sweep", daemon=True
        ).start()
        threading.Thread(
            target=_retention, args=(ctx, stop), name="retention", daemon=True
        ).start()
    try:
        worker.work(
            burst=args.burst, with_scheduler=True, logging_level=args.log_level.upper()
        )
    finally:
        stop.set()


if __name__ == "__main__":
    main()
