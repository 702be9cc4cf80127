"""Response bodies in the shapes the Salesforce REST API uses."""

from __future__ import annotations

import json
from typing import Any

from flask import Response

JSON_TYPE = "application/json;charset=UTF-8"


class ApiError(Exception):
    """A REST refusal: HTTP status, errorCode and message (and fields if any)."""

    def __init__(
        self, status: int, code: str, message: str, fields: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: list[dict[str, Any]] = [{"message": message, "errorCode": code}]
        if fields is not None:
            self.body[0]["fields"] = fields

    @classmethod
    def from_save(cls, status: int, errors: list[dict[str, Any]]) -> ApiError:
        """Turn save-result errors into a REST error list."""
        first = errors[0]
        exc = cls(status, first["statusCode"], first["message"], first["fields"])
        exc.body = [
            {
                "message": e["message"],
                "errorCode": e["statusCode"],
                "fields": e["fields"],
            }
            for e in errors
        ]
        return exc


def json_response(body: Any, status: int = 200) -> Response:
    """Serialise a body without reordering keys, as the API keeps `attributes` first."""
    return Response(json.dumps(body), status=status, content_type=JSON_TYPE)


def api_error(status: int, code: str, message: str) -> Response:
    """Build an error response with one error."""
    return json_response([{"message": message, "errorCode": code}], status)


def invalid_session() -> Response:
    """Answer a missing, expired or revoked bearer token."""
    return api_error(401, "INVALID_SESSION_ID", "Session expired or invalid")


def limit_exceeded() -> Response:
    """Answer once the org's daily API allowance is spent."""
    return api_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")


def server_error(status: int) -> Response:
    """Answer with an outage of the given status."""
    if status == 503:
        return api_error(503, "SERVER_UNAVAILABLE", "Server unavailable")
    message = (
        "An unexpected error occurred. Please include this ErrorId if you"
        " contact support: 1840183942-93710 (-1102749816)"
    )
    return api_error(status, "UNKNOWN_EXCEPTION", message)


def oauth_error(code: str, description: str, status: int = 400) -> Response:
    """Build an OAuth endpoint refusal."""
    return json_response({"error": code, "error_description": description}, status)
