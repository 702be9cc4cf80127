"""Privacy through the API: settings, the do-not-track list, a person's data."""

from __future__ import annotations

import logging

from flask import abort
from flask.typing import ResponseReturnValue
from marshmallow import Schema, fields

from app.api import bp
from app.api.messages import json_body, signed_in
from app.auth import api_auth
from app.boundary import load_query
from app.extensions import db_session
from app.models import User
from app.privacy import person
from app.privacy import settings as privacy
from app.privacy.rules import normalise

logger = logging.getLogger(__name__)


class AddressSchema(Schema):
    address = fields.Email(required=True)


def admin(action: str) -> User:
    """The caller, who must be an administrator of their organisation."""
    user = signed_in()
    if not user.is_admin:
        abort(403, f"Only an administrator of your organisation can {action}.")
    return user


@bp.get("/settings/privacy")
@api_auth
def get_privacy_settings() -> ResponseReturnValue:
    """The organisation's privacy settings; every member may read them."""
    org = signed_in().organization
    return privacy.PrivacySettingsViewSchema().dump(privacy.settings_of(org))


@bp.patch("/settings/privacy")
@api_auth
def patch_privacy_settings() -> ResponseReturnValue:
    """Change some of the organisation's privacy settings (administrators only)."""
    user = admin("change privacy settings")
    changes = privacy.PrivacySettingsSchema().load(json_body())
    changed = privacy.update_settings(user.organization, changes)
    db_session().commit()
    logger.info(
        "privacy settings changed org_id=%s user_id=%s fields=%s",
        user.org_id,
        user.id,
        ",".join(changed) or "-",
    )
    return privacy.PrivacySettingsViewSchema().dump(
        privacy.settings_of(user.organization)
    )


@bp.get("/privacy/do-not-track")
@api_auth
def list_do_not_track() -> ResponseReturnValue:
    """The organisation's do-not-track addresses and domains."""
    entries = privacy.entries(db_session(), signed_in().org_id)
    return {"entries": privacy.DoNotTrackViewSchema(many=True).dump(entries)}


@bp.post("/privacy/do-not-track")
@api_auth
def add_do_not_track() -> ResponseReturnValue:
    """Never track an address or a domain again; any member may add one."""
    user = signed_in()
    entry = privacy.DoNotTrackEntrySchema().load(json_body())
    row, created = privacy.add_entry(db_session(), user.org_id, entry, user.id)
    db_session().commit()
    return privacy.DoNotTrackViewSchema().dump(row), 201 if created else 200


@bp.delete("/privacy/do-not-track")
@api_auth
def remove_do_not_track() -> ResponseReturnValue:
    """Take an entry off the list (administrators only): tracking may start again."""
    user = admin("take an entry off the do-not-track list")
    entry = privacy.DoNotTrackEntrySchema().load(json_body())
    if not privacy.remove_entry(db_session(), user.org_id, entry["value"]):
        abort(404, "That address or domain is not on the do-not-track list.")
    db_session().commit()
    return {"removed": entry["value"]}


@bp.get("/privacy/export")
@api_auth
def export_person() -> ResponseReturnValue:
    """Everything the organisation holds about one recipient address."""
    user = admin("export a person's data")
    address = normalise(load_query(AddressSchema())["address"])
    logger.info("person exported org_id=%s user_id=%s", user.org_id, user.id)
    return person.export_person(db_session(), address, user.org_id)


@bp.post("/privacy/erase")
@api_auth
def erase_person() -> ResponseReturnValue:
    """Delete what the organisation holds about an address; list what the CRMs hold."""
    user = admin("erase a person's data")
    address = normalise(AddressSchema().load(json_body())["address"])
    report = person.erase_person(db_session(), address, user.org_id, user.id)
    db_session().commit()
    logger.info(
        "person erased org_id=%s user_id=%s messages_deleted=%d events_deleted=%d "
        "crm_records_left=%d",
        user.org_id,
        user.id,
        report["messages_deleted"],
        report["events_deleted"],
        len(report["crm_records"]),
    )
    return report
