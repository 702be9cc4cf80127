"""REST resources as plain functions over the state; views only translate HTTP."""

from __future__ import annotations

from typing import Any

from . import ids, soql
from .errors import ApiError
from .records import Record, SaveError, error
from .schema import SObject, find_object
from .state import State

MAX_BATCH = 2000
MIN_BATCH = 200
COLLECTION_LIMIT = 200
ROLLED_BACK = error(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was"
    " using AllOrNone header",
)
NOT_FOUND = "The requested resource does not exist"


def record_url(version: str, record: Record) -> str:
    """Return the relative URL of a record under an API version."""
    kind = record["attributes"]["type"]
    return f"/services/data/v{version}/sobjects/{kind}/{record['Id']}"


def to_api(version: str, record: Record, fields: list[str] | None = None) -> Record:
    """Copy a stored record into its API shape."""
    attributes = {
        "type": record["attributes"]["type"],
        "url": record_url(version, record),
    }
    names = fields if fields is not None else [k for k in record if k != "attributes"]
    return {"attributes": attributes, **{name: record.get(name) for name in names}}


def sobject(state: State, name: str) -> SObject:
    """Find an object type or answer 404 as the API does for unknown types."""
    found = find_object(state.schema, name)
    if found is None:
        raise ApiError(404, "NOT_FOUND", NOT_FOUND)
    return found


def query(
    state: State, version: str, text: str, include_deleted: bool, batch: int | None
) -> dict[str, Any]:
    """Run a SOQL query and return its first batch."""
    try:
        parsed = soql.parse(text)
        with state.lock:
            rows = _run(state, version, parsed, include_deleted)
    except soql.SoqlError as exc:
        raise ApiError(400, exc.code, exc.render(text)) from exc
    if parsed.count:
        return {"totalSize": len(rows), "done": True, "records": []}
    size = min(max(batch or MAX_BATCH, MIN_BATCH), MAX_BATCH)
    return _page(state, version, rows, size, 0, None)


def _run(
    state: State, version: str, parsed: soql.Query, include_deleted: bool
) -> list[Record]:
    """Execute a parsed query under the lock and shape the rows."""
    name = soql.object_name(state.schema, parsed)
    candidates = state.org.of_type(name, include_deleted)
    rows = soql.execute(state.schema, parsed, candidates, state.org.live)
    runner = soql.Runner(state.schema, state.org.live)
    return [
        runner.shape(r, parsed.fields, lambda r: record_url(version, r)) for r in rows
    ]


def query_more(state: State, version: str, locator: str) -> dict[str, Any]:
    """Return a later batch of a query whose results did not fit in one."""
    cursor, _, offset = locator.partition("-")
    with state.lock:
        saved = state.cursors.get(cursor)
    if saved is None or not offset.isdigit():
        raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
    rows, size = saved
    return _page(state, version, rows, size, int(offset), cursor)


def _page(
    state: State,
    version: str,
    rows: list[Record],
    size: int,
    offset: int,
    cursor: str | None,
) -> dict[str, Any]:
    """Cut one batch out of the rows, leaving a locator when more remain."""
    body: dict[str, Any] = {"totalSize": len(rows), "done": True}
    end = offset + size
    if end < len(rows):
        with state.lock:
            cursor = cursor or ids.make_id(
                "QueryLocator", state.pod, len(state.cursors) + 1
            )
            state.cursors[cursor] = (rows, size)
        body["done"] = False
        body["nextRecordsUrl"] = f"/services/data/v{version}/query/{cursor}-{end}"
    body["records"] = rows[offset:end]
    return body


def create(
    state: State, type_name: str, values: dict[str, Any], user_id: str
) -> dict[str, Any]:
    """Create one record and return the save result."""
    obj = sobject(state, type_name)
    if any(k.lower() == "id" for k in values):
        raise ApiError(
            400, "INVALID_FIELD", "cannot specify Id in an insert call", ["Id"]
        )
    with state.lock:
        try:
            record_id = state.org.create(obj, values, user_id)
        except SaveError as exc:
            raise ApiError.from_save(400, exc.errors) from exc
    return {"id": record_id, "success": True, "errors": []}


def locate(state: State, obj: SObject, segments: list[str]) -> list[Record]:
    """Resolve `<id>` or `<ExternalIdField>/<value>` to the live records it names."""
    if len(segments) == 2:
        found = obj.field(segments[0])
        if found is None or not found.external_id:
            raise ApiError(404, "NOT_FOUND", _no_external_id(segments[0]))
        return state.org.find_by(obj.name, found.name, segments[1])
    record_id = ids.normalise(segments[0]) if len(segments) == 1 else None
    if record_id is None or ids.type_of(record_id) != obj.name:
        raise ApiError(404, "NOT_FOUND", _no_external_id("/".join(segments)))
    record = state.org.records.get(record_id)
    if record is None:
        raise ApiError(404, "NOT_FOUND", NOT_FOUND)
    if record["IsDeleted"]:
        raise ApiError(404, "ENTITY_IS_DELETED", "entity is deleted")
    return [record]


def _no_external_id(name: str) -> str:
    return f"Provided external ID field does not exist or is not accessible: {name}"


def _one(version: str, matches: list[Record]) -> Record:
    """Insist on exactly one match, answering 404 or 300 as the API does."""
    if not matches:
        raise ApiError(404, "NOT_FOUND", NOT_FOUND)
    if len(matches) > 1:
        exc = ApiError(300, "MULTIPLE_CHOICES", "more than one record matches")
        exc.body = [record_url(version, r) for r in matches]  # type: ignore[misc]
        raise exc
    return matches[0]


def read(
    state: State, version: str, type_name: str, segments: list[str], fields: str | None
) -> Record:
    """Return one record, optionally limited to a comma-separated field list."""
    obj = sobject(state, type_name)
    with state.lock:
        record = _one(version, locate(state, obj, segments))
        names = _field_names(obj, fields)
        return to_api(version, record, names)


def _field_names(obj: SObject, fields: str | None) -> list[str] | None:
    """Canonicalise a `fields` parameter, refusing unknown names."""
    if not fields:
        return None
    names = []
    for raw in (f.strip() for f in fields.split(",")):
        found = obj.field(raw)
        if found is None:
            message = f"No such column '{raw}' on entity '{obj.name}'"
            raise ApiError(400, "INVALID_FIELD", message)
        names.append(found.name)
    return names


def update(
    state: State,
    type_name: str,
    segments: list[str],
    values: dict[str, Any],
    user_id: str,
) -> None:
    """Apply a PATCH to one record addressed by id."""
    obj = sobject(state, type_name)
    with state.lock:
        record = _one("", locate(state, obj, segments))
        try:
            state.org.update(obj, record, values, user_id)
        except SaveError as exc:
            raise ApiError.from_save(400, exc.errors) from exc


def upsert(
    state: State,
    version: str,
    type_name: str,
    segments: list[str],
    values: dict[str, Any],
    user_id: str,
    update_only: bool,
) -> tuple[int, dict[str, Any] | None]:
    """Create or update by external id; return the status and body to send."""
    obj = sobject(state, type_name)
    with state.lock:
        matches = locate(state, obj, segments)
        if not matches and update_only:
            raise ApiError(404, "NOT_FOUND", NOT_FOUND)
        if not matches:
            field = obj.fields[obj.field(segments[0]).name]  # type: ignore[union-attr]
            result = create(
                state, type_name, {**values, field.name: segments[1]}, user_id
            )
            return 201, {**result, "created": True}
        record = _one(version, matches)
        try:
            state.org.update(obj, record, values, user_id)
        except SaveError as exc:
            raise ApiError.from_save(400, exc.errors) from exc
    if float(version) < 46:
        return 204, None
    return 200, {"id": record["Id"], "success": True, "errors": [], "created": False}


def delete(state: State, type_name: str, segments: list[str]) -> None:
    """Delete one record addressed by id or external id."""
    obj = sobject(state, type_name)
    with state.lock:
        state.org.delete(_one("", locate(state, obj, segments)))


def limits(state: State) -> dict[str, Any]:
    """Describe the org's limits, of which only the API allowance moves."""
    cap = state.config.daily_api_limit
    with state.lock:
        used = state.api_used
    return {
        "DailyApiRequests": {"Max": cap, "Remaining": max(cap - used, 0)},
        "DailyAsyncApexExecutions": {"Max": 250000, "Remaining": 250000},
        "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
        "DataStorageMB": {"Max": 5, "Remaining": 5},
        "FileStorageMB": {"Max": 20, "Remaining": 20},
        "SingleEmail": {"Max": 15, "Remaining": 15},
    }


def collection(
    state: State, method: str, body: Any, user_id: str
) -> list[dict[str, Any]]:
    """Create (POST) or update (PATCH) up to 200 records in one request."""
    records, all_or_none = _collection_body(body)
    with state.lock:
        saved = state.org.snapshot()
        results = [_save_one(state, method, r, user_id) for r in records]
        if all_or_none and not all(r["success"] for r in results):
            state.org.restore(saved)
            results = [r if not r["success"] else _rolled_back() for r in results]
    return results


def delete_collection(
    state: State, raw_ids: str, all_or_none: bool
) -> list[dict[str, Any]]:
    """Delete up to 200 records named in the `ids` parameter."""
    targets = [i for i in raw_ids.split(",") if i]
    _check_size(targets)
    with state.lock:
        saved = state.org.snapshot()
        results = [_delete_one(state, record_id) for record_id in targets]
        if all_or_none and not all(r["success"] for r in results):
            state.org.restore(saved)
            results = [r if not r["success"] else _rolled_back() for r in results]
    return results


def _collection_body(body: Any) -> tuple[list[Any], bool]:
    """Pull `records` and `allOrNone` out of a collection request."""
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        message = "Cannot deserialize instance of the request: records is required"
        raise ApiError(400, "JSON_PARSER_ERROR", message)
    _check_size(body["records"])
    return body["records"], bool(body.get("allOrNone", False))


def _check_size(items: list[Any]) -> None:
    if len(items) > COLLECTION_LIMIT:
        message = (
            "record limit reached. cannot submit more than 200 records into this call"
        )
        raise ApiError(400, "EXCEEDED_ID_LIMIT", message)


def _save_one(state: State, method: str, item: Any, user_id: str) -> dict[str, Any]:
    """Create or update one collection record, catching its errors into a result."""
    try:
        return _save_or_raise(state, method, item, user_id)
    except SaveError as exc:
        return {"success": False, "errors": exc.errors}


def _save_or_raise(
    state: State, method: str, item: Any, user_id: str
) -> dict[str, Any]:
    attributes = item.get("attributes") if isinstance(item, dict) else None
    type_name = attributes.get("type") if isinstance(attributes, dict) else None
    obj = find_object(state.schema, type_name) if isinstance(type_name, str) else None
    if obj is None:
        message = f"sObject type '{type_name}' is not supported."
        raise SaveError([error("INVALID_TYPE", message)])
    values = {k: v for k, v in item.items() if k.lower() != "id"}
    given_id = next((v for k, v in item.items() if k.lower() == "id"), None)
    if method == "POST":
        if given_id is not None:
            raise SaveError(
                [error("INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])]
            )
        return {
            "id": state.org.create(obj, values, user_id),
            "success": True,
            "errors": [],
        }
    record = _collection_target(state, obj, given_id)
    state.org.update(obj, record, values, user_id)
    return {"id": record["Id"], "success": True, "errors": []}


def _collection_target(state: State, obj: SObject, given_id: Any) -> Record:
    """Find the record a collection update names, or raise its save error."""
    if given_id is None:
        raise SaveError(
            [error("MISSING_ARGUMENT", "Id not specified in an update call")]
        )
    record_id = ids.normalise(given_id)
    if record_id is None or ids.type_of(record_id) != obj.name:
        raise SaveError([error("MALFORMED_ID", f"malformed id {given_id}", ["Id"])])
    record = state.org.records.get(record_id)
    if record is None:
        raise SaveError(
            [error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")]
        )
    if record["IsDeleted"]:
        raise SaveError([error("ENTITY_IS_DELETED", "entity is deleted")])
    return record


def _delete_one(state: State, raw_id: str) -> dict[str, Any]:
    record_id = ids.normalise(raw_id)
    record = state.org.live(record_id) if record_id else None
    if record is None:
        failure = error(
            "ENTITY_IS_DELETED"
            if record_id in state.org.records
            else "INVALID_CROSS_REFERENCE_KEY",
            "entity is deleted"
            if record_id in state.org.records
            else "invalid cross reference id",
        )
        return {"success": False, "errors": [failure]}
    state.org.delete(record)
    return {"id": record["Id"], "success": True, "errors": []}


def _rolled_back() -> dict[str, Any]:
    return {"success": False, "errors": [dict(ROLLED_BACK)]}
