"""The data model: organisations, people, tracked messages, their events, CRM state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from app.db import Base


def utcnow() -> datetime:
    """Now, as an aware UTC datetime."""
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; treat them as the UTC they were stored as."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp column that stores UTC and always gives back aware datetimes."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: datetime | None, dialect: Any
    ) -> datetime | None:
        return as_utc(value)

    def process_result_value(
        self, value: datetime | None, dialect: Any
    ) -> datetime | None:
        return as_utc(value)


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Privacy: what is kept of each hit. See README, "Privacy".
    ip_policy: Mapped[str] = mapped_column(String(16), default="truncate")
    location_precision: Mapped[str] = mapped_column(String(16), default="city")
    raw_retention_days: Mapped[int | None] = mapped_column(Integer, default=90)
    event_retention_days: Mapped[int | None] = mapped_column(Integer, default=None)
    track_eea: Mapped[bool] = mapped_column(Boolean, default=True)
    log_sent_email: Mapped[bool] = mapped_column(Boolean, default=True)

    users: Mapped[list[User]] = relationship(back_populates="organization")


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    organization: Mapped[Organization] = relationship(back_populates="users")


class PageSession(Base):
    """A signed-in browser. The cookie holds a random key; only its SHA-256 is kept.

    Signing out deletes the row, so a copied cookie stops working with it.
    """

    __tablename__ = "page_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    user: Mapped[User] = relationship()


class SignInFailure(Base):
    """A wrong password, kept for a while to slow down guessing."""

    __tablename__ = "sign_in_failures"
    __table_args__ = (
        Index("ix_sign_in_failures_email_at", "email", "at"),
        Index("ix_sign_in_failures_ip_at", "ip", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    ip: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # Only a SHA-256 of the token is kept; the token itself is shown once.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship()


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_user_sent", "user_id", "sent_at"),
        Index("ix_messages_org_sent", "org_id", "sent_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    # The pixel's token; also the key a hit carries to find its message.
    token: Mapped[str] = mapped_column(String(32), unique=True)
    subject: Mapped[str] = mapped_column(String(998))
    to: Mapped[list[str]] = mapped_column(JSON, default=list)
    cc: Mapped[list[str]] = mapped_column(JSON, default=list)
    bcc: Mapped[list[str]] = mapped_column(JSON, default=list)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    track_opens: Mapped[bool] = mapped_column(Boolean, default=True)
    track_links: Mapped[bool] = mapped_column(Boolean, default=True)
    tracking_disabled_reason: Mapped[str | None] = mapped_column(String(200))
    # The address the message was registered from: the sender's own network.
    sender_ip: Mapped[str | None] = mapped_column(String(64))
    replied_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Derived counts, recomputed by the worker from the events.
    open_count: Mapped[int] = mapped_column(Integer, default=0)
    click_count: Mapped[int] = mapped_column(Integer, default=0)
    first_open_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_open_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_event_id: Mapped[int | None] = mapped_column(Integer)
    # When the latest open the sender was notified of happened: repeat opens soon
    # after it are stored and counted without another notification.
    open_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The same for opens from another network than the first reader's (forwards).
    forward_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # How many recipients were erased from it (their addresses are gone): its own
    # pixel and links may be theirs, so they are no longer tracked.
    erased_count: Mapped[int] = mapped_column(
        Integer, default=0, server_default=text("0")
    )

    user: Mapped[User] = relationship()
    # The links of the message as registered; each copy has links of its own.
    links: Mapped[list[Link]] = relationship(
        primaryjoin="and_(Link.message_id == Message.id, Link.copy_id.is_(None))",
        order_by="Link.position",
        viewonly=True,
    )
    copies: Mapped[list[MessageCopy]] = relationship(
        order_by="MessageCopy.position", viewonly=True
    )

    @property
    def recipients(self) -> list[str]:
        """Everyone the message went to, in order, without repeats (in any case)."""
        first: dict[str, str] = {}
        for address in [*self.to, *self.cc, *self.bcc]:
            first.setdefault(address.lower(), address)
        return list(first.values())


class MessageCopy(Base):
    """One recipient's own copy of a message: its pixel and links name that person.

    A message registered with ``per_recipient`` gets one copy per recipient, sent to
    that recipient alone, so that opens and clicks of several recipients can be told
    apart. The message's own pixel and links stay for any other copy (the sender's
    Sent folder).
    """

    __tablename__ = "message_copies"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    recipient: Mapped[str] = mapped_column(String(320))
    # The recipient as Python lower-cases it, which a database may not (SQLite only
    # lower-cases ASCII): how follow-up firings and CRM records name the recipient.
    recipient_key: Mapped[str] = mapped_column(String(400))
    # The copy's pixel token, found beside Message.token when a hit comes in.
    token: Mapped[str] = mapped_column(String(32), unique=True)
    position: Mapped[int] = mapped_column(Integer)
    # As Message.open_notified_at and forward_notified_at, for this recipient's opens.
    open_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    forward_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    message: Mapped[Message] = relationship()


class Link(Base):
    __tablename__ = "links"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    # Set on the links of one recipient's copy (MessageCopy).
    copy_id: Mapped[int | None] = mapped_column(
        ForeignKey("message_copies.id", ondelete="CASCADE"), index=True
    )
    token: Mapped[str] = mapped_column(String(32), unique=True)
    url: Mapped[str] = mapped_column(Text)
    position: Mapped[int] = mapped_column(Integer)
    # As Message.open_notified_at, for clicks of this link.
    click_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    message: Mapped[Message] = relationship()
    copy: Mapped[MessageCopy | None] = relationship()


_REGRADABLE = "counted IS true AND (type = 'click' OR implied IS true)"


class Event(Base):
    """One open or click as it arrived, with its grade and what was learnt of it."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_message_time", "message_id", "occurred_at"),
        Index("ix_events_occurred_at", "occurred_at"),
        # Grading asks of each message whether it was opened, and its first human open.
        Index(
            "ix_events_message_opens",
            "message_id",
            "occurred_at",
            postgresql_where=text("type = 'open'"),
            sqlite_where=text("type = 'open'"),
        ),
        # Burst grading asks of each link its first and last click of a few seconds.
        Index(
            "ix_events_link_clicks",
            "link_id",
            "occurred_at",
            postgresql_where=text("type = 'click'"),
            sqlite_where=text("type = 'click'"),
        ),
        # Regrading a burst reads only what it may still take off the counts.
        Index(
            "ix_events_message_regradable",
            "message_id",
            "occurred_at",
            postgresql_where=text(_REGRADABLE),
            sqlite_where=text(_REGRADABLE),
        ),
        Index(
            "ix_events_unpurged_time",
            "occurred_at",
            postgresql_where=text("raw_purged_at IS NULL"),
            sqlite_where=text("raw_purged_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # The hit's own id: storing a hit twice is a no-op.
    hit_id: Mapped[str] = mapped_column(String(40), unique=True)
    # No foreign keys here or in notifications: a batch of hits locks its messages
    # once instead of a check per row, and whatever deletes a message locks it and
    # deletes its events and notifications itself (app.messages: hold_messages and
    # delete_messages).
    message_id: Mapped[int] = mapped_column(Integer)
    link_id: Mapped[int | None] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(8))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    classification: Mapped[str] = mapped_column(String(16))
    counted: Mapped[bool] = mapped_column(Boolean)
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    implied: Mapped[bool] = mapped_column(Boolean, default=False)
    possible_forward: Mapped[bool] = mapped_column(Boolean, default=False)
    recipient: Mapped[str | None] = mapped_column(String(320))
    method: Mapped[str] = mapped_column(String(8), default="GET")
    # Raw details, subject to the organisation's privacy settings and retention.
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(Text)
    ip_prefix: Mapped[str | None] = mapped_column(String(64))
    country: Mapped[str | None] = mapped_column(String(100))
    country_code: Mapped[str | None] = mapped_column(String(2))
    region: Mapped[str | None] = mapped_column(String(100))
    city: Mapped[str | None] = mapped_column(String(100))
    asn: Mapped[int | None] = mapped_column(Integer)
    network: Mapped[str | None] = mapped_column(String(200))
    device_client: Mapped[str | None] = mapped_column(String(100))
    device_os: Mapped[str | None] = mapped_column(String(100))
    device_type: Mapped[str] = mapped_column(String(16), default="unknown")
    raw_purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    link: Mapped[Link | None] = relationship(
        primaryjoin="foreign(Event.link_id) == Link.id", viewonly=True
    )


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_user_id", "user_id", "id"),
        # Reminders are deleted with their message; the others with their event.
        Index(
            "ix_notifications_reminders",
            "message_id",
            postgresql_where=text("event_id IS NULL"),
            sqlite_where=text("event_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer)
    message_id: Mapped[int] = mapped_column(Integer)
    # None for a follow-up reminder, which no single event caused.
    event_id: Mapped[int | None] = mapped_column(Integer, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # A reminder's own words. An event's notification is written out from its event
    # when read (app.presenters.notification_text), so storing it costs no text.
    title: Mapped[str | None] = mapped_column(String(300))
    body: Mapped[str | None] = mapped_column(String(500))
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class CrmConnection(Base):
    """An organisation's OAuth connection to one CRM account."""

    __tablename__ = "crm_connections"
    __table_args__ = (UniqueConstraint("org_id", "provider"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    provider: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="connected")
    status_reason: Mapped[str | None] = mapped_column(String(500))
    instance_url: Mapped[str | None] = mapped_column(String(500))
    login_url: Mapped[str | None] = mapped_column(String(500))
    external_account_id: Mapped[str | None] = mapped_column(String(100))
    external_user_id: Mapped[str | None] = mapped_column(String(100))
    external_user_name: Mapped[str | None] = mapped_column(String(320))
    # Encrypted with the first of TOKEN_ENCRYPTION_KEYS; never logged.
    access_token: Mapped[str | None] = mapped_column(Text)
    refresh_token: Mapped[str | None] = mapped_column(Text)
    token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Bumped on every token refresh, so a worker can tell a token it holds went stale.
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    connected_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    connected_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(1000))
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    api_usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class CrmRecord(Base):
    """The ledger: which CRM record stands for one (message, kind, recipient)."""

    __tablename__ = "crm_records"
    __table_args__ = (
        UniqueConstraint("connection_id", "message_id", "kind", "recipient"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("crm_connections.id", ondelete="CASCADE")
    )
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    # 'sent', 'open', 'click', or 'followup:<rule id>'.
    kind: Mapped[str] = mapped_column(String(40))
    recipient: Mapped[str] = mapped_column(String(320))
    object_type: Mapped[str | None] = mapped_column(String(40))
    external_id: Mapped[str | None] = mapped_column(String(100))
    # A unique marker written into the record, so a lost response can be found again.
    marker: Mapped[str] = mapped_column(String(64))
    # pending (nothing confirmed yet), created, no_match, failed
    state: Mapped[str] = mapped_column(String(16), default="pending")
    # Set before each create call: a row attempted but without an id may exist upstream.
    attempted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(1000))
    synced_event_count: Mapped[int] = mapped_column(Integer, default=0)
    match: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DoNotTrack(Base):
    """An address or a whole domain whose messages are never tracked."""

    __tablename__ = "do_not_track"
    __table_args__ = (UniqueConstraint("org_id", "value"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    # Lower case: 'ann@example.com' (kind 'address') or 'example.com' ('domain').
    value: Mapped[str] = mapped_column(String(320))
    kind: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )


# The follow-up tables live with their feature; importing them here puts every table
# on Base.metadata for migrations and comparisons.
from app.followups import models as _followup_models  # noqa: E402, F401
