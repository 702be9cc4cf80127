"""The API's OpenAPI document, built from the routes and the schemas that validate them.

Every route under /api/v1 is listed, with its summary taken from the view's docstring;
the operations below also name their request and response schemas.
"""

from __future__ import annotations

import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import current_app
from flask.typing import ResponseReturnValue
from marshmallow import Schema

from app.api import bp
from app.api import schemas as s
from app.api.privacy import AddressSchema
from app.api.rules import RepliedSchema, RuleOutSchema
from app.followups.rules import RuleSchema
from app.privacy.settings import (
    DoNotTrackEntrySchema,
    DoNotTrackViewSchema,
    PrivacySettingsSchema,
    PrivacySettingsViewSchema,
)

SCHEMAS: dict[str, type[Schema]] = {
    "MessageCreate": s.MessageCreateSchema,
    "MessageCreated": s.MessageCreatedSchema,
    "Message": s.MessageSchema,
    "MessageDetail": s.MessageDetailSchema,
    "MessagePage": s.MessagePageSchema,
    "EventList": s.EventListSchema,
    "Error": s.ErrorSchema,
    "Rule": RuleSchema,
    "RuleOut": RuleOutSchema,
    "Replied": RepliedSchema,
    "PrivacySettings": PrivacySettingsSchema,
    "PrivacySettingsView": PrivacySettingsViewSchema,
    "DoNotTrackEntry": DoNotTrackEntrySchema,
    "DoNotTrackList": DoNotTrackViewSchema,
    "Address": AddressSchema,
}

# (method, path): (request schema or None, success status, response schema or None)
OPERATIONS: dict[tuple[str, str], tuple[str | None, int, str | None]] = {
    ("post", "/api/v1/messages"): ("MessageCreate", 201, "MessageCreated"),
    ("get", "/api/v1/messages"): (None, 200, "MessagePage"),
    ("get", "/api/v1/messages/{public_id}"): (None, 200, "MessageDetail"),
    ("get", "/api/v1/messages/{public_id}/events"): (None, 200, "EventList"),
    ("post", "/api/v1/messages/{public_id}/replied"): ("Replied", 200, None),
    ("post", "/api/v1/rules"): ("Rule", 201, "RuleOut"),
    ("get", "/api/v1/rules/{rule_id}"): (None, 200, "RuleOut"),
    ("patch", "/api/v1/rules/{rule_id}"): ("Rule", 200, "RuleOut"),
    ("get", "/api/v1/settings/privacy"): (None, 200, "PrivacySettingsView"),
    ("patch", "/api/v1/settings/privacy"): (
        "PrivacySettings",
        200,
        "PrivacySettingsView",
    ),
    ("get", "/api/v1/privacy/do-not-track"): (None, 200, "DoNotTrackList"),
    ("post", "/api/v1/privacy/do-not-track"): ("DoNotTrackEntry", 201, None),
    ("delete", "/api/v1/privacy/do-not-track"): ("DoNotTrackEntry", 200, None),
    ("post", "/api/v1/privacy/erase"): ("Address", 200, None),
}

# (method, path): the schema that reads the operation's query string
QUERIES: dict[tuple[str, str], type[Schema]] = {
    ("get", "/api/v1/messages"): s.PageArgsSchema,
    ("get", "/api/v1/messages/{public_id}/events"): s.EventArgsSchema,
    ("get", "/api/v1/notifications"): s.NotificationArgsSchema,
    ("get", "/api/v1/notifications/stream"): s.StreamArgsSchema,
    ("get", "/api/v1/privacy/export"): AddressSchema,
}

_ERRORS = {
    "400": "The body is not a JSON object",
    "401": "Missing or unknown API token",
    "403": "Not allowed for your role",
    "404": "Not found in your organisation",
    "422": "Invalid fields, with a message for each",
}


def _json(schema: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _path(rule: str) -> tuple[str, list[dict[str, Any]]]:
    """An OpenAPI path and its path parameters, from a Flask rule."""
    params = []
    for converter, name in re.findall(r"<(?:(\w+):)?(\w+)>", rule):
        kind = "integer" if converter == "int" else "string"
        params.append(
            {"name": name, "in": "path", "required": True, "schema": {"type": kind}}
        )
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule), params


def _operation(method: str, path: str, summary: str) -> dict[str, Any]:
    request, status, response = OPERATIONS.get((method, path), (None, 200, None))
    operation: dict[str, Any] = {"summary": summary or path}
    if request:
        operation["requestBody"] = {"required": True, **_json(request)}
    if query := QUERIES.get((method, path)):
        operation["parameters"] = [{"in": "query", "schema": query}]
    success: dict[str, Any] = {"description": "Success"}
    if response:
        success.update(_json(response))
    errors = {
        code: {"description": text, **_json("Error")} for code, text in _ERRORS.items()
    }
    operation["responses"] = {str(status): success, **errors}
    return operation


def build_spec() -> dict[str, Any]:
    """The OpenAPI 3 document of /api/v1."""
    spec = APISpec(
        title="Trailmark API",
        version="1",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={
            "description": "Register tracked messages and read their opens and clicks."
        },
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    for name, schema in SCHEMAS.items():
        spec.components.schema(name, schema=schema)
    paths: dict[str, dict[str, Any]] = {}
    for rule in current_app.url_map.iter_rules():
        if (
            not rule.endpoint.startswith("api.")
            or rule.endpoint == "api.openapi_document"
        ):
            continue
        path, params = _path(rule.rule)
        doc = (current_app.view_functions[rule.endpoint].__doc__ or "").strip()
        entry = paths.setdefault(path, {"parameters": params, "operations": {}})
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            entry["operations"][method.lower()] = _operation(
                method.lower(), path, doc.splitlines()[0] if doc else ""
            )
    for path, entry in sorted(paths.items()):
        spec.path(
            path=path, parameters=entry["parameters"], operations=entry["operations"]
        )
    document = spec.to_dict()
    document["security"] = [{"bearer": []}]
    return document


@bp.get("/openapi.json")
def openapi_document() -> ResponseReturnValue:
    """This document."""
    return build_spec()
