"""Authorization codes, access tokens and refresh tokens of the emulated app."""

import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field

from . import errors

CODE_LIFETIME_S = 300


@dataclass
class Grant:
    """Who authorised the app, in which portal, with which scopes."""

    hub_id: int
    user_id: int
    user: str
    scopes: list[str]
    hub_domain: str


@dataclass
class AccessToken:
    """An issued bearer token and the wall-clock time it stops working."""

    token: str
    grant: Grant
    expires_at: float
    refresh_token: str = ""


@dataclass
class Code:
    """A single-use authorization code awaiting exchange."""

    client_id: str
    redirect_uri: str
    grant: Grant
    expires_at: float = field(default_factory=lambda: time.time() + CODE_LIFETIME_S)


class TokenBook:
    """Thread-safe issue, lookup and revocation of the app's credentials."""

    def __init__(self, client_id: str, client_secret: str, lifetime_s: int) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.lifetime_s = lifetime_s
        self.app_id = 100000 + sum(map(ord, client_id))
        self.lock = threading.Lock()
        self.codes: dict[str, Code] = {}
        self.access: dict[str, AccessToken] = {}
        self.refresh: dict[str, Grant] = {}

    def new_code(self, redirect_uri: str, grant: Grant) -> str:
        """Issue a code for a consent the user just gave."""
        code = str(uuid.uuid4())
        with self.lock:
            self.codes[code] = Code(self.client_id, redirect_uri, grant)
        return code

    def check_client(self, client_id: str, client_secret: str) -> None:
        """Raise HubSpot's refusal for a wrong client id or secret."""
        if client_id != self.client_id:
            raise errors.oauth_error("BAD_CLIENT_ID", "missing or unknown client id")
        if client_secret != self.client_secret:
            raise errors.oauth_error(
                "BAD_CLIENT_SECRET", "missing or unknown client secret"
            )

    def exchange_code(self, code: str, redirect_uri: str) -> dict[str, object]:
        """Trade a code, once, for an access and a refresh token."""
        with self.lock:
            pending = self.codes.pop(code, None)
        if pending is None:
            raise errors.oauth_error("BAD_AUTH_CODE", "missing or unknown auth code")
        if pending.expires_at < time.time():
            raise errors.oauth_error("EXPIRED_AUTH_CODE", "auth code is expired")
        if pending.redirect_uri != redirect_uri:
            raise errors.oauth_error(
                "BAD_REDIRECT_URI",
                "redirect_uri does not match the one used to obtain the auth code",
            )
        return self.issue_direct(pending.grant)

    def issue_direct(self, grant: Grant) -> dict[str, object]:
        """Issue a refresh and an access token as if a code had been exchanged."""
        refresh = f"na1-{uuid.uuid4()}"
        with self.lock:
            self.refresh[refresh] = grant
        return self.issue(grant, refresh)

    def exchange_refresh(self, refresh: str) -> dict[str, object]:
        """Mint a new access token; HubSpot keeps the same refresh token."""
        with self.lock:
            grant = self.refresh.get(refresh)
        if grant is None:
            raise errors.oauth_error(
                "BAD_REFRESH_TOKEN", "missing or unknown refresh token"
            )
        return self.issue(grant, refresh)

    def issue(self, grant: Grant, refresh: str) -> dict[str, object]:
        """Create an access token and return the v1 token response."""
        token = "C" + secrets.token_urlsafe(48)
        expires_at = time.time() + self.lifetime_s
        with self.lock:
            self.access[token] = AccessToken(token, grant, expires_at, refresh)
        return {
            "token_type": "bearer",
            "refresh_token": refresh,
            "access_token": token,
            "expires_in": self.lifetime_s,
            "hub_id": grant.hub_id,
            "scopes": list(grant.scopes),
        }

    def lookup(self, token: str) -> AccessToken:
        """Return a live access token or raise the 401 HubSpot sends."""
        with self.lock:
            found = self.access.get(token)
        if found is None:
            raise errors.invalid_authentication()
        late = time.time() - found.expires_at
        if late >= 0:
            raise errors.expired_authentication(int(late))
        return found

    def expire_all(self) -> None:
        """Make every issued access token already expired."""
        with self.lock:
            for token in self.access.values():
                token.expires_at = min(token.expires_at, time.time() - 1)

    def revoke_refresh(self, refresh: str) -> None:
        """Delete a refresh token; its access tokens keep working until expiry."""
        with self.lock:
            if self.refresh.pop(refresh, None) is None:
                raise errors.crm_error(
                    404, "OBJECT_NOT_FOUND", "refresh token not found"
                )

    def access_info(self, token: str) -> dict[str, object]:
        """Return the v1 metadata of a live access token."""
        with self.lock:
            found = self.access.get(token)
        if found is None or found.expires_at <= time.time():
            raise errors.crm_error(
                404, "OBJECT_NOT_FOUND", "access token not found or expired"
            )
        grant = found.grant
        return {
            "token": token,
            "user": grant.user,
            "hub_domain": grant.hub_domain,
            "scopes": list(grant.scopes),
            "hub_id": grant.hub_id,
            "app_id": self.app_id,
            "expires_in": int(found.expires_at - time.time()),
            "user_id": grant.user_id,
            "token_type": "access",
            "is_private_distribution": False,
        }

    def refresh_info(self, refresh: str) -> dict[str, object]:
        """Return the v1 metadata of a refresh token."""
        with self.lock:
            grant = self.refresh.get(refresh)
        if grant is None:
            raise errors.crm_error(404, "OBJECT_NOT_FOUND", "refresh token not found")
        return {
            "token": refresh,
            "user": grant.user,
            "hub_domain": grant.hub_domain,
            "scopes": list(grant.scopes),
            "hub_id": grant.hub_id,
            "client_id": self.client_id,
            "user_id": grant.user_id,
            "token_type": "refresh",
        }

    def reset(self) -> None:
        """Forget every code and token."""
        with self.lock:
            self.codes.clear()
            self.access.clear()
            self.refresh.clear()
