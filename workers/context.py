"""What a job needs (database, enrichment, queue, notifier), built once per process."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from app.db import Database
from app.notify import LocalNotifier, Notifier, RedisNotifier
from config.settings import load
from workers.enrich import Enricher
from workers.queue import Jobs, RqJobs, connect_jobs

logger = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    settings: dict[str, Any]
    db: Database
    enricher: Enricher
    jobs: Jobs
    notifier: Notifier
    pid: int


_context: WorkerContext | None = None


def configure(
    settings: dict[str, Any],
    *,
    db: Database | None = None,
    jobs: Jobs | None = None,
    notifier: Notifier | None = None,
) -> WorkerContext:
    """Set the process's context; the web app passes its own parts in-process."""
    global _context
    jobs = jobs if jobs is not None else connect_jobs(settings["REDIS_URL"])
    if notifier is None:
        notifier = (
            RedisNotifier(jobs.connection)
            if isinstance(jobs, RqJobs)
            else LocalNotifier()
        )
    _context = WorkerContext(
        settings=settings,
        db=db or Database(settings["DATABASE_URL"]),
        enricher=Enricher(
            settings["GEOIP_CITY_DB"] or None, settings["GEOIP_ASN_DB"] or None
        ),
        jobs=jobs,
        notifier=notifier,
        pid=os.getpid(),
    )
    return _context


def current() -> WorkerContext:
    """The process's context, built from the environment on first use."""
    global _context
    if _context is None:
        _context = configure(load())
    elif _context.pid != os.getpid():
        # A forked work horse must not share the parent's pooled connections.
        _context.db.engine.dispose(close=False)
        _context.pid = os.getpid()
    return _context
