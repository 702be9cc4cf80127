"""Everything one emulated HubSpot portal holds, and how it is seeded."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .schema import OBJECT_TYPES
from .store import Record, Store
from .tokens import Grant, TokenBook
from .traffic import FaultBook, RateLimiter, RequestLog
from .validation import iso, iso_now

CLOSED_STAGES = frozenset({"closedwon", "closedlost"})


@dataclass(frozen=True)
class AppSettings:
    """The public app registered with the emulated HubSpot."""

    client_id: str
    client_secret: str
    hub_id: int
    redirect_uris: tuple[str, ...]
    user_email: str
    user_id: int

    @property
    def hub_domain(self) -> str:
        """Return the portal's domain as token metadata reports it."""
        return f"portal-{self.hub_id}.hubspot.test"


class Portal:
    """One portal's records, tokens, rate limit, faults and request log."""

    def __init__(
        self,
        settings: AppSettings,
        rate_limit: int,
        rate_window_s: float,
        token_lifetime_s: int,
    ) -> None:
        self.settings = settings
        self.store = Store(settings.hub_id)
        self.tokens = TokenBook(
            settings.client_id, settings.client_secret, token_lifetime_s
        )
        self.limiter = RateLimiter(rate_limit, rate_window_s)
        self.faults = FaultBook()
        self.log = RequestLog()

    def grant(self, scopes: Iterable[str]) -> Grant:
        """Return the consent the portal's admin gives for these scopes."""
        s = self.settings
        return Grant(s.hub_id, s.user_id, s.user_email, list(scopes), s.hub_domain)

    def reset(self) -> None:
        """Return the portal to empty, with no tokens, faults or history."""
        self.store.reset()
        self.tokens.reset()
        self.limiter.reset()
        self.faults.clear()
        self.log.clear()

    def seed_owner(
        self, email: str, first_name: str, last_name: str, user_id: int | None = None
    ) -> str:
        """Add an owner (a HubSpot user who can own records); return its id."""
        owner_id = self.store.next_id()
        now = iso_now()
        uid = user_id if user_id is not None else 9000000 + int(owner_id)
        self.store.add_owner(
            {
                "id": owner_id,
                "email": email,
                "type": "PERSON",
                "firstName": first_name,
                "lastName": last_name,
                "userId": uid,
                "userIdIncludingInactive": uid,
                "createdAt": now,
                "updatedAt": now,
                "archived": False,
                "teams": [],
            }
        )
        return owner_id

    def seed_contact(
        self,
        email: str,
        firstname: str | None = None,
        lastname: str | None = None,
        owner_id: str | None = None,
        **properties: str,
    ) -> str:
        """Add a contact; return its id."""
        props = {"email": email, **properties}
        optional = {
            "firstname": firstname,
            "lastname": lastname,
            "hubspot_owner_id": owner_id,
        }
        props.update({k: v for k, v in optional.items() if v is not None})
        return self.store.insert(OBJECT_TYPES["contacts"], props)["id"]

    def seed_deal(
        self,
        name: str,
        stage: str = "appointmentscheduled",
        closed: bool = False,
        amount: float | str | None = None,
        contact_ids: Sequence[str] = (),
        last_modified: datetime | str | None = None,
    ) -> str:
        """Add a deal associated with the given contacts; return its id."""
        is_closed = closed or stage in CLOSED_STAGES
        props = {
            "dealname": name,
            "dealstage": stage,
            "pipeline": "default",
            "hs_is_closed": "true" if is_closed else "false",
            "hs_is_closed_won": "true" if stage == "closedwon" else "false",
        }
        if amount is not None:
            props["amount"] = str(amount)
        record = self.store.insert(OBJECT_TYPES["deals"], props)
        if last_modified is not None:
            _backdate(record, last_modified)
        for contact_id in contact_ids:
            self.store.link("deals", record["id"], "contacts", str(contact_id), 3)
        return record["id"]


def _backdate(record: Record, moment: datetime | str) -> None:
    stamp = moment if isinstance(moment, str) else iso(moment)
    record["properties"]["hs_lastmodifieddate"] = stamp
    record["updatedAt"] = stamp


def seed_from(portal: Portal, data: dict[str, Any]) -> dict[str, list[str]]:
    """Seed owners, contacts and deals from a JSON document; return their ids."""
    owners = [portal.seed_owner(**o) for o in data.get("owners", [])]
    contacts = [portal.seed_contact(**c) for c in data.get("contacts", [])]
    deals = [portal.seed_deal(**d) for d in data.get("deals", [])]
    return {"owners": owners, "contacts": contacts, "deals": deals}


def seed_demo(portal: Portal) -> dict[str, list[str]]:
    """Seed a small, believable sales team and pipeline for local demos."""
    owner = portal.seed_owner("rep@example.com", "Riley", "Rep")
    ada = portal.seed_contact("ada@example.org", "Ada", "Lovelace", owner)
    alan = portal.seed_contact("alan@example.org", "Alan", "Turing", owner)
    grace = portal.seed_contact("grace@example.net", "Grace", "Hopper")
    deals = [
        portal.seed_deal("Analytical engine", "qualifiedtobuy", contact_ids=[ada]),
        portal.seed_deal("Bombe upgrade", "closedwon", amount=5000, contact_ids=[alan]),
        portal.seed_deal("Compiler pilot", contact_ids=[grace, ada]),
    ]
    return {"owners": [owner], "contacts": [ada, alan, grace], "deals": deals}
