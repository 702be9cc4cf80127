"""What a rule may say, validated the same way for the API and the settings page."""

from __future__ import annotations

import string
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

from app.boundary import JsonBoolean, WholeNumber

TRIGGERS = {
    "first_open": "First counted open",
    "nth_open": "Nth counted open",
    "click": "Counted click",
    "no_open": "No counted open within D business days",
}
ACTIONS = {"reminder": "In-app reminder", "crm_task": "CRM follow-up task"}
PRIORITIES = ("low", "normal", "high")
PLACEHOLDERS = ("subject", "recipient", "signal")
MAX_ACTIONS = 5

DEFAULT_TASK_SUBJECT = "Follow up: {subject}"
DEFAULT_TASK_BODY = "{recipient}: {signal}."
DEFAULT_REMINDER = "Follow up with {recipient} on \u201c{subject}\u201d: {signal}."


def check_template(text: str) -> None:
    """Refuse a template with unknown placeholders or unbalanced braces."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValidationError(
            "Braces must come in pairs around a placeholder; write {{ or }} for a "
            "literal brace."
        ) from exc
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            allowed = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise ValidationError(f"Unknown placeholder {{{name}}}; use {allowed}.")


def render(template: str, values: dict[str, str]) -> str:
    """A template with its placeholders filled in (the values are taken literally)."""
    return template.format_map({key: values.get(key, "") for key in PLACEHOLDERS})


class Template(fields.String):
    """A text with {subject}, {recipient} and {signal} placeholders."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = str(super()._deserialize(value, attr, data, **kwargs)).strip()
        check_template(text)
        return text


class TriggerSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    type = fields.String(
        required=True,
        validate=validate.OneOf(
            list(TRIGGERS), error="Choose one of: " + ", ".join(TRIGGERS) + "."
        ),
    )
    count = WholeNumber(
        load_default=None,
        validate=validate.Range(min=2, max=50, error="Give a number from 2 to 50."),
    )
    distinct_days = JsonBoolean(load_default=False)
    url_pattern = fields.String(
        load_default=None, validate=validate.Length(max=500, error="At most 500.")
    )
    days = WholeNumber(
        load_default=None,
        validate=validate.Range(min=1, max=30, error="Give a number from 1 to 30."),
    )

    @validates_schema
    def _needs_its_fields(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if data["type"] == "nth_open" and data.get("count") is None:
            raise ValidationError("Say which open fires the rule (2 or more).", "count")
        if data["type"] == "no_open" and data.get("days") is None:
            raise ValidationError("Say how many business days to wait.", "days")

    @post_load
    def _only_what_applies(
        self, data: dict[str, Any], **_kwargs: Any
    ) -> dict[str, Any]:
        kind = data["type"]
        kept: dict[str, Any] = {"type": kind}
        if kind == "nth_open":
            kept.update(count=data["count"], distinct_days=data["distinct_days"])
        elif kind == "click":
            pattern = (data.get("url_pattern") or "").strip()
            kept["url_pattern"] = pattern or None
        elif kind == "no_open":
            kept["days"] = data["days"]
        return kept


class ActionSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    type = fields.String(
        required=True,
        validate=validate.OneOf(
            list(ACTIONS), error="Choose one of: " + ", ".join(ACTIONS) + "."
        ),
    )
    subject = Template(
        load_default=DEFAULT_TASK_SUBJECT,
        validate=validate.Length(min=1, max=255, error="Between 1 and 255 characters."),
    )
    body = Template(load_default=None, validate=validate.Length(max=2000))
    due_days = WholeNumber(
        load_default=1,
        validate=validate.Range(min=0, max=60, error="Give a number from 0 to 60."),
    )
    priority = fields.String(
        load_default="normal",
        validate=validate.OneOf(PRIORITIES, error="Choose low, normal or high."),
    )

    @post_load
    def _only_what_applies(
        self, data: dict[str, Any], **_kwargs: Any
    ) -> dict[str, Any]:
        if data["type"] == "reminder":
            return {"type": "reminder", "body": data.get("body") or DEFAULT_REMINDER}
        return {
            "type": "crm_task",
            "subject": data["subject"],
            "body": data.get("body") or DEFAULT_TASK_BODY,
            "due_days": data["due_days"],
            "priority": data["priority"],
        }


class RuleSchema(Schema):
    """A rule as a person writes it; PATCH leaves out what it does not change."""

    class Meta:
        unknown = EXCLUDE

    name = fields.String(
        required=True,
        validate=validate.Length(min=1, max=200, error="Between 1 and 200 characters."),
    )
    enabled = JsonBoolean(load_default=True)
    scope = fields.String(
        load_default="personal",
        validate=validate.OneOf(
            ("personal", "org"), error="Choose 'personal' or 'org'."
        ),
    )
    trigger = fields.Nested(TriggerSchema, required=True)
    actions = fields.List(
        fields.Nested(ActionSchema),
        required=True,
        validate=validate.Length(
            min=1, max=MAX_ACTIONS, error="Give between {min} and {max} actions."
        ),
    )

    @post_load
    def _tidy(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        if "name" in data:
            data["name"] = data["name"].strip()
            if not data["name"]:
                raise ValidationError("Give the rule a name.", "name")
        return data


def describe_trigger(trigger: dict[str, Any]) -> str:
    """The trigger in a sentence, for lists and previews."""
    kind = trigger.get("type")
    if kind == "first_open":
        return "the first counted open"
    if kind == "nth_open":
        days = " on different days" if trigger.get("distinct_days") else ""
        return f"counted open number {trigger.get('count')}{days}"
    if kind == "click":
        pattern = trigger.get("url_pattern")
        return (
            f"a counted click on a link matching {pattern}"
            if pattern
            else ("a counted click on any link")
        )
    return f"no counted open within {trigger.get('days')} business days of sending"


def describe_action(action: dict[str, Any]) -> str:
    if action.get("type") == "reminder":
        return "remind me in the app"
    days = action.get("due_days", 1)
    return (
        f"CRM task \u201c{action.get('subject')}\u201d, {action.get('priority')} "
        f"priority, due in {days} business day{'s' if days != 1 else ''}"
    )
