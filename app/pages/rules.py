"""The follow-up rules page: list, add, edit, switch off, delete, and preview."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError
from werkzeug.datastructures import MultiDict

from app.auth import check_csrf, login_required
from app.extensions import db_session
from app.followups import service
from app.followups.models import FollowUpRule
from app.followups.preview import preview
from app.followups.rules import (
    ACTIONS,
    PRIORITIES,
    TRIGGERS,
    RuleSchema,
    describe_action,
    describe_trigger,
)
from app.pages import bp


def form_to_rule(form: MultiDict[str, str]) -> dict[str, Any]:
    """The form's fields in the shape ``RuleSchema`` loads (the API's shape)."""
    trigger: dict[str, Any] = {"type": form.get("trigger_type", "")}
    for key in ("count", "days"):
        if form.get(key):
            trigger[key] = form[key]
    trigger["distinct_days"] = form.get("distinct_days") == "on"
    trigger["url_pattern"] = form.get("url_pattern") or None
    actions: list[dict[str, Any]] = []
    if form.get("reminder") == "on":
        actions.append({"type": "reminder", "body": form.get("reminder_body") or None})
    if form.get("crm_task") == "on":
        actions.append(
            {
                "type": "crm_task",
                "subject": form.get("task_subject") or "Follow up: {subject}",
                "body": form.get("task_body") or None,
                "due_days": form.get("due_days") or 1,
                "priority": form.get("priority") or "normal",
            }
        )
    return {
        "name": form.get("name", ""),
        "enabled": form.get("enabled", "on") == "on",
        "scope": form.get("scope") or "personal",
        "trigger": trigger,
        "actions": actions,
    }


def rule_to_form(rule: FollowUpRule) -> dict[str, Any]:
    """A stored rule as the form's fields, for editing."""
    trigger = rule.trigger
    form: dict[str, Any] = {
        "name": rule.name,
        "enabled": "on" if rule.enabled else "",
        "scope": service.scope_of(rule),
        "trigger_type": trigger.get("type"),
        "count": trigger.get("count") or "",
        "days": trigger.get("days") or "",
        "distinct_days": "on" if trigger.get("distinct_days") else "",
        "url_pattern": trigger.get("url_pattern") or "",
    }
    for action in rule.actions:
        if action["type"] == "reminder":
            form.update(reminder="on", reminder_body=action.get("body", ""))
        else:
            form.update(
                crm_task="on",
                task_subject=action["subject"],
                task_body=action.get("body", ""),
                due_days=action["due_days"],
                priority=action["priority"],
            )
    return form


def _page(
    form: dict[str, Any] | None = None,
    errors: dict[str, Any] | None = None,
    editing: FollowUpRule | None = None,
    previewed: tuple[int, list[Any]] | None = None,
    status: int = 200,
) -> ResponseReturnValue:
    rules = service.visible_rules(db_session(), g.user)
    body = render_template(
        "rules.html",
        rules=rules,
        form=form or {"reminder": "on", "trigger_type": "first_open", "enabled": "on"},
        errors=errors or {},
        editing=editing,
        previewed=previewed,
        triggers=TRIGGERS,
        actions=ACTIONS,
        priorities=PRIORITIES,
        describe_trigger=describe_trigger,
        describe_action=describe_action,
        scope_of=service.scope_of,
    )
    return body, status


def _rule_or_404(rule_id: int) -> FollowUpRule:
    try:
        return service.get_rule(db_session(), g.user, rule_id)
    except service.NotFound:
        abort(404, "There is no such rule.")


def _allowed(work: Any) -> Any:
    try:
        return work()
    except service.NotAllowed as exc:
        abort(403, str(exc))


@bp.get("/rules")
@login_required
def rules() -> ResponseReturnValue:
    return _page()


@bp.get("/rules/<int:rule_id>/edit")
@login_required
def edit_rule(rule_id: int) -> ResponseReturnValue:
    rule = _rule_or_404(rule_id)
    return _page(form=rule_to_form(rule), editing=rule)


@bp.post("/rules")
@login_required
def save_rule() -> ResponseReturnValue:
    """Create a rule, update one (``rule_id`` in the form), or preview the form."""
    check_csrf()
    form = request.form.to_dict()
    raw_id = form.get("rule_id", "")
    if raw_id and not (raw_id.isascii() and raw_id.isdigit() and len(raw_id) <= 9):
        abort(404)
    editing = _rule_or_404(int(raw_id)) if raw_id else None
    try:
        data = RuleSchema().load(form_to_rule(request.form))
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {}
        return _page(form, messages, editing, status=422)
    session = db_session()
    if request.form.get("intent") == "preview":
        return _page(form, editing=editing, previewed=preview(session, g.user, data))
    if editing is None:
        rule = _allowed(lambda: service.create_rule(session, g.user, data))
        flash(f"Rule \u201c{rule.name}\u201d added.", "ok")
    else:
        _allowed(lambda: service.update_rule(session, g.user, editing, data))
        flash(f"Rule \u201c{editing.name}\u201d saved.", "ok")
    session.commit()
    return redirect(url_for("pages.rules"))


@bp.post("/rules/<int:rule_id>/toggle")
@login_required
def toggle_rule(rule_id: int) -> ResponseReturnValue:
    check_csrf()
    rule = _rule_or_404(rule_id)
    session = db_session()
    changes = {"enabled": not rule.enabled}
    _allowed(lambda: service.update_rule(session, g.user, rule, changes))
    session.commit()
    state = "on" if rule.enabled else "off"
    flash(f"Rule \u201c{rule.name}\u201d switched {state}.", "ok")
    return redirect(url_for("pages.rules"))


@bp.post("/rules/<int:rule_id>/delete")
@login_required
def delete_rule(rule_id: int) -> ResponseReturnValue:
    check_csrf()
    rule = _rule_or_404(rule_id)
    name = rule.name
    session = db_session()
    _allowed(lambda: service.delete_rule(session, g.user, rule))
    session.commit()
    flash(f"Rule \u201c{name}\u201d deleted.", "ok")
    return redirect(url_for("pages.rules"))
