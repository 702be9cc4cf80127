"""The HubSpot CRM client: matching, and the engagements that carry our activities.

What goes where, and why:

- The sent email is an Email engagement (``hs_email_status`` SENT, direction EMAIL),
  associated with the contact (198) and the chosen deal (210).
- Opens and clicks are one Note per message, kind and contact (202, 214), rewritten
  through PATCH as counted events arrive, with ``hs_timestamp`` moved to the latest
  one so the note sits where the rep looks. HubSpot's timeline events would read
  better, but a new public app can only send them once HubSpot has approved its
  app events, and an Email engagement per open would flood the timeline and the
  rep's email reports with mails that were never sent.
- Follow-ups (kinds ``followup:*``) are Tasks (204, 216).

Each record carries the ledger marker (``tm-<marker>``) in its text, so after a lost
answer the record is found again through the contact's v4 associations, which are
consistent at once (the search index is not).

The client is built without urllib3 retries: the sync engine retries, with the
ledger making that safe. Every call waits for the portal's shared budget first and
has explicit connect and read timeouts.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hubspot import HubSpot
from hubspot.crm import AssociationType
from urllib3.util.retry import Retry

from integrations.base import Activity, CrmError, Match, RateLimited, Rejected
from integrations.hubspot.budget import Budget, BudgetExhausted, LocalBudget
from integrations.hubspot.deals import choose_deal
from integrations.hubspot.errors import existing_id, is_api_exception, translate

logger = logging.getLogger(__name__)

BATCH_LIMIT = 100
ASSOCIATION_PAGE = 500
DEAL_PROPERTIES = [
    "dealname",
    "dealstage",
    "hs_is_closed",
    "hs_is_closed_won",
    "hubspot_owner_id",
    "hs_lastmodifieddate",
]


@dataclass(frozen=True)
class Kind:
    """A HubSpot engagement type and how our activities map onto it."""

    name: str
    body_property: str
    to_contact: int
    to_deal: int


EMAIL = Kind(
    "emails",
    "hs_email_text",
    AssociationType.EMAIL_TO_CONTACT,
    AssociationType.EMAIL_TO_DEAL,
)
NOTE = Kind(
    "notes",
    "hs_note_body",
    AssociationType.NOTE_TO_CONTACT,
    AssociationType.NOTE_TO_DEAL,
)
TASK = Kind(
    "tasks",
    "hs_task_body",
    AssociationType.TASK_TO_CONTACT,
    AssociationType.TASK_TO_DEAL,
)


def kind_of(activity: Activity) -> Kind:
    """The engagement type an activity is written as."""
    if activity.kind == "sent":
        return EMAIL
    if activity.kind.startswith("followup"):
        return TASK
    return NOTE


def no_retries() -> Retry:
    """A urllib3 policy that never retries: failures surface at once."""
    return Retry(total=0, redirect=False, raise_on_status=False)


class HubSpotClient:
    """One connection's calls to one portal, each within the portal's budget."""

    def __init__(
        self,
        access_token: str,
        host: str,
        budget: Budget | LocalBudget,
        timeout: tuple[float, float],
    ) -> None:
        self._hs = HubSpot(access_token=access_token, host=host, retry=no_retries())
        self._budget = budget
        self._timeout = timeout
        self._apis: dict[str, Any] = {}
        self._usage: dict[str, Any] | None = None

    # Calls -----------------------------------------------------------------------

    def _api(self, name: str, build: Callable[[], Any]) -> Any:
        if name not in self._apis:
            self._apis[name] = build()
        return self._apis[name]

    def _call(
        self, what: str, method: Callable[..., Any], *args: Any, **kw: Any
    ) -> Any:
        """Make one call (a ``*_with_http_info`` method) within budget and timeouts."""
        try:
            self._budget.acquire()
        except BudgetExhausted as exc:
            raise RateLimited(str(exc), exc.wait_s) from exc
        try:
            data, _status, headers = method(*args, _request_timeout=self._timeout, **kw)
        except Exception as exc:
            if not is_api_exception(exc) and not _is_network(exc):
                raise
            error = translate(exc, what)
            self._after_error(error, exc)
            raise error from exc
        self._observe(headers)
        return data

    def _after_error(self, error: CrmError, exc: BaseException) -> None:
        self._observe(getattr(exc, "headers", None))
        if isinstance(error, RateLimited):
            self._budget.hold(min(error.retry_after, 60.0))
        logger.warning("hubspot call failed error=%s", error)

    def _observe(self, headers: Any) -> None:
        if not headers:
            return
        self._budget.observe(headers)
        left = headers.get("X-HubSpot-RateLimit-Remaining")
        if left is not None:
            self._usage = {
                "requests left in window": left,
                "window limit": headers.get("X-HubSpot-RateLimit-Max"),
            }

    def usage(self) -> dict[str, Any] | None:
        """The rate-limit headers of the last answer, for the settings page."""
        return self._usage

    # Matching --------------------------------------------------------------------

    def owner_for(self, sender_email: str) -> str | None:
        """The HubSpot owner whose email is the sender's."""
        api = self._api("owners", lambda: self._hs.crm.owners.owners_api)
        page = self._call(
            "owner by email", api.get_page_with_http_info, email=sender_email, limit=1
        )
        return str(page.results[0].id) if page.results else None

    def match(self, recipient: str) -> Match | None:
        """The contact with this email, and the open deal chosen for it."""
        return self.match_many([recipient]).get(recipient.lower())

    def match_many(
        self, recipients: Iterable[str], owner_id: str | None = None
    ) -> dict[str, Match | None]:
        """Match many recipients in three batch calls per hundred."""
        wanted = list(dict.fromkeys(r.lower() for r in recipients))
        found: dict[str, Match | None] = dict.fromkeys(wanted)
        for chunk in _chunks(wanted, BATCH_LIMIT):
            contacts = self._contacts_by_email(chunk)
            deals = self._deals_of([c.id for c in contacts.values()])
            for email, contact in contacts.items():
                found[email] = self._match(email, contact, deals, owner_id)
        return found

    def _contacts_by_email(self, emails: Sequence[str]) -> dict[str, Any]:
        api = self._api("contacts", lambda: self._hs.crm.contacts.batch_api)
        body = {
            "idProperty": "email",
            "properties": ["email", "hubspot_owner_id"],
            "inputs": [{"id": email} for email in emails],
        }
        page = self._call("contacts by email", api.read_with_http_info, body)
        return {
            str(c.properties.get("email") or "").lower(): c for c in page.results or []
        }

    def _deals_of(self, contact_ids: Sequence[str]) -> dict[str, list[Any]]:
        """Each contact's deals (read with their stage, owner and changes)."""
        if not contact_ids:
            return {}
        links = self._associated_many("contacts", contact_ids, "deals")
        deal_ids = sorted({d for ids in links.values() for d in ids})
        deals = {d.id: d for d in self._read_many("deals", deal_ids, DEAL_PROPERTIES)}
        return {c: [deals[d] for d in ids if d in deals] for c, ids in links.items()}

    def _match(
        self, email: str, contact: Any, deals: dict[str, list[Any]], owner: str | None
    ) -> Match:
        deal, why = choose_deal(deals.get(contact.id, []), owner)
        return Match(
            recipient=email,
            person_type="contact",
            person_id=str(contact.id),
            deal_id=deal,
            owner_id=contact.properties.get("hubspot_owner_id") or None,
            why=f"contact found by email; {why}",
        )

    def _associated_many(
        self, from_type: str, ids: Sequence[str], to_type: str
    ) -> dict[str, list[str]]:
        api = self._api("assoc-batch", lambda: self._hs.crm.associations.v4.batch_api)
        out: dict[str, list[str]] = {str(i): [] for i in ids}
        for chunk in _chunks(list(ids), BATCH_LIMIT):
            body = {"inputs": [{"id": str(i)} for i in chunk]}
            page = self._call(
                f"{from_type} to {to_type}",
                api.get_page_with_http_info,
                from_type,
                to_type,
                body,
            )
            for row in page.results or []:
                out[str(row._from.id)] = [str(t.to_object_id) for t in row.to or []]
        return out

    def _read_many(
        self, type_name: str, ids: Sequence[str], properties: list[str]
    ) -> list[Any]:
        if type_name in ("deals", "contacts"):
            api = self._api(
                f"{type_name}-batch",
                lambda: getattr(self._hs.crm, type_name).batch_api,
            )
        else:
            api = self._api(
                f"{type_name}-batch",
                lambda: getattr(self._hs.crm.objects, type_name).batch_api,
            )
        results: list[Any] = []
        for chunk in _chunks(list(ids), BATCH_LIMIT):
            body = {"properties": properties, "inputs": [{"id": i} for i in chunk]}
            page = self._call(f"read {type_name}", api.read_with_http_info, body)
            results.extend(page.results or [])
        return results

    # Finding what we made ----------------------------------------------------------

    def find(self, activity: Activity) -> str | None:
        """The record carrying the activity's marker on its contact, if any."""
        kind = kind_of(activity)
        ids = self._associated("contacts", activity.match.person_id, kind.name)
        tag = _tag(activity.marker)
        for record in self._read_many(kind.name, ids, [kind.body_property]):
            if tag in str(record.properties.get(kind.body_property) or ""):
                return str(record.id)
        return None

    def _associated(self, from_type: str, from_id: str, to_type: str) -> list[str]:
        """Every id associated with one object, newest last, through all pages."""
        api = self._api("assoc", lambda: self._hs.crm.associations.v4.basic_api)
        ids: list[str] = []
        after: str | None = None
        while True:
            kwargs = {"limit": ASSOCIATION_PAGE, **({"after": after} if after else {})}
            page = self._call(
                f"{from_type} {to_type}",
                api.get_page_with_http_info,
                from_type,
                from_id,
                to_type,
                **kwargs,
            )
            ids.extend(str(r.to_object_id) for r in page.results or [])
            nxt = page.paging.next if page.paging else None
            if nxt is None or not nxt.after:
                return ids
            after = nxt.after

    # Writing ------------------------------------------------------------------------

    def create(self, activities: Sequence[Activity]) -> list[str | CrmError]:
        """Create records in batches of up to a hundred per engagement type."""
        results: list[str | CrmError | None] = [None] * len(activities)
        by_kind: dict[Kind, list[int]] = {}
        for index, activity in enumerate(activities):
            by_kind.setdefault(kind_of(activity), []).append(index)
        for kind, indexes in by_kind.items():
            for chunk in _chunks(indexes, BATCH_LIMIT):
                batch = [activities[i] for i in chunk]
                for i, result in zip(
                    chunk, self._create_chunk(kind, batch), strict=True
                ):
                    results[i] = result
        return [r if r is not None else CrmError("not attempted") for r in results]

    def _create_chunk(self, kind: Kind, batch: list[Activity]) -> list[str | CrmError]:
        if len(batch) == 1:
            return [self._create_one(kind, batch[0])]
        api = self._api(f"{kind.name}-batch", lambda: self._batch_api(kind))
        body = {"inputs": [_create_input(kind, a) for a in batch]}
        try:
            page = self._call(f"create {kind.name}", api.create_with_http_info, body)
        except Rejected:
            # One bad input fails the whole batch: find it by creating one at a time.
            logger.info(
                "batch refused, creating singly kind=%s n=%d", kind.name, len(batch)
            )
            return [self._create_one(kind, a) for a in batch]
        except CrmError as exc:
            return [exc] * len(batch)
        return _ids_by_marker(kind, batch, page.results or [])

    def _create_one(self, kind: Kind, activity: Activity) -> str | CrmError:
        api = self._api(kind.name, lambda: self._basic_api(kind))
        body = _create_input(kind, activity)
        try:
            record = self._call(f"create {kind.name}", api.create_with_http_info, body)
        except CrmError as exc:
            conflict = existing_id(exc.__cause__)
            if conflict:
                logger.info("create conflicted; existing id taken kind=%s", kind.name)
                return conflict
            return exc
        return str(record.id)

    def update(self, external_id: str, activity: Activity) -> None:
        """Bring one record up to date."""
        kind = kind_of(activity)
        api = self._api(kind.name, lambda: self._basic_api(kind))
        body = {"properties": _properties(kind, activity)}
        self._call(f"update {kind.name}", api.update_with_http_info, external_id, body)

    def update_many(
        self, pairs: Sequence[tuple[str, Activity]]
    ) -> list[CrmError | None]:
        """Bring records up to date in batches; None or an error for each, in order."""
        results: list[CrmError | None] = [None] * len(pairs)
        by_kind: dict[Kind, list[int]] = {}
        for index, (_, activity) in enumerate(pairs):
            by_kind.setdefault(kind_of(activity), []).append(index)
        for kind, indexes in by_kind.items():
            for chunk in _chunks(indexes, BATCH_LIMIT):
                errors = self._update_chunk(kind, [pairs[i] for i in chunk])
                for i, error in zip(chunk, errors, strict=True):
                    results[i] = error
        return results

    def _update_chunk(
        self, kind: Kind, pairs: list[tuple[str, Activity]]
    ) -> list[CrmError | None]:
        api = self._api(f"{kind.name}-batch", lambda: self._batch_api(kind))
        body = {
            "inputs": [
                {"id": external_id, "properties": _properties(kind, activity)}
                for external_id, activity in pairs
            ]
        }
        try:
            page = self._call(f"update {kind.name}", api.update_with_http_info, body)
        except CrmError as exc:
            return [exc] * len(pairs)
        done = {str(r.id) for r in page.results or []}
        gone = Rejected(f"HubSpot {kind.name} record no longer exists")
        return [None if i in done else gone for i, _ in pairs]

    def _basic_api(self, kind: Kind) -> Any:
        return getattr(self._hs.crm.objects, kind.name).basic_api

    def _batch_api(self, kind: Kind) -> Any:
        return getattr(self._hs.crm.objects, kind.name).batch_api


def _is_network(exc: BaseException) -> bool:
    import urllib3

    return isinstance(exc, urllib3.exceptions.HTTPError)


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _tag(marker: str) -> str:
    return f"tm-{marker}"


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _properties(kind: Kind, activity: Activity) -> dict[str, str]:
    """The engagement's properties for an activity."""
    props = {"hs_timestamp": _stamp(activity.occurred_at)}
    if activity.owner_id:
        props["hubspot_owner_id"] = activity.owner_id
    if kind is EMAIL:
        props.update(
            hs_email_direction="EMAIL",
            hs_email_status="SENT",
            hs_email_subject=activity.message_subject[:255],
            hs_email_text=activity.body,
        )
        if activity.html:
            props["hs_email_html"] = activity.html
    elif kind is TASK:
        props.update(
            hs_task_subject=activity.subject,
            hs_task_body=activity.body,
            hs_task_status="NOT_STARTED",
            hs_task_type="EMAIL",
        )
    else:
        props["hs_note_body"] = _note_html(activity)
    return props


def _note_html(activity: Activity) -> str:
    """The note as HubSpot shows it: rich text, the subject in bold."""
    lines = [html.escape(line) for line in activity.body.splitlines()]
    return f"<p><strong>{html.escape(activity.subject)}</strong></p><p>" + (
        "<br>".join(lines) + "</p>"
    )


def _create_input(kind: Kind, activity: Activity) -> dict[str, Any]:
    match = activity.match
    targets = [(match.person_id, kind.to_contact)]
    if match.deal_id:
        targets.append((match.deal_id, kind.to_deal))
    return {
        "properties": _properties(kind, activity),
        "associations": [
            {
                "to": {"id": str(to_id)},
                "types": [
                    {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": t}
                ],
            }
            for to_id, t in targets
        ],
    }


def _ids_by_marker(
    kind: Kind, batch: list[Activity], records: list[Any]
) -> list[str | CrmError]:
    """Pair batch results with their inputs by marker (HubSpot may reorder them)."""
    by_tag = {}
    for record in records:
        text = str((record.properties or {}).get(kind.body_property) or "")
        for activity in batch:
            if _tag(activity.marker) in text:
                by_tag[activity.marker] = str(record.id)
    missing = CrmError(f"HubSpot did not return a created {kind.name} record")
    return [by_tag.get(a.marker, missing) for a in batch]
