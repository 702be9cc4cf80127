"""The WSGI application: routing plus the checks every API request goes through."""

from __future__ import annotations

import logging
import socket
import time

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from . import control, oauth, rest
from .errors import api_error, invalid_session, limit_exceeded, server_error
from .state import API_PREFIX, State

logger = logging.getLogger(__name__)
CONTROL_PREFIX = "/__emulator__"
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})


def create_app(state: State) -> Flask:
    """Build the emulator's Flask app around one state."""
    app = Flask(__name__)
    app.extensions["salesforce_emulator"] = state
    app.register_blueprint(oauth.bp)
    app.register_blueprint(rest.bp)
    app.register_blueprint(control.bp)
    app.before_request(_before)
    app.after_request(_after)
    app.register_error_handler(HTTPException, _http_error)
    return app


def _state() -> State:
    from flask import current_app

    state: State = current_app.extensions["salesforce_emulator"]
    return state


def _target() -> str:
    """Return the path and query string that faults are matched against."""
    return request.full_path.rstrip("?")


def _before() -> Response | None:
    """Apply armed delays and outages, then guard API calls."""
    if request.path.startswith(CONTROL_PREFIX):
        return None
    state, target = _state(), _target()
    slow = state.take_fault({"slow"}, target)
    if slow is not None:
        time.sleep(slow.seconds)
    outage = state.take_fault({"server_error"}, target)
    if outage is not None:
        return server_error(outage.status)
    if request.path.startswith(API_PREFIX):
        return _guard_api(state, target)
    return None


def _guard_api(state: State, target: str) -> Response | None:
    """Check the bearer token and the daily allowance, counting the call."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    with state.lock:
        known = scheme.lower() in ("bearer", "oauth")
        grant = state.tokens.grant_of(token.strip()) if known else None
    if grant is None or state.take_fault({"expired_session"}, target):
        return invalid_session()
    g.grant = grant
    g.counted = True
    if state.take_fault({"request_limit"}, target) or not state.count_api_call():
        return limit_exceeded()
    return None


def _after(response: Response) -> Response:
    """Stamp the limit header, cut the connection when armed, and log the call."""
    if request.path.startswith(CONTROL_PREFIX):
        return response
    state = _state()
    if g.get("counted"):
        response.headers["Sforce-Limit-Info"] = state.limit_info()
    status = response.status_code
    armed = request.method in WRITE_METHODS and status < 400
    drop = armed and state.take_fault({"drop_after_commit"}, _target()) is not None
    # Log before cutting, so a client that sees the cut also finds the entry.
    state.log(request.method, request.path, 0 if drop else status)
    if drop:
        _cut_connection()
    return response


def _cut_connection() -> None:
    """Close the client's connection so the committed write gets no response."""
    sock = request.environ.get("werkzeug.socket")
    if sock is None:
        logger.warning("drop_after_commit needs the werkzeug server; response sent")
        return
    # Shutting the socket down makes the server's write fail, so the client
    # sees the connection close with no response although the write happened.
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        logger.debug("socket already closed path=%s", request.path)
    sock.close()


def _http_error(exc: HTTPException) -> Response:
    """Answer routing errors in the API's JSON shape under /services/data."""
    status = exc.code or 500
    if not request.path.startswith("/services/data"):
        return Response(exc.description or "", status=status, content_type="text/plain")
    if status == 405:
        allowed = exc.get_headers()
        methods = dict(allowed).get("Allow", "")
        message = f"HTTP Method '{request.method}' not allowed. Allowed are {methods}"
        return api_error(405, "METHOD_NOT_ALLOWED", message)
    if status == 404:
        return api_error(404, "NOT_FOUND", "The requested resource does not exist")
    return api_error(status, "UNKNOWN_EXCEPTION", exc.description or "")
