"""The emulated portal's CRM records, owners and associations, in memory."""

import copy
import itertools
import threading
from typing import Any

from . import errors
from .schema import ASSOCIATION_TYPES, OBJECT_TYPES, ObjectType, reverse_type_id
from .validation import check_properties, iso_now, normalise, stored_value

Record = dict[str, Any]
Link = tuple[str, str, str, str, int]  # from type, from id, to type, to id, type id


class Store:
    """Thread-safe records of one portal, keyed the way HubSpot keys them."""

    def __init__(self, hub_id: int) -> None:
        self.hub_id = hub_id
        self.lock = threading.RLock()
        self._ids = itertools.count(1001)
        self.records: dict[str, dict[str, Record]] = {t: {} for t in OBJECT_TYPES}
        self.links: set[Link] = set()
        self.owners: dict[str, Record] = {}

    def reset(self) -> None:
        """Forget every record, owner and association."""
        with self.lock:
            self.records = {t: {} for t in OBJECT_TYPES}
            self.links = set()
            self.owners = {}

    def next_id(self) -> str:
        """Return a fresh numeric id as a string."""
        with self.lock:
            return str(next(self._ids))

    def create(self, kind: ObjectType, raw: Any, associations: Any = ()) -> Record:
        """Validate and store a new object with its inline associations."""
        with self.lock:
            properties = normalise(raw)
            check_properties(kind, properties, set(self.owners), self.hub_id, True)
            pending = [self._parse_inline(kind, a) for a in associations or ()]
            record = self._new_record(kind, properties)
            for to_type, to_id, type_id in itertools.chain.from_iterable(pending):
                self.link(kind.name, record["id"], to_type, to_id, type_id)
            return record

    def create_many(self, kind: ObjectType, inputs: list[Any]) -> list[Record]:
        """Create every input or, if one is invalid, none of them."""
        with self.lock:
            created: list[Record] = []
            try:
                for item in inputs:
                    item = item if isinstance(item, dict) else {}
                    props, links = item.get("properties"), item.get("associations")
                    created.append(self.create(kind, props, links))
            except errors.ApiError:
                self._discard(kind, created)
                raise
            return created

    def _discard(self, kind: ObjectType, records: list[Record]) -> None:
        ids = {r["id"] for r in records}
        for object_id in ids:
            del self.records[kind.name][object_id]
        self.links = {
            link
            for link in self.links
            if not (link[0] == kind.name and link[1] in ids)
            and not (link[2] == kind.name and link[3] in ids)
        }

    def update_many(
        self, kind: ObjectType, inputs: list[Any]
    ) -> tuple[list[Record], list[str]]:
        """Validate all inputs, then update the known ids; return (done, missing)."""
        with self.lock:
            pairs = [
                (str((i or {}).get("id", "")), normalise((i or {}).get("properties")))
                for i in inputs
            ]
            owners = set(self.owners)
            for _, props in pairs:
                check_properties(kind, props, owners, self.hub_id, False)
            missing = [oid for oid, _ in pairs if not self.exists(kind.name, oid)]
            done = [
                self.update(kind, oid, props)
                for oid, props in pairs
                if oid not in missing
            ]
            return done, missing

    def insert(self, kind: ObjectType, properties: dict[str, str]) -> Record:
        """Store an object without validation, for seeding."""
        with self.lock:
            return self._new_record(kind, properties)

    def _new_record(self, kind: ObjectType, properties: dict[str, str]) -> Record:
        object_id = self.next_id()
        now = iso_now()
        props = {k: stored_value(k, v) for k, v in properties.items()}
        props.update({kind.created_prop: now, kind.modified_prop: now})
        props["hs_object_id"] = object_id
        if kind.created_prop != "hs_createdate" and kind.name != "contacts":
            props.setdefault("hs_createdate", now)
        record = {
            "id": object_id,
            "properties": props,
            "createdAt": now,
            "updatedAt": now,
            "archived": False,
        }
        self.records[kind.name][object_id] = record
        return record

    def update(self, kind: ObjectType, object_id: str, raw: Any) -> Record:
        """Validate and apply a partial property update."""
        with self.lock:
            record = self.get(kind, object_id)
            properties = normalise(raw)
            check_properties(kind, properties, set(self.owners), self.hub_id, False)
            now = iso_now()
            for name, value in properties.items():
                record["properties"][name] = stored_value(name, value)
            record["properties"][kind.modified_prop] = now
            record["updatedAt"] = now
            return record

    def get(self, kind: ObjectType, object_id: str) -> Record:
        """Return the live record, or raise HubSpot's 404."""
        record = self.records[kind.name].get(str(object_id))
        if record is None or record["archived"]:
            raise errors.not_found(str(object_id))
        return record

    def find_by(self, kind: ObjectType, prop: str, value: str) -> Record:
        """Return the record whose property matches, email ignoring case."""
        with self.lock:
            wanted = value.lower() if prop == "email" else value
            for record in self.records[kind.name].values():
                have = record["properties"].get(prop)
                if have is not None and prop == "email":
                    have = have.lower()
                if have == wanted and not record["archived"]:
                    return record
            raise errors.not_found(value)

    def _parse_inline(self, kind: ObjectType, item: Any) -> list[tuple[str, str, int]]:
        """Check one inline association of a create body; return its links."""
        to_id = str(((item or {}).get("to") or {}).get("id", ""))
        types = (item or {}).get("types") or []
        if not to_id or not types:
            raise errors.validation(
                "Invalid input JSON: associations need `to.id` and `types`."
            )
        return [self._check_spec(kind.name, to_id, spec) for spec in types]

    def _check_spec(
        self, from_type: str, to_id: str, spec: Any
    ) -> tuple[str, str, int]:
        category = (spec or {}).get("associationCategory")
        type_id = (spec or {}).get("associationTypeId")
        if category != "HUBSPOT_DEFINED" or not isinstance(type_id, int):
            raise errors.validation(
                f"{category}/{type_id} is not a valid association type; this "
                "portal only has HUBSPOT_DEFINED types."
            )
        to_type = self._target_type(from_type, type_id)
        if (
            to_id not in self.records[to_type]
            or self.records[to_type][to_id]["archived"]
        ):
            raise errors.validation(
                f"One or more associations are invalid: {to_type} {to_id} "
                "does not exist.",
                context={"toObjectId": [to_id]},
            )
        return to_type, to_id, type_id

    def _target_type(self, from_type: str, type_id: int) -> str:
        for (src, dst), ids in ASSOCIATION_TYPES.items():
            if src == from_type and type_id in ids:
                return dst
        raise errors.validation(
            f"association type id {type_id} is not valid for "
            f"{OBJECT_TYPES[from_type].singular} associations.",
            context={"associationTypeId": [str(type_id)]},
        )

    def check_pair(self, from_type: str, to_type: str, type_id: int) -> None:
        """Raise unless the type id is HubSpot-defined for this object pair."""
        if type_id not in ASSOCIATION_TYPES.get((from_type, to_type), {}):
            raise errors.validation(
                f"association type id {type_id} doesn't exist between "
                f"{from_type} and {to_type}.",
                context={"associationTypeId": [str(type_id)]},
            )

    def link(
        self, from_type: str, from_id: str, to_type: str, to_id: str, type_id: int
    ) -> None:
        """Record an association and its reverse, as HubSpot does."""
        with self.lock:
            self.links.add((from_type, from_id, to_type, to_id, type_id))
            back = reverse_type_id(from_type, to_type, type_id)
            if back is not None:
                self.links.add((to_type, to_id, from_type, from_id, back))

    def links_from(
        self, from_type: str, from_id: str, to_type: str | None = None
    ) -> list[tuple[str, str, int]]:
        """Return (to type, to id, type id) for one object, sorted by id."""
        with self.lock:
            found = [
                (t, i, k)
                for f, fid, t, i, k in self.links
                if f == from_type and fid == from_id and to_type in (None, t)
            ]
        return sorted(found, key=lambda x: (x[0], int(x[1]), x[2]))

    def exists(self, type_name: str, object_id: str) -> bool:
        """Tell whether a live object of that type has that id."""
        record = self.records.get(type_name, {}).get(str(object_id))
        return record is not None and not record["archived"]

    def snapshot(self, type_name: str) -> list[Record]:
        """Return copies of every record of a type with their associations."""
        with self.lock:
            out = []
            for record in self.records[type_name].values():
                item = copy.deepcopy(record)
                item["associations"] = self.links_from(type_name, record["id"])
                out.append(item)
        return out

    def add_owner(self, owner: Record) -> None:
        """Store an owner record."""
        with self.lock:
            self.owners[owner["id"]] = owner
