"""The org's records: validation and writes, with the errors Salesforce returns."""

from __future__ import annotations

import copy
import datetime
import re
from typing import Any

from . import ids
from .schema import (
    CLOSED_STAGES,
    CLOSED_TASK_STATUSES,
    STRING_TYPES,
    Field,
    SObject,
)

Record = dict[str, Any]
Error = dict[str, Any]

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class SaveError(Exception):
    """A write refused with one or more Salesforce errors."""

    def __init__(self, errors: list[Error]) -> None:
        super().__init__(errors[0]["message"])
        self.errors = errors


def error(code: str, message: str, fields: list[str] | None = None) -> Error:
    """Build one error in the shape save results carry."""
    return {"statusCode": code, "message": message, "fields": fields or []}


def format_datetime(value: datetime.datetime) -> str:
    """Print a timestamp the way the API does: `2026-12-03T10:00:00.000+0000`."""
    utc = value.astimezone(datetime.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}+0000"


def now() -> str:
    """Return the current time in API format."""
    return format_datetime(datetime.datetime.now(datetime.UTC))


class Org:
    """All records of one emulated org, keyed by 18-character id."""

    def __init__(self, schema: dict[str, SObject], pod: str) -> None:
        self.schema = schema
        self.pod = pod
        self.serial = 0
        self.records: dict[str, Record] = {}
        self.org_id = ids.make_id("Organization", pod, 1)

    def new_id(self, type_name: str) -> str:
        """Allocate the next id for a type."""
        self.serial += 1
        return ids.make_id(type_name, self.pod, self.serial)

    def live(self, record_id: str | None) -> Record | None:
        """Return a record that exists and is not deleted."""
        record = self.records.get(ids.normalise(record_id) or "") if record_id else None
        return record if record is not None and not record["IsDeleted"] else None

    def of_type(self, type_name: str, include_deleted: bool = False) -> list[Record]:
        """List records of one type in creation order."""
        return [
            r
            for r in self.records.values()
            if r["attributes"]["type"] == type_name
            and (include_deleted or not r["IsDeleted"])
        ]

    def find_by(self, type_name: str, field_name: str, value: str) -> list[Record]:
        """Find live records whose external id field equals `value`, ignoring case."""
        wanted = value.casefold()
        return [
            r
            for r in self.of_type(type_name)
            if isinstance(r.get(field_name), str) and r[field_name].casefold() == wanted
        ]

    def snapshot(self) -> tuple[dict[str, Record], int]:
        """Copy the records so a failed all-or-none request can roll back."""
        return copy.deepcopy(self.records), self.serial

    def restore(self, saved: tuple[dict[str, Record], int]) -> None:
        """Put back a snapshot taken by `snapshot`."""
        self.records, self.serial = saved

    def create(self, obj: SObject, values: dict[str, Any], user_id: str) -> str:
        """Validate and insert a record as the API would; return its id."""
        clean = Validator(self, obj, values, None).run()
        return self._insert(obj, clean, user_id)

    def seed(self, obj: SObject, values: dict[str, Any], user_id: str) -> str:
        """Insert a record as test data, allowing read-only fields."""
        clean: dict[str, Any] = {}
        for name, value in values.items():
            found = obj.field(name)
            if found is None:
                raise ValueError(f"{obj.name} has no field {name!r}")
            clean[found.name] = value
        return self._insert(obj, clean, user_id)

    def update(
        self, obj: SObject, record: Record, values: dict[str, Any], user_id: str
    ) -> None:
        """Validate and apply a partial update."""
        clean = Validator(self, obj, values, record).run()
        record.update(clean)
        record["LastModifiedById"] = user_id
        record["LastModifiedDate"] = record["SystemModstamp"] = now()
        self._derive(obj, record)

    def delete(self, record: Record) -> None:
        """Move a record to the recycle bin."""
        # NOTE: child records (contact roles of a deleted opportunity) are kept;
        # Salesforce would cascade, which no flow of the product relies on.
        record["IsDeleted"] = True
        record["LastModifiedDate"] = record["SystemModstamp"] = now()

    def _insert(self, obj: SObject, values: dict[str, Any], user_id: str) -> str:
        """Store a new record with defaults, system fields and derived values."""
        record_id = values.get("Id") or self.new_id(obj.name)
        stamp = now()
        record: Record = {"attributes": {"type": obj.name}}
        for f in obj.fields.values():
            record[f.name] = f.default
        record.update(Id=record_id, CreatedDate=stamp, LastModifiedDate=stamp)
        record.update(SystemModstamp=stamp, CreatedById=user_id)
        record["LastModifiedById"] = user_id
        if "OwnerId" in obj.fields:
            record["OwnerId"] = user_id
        record.update({k: v for k, v in values.items() if k != "Id"})
        self._derive(obj, record)
        self.records[record_id] = record
        return record_id

    def _derive(self, obj: SObject, record: Record) -> None:
        """Recompute formula-like fields and activity dates after a write."""
        if "Name" in obj.fields and "LastName" in obj.fields:
            parts = (record.get("FirstName"), record.get("LastName"))
            record["Name"] = " ".join(p for p in parts if p) or None
        if obj.name == "Opportunity":
            record["IsClosed"] = record.get("StageName") in CLOSED_STAGES
            record["IsWon"] = record.get("StageName") == "Closed Won"
        if obj.name == "Task":
            self._derive_task(record)

    def _derive_task(self, task: Record) -> None:
        """Fill IsClosed, CompletedDateTime and AccountId; touch related records."""
        closed = task.get("Status") in CLOSED_TASK_STATUSES
        if closed and not task.get("IsClosed"):
            task["CompletedDateTime"] = now()
        if not closed:
            task["CompletedDateTime"] = None
        task["IsClosed"] = closed
        task["AccountId"] = self._task_account(task)
        if closed:
            day = task.get("ActivityDate") or now()[:10]
            for related in (task.get("WhoId"), task.get("WhatId"), task["AccountId"]):
                self._touch_activity(related, day)

    def _task_account(self, task: Record) -> str | None:
        """Find the account a task rolls up to, through What or Who."""
        for related_id in (task.get("WhatId"), task.get("WhoId")):
            related = self.live(related_id)
            if related is None:
                continue
            if related["attributes"]["type"] == "Account":
                return str(related["Id"])
            if related.get("AccountId"):
                return str(related["AccountId"])
        return None

    def _touch_activity(self, record_id: str | None, day: str) -> None:
        """Advance LastActivityDate, which closed tasks move forward."""
        related = self.live(record_id)
        if related is None or "LastActivityDate" not in related:
            return
        current = related.get("LastActivityDate")
        if current is None or current < day:
            related["LastActivityDate"] = day


class Validator:
    """Check one record's values for a create (record None) or an update."""

    def __init__(
        self, org: Org, obj: SObject, values: dict[str, Any], record: Record | None
    ) -> None:
        self.org = org
        self.obj = obj
        self.values = values
        self.record = record
        self.errors: list[Error] = []
        self.clean: dict[str, Any] = {}

    @property
    def creating(self) -> bool:
        return self.record is None

    def run(self) -> dict[str, Any]:
        """Return the coerced values, or raise SaveError with every problem found."""
        for name, value in self.values.items():
            if name != "attributes":
                self._field(name, value)
        self._required()
        if self.obj.name == "Task" and not self.errors:
            self._task_rules()
        if not self.errors:
            self._unique()
        if self.errors:
            raise SaveError(self.errors)
        return self.clean

    def _field(self, name: str, value: Any) -> None:
        """Check that a field exists, may be written, and holds a valid value."""
        found = self.obj.field(name)
        if found is None:
            message = f"No such column '{name}' on sobject of type {self.obj.name}"
            self.errors.append(error("INVALID_FIELD", message, [name]))
            return
        unchanged_id = self.record is not None and found.name == "Id"
        if unchanged_id and ids.normalise(value) == self.record["Id"]:  # type: ignore[index]
            return
        writable = found.createable if self.creating else found.updateable
        if not writable:
            message = (
                f"Unable to create/update fields: {found.name}. Please check the"
                " security settings of this field and verify that it is read/write"
                " for your profile or permission set."
            )
            self.errors.append(
                error("INVALID_FIELD_FOR_INSERT_UPDATE", message, [found.name])
            )
            return
        try:
            self.clean[found.name] = self._coerce(found, value)
        except SaveError as exc:
            self.errors.extend(exc.errors)

    def _coerce(self, f: Field, value: Any) -> Any:
        """Convert a JSON value for a field, raising SaveError if it does not fit."""
        if value is None:
            return False if f.type == "boolean" else None
        if f.type in STRING_TYPES:
            return self._text(f, value)
        if f.type == "boolean":
            return _expect(f, value, isinstance(value, bool), "boolean")
        if f.type in ("double", "currency"):
            fits = isinstance(value, int | float) and not isinstance(value, bool)
            return float(_expect(f, value, fits, "double"))
        if f.type == "date":
            return _expect(f, value, _is_date(value), "date")
        if f.type == "datetime":
            return format_datetime(_expect_datetime(f, value))
        if f.type == "reference":
            return self._reference(f, value)
        return value

    def _text(self, f: Field, value: Any) -> str:
        """Check a text, email or picklist value."""
        if isinstance(value, bool | dict | list):
            _expect(f, value, False, "string")
        text = str(value)
        if f.length is not None and len(text) > f.length:
            message = (
                f"{f.display}: data value too large: {text[:40]}"
                f" (max length={f.length})"
            )
            raise SaveError([error("STRING_TOO_LONG", message, [f.name])])
        if f.type == "email" and not _EMAIL.fullmatch(text):
            message = f"{f.display}: invalid email address: {text}"
            raise SaveError([error("INVALID_EMAIL_ADDRESS", message, [f.name])])
        if f.restricted and text not in f.picklist:
            message = f"{f.display}: bad value for restricted picklist field: {text}"
            code = "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
            raise SaveError([error(code, message, [f.name])])
        return text

    def _reference(self, f: Field, value: Any) -> str:
        """Check that an id is well formed, of an allowed type, and exists."""
        record_id = ids.normalise(value)
        message = f"{f.display}: id value of incorrect type: {value}"
        if record_id is None:
            raise SaveError([error("MALFORMED_ID", message, [f.name])])
        if ids.type_of(record_id) not in f.references:
            raise SaveError([error("FIELD_INTEGRITY_EXCEPTION", message, [f.name])])
        target = self.org.live(record_id)
        if target is None:
            raise SaveError(
                [
                    error(
                        "INVALID_CROSS_REFERENCE_KEY",
                        "invalid cross reference id",
                        [f.name],
                    )
                ]
            )
        if f.name == "OwnerId" and not target.get("IsActive", True):
            message = (
                f"operation performed with inactive user [{record_id}] as owner"
                f" of {self.obj.name.lower()}"
            )
            raise SaveError([error("INACTIVE_OWNER_OR_USER", message)])
        return record_id

    def _required(self) -> None:
        """Report required fields that a create leaves out or an update clears."""
        missing = []
        for f in self.obj.fields.values():
            if not f.required:
                continue
            if self.creating:
                absent = self.clean.get(f.name) is None and f.default is None
            else:
                absent = f.name in self.clean and self.clean[f.name] is None
            if absent and f.name not in {
                e["fields"][0] for e in self.errors if e["fields"]
            }:
                missing.append(f.name)
        if missing:
            message = f"Required fields are missing: [{', '.join(missing)}]"
            self.errors.append(error("REQUIRED_FIELD_MISSING", message, missing))

    def _task_rules(self) -> None:
        """Apply the Task rule that a lead cannot have a Related To record."""
        merged = {**(self.record or {}), **self.clean}
        who = merged.get("WhoId")
        if who and ids.type_of(who) == "Lead" and merged.get("WhatId"):
            message = (
                "Related To ID: a task whose Name is a lead cannot be related to"
                " another record"
            )
            self.errors.append(error("FIELD_INTEGRITY_EXCEPTION", message, ["WhatId"]))

    def _unique(self) -> None:
        """Refuse a value already held by another record in a unique field."""
        own_id = self.record["Id"] if self.record else None
        for name, value in self.clean.items():
            f = self.obj.fields[name]
            if not f.unique or not isinstance(value, str):
                continue
            clash = [
                r
                for r in self.org.find_by(self.obj.name, name, value)
                if r["Id"] != own_id
            ]
            if clash:
                message = (
                    f"duplicate value found: {name} duplicates value on record"
                    f" with id: {clash[0]['Id']}"
                )
                self.errors.append(error("DUPLICATE_VALUE", message))


def _expect(f: Field, value: Any, fits: bool, kind: str) -> Any:
    """Raise the JSON parser error Salesforce gives for a value of the wrong type."""
    if fits:
        return value
    shape = "VALUE_STRING" if isinstance(value, str) else "VALUE_OTHER"
    message = (
        f"Cannot deserialize instance of {kind} from {shape} value {value} or"
        " request may be missing a required field"
    )
    raise SaveError([error("JSON_PARSER_ERROR", message, [f.name])])


def _is_date(value: Any) -> bool:
    """Tell whether a value is a real calendar date written YYYY-MM-DD."""
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        return False
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _expect_datetime(f: Field, value: Any) -> datetime.datetime:
    """Parse an ISO 8601 timestamp with an offset, or raise the parser error."""
    try:
        parsed = (
            datetime.datetime.fromisoformat(value) if isinstance(value, str) else None
        )
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        _expect(f, value, False, "datetime")
    return parsed  # type: ignore[return-value]
