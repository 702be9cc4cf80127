"""OAuth bookkeeping: authorization codes, grants, access and refresh tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, field

_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43,128}")


class OAuthError(Exception):
    """A refusal from the token or revoke endpoint: `error` plus its description."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


@dataclass
class Code:
    """A single-use authorization code and what it was issued for."""

    client_id: str
    redirect_uri: str
    scope: tuple[str, ...]
    challenge: str | None
    user_id: str
    expires_at: float


@dataclass
class Grant:
    """One consent: its current refresh token and the access tokens it minted."""

    user_id: str
    scope: tuple[str, ...]
    refresh_token: str | None = None
    access_tokens: set[str] = field(default_factory=set)


@dataclass
class Tokens:
    """Every live credential of the org; callers hold the state lock."""

    org_id: str
    codes: dict[str, Code] = field(default_factory=dict)
    grants: dict[str, Grant] = field(default_factory=dict)
    access: dict[str, str] = field(default_factory=dict)
    refresh: dict[str, str] = field(default_factory=dict)

    def issue_code(self, code: Code) -> str:
        """Store an authorization code and return its value."""
        value = "aPrx" + secrets.token_urlsafe(32)
        self.codes[value] = code
        return value

    def redeem(
        self, value: str, client_id: str, redirect_uri: str, verifier: str | None
    ) -> Code:
        """Check an authorization code for the token request; consume it on success."""
        code = self.codes.get(value)
        if code is None or code.client_id != client_id:
            raise OAuthError("invalid_grant", "invalid authorization code")
        if time.monotonic() > code.expires_at:
            del self.codes[value]
            raise OAuthError("invalid_grant", "expired authorization code")
        if code.redirect_uri != redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri must match configuration")
        if code.challenge is not None and not _verifier_matches(
            verifier, code.challenge
        ):
            raise OAuthError("invalid_grant", "invalid code verifier")
        del self.codes[value]
        return code

    def open_grant(self, user_id: str, scope: tuple[str, ...]) -> str:
        """Record a new consent and hand out its refresh token when the scope allows."""
        grant_id = secrets.token_hex(8)
        grant = Grant(user_id, scope)
        self.grants[grant_id] = grant
        if offers_refresh(scope):
            self._set_refresh(grant_id, grant)
        return grant_id

    def new_access_token(self, grant_id: str) -> str:
        """Mint an access token under a grant."""
        token = f"{self.org_id[:15]}!{secrets.token_urlsafe(72)}"
        self.access[token] = grant_id
        self.grants[grant_id].access_tokens.add(token)
        return token

    def use_refresh(self, token: str, rotate: bool) -> str:
        """Find the grant of a refresh token, replacing the token when rotating."""
        grant_id = self.refresh.get(token)
        if grant_id is None:
            raise OAuthError("invalid_grant", "expired access/refresh token")
        if rotate:
            del self.refresh[token]
            self._set_refresh(grant_id, self.grants[grant_id])
        return grant_id

    def grant_of(self, access_token: str) -> Grant | None:
        """Return the grant behind a live access token."""
        grant_id = self.access.get(access_token)
        return self.grants.get(grant_id) if grant_id else None

    def revoke(self, token: str) -> None:
        """Revoke an access token, or a refresh token with every token of its grant."""
        if token in self.access:
            grant_id = self.access.pop(token)
            self.grants[grant_id].access_tokens.discard(token)
            return
        grant_id = self.refresh.pop(token, "")
        grant = self.grants.pop(grant_id, None)
        if grant is None:
            raise OAuthError("invalid_token", "invalid token")
        for access in grant.access_tokens:
            self.access.pop(access, None)

    def expire_access_tokens(self) -> None:
        """Invalidate every access token issued so far, as a session timeout would."""
        for grant in self.grants.values():
            grant.access_tokens.clear()
        self.access.clear()

    def _set_refresh(self, grant_id: str, grant: Grant) -> None:
        token = "5Aep" + secrets.token_urlsafe(64)
        grant.refresh_token = token
        self.refresh[token] = grant_id


def offers_refresh(scope: tuple[str, ...]) -> bool:
    """Tell whether a scope set earns a refresh token."""
    return bool({"refresh_token", "offline_access", "full"} & set(scope))


def valid_challenge(challenge: str) -> bool:
    """Tell whether a code_challenge has the shape of a base64url SHA-256 digest."""
    return bool(_CHALLENGE.fullmatch(challenge))


def s256(verifier: str) -> str:
    """Compute the S256 code challenge for a verifier."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign(client_secret: str, identity_url: str, issued_at: str) -> str:
    """Compute the token response signature: HMAC-SHA256 of id + issued_at."""
    message = (identity_url + issued_at).encode()
    mac = hmac.new(client_secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(mac).decode("ascii")


def _verifier_matches(verifier: str | None, challenge: str) -> bool:
    if not verifier:
        return False
    return hmac.compare_digest(s256(verifier), challenge)
