"""Everything one emulator holds, behind one lock."""

from __future__ import annotations

import datetime
import threading
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from . import ids
from .auth import Tokens
from .records import Org
from .schema import build_schema

FAULT_KINDS = frozenset(
    {
        "expired_session",
        "refresh_refused",
        "request_limit",
        "server_error",
        "slow",
        "drop_after_commit",
    }
)
# Session and limit refusals only make sense where a bearer token is checked.
API_ONLY_FAULTS = frozenset({"expired_session", "request_limit"})
DEFAULT_SCOPES = ("api", "refresh_token", "offline_access", "id", "web", "openid")
API_PREFIX = "/services/data/v"


@dataclass
class Config:
    """How an emulated org and its connected app are set up."""

    client_id: str = "test-client"
    client_secret: str = "test-secret"
    rotate_refresh_tokens: bool = True
    api_version: str = "59.0"
    daily_api_limit: int = 15000
    allowed_scopes: tuple[str, ...] = DEFAULT_SCOPES
    redirect_uris: tuple[str, ...] | None = None
    code_ttl: float = 900.0
    task_external_id_field: str | None = "Tracking_Event_Id__c"
    url: str = ""


@dataclass
class Fault:
    """A failure armed for the next `remaining` matching requests."""

    kind: str
    remaining: int
    path_contains: str | None = None
    seconds: float = 2.0
    status: int = 500

    def applies(self, path: str) -> bool:
        """Tell whether this fault targets a request path (with its query string)."""
        if self.path_contains is not None and self.path_contains not in path:
            return False
        if self.kind == "refresh_refused":
            return path.startswith("/services/oauth2/token")
        if self.kind in API_ONLY_FAULTS or self.path_contains is None:
            return path.startswith(API_PREFIX)
        return not path.startswith("/__emulator__")


class Call(NamedTuple):
    """One request the emulator answered; status 0 means the connection was cut."""

    method: str
    path: str
    status: int
    at: float


@dataclass
class State:
    """The org, its credentials, armed faults and the call log."""

    config: Config
    lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self.schema = build_schema(self.config.task_external_id_field)
        self.pod = ids.new_pod()
        self.reset()

    def reset(self) -> None:
        """Forget every record, token, fault and call; recreate the admin user."""
        with self.lock:
            self.org = Org(self.schema, self.pod)
            self.tokens = Tokens(self.org.org_id)
            self.faults: list[Fault] = []
            self.calls: list[Call] = []
            self.cursors: dict[str, tuple[list[dict[str, Any]], int]] = {}
            self.consents: dict[str, dict[str, Any]] = {}
            self.api_used = 0
            self.usage_day = _today()
            self.user_id = self._seed_admin()

    def _seed_admin(self) -> str:
        """Create the user every authorization is granted as."""
        user = {
            "Username": "admin@emulated-org.example.com",
            "Email": "admin@example.com",
            "FirstName": "Ada",
            "LastName": "Admin",
            "Alias": "aadmin",
        }
        placeholder = ids.make_id("User", self.pod, 0)
        user_id = self.org.seed(self.schema["User"], user, placeholder)
        # The first user creates itself; point its audit fields at its own id.
        record = self.org.records[user_id]
        record["CreatedById"] = record["LastModifiedById"] = user_id
        return user_id

    @property
    def identity_url(self) -> str:
        """Return the identity URL of the admin user."""
        return f"{self.config.url}/id/{self.org.org_id}/{self.user_id}"

    def arm(self, fault: Fault) -> None:
        """Add a fault; kinds are checked so a typo fails loudly."""
        if fault.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {fault.kind!r}")
        with self.lock:
            self.faults.append(fault)

    def take_fault(self, kinds: set[str], path: str) -> Fault | None:
        """Consume one armed fault of the given kinds that targets `path`."""
        with self.lock:
            for fault in self.faults:
                if fault.kind in kinds and fault.remaining > 0 and fault.applies(path):
                    fault.remaining -= 1
                    return fault
        return None

    def count_api_call(self) -> bool:
        """Count one API request; False when the daily allowance is used up."""
        with self.lock:
            if self.usage_day != _today():
                self.usage_day, self.api_used = _today(), 0
            if self.api_used >= self.config.daily_api_limit:
                return False
            self.api_used += 1
            return True

    def limit_info(self) -> str:
        """Return the Sforce-Limit-Info header value."""
        return f"api-usage={self.api_used}/{self.config.daily_api_limit}"

    def log(self, method: str, path: str, status: int) -> None:
        """Append a call to the log."""
        with self.lock:
            self.calls.append(Call(method, path, status, time.time()))


def _today() -> datetime.date:
    # NOTE: Salesforce counts API calls over a rolling 24 hours; the emulator
    # starts afresh at UTC midnight, which is close enough for tests and demos.
    return datetime.datetime.now(datetime.UTC).date()
