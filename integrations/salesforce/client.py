"""The Salesforce REST client: matching people, and writing Tasks for tracked email.

Every call goes through ``simple_salesforce`` over one ``requests`` session that sets
explicit connect and read timeouts, trusts the configured CA bundle and reads the
``Sforce-Limit-Info`` header of each response. Its exceptions become our CrmError
family in ``translate``, the one place that knows Salesforce's error shapes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import requests
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce, SFType, format_soql
from simple_salesforce.exceptions import SalesforceError

from integrations.base import (
    Activity,
    CrmError,
    Match,
    RateLimited,
    Rejected,
    SessionExpired,
    UpstreamFailed,
)
from integrations.salesforce.matching import find_person

logger = logging.getLogger(__name__)

API_VERSION = "59.0"
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
# Salesforce gives no Retry-After with REQUEST_LIMIT_EXCEEDED; the allowance is a
# rolling 24 hours, so waiting a quarter of an hour is the gentlest useful retry.
LIMIT_BACKOFF = 900.0
# Past this share of the daily allowance, write in small steps, a minute apart, and
# leave the rest to the org's other integrations.
SLOW_DOWN_AT = 0.9
SLOW_DOWN_PAUSE = 60.0
COLLECTION_SIZE = 200
DESCRIPTION_MAX = 32000
# Errors Salesforce documents as transient, whatever their HTTP status.
TRANSIENT_CODES = frozenset(
    {"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "ALL_OR_NONE_OPERATION_ROLLED_BACK"}
)
_LIMIT_INFO = re.compile(r"api-usage=(\d+)/(\d+)")


def ca_bundle(settings: dict[str, Any]) -> str | None:
    """The CA bundle to trust (a local emulator's); None trusts the system's."""
    return str(settings.get("SALESFORCE_CA_BUNDLE") or "") or None


def tls_verify(settings: dict[str, Any]) -> str | bool:
    """What ``requests`` should verify certificates against."""
    return ca_bundle(settings) or True


def timeouts(settings: dict[str, Any]) -> tuple[float, float]:
    """(connect, read) seconds for every call to Salesforce."""
    read = float(settings.get("SALESFORCE_TIMEOUT") or READ_TIMEOUT)
    return min(CONNECT_TIMEOUT, read), read


class _TimeoutAdapter(HTTPAdapter):
    """Gives every request a timeout, as simple-salesforce passes none of its own.

    A configured CA bundle is applied here too: ``requests`` lets REQUESTS_CA_BUNDLE
    from the environment override ``Session.verify``, which would distrust the
    bundle the operator named.
    """

    def __init__(self, timeout: tuple[float, float], ca_bundle: str | None) -> None:
        super().__init__()
        self.timeout = timeout
        self.ca_bundle = ca_bundle

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        return super().send(
            request,
            stream,
            timeout or self.timeout,
            self.ca_bundle or verify,
            cert,
            proxies,
        )


class ApiUsage:
    """The org's API allowance as the last ``Sforce-Limit-Info`` header gave it."""

    def __init__(self) -> None:
        self.used: int | None = None
        self.max: int | None = None

    def observe(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        found = _LIMIT_INFO.search(response.headers.get("Sforce-Limit-Info", ""))
        if found:
            self.used, self.max = int(found[1]), int(found[2])

    @property
    def share(self) -> float:
        return self.used / self.max if self.used is not None and self.max else 0.0

    def report(self) -> dict[str, Any] | None:
        if self.used is None:
            return None
        return {"api_requests_today": f"{self.used}/{self.max}"}


def http_session(
    settings: dict[str, Any], usage: ApiUsage | None = None
) -> requests.Session:
    """A requests session with our TLS trust and timeouts (and usage reading)."""
    session = requests.Session()
    session.verify = tls_verify(settings)
    adapter = _TimeoutAdapter(timeouts(settings), ca_bundle(settings))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if usage is not None:
        session.hooks["response"].append(usage.observe)
    return session


def translate(exc: SalesforceError) -> CrmError:
    """Our exception for a simple-salesforce one."""
    code, text = _first_error(exc.content)
    message = f"Salesforce answered {exc.status} {code}: {text}"[:500]
    if exc.status == 401:
        return SessionExpired(message)
    if code == "REQUEST_LIMIT_EXCEEDED":
        return RateLimited(message, LIMIT_BACKOFF)
    if exc.status >= 500 or code in TRANSIENT_CODES:
        return UpstreamFailed(message)
    return Rejected(message)


def _first_error(content: Any) -> tuple[str, str]:
    if isinstance(content, list) and content and isinstance(content[0], dict):
        first = content[0]
        return str(first.get("errorCode", "")), str(first.get("message", ""))
    return "", str(content)[:200]


def _save_error(errors: list[dict[str, Any]]) -> CrmError:
    """Our exception for a failed record of an sObject Collections call."""
    first = errors[0] if errors else {}
    code = str(first.get("statusCode", ""))
    message = f"Salesforce refused the record: {code} {first.get('message', '')}"
    if code == "REQUEST_LIMIT_EXCEEDED":
        return RateLimited(message, LIMIT_BACKOFF)
    if code in TRANSIENT_CODES:
        return UpstreamFailed(message)
    return Rejected(message)


class SalesforceClient:
    """One org's REST API, for one job; every method raises the CrmError family."""

    def __init__(self, settings: dict[str, Any], instance_url: str, token: str):
        self._usage = ApiUsage()
        self._sf = Salesforce(
            instance_url=instance_url,
            session_id=token,
            version=API_VERSION,
            session=http_session(settings, self._usage),
        )

    @property
    def _tasks(self) -> SFType:
        return cast(SFType, self._sf.Task)

    @contextmanager
    def call(self, what: str) -> Iterator[None]:
        """One API call: slowed down near the daily limit, errors translated."""
        if self._usage.share >= SLOW_DOWN_AT:
            raise RateLimited(
                f"Salesforce API usage is at {self._usage.share:.0%} of the daily "
                "allowance; writing slowly",
                SLOW_DOWN_PAUSE,
            )
        try:
            yield
        except SalesforceError as exc:
            error = translate(exc)
            logger.warning("salesforce call failed call=%s error=%s", what, error)
            raise error from exc
        except requests.RequestException as exc:
            logger.warning("salesforce unreachable call=%s error=%s", what, exc)
            raise UpstreamFailed(f"Salesforce could not be reached ({exc})") from exc

    def query(self, soql: str) -> list[dict[str, Any]]:
        """The records of one SOQL query (its first batch: callers set a LIMIT)."""
        with self.call("query"):
            result = self._sf.query(soql)
        return list(result["records"])

    def match(self, recipient: str) -> Match | None:
        """The Contact or unconverted Lead to write a recipient's activity on."""
        return find_person(self.query, recipient)

    def owner_for(self, sender_email: str) -> str | None:
        """The active User with the sender's email; None leaves the connecting user."""
        rows = self.query(
            format_soql(
                "SELECT Id FROM User WHERE Email = {} AND IsActive = true "
                "ORDER BY LastModifiedDate DESC LIMIT 1",
                sender_email,
            )
        )
        return str(rows[0]["Id"]) if rows else None

    def find(self, activity: Activity) -> str | None:
        """A Task made earlier for this activity, found by the marker it carries.

        SOQL cannot filter on a long text area such as Description, so the Tasks of
        the same person and subject are read and the marker is looked for here.
        """
        rows = self.query(
            format_soql(
                "SELECT Id, Description FROM Task WHERE WhoId = {} AND Subject = {} "
                "ORDER BY CreatedDate DESC LIMIT 200",
                activity.match.person_id,
                activity.subject,
            )
        )
        for row in rows:
            if activity.marker in (row.get("Description") or ""):
                return str(row["Id"])
        return None

    def create(self, activities: Sequence[Activity]) -> list[str | CrmError]:
        """One Task per activity: a single create, or sObject Collections of 200."""
        if len(activities) == 1:
            return [self._create_one(activities[0])]
        results: list[str | CrmError] = []
        for start in range(0, len(activities), COLLECTION_SIZE):
            chunk = activities[start : start + COLLECTION_SIZE]
            try:
                results.extend(self._create_many(chunk))
            except CrmError as exc:
                # What was not sent is retried; what was sent is found by marker.
                results.extend([exc] * (len(activities) - start))
                break
        return results

    def _create_one(self, activity: Activity) -> str | CrmError:
        try:
            with self.call("create"):
                result = self._tasks.create(task_fields(activity, creating=True))
        except Rejected as exc:
            return exc
        return str(result["id"])

    def _create_many(self, activities: Sequence[Activity]) -> list[str | CrmError]:
        records = [
            {"attributes": {"type": "Task"}, **task_fields(a, creating=True)}
            for a in activities
        ]
        with self.call("composite/sobjects"):
            saved = self._sf.restful(
                "composite/sobjects",
                method="POST",
                json={"allOrNone": False, "records": records},
            )
        return [
            str(r["id"]) if r.get("success") else _save_error(r.get("errors") or [])
            for r in saved or []
        ]

    def update(self, external_id: str, activity: Activity) -> None:
        """Bring a Task up to date with the latest counts, time, place and links."""
        with self.call("update"):
            self._tasks.update(external_id, task_fields(activity, creating=False))

    def usage(self) -> dict[str, Any] | None:
        """API usage as the last response's Sforce-Limit-Info header reported it."""
        return self._usage.report()


def task_fields(activity: Activity, creating: bool) -> dict[str, Any]:
    """The Task fields of an activity; who and what are set only on create."""
    fields: dict[str, Any] = {
        "Subject": activity.subject,
        "Status": "Completed",
        "Priority": "Normal",
        "Type": "Email",
        "ActivityDate": activity.occurred_at.date().isoformat(),
        "Description": _description(activity),
    }
    if activity.owner_id:
        fields["OwnerId"] = activity.owner_id
    if creating:
        fields.update(_links(activity))
    return fields


def _links(activity: Activity) -> dict[str, Any]:
    """WhoId, WhatId and the subtype, which Salesforce lets us set only once."""
    match = activity.match
    fields: dict[str, Any] = {
        "TaskSubtype": "Email" if activity.kind == "sent" else "Task",
        "WhoId": match.person_id,
    }
    what = match.deal_id or match.account_id
    if match.person_type == "Contact" and what:
        fields["WhatId"] = what
    return fields


def _description(activity: Activity) -> str:
    why = f"\nMatched: {activity.match.why}" if activity.match.why else ""
    text = f"{activity.body}{why}"
    return text[-DESCRIPTION_MAX:] if len(text) > DESCRIPTION_MAX else text
