"""Hand-off from tracking to the CRM integrations: which connections hear of what."""

from __future__ import annotations

import logging

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import CrmConnection, Message
from workers.context import WorkerContext, current

logger = logging.getLogger(__name__)


def syncs_for(
    session: Session, by_org: dict[int, set[int]]
) -> list[tuple[int, list[int]]]:
    """(connection id, message ids) for each CRM connection of these organisations."""
    rows = session.execute(
        select(CrmConnection.id, CrmConnection.org_id).where(
            CrmConnection.org_id.in_(by_org)
        )
    )
    return [(connection_id, sorted(by_org[org_id])) for connection_id, org_id in rows]


def enqueue_syncs(ctx: WorkerContext, syncs: list[tuple[int, list[int]]]) -> None:
    """Queue one sync job per connection (after the events are committed)."""
    from integrations.jobs import sync_messages

    for connection_id, message_ids in syncs:
        ctx.jobs.enqueue(sync_messages, connection_id, message_ids, queue="crm")


def message_registered(message_id: int) -> None:
    """A message was registered: its connections may log it as sent.

    Without a queue to take the sync, the message stays as registered and the
    periodic CRM sweep logs it once the queue answers (a message the CRM ledger
    lacks is behind): the caller must not be told to register it again.
    """
    ctx = current()
    with ctx.db.session_factory() as session:
        org_id = session.scalar(select(Message.org_id).where(Message.id == message_id))
    if org_id is None:
        return
    try:
        _enqueue(ctx, {org_id: {message_id}})
    except redis.RedisError as exc:
        logger.warning(
            "message id=%s registered; its CRM sync waits for the queue (%s)",
            message_id,
            exc,
        )


def _enqueue(ctx: WorkerContext, by_org: dict[int, set[int]]) -> None:
    with ctx.db.session_factory() as session:
        syncs = syncs_for(session, by_org)
    enqueue_syncs(ctx, syncs)
