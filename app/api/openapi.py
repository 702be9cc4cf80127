"""The API's OpenAPI document, built from the same schemas that validate requests."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask.typing import ResponseReturnValue

from app.api import bp
from app.api import schemas as s


def _json(schema: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    reasons = {
        400: "The body is not a JSON object",
        401: "Missing or unknown API token",
        404: "No such message in your organisation",
        422: "Invalid fields, with a message for each",
    }
    return {
        str(code): {"description": reasons[code], **_json("Error")} for code in codes
    }


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
    for name, schema in {
        "MessageCreate": s.MessageCreateSchema,
        "MessageCreated": s.MessageCreatedSchema,
        "Message": s.MessageSchema,
        "MessagePage": s.MessagePageSchema,
        "EventList": s.EventListSchema,
        "Error": s.ErrorSchema,
    }.items():
        spec.components.schema(name, schema=schema)
    message_id = {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    spec.path(
        path="/api/v1/messages",
        operations={
            "post": {
                "summary": "Register a message and get its tracked HTML and text",
                "requestBody": {"required": True, **_json("MessageCreate")},
                "responses": {
                    "201": {"description": "Registered", **_json("MessageCreated")},
                    **_errors(400, 401, 422),
                },
            },
            "get": {
                "summary": "Your messages, newest first",
                "parameters": [
                    {"name": "page", "in": "query", "schema": {"type": "integer"}},
                    {"name": "per_page", "in": "query", "schema": {"type": "integer"}},
                ],
                "responses": {
                    "200": {"description": "A page", **_json("MessagePage")},
                    **_errors(401, 422),
                },
            },
        },
    )
    spec.path(
        path="/api/v1/messages/{id}",
        parameters=[message_id],
        operations={
            "get": {
                "summary": "One message with its counts",
                "responses": {
                    "200": {"description": "The message", **_json("Message")},
                    **_errors(401, 404),
                },
            }
        },
    )
    spec.path(
        path="/api/v1/messages/{id}/events",
        parameters=[message_id],
        operations={
            "get": {
                "summary": "Every open and click, graded, oldest first",
                "responses": {
                    "200": {"description": "Events", **_json("EventList")},
                    **_errors(401, 404),
                },
            }
        },
    )
    document = spec.to_dict()
    document["security"] = [{"bearer": []}]
    return document


@bp.get("/openapi.json")
def openapi_document() -> ResponseReturnValue:
    return build_spec()
