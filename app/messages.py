"""Registering a message for tracking: tokens, rewriting, storage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app.models import Event, Link, Message, User
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
    session: Session, message_id: int, newest_first: bool = False
) -> list[Event]:
    """Every event of a message, with its link loaded, in time order."""
    order = (Event.occurred_at, Event.id)
    query = (
        select(Event)
        .where(Event.message_id == message_id)
        .options(selectinload(Event.link))
        .order_by(*(column.desc() for column in order) if newest_first else order)
    )
    return list(session.scalars(query))
