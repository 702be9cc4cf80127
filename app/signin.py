"""Signed-in browsers, kept on the server, and a brake on password guessing.

The session cookie (signed by Flask) carries only a random key. Each key's SHA-256 is a
row of ``page_sessions``: signing out deletes the row, so a copied cookie dies with
it, and ``flask user sign-out EMAIL`` ends every browser of a person at once. A session
also ends after ``IDLE`` without a page view, or ``LIFETIME`` after it began.

Password attempts are counted per account and per client address over ``WINDOW``;
past the limit, sign-in answers 429 and says when to try again, right password or not.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from datetime import datetime, timedelta

from flask import session
from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from app.models import PageSession, SignInFailure, User, as_utc, utcnow

IDLE = timedelta(days=7)
LIFETIME = timedelta(days=30)
# last_seen_at is written at most this often, so reading pages is not writing them.
SEEN_EVERY = timedelta(minutes=10)

WINDOW = timedelta(minutes=15)
PER_ACCOUNT = 10
# An office signs in from one address; a guesser rotating accounts is slowed too.
PER_ADDRESS = 100

COOKIE_KEY = "sid"


def _cookie_key() -> str | None:
    """The key the cookie holds, if it holds one we could have issued."""
    key = session.get(COOKIE_KEY)
    return key if isinstance(key, str) and key.isascii() else None


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def start(db: Session, user: User) -> None:
    """Sign the browser in as ``user``: a new key, in a fresh cookie.

    A session the browser already had ends here, or a copy of its cookie would
    outlive the next sign-out.
    """
    end(db)
    session[COOKIE_KEY] = new_key(db, user.id)


def new_key(db: Session, user_id: int) -> str:
    """A new session for a user; the key is for the cookie and is not kept."""
    key = secrets.token_urlsafe(32)
    db.add(PageSession(user_id=user_id, key_hash=_digest(key)))
    return key


def end(db: Session) -> None:
    """Sign this browser out, on the server as well as in the cookie."""
    key = _cookie_key()
    if key is not None:
        db.execute(delete(PageSession).where(PageSession.key_hash == _digest(key)))
    session.clear()


def end_all(db: Session, user: User) -> int:
    """Sign every browser of ``user`` out; return how many sessions ended."""
    result = db.execute(delete(PageSession).where(PageSession.user_id == user.id))
    return int(getattr(result, "rowcount", 0) or 0)


def user_of_browser(db: Session) -> User | None:
    """The user this browser is signed in as, if its session is still alive."""
    key = _cookie_key()
    if key is None:
        return None
    found = db.scalars(
        select(PageSession).where(PageSession.key_hash == _digest(key))
    ).first()
    if found is None:
        return None
    now = utcnow()
    created = as_utc(found.created_at) or now
    seen = as_utc(found.last_seen_at) or now
    if now - created > LIFETIME or now - seen > IDLE:
        db.delete(found)
        db.commit()
        return None
    if now - seen > SEEN_EVERY:
        found.last_seen_at = now
        db.commit()
    return found.user


def attempt(db: Session, email: str, ip: str | None) -> timedelta | None:
    """Note a password attempt before it is checked; the wait if it may not be made.

    The attempt is stored (and committed) as a failure first and only then are the
    others counted, so parallel guesses cannot all pass the count before any of them
    is written. A right password then clears it with the rest (``forget_failures``);
    an attempt refused here is taken back, so waiting out the window is enough.
    """
    # Failures past the window are left to ``prune``: each count reads an index of
    # one account's or one address's failures, however many others there are.
    now = utcnow()
    mine = SignInFailure(email=_account(email), ip=ip, at=now)
    db.add(mine)
    db.commit()
    limits = [(SignInFailure.email == mine.email, PER_ACCOUNT)]
    if ip:
        limits.append((SignInFailure.ip == ip, PER_ADDRESS))
    since = now - WINDOW
    waits = []
    for condition, limit in limits:
        others = select(SignInFailure.at).where(
            condition, SignInFailure.at > since, SignInFailure.id != mine.id
        )
        # Reached until the limit-th newest of the others leaves the window.
        cutoff = db.scalar(
            others.order_by(SignInFailure.at.desc()).offset(limit - 1).limit(1)
        )
        if cutoff is not None:
            waits.append((as_utc(cutoff) or now) - since)
    if not waits:
        return None
    db.delete(mine)
    db.commit()
    return max(waits)


def forget_failures(db: Session, email: str) -> None:
    """A right password clears the account's count (not the address's)."""
    db.execute(delete(SignInFailure).where(SignInFailure.email == _account(email)))


def minutes(wait: timedelta) -> str:
    """The wait as a person reads it: "1 minute", "15 minutes"."""
    count = max(1, math.ceil(wait.total_seconds() / 60))
    return f"{count} minute{'' if count == 1 else 's'}"


def _account(email: str) -> str:
    return email.strip().lower()[:320]


def prune(db: Session, now: datetime | None = None) -> None:
    """Delete sessions past their time and old failures (run with maintenance)."""
    now = now or utcnow()
    db.execute(
        delete(PageSession).where(
            or_(
                PageSession.created_at < now - LIFETIME,
                PageSession.last_seen_at < now - IDLE,
            )
        )
    )
    db.execute(delete(SignInFailure).where(SignInFailure.at <= now - WINDOW))
