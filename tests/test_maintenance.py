"""Periodic jobs are queued once per interval, however many workers run."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from flask import Flask

from tests.conftest import REDIS_URL, wait_for
from tests.test_spool import OwnRedis
from workers.__main__ import worker_connection
from workers.context import current
from workers.maintenance import Maintenance
from workers.queue import QUEUES


def _queued(conn: redis.Redis) -> dict[str, int]:
    return {name: int(conn.llen(f"rq:queue:{name}")) for name in ("crm", "default")}


def test_each_periodic_job_is_queued_once_per_interval_across_workers(
    app: Flask, redis_conn: redis.Redis
) -> None:
    ctx = current()
    first, second = Maintenance(ctx), Maintenance(ctx)
    assert first.run_once(now=0.0) == [
        "crm-sweep",
        "followup-sweep",
        "hits-retry",
        "retention",
        "sign-in-prune",
    ]
    assert second.run_once(now=0.0) == []  # another worker holds this interval
    assert _queued(redis_conn) == {"crm": 1, "default": 4}
    assert first.run_once(now=1.0) == []  # not due again yet in this process


def test_an_interval_later_the_sweeps_are_queued_again(
    app: Flask, redis_conn: redis.Redis, config: dict[str, Any]
) -> None:
    ctx = current()
    maintenance = Maintenance(ctx)
    maintenance.run_once(now=0.0)
    for key in redis_conn.scan_iter("trailmark:periodic:*sweep"):
        redis_conn.delete(key)  # as the lock's expiry would
    later = float(ctx.settings["CRM_SWEEP_INTERVAL"]) + 1
    assert maintenance.run_once(now=later) == ["crm-sweep", "followup-sweep"]


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return [int(child) for child in fh.read().split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_the_scheduler_child_stops_when_its_worker_is_killed(
    worker_process: Callable[..., subprocess.Popen[bytes]],
) -> None:
    worker = worker_process()
    [scheduler] = wait_for(lambda: _children(worker.pid), 30)
    worker.kill()
    worker.wait(10)
    wait_for(lambda: not _alive(scheduler), 15)


def test_the_worker_can_wait_for_jobs_longer_than_a_request_may() -> None:
    # RQ waits minutes for the next job on this connection: a read timeout of a few
    # seconds would pass for a lost Redis and make the worker pause its listening.
    connection = worker_connection(REDIS_URL)
    started = time.monotonic()
    assert connection.blpop(["trailmark:test:no-jobs"], timeout=6) is None
    assert time.monotonic() - started >= 5.5


@contextlib.contextmanager
def _worker_on_own_redis(
    tmp_path: Path, worker_process: Callable[..., subprocess.Popen[bytes]]
) -> Iterator[tuple[OwnRedis, subprocess.Popen[bytes]]]:
    """A `python -m workers` process on a Redis of the test's own, to stop and start."""
    server = OwnRedis(tmp_path)
    server.start()
    try:
        yield (
            server,
            worker_process(REDIS_URL=server.url, WORKER_MAINTENANCE_INTERVAL="2"),
        )
    finally:
        server.stop()


def test_the_scheduler_starts_again_after_redis_comes_back(
    config: dict[str, Any],
    worker_process: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    with _worker_on_own_redis(tmp_path, worker_process) as (server, worker):
        [scheduler] = wait_for(lambda: _children(worker.pid), 30)
        own = redis.Redis.from_url(server.url)
        # Idle first, so that this is about the scheduler alone (a job cut off by
        # the outage is the next test's).
        wait_for(lambda: not any(own.llen(f"rq:queue:{q}") for q in QUEUES), 30)
        wait_for(lambda: not any(own.zcard(f"rq:wip:{q}") for q in QUEUES), 30)
        server.stop()
        wait_for(lambda: not _alive(scheduler), 30)  # it exits with Redis gone

        server.start()

        wait_for(lambda: [p for p in _children(worker.pid) if _alive(p)], 30)
        assert worker.poll() is None


def test_the_worker_carries_on_when_redis_goes_away_in_the_middle_of_a_job(
    config: dict[str, Any],
    worker_process: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    from rq import Queue

    from tests.jobs import note_after

    with _worker_on_own_redis(tmp_path, worker_process) as (server, worker):
        own = redis.Redis.from_url(server.url)
        wait_for(lambda: own.scard("rq:workers") > 0, 30)
        first = tmp_path / "first"
        Queue("default", connection=own).enqueue(note_after, 3.0, str(first))
        wait_for(Path(f"{first}.started").exists, 30)
        server.stop()  # RQ's worker quits as it tries to mark the job finished
        wait_for(first.exists, 30)
        time.sleep(1.5)
        assert worker.poll() is None
        server.start()

        # A new RQ worker in the same process takes the next job.
        own = redis.Redis.from_url(server.url)
        second = tmp_path / "second"
        Queue("default", connection=own).enqueue(note_after, 0.0, str(second))
        wait_for(second.exists, 60)
        assert worker.poll() is None
        # The RQ worker that quit left no listener behind, retrying Redis for ever
        # and holding a connection: only the new one's channel is subscribed.
        time.sleep(5)
        assert len(own.pubsub_channels("rq:pubsub:*")) == 1

        worker.terminate()  # and a signal still ends it, at once
        assert worker.wait(15) == 0


def test_the_pause_before_a_new_rq_worker_grows_per_outage_not_per_process(
    monkeypatch: Any,
) -> None:
    import workers.__main__ as worker_main

    pauses: list[float] = []
    monkeypatch.setattr(worker_main, "_pause_unless_signalled", pauses.append)
    monkeypatch.setattr(worker_main, "_RAN_WELL", 0.2)
    # Three quick failures (one outage), a worker that ran well, then two more.
    runs = iter([0.0, 0.0, 0.0, 0.3, 0.0, "stop"])

    class Worker:
        stop_was_requested = False
        pubsub_thread = None
        pubsub = None

        def __init__(self) -> None:
            self.connection = redis.Redis.from_url(REDIS_URL)

    def work(worker: Any) -> None:
        run = next(runs)
        if run == "stop":
            worker.stop_was_requested = True
            return
        time.sleep(float(run))
        raise redis.ConnectionError("gone")

    worker_main.keep_working(Worker, work)
    assert pauses == [1.0, 2.0, 5.0, 1.0, 2.0]


def test_rq_losing_redis_is_logged_in_one_line_and_other_errors_in_full(
    caplog: Any,
) -> None:
    import logging

    import workers.__main__ as worker_main

    worker_main._quiet_redis_outages()
    log = logging.getLogger("rq.worker")
    with caplog.at_level(logging.ERROR, logger="rq.worker"):
        for error in (redis.ConnectionError("Connection refused"), KeyError("x")):
            try:
                raise error
            except Exception:
                log.error(
                    "Worker %s: found an unhandled exception, quitting...",
                    "w1",
                    exc_info=True,
                )
    outage, other = caplog.records
    assert outage.exc_info is None
    assert outage.getMessage() == (
        "Worker w1: found an unhandled exception, quitting... "
        "(Redis: Connection refused)"
    )
    assert other.exc_info is not None  # anything else keeps its traceback
