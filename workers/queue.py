"""Where jobs go: RQ on Redis when it is reachable, else a thread in this process."""

from __future__ import annotations

import logging
import threading
import uuid
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import redis
from rq import Queue, Retry

from config.settings import ConfigError

logger = logging.getLogger(__name__)

QUEUES = ("hits", "crm", "default")
_RETRY = Retry(max=8, interval=[1, 2, 5, 10, 30, 60, 120, 300])
_FAILED_KEPT = timedelta(days=7)
# A batch outlives the failed job that names it, so that the job can be requeued.
_BATCH_KEPT = _FAILED_KEPT + timedelta(days=1)
_BATCH_PREFIX = "trailmark:batch:"
_HIT_RESULT_KEPT = 60


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
        pipeline: Any = None,
        **kwargs: Any,
    ) -> None:
        """Queue ``func(*args, **kwargs)``; with ``pipeline``, as part of it (the
        caller executes it)."""
        self._queues[queue].enqueue(
            func,
            args=args,
            kwargs=kwargs,
            pipeline=pipeline,
            retry=_RETRY,
            failure_ttl=int(_FAILED_KEPT.total_seconds()),
            job_timeout=timeout,
            # Nobody reads a hit batch's result, but it is kept a minute all the same:
            # RQ 3.0 deletes a job kept for no time as it finishes, and that fails
            # when an earlier run of it was cut off (Redis went away), so the job
            # would run again and again until the cut-off run's record expired.
            result_ttl=_HIT_RESULT_KEPT if queue == "hits" else None,
        )

    def enqueue_batch(
        self, func: Callable[[str], Any], batch: bytes, *, queue: str = "default"
    ) -> None:
        """Queue ``func(key)`` for a large block of bytes kept in Redis under ``key``.

        RQ pickles a job's arguments and compresses them at zlib's default level
        when the job is queued, and again when the worker marks it finished: for a
        half-megabyte batch of hits that was some 5 µs of CPU a hit, on the thread
        that ships hits beside the pixels being answered and in the worker. Kept
        beside the job, a batch is compressed once, at the fastest level (about a
        tenth of its size still), and a job listing shows a key, not raw hits.
        ``func`` reads it with ``load_batch`` and removes it with ``drop_batch``
        once it is done with it.
        """
        key = f"{_BATCH_PREFIX}{uuid.uuid4().hex}"
        # One transaction: a process that dies while shipping leaves neither a job
        # without its batch nor a batch (raw hits) that no job will ever remove.
        with self.connection.pipeline(transaction=True) as pipeline:
            pipeline.multi()
            pipeline.set(key, zlib.compress(batch, 1), ex=_BATCH_KEPT)
            self.enqueue(func, key, queue=queue, pipeline=pipeline)
            pipeline.execute()

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


def load_batch(connection: redis.Redis, key: str) -> bytes | None:
    """A block queued with ``RqJobs.enqueue_batch``; None once dropped or expired."""
    if not key.startswith(_BATCH_PREFIX):
        raise ValueError(f"not a batch key: {key!r}")
    stored: bytes | None = connection.get(key)  # type: ignore[assignment]
    return None if stored is None else zlib.decompress(stored)


def drop_batch(connection: redis.Redis, key: str) -> None:
    """Forget a block whose job is done with it."""
    connection.delete(key)


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
        raise ConfigError(
            f"REDIS_URL is not a Redis URL ({exc}); it looks like redis://host:6379/0"
        ) from None
    try:
        connection.ping()
        logger.info("jobs go to RQ on Redis")
    except redis.ResponseError as exc:
        # Redis answered, and refused: waiting would not change that.
        raise ConfigError(f"REDIS_URL cannot be used: Redis says {exc}") from None
    except redis.RedisError as exc:
        logger.warning(
            "Redis at REDIS_URL does not answer yet (%s); hits wait in the spool "
            "and jobs are queued once it does",
            exc,
        )
    return RqJobs(connection)
