"""HubSpot's OAuth flow (v1 token API, as hubspot-api-client wraps it) and clients.

NOTE: HubSpot's v1 OAuth endpoints are replaced by v3 and go away on 2027-02-16;
hubspot-api-client 12 only wraps v1, so the move waits for a client release.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from hubspot import HubSpot

from integrations.base import (
    AuthLost,
    CrmError,
    Identity,
    RateLimited,
    Tokens,
    UpstreamFailed,
)
from integrations.hubspot.budget import budget_for
from integrations.hubspot.client import HubSpotClient, no_retries
from integrations.hubspot.errors import body_of, is_api_exception, translate

logger = logging.getLogger(__name__)

# What the integration really uses: contacts (read them, write engagements on
# them), deals to choose one, owners to map the sender. HubSpot requires `oauth`.
SCOPES = (
    "oauth",
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    "crm.objects.deals.read",
    "crm.objects.owners.read",
)
CONNECT_TIMEOUT_S = 5.0


def _timeout(settings: dict[str, Any]) -> tuple[float, float]:
    return CONNECT_TIMEOUT_S, float(settings.get("HUBSPOT_TIMEOUT", 20.0))


def _hubspot(settings: dict[str, Any], access_token: str | None = None) -> HubSpot:
    return HubSpot(
        access_token=access_token,
        host=settings["HUBSPOT_API_URL"].rstrip("/"),
        retry=no_retries(),
    )


class HubSpotProvider:
    """HubSpot behind the integration interface."""

    name = "hubspot"
    label = "HubSpot"

    def authorize_url(
        self,
        settings: dict[str, Any],
        *,
        redirect_uri: str,
        state: str,
        verifier: str,
        login_url: str | None,
    ) -> str:
        """HubSpot's consent page; its v1 flow takes no PKCE, so the verifier waits."""
        query = {
            "client_id": settings["HUBSPOT_CLIENT_ID"],
            "redirect_uri": redirect_uri,
            "scope": " ".join(SCOPES),
            "state": state,
        }
        return f"{settings['HUBSPOT_AUTHORIZE_URL']}?{urlencode(query)}"

    def exchange(
        self,
        settings: dict[str, Any],
        *,
        code: str,
        redirect_uri: str,
        verifier: str,
        login_url: str | None,
    ) -> Tokens:
        """Trade the authorization code for an access and a refresh token."""
        return self._token(
            settings,
            grant_type="authorization_code",
            code=code,
            redirect_uri=redirect_uri,
        )

    def refresh(
        self, settings: dict[str, Any], tokens: Tokens, login_url: str | None
    ) -> Tokens:
        """A new access token; AuthLost when HubSpot refuses the refresh token."""
        if not tokens.refresh_token:
            raise AuthLost("No HubSpot refresh token is stored; connect again.")
        fresh = self._token(
            settings, grant_type="refresh_token", refresh_token=tokens.refresh_token
        )
        fresh.extra = {**tokens.extra, **fresh.extra}
        return fresh

    def _token(self, settings: dict[str, Any], **form: str) -> Tokens:
        api = _hubspot(settings).oauth.tokens_api
        try:
            answer = api.create(
                client_id=settings["HUBSPOT_CLIENT_ID"],
                client_secret=settings["HUBSPOT_CLIENT_SECRET"],
                _request_timeout=_timeout(settings),
                **form,
            )
        except Exception as exc:
            if not is_api_exception(exc) and not _network(exc):
                raise
            raise _token_error(exc, form["grant_type"]) from exc
        expires_at = datetime.now(UTC) + timedelta(seconds=int(answer.expires_in or 0))
        return Tokens(
            access_token=answer.access_token,
            refresh_token=answer.refresh_token,
            expires_at=expires_at if answer.expires_in else None,
        )

    def identity(self, settings: dict[str, Any], tokens: Tokens) -> Identity:
        """The portal (hub id) and user the access token was granted by."""
        api = _hubspot(settings).oauth.access_tokens_api
        try:
            info = api.get(tokens.access_token, _request_timeout=_timeout(settings))
        except Exception as exc:
            if is_api_exception(exc) or _network(exc):
                raise translate(exc, "access token info") from exc
            raise
        tokens.extra["account_id"] = str(info.hub_id)
        return Identity(
            account_id=str(info.hub_id),
            user_id=str(info.user_id) if info.user_id is not None else None,
            user_name=info.user,
        )

    def revoke(
        self, settings: dict[str, Any], tokens: Tokens, login_url: str | None
    ) -> None:
        """Delete the refresh token at HubSpot (an unknown one is already gone)."""
        if not tokens.refresh_token:
            return
        api = _hubspot(settings).oauth.refresh_tokens_api
        try:
            api.archive(tokens.refresh_token, _request_timeout=_timeout(settings))
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return
            if is_api_exception(exc) or _network(exc):
                raise translate(exc, "refresh token revocation") from exc
            raise

    def client(self, settings: dict[str, Any], tokens: Tokens) -> HubSpotClient:
        """A client for the connection's portal, within its shared budget."""
        portal = str(tokens.extra.get("account_id") or "unknown")
        return HubSpotClient(
            tokens.access_token,
            settings["HUBSPOT_API_URL"].rstrip("/"),
            budget_for(settings.get("REDIS_URL", ""), portal),
            _timeout(settings),
        )


def _network(exc: BaseException) -> bool:
    import urllib3

    return isinstance(exc, urllib3.exceptions.HTTPError)


def _token_error(exc: BaseException, grant_type: str) -> CrmError:
    """A refused token request means reconnecting; a failed one, trying again."""
    error = translate(exc, f"token request ({grant_type})")
    if isinstance(error, UpstreamFailed | RateLimited):
        return error
    body = body_of(exc)
    reason = body.get("message") or body.get("error_description") or "refused"
    return AuthLost(f"HubSpot refused the {grant_type.replace('_', ' ')}: {reason}")


PROVIDER = HubSpotProvider()
