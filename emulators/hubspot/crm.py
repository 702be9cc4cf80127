"""HubSpot's CRM API: objects v3, associations v4 and owners v3."""

from typing import Any

from flask import Blueprint, request

from . import errors
from .context import bearer, portal
from .schema import ASSOCIATION_TYPES, ObjectType, object_type
from .serialise import (
    association_page,
    batch_answer,
    labels_between,
    owner_page,
    public_object,
)
from .store import Store

bp = Blueprint("crm", __name__)

BATCH_LIMIT = 100


def _kind(name: str) -> ObjectType:
    kind = object_type(name)
    if kind is None:
        raise errors.validation(f"Unable to infer object type from: {name}")
    return kind


def _require(scopes: frozenset[str]) -> None:
    """Raise HubSpot's 403 unless the token holds one of these scopes."""
    if not scopes.intersection(bearer().grant.scopes):
        raise errors.missing_scopes(scopes)


def _list_arg(name: str) -> list[str]:
    """Read a list query parameter sent repeated or comma-separated."""
    values = request.args.getlist(name)
    return [v for raw in values for v in raw.split(",") if v]


def _int_arg(name: str, default: int, ceiling: int) -> int:
    """Read a non-negative integer query parameter, capped as HubSpot caps it."""
    raw = request.args.get(name, str(default))
    if not raw.isdigit():
        raise errors.validation(f"{name} must be a non-negative integer, not {raw!r}")
    return min(int(raw), ceiling)


def _json() -> Any:
    body = request.get_json(silent=True)
    if body is None:
        raise errors.validation("Invalid input JSON: the request has no JSON body.")
    return body


def _inputs(body: Any) -> list[Any]:
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list):
        raise errors.validation("Invalid input JSON: `inputs` must be a list.")
    if len(inputs) > BATCH_LIMIT:
        raise errors.validation(
            f"The maximum number of inputs supported in a batch request is "
            f"{BATCH_LIMIT}. Please reduce the number of items and try again.",
            context={"inputs": [str(len(inputs))]},
        )
    return inputs


@bp.get("/crm/v3/objects/<type_name>/<object_id>")
def read_object(type_name: str, object_id: str) -> Any:
    """Read one object by id or by a unique property such as email."""
    kind = _kind(type_name)
    _require(kind.read_scopes)
    store = portal().store
    with store.lock:
        record = _find(kind, object_id, request.args.get("idProperty"))
        return public_object(
            store, kind, record, _list_arg("properties"), _list_arg("associations")
        )


def _find(kind: ObjectType, object_id: str, id_property: str | None) -> Any:
    store = portal().store
    if id_property in (None, "", "hs_object_id"):
        return store.get(kind, object_id)
    if id_property == "email" and kind.name == "contacts":
        return store.find_by(kind, "email", object_id)
    raise errors.validation(f"{id_property} is not a unique property of {kind.name}")


@bp.get("/crm/v3/objects/<type_name>")
def list_objects(type_name: str) -> Any:
    """List a page of objects of a type, oldest first."""
    kind = _kind(type_name)
    _require(kind.read_scopes)
    store = portal().store
    limit = _int_arg("limit", 10, 100)
    after = _int_arg("after", 0, 10**9)
    with store.lock:
        live = [r for r in store.records[kind.name].values() if not r["archived"]]
        page = live[after : after + limit]
        props = _list_arg("properties")
        results = [public_object(store, kind, r, props, []) for r in page]
    answer: dict[str, Any] = {"results": results}
    if after + limit < len(live):
        nxt = str(after + limit)
        answer["paging"] = {"next": {"after": nxt, "link": f"?after={nxt}"}}
    return answer


@bp.post("/crm/v3/objects/<type_name>")
def create_object(type_name: str) -> Any:
    """Create one object, with its inline associations."""
    kind = _kind(type_name)
    _require(kind.write_scopes)
    body = _json()
    store = portal().store
    with store.lock:
        record = store.create(kind, body.get("properties"), body.get("associations"))
        return public_object(store, kind, record, None, []), 201


@bp.patch("/crm/v3/objects/<type_name>/<object_id>")
def update_object(type_name: str, object_id: str) -> Any:
    """Update some properties of one object."""
    kind = _kind(type_name)
    _require(kind.write_scopes)
    store = portal().store
    with store.lock:
        record = store.update(kind, object_id, _json().get("properties"))
        return public_object(store, kind, record, None, [])


@bp.post("/crm/v3/objects/<type_name>/batch/create")
def batch_create(type_name: str) -> Any:
    """Create up to 100 objects; any invalid input fails the whole batch."""
    kind = _kind(type_name)
    _require(kind.write_scopes)
    inputs = _inputs(_json())
    store = portal().store
    with store.lock:
        records = store.create_many(kind, inputs)
        results = [public_object(store, kind, r, None, []) for r in records]
    return batch_answer(results, []), 201


@bp.post("/crm/v3/objects/<type_name>/batch/update")
def batch_update(type_name: str) -> Any:
    """Update up to 100 objects; unknown ids come back as errors (207)."""
    kind = _kind(type_name)
    _require(kind.write_scopes)
    inputs = _inputs(_json())
    store = portal().store
    with store.lock:
        records, missing = store.update_many(kind, inputs)
        results = [public_object(store, kind, r, None, []) for r in records]
    return _batch_with_missing(kind, results, missing)


@bp.post("/crm/v3/objects/<type_name>/batch/read")
def batch_read(type_name: str) -> Any:
    """Read up to 100 objects; unknown ids come back as errors (207)."""
    kind = _kind(type_name)
    _require(kind.read_scopes)
    body = _json()
    inputs = _inputs(body)
    props = body.get("properties") or []
    id_property = body.get("idProperty")
    store = portal().store
    results, missing = [], []
    with store.lock:
        for item in inputs:
            wanted = str((item or {}).get("id", ""))
            try:
                record = _find(kind, wanted, id_property)
            except errors.ApiError:
                missing.append(wanted)
                continue
            results.append(public_object(store, kind, record, props, []))
    return _batch_with_missing(kind, results, missing)


def _batch_with_missing(
    kind: ObjectType, results: list[dict[str, Any]], missing: list[str]
) -> Any:
    if not missing:
        return batch_answer(results, [])
    error = {
        "status": "error",
        "category": "OBJECT_NOT_FOUND",
        "message": f"Could not get some {kind.singular} objects, they may be "
        "deleted or not exist. Check that ids are valid.",
        "context": {"ids": missing},
    }
    return batch_answer(results, [error]), 207


@bp.get("/crm/v4/objects/<from_name>/<object_id>/associations/<to_name>")
def association_list(from_name: str, object_id: str, to_name: str) -> Any:
    """List one object's associations to a type, up to 500 per page."""
    src, dst = _kind(from_name), _kind(to_name)
    _require(src.read_scopes)
    limit = _int_arg("limit", 500, 500)
    after = _int_arg("after", 0, 10**9)
    links = portal().store.links_from(src.name, str(object_id), dst.name)
    return association_page(links, limit, after)


@bp.put("/crm/v4/objects/<from_name>/<object_id>/associations/<to_name>/<to_id>")
def association_create(from_name: str, object_id: str, to_name: str, to_id: str) -> Any:
    """Associate two objects with the given HubSpot-defined type ids."""
    src, dst = _kind(from_name), _kind(to_name)
    _require(src.write_scopes)
    specs = _json()
    if not isinstance(specs, list) or not specs:
        raise errors.validation("Invalid input JSON: expected a list of types.")
    store = portal().store
    with store.lock:
        _check_ends(src, object_id, dst, to_id)
        type_ids = [_spec_type_id(store, src, dst, s) for s in specs]
        for type_id in type_ids:
            store.link(src.name, object_id, dst.name, to_id, type_id)
    return labels_between(src, object_id, dst, to_id), 201


@bp.put(
    "/crm/v4/objects/<from_name>/<object_id>/associations/default/<to_name>/<to_id>"
)
def association_default(
    from_name: str, object_id: str, to_name: str, to_id: str
) -> Any:
    """Associate two objects with the pair's default HubSpot-defined type."""
    src, dst = _kind(from_name), _kind(to_name)
    _require(src.write_scopes)
    ids = list(ASSOCIATION_TYPES.get((src.name, dst.name), {}))
    if not ids:
        raise errors.validation(f"{src.name} cannot be associated with {dst.name}")
    store = portal().store
    with store.lock:
        _check_ends(src, object_id, dst, to_id)
        store.link(src.name, object_id, dst.name, to_id, ids[-1])
    result = {
        "from": {"id": object_id},
        "to": {"id": to_id},
        "associationSpec": {
            "associationCategory": "HUBSPOT_DEFINED",
            "associationTypeId": ids[-1],
        },
    }
    return batch_answer([result], [])


def _check_ends(src: ObjectType, object_id: str, dst: ObjectType, to_id: str) -> None:
    store = portal().store
    for kind, oid in ((src, object_id), (dst, to_id)):
        if not store.exists(kind.name, oid):
            raise errors.validation(
                f"One or more associations are invalid: {kind.name} {oid} "
                "does not exist.",
                context={"objectId": [oid]},
            )


def _spec_type_id(store: Store, src: ObjectType, dst: ObjectType, spec: Any) -> int:
    category = (spec or {}).get("associationCategory")
    type_id = (spec or {}).get("associationTypeId")
    if category != "HUBSPOT_DEFINED" or not isinstance(type_id, int):
        raise errors.validation(
            f"{category}/{type_id} is not a valid association type; this portal "
            "only has HUBSPOT_DEFINED types."
        )
    store.check_pair(src.name, dst.name, type_id)
    return type_id


@bp.post("/crm/v4/associations/<from_name>/<to_name>/batch/read")
def association_batch_read(from_name: str, to_name: str) -> Any:
    """Read associations of many objects to one type."""
    src, dst = _kind(from_name), _kind(to_name)
    _require(src.read_scopes)
    store = portal().store
    results, empty = [], []
    for item in _inputs(_json()):
        object_id = str((item or {}).get("id", ""))
        links = store.links_from(src.name, object_id, dst.name)
        if not links:
            empty.append(object_id)
            continue
        page = association_page(links, 500, 0)
        results.append({"from": {"id": object_id}, "to": page["results"]})
    if not empty:
        return batch_answer(results, [])
    error = {
        "status": "error",
        "category": "OBJECT_NOT_FOUND",
        "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
        "message": f"No {dst.name} is associated with {src.name} " + ", ".join(empty),
        "context": {"fromObjectId": empty},
    }
    return batch_answer(results, [error]), 207


@bp.get("/crm/v3/owners")
def owners() -> Any:
    """List owners, optionally only the one with an email address."""
    _require(frozenset({"crm.objects.owners.read"}))
    store = portal().store
    email = request.args.get("email")
    limit = _int_arg("limit", 100, 500)
    after = _int_arg("after", 0, 10**9)
    with store.lock:
        found = [
            dict(o)
            for o in store.owners.values()
            if email is None or o["email"].lower() == email.lower()
        ]
    return owner_page(found, limit, after)


@bp.get("/crm/v3/owners/<owner_id>")
def owner(owner_id: str) -> Any:
    """Read one owner by id, or by userId when idProperty says so."""
    _require(frozenset({"crm.objects.owners.read"}))
    store = portal().store
    key = "userId" if request.args.get("idProperty") == "userId" else "id"
    with store.lock:
        for found in store.owners.values():
            if str(found[key]) == owner_id:
                return dict(found)
    raise errors.not_found(owner_id)
