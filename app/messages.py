"""Registering a message for tracking: tokens, rewriting, storage."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import Select, and_, delete, or_, select
from sqlalchemy.orm import Session, selectinload

from app.models import CrmRecord, Event, Link, Message, Notification, User
from app.privacy.rules import decide
from app.tracking.hotpath import LINK_PREFIX, PIXEL_PREFIX
from app.tracking.rewrite import Rewritten, TooManyLinks, rewrite
from app.tracking.tokens import new_token

# A one-to-one email has a handful of links; thousands mean a mistake or an abuse.
MAX_LINKS = 1000


@dataclass(frozen=True)
class Registered:
    message: Message
    rewritten: Rewritten
    pixel_url: str | None


def pixel_url(public_url: str, token: str) -> str:
    return f"{public_url}{PIXEL_PREFIX}{token}.gif"


def link_url(public_url: str, token: str) -> str:
    return f"{public_url}{LINK_PREFIX}{token}"


def register_message(
    session: Session,
    user: User,
    data: dict[str, Any],
    *,
    public_url: str,
    sender_ip: str | None,
) -> Registered:
    """Store a message and return its HTML and text with tracking added.

    A message to anyone the organisation does not track comes back untouched, with
    the reason in ``tracking_disabled_reason``.
    """
    recipients = [*data["to"], *data.get("cc", []), *data.get("bcc", [])]
    tracking = decide(
        session,
        user.organization,
        recipients,
        track=data.get("track", True),
        track_opens=data.get("track_opens", True),
        track_links=data.get("track_links", True),
    )
    message = Message(
        public_id=new_token(),
        org_id=user.org_id,
        user_id=user.id,
        token=new_token(),
        subject=data["subject"],
        to=data["to"],
        cc=data.get("cc", []),
        bcc=data.get("bcc", []),
        sent_at=data.get("sent_at") or datetime.now(UTC),
        track_opens=tracking.opens,
        track_links=tracking.links,
        tracking_disabled_reason=tracking.reason,
        sender_ip=sender_ip,
    )
    session.add(message)
    links: list[Link] = []

    def link_for(destination: str) -> str:
        link = Link(token=new_token(), url=destination, position=len(links))
        links.append(link)
        return link_url(public_url, link.token)

    pixel = pixel_url(public_url, message.token) if message.track_opens else None
    if tracking.opens or tracking.links:
        rewritten = _tracked(data, pixel, link_for if message.track_links else None)
    else:
        rewritten = Rewritten(data.get("html"), data.get("text"), [])
    message.links = links
    session.flush()
    return Registered(message, rewritten, pixel)


def _tracked(
    data: dict[str, Any], pixel: str | None, link_for: Callable[[str], str] | None
) -> Rewritten:
    """The message's HTML and text with tracking added, or a 422 for too many links."""
    try:
        return rewrite(
            data.get("html"),
            data.get("text"),
            pixel_url=pixel,
            link_for=link_for,
            rewrite_text_links=data.get("track_text_links", False),
            max_links=MAX_LINKS,
        )
    except TooManyLinks as exc:
        raise ValidationError(
            {"html": [f"Track at most {exc.limit} distinct links in one message."]}
        ) from exc


def find_message(session: Session, org_id: int, public_id: str) -> Message | None:
    """An organisation's message by its public id; None for anyone else's."""
    query = select(Message).where(
        Message.public_id == public_id, Message.org_id == org_id
    )
    return session.scalars(query).first()


def events_of(
    session: Session,
    message_id: int,
    newest_first: bool = False,
    limit: int | None = None,
    after: Event | None = None,
) -> list[Event]:
    """A message's events (all, or the first ``limit``), links loaded, in time order.

    ``after`` (oldest first only) starts past that event, in the same order.
    """
    order = (Event.occurred_at, Event.id)
    query = (
        select(Event)
        .where(Event.message_id == message_id)
        .options(selectinload(Event.link))
        .order_by(*(column.desc() for column in order) if newest_first else order)
        .limit(limit)
    )
    if after is not None:
        query = query.where(
            or_(
                Event.occurred_at > after.occurred_at,
                and_(Event.occurred_at == after.occurred_at, Event.id > after.id),
            )
        )
    return list(session.scalars(query))


def delete_messages(session: Session, ids: list[int]) -> dict[str, int]:
    """Delete messages and everything hanging off them; return the row counts.

    Events and notifications carry no foreign keys (a batch of hits would check each
    row), so they are deleted here. The messages are locked first: a batch of hits
    being stored holds them (FOR KEY SHARE) until it commits, so its events are there
    to delete once the lock is had, and a later batch finds no message to store for.
    """
    if not ids:
        return {"messages": 0, "events": 0}
    lock = select(Message.id).where(Message.id.in_(ids)).order_by(Message.id)
    session.execute(lock.with_for_update())
    delete_notifications_of(session, select(Event.id).where(Event.message_id.in_(ids)))
    session.execute(
        delete(Notification).where(
            Notification.event_id.is_(None), Notification.message_id.in_(ids)
        )
    )
    events = session.execute(delete(Event).where(Event.message_id.in_(ids)))
    session.execute(delete(CrmRecord).where(CrmRecord.message_id.in_(ids)))
    session.execute(delete(Link).where(Link.message_id.in_(ids)))
    messages = session.execute(delete(Message).where(Message.id.in_(ids)))
    return {
        "messages": getattr(messages, "rowcount", 0),
        "events": getattr(events, "rowcount", 0),
    }


def hold_messages(session: Session, ids: Iterable[int]) -> set[int]:
    """Hold messages against deletion until the transaction ends; return those left.

    For whatever stores events or notifications of a message (which carry no foreign
    key): a delete waits for the holder to commit, and a holder that comes after a
    delete finds the message gone. Taken in id order, as deleting does, so that the
    two never wait for each other.
    """
    wanted = sorted(set(ids))
    if not wanted:
        return set()
    query = (
        select(Message.id)
        .where(Message.id.in_(wanted))
        .order_by(Message.id)
        .with_for_update(key_share=True, read=True)
    )
    return set(session.scalars(query))


def delete_notifications_of(session: Session, event_ids: Select[int]) -> None:
    """Delete the notifications that events made, before the events themselves go."""
    session.execute(delete(Notification).where(Notification.event_id.in_(event_ids)))
