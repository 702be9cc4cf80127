"""Who is asking: API bearer tokens and signed-in page sessions."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from flask import abort, g, redirect, request, session, url_for
from sqlalchemy import select
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Unauthorized
from werkzeug.security import check_password_hash

from app import signin
from app.extensions import db_session
from app.models import ApiToken, User, utcnow

F = TypeVar("F", bound=Callable[..., Any])

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_PREFIX = "tm_"  # noqa: S105 (a prefix, not a secret)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(user: User, label: str | None = None) -> tuple[ApiToken, str]:
    """A new API token for a user; the plain token is returned once, never stored."""
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return ApiToken(user=user, token_hash=hash_token(plain), label=label), plain


def user_from_bearer() -> User | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    found = (
        db_session()
        .scalars(
            select(ApiToken).where(
                ApiToken.token_hash == hash_token(token.strip()),
                ApiToken.revoked_at.is_(None),
            )
        )
        .first()
    )
    if found is None:
        return None
    now = utcnow()
    last = found.last_used_at
    # Noted at most once an hour, so reading the API does not mean writing to it.
    if last is None or now - last > timedelta(hours=1):
        found.last_used_at = now
        # Committed now: a view that only reads never commits the request's session.
        db_session().commit()
    return found.user


def user_from_session() -> User | None:
    return signin.user_of_browser(db_session())


def current_user() -> User | None:
    """The caller: by bearer token, or by session cookie for reading only.

    A cookie travels with requests that other sites make the browser send, so it
    never authorises an API call that changes something; those need the token.
    """
    if "user" not in g:
        g.user = user_from_bearer()
        if g.user is None and request.method in SAFE_METHODS:
            g.user = user_from_session()
    user: User | None = g.user
    return user


def api_auth(view: F) -> F:
    """Require a bearer token (or a signed-in session) for an API view."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_user() is None:
            # RFC 6750: say which scheme, and whether the token given was refused.
            given = request.headers.get("Authorization", "").startswith("Bearer ")
            challenge = WWWAuthenticate(
                "Bearer",
                {"realm": "api", **({"error": "invalid_token"} if given else {})},
            )
            raise Unauthorized(
                "Send an API token as 'Authorization: Bearer <token>'. "
                "Create one with: scripts/flask user create EMAIL --org NAME "
                "(or flask --app app user create ... where the environment is set)",
                www_authenticate=challenge,
            )
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def login_required(view: F) -> F:
    """Send visitors who are not signed in to the sign-in page."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        user = user_from_session()
        if user is None:
            # full_path ends in "?" when there is no query string.
            return redirect(url_for("pages.login", next=request.full_path.rstrip("?")))
        g.user = user
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def admin_required(view: F) -> F:
    """Pages for organisation admins only."""

    @login_required
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not g.user.is_admin:
            abort(403, "Only an administrator of your organisation can open this page.")
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def authenticate(email: str, password: str) -> User | None:
    address = email.strip().lower()
    user = db_session().scalars(select(User).where(User.email == address)).first()
    if user is None or not user.password_hash:
        # Spend the same time as a real check, so timing does not reveal accounts.
        check_password_hash(_DUMMY_HASH, password)
        return None
    return user if check_password_hash(user.password_hash, password) else None


_DUMMY_HASH = "scrypt:32768:8:1$abcdefghijklmnop$" + "0" * 128


def csrf_token() -> str:
    """The session's token for forms; created on first use."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return str(session["csrf"])


def check_csrf() -> None:
    """Refuse a form post that does not carry the session's token."""
    sent = request.form.get("csrf_token", "").encode()
    expected = str(session.get("csrf", "")).encode()
    if not sent or not hmac.compare_digest(sent, expected):
        abort(400, "This form has expired. Go back, reload the page and try again.")
