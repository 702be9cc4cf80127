"""Database engine and sessions, usable from the web app and from workers alike."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import DeclarativeBase, Session, scoped_session, sessionmaker
from sqlalchemy.pool import NullPool

from config.settings import ConfigError


class Base(DeclarativeBase):
    """Declarative base of every model."""


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the web process read while a job writes; the timeout waits out a writer.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    """Build an engine for a database URL, with the settings each backend needs."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # A fresh connection per checkout: SQLite connections are cheap, and one that
        # saw the file read-only would otherwise stay broken after it is writable.
        engine = create_engine(url, connect_args={"timeout": 10}, poolclass=NullPool)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def _checked_engine(url: str) -> Engine:
    try:
        return make_engine(url)
    except (ArgumentError, ImportError) as exc:
        raise ConfigError(
            f"DATABASE_URL cannot be used ({exc}). Use sqlite:///path/to/file.sqlite3 "
            "or postgresql://user:password@host/database."
        ) from None


class Database:
    """One engine and a thread-local session registry."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _checked_engine(url)
        self.session_factory = sessionmaker(self.engine, expire_on_commit=False)
        self.scoped = scoped_session(self.session_factory)

    @property
    def session(self) -> Session:
        """The current thread's session."""
        return self.scoped()

    def remove(self) -> None:
        """End the current thread's session."""
        self.scoped.remove()

    @contextmanager
    def begin(self) -> Iterator[Session]:
        """A fresh session in a transaction, committed on success."""
        with self.session_factory.begin() as session:
            yield session

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"
