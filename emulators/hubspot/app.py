"""The emulator's Flask app: auth, rate limits and faults around every view."""

import logging
import socket
import time

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from . import control, crm, errors, oauth
from .context import portal
from .errors import ApiError
from .portal import Portal

logger = logging.getLogger(__name__)

CONTROL_PREFIX = "/__emulator__"


def create_app(portal: Portal) -> Flask:
    """Build the app serving HubSpot's app pages, its API and the controls."""
    app = Flask(__name__)
    app.extensions["hubspot_portal"] = portal
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.url_map.strict_slashes = False
    app.register_blueprint(oauth.bp)
    app.register_blueprint(crm.bp)
    app.register_blueprint(control.bp, url_prefix=CONTROL_PREFIX)
    app.before_request(_guard)
    app.after_request(_finish)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    return app


def _guard() -> None:
    """Apply, in HubSpot's order, latency, auth, rate limit and injected faults."""
    g.portal_id = None
    g.drop = False
    path = request.path
    if path.startswith(CONTROL_PREFIX):
        return
    p = portal()
    slow = p.faults.take("slow", path)
    if slow is not None:
        time.sleep(float(slow.options.get("seconds", 1.0)))
    if path.startswith("/crm/"):
        _authenticate(p, path)
        _rate_limit(p, path)
    failure = p.faults.take("server_error", path)
    if failure is not None:
        raise _server_error(int(failure.options.get("status", 500)))
    g.drop = p.faults.take("drop_after_commit", path) is not None


def _authenticate(p: Portal, path: str) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise errors.invalid_authentication()
    g.token = p.tokens.lookup(token.strip())
    if p.faults.take("expired_token", path) is not None:
        raise errors.expired_authentication(0)
    g.portal_id = g.token.grant.hub_id


def _rate_limit(p: Portal, path: str) -> None:
    forced = p.faults.take("rate_limit", path)
    admitted, remaining = (False, 0) if forced else p.limiter.admit(g.portal_id)
    g.remaining = remaining
    if not admitted:
        policy = forced.options.get("policy") if forced else None
        raise errors.rate_limited(policy or "TEN_SECONDLY_ROLLING")


def _server_error(status: int) -> ApiError:
    if status == 502:
        body = {"status": "error", "message": "Bad Gateway"}
        body["correlationId"] = errors.correlation_id()
        return ApiError(502, body)
    return errors.crm_error(status, "INTERNAL_ERROR", "internal error")


def _finish(response: Response) -> Response:
    """Add rate-limit headers, log the request, and drop it if told to."""
    p = portal()
    if getattr(g, "remaining", None) is not None:
        response.headers.update(p.limiter.headers(g.remaining))
    if request.path.startswith(CONTROL_PREFIX):
        return response
    drop = bool(g.get("drop")) and response.status_code < 400
    status = 0 if drop else response.status_code
    # Log first: once the socket closes, the client may look at the log at once.
    p.log.add(request.method, request.path, status, g.get("portal_id"))
    if drop:
        _drop_connection()
    return response


def _drop_connection() -> None:
    """Close the client's socket after the write, so no answer reaches it."""
    sock = request.environ.get("werkzeug.socket")
    if sock is None:
        logger.warning("drop_after_commit requested but no socket to close")
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        logger.debug("socket already closed before drop")


def _api_error(exc: ApiError) -> tuple[Response, int]:
    return jsonify(exc.body), exc.status


def _http_error(exc: HTTPException) -> tuple[Response, int]:
    status = exc.code or 500
    category = {404: "OBJECT_NOT_FOUND", 405: "VALIDATION_ERROR"}.get(status)
    if category is None:
        category = "INTERNAL_ERROR" if status >= 500 else "VALIDATION_ERROR"
    # The description is werkzeug's generic text, never an exception message.
    body = errors.crm_error(status, category, exc.description or "").body
    return jsonify(body), status
