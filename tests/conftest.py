"""Fixtures over the real thing: PostgreSQL, Redis, RQ workers, the Flask app."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from rq import SimpleWorker
from sqlalchemy import text

from app import create_app, signin
from app.cli import alembic_config
from app.db import Database
from workers.queue import QUEUES

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
PG_ADMIN_URL = os.environ.get(
    "TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# Each test run gets a database and a Redis db index of its own, so runs side by side
# (several checkouts, or an editor's run beside CI) never clobber each other.
PG_URL = os.environ.get(
    "TEST_DATABASE_URL",
    f"postgresql://postgres@127.0.0.1:5432/trailmark_test_{os.getpid()}",
)
REDIS_SERVER = os.environ.get("TEST_REDIS_SERVER", "redis://127.0.0.1:6379")


def _claim_redis_db() -> int:
    """A Redis db index (1-15) no other running test session holds."""
    control = redis.Redis.from_url(f"{REDIS_SERVER}/0")
    for index in range(15, 0, -1):
        if control.set(f"trailmark:test-db:{index}", os.getpid(), nx=True, ex=3600):
            return index
    raise RuntimeError("all Redis db indexes 1-15 are held by other test runs")


REDIS_DB = _claim_redis_db()
REDIS_URL = f"{REDIS_SERVER}/{REDIS_DB}"
PUBLIC_URL = "http://track.test"
GEOIP_CITY = str(DATA / "geoip" / "GeoLite2-City-Test.mmdb")
GEOIP_ASN = str(DATA / "geoip" / "GeoLite2-ASN-Test.mmdb")
TEST_KEYS = "7ZbzUz8PxpGQ3hT1yvP-7o8r3U0hQ1Hc8oHzC8RzX0E="


def _recreate_database() -> None:
    name = PG_URL.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _drop_database() -> None:
    name = PG_URL.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pytest_unconfigure(config: pytest.Config) -> None:
    """Give the Redis db index back for the next run."""
    control = redis.Redis.from_url(f"{REDIS_SERVER}/0")
    if control.get(f"trailmark:test-db:{REDIS_DB}") == str(os.getpid()).encode():
        control.delete(f"trailmark:test-db:{REDIS_DB}")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh PostgreSQL database, built by the migrations themselves."""
    from alembic import command

    _recreate_database()
    command.upgrade(alembic_config(PG_URL), "head")
    yield PG_URL
    _drop_database()


@pytest.fixture(scope="session")
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    yield db
    db.engine.dispose()


def _truncate(db: Database) -> None:
    with db.engine.begin() as conn:
        tables = [
            row[0]
            for row in conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname='public'")
            )
            if row[0] != "alembic_version"
        ]
        conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))


@pytest.fixture
def redis_conn() -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(REDIS_URL)
    conn.flushdb()
    yield conn
    conn.flushdb()


def settings(tmp_path: Path, database_url: str, **extra: Any) -> dict[str, Any]:
    """The configuration tests run the app and its workers with."""
    return {
        "TESTING": True,
        "SECRET_KEY": "test-secret-key-of-thirty-two-chars",
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "PUBLIC_URL": PUBLIC_URL,
        "SPOOL_DIR": str(tmp_path / "spool"),
        "GEOIP_CITY_DB": GEOIP_CITY,
        "GEOIP_ASN_DB": GEOIP_ASN,
        "TOKEN_ENCRYPTION_KEYS": TEST_KEYS,
        "STREAM_SECONDS": 2.0,
        **extra,
    }


@pytest.fixture
def config(tmp_path: Path, database_url: str, database: Database) -> dict[str, Any]:
    _truncate(database)
    return settings(tmp_path, database_url)


@pytest.fixture
def app(config: dict[str, Any], redis_conn: redis.Redis) -> Iterator[Flask]:
    application = create_app(config)
    yield application
    application.extensions["trailmark.spool"].stop()
    application.extensions["trailmark.db"].engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def run_jobs(app: Flask, redis_conn: redis.Redis) -> Callable[[], None]:
    """Ship spooled hits, then run a real RQ worker until the queues are empty."""

    def run() -> None:
        app.extensions["trailmark.spool"].flush()
        worker = SimpleWorker(list(QUEUES), connection=redis_conn)
        worker.work(burst=True)

    return run


class Account:
    """A user of the service, with the API token the CLI printed."""

    def __init__(self, client: FlaskClient, email: str, token: str) -> None:
        self.client = client
        self.email = email
        self.token = token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.client.post(path, headers=self.headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(path, headers=self.headers, **kwargs)

    def send(self, **message: Any) -> dict[str, Any]:
        """Register a message and return the API's answer."""
        body = {"subject": "Hello", "to": ["prospect@example.com"], **message}
        response = self.post("/api/v1/messages", json=body)
        assert response.status_code == 201, response.get_json()
        result: dict[str, Any] = response.get_json()
        return result


@pytest.fixture
def make_account(app: Flask, client: FlaskClient) -> Callable[..., Account]:
    """Create users with the real CLI command and keep the token it printed."""

    def make(
        email: str = "rep@seller.test", org: str = "Seller", admin: bool = False
    ) -> Account:
        args = ["user", "create", email, "--org", org, "--password", "correct horse"]
        result = app.test_cli_runner().invoke(
            args=[*args, *(["--admin"] if admin else [])]
        )
        assert result.exit_code == 0, result.output
        return Account(client, email, result.output.strip().splitlines()[-1])

    return make


@pytest.fixture
def account(make_account: Callable[..., Account]) -> Account:
    return make_account()


def path_of(url: str) -> str:
    """The path of one of our tracking URLs, for the test client."""
    assert url.startswith(PUBLIC_URL), url
    return url[len(PUBLIC_URL) :]


def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll until ``condition`` returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


def worker_env(config: dict[str, Any]) -> dict[str, str]:
    """Environment for a worker process with the same settings as the app."""
    env = {k: str(v) for k, v in config.items() if k.isupper() and k != "TESTING"}
    return {**os.environ, **env, "PYTHONPATH": str(ROOT)}


@pytest.fixture
def worker_process(
    config: dict[str, Any], redis_conn: redis.Redis
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start real `python -m workers` processes; they are stopped after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(**extra: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "workers"],
            cwd=ROOT,
            env={**worker_env(config), **extra},
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.terminate()
    for process in started:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def sign_in_browser(client: FlaskClient, user_id: int) -> None:
    """Sign the test client in as a user, as the sign-in page does."""
    db: Database = client.application.extensions["trailmark.db"]
    with db.begin() as session:
        key = signin.new_key(session, user_id)
    with client.session_transaction() as cookie:
        cookie[signin.COOKIE_KEY] = key


def locks_waited_for(database: Database, at_least: int = 1) -> int:
    """Wait up to 10 s until a session of the test database waits for a lock; return
    how many wait."""
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND datname = current_database()"
    )
    deadline = time.monotonic() + 10
    with database.engine.connect() as probe:
        while (
            count := int(probe.execute(waiting).scalar() or 0)
        ) < at_least and time.monotonic() < deadline:
            time.sleep(0.02)
    return count
