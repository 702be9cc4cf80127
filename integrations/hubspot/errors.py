"""HubSpot's failures turned into the CrmError family, in one place.

Every package of hubspot-api-client defines its own ``ApiException`` class, so they
are told apart by ``status`` (and body), never by class. Network failures reach us
as urllib3 errors because the client is built without urllib3 retries.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import urllib3

from integrations.base import (
    CrmError,
    RateLimited,
    Rejected,
    SessionExpired,
    UpstreamFailed,
)

# HubSpot's 409 on create names the record that already holds the unique value.
_EXISTING_ID = re.compile(r"Existing ID:\s*(\d+)", re.IGNORECASE)
_DEFAULT_INTERVAL_S = 10.0


def is_api_exception(exc: BaseException) -> bool:
    """Whether ``exc`` is one of the client's per-package ``ApiException`` classes."""
    return type(exc).__module__.startswith("hubspot.") and hasattr(exc, "status")


def body_of(exc: Any) -> dict[str, Any]:
    """The JSON error body HubSpot sent, or an empty dict."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def existing_id(exc: Any) -> str | None:
    """The id a 409 Conflict on create says already exists, if it says one."""
    if getattr(exc, "status", None) != 409:
        return None
    found = _EXISTING_ID.search(str(body_of(exc).get("message", "")))
    return found.group(1) if found else None


def translate(exc: BaseException, what: str) -> CrmError:
    """The CrmError standing for a failed call; ``what`` names the call."""
    if isinstance(exc, urllib3.exceptions.HTTPError):
        return UpstreamFailed(f"HubSpot did not answer {what}: {type(exc).__name__}")
    status = int(getattr(exc, "status", 0) or 0)
    body = body_of(exc)
    message = f"HubSpot {what}: {status} {body.get('message') or ''}".strip()
    if status == 401 and body.get("category") == "EXPIRED_AUTHENTICATION":
        return SessionExpired(message)
    if status == 429:
        return RateLimited(message, retry_after_s(body, getattr(exc, "headers", None)))
    if status == 0 or status >= 500:
        return UpstreamFailed(message)
    return Rejected(message)


def retry_after_s(body: dict[str, Any], headers: Any) -> float:
    """How long a 429 asks us to wait, from its policy and the interval header."""
    policy = str(body.get("policyName") or "")
    if policy == "DAILY":
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        # NOTE: HubSpot resets the daily limit at midnight in the portal's own time
        # zone, which the API does not tell us; UTC midnight may be up to a day off.
        return (tomorrow - datetime.now(UTC)).total_seconds()
    if policy == "SECONDLY":
        return 1.0
    interval = (
        headers.get("X-HubSpot-RateLimit-Interval-Milliseconds") if headers else None
    )
    try:
        return int(interval) / 1000 if interval else _DEFAULT_INTERVAL_S
    except ValueError:
        return _DEFAULT_INTERVAL_S
