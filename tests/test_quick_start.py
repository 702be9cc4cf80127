"""The quick start's own stack: SQLite, no Redis, jobs run in the web process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from flask import Flask

from app import create_app
from app.cli import alembic_config
from config.settings import ConfigError
from tests.conftest import ROOT, Account, path_of, settings, worker_env
from workers.ingest import ingest_hits

CHROME = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)


@pytest.fixture
def quick_app(tmp_path: Path) -> Iterator[Flask]:
    url = f"sqlite:///{tmp_path / 'quick.sqlite3'}"
    command.upgrade(alembic_config(url), "head")
    app = create_app(settings(tmp_path, url, REDIS_URL=""))
    yield app
    app.extensions["trailmark.spool"].stop()
    app.extensions["trailmark.db"].engine.dispose()


@pytest.fixture
def rep(quick_app: Flask) -> Account:
    args = ["user", "create", "rep@seller.test", "--org", "Seller"]
    result = quick_app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    return Account(
        quick_app.test_client(), "rep@seller.test", result.output.split()[-1]
    )


def _events(rep: Account, message_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = rep.get(f"/api/v1/messages/{message_id}/events")
    return events.get_json()["events"]  # type: ignore[attr-defined, no-any-return]


def test_an_open_and_a_scanner_burst_are_stored_and_graded_on_sqlite(
    quick_app: Flask, rep: Account
) -> None:
    links = "".join(f'<a href="https://shop.test/{n}">{n}</a>' for n in range(3))
    created = rep.send(html=f"<html><body>{links}</body></html>")
    client, spool = rep.client, quick_app.extensions["trailmark.spool"]
    headers = {"User-Agent": CHROME}
    environ = {"REMOTE_ADDR": "89.160.20.112"}
    first, *rest = (path_of(link["tracked_url"]) for link in created["links"])
    client.get(path_of(created["pixel_url"]), headers=headers, environ_base=environ)
    client.get(first, headers=headers, environ_base=environ)
    spool.flush()  # no Redis: stored before the spool counts it shipped
    for path in rest:
        client.get(path, headers=headers, environ_base=environ)
    spool.flush()

    events = _events(rep, created["id"])
    assert [e["type"] for e in events] == ["open", "click", "click", "click"]
    assert events[0]["classification"] == "human"
    assert events[0]["location"]["city"] == "Linköping"
    clicks = events[1:]
    assert {e["classification"] for e in clicks} == {"scanner"}
    assert any(r.endswith("-regraded") for r in clicks[0]["reasons"])
    message = rep.get(f"/api/v1/messages/{created['id']}").get_json()
    assert (message["opens"], message["clicks"]) == (1, 0)


def test_copies_per_recipient_name_their_recipient_on_sqlite(
    quick_app: Flask, rep: Account
) -> None:
    created = rep.send(
        to=["ann@prospect.test", "bob@prospect.test"],
        html='<p>Hi</p><a href="https://shop.test/a">a</a>',
        per_recipient=True,
    )
    ann, bob = created["copies"]
    client, spool = rep.client, quick_app.extensions["trailmark.spool"]
    headers = {"User-Agent": CHROME}
    client.get(
        path_of(ann["pixel_url"]),
        headers=headers,
        environ_base={"REMOTE_ADDR": "89.160.20.112"},
    )
    client.get(
        path_of(bob["links"][0]["tracked_url"]),
        headers=headers,
        environ_base={"REMOTE_ADDR": "81.2.69.142"},
    )
    spool.flush()

    events = _events(rep, created["id"])
    assert [(e["type"], e["recipient"], e["implied"]) for e in events] == [
        ("open", "ann@prospect.test", False),
        ("open", "bob@prospect.test", True),
        ("click", "bob@prospect.test", False),
    ]
    assert not any(e["possible_forward"] for e in events)
    message = rep.get(f"/api/v1/messages/{created['id']}").get_json()
    assert [
        (r["recipient"], r["opens"], r["clicks"]) for r in message["by_recipient"]
    ] == [
        ("ann@prospect.test", 1, 0),
        ("bob@prospect.test", 1, 1),
    ]


def test_bursts_across_hundreds_of_messages_in_one_batch(
    quick_app: Flask, rep: Account
) -> None:
    html = '<a href="https://shop.test/a">a</a> <a href="https://shop.test/b">b</a>'
    sent = [rep.send(html=html) for _ in range(300)]
    at = time.time() - 60
    # Four bursts a message, ten seconds apart: 1,200 windows to regrade in one batch.
    hits = [
        {"id": f"{m:04d}{burst}{n}", "kind": "click", "token": link}
        | {"at": at + burst * 10 + n * 0.1, "ip": "89.160.20.112", "ua": CHROME}
        | {"method": "GET", "headers": {}}
        for m, message in enumerate(sent)
        for burst in range(4)
        for n, link in enumerate(
            path_of(x["tracked_url"]).removeprefix("/c/") for x in message["links"]
        )
    ]
    with quick_app.app_context():
        assert ingest_hits(hits) == 2700  # 2,400 clicks and the opens they imply

    for message in (sent[0], sent[-1]):
        events = _events(rep, message["id"])
        assert [e["type"] for e in events] == ["open"] + ["click"] * 8
        assert not any(e["counted"] for e in events)
        body = rep.get(f"/api/v1/messages/{message['id']}").get_json()
        assert (body["opens"], body["clicks"]) == (0, 0)


def test_user_create_joins_an_organisation_whatever_its_case(quick_app: Flask) -> None:
    runner = quick_app.test_cli_runner()
    first = runner.invoke(args=["user", "create", "a@x.test", "--org", "Your team"])
    second = runner.invoke(args=["user", "create", "b@x.test", "--org", "your team"])
    empty = runner.invoke(args=["user", "create", "c@x.test", "--org", "  "])
    assert "Created organisation" in first.output
    assert second.exit_code == 0 and "Created organisation" not in second.output
    assert empty.exit_code != 0 and "organisation a name" in empty.output


def test_a_database_without_tables_is_told_with_the_command_that_makes_them(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    app = create_app(settings(tmp_path, url, REDIS_URL=""))
    response = app.test_client().get(
        "/api/v1/messages", headers={"Authorization": "Bearer whatever"}
    )
    assert response.status_code == 503
    assert "flask --app app db upgrade" in response.get_json()["message"]
    app.extensions["trailmark.spool"].stop()


def test_malformed_spooled_lines_are_skipped_and_their_batch_is_stored(
    rep: Account,
) -> None:
    from workers.ingest import ingest_lines

    created = rep.send(html="<p>Hi</p>")
    token = path_of(created["pixel_url"]).removeprefix("/o/").removesuffix(".gif")
    good = {"id": "g" * 24, "kind": "open", "token": token, "at": time.time()}
    lines = [
        b"[1, 2]",
        b'{"id": 5, "kind": "open", "token": "t", "at": 1.0}',
        b'{"id": "x", "kind": "open", "token": "t", "at": "soon"}',
        b'{"id": "y", "kind": "open", "token": "t", "at": 1.0, "ua": ["a"]}',
        json.dumps(good).encode(),
    ]
    assert ingest_lines(b"\n".join(lines) + b"\n") == 1
    assert len(_events(rep, created["id"])) == 1


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("PUBLIC_URL", "track.example.com", "PUBLIC_URL must be"),
        ("DATABASE_URL", "garbage", "DATABASE_URL cannot be used"),
        ("TOKEN_ENCRYPTION_KEYS", "notakey", "TOKEN_ENCRYPTION_KEYS must be"),
        ("SECRET_KEY", "", "SECRET_KEY is not set"),
        ("SECRET_KEY", "hunter2-hunter2-hunter2-hunter2", "SECRET_KEY is too short"),
        ("SECRET_KEY", " " * 40, "SECRET_KEY is not set"),
    ],
)
def test_a_setting_that_cannot_work_stops_the_start_with_its_name(
    tmp_path: Path, setting: str, value: str, says: str
) -> None:
    url = f"sqlite:///{tmp_path / 'quick.sqlite3'}"
    with pytest.raises(ConfigError, match=says):
        create_app(settings(tmp_path, url, REDIS_URL="", **{setting: value}))


WEB = ["-c", "import wsgi"]
WORKER = ["-m", "workers"]


@pytest.mark.parametrize(
    ("command", "setting", "value", "says"),
    [
        (WEB, "SECRET_KEY", "short", "trailmark: SECRET_KEY is too"),
        (WEB, "PUBLIC_URL", "nowhere", "trailmark: PUBLIC_URL must"),
        (WEB, "REDIS_URL", "garbage", "trailmark: REDIS_URL is not a Redis URL"),
        (WEB, "SPOOL_DIR", "/proc/nowhere", "trailmark: SPOOL_DIR cannot"),
        (WEB, "LOG_LEVEL", "loud", "trailmark: LOG_LEVEL"),
        (WORKER, "STREAM_LIMIT", "many", "worker: STREAM_LIMIT must be a"),
        (WORKER, "REDIS_URL", "garbage", "worker: REDIS_URL is not a Redis URL"),
        (WORKER, "LOG_LEVEL", "loud", "python -m workers: error: argument"),
        (WORKER, "TOKEN_ENCRYPTION_KEYS", "bad", "worker: TOKEN_ENCRYPTION_KEYS must"),
        (WORKER, "GEOIP_CITY_DB", "/nowhere.mmdb", "worker: GEOIP_CITY_DB cannot be"),
        (WEB, "GEOIP_ASN_DB", "/nowhere.mmdb", "trailmark: GEOIP_ASN_DB cannot be"),
        (WORKER, "REDIS_URL", "redis://127.0.0.1:6379/99", "worker: REDIS_URL cannot"),
        (WEB, "REDIS_URL", "redis://127.0.0.1:6379/99", "trailmark: REDIS_URL cannot"),
    ],
)
def test_a_process_that_cannot_start_says_why_in_one_line(
    tmp_path: Path, command: list[str], setting: str, value: str, says: str
) -> None:
    """What the Procfile's processes print when a setting stops them: the message
    alone, as the last line a process manager shows, not a traceback."""
    url = f"sqlite:///{tmp_path / 'quick.sqlite3'}"
    env = worker_env(settings(tmp_path, url, **{"REDIS_URL": "", setting: value}))
    result = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode in {1, 2}  # 2: a command-line argument
    assert result.stderr.strip().splitlines()[-1].startswith(says)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("SPOOL_BATCH_SIZE", "0", "SPOOL_BATCH_SIZE must be 1 or more, got 0"),
        ("SPOOL_FLUSH_INTERVAL", "0", "SPOOL_FLUSH_INTERVAL must be more than 0"),
        ("SPOOL_FLUSH_INTERVAL", "-1", "SPOOL_FLUSH_INTERVAL must be more than 0"),
        ("SPOOL_FLUSH_INTERVAL", "nan", "SPOOL_FLUSH_INTERVAL must be more than 0"),
        ("STREAM_SECONDS", "inf", "STREAM_SECONDS must be more than 0, got inf"),
        ("TRUSTED_PROXIES", "-1", "TRUSTED_PROXIES must be 0 or more, got -1"),
        ("WORKER_MAINTENANCE_INTERVAL", "0", "WORKER_MAINTENANCE_INTERVAL must be 1"),
    ],
)
def test_a_number_that_cannot_work_is_refused_with_what_it_may_be(
    setting: str, value: str, says: str
) -> None:
    """A batch of no hits or a wait of no time would leave hits in the spool."""
    from config.settings import load

    with pytest.raises(ConfigError, match=says):
        load({setting: value})


def test_the_least_workable_numbers_are_taken() -> None:
    from config.settings import load

    least = {"SPOOL_BATCH_SIZE": "1", "TRUSTED_PROXIES": "0", "STREAM_LIMIT": "0"}
    loaded = load({**least, "NOTIFY_REPEAT_SECONDS": "0", "CRM_IN_DOUBT_SECONDS": "0"})
    assert loaded["SPOOL_BATCH_SIZE"] == 1 and loaded["TRUSTED_PROXIES"] == 0
    assert loaded["NOTIFY_REPEAT_SECONDS"] == 0.0


def test_the_release_step_says_why_a_setting_stops_it_in_one_line(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'quick.sqlite3'}"
    env = worker_env(settings(tmp_path, url, REDIS_URL="", SECRET_KEY="short"))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "flask"), "--app", "app", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: SECRET_KEY is too short. Set it to at least 32 random characters, "
        "for example the output of: python -c 'import secrets; "
        "print(secrets.token_hex(32))'"
    ]


def test_the_release_step_says_what_it_did(tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    url = f"sqlite:///{tmp_path / 'quick.sqlite3'}"
    script = ScriptDirectory.from_config(alembic_config(url))
    head = script.get_current_head()
    assert head is not None
    previous = script.get_revision(head).down_revision
    runner = create_app(settings(tmp_path, url, REDIS_URL="")).test_cli_runner()

    outputs = [
        runner.invoke(args=["db", "upgrade", *revision]).output
        for revision in ([str(previous)], [], [])
    ]
    assert outputs == [
        f"Database schema created (revision {previous}).\n",
        f"Database schema upgraded from revision {previous} to {head}.\n",
        f"Database schema is up to date (revision {head}).\n",
    ]


def test_a_yes_or_no_setting_refuses_anything_else() -> None:
    from config.settings import ConfigError, load

    assert load({"SESSION_COOKIE_SECURE": "off"})["SESSION_COOKIE_SECURE"] is False
    with pytest.raises(ConfigError, match="SESSION_COOKIE_SECURE must be on or off"):
        load({"SESSION_COOKIE_SECURE": "maybe"})


def test_db_upgrade_says_when_the_database_cannot_be_reached(tmp_path: Path) -> None:
    url = "postgresql://nobody@127.0.0.1:1/none"
    app = create_app(settings(tmp_path, url, REDIS_URL=""))
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code != 0
    assert "The database at DATABASE_URL cannot be used" in result.output
    assert "Traceback" not in result.output
    app.extensions["trailmark.spool"].stop()
