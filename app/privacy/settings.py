"""An organisation's privacy choices and do-not-track list, validated at the door."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.boundary import JsonBoolean, WholeNumber
from app.models import DoNotTrack, Organization
from app.privacy.rules import list_key

IP_POLICIES = ("full", "truncate", "none")
LOCATION_PRECISIONS = ("city", "region", "country")
SETTINGS = (
    "ip_policy",
    "location_precision",
    "raw_retention_days",
    "event_retention_days",
    "track_eea",
)
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _days(longest: int) -> fields.Integer:
    return WholeNumber(
        allow_none=True,
        validate=validate.Range(
            min=1,
            max=longest,
            error="Give a number of days from {min} to {max}, or null to keep forever.",
        ),
    )


class PrivacySettingsSchema(Schema):
    """A change to an organisation's privacy settings; every field is optional."""

    ip_policy = fields.String(
        validate=validate.OneOf(
            IP_POLICIES, error="Choose one of: full, truncate, none."
        )
    )
    location_precision = fields.String(
        validate=validate.OneOf(
            LOCATION_PRECISIONS, error="Choose one of: city, region, country."
        )
    )
    raw_retention_days = _days(3650)
    event_retention_days = _days(36500)
    track_eea = JsonBoolean()


class PrivacySettingsViewSchema(Schema):
    ip_policy = fields.String()
    location_precision = fields.String()
    raw_retention_days = fields.Integer(allow_none=True)
    event_retention_days = fields.Integer(allow_none=True)
    track_eea = JsonBoolean()


def _valid_domain(domain: str) -> bool:
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    labels = ascii_domain.split(".")
    return (
        len(ascii_domain) <= 253
        and len(labels) >= 2
        and all(_LABEL.match(label) for label in labels)
    )


class DoNotTrackEntrySchema(Schema):
    """One address ('ann@example.com') or a whole domain ('example.com')."""

    value = fields.String(required=True, validate=validate.Length(min=1, max=320))

    @post_load
    def _classify(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        value = list_key(data["value"]).removeprefix("@")
        if len(value) > 320:
            # An international domain can grow past the limit in its ASCII form.
            raise ValidationError(
                "An address or domain is at most 320 characters.", "value"
            )
        if "@" in value:
            try:
                validate.Email()(value)
            except ValidationError as exc:
                raise ValidationError(
                    "Give an email address like ann@example.com.", "value"
                ) from exc
            return {"value": value, "kind": "address"}
        if not _valid_domain(value):
            raise ValidationError(
                "Give an email address (ann@example.com) or a domain (example.com).",
                "value",
            )
        return {"value": value, "kind": "domain"}


class DoNotTrackViewSchema(Schema):
    id = fields.Integer()
    value = fields.String()
    kind = fields.String()
    created_at = fields.DateTime()


def settings_of(org: Organization) -> dict[str, Any]:
    """The organisation's privacy settings as plain values."""
    return {name: getattr(org, name) for name in SETTINGS}


def update_settings(org: Organization, changes: dict[str, Any]) -> list[str]:
    """Apply validated changes; return the names of the settings that changed."""
    changed = [k for k, v in changes.items() if getattr(org, k) != v]
    for name in changed:
        setattr(org, name, changes[name])
    return changed


def entries(session: Session, org_id: int) -> list[DoNotTrack]:
    """The organisation's do-not-track list, in alphabetical order."""
    query = select(DoNotTrack).where(DoNotTrack.org_id == org_id)
    return list(session.scalars(query.order_by(DoNotTrack.value)))


def add_entry(
    session: Session, org_id: int, entry: dict[str, Any], user_id: int | None
) -> tuple[DoNotTrack, bool]:
    """Put an address or domain on the list; return it and whether it is new."""
    found = session.scalars(
        select(DoNotTrack).where(
            DoNotTrack.org_id == org_id, DoNotTrack.value == entry["value"]
        )
    ).first()
    if found is not None:
        return found, False
    row = DoNotTrack(org_id=org_id, created_by_user_id=user_id, **entry)
    session.add(row)
    session.flush()
    return row, True


def remove_entry(session: Session, org_id: int, value: str) -> bool:
    """Take an address or domain off the list; False when it was not on it."""
    result = session.execute(
        delete(DoNotTrack).where(DoNotTrack.org_id == org_id, DoNotTrack.value == value)
    )
    return bool(getattr(result, "rowcount", 0))
