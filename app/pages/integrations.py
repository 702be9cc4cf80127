"""Connecting a CRM from the settings page: OAuth with PKCE and a single-use state."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
import time
from typing import Any

from flask import abort, current_app, flash, g, redirect, request, session, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import delete, select

from app.auth import admin_required, check_csrf
from app.extensions import db_session, jobs
from app.models import CrmConnection, CrmRecord, utcnow
from app.pages import bp
from integrations.base import CrmError
from integrations.crypto import TokenCipher
from integrations.registry import PROVIDERS, get_provider
from integrations.tokens import store_tokens, tokens_of

logger = logging.getLogger(__name__)

STATE_TTL = 600  # seconds an admin has to finish the CRM's consent page
PENDING_FLOWS = 3  # CRM sign-ins an admin may have started and not finished
SALESFORCE_HOSTS = {
    "production": "https://login.salesforce.com",
    "sandbox": "https://test.salesforce.com",
}


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a PKCE verifier."""
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _provider_or_404(name: str) -> Any:
    if name not in PROVIDERS:
        abort(404, "There is no such CRM integration.")
    return get_provider(name)


def _callback_url(name: str) -> str:
    path = url_for("pages.crm_callback", provider=name)
    return f"{current_app.config['PUBLIC_URL']}{path}"


def _login_url(name: str) -> str | None:
    """The Salesforce login host the admin chose: production, sandbox or My Domain."""
    if name != "salesforce":
        return None
    choice = request.form.get("environment", "default")
    if choice in SALESFORCE_HOSTS:
        return SALESFORCE_HOSTS[choice]
    if choice == "custom":
        domain = request.form.get("my_domain", "").strip().lower()
        return _my_domain_url(domain)
    return str(current_app.config["SALESFORCE_LOGIN_URL"])


# A My Domain host: DNS labels only, ending in Salesforce's own domains. Checked as a
# whole, so that nothing a browser reads differently from Python (a backslash, an
# "@", a bracket) can slip another host in front.
_MY_DOMAIN = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:sandbox\.)?my\.salesforce\.com"
)


def _my_domain_url(domain: str) -> str:
    host = domain.removeprefix("https://").removesuffix("/")
    if not _MY_DOMAIN.fullmatch(host):
        abort(
            400,
            "Give your My Domain, like acme.my.salesforce.com "
            "(or acme--uat.sandbox.my.salesforce.com for a sandbox).",
        )
    return f"https://{host}"


def not_configured(provider: str) -> str | None:
    """What the operator must set before a CRM can be connected, or None."""
    name = provider.upper()
    if str(current_app.config.get(f"{name}_CLIENT_ID") or "").strip():
        return None
    return (
        f"Connecting {get_provider(provider).label} needs {name}_CLIENT_ID and "
        f"{name}_CLIENT_SECRET set on the server (see the README). Ask the operator "
        "to set them."
    )


@bp.post("/settings/crm/<provider>/connect")
@admin_required
def crm_connect(provider: str) -> ResponseReturnValue:
    """Send the admin to the CRM's consent page."""
    check_csrf()
    crm = _provider_or_404(provider)
    if not current_app.config["TOKEN_ENCRYPTION_KEYS"].strip():
        # Checked before the consent page: the CRM's tokens could not be kept after.
        abort(
            503,
            "Connecting a CRM needs TOKEN_ENCRYPTION_KEYS set on the server, to "
            "keep its tokens encrypted. Ask the operator to set it (see the README).",
        )
    unset = not_configured(provider)
    if unset:
        # The CRM would only say that an empty client is unknown, on its own page.
        abort(503, unset)
    state, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(64)
    login_url = _login_url(provider)
    # Flows started and never finished are dropped when they expire, and only the
    # latest few are kept: each one lives in the sign-in cookie, which browsers cap.
    now = time.time()
    recent = sorted(
        (
            (key, flow)
            for key, flow in dict(session.get("oauth", {})).items()
            if now - flow["at"] <= STATE_TTL
        ),
        key=lambda item: item[1]["at"],
    )
    pending = dict(recent[-(PENDING_FLOWS - 1) :])
    pending[state] = {
        "provider": provider,
        "verifier": verifier,
        "login_url": login_url,
        "user_id": g.user.id,
        "at": now,
    }
    session["oauth"] = pending
    url = crm.authorize_url(
        current_app.config,
        redirect_uri=_callback_url(provider),
        state=state,
        verifier=verifier,
        login_url=login_url,
    )
    return redirect(url)


def _take_state(provider: str) -> dict[str, Any]:
    """The pending flow of this callback; refused unless ours, fresh and unused."""
    state = request.args.get("state", "")
    pending = dict(session.get("oauth", {}))
    flow = pending.pop(state, None) if state else None
    session["oauth"] = pending
    if (
        flow is None
        or flow["provider"] != provider
        or flow["user_id"] != g.user.id
        or time.time() - flow["at"] > STATE_TTL
    ):
        abort(
            400,
            "This sign-in link is not valid here (it expired, was used already, or "
            "was started elsewhere). Start again from the settings page.",
        )
    return flow


@bp.get("/settings/crm/<provider>/callback")
@admin_required
def crm_callback(provider: str) -> ResponseReturnValue:
    """Finish the OAuth flow: exchange the code, store the connection, replay events."""
    crm = _provider_or_404(provider)
    flow = _take_state(provider)
    if request.args.get("error"):
        reason = request.args.get("error_description") or request.args["error"]
        flash(f"{crm.label} was not connected: {reason}", "error")
        return redirect(url_for("pages.settings"))
    code = request.args.get("code", "")
    if not code:
        abort(
            400,
            "The CRM sent no authorization code. Start again from the settings page.",
        )
    try:
        tokens = crm.exchange(
            current_app.config,
            code=code,
            redirect_uri=_callback_url(provider),
            verifier=flow["verifier"],
            login_url=flow["login_url"],
        )
        identity = crm.identity(current_app.config, tokens)
    except CrmError as exc:
        logger.warning("oauth exchange failed provider=%s error=%s", provider, exc)
        flash(f"{crm.label} refused the connection: {exc}", "error")
        return redirect(url_for("pages.settings"))
    connection = _save_connection(provider, flow, tokens, identity)
    from integrations.jobs import replay

    jobs().enqueue(replay, connection.id, queue="crm")
    flash(f"{crm.label} is connected.", "success")
    return redirect(url_for("pages.settings"))


def _save_connection(
    provider: str, flow: dict[str, Any], tokens: Any, identity: Any
) -> CrmConnection:
    db = db_session()
    cipher = TokenCipher(current_app.config["TOKEN_ENCRYPTION_KEYS"])
    connection = db.scalars(
        select(CrmConnection).where(
            CrmConnection.org_id == g.user.org_id, CrmConnection.provider == provider
        )
    ).first()
    if connection is None:
        connection = CrmConnection(
            org_id=g.user.org_id, provider=provider, token_version=0
        )
        db.add(connection)
    elif connection.external_account_id != identity.account_id:
        # A different CRM account: what the ledger knew belongs to the old one.
        db.flush()
        db.execute(delete(CrmRecord).where(CrmRecord.connection_id == connection.id))
    store_tokens(connection, tokens, cipher)
    connection.status = "connected"
    connection.status_reason = None
    connection.paused_until = None
    connection.login_url = flow["login_url"]
    connection.external_account_id = identity.account_id
    connection.external_user_id = identity.user_id
    connection.external_user_name = identity.user_name
    connection.connected_by_user_id = g.user.id
    connection.connected_at = utcnow()
    db.commit()
    logger.info("crm connected provider=%s org_id=%s", provider, g.user.org_id)
    return connection


@bp.post("/settings/crm/<provider>/disconnect")
@admin_required
def crm_disconnect(provider: str) -> ResponseReturnValue:
    """Revoke the tokens at the CRM and delete them here; the ledger stays."""
    check_csrf()
    crm = _provider_or_404(provider)
    db = db_session()
    connection = db.scalars(
        select(CrmConnection).where(
            CrmConnection.org_id == g.user.org_id, CrmConnection.provider == provider
        )
    ).first()
    if connection is None:
        abort(404, f"{crm.label} is not connected.")
    cipher = TokenCipher(current_app.config["TOKEN_ENCRYPTION_KEYS"])
    try:
        crm.revoke(
            current_app.config, tokens_of(connection, cipher), connection.login_url
        )
    except CrmError as exc:
        logger.warning("revoke failed provider=%s error=%s", provider, exc)
        flash(f"{crm.label} could not confirm the revocation ({exc}).", "error")
    connection.access_token = None
    connection.refresh_token = None
    connection.status = "disconnected"
    connection.status_reason = "Disconnected by an administrator."
    db.commit()
    flash(f"{crm.label} is disconnected.", "success")
    return redirect(url_for("pages.settings"))
