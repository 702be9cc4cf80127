"""OAuth web server flow, token, revoke and identity endpoints."""

from __future__ import annotations

import base64
import html
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import Blueprint, Response, current_app, request

from .auth import Code, OAuthError, sign, valid_challenge
from .errors import json_response, oauth_error
from .state import State

bp = Blueprint("oauth", __name__)

_CONSENT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Allow Access?</title></head>
<body>
<h1>Allow Access?</h1>
<p><strong>{app}</strong> is asking to access {user} in the emulated org.</p>
<p>Requested scopes: {scopes}</p>
<form method="post" action="/services/oauth2/authorize">
<input type="hidden" name="consent" value="{consent}">
<button type="submit" name="decision" value="deny">Deny</button>
<button type="submit" name="decision" value="allow">Allow</button>
</form>
</body></html>
"""
_ERROR_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Error</title></head>
<body><h1>error={code}</h1><p>{description}</p></body></html>
"""


def _state() -> State:
    state: State = current_app.extensions["salesforce_emulator"]
    return state


def _error_page(code: str, description: str) -> Response:
    body = _ERROR_PAGE.format(
        code=html.escape(code), description=html.escape(description)
    )
    return Response(body, status=400, content_type="text/html;charset=UTF-8")


def _redirect_with(uri: str, params: dict[str, str | None]) -> Response:
    """Redirect to `uri` with extra query parameters, keeping its own."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query) + [
        (k, v) for k, v in params.items() if v is not None
    ]
    location = urlunsplit(parts._replace(query=urlencode(query)))
    return Response(status=302, headers={"Location": location})


@bp.get("/services/oauth2/authorize")
def authorize() -> Response:
    """Check an authorization request and show the consent page."""
    state, args = _state(), request.args
    if args.get("client_id") != state.config.client_id:
        return _error_page("OAUTH_EC_APP_NOT_FOUND", "client identifier invalid")
    redirect_uri = args.get("redirect_uri", "")
    if not _redirect_allowed(state, redirect_uri):
        return _error_page(
            "redirect_uri_mismatch", "redirect_uri must match configuration"
        )
    refusal = _refusal(state, args)
    if refusal is not None:
        return _redirect_with(redirect_uri, {**refusal, "state": args.get("state")})
    consent = secrets.token_urlsafe(16)
    scope = tuple(args.get("scope", "").split()) or state.config.allowed_scopes
    with state.lock:
        state.consents[consent] = {
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": args.get("state"),
            "challenge": args.get("code_challenge"),
        }
        user = state.org.records[state.user_id]["Username"]
    page = _CONSENT_PAGE.format(
        app=html.escape(state.config.client_id),
        user=html.escape(user),
        scopes=html.escape(" ".join(scope)),
        consent=consent,
    )
    return Response(page, content_type="text/html;charset=UTF-8")


def _redirect_allowed(state: State, uri: str) -> bool:
    """Accept configured callback URLs, or any http(s) URL when none are set."""
    allowed = state.config.redirect_uris
    if allowed is not None:
        return uri in allowed
    return urlsplit(uri).scheme in ("http", "https") and bool(urlsplit(uri).netloc)


def _refusal(state: State, args: Any) -> dict[str, str] | None:
    """Find the error an authorization request earns, if any."""
    if args.get("response_type") != "code":
        return {
            "error": "unsupported_response_type",
            "error_description": "response type not supported",
        }
    requested = set(args.get("scope", "").split())
    if not requested <= set(state.config.allowed_scopes):
        return {
            "error": "invalid_scope",
            "error_description": "the requested scope is not allowed",
        }
    challenge = args.get("code_challenge")
    method = args.get("code_challenge_method", "S256")
    if challenge is not None and (method != "S256" or not valid_challenge(challenge)):
        return {
            "error": "invalid_request",
            "error_description": "invalid code_challenge",
        }
    return None


@bp.post("/services/oauth2/authorize")
def decide() -> Response:
    """Turn the user's Allow or Deny into a redirect to the callback."""
    state = _state()
    with state.lock:
        pending = state.consents.pop(request.form.get("consent", ""), None)
    if pending is None:
        return _error_page(
            "invalid_request", "this authorization request is no longer valid"
        )
    if request.form.get("decision") != "allow":
        refusal = {
            "error": "access_denied",
            "error_description": "end-user denied authorization",
        }
        return _redirect_with(
            pending["redirect_uri"], {**refusal, "state": pending["state"]}
        )
    code = Code(
        client_id=state.config.client_id,
        redirect_uri=pending["redirect_uri"],
        scope=pending["scope"],
        challenge=pending["challenge"],
        user_id=state.user_id,
        expires_at=time.monotonic() + state.config.code_ttl,
    )
    with state.lock:
        value = state.tokens.issue_code(code)
    return _redirect_with(
        pending["redirect_uri"], {"code": value, "state": pending["state"]}
    )


@bp.post("/services/oauth2/token")
def token() -> Response:
    """Exchange an authorization code or a refresh token for an access token."""
    state = _state()
    try:
        with state.lock:
            return json_response(_grant(state, request.form))
    except OAuthError as exc:
        return oauth_error(exc.code, exc.description)


def _grant(state: State, form: Any) -> dict[str, Any]:
    """Run one token request; the caller holds the lock."""
    client_id, secret = _client_credentials(form)
    config = state.config
    if client_id != config.client_id:
        raise OAuthError("invalid_client_id", "client identifier invalid")
    if secret is not None and secret != config.client_secret:
        raise OAuthError("invalid_client", "invalid client credentials")
    grant_type = form.get("grant_type")
    if grant_type == "authorization_code":
        if secret is None:
            raise OAuthError("invalid_client", "invalid client credentials")
        code = state.tokens.redeem(
            form.get("code", ""),
            client_id,
            form.get("redirect_uri", ""),
            form.get("code_verifier"),
        )
        return token_response(
            state, state.tokens.open_grant(code.user_id, code.scope), True
        )
    if grant_type == "refresh_token":
        if state.take_fault({"refresh_refused"}, request.full_path):
            raise OAuthError("invalid_grant", "expired access/refresh token")
        rotate = config.rotate_refresh_tokens
        grant_id = state.tokens.use_refresh(form.get("refresh_token", ""), rotate)
        return token_response(state, grant_id, rotate)
    raise OAuthError("unsupported_grant_type", "grant type not supported")


def _client_credentials(form: Any) -> tuple[str | None, str | None]:
    """Read the client id and secret from HTTP Basic or the form body."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Basic "):
        decoded = base64.b64decode(header[6:]).decode("utf-8", "replace")
        client_id, _, secret = decoded.partition(":")
        return client_id, secret
    return form.get("client_id"), form.get("client_secret")


def token_response(state: State, grant_id: str, with_refresh: bool) -> dict[str, Any]:
    """Build the token response for a grant, minting a new access token."""
    grant = state.tokens.grants[grant_id]
    issued_at = str(int(time.time() * 1000))
    identity = state.identity_url
    # NOTE: no id_token is issued even for the openid scope; the product does
    # not read one, and signing a JWT would need a published key set.
    body: dict[str, Any] = {"access_token": state.tokens.new_access_token(grant_id)}
    if with_refresh and grant.refresh_token:
        body["refresh_token"] = grant.refresh_token
    body.update(
        signature=sign(state.config.client_secret, identity, issued_at),
        scope=" ".join(grant.scope),
        instance_url=state.config.url,
        id=identity,
        token_type="Bearer",
        issued_at=issued_at,
    )
    return body


@bp.route("/services/oauth2/revoke", methods=["GET", "POST"])
def revoke() -> Response:
    """Revoke an access token, or a refresh token and everything it issued."""
    state = _state()
    value = request.values.get("token")
    if not value:
        return oauth_error("unsupported_token_type", "token type not supported")
    try:
        with state.lock:
            state.tokens.revoke(value)
    except OAuthError as exc:
        return oauth_error(exc.code, exc.description)
    return Response(status=200)


def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("bearer", "oauth"):
        return value.strip()
    return request.args.get("oauth_token") or request.args.get("access_token") or ""


@bp.get("/id/<org_id>/<user_id>")
def identity(org_id: str, user_id: str) -> Response:
    """Describe a user of the org to a holder of a valid access token."""
    state = _state()
    with state.lock:
        if state.tokens.grant_of(_bearer()) is None:
            return Response("Bad_OAuth_Token", status=403, content_type="text/plain")
        if org_id[:15] != state.org.org_id[:15]:
            return Response("Wrong_Org", status=403, content_type="text/plain")
        user = state.org.live(user_id)
        if user is None or user["attributes"]["type"] != "User":
            return Response("Bad_Id", status=404, content_type="text/plain")
        return json_response(_identity(state, user))


@bp.get("/services/oauth2/userinfo")
def userinfo() -> Response:
    """Return OpenID Connect claims for the token's user."""
    state = _state()
    with state.lock:
        grant = state.tokens.grant_of(_bearer())
        if grant is None:
            return Response("Bad_OAuth_Token", status=403, content_type="text/plain")
        user = state.org.records[grant.user_id]
        claims = _identity(state, user)
    return json_response(
        {
            "sub": claims["id"],
            "user_id": claims["user_id"],
            "organization_id": claims["organization_id"],
            "preferred_username": claims["username"],
            "name": claims["display_name"],
            "given_name": claims["first_name"],
            "family_name": claims["last_name"],
            "email": claims["email"],
            "email_verified": True,
            "zoneinfo": claims["timezone"],
            "active": claims["active"],
            "urls": claims["urls"],
            "updated_at": claims["last_modified_date"],
        }
    )


def _identity(state: State, user: dict[str, Any]) -> dict[str, Any]:
    """Build the identity service document for a user."""
    org_id, user_id = state.org.org_id, user["Id"]
    return {
        "id": f"{state.config.url}/id/{org_id}/{user_id}",
        "asserted_user": user_id == state.user_id,
        "user_id": user_id,
        "organization_id": org_id,
        "username": user["Username"],
        "nick_name": user.get("Alias"),
        "display_name": user.get("Name"),
        "email": user["Email"],
        "email_verified": True,
        "first_name": user.get("FirstName"),
        "last_name": user.get("LastName"),
        "timezone": user.get("TimeZoneSidKey"),
        "active": bool(user.get("IsActive")),
        "user_type": "STANDARD",
        "language": "en_US",
        "locale": "en_US",
        "utcOffset": 0,
        "last_modified_date": user["LastModifiedDate"],
        "is_app_installed": True,
        "urls": _urls(state, org_id, user_id),
    }


def _urls(state: State, org_id: str, user_id: str) -> dict[str, str]:
    base, version = state.config.url, state.config.api_version
    rest = f"{base}/services/data/v{version}/"
    return {
        "enterprise": f"{base}/services/Soap/c/{version}/{org_id}",
        "partner": f"{base}/services/Soap/u/{version}/{org_id}",
        "metadata": f"{base}/services/Soap/m/{version}/{org_id}",
        "rest": rest,
        "sobjects": rest + "sobjects/",
        "search": rest + "search/",
        "query": rest + "query/",
        "recent": rest + "recent/",
        "tooling_rest": rest + "tooling/",
        "profile": f"{base}/{user_id}",
        "custom_domain": base,
    }
