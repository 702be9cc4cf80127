"""Which Salesforce record stands for a recipient, and where its activity goes.

Precedence, when an address belongs to several records:

1. A Contact is preferred to a Lead: it is someone already in a sales process.
2. Among Contacts, one on an open Opportunity (through an OpportunityContactRole)
   wins; among several such, the Opportunity with the latest activity, then the
   latest change. The Task's WhatId is that Opportunity.
3. Else the most recently active Contact (LastActivityDate, then the latest change);
   its WhatId is its Account, when it has one.
4. Else the most recently active unconverted Lead, then the newest. A Lead gets
   WhoId only, as Salesforce allows no WhatId with a Lead.
5. Else nothing is written.

Every address is quoted by ``format_soql``, so apostrophes, backslashes and plus
signs match literally and no address can change a query.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from simple_salesforce import format_soql

from integrations.base import Match

Query = Callable[[str], list[dict[str, Any]]]
CANDIDATES = 20

_CONTACTS = (
    "SELECT Id, AccountId FROM Contact WHERE Email = {} "
    "ORDER BY LastActivityDate DESC NULLS LAST, LastModifiedDate DESC LIMIT {}"
)
_OPEN_ROLES = (
    "SELECT ContactId, OpportunityId FROM OpportunityContactRole "
    "WHERE ContactId IN {} AND Opportunity.IsClosed = false "
    "ORDER BY Opportunity.LastActivityDate DESC NULLS LAST, "
    "Opportunity.LastModifiedDate DESC LIMIT 1"
)
_LEADS = (
    "SELECT Id FROM Lead WHERE Email = {} AND IsConverted = false "
    "ORDER BY LastActivityDate DESC NULLS LAST, CreatedDate DESC LIMIT {}"
)


def find_person(query: Query, recipient: str) -> Match | None:
    """The record a recipient's activity goes on, by the rules above."""
    contacts = query(format_soql(_CONTACTS, recipient, CANDIDATES))
    if contacts:
        return _contact_match(query, recipient, contacts)
    leads = query(format_soql(_LEADS, recipient, CANDIDATES))
    if leads:
        why = "unconverted Lead" + _others(len(leads), "Leads")
        return Match(recipient, "Lead", str(leads[0]["Id"]), why=why)
    return None


def _contact_match(
    query: Query, recipient: str, contacts: list[dict[str, Any]]
) -> Match:
    ids = [str(c["Id"]) for c in contacts]
    roles = query(format_soql(_OPEN_ROLES, ids))
    others = _others(len(contacts), "Contacts")
    if roles:
        contact_id = str(roles[0]["ContactId"])
        contact = next(c for c in contacts if c["Id"] == contact_id)
        return Match(
            recipient,
            "Contact",
            contact_id,
            deal_id=str(roles[0]["OpportunityId"]),
            account_id=contact.get("AccountId"),
            why="Contact on an open Opportunity" + others,
        )
    first = contacts[0]
    return Match(
        recipient,
        "Contact",
        str(first["Id"]),
        account_id=first.get("AccountId"),
        why="most recently active Contact" + others,
    )


def _others(count: int, plural: str) -> str:
    if count < 2:
        return ""
    shown = f"{count}+" if count >= CANDIDATES else str(count)
    return f" ({shown} {plural} share this address; the others got nothing)"
