"""The API's request and response shapes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from marshmallow import (
    EXCLUDE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from app.boundary import MAX_ID, JsonBoolean, QueryInteger

MAX_BODY = 2 * 1024 * 1024
MAX_RECIPIENTS = 500


class Timestamp(fields.AwareDateTime):
    """An ISO 8601 time between 1970 and 2100, naive ones taken as UTC, kept in UTC."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(default_timezone=UTC, **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> datetime:
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            moment = moment.astimezone(UTC)
        except OverflowError:
            moment = datetime.min.replace(tzinfo=UTC)
        if not EARLIEST <= moment <= LATEST:
            raise ValidationError("Give a time between 1970 and 2100.")
        return moment


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


class Address(fields.Email):
    """An email address, kept as sent but compared in lower case."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        address = str(super()._deserialize(value, attr, data, **kwargs)).strip()
        if len(address) > 320:
            raise ValidationError("An email address is at most 320 characters.")
        return address


def _addresses(required: bool = False) -> fields.List:
    extra: dict[str, Any] = {"required": True} if required else {"load_default": list}
    return fields.List(
        Address(),
        **extra,
        validate=validate.Length(
            min=1 if required else 0,
            max=MAX_RECIPIENTS,
            error="Give between {min} and {max} addresses.",
        ),
    )


class MessageCreateSchema(Schema):
    subject = fields.String(required=True, validate=validate.Length(max=998))
    to = _addresses(required=True)
    cc = _addresses()
    bcc = _addresses()
    html = fields.String(load_default=None, validate=validate.Length(max=MAX_BODY))
    text = fields.String(load_default=None, validate=validate.Length(max=MAX_BODY))
    # False: neither pixel nor tracked links (the same as both switches below off).
    track = JsonBoolean(load_default=True)
    track_opens = JsonBoolean(load_default=True)
    track_links = JsonBoolean(load_default=True)
    track_text_links = JsonBoolean(load_default=False)
    # One copy per recipient, each with a pixel and links of its own, sent to that
    # recipient alone: opens and clicks then name who made them.
    per_recipient = JsonBoolean(
        load_default=False,
        metadata={
            "description": "Answer with one copy per recipient (at most 50) in "
            "'copies', to be sent to each recipient alone, so that every open and "
            "click names its recipient."
        },
    )
    sent_at = Timestamp(load_default=None)

    @validates_schema(skip_on_field_errors=False)
    def _needs_a_body(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if data.get("html") is None and data.get("text") is None:
            raise ValidationError(
                "Give the message's 'html', its 'text', or both.", "html"
            )

    @post_load
    def _drop_repeated_addresses(
        self, data: dict[str, Any], **_kwargs: Any
    ) -> dict[str, Any]:
        # Spelled the same twice in a list: once. Other spellings are kept as sent;
        # Message.recipients compares without letter case.
        for key in ("to", "cc", "bcc"):
            data[key] = list(dict.fromkeys(data[key]))
        return data


class LinkSchema(Schema):
    url = fields.String()
    tracked_url = fields.String()


class TrackingSchema(Schema):
    """Whether a message has a pixel and tracked links, and why not if it does not."""

    opens = JsonBoolean()
    links = JsonBoolean()
    reason = fields.String(allow_none=True)


def tracking_of(message: Any) -> dict[str, Any]:
    return {
        "opens": message.track_opens,
        "links": message.track_links,
        "reason": message.tracking_disabled_reason,
    }


class CopySchema(Schema):
    """One recipient's copy: send this HTML and text to this recipient alone."""

    recipient = fields.String()
    html = fields.String(allow_none=True)
    text = fields.String(allow_none=True)
    pixel_url = fields.String(allow_none=True)
    links = fields.List(fields.Nested(LinkSchema))


class MessageCreatedSchema(Schema):
    id = fields.String()
    subject = fields.String()
    html = fields.String(allow_none=True)
    text = fields.String(allow_none=True)
    pixel_url = fields.String(allow_none=True)
    links = fields.List(fields.Nested(LinkSchema))
    copies = fields.List(
        fields.Nested(CopySchema),
        metadata={
            "description": "With per_recipient: one copy per recipient, in the order "
            "of to, cc and bcc. The message's own html and text above are for any "
            "other copy, such as the sender's Sent folder. Empty otherwise."
        },
    )
    sent_at = fields.DateTime()
    tracking = fields.Nested(TrackingSchema)


class RecipientActivitySchema(Schema):
    """What one recipient's copy has seen: counted opens and clicks."""

    recipient = fields.String()
    opens = fields.Integer()
    clicks = fields.Integer()
    last_event_at = fields.DateTime(allow_none=True)


class MessageSchema(Schema):
    id = fields.String(attribute="public_id")
    subject = fields.String()
    to = fields.List(fields.String())
    cc = fields.List(fields.String())
    bcc = fields.List(fields.String())
    recipients = fields.List(fields.String())
    sent_at = fields.DateTime()
    opens = fields.Integer(attribute="open_count")
    clicks = fields.Integer(attribute="click_count")
    first_opened_at = fields.DateTime(attribute="first_open_at", allow_none=True)
    last_opened_at = fields.DateTime(attribute="last_open_at", allow_none=True)
    replied_at = fields.DateTime(allow_none=True)
    track_opens = JsonBoolean()
    track_links = JsonBoolean()
    tracking = fields.Function(tracking_of)
    per_recipient = fields.Function(lambda message: bool(message.copies))


class MessageDetailSchema(MessageSchema):
    # Counted per recipient from the events of their copies (per_recipient only).
    by_recipient = fields.List(fields.Nested(RecipientActivitySchema))


class MessagePageSchema(Schema):
    messages = fields.List(fields.Nested(MessageSchema))
    page = fields.Integer()
    per_page = fields.Integer()
    total = fields.Integer()


class PageArgsSchema(Schema):
    class Meta:
        # Query strings carry cache-busters and trackers' own parameters: ignore them.
        unknown = EXCLUDE

    page = QueryInteger(load_default=1, validate=validate.Range(min=1, max=100_000))
    per_page = QueryInteger(load_default=25, validate=validate.Range(min=1, max=100))


def after_id(what: str, least: int = 0, **options: Any) -> QueryInteger:
    """A query string's id to start after: ``what`` says of what, for the message."""
    error = f"Give {what} id from {{min}} to {{max}}."
    return QueryInteger(
        validate=validate.Range(min=least, max=MAX_ID, error=error), **options
    )


class NotificationArgsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    after = after_id("a notification", load_default=0)


class StreamArgsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    after = after_id(
        "a notification",
        metadata={
            "description": "Start after this notification id (without it, with the "
            "next new one). A Last-Event-ID header, which browsers send when they "
            "reconnect, takes its place."
        },
    )


class LocationSchema(Schema):
    country = fields.String(allow_none=True)
    region = fields.String(allow_none=True)
    city = fields.String(allow_none=True)


class DeviceSchema(Schema):
    client = fields.String(allow_none=True)
    os = fields.String(allow_none=True)
    type = fields.String()


class EventSchema(Schema):
    id = fields.Integer()
    type = fields.String()
    occurred_at = fields.DateTime()
    classification = fields.String()
    counted = JsonBoolean()
    reasons = fields.List(fields.String())
    implied = JsonBoolean()
    possible_forward = JsonBoolean()
    recipient = fields.String(allow_none=True)
    recipient_label = fields.String()
    location = fields.Nested(LocationSchema, allow_none=True)
    device = fields.Nested(DeviceSchema)
    url = fields.String(allow_none=True)


EVENT_PAGE_LIMIT = 1000


class EventArgsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    after = after_id(
        "an event",
        least=1,
        metadata={"description": "The next_after of the page before."},
    )
    limit = QueryInteger(
        load_default=EVENT_PAGE_LIMIT,
        validate=validate.Range(min=1, max=EVENT_PAGE_LIMIT),
        metadata={"description": "Events a page, at most 1,000."},
    )


class EventListSchema(Schema):
    events = fields.List(fields.Nested(EventSchema))
    next_after = fields.Integer(
        allow_none=True,
        metadata={"description": "Pass as after for the next page; null on the last."},
    )


class ErrorSchema(Schema):
    error = fields.String()
    message = fields.String()
    field_errors = fields.Dict(data_key="fields")
