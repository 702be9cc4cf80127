"""HubSpot's OAuth consent page and its v1 token endpoints.

NOTE: only the v1 token API is served, because hubspot-api-client 12 wraps
only v1; HubSpot's v3 endpoints (/oauth/v3/token, introspect, revoke) are
not emulated.
"""

from html import escape
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Response, redirect, render_template_string, request

from . import context as core
from . import errors
from .schema import KNOWN_SCOPES

bp = Blueprint("oauth", __name__)

_CONSENT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Connect app | HubSpot</title>
<style>body{font-family:sans-serif;max-width:36rem;margin:3rem auto}
li{font-family:monospace}button{margin-right:1rem;padding:.5rem 1rem}</style>
</head><body>
<h1>Connect app to portal {{ hub_id }}</h1>
<p>The app <strong>{{ client_id }}</strong> is asking for access to your HubSpot
account <strong>{{ hub_domain }}</strong> as {{ user }}.</p>
<h2>Requested access</h2>
<ul>{% for scope in scopes %}<li>{{ scope }}</li>{% endfor %}</ul>
<form method="post" action="/oauth/authorize">
{% for name, value in fields.items() %}
<input type="hidden" name="{{ name }}" value="{{ value }}">{% endfor %}
<button type="submit" name="decision" value="grant">Connect app</button>
<button type="submit" name="decision" value="cancel">Cancel</button>
</form></body></html>"""

_ERROR_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Authorization failed</title>
</head><body><h1>Authorization failed</h1><p id="error">{message}</p></body></html>"""


def _error_page(message: str) -> tuple[str, int]:
    return _ERROR_PAGE.format(message=escape(message)), 400


def _scopes(raw: str) -> list[str]:
    # HubSpot takes space-separated scopes; some apps send '+' or ',' as well.
    return [s for s in raw.replace("+", " ").replace(",", " ").split() if s]


def _problem(params: Any) -> str | None:
    """Return why an authorize request is refused, or None if it is fine."""
    settings = core.portal().settings
    if params.get("client_id") != settings.client_id:
        return "This app is not known: the client_id does not match any app."
    redirect_uri = params.get("redirect_uri", "")
    if urlsplit(redirect_uri).scheme not in ("http", "https"):
        return "The redirect_uri is missing or is not an http(s) URL."
    if settings.redirect_uris and redirect_uri not in settings.redirect_uris:
        return (
            f"Authorization failed as the redirect URL '{redirect_uri}' doesn't "
            "match the app's registered redirect URL."
        )
    requested = _scopes(params.get("scope", ""))
    if not requested:
        return "The scope parameter is required."
    unknown = sorted(set(requested + _scopes(params.get("optional_scope", ""))))
    unknown = [s for s in unknown if s not in KNOWN_SCOPES]
    if unknown:
        return "Couldn't complete the connection: unknown scopes " + ", ".join(unknown)
    return None


@bp.get("/oauth/authorize")
def consent() -> Any:
    """Render the consent page, or the error page for a bad request."""
    problem = _problem(request.args)
    if problem:
        return _error_page(problem)
    p = core.portal()
    keys = ("client_id", "redirect_uri", "scope", "optional_scope", "state")
    fields = {k: request.args[k] for k in keys if k in request.args}
    scopes = _scopes(fields["scope"]) + _scopes(fields.get("optional_scope", ""))
    return render_template_string(
        _CONSENT_PAGE,
        hub_id=p.settings.hub_id,
        hub_domain=p.settings.hub_domain,
        user=p.settings.user_email,
        client_id=fields["client_id"],
        scopes=scopes,
        fields=fields,
    )


@bp.post("/oauth/authorize")
def decide() -> Any:
    """Issue a single-use code on grant, or report access_denied on cancel."""
    problem = _problem(request.form)
    if problem:
        return _error_page(problem)
    form = request.form
    extra = {"state": form["state"]} if "state" in form else {}
    if form.get("decision") != "grant":
        query = {"error": "access_denied", "error_description": "User denied access"}
        return redirect(_with_query(form["redirect_uri"], {**query, **extra}))
    p = core.portal()
    scopes = _scopes(form["scope"]) + _scopes(form.get("optional_scope", ""))
    code = p.tokens.new_code(form["redirect_uri"], p.grant(dict.fromkeys(scopes)))
    return redirect(_with_query(form["redirect_uri"], {"code": code, **extra}))


def _with_query(url: str, params: dict[str, str]) -> str:
    joiner = "&" if urlsplit(url).query else "?"
    return url + joiner + urlencode(params)


@bp.post("/oauth/v1/token")
def token() -> Any:
    """Exchange an authorization code or a refresh token for an access token."""
    p = core.portal()
    form = request.form
    grant_type = form.get("grant_type", "")
    if grant_type not in ("authorization_code", "refresh_token"):
        raise errors.oauth_error("BAD_GRANT_TYPE", "missing or unknown grant_type")
    p.tokens.check_client(form.get("client_id", ""), form.get("client_secret", ""))
    if grant_type == "authorization_code":
        return p.tokens.exchange_code(
            form.get("code", ""), form.get("redirect_uri", "")
        )
    refused = p.faults.take("refresh_refused", request.path)
    if refused is not None:
        message = "missing or unknown refresh token"
        if refused.options.get("variant") == "invalid_grant":
            raise errors.invalid_grant(message)
        raise errors.oauth_error("BAD_REFRESH_TOKEN", message)
    return p.tokens.exchange_refresh(form.get("refresh_token", ""))


@bp.get("/oauth/v1/access-tokens/<token>")
def access_token_info(token: str) -> Any:
    """Return an access token's metadata."""
    return core.portal().tokens.access_info(token)


@bp.get("/oauth/v1/refresh-tokens/<token>")
def refresh_token_info(token: str) -> Any:
    """Return a refresh token's metadata."""
    return core.portal().tokens.refresh_info(token)


@bp.delete("/oauth/v1/refresh-tokens/<token>")
def revoke_refresh_token(token: str) -> Response:
    """Delete a refresh token, as an uninstall does."""
    core.portal().tokens.revoke_refresh(token)
    return Response(status=204)
