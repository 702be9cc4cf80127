"""Follow-up rules over the API, and marking a message as replied."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import abort, request
from flask.typing import ResponseReturnValue
from marshmallow import Schema, fields

from app.api import bp
from app.api.messages import json_body, own_message, signed_in
from app.api.schemas import Timestamp
from app.auth import api_auth
from app.boundary import JsonBoolean
from app.extensions import db_session
from app.followups import service
from app.followups.models import FollowUpRule
from app.followups.rules import RuleSchema

# Top-level fields only: a trigger or an action, when given, is given whole.
PATCHABLE = ("name", "enabled", "scope", "trigger", "actions")


class RuleOutSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    enabled = JsonBoolean()
    scope = fields.String()
    trigger = fields.Dict()
    actions = fields.List(fields.Dict())
    armed_at = fields.DateTime()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class RepliedSchema(Schema):
    replied_at = Timestamp(load_default=None)


def _rule(rule_id: int) -> FollowUpRule:
    try:
        return service.get_rule(db_session(), signed_in(), rule_id)
    except service.NotFound:
        abort(404, "There is no rule with this id.")


def _out(rule: FollowUpRule) -> dict[str, Any]:
    return dict(RuleOutSchema().dump(service.rule_view(rule)))


def _allowed(work: Any) -> Any:
    try:
        return work()
    except service.NotAllowed as exc:
        abort(403, str(exc))


@bp.get("/rules")
@api_auth
def list_rules() -> ResponseReturnValue:
    """The organisation's rules and the caller's own."""
    rules = service.visible_rules(db_session(), signed_in())
    return {"rules": [_out(rule) for rule in rules]}


@bp.post("/rules")
@api_auth
def create_rule() -> ResponseReturnValue:
    """Add an organisation rule (admins) or a personal rule."""
    data = RuleSchema().load(json_body())
    session = db_session()
    rule = _allowed(lambda: service.create_rule(session, signed_in(), data))
    session.commit()
    return _out(rule), 201


@bp.get("/rules/<int:rule_id>")
@api_auth
def get_rule(rule_id: int) -> ResponseReturnValue:
    """One rule the caller can see."""
    return _out(_rule(rule_id))


@bp.patch("/rules/<int:rule_id>")
@api_auth
def update_rule(rule_id: int) -> ResponseReturnValue:
    """Change a rule; fields left out stay as they are."""
    rule = _rule(rule_id)
    data = RuleSchema(partial=PATCHABLE).load(json_body())
    session = db_session()
    _allowed(lambda: service.update_rule(session, signed_in(), rule, data))
    session.commit()
    return _out(rule)


@bp.delete("/rules/<int:rule_id>")
@api_auth
def delete_rule(rule_id: int) -> ResponseReturnValue:
    """Delete a rule and what it still had pending."""
    rule = _rule(rule_id)
    session = db_session()
    _allowed(lambda: service.delete_rule(session, signed_in(), rule))
    session.commit()
    return "", 204


@bp.post("/messages/<public_id>/replied")
@api_auth
def message_replied(public_id: str) -> ResponseReturnValue:
    """The prospect replied: no more follow-ups for this message."""
    body = request.get_json(silent=True) if request.data else {}
    data = RepliedSchema().load(body if isinstance(body, dict) else json_body())
    message = own_message(public_id)
    session = db_session()
    at = data["replied_at"] or datetime.now(UTC)
    cancelled = service.mark_replied(session, message, at)
    session.commit()
    return {
        "id": message.public_id,
        "replied_at": message.replied_at.isoformat() if message.replied_at else None,
        "cancelled": cancelled,
    }
