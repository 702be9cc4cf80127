"""What the emulated portal knows: object types, properties, scopes, associations."""

from dataclasses import dataclass, field

# NOTE: a subset of HubSpot's scope names, enough for CRM, sales and
# marketing apps; a name outside it is refused as HubSpot refuses an
# unknown scope.
KNOWN_SCOPES = frozenset(
    {
        "oauth",
        "timeline",
        "tickets",
        "e-commerce",
        "content",
        "forms",
        "files",
        "automation",
        "sales-email-read",
        "crm.lists.read",
        "crm.lists.write",
        "crm.objects.contacts.read",
        "crm.objects.contacts.write",
        "crm.objects.companies.read",
        "crm.objects.companies.write",
        "crm.objects.deals.read",
        "crm.objects.deals.write",
        "crm.objects.owners.read",
        "crm.objects.users.read",
        "crm.objects.users.write",
        "crm.objects.custom.read",
        "crm.objects.custom.write",
        "crm.objects.quotes.read",
        "crm.objects.quotes.write",
        "crm.objects.line_items.read",
        "crm.objects.line_items.write",
        "crm.objects.leads.read",
        "crm.objects.leads.write",
        "crm.schemas.contacts.read",
        "crm.schemas.companies.read",
        "crm.schemas.deals.read",
        "crm.schemas.custom.read",
        "settings.users.read",
        "conversations.read",
        "conversations.write",
    }
)


# What the product asks for; used when a test or demo takes a token directly.
DEFAULT_SCOPES = frozenset(
    {
        "oauth",
        "crm.objects.contacts.read",
        "crm.objects.contacts.write",
        "crm.objects.deals.read",
        "crm.objects.owners.read",
    }
)


@dataclass(frozen=True)
class ObjectType:
    """One CRM object type: its names, properties and the scopes guarding it."""

    name: str
    singular: str
    type_id: str
    properties: frozenset[str]
    defaults: tuple[str, ...]
    created_prop: str
    modified_prop: str
    read_scopes: frozenset[str]
    write_scopes: frozenset[str]
    required: tuple[str, ...] = ()
    enums: dict[str, tuple[str, ...]] = field(default_factory=dict)


CONTACTS_READ = frozenset({"crm.objects.contacts.read", "crm.objects.contacts.write"})
CONTACTS_WRITE = frozenset({"crm.objects.contacts.write"})
DEALS_READ = frozenset({"crm.objects.deals.read", "crm.objects.deals.write"})
DEALS_WRITE = frozenset({"crm.objects.deals.write"})
COMPANIES_READ = frozenset(
    {"crm.objects.companies.read", "crm.objects.companies.write"}
)
OWNERS_READ = frozenset({"crm.objects.owners.read"})

_COMMON = frozenset({"hs_object_id", "hubspot_owner_id", "hs_createdate"})
_ENGAGEMENT_DEFAULTS = ("hs_createdate", "hs_lastmodifieddate", "hs_object_id")
_ENGAGEMENT_COMMON = _COMMON | {
    "hs_timestamp",
    "hs_lastmodifieddate",
    "hs_attachment_ids",
}

OBJECT_TYPES: dict[str, ObjectType] = {
    t.name: t
    for t in (
        ObjectType(
            name="contacts",
            singular="CONTACT",
            type_id="0-1",
            properties=_COMMON
            | {
                "email",
                "firstname",
                "lastname",
                "company",
                "phone",
                "jobtitle",
                "lifecyclestage",
                "createdate",
                "lastmodifieddate",
            },
            defaults=(
                "createdate",
                "email",
                "firstname",
                "hs_object_id",
                "lastmodifieddate",
                "lastname",
            ),
            created_prop="createdate",
            modified_prop="lastmodifieddate",
            read_scopes=CONTACTS_READ,
            write_scopes=CONTACTS_WRITE,
        ),
        ObjectType(
            name="companies",
            singular="COMPANY",
            type_id="0-2",
            properties=_COMMON
            | {"name", "domain", "createdate", "hs_lastmodifieddate"},
            defaults=(
                "createdate",
                "domain",
                "hs_lastmodifieddate",
                "hs_object_id",
                "name",
            ),
            created_prop="createdate",
            modified_prop="hs_lastmodifieddate",
            read_scopes=COMPANIES_READ,
            write_scopes=frozenset({"crm.objects.companies.write"}),
        ),
        ObjectType(
            name="deals",
            singular="DEAL",
            type_id="0-3",
            properties=_COMMON
            | {
                "dealname",
                "dealstage",
                "pipeline",
                "amount",
                "closedate",
                "hs_is_closed",
                "hs_is_closed_won",
                "createdate",
                "hs_lastmodifieddate",
            },
            defaults=(
                "amount",
                "closedate",
                "createdate",
                "dealname",
                "dealstage",
                "hs_lastmodifieddate",
                "hs_object_id",
                "pipeline",
            ),
            created_prop="createdate",
            modified_prop="hs_lastmodifieddate",
            read_scopes=DEALS_READ,
            write_scopes=DEALS_WRITE,
        ),
        ObjectType(
            name="emails",
            singular="EMAIL",
            type_id="0-49",
            properties=_ENGAGEMENT_COMMON
            | {
                "hs_email_direction",
                "hs_email_status",
                "hs_email_subject",
                "hs_email_text",
                "hs_email_html",
                "hs_email_headers",
                "hs_email_sender_email",
                "hs_email_to_email",
            },
            defaults=_ENGAGEMENT_DEFAULTS,
            created_prop="hs_createdate",
            modified_prop="hs_lastmodifieddate",
            read_scopes=CONTACTS_READ | {"sales-email-read"},
            write_scopes=CONTACTS_WRITE,
            required=("hs_timestamp",),
            enums={
                "hs_email_direction": ("EMAIL", "INCOMING_EMAIL", "FORWARDED_EMAIL"),
                "hs_email_status": (
                    "BOUNCED",
                    "FAILED",
                    "SCHEDULED",
                    "SENDING",
                    "SENT",
                ),
            },
        ),
        ObjectType(
            name="notes",
            singular="NOTE",
            type_id="0-46",
            properties=_ENGAGEMENT_COMMON | {"hs_note_body"},
            defaults=_ENGAGEMENT_DEFAULTS,
            created_prop="hs_createdate",
            modified_prop="hs_lastmodifieddate",
            read_scopes=CONTACTS_READ,
            write_scopes=CONTACTS_WRITE,
            required=("hs_timestamp",),
        ),
        ObjectType(
            name="tasks",
            singular="TASK",
            type_id="0-27",
            properties=_ENGAGEMENT_COMMON
            | {
                "hs_task_subject",
                "hs_task_body",
                "hs_task_status",
                "hs_task_priority",
                "hs_task_type",
                "hs_task_reminders",
                "hs_queue_membership_ids",
            },
            defaults=_ENGAGEMENT_DEFAULTS,
            created_prop="hs_createdate",
            modified_prop="hs_lastmodifieddate",
            read_scopes=CONTACTS_READ,
            write_scopes=CONTACTS_WRITE,
            required=("hs_timestamp",),
            enums={
                "hs_task_status": (
                    "NOT_STARTED",
                    "IN_PROGRESS",
                    "WAITING",
                    "COMPLETED",
                    "DEFERRED",
                ),
                "hs_task_priority": ("NONE", "LOW", "MEDIUM", "HIGH"),
                # "TODO" is HubSpot's own value for a to-do task.
                "hs_task_type": ("EMAIL", "CALL", "TODO", "LINKED_IN"),
            },
        ),
    )
}

# HubSpot-defined association types: (from, to) -> {type id: label key}.
# The reverse direction of each pair carries its own id.
ASSOCIATION_TYPES: dict[tuple[str, str], dict[int, str]] = {
    ("contacts", "deals"): {4: "contact_to_deal"},
    ("deals", "contacts"): {3: "deal_to_contact"},
    ("contacts", "companies"): {1: "contact_to_company", 279: "contact_to_company"},
    ("companies", "contacts"): {2: "company_to_contact", 280: "company_to_contact"},
    ("deals", "companies"): {5: "deal_to_company", 341: "deal_to_company"},
    ("companies", "deals"): {6: "company_to_deal", 342: "company_to_deal"},
    ("emails", "contacts"): {198: "email_to_contact"},
    ("emails", "deals"): {210: "email_to_deal"},
    ("emails", "companies"): {186: "email_to_company"},
    ("contacts", "emails"): {197: "contact_to_email"},
    ("deals", "emails"): {209: "deal_to_email"},
    ("companies", "emails"): {185: "company_to_email"},
    ("notes", "contacts"): {202: "note_to_contact"},
    ("notes", "deals"): {214: "note_to_deal"},
    ("notes", "companies"): {190: "note_to_company"},
    ("contacts", "notes"): {201: "contact_to_note"},
    ("deals", "notes"): {213: "deal_to_note"},
    ("companies", "notes"): {189: "company_to_note"},
    ("tasks", "contacts"): {204: "task_to_contact"},
    ("tasks", "deals"): {216: "task_to_deal"},
    ("tasks", "companies"): {192: "task_to_company"},
    ("contacts", "tasks"): {203: "contact_to_task"},
    ("deals", "tasks"): {215: "deal_to_task"},
    ("companies", "tasks"): {191: "company_to_task"},
}

# Ids HubSpot uses for a labelled "Primary" association rather than the plain one.
PRIMARY_TYPE_IDS = frozenset({1, 2, 5, 6})


def reverse_type_id(from_type: str, to_type: str, type_id: int) -> int | None:
    """Return the id HubSpot records on the other side of an association."""
    reverse = ASSOCIATION_TYPES.get((to_type, from_type), {})
    primary = type_id in PRIMARY_TYPE_IDS
    for candidate in reverse:
        if (candidate in PRIMARY_TYPE_IDS) == primary:
            return candidate
    return None


def object_type(name: str) -> ObjectType | None:
    """Return an object type by any name HubSpot accepts for it in a path."""
    return _ALIASES.get(name.lower())


_ALIASES = {
    alias: t
    for t in OBJECT_TYPES.values()
    for alias in (t.name, t.type_id, t.singular.lower(), t.name.removesuffix("s"))
}
