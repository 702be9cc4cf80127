"""Where jobs go: RQ on Redis when it is reachable, else a thread in this process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import redis
from rq import Queue, Retry

logger = logging.getLogger(__name__)

QUEUES = ("hits", "crm", "default")
_RETRY = Retry(max=8, interval=[1, 2, 5, 10, 30, 60, 120, 300])


class RqJobs:
    """Enqueues onto RQ queues; retries with backoff on failure."""

    inline = False

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection
        self._queues = {name: Queue(name, connection=connection) for name in QUEUES}

    def enqueue(
        self,
        func: Callable[..., Any],
        *args: Any,
        queue: str = "default",
        timeout: int | None = None,
        **kwargs: Any,
    ) -> None:
        self._queues[queue].enqueue(
            func,
            args=args,
            kwargs=kwargs,
            retry=_RETRY,
            failure_ttl=7 * 86400,
            job_timeout=timeout,
            # Nobody reads a hit batch's result: not keeping it saves a write a job.
            result_ttl=0 if queue == "hits" else None,
            description=_description(func, args),
        )

    def backlog(self, queue: str) -> int:
        """How many jobs of ``queue`` wait for a worker or are running now."""
        target = self._queues[queue]
        pipeline = self.connection.pipeline(transaction=False)
        pipeline.llen(target.key)
        pipeline.zcard(target.started_job_registry.key)
        waiting, running = pipeline.execute()
        return int(waiting) + int(running)

    def enqueue_in(
        self,
        delay: timedelta,
        func: Callable[..., Any],
        *args: Any,
        queue: str = "default",
        **kwargs: Any,
    ) -> None:
        self._queues[queue].enqueue_in(
            delay, func, args=args, kwargs=kwargs, retry=_RETRY
        )


def _description(func: Callable[..., Any], args: tuple[Any, ...]) -> str | None:
    """What RQ shows of a job: its arguments, unless one is a block of raw hits.

    RQ would otherwise write out a whole block (half a megabyte for a batch of hits)
    to keep its first 75 characters, on the thread that ships hits beside the
    pixels being answered; and those characters are a hit, which has no business in
    a job listing.
    """
    if not any(isinstance(arg, bytes) for arg in args):
        return None  # RQ's own: the call with its arguments
    shown = [f"<{len(a):,} bytes>" if isinstance(a, bytes) else "..." for a in args]
    return f"{func.__module__}.{func.__qualname__}({', '.join(shown)})"


class InlineJobs:
    """Runs jobs one at a time on a background thread of this process.

    Used by the quick start when no Redis is reachable. One thread keeps SQLite's
    single writer happy; a job that fails is logged and run again later by the same
    sweeps that cover a lost RQ job.
    """

    inline = True

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobs")

    def enqueue(
        self,
        func: Callable[..., Any],
        *args: Any,
        queue: str = "default",
        timeout: int | None = None,
        **kwargs: Any,
    ) -> None:
        self._pool.submit(_run_logged, func, args, kwargs)

    def enqueue_in(
        self,
        delay: timedelta,
        func: Callable[..., Any],
        *args: Any,
        queue: str = "default",
        **kwargs: Any,
    ) -> None:
        timer = threading.Timer(
            delay.total_seconds(),
            self.enqueue,
            (func, *args),
            {"queue": queue, **kwargs},
        )
        timer.daemon = True
        timer.start()

    def drain(self) -> None:
        """Wait for every job submitted so far."""
        self._pool.submit(lambda: None).result()


def _run_logged(func: Callable[..., Any], args: tuple[Any, ...], kwargs: Any) -> None:
    try:
        func(*args, **kwargs)
    except Exception:
        logger.exception("in-process job failed job=%s", func.__qualname__)


Jobs = RqJobs | InlineJobs


def connect_jobs(redis_url: str) -> Jobs:
    """RQ when ``redis_url`` is set, else jobs in this process (logged once).

    A Redis that does not answer yet is still the one to use: hits wait in the spool
    and jobs are queued once it answers. Falling back to this process instead would
    keep a web process storing hits itself, beside the workers, for as long as it
    lives. (The quick start's ``scripts/run`` leaves out a REDIS_URL that does not
    answer, so that it runs alone.)
    """
    if not redis_url:
        logger.warning("REDIS_URL is not set; jobs run in this process")
        return InlineJobs()
    try:
        connection = redis.Redis.from_url(
            redis_url, socket_connect_timeout=2, socket_timeout=5
        )
    except ValueError as exc:
        raise ValueError(f"REDIS_URL is not a Redis URL ({exc})") from exc
    try:
        connection.ping()
        logger.info("jobs go to RQ on Redis")
    except redis.RedisError as exc:
        logger.warning(
            "Redis at REDIS_URL does not answer yet (%s); hits wait in the spool "
            "and jobs are queued once it does",
            exc,
        )
    return RqJobs(connection)
