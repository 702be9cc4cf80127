"""Salesforce: the OAuth 2.0 web server flow with PKCE, and clients for the REST API."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session

from integrations.base import (
    AuthLost,
    CrmClient,
    Identity,
    Rejected,
    Tokens,
    UpstreamFailed,
)
from integrations.salesforce.client import (
    SalesforceClient,
    http_session,
    timeouts,
    tls_verify,
)

logger = logging.getLogger(__name__)

# API access, a refresh token for the workers, and the identity URL for the page.
SCOPES = "api refresh_token id"


class SalesforceProvider:
    """Connects an org through OAuth and builds REST clients for it."""

    name = "salesforce"
    label = "Salesforce"

    def authorize_url(
        self,
        settings: dict[str, Any],
        *,
        redirect_uri: str,
        state: str,
        verifier: str,
        login_url: str | None,
    ) -> str:
        """The consent page of the chosen login host, with an S256 code challenge."""
        oauth = _session(settings, redirect_uri=redirect_uri, scope=SCOPES)
        url, _ = oauth.create_authorization_url(
            f"{_host(settings, login_url)}/services/oauth2/authorize",
            state=state,
            code_verifier=verifier,
        )
        return str(url)

    def exchange(
        self,
        settings: dict[str, Any],
        *,
        code: str,
        redirect_uri: str,
        verifier: str,
        login_url: str | None,
    ) -> Tokens:
        """Trade the authorization code (and the PKCE verifier) for tokens."""
        oauth = _session(settings, redirect_uri=redirect_uri)
        with _token_errors(AuthLost):
            body = oauth.fetch_token(
                _token_url(settings, login_url),
                grant_type="authorization_code",
                code=code,
                code_verifier=verifier,
            )
        logger.info("salesforce authorization code exchanged")
        return _tokens(dict(body))

    def identity(self, settings: dict[str, Any], tokens: Tokens) -> Identity:
        """The org and user behind the tokens, from the identity URL."""
        if not tokens.identity_url:
            raise Rejected("Salesforce sent no identity URL with the tokens.")
        with _http_errors():
            response = http_session(settings).get(
                tokens.identity_url,
                headers={"Authorization": f"Bearer {tokens.access_token}"},
            )
        if response.status_code != 200:
            raise Rejected(f"Salesforce refused the identity request ({response.text})")
        body = response.json()
        name = body.get("display_name") or body.get("username")
        return Identity(
            account_id=str(body["organization_id"]),
            user_id=str(body["user_id"]),
            user_name=f"{name} ({body['username']})" if name else None,
        )

    def refresh(
        self, settings: dict[str, Any], tokens: Tokens, login_url: str | None
    ) -> Tokens:
        """New tokens from the refresh token; AuthLost when Salesforce refuses it."""
        if not tokens.refresh_token:
            raise AuthLost("No refresh token is stored; connect Salesforce again.")
        oauth = _session(settings)
        with _token_errors(AuthLost):
            body = oauth.refresh_token(
                _token_url(settings, login_url), refresh_token=tokens.refresh_token
            )
        fresh = _tokens(dict(body))
        fresh.instance_url = fresh.instance_url or tokens.instance_url
        return fresh

    def revoke(
        self, settings: dict[str, Any], tokens: Tokens, login_url: str | None
    ) -> None:
        """Revoke the refresh token, which also ends its access tokens."""
        token = tokens.refresh_token or tokens.access_token
        if not token:
            return
        host = tokens.instance_url or _host(settings, login_url)
        with _http_errors():
            response = http_session(settings).post(
                f"{host.rstrip('/')}/services/oauth2/revoke", data={"token": token}
            )
        if response.status_code == 200 or "invalid_token" in response.text:
            logger.info("salesforce tokens revoked")
            return
        raise Rejected(f"Salesforce did not revoke the token ({response.status_code})")

    def client(self, settings: dict[str, Any], tokens: Tokens) -> CrmClient:
        """A REST client for the org, over the instance URL the tokens name."""
        if not tokens.instance_url:
            raise AuthLost("No Salesforce instance URL is stored; connect again.")
        return SalesforceClient(settings, tokens.instance_url, tokens.access_token)


def _host(settings: dict[str, Any], login_url: str | None) -> str:
    host = login_url or settings["SALESFORCE_LOGIN_URL"]
    return str(host).rstrip("/")


def _token_url(settings: dict[str, Any], login_url: str | None) -> str:
    return f"{_host(settings, login_url)}/services/oauth2/token"


def _session(settings: dict[str, Any], **options: Any) -> OAuth2Session:
    """An OAuth client for our connected app, trusting the configured CA bundle."""
    oauth = OAuth2Session(
        settings["SALESFORCE_CLIENT_ID"],
        settings["SALESFORCE_CLIENT_SECRET"],
        token_endpoint_auth_method="client_secret_post",  # noqa: S106
        code_challenge_method="S256",
        default_timeout=timeouts(settings),
        **options,
    )
    oauth.verify = tls_verify(settings)
    for prefix, adapter in http_session(settings).adapters.items():
        oauth.mount(prefix, adapter)
    return oauth


def _tokens(body: dict[str, Any]) -> Tokens:
    """Our Tokens from a token response (Salesforce sends no expires_in)."""
    return Tokens(
        access_token=str(body["access_token"]),
        refresh_token=body.get("refresh_token"),
        instance_url=body.get("instance_url"),
        identity_url=body.get("id"),
        extra={"scope": body.get("scope"), "issued_at": body.get("issued_at")},
    )


@contextmanager
def _token_errors(refused: type[AuthLost]) -> Iterator[None]:
    """Token endpoint failures: a refusal loses access, the rest may pass."""
    try:
        with _http_errors():
            yield
    except OAuthError as exc:
        logger.warning("salesforce token request refused error=%s", exc.error)
        raise refused(f"Salesforce refused: {exc.error} ({exc.description})") from exc


@contextmanager
def _http_errors() -> Iterator[None]:
    try:
        yield
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if 400 <= status < 500:
            raise AuthLost(f"Salesforce refused the token request ({status})") from exc
        raise UpstreamFailed(f"Salesforce answered {status}") from exc
    except requests.RequestException as exc:
        raise UpstreamFailed(f"Salesforce could not be reached ({exc})") from exc


PROVIDER = SalesforceProvider()
