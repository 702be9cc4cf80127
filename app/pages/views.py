"""Views of the pages; the work is done in app.messages, app.presenters and workers."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

from flask import (
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select

from app import presenters, signin
from app.auth import (
    admin_required,
    authenticate,
    check_csrf,
    csrf_token,
    login_required,
)
from app.extensions import db_session
from app.messages import activity_by_recipient, events_of, find_message
from app.models import CrmConnection, CrmRecord, Event, Message, Notification
from app.pages import bp
from app.pages.chart import open_bars, opens_of
from app.pages.integrations import not_configured
from app.privacy.settings import entries as privacy_entries
from app.tracking.hotpath import client_address
from integrations.registry import PROVIDERS, get_provider


@bp.app_context_processor
def _template_helpers() -> dict[str, object]:
    return {
        "csrf_token": csrf_token,
        "p": presenters,
        "latest_notification_id": _latest_notification_id,
    }


def _latest_notification_id() -> int:
    """Where the page's stream starts: nothing after the page was drawn is missed."""
    latest = db_session().scalar(
        select(func.max(Notification.id)).where(Notification.user_id == g.user.id)
    )
    return int(latest or 0)


def _safe_next(target: str | None) -> str:
    """Only same-site paths, so the sign-in page cannot redirect elsewhere."""
    if (
        not target
        or not target.startswith("/")
        or not target.isprintable()  # no newline may reach a Location header
        or urlsplit(target).netloc
    ):
        return url_for("pages.inbox")
    return "/" + target.lstrip("/\\")


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    if request.method != "POST":
        return render_template("login.html", error=None)
    check_csrf()
    db = db_session()
    email = request.form.get("email", "")
    ip = client_address(request.environ, current_app.config["TRUSTED_PROXIES"])
    wait = signin.attempt(db, email, ip)
    if wait is not None:
        error = (
            f"Too many wrong passwords. Try again in {signin.minutes(wait)}, "
            "or ask an administrator to set a new one."
        )
        retry = {"Retry-After": str(math.ceil(wait.total_seconds()))}
        return render_template("login.html", error=error), 429, retry
    user = authenticate(email, request.form.get("password", ""))
    if user is None:
        # The attempt stays counted as a wrong password.
        error = "That email and password do not match an account."
        return render_template("login.html", error=error), 401
    signin.forget_failures(db, email)
    signin.start(db, user)
    db.commit()
    return redirect(_safe_next(request.args.get("next")))


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    check_csrf()
    db = db_session()
    signin.end(db)
    db.commit()
    return redirect(url_for("pages.login"))


def _inbox_messages() -> list[tuple[Message, Event | None]]:
    messages = (
        db_session()
        .scalars(
            select(Message)
            .where(Message.user_id == g.user.id, Message.org_id == g.user.org_id)
            .order_by(Message.sent_at.desc(), Message.id.desc())
            .limit(100)
        )
        .all()
    )
    latest_ids = [m.last_event_id for m in messages if m.last_event_id]
    latest = {
        e.id: e
        for e in db_session().scalars(select(Event).where(Event.id.in_(latest_ids)))
    }
    return [(m, latest.get(m.last_event_id or 0)) for m in messages]


@bp.get("/")
@login_required
def inbox() -> ResponseReturnValue:
    return render_template("inbox.html", rows=_inbox_messages())


@bp.get("/inbox/rows")
@login_required
def inbox_rows() -> ResponseReturnValue:
    return render_template("_inbox_rows.html", rows=_inbox_messages())


# A message page lists this many of the newest events; the chart and the counts
# cover them all. A scanner storm leaves tens of thousands on one message.
TIMELINE_LIMIT = 300


def _timeline_context(public_id: str) -> dict[str, Any]:
    """What the message page and its live timeline show."""
    session = db_session()
    message = find_message(session, g.user.org_id, public_id)
    if message is None:
        abort(404, "There is no such message in your organisation.")
    events = events_of(session, message.id, newest_first=True, limit=TIMELINE_LIMIT)
    total = len(events)
    if total == TIMELINE_LIMIT:
        everything = select(func.count()).where(Event.message_id == message.id)
        total = session.scalar(everything) or total
    return {
        "message": message,
        "events": events,
        "total_events": total,
        "bars": open_bars(opens_of(session, message.id), message.sent_at),
        "by_recipient": activity_by_recipient(session, message),
    }


@bp.get("/messages/<public_id>")
@login_required
def message(public_id: str) -> ResponseReturnValue:
    shown = _timeline_context(public_id)
    return render_template("message.html", **shown, crm=_crm_records(shown["message"]))


def _crm_records(message: Message) -> list[tuple[str, CrmRecord]]:
    """What the connected CRMs hold for a message, per recipient and kind."""
    rows = db_session().execute(
        select(CrmConnection.provider, CrmRecord)
        .join(CrmConnection, CrmConnection.id == CrmRecord.connection_id)
        .where(CrmRecord.message_id == message.id)
        .order_by(CrmConnection.provider, CrmRecord.recipient, CrmRecord.id)
    )
    return [(provider, record) for provider, record in rows]


@bp.get("/messages/<public_id>/timeline")
@login_required
def timeline(public_id: str) -> ResponseReturnValue:
    return render_template("_timeline.html", **_timeline_context(public_id))


@bp.get("/settings")
@admin_required
def settings() -> ResponseReturnValue:
    """The organisation's settings: CRM connections and privacy."""
    connections = db_session().scalars(
        select(CrmConnection).where(CrmConnection.org_id == g.user.org_id)
    )
    return render_template(
        "settings.html",
        org=g.user.organization,
        connections={c.provider: c for c in connections},
        providers=[get_provider(name) for name in PROVIDERS],
        unconfigured={name: not_configured(name) for name in PROVIDERS},
        do_not_track=privacy_entries(db_session(), g.user.org_id),
    )
