"""Test and demo controls under /__emulator__/: seed, inspect, faults, reset."""

from typing import Any

from flask import Blueprint, request

from . import errors
from .context import portal
from .portal import seed_from
from .schema import DEFAULT_SCOPES, OBJECT_TYPES

bp = Blueprint("control", __name__)


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


@bp.post("/seed")
def seed() -> Any:
    """Seed owners, contacts and deals; return their ids."""
    try:
        return seed_from(portal(), _body()), 201
    except TypeError as exc:
        raise errors.validation(f"Bad seed document: {exc}") from exc


@bp.get("/objects/<type_name>")
def objects(type_name: str) -> Any:
    """Return every record of a type with its associations."""
    if type_name not in OBJECT_TYPES:
        raise errors.validation(f"Unknown object type {type_name}")
    return {"results": portal().store.snapshot(type_name)}


@bp.get("/associations/<from_type>/<from_id>")
def associations(from_type: str, from_id: str) -> Any:
    """Return one object's associations as [to type, to id, type id]."""
    links = portal().store.links_from(from_type, from_id)
    return {"results": [list(link) for link in links]}


@bp.post("/faults")
def add_fault() -> Any:
    """Arm a fault: {"kind", "times", "path_contains", ...options}."""
    body = _body()
    kind = body.pop("kind", "")
    times = int(body.pop("times", 1))
    path_contains = body.pop("path_contains", None)
    try:
        portal().faults.add(kind, times, path_contains, body)
    except ValueError as exc:
        raise errors.validation(str(exc)) from exc
    return {"armed": kind, "times": times}, 201


@bp.delete("/faults")
def clear_faults() -> Any:
    """Disarm every fault."""
    portal().faults.clear()
    return {"cleared": True}


@bp.post("/tokens")
def issue_token() -> Any:
    """Issue tokens directly, skipping the consent page: {"scopes": [...]}."""
    p = portal()
    scopes = _body().get("scopes") or sorted(DEFAULT_SCOPES)
    return p.tokens.issue_direct(p.grant(scopes)), 201


@bp.post("/expire-tokens")
def expire_tokens() -> Any:
    """Make every issued access token expired."""
    portal().tokens.expire_all()
    return {"expired": True}


@bp.get("/requests")
def requests_log() -> Any:
    """Return the request log as [monotonic time, method, path, status, portal]."""
    return {"results": [list(entry) for entry in portal().log.copy()]}


@bp.post("/reset")
def reset() -> Any:
    """Empty the portal: records, tokens, faults, rate windows and the log."""
    portal().reset()
    return {"reset": True}
