"""Live notifications: a Server-Sent Events stream, and the list behind it."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator

import redis
from flask import Response, current_app, request
from flask.typing import ResponseReturnValue
from sqlalchemy import Select, select
from sqlalchemy.orm import selectinload

from app.api import bp
from app.api.messages import signed_in
from app.api.schemas import NotificationArgsSchema, StreamArgsSchema
from app.auth import api_auth
from app.boundary import load_query
from app.db import Database
from app.extensions import database, db_session, notifier
from app.models import Event, Message, Notification
from app.notify import Notifier
from app.presenters import notification_text

# A stream ends after STREAM_SECONDS (25 by default) and the browser reconnects with
# Last-Event-ID, so a connection never holds a server thread for long and nothing is
# missed in between.
HEARTBEAT_SECONDS = 10.0
BUSY_RETRY_MS = 5000


def _feed(user_id: int) -> Select[Notification, Message, Event]:
    """A user's notifications, with what writing each out reads."""
    return (
        select(Notification, Message, Event)
        .join(Message, Message.id == Notification.message_id)
        .outerjoin(Event, Event.id == Notification.event_id)
        .where(Notification.user_id == user_id)
        .options(selectinload(Event.link))
    )


def _view(
    notification: Notification, message: Message, event: Event | None
) -> dict[str, object]:
    title, body = notification_text(
        message, event, notification.title, notification.body
    )
    return {
        "id": notification.id,
        "message_id": message.public_id,
        # The event told of; null for a follow-up reminder, which tells of none.
        "event_id": notification.event_id,
        "title": title,
        "body": body,
        "created_at": notification.created_at.isoformat(),
    }


def _after(db: Database, user_id: int, last_id: int) -> list[dict[str, object]]:
    with db.session_factory() as session:
        rows = session.execute(
            _feed(user_id)
            .where(Notification.id > last_id)
            .order_by(Notification.id)
            .limit(100)
        ).all()
        return [_view(n, m, e) for n, m, e in rows]


def _latest_id(user_id: int) -> int:
    latest = db_session().scalar(
        select(Notification.id)
        .where(Notification.user_id == user_id)
        .order_by(Notification.id.desc())
        .limit(1)
    )
    return latest or 0


def _stream(
    db: Database, hub: Notifier, user_id: int, last_id: int, seconds: float
) -> Iterator[str]:
    try:
        subscription = hub.subscribe(user_id)
    except redis.RedisError:
        # Nothing can wake a stream without Redis: answer what is new from the
        # database, and the browser asks again a few seconds later.
        yield from _catch_up(db, user_id, last_id)
        return
    try:
        # The id tells the browser where to resume, even before a first event.
        yield f"id: {last_id}\nretry: 1000\n\n"
        deadline = time.monotonic() + seconds
        changed: list[str] = []
        while time.monotonic() < deadline:
            for item in _after(db, user_id, last_id):
                last_id = int(str(item["id"]))
                data = json.dumps(item)
                yield f"id: {last_id}\nevent: notification\ndata: {data}\n\n"
            for message_id in dict.fromkeys(filter(None, changed)):
                data = json.dumps({"message_id": message_id})
                yield f"id: {last_id}\nevent: activity\ndata: {data}\n\n"
            remaining = deadline - time.monotonic()
            try:
                woken = subscription.wait(max(0.0, min(HEARTBEAT_SECONDS, remaining)))
            except redis.RedisError:
                return  # the browser resumes from the last id it was sent
            if woken is None:
                yield ": keep-alive\n\n"
            changed = woken or []
    finally:
        with contextlib.suppress(redis.RedisError):
            subscription.close()


def _catch_up(db: Database, user_id: int, last_id: int) -> Iterator[str]:
    """A short answer when every stream slot is taken: what is new, then reconnect."""
    yield f"id: {last_id}\nretry: {BUSY_RETRY_MS}\n\n"
    for item in _after(db, user_id, last_id):
        data = json.dumps(item)
        yield f"id: {item['id']}\nevent: notification\ndata: {data}\n\n"


def _live_or_catch_up(
    slots: threading.BoundedSemaphore,
    db: Database,
    hub: Notifier,
    user_id: int,
    last_id: int,
    seconds: float,
) -> Iterator[str]:
    """A live stream while a slot is free, else a catch-up answer.

    Streams must never take every thread from the tracking endpoints: past the limit
    the browser gets what is new and polls again a few seconds later. The slot is
    taken on the first read, so an answer never read holds none.
    """
    if not slots.acquire(blocking=False):
        yield from _catch_up(db, user_id, last_id)
        return
    try:
        yield from _stream(db, hub, user_id, last_id, seconds)
    finally:
        slots.release()


def _slots() -> threading.BoundedSemaphore:
    """This process's stream slots: each open stream holds a server thread."""
    slots = current_app.extensions.get("trailmark.stream_slots")
    if slots is None:
        limit = int(current_app.config["STREAM_LIMIT"])
        slots = current_app.extensions.setdefault(
            "trailmark.stream_slots", threading.BoundedSemaphore(limit)
        )
    return slots


def _start_id(user_id: int) -> int:
    """Where the stream resumes: the browser's last id, never past the latest one.

    An id from the future (another server's, or made up) would hold back every
    notification until the ids caught up with it.
    """
    # What a browser resends on reconnecting comes first, and is taken as it comes:
    # a bad value there is no person's mistake to be told of.
    raw = request.headers.get("Last-Event-ID", "")
    if raw.isascii() and raw.isdigit() and len(raw) <= 18:
        start: int | None = int(raw)
    else:
        start = load_query(StreamArgsSchema()).get("after")
    latest = _latest_id(user_id)
    return latest if start is None else min(start, latest)


@bp.get("/notifications/stream")
@api_auth
def notification_stream() -> ResponseReturnValue:
    """New notifications as they happen (text/event-stream)."""
    user = signed_in()
    last_id = _start_id(user.id)
    db_session().close()
    seconds = float(current_app.config["STREAM_SECONDS"])
    body = _live_or_catch_up(
        _slots(), database(), notifier(), user.id, last_id, seconds
    )
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return Response(body, mimetype="text/event-stream", headers=headers)


@bp.get("/notifications")
@api_auth
def list_notifications() -> ResponseReturnValue:
    """The caller's most recent notifications (after the id ``after``), newest first."""
    after = load_query(NotificationArgsSchema())["after"]
    user = signed_in()
    rows = (
        db_session()
        .execute(
            _feed(user.id)
            .where(Notification.id > after)
            .order_by(Notification.id.desc())
            .limit(50)
        )
        .all()
    )
    return {"notifications": [_view(n, m, e) for n, m, e in rows]}
