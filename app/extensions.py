"""Access to the parts create_app() builds, from inside a request."""

from __future__ import annotations

from typing import cast

from flask import current_app
from sqlalchemy.orm import Session

from app.db import Database
from app.notify import Notifier
from workers.queue import Jobs


def database() -> Database:
    return cast(Database, current_app.extensions["trailmark.db"])


def db_session() -> Session:
    """The request's database session."""
    return database().session


def jobs() -> Jobs:
    return cast(Jobs, current_app.extensions["trailmark.jobs"])


def notifier() -> Notifier:
    return cast(Notifier, current_app.extensions["trailmark.notifier"])
