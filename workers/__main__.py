"""The worker process: ``python -m workers`` (RQ worker with its scheduler)."""

from __future__ import annotations

import argparse
import logging
import os
import threading

from rq import Worker

from workers.context import current
from workers.maintenance import Maintenance
from workers.queue import QUEUES, RqJobs

logger = logging.getLogger("workers")

# Held by the maintenance thread while it talks to Redis, and taken around every fork:
# a work horse forked while a thread held a Redis pool or logging lock would hang.
_FORK_GUARD = threading.Lock()


def _guard_forks() -> None:
    os.register_at_fork(
        before=_FORK_GUARD.acquire,
        after_in_parent=_FORK_GUARD.release,
        after_in_child=_FORK_GUARD.release,
    )


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
        stop = Maintenance(ctx, guard=_FORK_GUARD).start()
    try:
        worker.work(
            burst=args.burst, with_scheduler=True, logging_level=args.log_level.upper()
        )
    finally:
        stop.set()


if __name__ == "__main__":
    main()
