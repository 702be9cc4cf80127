"""How events read to a person: in notifications, the inbox and the timeline."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

from app.models import Event, Message, as_utc

CLASSIFICATION_LABELS = {
    "human": "A person",
    "proxy": "A person, through the mail provider's image proxy",
    "prefetch": "Fetched by a mail app in advance (not a read)",
    "scanner": "Security scanner",
    "bot": "Automated client",
    "self": "Your own",
}


def who(message: Message, event: Event) -> str:
    """The recipient the event is attributed to, or 'Somebody'."""
    return event.recipient or "Somebody"


def place(event: Event) -> str | None:
    """'Linköping, Sweden', 'Sweden', or None."""
    parts = [event.city or event.region, event.country]
    text = ", ".join(p for p in parts if p)
    return text or None


def device(event: Event) -> str | None:
    """'Mobile Safari on iOS', 'Gmail', or None."""
    if event.device_client and event.device_os:
        return f"{event.device_client} on {event.device_os}"
    return event.device_client or event.device_os


def link_label(url: str | None) -> str:
    """A short form of a destination: host and path."""
    if not url:
        return "a link"
    parts = urlsplit(url)
    text = parts.netloc + (parts.path if parts.path != "/" else "")
    return text[:80] or url[:80]


def describe_event(message: Message, event: Event) -> tuple[str, str]:
    """A notification's title and body for one counted event."""
    verb = "opened" if event.type == "open" else "clicked a link in"
    title = f"{who(message, event)} {verb} “{message.subject}”"
    details = []
    if event.type == "click":
        details.append(link_label(event.link.url if event.link else None))
    where = place(event)
    if where:
        details.append(f"in {where}")
    on = device(event)
    if on:
        details.append(f"on {on}")
    if event.classification == "proxy":
        details.append("through the mail provider's proxy (place unknown)")
    if event.possible_forward:
        details.append("possibly forwarded")
    return title, " · ".join(details) or "just now"


def notification_text(
    message: Message, event: Event | None, title: str | None, body: str | None
) -> tuple[str, str]:
    """A notification's title and body: a reminder's own, or its event's described."""
    if title is not None or event is None:
        return title or "", body or ""
    title, body = describe_event(message, event)
    return title[:300], body[:500]


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """'just now', '3 minutes ago', '2 hours ago', '5 days ago'."""
    moment = as_utc(moment)
    if moment is None:
        return "never"
    seconds = int(((now or datetime.now(UTC)) - moment).total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def summary(message: Message, event: Event | None) -> str:
    """The inbox line: 'opened 3 minutes ago in Linköping, Sweden on iPhone'."""
    if event is None:
        return "not opened yet"
    verb = "opened" if event.type == "open" else "clicked"
    parts = [f"{verb} {ago(event.occurred_at)}"]
    where = place(event)
    if where:
        parts.append(f"in {where}")
    on = device(event)
    if on:
        parts.append(f"on {on}")
    return " ".join(parts)
