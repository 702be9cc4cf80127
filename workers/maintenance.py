"""Periodic jobs: CRM sweeps, follow-up checks, failed hit batches, retention and
expired sign-ins.

Every worker runs the loop; a Redis lock per job and interval makes sure each is queued
once per interval across all workers and hosts. In the quick start, where jobs run in
the web process, the web process runs the same loop without locks.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import redis

from workers.context import WorkerContext
from workers.queue import RqJobs

logger = logging.getLogger(__name__)

TICK_SECONDS = 5.0


@dataclass(frozen=True)
class Periodic:
    name: str
    interval: float
    job: Callable[[], Any]
    queue: str = "default"
    timeout: int | None = None


def schedule(settings: dict[str, Any]) -> list[Periodic]:
    """What runs periodically, and how often."""
    from integrations.jobs import sweep as crm_sweep
    from workers.followups import sweep as followup_sweep
    from workers.ingest import RETRY_FAILED_INTERVAL, retry_failed_batches
    from workers.retention import INTERVAL, TIMEOUT, prune_sign_ins, run_retention

    every = float(settings["CRM_SWEEP_INTERVAL"])
    return [
        Periodic("crm-sweep", every, crm_sweep, queue="crm"),
        Periodic("followup-sweep", every, followup_sweep),
        Periodic("hits-retry", RETRY_FAILED_INTERVAL, retry_failed_batches),
        Periodic("retention", INTERVAL, run_retention, timeout=TIMEOUT),
        Periodic("sign-in-prune", INTERVAL, prune_sign_ins),
    ]


class Maintenance:
    """Queues each periodic job when it falls due."""

    def __init__(
        self,
        ctx: WorkerContext,
        guard: AbstractContextManager[Any] | None = None,
    ) -> None:
        self.ctx = ctx
        self.guard = guard or nullcontext()
        self.jobs = schedule(ctx.settings)
        self._due = dict.fromkeys((p.name for p in self.jobs), 0.0)

    def run_once(self, now: float | None = None) -> list[str]:
        """Queue what is due; return the names queued."""
        now = time.monotonic() if now is None else now
        queued = []
        for periodic in self.jobs:
            if now < self._due[periodic.name]:
                continue
            self._due[periodic.name] = now + periodic.interval
            if self._claim(periodic):
                self.ctx.jobs.enqueue(
                    periodic.job, queue=periodic.queue, timeout=periodic.timeout
                )
                queued.append(periodic.name)
        if queued:
            logger.debug("periodic jobs queued names=%s", ",".join(queued))
        return queued

    def _claim(self, periodic: Periodic) -> bool:
        """Whether this process queues the job this interval (one across workers)."""
        if not isinstance(self.ctx.jobs, RqJobs):
            return True
        ttl = max(int(periodic.interval) - 1, 1)
        key = f"trailmark:periodic:{periodic.name}"
        return bool(self.ctx.jobs.connection.set(key, os.getpid(), nx=True, ex=ttl))

    def loop(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set; a Redis outage only skips a tick."""
        while not stop.is_set():
            try:
                with self.guard:
                    self.run_once()
            except redis.RedisError as exc:
                logger.warning("periodic jobs not queued error=%s", exc)
            stop.wait(TICK_SECONDS)

    def start(self) -> threading.Event:
        """Run the loop on a daemon thread; set the returned event to stop it."""
        stop = threading.Event()
        thread = threading.Thread(
            target=self.loop, args=(stop,), name="maintenance", daemon=True
        )
        thread.start()
        return stop
