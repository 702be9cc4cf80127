"""Records turned into the JSON HubSpot's API answers with."""

import itertools
from collections.abc import Sequence
from typing import Any

from .schema import ASSOCIATION_TYPES, PRIMARY_TYPE_IDS, ObjectType, object_type
from .store import Record, Store
from .validation import iso_now


def _properties(
    kind: ObjectType, record: Record, wanted: Sequence[str] | None
) -> dict[str, Any]:
    """Pick the properties HubSpot returns: all on writes, else the asked-for ones."""
    stored = record["properties"]
    if wanted is None:
        return dict(stored)
    names = list(wanted) or list(kind.defaults)
    # HubSpot always echoes the id and the create/modify stamps.
    always = ("hs_object_id", kind.created_prop, kind.modified_prop)
    picked = {n: stored.get(n) for n in names if n in kind.properties}
    picked.update({n: stored.get(n) for n in always})
    return picked


def public_object(
    store: Store,
    kind: ObjectType,
    record: Record,
    wanted: Sequence[str] | None,
    associations: Sequence[str],
) -> dict[str, Any]:
    """Return a SimplePublicObject, with associations when they were asked for."""
    out: dict[str, Any] = {
        "id": record["id"],
        "properties": _properties(kind, record, wanted),
        "createdAt": record["createdAt"],
        "updatedAt": record["updatedAt"],
        "archived": record["archived"],
    }
    linked = _associations(store, kind, record["id"], associations)
    if linked:
        out["associations"] = linked
    return out


def _associations(
    store: Store, kind: ObjectType, object_id: str, names: Sequence[str]
) -> dict[str, Any]:
    out = {}
    for name in names:
        other = object_type(name)
        if other is None:
            continue
        links = store.links_from(kind.name, object_id, other.name)
        if links:
            results = [
                {"id": to_id, "type": _label_key(kind.name, other.name, type_id)}
                for _, to_id, type_id in links
            ]
            out[other.name] = {"results": results}
    return out


def _label_key(from_type: str, to_type: str, type_id: int) -> str:
    return ASSOCIATION_TYPES.get((from_type, to_type), {}).get(type_id, str(type_id))


def association_page(
    links: list[tuple[str, str, int]], limit: int, after: int
) -> dict[str, Any]:
    """Group links by target and return a v4 association list page."""
    grouped = [
        (to_id, [type_id for _, _, type_id in group])
        for to_id, group in itertools.groupby(links, key=lambda x: x[1])
    ]
    page = grouped[after : after + limit]
    results = [
        {
            "toObjectId": int(to_id),
            "associationTypes": [_type_with_label(t) for t in type_ids],
        }
        for to_id, type_ids in page
    ]
    answer: dict[str, Any] = {"results": results}
    if after + limit < len(grouped):
        answer["paging"] = {"next": {"after": str(after + limit), "link": None}}
    return answer


def _type_with_label(type_id: int) -> dict[str, Any]:
    label = "Primary" if type_id in PRIMARY_TYPE_IDS else None
    return {"category": "HUBSPOT_DEFINED", "typeId": type_id, "label": label}


def labels_between(
    src: ObjectType, object_id: str, dst: ObjectType, to_id: str
) -> dict[str, Any]:
    """Return the v4 LabelsBetweenObjectPair answer to an association PUT."""
    return {
        "fromObjectTypeId": src.type_id,
        "fromObjectId": int(object_id),
        "toObjectTypeId": dst.type_id,
        "toObjectId": int(to_id),
        "labels": [],
    }


def batch_answer(
    results: list[dict[str, Any]], errors: list[dict[str, Any]]
) -> dict[str, Any]:
    """Return a batch response, with `errors` and `numErrors` when any failed."""
    now = iso_now()
    out: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": now,
        "completedAt": now,
    }
    if errors:
        out["numErrors"] = len(errors)
        out["errors"] = errors
    return out


def owner_page(owners: list[Record], limit: int, after: int) -> dict[str, Any]:
    """Return a page of owners with forward paging."""
    answer: dict[str, Any] = {"results": owners[after : after + limit]}
    if after + limit < len(owners):
        nxt = str(after + limit)
        answer["paging"] = {"next": {"after": nxt, "link": f"?after={nxt}"}}
    return answer
