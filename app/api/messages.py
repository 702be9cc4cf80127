"""Registering tracked messages and reading what happened to them."""

from __future__ import annotations

import json
from typing import Any

from flask import abort, current_app, request
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload
from werkzeug.exceptions import BadRequest

from app.api import bp
from app.api.schemas import (
    EventArgsSchema,
    EventListSchema,
    MessageCreatedSchema,
    MessageCreateSchema,
    MessagePageSchema,
    MessageSchema,
    PageArgsSchema,
    RecipientActivitySchema,
    tracking_of,
)
from app.auth import api_auth, current_user
from app.boundary import load_query
from app.extensions import db_session
from app.messages import (
    Copy,
    activity_by_recipient,
    events_of,
    find_message,
    register_message,
)
from app.models import Event, Message, User
from app.tracking.hotpath import client_address


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a 4xx that says what was wrong."""
    if not _body_bytes() or not request.is_json:
        abort(
            400,
            "The request body must be a JSON object (Content-Type: application/json).",
        )
    try:
        body = request.get_json()
        unstorable = _has_unstorable_text(body)
    except RecursionError:
        abort(400, "The JSON body is nested too deeply.")
    except BadRequest:
        abort(400, "The request body is not valid JSON.")
    if not isinstance(body, dict):
        abort(400, f"The request body must be a JSON object, not {_kind(body)}.")
    if unstorable:
        abort(
            400,
            "The JSON body holds text that cannot be stored: a NUL character or "
            "an unpaired surrogate (\\u0000, \\ud800-\\udfff).",
        )
    return body


def _body_bytes() -> bytes:
    """The body, or a 413 when a body sent without a length ran past the limit."""
    data = request.get_data(cache=True)
    limit = request.max_content_length
    # A chunked body is cut short at the limit rather than refused; answer as for a
    # body whose Content-Length is over the limit.
    if request.content_length is None and limit is not None and len(data) >= limit:
        abort(413)
    return data


def _kind(value: Any) -> str:
    """What a JSON value is, as the JSON standard names it."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, list):
        return "an array"
    return "a string" if isinstance(value, str) else "a number"


def _has_unstorable_text(value: Any) -> bool:
    """Whether any string in a parsed JSON value holds NUL or a lone surrogate."""
    if isinstance(value, str):
        return "\x00" in value or not _encodable(value)
    if isinstance(value, dict):
        return any(
            _has_unstorable_text(k) or _has_unstorable_text(v) for k, v in value.items()
        )
    if isinstance(value, list):
        return any(_has_unstorable_text(item) for item in value)
    return False


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def signed_in() -> User:
    user = current_user()
    assert user is not None
    return user


def own_message(public_id: str) -> Message:
    """The caller's organisation's message, or 404 (also for anyone else's)."""
    message = find_message(db_session(), signed_in().org_id, public_id)
    if message is None:
        abort(404, "There is no message with this id.")
    return message


@bp.post("/messages")
@api_auth
def create_message() -> ResponseReturnValue:
    """Register a message before it is sent; answer with its tracked HTML and text."""
    data = MessageCreateSchema().load(json_body())
    session = db_session()
    registered = register_message(
        session,
        signed_in(),
        data,
        public_url=current_app.config["PUBLIC_URL"],
        sender_ip=client_address(
            request.environ, current_app.config["TRUSTED_PROXIES"]
        ),
    )
    session.commit()
    from workers.sync import message_registered

    message_registered(registered.message.id)
    body = {
        "id": registered.message.public_id,
        "subject": registered.message.subject,
        "html": registered.rewritten.html,
        "text": registered.rewritten.text,
        "pixel_url": registered.pixel_url,
        "links": registered.rewritten.links,
        "copies": [_copy_view(copy) for copy in registered.copies],
        "sent_at": registered.message.sent_at,
        "tracking": tracking_of(registered.message),
    }
    return MessageCreatedSchema().dump(body), 201


def _copy_view(copy: Copy) -> dict[str, Any]:
    return {
        "recipient": copy.recipient,
        "html": copy.rewritten.html,
        "text": copy.rewritten.text,
        "pixel_url": copy.pixel_url,
        "links": copy.rewritten.links,
    }


@bp.get("/messages")
@api_auth
def list_messages() -> ResponseReturnValue:
    """The organisation's messages sent by the caller, newest first."""
    args = load_query(PageArgsSchema())
    user = signed_in()
    where = (Message.org_id == user.org_id, Message.user_id == user.id)
    session = db_session()
    total = session.scalar(select(func.count()).select_from(Message).where(*where))
    messages = session.scalars(
        select(Message)
        .where(*where)
        .order_by(Message.sent_at.desc(), Message.id.desc())
        .options(selectinload(Message.copies))
        .limit(args["per_page"])
        .offset((args["page"] - 1) * args["per_page"])
    ).all()
    return MessagePageSchema().dump({"messages": messages, "total": total, **args})


@bp.get("/messages/<public_id>")
@api_auth
def get_message(public_id: str) -> ResponseReturnValue:
    """One message with its counted opens and clicks."""
    message = own_message(public_id)
    body = MessageSchema().dump(message)
    activity = activity_by_recipient(db_session(), message)
    body["by_recipient"] = RecipientActivitySchema(many=True).dump(activity)
    return body


@bp.get("/messages/<public_id>/events")
@api_auth
def message_events(public_id: str) -> ResponseReturnValue:
    """A message's events, graded, oldest first, a page at a time."""
    message = own_message(public_id)
    args = load_query(EventArgsSchema())
    session = db_session()
    after = None
    if "after" in args:
        after = session.get(Event, args["after"])
        if after is None or after.message_id != message.id:
            raise ValidationError({"after": ["This message has no such event."]})
    limit = args["limit"]
    events = events_of(session, message.id, limit=limit + 1, after=after)
    page = events[:limit]
    return EventListSchema().dump(
        {
            "events": [event_view(e) for e in page],
            "next_after": page[-1].id if len(events) > limit else None,
        }
    )


def event_view(event: Event) -> dict[str, Any]:
    """An event in the shape the API documents."""
    has_place = any((event.country, event.region, event.city))
    return {
        "id": event.id,
        "type": event.type,
        "occurred_at": event.occurred_at,
        "classification": event.classification,
        "counted": event.counted,
        "reasons": event.reasons,
        "implied": event.implied,
        "possible_forward": event.possible_forward,
        "recipient": event.recipient,
        "recipient_label": event.recipient or "somebody",
        "location": (
            {"country": event.country, "region": event.region, "city": event.city}
            if has_place
            else None
        ),
        "device": {
            "client": event.device_client,
            "os": event.device_os,
            "type": event.device_type,
        },
        "url": event.link.url if event.type == "click" and event.link else None,
    }
