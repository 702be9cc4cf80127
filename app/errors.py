"""One place that turns failures into answers a person can read."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException, InternalServerError

logger = logging.getLogger(__name__)


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def validation_error(error: ValidationError) -> ResponseReturnValue:
    """422 with the reason for each field."""
    fields = (
        error.messages if isinstance(error.messages, dict) else {"_": error.messages}
    )
    body = {
        "error": "validation_failed",
        "message": "Some fields are missing or invalid; see 'fields'.",
        "fields": fields,
    }
    return jsonify(body), 422


def http_error(error: HTTPException) -> ResponseReturnValue:
    """An HTTP error passes through with its own message."""
    code = error.code or 500
    if _wants_json():
        body = {"error": (error.name or "error").lower().replace(" ", "_")}
        body["message"] = error.description or error.name
        response = jsonify(body)
        response.status_code = code
        for key, value in error.get_headers() if error.response is None else []:
            if key.lower() == "www-authenticate":
                response.headers[key] = value
        return response
    return render_template("error.html", error=error), code


def unexpected_error(error: Exception) -> ResponseReturnValue:
    """Log the traceback once; answer with a generic 500 that leaks nothing."""
    logger.exception("unhandled error method=%s path=%s", request.method, request.path)
    return http_error(InternalServerError("Something went wrong on our side."))


def init_app(app: Flask) -> None:
    app.register_error_handler(ValidationError, validation_error)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, unexpected_error)
