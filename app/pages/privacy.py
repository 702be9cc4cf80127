"""The Privacy section of the settings page: what is kept, and who is never tracked."""

from __future__ import annotations

import logging

from flask import flash, g, redirect, request, url_for
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError
from werkzeug.datastructures import MultiDict

from app.auth import admin_required, check_csrf
from app.extensions import db_session
from app.pages import bp
from app.privacy import settings as privacy

logger = logging.getLogger(__name__)


def _back() -> ResponseReturnValue:
    return redirect(url_for("pages.settings", _anchor="privacy"), 303)


def _flash_errors(error: ValidationError) -> None:
    messages = error.messages if isinstance(error.messages, dict) else {}
    labels = {
        "ip_policy": "Addresses",
        "location_precision": "Location",
        "raw_retention_days": "Raw details",
        "event_retention_days": "Messages and events",
        "value": "Do-not-track",
    }
    for name, problems in messages.items():
        text = " ".join(problems) if isinstance(problems, list) else str(problems)
        flash(f"{labels.get(name, name)}: {text}", "error")


def _settings_form(form: MultiDict[str, str]) -> dict[str, object]:
    """The form's fields in the API's shape: blank days mean 'keep forever'."""
    return {
        "ip_policy": form.get("ip_policy", ""),
        "location_precision": form.get("location_precision", ""),
        "raw_retention_days": form.get("raw_retention_days", "").strip() or None,
        "event_retention_days": form.get("event_retention_days", "").strip() or None,
        "track_eea": "skip_eea" not in form,
    }


@bp.post("/settings/privacy")
@admin_required
def privacy_settings() -> ResponseReturnValue:
    check_csrf()
    try:
        changes = privacy.PrivacySettingsSchema().load(_settings_form(request.form))
    except ValidationError as exc:
        _flash_errors(exc)
        return _back()
    changed = privacy.update_settings(g.user.organization, changes)
    db_session().commit()
    logger.info(
        "privacy settings changed org_id=%s user_id=%s fields=%s",
        g.user.org_id,
        g.user.id,
        ",".join(changed) or "-",
    )
    flash("Privacy settings saved.", "ok")
    return _back()


@bp.post("/settings/privacy/do-not-track")
@admin_required
def privacy_add_do_not_track() -> ResponseReturnValue:
    check_csrf()
    try:
        entry = privacy.DoNotTrackEntrySchema().load(
            {"value": request.form.get("value", "")}
        )
    except ValidationError as exc:
        _flash_errors(exc)
        return _back()
    privacy.add_entry(db_session(), g.user.org_id, entry, g.user.id)
    db_session().commit()
    flash(f"{entry['value']} will not be tracked.", "ok")
    return _back()


@bp.post("/settings/privacy/do-not-track/remove")
@admin_required
def privacy_remove_do_not_track() -> ResponseReturnValue:
    check_csrf()
    value = request.form.get("value", "")
    if privacy.remove_entry(db_session(), g.user.org_id, value):
        db_session().commit()
        flash(f"{value} is no longer on the do-not-track list.", "ok")
    return _back()
