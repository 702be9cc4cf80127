"""Registering a message for tracking: tokens, rewriting, storage."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import Select, and_, delete, func, or_, select
from sqlalchemy.orm import Session, selectinload

from app.models import (
    CrmRecord,
    Event,
    Link,
    Message,
    MessageCopy,
    Notification,
    User,
    as_utc,
)
from app.privacy.rules import decide
from app.tracking.hotpath import LINK_PREFIX, PIXEL_PREFIX
from app.tracking.rewrite import Rewritten, TooManyLinks, TrackedLink, rewrite
from app.tracking.tokens import TOKEN_LENGTH, new_token

# A one-to-one email has a handful of links; thousands mean a mistake or an abuse.
MAX_LINKS = 1000
# What the destinations of one message's tracked links may add up to: a long
# <base href> makes every relative link as long, and each is stored and answered.
MAX_LINK_CHARS = 1024 * 1024


class LinksTooLong(ValueError):
    """A message's tracked destinations add up to more than MAX_LINK_CHARS."""


# Each copy is one more set of links to store and one more body in the answer:
# one-to-one sales mail goes to a few people.
MAX_COPIES = 50
# What the copies of one message may add up to, in tracked links and in bytes of the
# answer's JSON, which holds every copy's body (escaped: "\u00fc" for "ü").
MAX_COPY_LINKS = 5000
MAX_COPY_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Copy:
    """One recipient's copy as it will be sent."""

    recipient: str
    rewritten: Rewritten
    pixel_url: str | None


@dataclass(frozen=True)
class Registered:
    message: Message
    rewritten: Rewritten
    pixel_url: str | None
    copies: list[Copy] = field(default_factory=list)


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
    per_recipient = data.get("per_recipient", False)
    if per_recipient and len(message.recipients) > MAX_COPIES:
        raise _too_many_copies(
            f"one copy per recipient is for at most {MAX_COPIES} recipients, and "
            f"this message has {len(message.recipients)}"
        )
    session.add(message)
    links: list[Link] = []
    destination_chars = 0

    def link_for(destination: str) -> str:
        nonlocal destination_chars
        destination_chars += len(destination)
        if destination_chars > MAX_LINK_CHARS:
            raise LinksTooLong(destination[:100])
        link = Link(
            message=message, token=new_token(), url=destination, position=len(links)
        )
        links.append(link)
        return link_url(public_url, link.token)

    pixel = pixel_url(public_url, message.token) if message.track_opens else None
    if tracking.opens or tracking.links:
        rewritten = _tracked(data, pixel, link_for if message.track_links else None)
    else:
        rewritten = Rewritten(data.get("html"), data.get("text"), [])
    session.add_all(links)
    copies = []
    if per_recipient:
        _check_rewritten(rewritten, len(links), len(message.recipients))
    if per_recipient and (tracking.opens or tracking.links):
        copies = [
            _copy_of(
                session, message, position, recipient, rewritten, links, public_url
            )
            for position, recipient in enumerate(message.recipients)
        ]
    session.flush()
    return Registered(message, rewritten, pixel, copies)


# A token where a tracking URL has it: one pass over the message, whatever the number
# of links (an alternation of a thousand tokens would try each at every character).
_TRACKED_TOKEN = re.compile(
    f"({re.escape(PIXEL_PREFIX)}|{re.escape(LINK_PREFIX)})([0-9a-z]{{{TOKEN_LENGTH}}})"
)


def _json_size(*values: str | None) -> int:
    """How many bytes the values take in the API's JSON answer."""
    return sum(len(json.dumps(value)) for value in values if value is not None)


def _check_rewritten(rewritten: Rewritten, links: int, recipients: int) -> None:
    """A 422 before the copies are made when they would add up to too much.

    Measured on the rewritten message, which tracked URLs can make longer than sent.
    """
    if links * recipients > MAX_COPY_LINKS:
        raise _too_many_copies(
            f"{recipients} copies of {links} tracked links make more than "
            f"{MAX_COPY_LINKS:,} links"
        )
    links_size = sum(
        _json_size(link.url, link.tracked_url) + 20 for link in rewritten.links
    )
    size = _json_size(rewritten.html, rewritten.text) + links_size
    if size * (recipients + 1) > MAX_COPY_BYTES:
        raise _too_many_copies(
            f"{recipients} copies of {size:,} bytes once tracked make more than "
            f"{MAX_COPY_BYTES:,} bytes"
        )


def _too_many_copies(why: str) -> ValidationError:
    return ValidationError(
        {
            "per_recipient": [
                f"Too much for one copy per recipient: {why}. Send it to fewer "
                "people at once, or without per_recipient."
            ]
        }
    )


def _copy_of(
    session: Session,
    message: Message,
    position: int,
    recipient: str,
    shared: Rewritten,
    shared_links: list[Link],
    public_url: str,
) -> Copy:
    """A recipient's copy: the message's rewritten form with tokens of its own.

    The message is rewritten once; a copy differs from it only in its tokens, which
    are random and found nowhere else in the message, so swapping them keeps every
    other byte as rewritten.
    """
    copy = MessageCopy(
        message=message,
        recipient=recipient,
        recipient_key=recipient.lower(),
        token=new_token(),
        position=position,
    )
    session.add(copy)
    swaps = {message.token: copy.token} if message.track_opens else {}
    for link in shared_links:
        own = Link(
            message=message,
            copy=copy,
            token=new_token(),
            url=link.url,
            position=link.position,
        )
        session.add(own)
        swaps[link.token] = own.token
    if not swaps:
        return Copy(recipient, shared, None)

    def swap(match: re.Match[str]) -> str:
        prefix, token = match.groups()
        return prefix + swaps.get(token, token)

    def swapped(value: str | None) -> str | None:
        return None if value is None else _TRACKED_TOKEN.sub(swap, value)

    return Copy(
        recipient,
        Rewritten(
            swapped(shared.html),
            swapped(shared.text),
            [
                TrackedLink(tracked.url, swapped(tracked.tracked_url) or "")
                for tracked in shared.links
            ],
        ),
        pixel_url(public_url, copy.token) if message.track_opens else None,
    )


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
    except LinksTooLong as exc:
        raise ValidationError(
            {
                "html": [
                    "The tracked links' destinations add up to more than "
                    f"{MAX_LINK_CHARS:,} characters (a long <base href> lengthens "
                    "every relative link)."
                ]
            }
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


@dataclass
class RecipientActivity:
    """Counted opens and clicks of one recipient's copy."""

    recipient: str
    opens: int = 0
    clicks: int = 0
    last_event_at: datetime | None = None


def activity_by_recipient(
    session: Session, message: Message
) -> list[RecipientActivity]:
    """Counted opens and clicks of each recipient's copy, in the copies' order.

    Empty for a message without copies: its events cannot be told apart by recipient
    unless it went to one person, and then the message's own counts say it all.
    """
    if not message.copies:
        return []
    query = (
        select(Event.recipient, Event.type, func.count(), func.max(Event.occurred_at))
        .where(Event.message_id == message.id, Event.counted.is_(True))
        .group_by(Event.recipient, Event.type)
    )
    activity = {c.recipient: RecipientActivity(c.recipient) for c in message.copies}
    for recipient, kind, count, latest in session.execute(query):
        row = activity.get(recipient or "")
        if row is None:
            continue  # the message's own copy (the Sent folder, say)
        if kind == "open":
            row.opens += count
        else:
            row.clicks += count
        at = as_utc(latest)
        if at is not None and (row.last_event_at is None or at > row.last_event_at):
            row.last_event_at = at
    return list(activity.values())


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
    session.execute(delete(MessageCopy).where(MessageCopy.message_id.in_(ids)))
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
