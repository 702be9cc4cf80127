"""A connection's tokens: decrypting, storing, and refreshing them once for everyone."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import Database
from app.models import CrmConnection
from integrations.base import AuthLost, Tokens
from integrations.crypto import TokenCipher
from integrations.registry import get_provider

logger = logging.getLogger(__name__)

# Refresh this long before a known expiry, so no call is made with a dying token.
REFRESH_AHEAD = timedelta(minutes=5)


def tokens_of(connection: CrmConnection, cipher: TokenCipher) -> Tokens:
    access = cipher.decrypt(connection.access_token) or ""
    return Tokens(
        access_token=access,
        refresh_token=cipher.decrypt(connection.refresh_token),
        expires_at=connection.token_expires_at,
        instance_url=connection.instance_url,
        # Which CRM account the tokens belong to (a HubSpot portal's budget is keyed
        # by it).
        extra={"account_id": connection.external_account_id},
    )


def store_tokens(
    connection: CrmConnection, tokens: Tokens, cipher: TokenCipher
) -> None:
    """Keep new tokens, encrypted; without a new refresh token, keep the old one."""
    connection.access_token = cipher.encrypt(tokens.access_token)
    if tokens.refresh_token:
        connection.refresh_token = cipher.encrypt(tokens.refresh_token)
    connection.token_expires_at = tokens.expires_at
    if tokens.instance_url:
        connection.instance_url = tokens.instance_url
    connection.token_version += 1


def needs_refresh(connection: CrmConnection, now: datetime | None = None) -> bool:
    expires = connection.token_expires_at
    return expires is not None and expires - REFRESH_AHEAD <= (now or datetime.now(UTC))


def refresh(
    db: Database, settings: dict[str, Any], connection_id: int, seen_version: int
) -> Tokens:
    """Refresh a connection's tokens unless another worker already did.

    The connection's row is locked for the refresh, so concurrent workers queue up
    behind the first; they find ``token_version`` moved on and reuse its tokens rather
    than spend (and, with rotation, invalidate) the refresh token again.
    """
    cipher = TokenCipher(settings["TOKEN_ENCRYPTION_KEYS"])
    lost: AuthLost | None = None
    with db.begin() as session:
        connection = _locked(session, connection_id)
        if connection.token_version != seen_version:
            logger.info("tokens already refreshed connection_id=%s", connection_id)
            return tokens_of(connection, cipher)
        provider = get_provider(connection.provider)
        current = tokens_of(connection, cipher)
        try:
            fresh = provider.refresh(settings, current, connection.login_url)
        except AuthLost as exc:
            # Committed with the lock released: the connection waits for an admin.
            mark_needs_reconnect(connection, str(exc))
            lost = exc
        else:
            store_tokens(connection, fresh, cipher)
            logger.info(
                "tokens refreshed connection_id=%s provider=%s",
                connection_id,
                connection.provider,
            )
            return fresh
    assert lost is not None
    raise lost


def _locked(session: Session, connection_id: int) -> CrmConnection:
    connection = session.scalars(
        select(CrmConnection).where(CrmConnection.id == connection_id).with_for_update()
    ).one()
    return connection


def mark_needs_reconnect(connection: CrmConnection, reason: str) -> None:
    """Stop writing for this connection until an admin connects it again."""
    connection.status = "needs_reconnect"
    connection.status_reason = reason[:500] or "The CRM refused our access."
    connection.last_error = connection.status_reason
    connection.last_error_at = datetime.now(UTC)
    logger.warning(
        "connection needs reconnect connection_id=%s provider=%s",
        connection.id,
        connection.provider,
    )
