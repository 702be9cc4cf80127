"""Views of the REST API under /services/data; the work is in `operations`."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

from flask import Blueprint, Response, abort, current_app, g, request

from . import operations as ops
from .errors import ApiError, json_response
from .state import State

bp = Blueprint("rest", __name__, url_prefix="/services/data")
_VERSION = re.compile(r"v(\d+\.\d)")


def _state() -> State:
    state: State = current_app.extensions["salesforce_emulator"]
    return state


@bp.url_value_preprocessor
def _take_version(endpoint: str | None, values: dict[str, Any] | None) -> None:
    """Accept any `vNN.N` path segment as the API version."""
    if values is None or "version" not in values:
        return
    match = _VERSION.fullmatch(values.pop("version"))
    if match is None:
        abort(404)
    g.version = match.group(1)


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> Response:
    return json_response(exc.body, exc.status)


def _user_id() -> str:
    return str(g.grant.user_id)


def _body() -> Any:
    """Parse the JSON body, refusing what the API's parser would refuse."""
    raw = request.get_data(as_text=True)
    if not raw.strip():
        raise ApiError(
            400, "JSON_PARSER_ERROR", "No content to map due to end-of-input"
        )
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, "JSON_PARSER_ERROR", f"Unexpected character: {exc.msg}"
        ) from exc


def _object_body() -> dict[str, Any]:
    body = _body()
    if not isinstance(body, dict):
        message = "Cannot deserialize instance of an sObject from START_ARRAY value"
        raise ApiError(400, "JSON_PARSER_ERROR", message)
    return body


def _segments(sobject: str) -> list[str]:
    """Split the path after `sobjects/<Type>/` from the raw URI, so %2F survives."""
    raw = (
        request.environ.get("RAW_URI")
        or request.environ.get("REQUEST_URI")
        or request.path
    )
    tail = raw.split("?", 1)[0].split(f"/sobjects/{sobject}/", 1)[-1]
    return [unquote(part) for part in tail.split("/") if part]


@bp.get("/")
def versions() -> Response:
    """List the supported API versions; needs no session."""
    version = _state().config.api_version
    entry = {
        "label": "Emulated",
        "url": f"/services/data/v{version}",
        "version": version,
    }
    return json_response([entry])


@bp.get("/<version>/", strict_slashes=False)
def resources() -> Response:
    """List the resources of one API version."""
    base = f"/services/data/v{g.version}"
    names = ("sobjects", "query", "queryAll", "limits", "composite")
    return json_response({name: f"{base}/{name}" for name in names})


@bp.get("/<version>/limits", strict_slashes=False)
def limits() -> Response:
    """Report the org's limits."""
    return json_response(ops.limits(_state()))


@bp.get("/<version>/query", strict_slashes=False)
@bp.get("/<version>/queryAll", strict_slashes=False, endpoint="query_all")
def query() -> Response:
    """Run the SOQL query in `q`."""
    text = request.args.get("q")
    if not text:
        raise ApiError(400, "MALFORMED_QUERY", "A query string is required")
    deleted = request.path.rstrip("/").endswith("queryAll")
    body = ops.query(_state(), g.version, text, deleted, _batch_size())
    return json_response(body)


def _batch_size() -> int | None:
    """Read `Sforce-Query-Options: batchSize=N`."""
    options = request.headers.get("Sforce-Query-Options", "")
    match = re.search(r"batchSize=(\d+)", options)
    return int(match.group(1)) if match else None


@bp.get("/<version>/query/<locator>")
@bp.get("/<version>/queryAll/<locator>", endpoint="query_all_more")
def query_more(locator: str) -> Response:
    """Return the next batch of an earlier query."""
    return json_response(ops.query_more(_state(), g.version, locator))


@bp.get("/<version>/sobjects", strict_slashes=False)
def describe_global() -> Response:
    """List the object types the org offers."""
    objects = [{"name": name, "queryable": True} for name in _state().schema]
    return json_response(
        {"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": objects}
    )


@bp.route(
    "/<version>/sobjects/<sobject>", methods=["GET", "POST"], strict_slashes=False
)
def sobject_root(sobject: str) -> Response:
    """Create a record (POST) or show basic object information (GET)."""
    state = _state()
    obj = ops.sobject(state, sobject)
    if request.method == "POST":
        result = ops.create(state, obj.name, _object_body(), _user_id())
        return json_response(result, 201)
    return json_response({"objectDescribe": {"name": obj.name}, "recentItems": []})


@bp.get("/<version>/sobjects/<sobject>/describe", strict_slashes=False)
def describe(sobject: str) -> Response:
    """Describe an object's fields."""
    obj = ops.sobject(_state(), sobject)
    fields = [_describe_field(f) for f in obj.fields.values()]
    return json_response({"name": obj.name, "fields": fields})


def _describe_field(f: Any) -> dict[str, Any]:
    values = [{"value": v, "label": v, "active": True} for v in f.picklist]
    return {
        "name": f.name,
        "type": f.type,
        "label": f.display,
        "length": f.length or 0,
        "createable": f.createable,
        "updateable": f.updateable,
        "nillable": not f.required,
        "externalId": f.external_id,
        "unique": f.unique,
        "referenceTo": list(f.references),
        "relationshipName": f.relationship,
        "restrictedPicklist": f.restricted,
        "picklistValues": values,
    }


@bp.route(
    "/<version>/sobjects/<sobject>/<path:rest>", methods=["GET", "PATCH", "DELETE"]
)
def sobject_row(sobject: str, rest: str) -> Response:
    """Read, update, upsert or delete one record by id or external id."""
    state = _state()
    segments = _segments(sobject)
    if request.method == "GET":
        fields = request.args.get("fields")
        return json_response(ops.read(state, g.version, sobject, segments, fields))
    if request.method == "DELETE":
        ops.delete(state, sobject, segments)
        return Response(status=204)
    if len(segments) == 2:
        return _upsert(state, sobject, segments)
    ops.update(state, sobject, segments, _object_body(), _user_id())
    return Response(status=204)


def _upsert(state: State, sobject: str, segments: list[str]) -> Response:
    update_only = request.args.get("updateOnly", "").lower() == "true"
    status, body = ops.upsert(
        state, g.version, sobject, segments, _object_body(), _user_id(), update_only
    )
    return Response(status=204) if body is None else json_response(body, status)


@bp.route(
    "/<version>/composite/sobjects",
    methods=["POST", "PATCH", "DELETE"],
    strict_slashes=False,
)
def composite_sobjects() -> Response:
    """Create, update or delete up to 200 records in one request."""
    state = _state()
    if request.method == "DELETE":
        all_or_none = request.args.get("allOrNone", "").lower() == "true"
        raw_ids = request.args.get("ids", "")
        return json_response(ops.delete_collection(state, raw_ids, all_or_none))
    results = ops.collection(state, request.method, _body(), _user_id())
    return json_response(results)
