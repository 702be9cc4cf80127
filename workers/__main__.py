"""The worker process: ``python -m workers`` (RQ worker with its scheduler)."""

from __future__ import annotations

import argparse
import logging
import os
import threading

import redis
from rq import Worker

from workers.context import WorkerContext, current
from workers.queue import QUEUES, RqJobs

logger = logging.getLogger("workers")

SWEEP_LOCK = "trailmark:crm-sweep"


def _sweep_now(ctx: WorkerContext, interval: float) -> None:
    """Queue one CRM sweep per interval, whichever worker gets the lock first."""
    from integrations.jobs import sweep

    assert isinstance(ctx.jobs, RqJobs)
    ttl = max(int(interval) - 1, 1)
    if ctx.jobs.connection.set(SWEEP_LOCK, os.getpid(), nx=True, ex=ttl):
        ctx.jobs.enqueue(sweep, queue="crm")
        logger.debug("crm sweep queued pid=%s", os.getpid())


def _sweeper(ctx: WorkerContext, stop: threading.Event) -> None:
    """Replay lost jobs and ended pauses of CRM connections, every interval."""
    interval = float(ctx.settings["CRM_SWEEP_INTERVAL"])
    while True:
        try:
            _sweep_now(ctx, interval)
        except redis.RedisError as exc:
            logger.warning("crm sweep not queued error=%s", exc)
        if stop.wait(interval):
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
    worker = Worker(list(QUEUES), connection=ctx.jobs.connection)
    stop = threading.Event()
    if not args.burst:
        threading.Thread(
            target=_sweeper, args=(ctx, stop), name="crm-sweep", daemon=True
        ).start()
    try:
        worker.work(
            burst=args.burst, with_scheduler=True, logging_level=args.log_level.upper()
        )
    finally:
        stop.set()


if __name__ == "__main__":
    main()
