"""Reading and changing rules on behalf of a person: who may see and do what.

Admins set organisation rules; every rep keeps personal rules on top. A rep sees the
organisation's rules and their own; nobody sees another rep's personal rules.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from app.followups.models import FollowUpAction, FollowUpFiring, FollowUpRule
from app.models import Message, User


class NotAllowed(Exception):
    """The person may see the rule but not change it this way."""


class NotFound(Exception):
    """No rule with this id that the person may see."""


def visible_rules(session: Session, user: User) -> list[FollowUpRule]:
    """Organisation rules first, then the person's own, oldest first."""
    rules = session.scalars(
        select(FollowUpRule)
        .where(
            FollowUpRule.org_id == user.org_id,
            or_(FollowUpRule.user_id.is_(None), FollowUpRule.user_id == user.id),
        )
        .order_by(FollowUpRule.user_id.is_not(None), FollowUpRule.id)
    )
    return list(rules)


def get_rule(session: Session, user: User, rule_id: int) -> FollowUpRule:
    rule = session.get(FollowUpRule, rule_id)
    if rule is None or rule.org_id != user.org_id:
        raise NotFound
    if rule.user_id is not None and rule.user_id != user.id:
        raise NotFound
    return rule


def _check_scope(user: User, scope: str) -> None:
    if scope == "org" and not user.is_admin:
        raise NotAllowed(
            "Only an administrator can set rules for the whole organisation; "
            "make it a personal rule instead."
        )


def _check_can_change(user: User, rule: FollowUpRule) -> None:
    _check_scope(user, scope_of(rule))


def scope_of(rule: FollowUpRule) -> str:
    return "org" if rule.user_id is None else "personal"


def create_rule(session: Session, user: User, data: dict[str, Any]) -> FollowUpRule:
    """A new rule from validated data (``RuleSchema``)."""
    _check_scope(user, data["scope"])
    now = datetime.now(UTC)
    rule = FollowUpRule(
        org_id=user.org_id,
        user_id=None if data["scope"] == "org" else user.id,
        name=data["name"],
        enabled=data["enabled"],
        trigger=data["trigger"],
        actions=data["actions"],
        armed_at=now,
        created_by_user_id=user.id,
        created_at=now,
        updated_at=now,
    )
    session.add(rule)
    session.flush()
    return rule


def update_rule(
    session: Session, user: User, rule: FollowUpRule, data: dict[str, Any]
) -> FollowUpRule:
    """Apply validated, possibly partial, changes.

    A new trigger, or switching the rule back on, re-arms it: only signals from now
    on fire it. Messages it already fired for stay fired (see ``FollowUpFiring``).
    """
    _check_can_change(user, rule)
    if "scope" in data and data["scope"] != scope_of(rule):
        _check_scope(user, data["scope"])
        rule.user_id = None if data["scope"] == "org" else user.id
    now = datetime.now(UTC)
    if "trigger" in data and data["trigger"] != rule.trigger:
        rule.trigger = data["trigger"]
        rule.armed_at = now
    if "enabled" in data and data["enabled"] and not rule.enabled:
        rule.armed_at = now
    for key in ("name", "enabled", "actions"):
        if key in data:
            setattr(rule, key, data[key])
    rule.updated_at = now
    session.flush()
    return rule


def delete_rule(session: Session, user: User, rule: FollowUpRule) -> None:
    """Delete a rule; what it still owes (pending reminders and tasks) goes with it."""
    _check_can_change(user, rule)
    session.delete(rule)
    session.flush()


def rule_view(rule: FollowUpRule) -> dict[str, Any]:
    """A rule in the shape the API documents."""
    return {
        "id": rule.id,
        "name": rule.name,
        "enabled": rule.enabled,
        "scope": scope_of(rule),
        "trigger": rule.trigger,
        "actions": rule.actions,
        "armed_at": rule.armed_at,
        "created_at": rule.created_at,
        "updated_at": rule.updated_at,
    }


def mark_replied(session: Session, message: Message, at: datetime) -> int:
    """Record a reply and cancel what is still pending; return how many were cancelled.

    The first reply counts; a later call keeps the earlier time.
    """
    if message.replied_at is None:
        message.replied_at = at
    firings = select(FollowUpFiring.id).where(FollowUpFiring.message_id == message.id)
    result = session.execute(
        update(FollowUpAction)
        .where(FollowUpAction.firing_id.in_(firings), FollowUpAction.state == "pending")
        .values(state="cancelled", done_at=at, last_error="The prospect replied.")
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return int(getattr(result, "rowcount", 0) or 0)
