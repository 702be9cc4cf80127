"""One place that turns failures into answers a person can read."""

from __future__ import annotations

import logging

import redis
from flask import Flask, current_app, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError
from sqlalchemy.exc import OperationalError, ProgrammingError
from werkzeug.exceptions import (
    HTTPException,
    InternalServerError,
    RequestEntityTooLarge,
    ServiceUnavailable,
)

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


def too_large(_error: HTTPException) -> ResponseReturnValue:
    """413, naming the limit (the server's own refusal does not)."""
    limit = int(current_app.config.get("MAX_CONTENT_LENGTH") or 0)
    return http_error(
        RequestEntityTooLarge(
            f"The request body is larger than the limit of {limit // 2**20} MiB."
        )
    )


def queue_unreachable(error: redis.RedisError) -> ResponseReturnValue:
    """503 while Redis does not answer: the request can simply be tried again."""
    logger.warning(
        "redis unreachable method=%s path=%s: %s", request.method, request.path, error
    )
    return http_error(
        ServiceUnavailable("The job queue is not answering; try again in a moment.")
    )


def database_unusable(
    error: OperationalError | ProgrammingError,
) -> ResponseReturnValue:
    """503 while the database is unreachable or has no schema yet; else a 500."""
    no_schema = _no_schema(error)
    if isinstance(error, ProgrammingError) and not no_schema:
        return unexpected_error(error)
    logger.error(
        "database unusable method=%s path=%s: %s",
        request.method,
        request.path,
        str(getattr(error, "orig", error)).splitlines()[0][:300],
    )
    if no_schema:
        message = "The database has no tables yet: run 'flask --app app db upgrade'."
    else:
        message = "The database is not answering; try again in a moment."
    return http_error(ServiceUnavailable(message))


def _no_schema(error: Exception) -> bool:
    text = str(getattr(error, "orig", error)).lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text)


def unexpected_error(error: Exception) -> ResponseReturnValue:
    """Log the traceback once; answer with a generic 500 that leaks nothing."""
    logger.exception("unhandled error method=%s path=%s", request.method, request.path)
    return http_error(InternalServerError("Something went wrong on our side."))


def init_app(app: Flask) -> None:
    app.register_error_handler(ValidationError, validation_error)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(RequestEntityTooLarge, too_large)
    app.register_error_handler(redis.RedisError, queue_unreachable)
    app.register_error_handler(OperationalError, database_unusable)
    app.register_error_handler(ProgrammingError, database_unusable)
    app.register_error_handler(Exception, unexpected_error)
