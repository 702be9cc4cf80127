"""The interface every CRM integration implements, and its small exception family.

A provider (``integrations.salesforce``, ``integrations.hubspot``) knows one CRM's OAuth
flow and API. The sync engine (``integrations.jobs``) knows the rules every CRM shares:
which activities a message gets, the ledger that makes writes exactly-once, token
refresh, pauses for rate limits and lost access. The engine talks to a provider only
through the classes below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


class CrmError(Exception):
    """Something went wrong talking to a CRM."""


class SessionExpired(CrmError):
    """The access token is no longer accepted; refresh it and try once more."""


class AuthLost(CrmError):
    """The CRM refused a refresh (revoked or expired grant): an admin must reconnect."""


class RateLimited(CrmError):
    """The CRM asked us to slow down; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamFailed(CrmError):
    """A timeout, dropped connection or 5xx: worth retrying with backoff."""


class Rejected(CrmError):
    """The CRM refused the request as invalid; retrying the same request cannot help."""


@dataclass
class Tokens:
    """What an OAuth token response gave us (plain text: encrypt before storing)."""

    access_token: str
    refresh_token: str | None
    expires_at: datetime | None = None
    instance_url: str | None = None
    identity_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Identity:
    """Which CRM account and user a connection belongs to, as shown to admins."""

    account_id: str
    user_id: str | None
    user_name: str | None


@dataclass
class Match:
    """The CRM record standing for one recipient, and where its activity goes."""

    recipient: str
    person_type: str  # Contact / Lead (Salesforce), contact (HubSpot)
    person_id: str
    deal_id: str | None = None
    account_id: str | None = None
    owner_id: str | None = None
    why: str = ""


@dataclass
class Activity:
    """One activity to create or bring up to date in the CRM.

    ``kind`` is 'sent', 'open' or 'click'. ``marker`` is unique to the ledger row and is
    written into the record, so that after a lost response the record can be found
    again instead of created twice.
    """

    kind: str
    marker: str
    match: Match
    owner_id: str | None
    subject: str
    body: str
    occurred_at: datetime
    event_count: int
    message_subject: str
    html: str | None = None


class CrmClient(Protocol):
    """An authenticated client for one connection, built fresh in each job."""

    def match(self, recipient: str) -> Match | None:
        """The record to write a recipient's activity on, or None when there is none."""

    def owner_for(self, sender_email: str) -> str | None:
        """The CRM user id of the rep who sent the message, or None."""

    def find(self, activity: Activity) -> str | None:
        """The id of a record earlier made for ``activity`` (found by its marker)."""

    def create(self, activities: Sequence[Activity]) -> list[str | CrmError]:
        """Create records in as few calls as the CRM allows; ids or errors, in order."""

    def update(self, external_id: str, activity: Activity) -> None:
        """Bring an existing record up to date."""

    def usage(self) -> dict[str, Any] | None:
        """API usage as the CRM last reported it, for the settings page."""


class Provider(Protocol):
    """One CRM: its OAuth flow and a way to build clients."""

    name: str
    label: str

    def authorize_url(
        self,
        settings: dict[str, Any],
        *,
        redirect_uri: str,
        state: str,
        verifier: str,
        login_url: str | None,
    ) -> str:
        """Where to send the admin's browser to grant access."""

    def exchange(
        self,
        settings: dict[str, Any],
        *,
        code: str,
        redirect_uri: str,
        verifier: str,
        login_url: str | None,
    ) -> Tokens:
        """Trade an authorization code for tokens."""

    def identity(self, settings: dict[str, Any], tokens: Tokens) -> Identity:
        """Which account and user the tokens belong to."""

    def refresh(
        self, settings: dict[str, Any], tokens: Tokens, login_url: str | None
    ) -> Tokens:
        """New tokens from the refresh token; AuthLost when the CRM refuses."""

    def revoke(
        self, settings: dict[str, Any], tokens: Tokens, login_url: str | None
    ) -> None:
        """Invalidate the tokens at the CRM (best effort)."""

    def client(self, settings: dict[str, Any], tokens: Tokens) -> CrmClient:
        """An API client whose calls raise the CrmError family."""
