"""The objects and fields the emulated org knows, as the object reference lists them.

Only the fields the product reads or writes are declared; an org has many more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STRING_TYPES = frozenset(
    {"string", "textarea", "email", "phone", "url", "picklist", "combobox"}
)
OPPORTUNITY_STAGES = (
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Value Proposition",
    "Id. Decision Makers",
    "Perception Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
)
CLOSED_STAGES = frozenset({"Closed Won", "Closed Lost"})
TASK_STATUSES = (
    "Not Started",
    "In Progress",
    "Completed",
    "Waiting on someone else",
    "Deferred",
)
CLOSED_TASK_STATUSES = frozenset({"Completed"})
TASK_SUBTYPES = ("Task", "Email", "ListEmail", "Cadence", "Call", "LinkedIn")
LEAD_STATUSES = (
    "Open - Not Contacted",
    "Working - Contacted",
    "Closed - Converted",
    "Closed - Not Converted",
)
CONTACT_ROLES = (
    "Business User",
    "Decision Maker",
    "Economic Buyer",
    "Economic Decision Maker",
    "Evaluator",
    "Executive Sponsor",
    "Influencer",
    "Technical Buyer",
    "Other",
)


@dataclass(frozen=True)
class Field:
    """One field of an object, with the properties describe would report."""

    name: str
    type: str
    label: str = ""
    length: int | None = None
    references: tuple[str, ...] = ()
    relationship: str | None = None
    picklist: tuple[str, ...] = ()
    restricted: bool = False
    createable: bool = True
    updateable: bool = True
    required: bool = False
    default: Any = None
    external_id: bool = False
    unique: bool = False

    @property
    def display(self) -> str:
        """Return the label Salesforce puts in front of a field's error messages."""
        return self.label or self.name


@dataclass
class SObject:
    """An object type: its name and fields in describe order."""

    name: str
    fields: dict[str, Field] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_lower = {name.lower(): f for name, f in self.fields.items()}
        self._by_relationship = {
            f.relationship.lower(): f for f in self.fields.values() if f.relationship
        }

    def field(self, name: str) -> Field | None:
        """Find a field by name, ignoring case as the API does."""
        return self._by_lower.get(name.lower())

    def relationship(self, name: str) -> Field | None:
        """Find the reference field behind a relationship name such as `Account`."""
        return self._by_relationship.get(name.lower())


def _text(name: str, length: int = 255, **kw: Any) -> Field:
    return Field(name, "string", length=length, **kw)


def _read_only(name: str, type_: str, **kw: Any) -> Field:
    return Field(name, type_, createable=False, updateable=False, **kw)


def _ref(name: str, *targets: str, label: str, **kw: Any) -> Field:
    relationship = name[:-2] if name.endswith("Id") else name
    return Field(
        name,
        "reference",
        label=label,
        length=18,
        references=targets,
        relationship=relationship,
        **kw,
    )


def _flag(name: str, **kw: Any) -> Field:
    return Field(name, "boolean", **{"default": False, **kw})


def _system_fields(owned: bool) -> list[Field]:
    """List the fields every object carries, plus OwnerId for owned ones."""
    fields = [
        _read_only("Id", "id", length=18),
        _read_only("IsDeleted", "boolean", default=False),
        _read_only("CreatedDate", "datetime"),
        _read_only(
            "CreatedById",
            "reference",
            references=("User",),
            relationship="CreatedBy",
            label="Created By ID",
        ),
        _read_only("LastModifiedDate", "datetime"),
        _read_only(
            "LastModifiedById",
            "reference",
            references=("User",),
            relationship="LastModifiedBy",
            label="Last Modified By ID",
        ),
        _read_only("SystemModstamp", "datetime"),
    ]
    if owned:
        fields.append(_ref("OwnerId", "User", label="Owner ID"))
    return fields


def _name_fields() -> list[Field]:
    return [
        _text("FirstName", 40),
        _text("LastName", 80, required=True),
        _read_only("Name", "string", length=121),
    ]


def _object(name: str, fields: list[Field], owned: bool = True) -> SObject:
    every = _system_fields(owned) + fields
    return SObject(name, {f.name: f for f in every})


def _account() -> SObject:
    return _object(
        "Account",
        [
            _text("Name", required=True),
            Field("Type", "picklist", picklist=("Prospect", "Customer", "Partner")),
            _text("Industry", 255),
            Field("Website", "url", length=255),
            Field("Phone", "phone", length=40),
            _read_only("LastActivityDate", "date"),
        ],
    )


def _contact() -> SObject:
    return _object(
        "Contact",
        [
            *_name_fields(),
            Field("Email", "email", length=80),
            Field("Phone", "phone", length=40),
            _text("Title", 128),
            _ref("AccountId", "Account", label="Account ID"),
            _flag("HasOptedOutOfEmail"),
            _read_only("LastActivityDate", "date"),
        ],
    )


def _lead() -> SObject:
    return _object(
        "Lead",
        [
            *_name_fields(),
            _text("Company", required=True),
            Field("Email", "email", length=80),
            Field("Phone", "phone", length=40),
            _text("Title", 128),
            Field(
                "Status",
                "picklist",
                picklist=LEAD_STATUSES,
                required=True,
                default=LEAD_STATUSES[0],
            ),
            _flag("IsConverted", updateable=False),
            _read_only("ConvertedDate", "date"),
            _read_only(
                "ConvertedContactId",
                "reference",
                references=("Contact",),
                relationship="ConvertedContact",
                label="Converted Contact ID",
            ),
            _read_only(
                "ConvertedAccountId",
                "reference",
                references=("Account",),
                relationship="ConvertedAccount",
                label="Converted Account ID",
            ),
            _read_only(
                "ConvertedOpportunityId",
                "reference",
                references=("Opportunity",),
                relationship="ConvertedOpportunity",
                label="Converted Opportunity ID",
            ),
            _flag("HasOptedOutOfEmail"),
            _read_only("LastActivityDate", "date"),
        ],
    )


def _opportunity() -> SObject:
    return _object(
        "Opportunity",
        [
            _text("Name", 120, required=True),
            Field(
                "StageName",
                "picklist",
                label="Stage",
                picklist=OPPORTUNITY_STAGES,
                required=True,
            ),
            Field("CloseDate", "date", required=True),
            Field("Amount", "currency"),
            _ref("AccountId", "Account", label="Account ID"),
            _read_only("IsClosed", "boolean", default=False),
            _read_only("IsWon", "boolean", default=False),
            _read_only("LastActivityDate", "date"),
        ],
    )


def _contact_role() -> SObject:
    return _object(
        "OpportunityContactRole",
        [
            _ref("ContactId", "Contact", label="Contact ID", required=True),
            _ref(
                "OpportunityId",
                "Opportunity",
                label="Opportunity ID",
                required=True,
                updateable=False,
            ),
            Field("Role", "picklist", picklist=CONTACT_ROLES),
            _flag("IsPrimary"),
        ],
        owned=False,
    )


def _user() -> SObject:
    return _object(
        "User",
        [
            *_name_fields(),
            _text("Username", 80, required=True, unique=True),
            Field("Email", "email", length=128, required=True),
            _text("Alias", 8),
            _flag("IsActive", default=True),
            _text("TimeZoneSidKey", 40, default="America/Los_Angeles"),
        ],
        owned=False,
    )


def _task(external_id_field: str | None) -> SObject:
    fields = [
        Field("Subject", "combobox", length=255),
        Field(
            "Status",
            "picklist",
            picklist=TASK_STATUSES,
            restricted=True,
            required=True,
            default="Not Started",
        ),
        Field(
            "Priority",
            "picklist",
            picklist=("High", "Normal", "Low"),
            restricted=True,
            required=True,
            default="Normal",
        ),
        Field(
            "TaskSubtype",
            "picklist",
            label="Task Subtype",
            picklist=TASK_SUBTYPES,
            restricted=True,
            updateable=False,
        ),
        Field("Type", "picklist", picklist=("Call", "Email", "Meeting", "Other")),
        _ref("WhoId", "Contact", "Lead", label="Name ID"),
        _ref("WhatId", "Account", "Opportunity", label="Related To ID"),
        Field("ActivityDate", "date", label="Due Date Only"),
        Field("Description", "textarea", label="Description", length=32000),
        _flag("IsReminderSet"),
        Field("ReminderDateTime", "datetime"),
        _read_only("IsClosed", "boolean", default=False),
        _read_only("CompletedDateTime", "datetime"),
        _read_only(
            "AccountId",
            "reference",
            references=("Account",),
            relationship="Account",
            label="Account ID",
        ),
    ]
    if external_id_field:
        fields.append(_text(external_id_field, external_id=True, unique=True))
    return _object("Task", fields)


def build_schema(task_external_id_field: str | None) -> dict[str, SObject]:
    """Declare every object the emulated org offers, keyed by API name."""
    objects = [
        _account(),
        _contact(),
        _lead(),
        _opportunity(),
        _contact_role(),
        _user(),
        _task(task_external_id_field),
    ]
    return {o.name: o for o in objects}


def find_object(schema: dict[str, SObject], name: str) -> SObject | None:
    """Look an object up by name, ignoring case as the API does."""
    for obj in schema.values():
        if obj.name.lower() == name.lower():
            return obj
    return None
