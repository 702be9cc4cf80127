"""A small data set for local demos."""

from __future__ import annotations

import datetime

from .emulator import SalesforceEmulator


def seed_demo(emu: SalesforceEmulator) -> dict[str, str]:
    """Create an account, a contact on an open deal, a lead and a rep; return ids."""
    close = (datetime.date.today() + datetime.timedelta(days=30)).isoformat()
    rep = emu.seed(
        "User",
        {
            "Username": "rep@emulated-org.example.com",
            "Email": "rep@example.com",
            "FirstName": "Rita",
            "LastName": "Rep",
            "Alias": "rrep",
        },
    )
    account = emu.seed("Account", {"Name": "Acme Corporation", "OwnerId": rep})
    contact = emu.seed(
        "Contact",
        {
            "FirstName": "Ann",
            "LastName": "Ng",
            "Email": "ann@example.com",
            "AccountId": account,
            "OwnerId": rep,
        },
    )
    deal = emu.seed(
        "Opportunity",
        {
            "Name": "Acme renewal",
            "StageName": "Proposal/Price Quote",
            "CloseDate": close,
            "AccountId": account,
            "OwnerId": rep,
        },
    )
    role = emu.seed(
        "OpportunityContactRole",
        {
            "ContactId": contact,
            "OpportunityId": deal,
            "Role": "Decision Maker",
            "IsPrimary": True,
        },
    )
    lead = emu.seed(
        "Lead",
        {
            "FirstName": "Lee",
            "LastName": "Park",
            "Company": "Globex",
            "Email": "lee@globex.example",
            "OwnerId": rep,
        },
    )
    return {
        "user": rep,
        "account": account,
        "contact": contact,
        "opportunity": deal,
        "contact_role": role,
        "lead": lead,
    }
