"""One person's data: everything held about a recipient address, to export or erase.

A message with the address as its only recipient belongs to that person: erasing
deletes it whole, with its links, events, notifications and CRM ledger rows. A
message that went to others as well stays for them: the address leaves its
recipient lists, the events attributed to the address go, and the events that could
be anyone's keep only their type, time and grade (address, user agent, place,
network and device are cleared). The records the CRMs hold cannot be deleted from
here; the erase report lists each one so an admin can delete it there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Text, cast, delete, func, or_, select, update
from sqlalchemy.orm import Session

from app.followups.models import FollowUpAction, FollowUpFiring
from app.messages import delete_messages, delete_notifications_of
from app.models import (
    CrmConnection,
    CrmRecord,
    DoNotTrack,
    Event,
    Link,
    Message,
    MessageCopy,
    Notification,
    Organization,
    User,
)
from app.presenters import notification_text
from app.privacy.rules import list_key, lookup_keys, normalise
from app.privacy.settings import add_entry

_EVENT_FIELDS = (
    "type",
    "occurred_at",
    "received_at",
    "classification",
    "counted",
    "reasons",
    "implied",
    "possible_forward",
    "recipient",
    "method",
    "ip",
    "ip_prefix",
    "user_agent",
    "country",
    "country_code",
    "region",
    "city",
    "asn",
    "network",
    "device_client",
    "device_os",
    "device_type",
    "raw_purged_at",
)
# What is left of an event that cannot be told apart from other recipients'.
_SHARED_EVENT_FIELDS = ("type", "occurred_at", "classification", "counted")
_CLEARED = {
    "ip": None,
    "ip_prefix": None,
    "user_agent": None,
    "country": None,
    "country_code": None,
    "region": None,
    "city": None,
    "asn": None,
    "network": None,
    "device_client": None,
    "device_os": None,
    "device_type": "unknown",
}


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def find_messages(
    session: Session, address: str, org_id: int | None = None
) -> list[Message]:
    """Messages with the address among their recipients, in any letter case."""
    address = normalise(address)
    query = select(Message).order_by(Message.id)
    if org_id is not None:
        query = query.where(Message.org_id == org_id)
    if address.isascii():
        # The recipient lists are stored as JSON text: narrow down in the database.
        # NOTE: this is a scan of the organisation's messages; fine for requests
        # that come a few times a day, not for a hot path.
        # A stored spelling with other letters that lower-case to ASCII (the Kelvin
        # sign to "k") is kept as an escape: such lists are looked at in Python.
        needle = json.dumps(address)
        columns = (Message.to, Message.cc, Message.bcc)
        query = query.where(
            or_(
                *(
                    func.lower(cast(column, Text)).contains(needle, autoescape=True)
                    for column in columns
                ),
                *(
                    cast(column, Text).contains("\\u", autoescape=True)
                    for column in columns
                ),
            )
        )
    return [m for m in session.scalars(query) if address in _lowered(m.recipients)]


def _lowered(addresses: Sequence[str]) -> set[str]:
    return {a.strip().lower() for a in addresses}


def _is_only_recipient(message: Message, address: str) -> bool:
    return _lowered(message.recipients) == {address}


def _crm_records(
    session: Session, message_ids: list[int], address: str
) -> list[dict[str, Any]]:
    rows = session.execute(
        select(CrmRecord, CrmConnection)
        .join(CrmConnection, CrmConnection.id == CrmRecord.connection_id)
        .where(CrmRecord.message_id.in_(message_ids), CrmRecord.recipient == address)
        .order_by(CrmRecord.id)
    )
    return [
        {
            "provider": connection.provider,
            "account": connection.external_account_id,
            "instance_url": connection.instance_url,
            "object_type": record.object_type,
            "external_id": record.external_id,
            "kind": record.kind,
            "state": record.state,
            # Written into the CRM record, to find one whose id never came back.
            "marker": record.marker,
            "attempted_at": _plain(record.attempted_at),
            "message_id": record.message_id,
            "created_at": _plain(record.created_at),
        }
        for record, connection in rows
    ]


def _do_not_track(
    session: Session, address: str, org_id: int | None
) -> list[dict[str, Any]]:
    query = (
        select(DoNotTrack, Organization.name)
        .join(Organization, Organization.id == DoNotTrack.org_id)
        .where(DoNotTrack.value.in_(lookup_keys(address)))
    )
    if org_id is not None:
        query = query.where(DoNotTrack.org_id == org_id)
    return [
        {
            "organization": org_name,
            "value": entry.value,
            "kind": entry.kind,
            "created_at": _plain(entry.created_at),
        }
        for entry, org_name in session.execute(query.order_by(DoNotTrack.id))
    ]


def _event_export(event: Event, whole: bool) -> dict[str, Any]:
    names = _EVENT_FIELDS if whole else _SHARED_EVENT_FIELDS
    return {name: _plain(getattr(event, name)) for name in names}


def _notification_export(
    message: Message, notification: Notification, events: dict[int, Event]
) -> dict[str, Any]:
    event = events.get(notification.event_id or 0)
    title, body = notification_text(
        message, event, notification.title, notification.body
    )
    return {"title": title, "body": body, "created_at": _plain(notification.created_at)}


def _message_export(
    session: Session, message: Message, address: str, crm: list[dict[str, Any]]
) -> dict[str, Any]:
    only = _is_only_recipient(message, address)
    events = session.scalars(
        select(Event).where(Event.message_id == message.id).order_by(Event.id)
    ).all()
    mine = [e for e in events if only or (e.recipient or "").lower() == address]
    anyones = [] if only else [e for e in events if e.recipient is None]
    notifications = session.scalars(
        select(Notification)
        .where(Notification.event_id.in_([e.id for e in mine]))
        .order_by(Notification.id)
    ).all()
    told = {e.id: e for e in mine}
    org = session.get(Organization, message.org_id)
    sender = session.get(User, message.user_id)
    return {
        "id": message.public_id,
        "organization": org.name if org else None,
        "sender": sender.email if sender else None,
        "subject": message.subject,
        "to": message.to,
        "cc": message.cc,
        # Other blind-copied recipients are not this person's to see.
        "bcc": [a for a in message.bcc if a.strip().lower() == address],
        "only_recipient": only,
        "sent_at": _plain(message.sent_at),
        "created_at": _plain(message.created_at),
        "track_opens": message.track_opens,
        "track_links": message.track_links,
        "tracking_disabled_reason": message.tracking_disabled_reason,
        "opens": message.open_count,
        "clicks": message.click_count,
        "first_open_at": _plain(message.first_open_at),
        "last_open_at": _plain(message.last_open_at),
        "replied_at": _plain(message.replied_at),
        "links": list(dict.fromkeys(link.url for link in message.links)),
        "events": [_event_export(e, whole=True) for e in mine],
        "events_of_any_recipient": [_event_export(e, whole=False) for e in anyones],
        "notifications": [
            _notification_export(message, n, told) for n in notifications
        ],
        "crm_records": [r for r in crm if r["message_id"] == message.id],
    }


def export_person(
    session: Session, address: str, org_id: int | None = None
) -> dict[str, Any]:
    """Everything held about one recipient address, as plain JSON values."""
    address = normalise(address)
    messages = find_messages(session, address, org_id)
    crm = _crm_records(session, [m.id for m in messages], address)
    exported = [_message_export(session, m, address, crm) for m in messages]
    for message in exported:
        for record in message["crm_records"]:
            record.pop("message_id", None)
    return {
        "address": address,
        "exported_at": datetime.now(UTC).isoformat(),
        "messages": exported,
        "do_not_track": _do_not_track(session, address, org_id),
    }


def _leave_shared(
    session: Session, messages: list[Message], address: str
) -> dict[str, int]:
    """Take the address out of messages that others received too.

    The messages are locked first, as deleting does: a batch of hits being stored
    holds them until it commits, so its events are there to erase, and a later batch
    reads them with the address gone. Addresses are compared as Python lower-cases
    them, not the database (SQLite lower-cases ASCII only).
    """
    if not messages:
        return {"events": 0, "cleared": 0}
    ids = sorted(m.id for m in messages)
    session.execute(
        select(Message)
        .where(Message.id.in_(ids))
        .order_by(Message.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    for message in messages:
        for field in ("to", "cc", "bcc"):
            kept = [a for a in getattr(message, field) if normalise(a) != address]
            setattr(message, field, kept)
        # Its own pixel and links may be the erased person's: no longer tracked.
        message.erased_count = (message.erased_count or 0) + 1
    named = session.scalars(
        select(Event.recipient)
        .where(Event.message_id.in_(ids), Event.recipient.is_not(None))
        .distinct()
    )
    spellings = [r for r in named if r is not None and normalise(r) == address]
    attributed = select(Event.id).where(
        Event.message_id.in_(ids), Event.recipient.in_(spellings)
    )
    delete_notifications_of(session, attributed)
    events = session.execute(delete(Event).where(Event.id.in_(attributed)))
    cleared = session.execute(
        update(Event)
        .where(Event.message_id.in_(ids), Event.recipient.is_(None))
        .values(**_CLEARED, raw_purged_at=datetime.now(UTC))
    )
    session.execute(
        delete(CrmRecord).where(
            CrmRecord.message_id.in_(ids), CrmRecord.recipient == address
        )
    )
    # The person's own copy goes. Its links still redirect, as the message's own:
    # no longer tracked, since the message now has an erased recipient.
    copies = [
        copy.id
        for copy in session.scalars(
            select(MessageCopy).where(MessageCopy.message_id.in_(ids))
        )
        if normalise(copy.recipient) == address
    ]
    if copies:
        session.execute(
            update(Link).where(Link.copy_id.in_(copies)).values(copy_id=None)
        )
        session.execute(delete(MessageCopy).where(MessageCopy.id.in_(copies)))
    _forget_follow_ups(session, ids, address)
    from workers.ingest import recount_message

    for message_id in ids:
        recount_message(session, message_id)
    return {
        "events": getattr(events, "rowcount", 0),
        "cleared": getattr(cleared, "rowcount", 0),
    }


def _forget_follow_ups(session: Session, ids: list[int], address: str) -> None:
    """Follow-ups that fired for the person (their own copy's) with what is still to
    come of them, the reminders and tasks still to come that name them (a firing for
    everyone a message went to), and the reminders delivered that named them."""
    names = _naming(address)
    firings = [
        firing.id
        for firing in session.scalars(
            select(FollowUpFiring).where(FollowUpFiring.message_id.in_(ids))
        )
        if firing.recipient and normalise(firing.recipient) == address
    ]
    pending = [
        action.id
        for action in session.scalars(
            select(FollowUpAction)
            .join(FollowUpFiring, FollowUpFiring.id == FollowUpAction.firing_id)
            .where(
                FollowUpFiring.message_id.in_(ids), FollowUpAction.state == "pending"
            )
        )
        if names(json.dumps(action.payload, ensure_ascii=False))
    ]
    if firings or pending:
        session.execute(
            delete(FollowUpAction).where(
                or_(
                    FollowUpAction.firing_id.in_(firings),
                    FollowUpAction.id.in_(pending),
                )
            )
        )
        session.execute(delete(FollowUpFiring).where(FollowUpFiring.id.in_(firings)))
    reminders = [
        note.id
        for note in session.scalars(
            select(Notification).where(
                Notification.message_id.in_(ids), Notification.event_id.is_(None)
            )
        )
        if names(f"{note.title or ''} {note.body or ''}")
    ]
    if reminders:
        session.execute(delete(Notification).where(Notification.id.in_(reminders)))


def _naming(address: str) -> Callable[[str], bool]:
    """Whether a text names the address: whole, in any letter case, not as the end
    of a longer one (``xkate@example.com`` does not name ``kate@example.com``)."""
    pattern = re.compile(rf"(?<![\w.+-]){re.escape(address)}(?![\w.-])")
    return lambda text: pattern.search(text.lower()) is not None


def _keep_untracked(
    session: Session, address: str, org_id: int | None, user_id: int | None
) -> None:
    """Put the address on the do-not-track list of each organisation erased from."""
    # The ASCII form is how the list keeps an address; an international domain can
    # make it too long for the column, and the Unicode form is looked up as well.
    value = next((v for v in (list_key(address), address) if len(v) <= 320), None)
    if value is None:
        return  # longer than any address a message can be registered to
    everywhere = select(Organization.id).order_by(Organization.id)
    org_ids = [org_id] if org_id is not None else list(session.scalars(everywhere))
    for org in org_ids:
        add_entry(session, org, {"value": value, "kind": "address"}, user_id)


def erase_person(
    session: Session,
    address: str,
    org_id: int | None = None,
    user_id: int | None = None,
) -> dict[str, Any]:
    """Delete what is held about an address here; report what the CRMs still hold.

    The caller commits. A do-not-track entry for the address is added where there
    was none and kept (without it tracking would start again); the report lists it.
    """
    address = normalise(address)
    messages = find_messages(session, address, org_id)
    crm = _crm_records(session, [m.id for m in messages], address)
    only = [m for m in messages if _is_only_recipient(m, address)]
    shared = [m for m in messages if not _is_only_recipient(m, address)]
    deleted = delete_messages(session, [m.id for m in only])
    left = _leave_shared(session, shared, address)
    _keep_untracked(session, address, org_id, user_id)
    session.flush()
    return {
        "address": address,
        "erased_at": datetime.now(UTC).isoformat(),
        "messages_deleted": deleted["messages"],
        "messages_updated": len(shared),
        "events_deleted": deleted["events"] + left["events"],
        "events_cleared": left["cleared"],
        "crm_records": [
            {k: v for k, v in r.items() if k != "message_id"}
            for r in crm
            # Without an id and never attempted, nothing was written upstream.
            if r["external_id"] or r["attempted_at"]
        ],
        "kept": {"do_not_track": _do_not_track(session, address, org_id)},
    }
