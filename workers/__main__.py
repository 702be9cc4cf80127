"""The worker process: ``python -m workers`` (RQ worker with its scheduler)."""

from __future__ import annotations

import argparse
import logging

from rq import Worker

from workers.context import current
from workers.queue import QUEUES, RqJobs

logger = logging.getLogger("workers")


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a Trailmark worker.")
    parser.add_argument("--burst", action="store_true", help="Stop when queues are empty.")
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
    worker.work(burst=args.burst, with_scheduler=True, logging_level=args.log_level.upper())


if __name__ == "__main__":
    main()
