"""The /__emulator__/ surface that drives an emulator running in another process.

NOTE: it has no authentication; the emulator listens on loopback only and
holds test data, so anyone who can reach it may reshape it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, request

from . import operations as ops
from .errors import json_response
from .oauth import token_response
from .state import Fault, State

bp = Blueprint("control", __name__, url_prefix="/__emulator__")


def _state() -> State:
    state: State = current_app.extensions["salesforce_emulator"]
    return state


def _json() -> dict[str, Any]:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def _problem(message: str, status: int = 400) -> Response:
    return json_response({"error": message}, status)


@bp.post("/seed")
def seed() -> Response:
    """Insert one record: {"type": "Contact", "fields": {...}}."""
    body = _json()
    try:
        record_id = seed_record(
            _state(), str(body.get("type")), body.get("fields") or {}
        )
    except ValueError as exc:
        return _problem(str(exc))
    return json_response({"id": record_id}, 201)


def seed_record(state: State, type_name: str, fields: dict[str, Any]) -> str:
    """Insert test data as the admin user, allowing read-only fields."""
    obj = state.schema.get(type_name)
    if obj is None:
        raise ValueError(f"unknown object type {type_name!r}")
    with state.lock:
        return state.org.seed(obj, fields, state.user_id)


@bp.get("/records")
def records() -> Response:
    """List live records of `?type=`."""
    state = _state()
    type_name = request.args.get("type", "")
    with state.lock:
        rows = [
            ops.to_api(state.config.api_version, r)
            for r in state.org.of_type(type_name)
        ]
    return json_response(rows)


@bp.get("/records/<record_id>")
def record(record_id: str) -> Response:
    """Show one record, deleted or not."""
    state = _state()
    with state.lock:
        found = state.org.records.get(record_id)
        row = ops.to_api(state.config.api_version, found) if found else None
    return json_response(row) if row else _problem("no such record", 404)


@bp.route("/faults", methods=["GET", "POST", "DELETE"])
def faults() -> Response:
    """Arm a fault (POST), list armed faults (GET) or disarm all (DELETE)."""
    state = _state()
    if request.method == "POST":
        try:
            state.arm(_fault(_json()))
        except (TypeError, ValueError) as exc:
            return _problem(str(exc))
        return json_response({"armed": True}, 201)
    with state.lock:
        if request.method == "DELETE":
            state.faults.clear()
        listed = [vars(f) for f in state.faults if f.remaining > 0]
    return json_response(listed)


def _fault(body: dict[str, Any]) -> Fault:
    return Fault(
        kind=str(body.get("kind")),
        remaining=int(body.get("times", 1)),
        path_contains=body.get("path_contains"),
        seconds=float(body.get("seconds", 2.0)),
        status=int(body.get("status", 500)),
    )


@bp.post("/reset")
def reset() -> Response:
    """Forget all records, tokens, faults and calls."""
    _state().reset()
    return json_response({"reset": True})


@bp.post("/tokens")
def tokens() -> Response:
    """Issue tokens without the browser step: {"scope": "api refresh_token"}."""
    state = _state()
    scope = tuple(str(_json().get("scope", "api refresh_token")).split())
    with state.lock:
        grant_id = state.tokens.open_grant(state.user_id, scope)
        body = token_response(state, grant_id, True)
    return json_response(body)


@bp.post("/expire-access-tokens")
def expire_access_tokens() -> Response:
    """Invalidate every access token issued so far."""
    state = _state()
    with state.lock:
        state.tokens.expire_access_tokens()
    return json_response({"expired": True})


@bp.get("/calls")
def calls() -> Response:
    """List the calls answered so far."""
    state = _state()
    with state.lock:
        listed = [c._asdict() for c in state.calls]
    return json_response(listed)


@bp.route("/usage", methods=["GET", "PUT"])
def usage() -> Response:
    """Read or set the API calls counted today: {"used": N}."""
    state = _state()
    with state.lock:
        if request.method == "PUT":
            state.api_used = int(_json().get("used", 0))
        body = {"used": state.api_used, "max": state.config.daily_api_limit}
    return json_response(body)
