"""Trailmark: self-hosted email tracking for sales teams, built into the CRM."""

from __future__ import annotations

import functools
import logging
import os
import threading
from typing import Any
from urllib.parse import urlsplit

import click
from flask import Flask

from app.db import Database
from app.notify import LocalNotifier, Notifier, RedisNotifier
from app.tracking.hotpath import LinkCache, TrackingFront
from app.tracking.spool import Spool
from config.settings import ConfigError, check_databases, check_numbers, load
from integrations.crypto import check_keys
from workers import context
from workers.queue import Jobs, RqJobs, connect_jobs

logger = logging.getLogger(__name__)


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the web application: config, parts, blueprints, error handlers."""
    try:
        return _build(overrides)
    except ConfigError as exc:
        if click.get_current_context(silent=True) is None:
            raise
        # Built for a ``flask`` command (the release step, the user commands): the
        # message alone, as the command line shows its own errors.
        raise click.ClickException(str(exc)) from None


def _build(overrides: dict[str, Any] | None) -> Flask:
    app = Flask(__name__)
    app.config.update(load())
    app.config.update(overrides or {})
    _check_config(app)
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        MAX_CONTENT_LENGTH=4 * 1024 * 1024,
    )
    from app import boundary, cli, errors

    boundary.init_app(app)
    _init_parts(app)
    _register_blueprints(app)

    errors.init_app(app)
    cli.init_app(app)
    return app


# Sessions and sign-in links are signed with SECRET_KEY: a short one can be guessed
# offline from a single cookie.
SECRET_KEY_MIN_LENGTH = 32


def _check_config(app: Flask) -> None:
    check_numbers(app.config)
    check_databases(app.config)
    spool_dir = str(app.config.get("SPOOL_DIR") or "")
    try:
        os.makedirs(spool_dir, exist_ok=True)
        writable = os.access(spool_dir, os.W_OK | os.X_OK)
    except OSError as exc:
        raise ConfigError(f"SPOOL_DIR cannot be used ({exc})") from None
    if not writable:
        raise ConfigError(
            f"SPOOL_DIR cannot be written to ({spool_dir}): hits are noted there "
            "before they are answered"
        )
    secret = str(app.config.get("SECRET_KEY") or "").strip()
    if len(secret) < SECRET_KEY_MIN_LENGTH:
        problem = "is not set" if not secret else "is too short"
        raise ConfigError(
            f"SECRET_KEY {problem}. Set it to at least {SECRET_KEY_MIN_LENGTH} random "
            "characters, for example the output of: "
            "python -c 'import secrets; print(secrets.token_hex(32))'"
        )
    public_url = urlsplit(str(app.config.get("PUBLIC_URL") or ""))
    if public_url.scheme not in {"http", "https"} or not public_url.netloc:
        raise ConfigError(
            "PUBLIC_URL must be the address recipients reach this service at, with "
            "its scheme, such as https://track.example.com"
        )
    check_keys(app.config)


def _init_parts(app: Flask) -> None:
    db = Database(app.config["DATABASE_URL"])
    jobs: Jobs = app.config.get("JOBS") or connect_jobs(app.config["REDIS_URL"])
    notifier: Notifier = (
        RedisNotifier(jobs.connection) if isinstance(jobs, RqJobs) else LocalNotifier()
    )
    settings = {key: app.config.get(key) for key in load()}
    ctx = context.configure(settings, db=db, jobs=jobs, notifier=notifier)
    if jobs.inline and not app.testing:
        _run_maintenance_when_serving(app, ctx)
    app.extensions["trailmark.db"] = db
    app.extensions["trailmark.jobs"] = jobs
    app.extensions["trailmark.notifier"] = notifier
    app.teardown_appcontext(lambda _exc: db.remove())
    _init_tracking(app, db, jobs)


def _run_maintenance_when_serving(app: Flask, ctx: context.WorkerContext) -> None:
    """Keep the periodic jobs going in this process once it serves its first request.

    No worker runs beside the quick start. Waiting for a request keeps CLI commands
    (the release step among them) from starting it before the schema exists.
    """
    from workers.maintenance import Maintenance

    started = threading.Event()

    def start_once() -> None:
        if not started.is_set():
            started.set()
            Maintenance(ctx).start()

    app.before_request(start_once)


def _init_tracking(app: Flask, db: Database, jobs: Jobs) -> None:
    from workers.ingest import ingest_batch, ingest_lines

    def sink(block: bytes) -> None:
        if isinstance(jobs, RqJobs):
            jobs.enqueue_batch(ingest_batch, block, queue="hits")
        else:
            # Stored before the spool marks the batch shipped: a queue held only in
            # this process's memory would lose it to a crash.
            ingest_lines(block)

    spool = Spool(
        app.config["SPOOL_DIR"],
        sink,
        interval=app.config["SPOOL_FLUSH_INTERVAL"],
        batch_size=app.config["SPOOL_BATCH_SIZE"],
        backlog=functools.partial(jobs.backlog, "hits")
        if isinstance(jobs, RqJobs)
        else None,
    )
    app.extensions["trailmark.spool"] = spool
    front = TrackingFront(
        app.wsgi_app, spool, LinkCache(db.engine), app.config["TRUSTED_PROXIES"]
    )
    app.extensions["trailmark.tracking"] = front
    app.wsgi_app = front  # type: ignore[method-assign]


def _register_blueprints(app: Flask) -> None:
    from app.api import bp as api_bp
    from app.pages import bp as pages_bp

    app.register_blueprint(api_bp)
    app.register_blueprint(pages_bp)
