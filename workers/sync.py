"""Hand-off from tracking to the CRM integrations: which connections hear of what."""

from __future__ import annotations

import logging

from sqlalchemy import select

from app.models import CrmConnection, Message
from workers.context import WorkerContext, current

logger = logging.getLogger(__name__)


def _connections(ctx: WorkerContext, org_ids: set[int]) -> list[tuple[int, int]]:
    """(connection id, org id) of the organisations' CRM connections."""
    with ctx.db.session_factory() as session:
        rows = session.execute(
            select(CrmConnection.id, CrmConnection.org_id).where(
                CrmConnection.org_id.in_(org_ids)
            )
        )
        return [(row[0], row[1]) for row in rows]


def message_registered(message_id: int) -> None:
    """A message was registered: its connections may log it as sent."""
    ctx = current()
    with ctx.db.session_factory() as session:
        org_id = session.scalar(select(Message.org_id).where(Message.id == message_id))
    if org_id is not None:
        _enqueue(ctx, {org_id: {message_id}})


def events_stored(ctx: WorkerContext, by_org: dict[int, set[int]]) -> None:
    """Counted events were stored (message ids by organisation): sync them."""
    _enqueue(ctx, by_org)


def _enqueue(ctx: WorkerContext, by_org: dict[int, set[int]]) -> None:
    connections = _connections(ctx, set(by_org))
    if not connections:
        return
    from integrations.jobs import sync_messages

    for connection_id, org_id in connections:
        ctx.jobs.enqueue(
            sync_messages, connection_id, sorted(by_org[org_id]), queue="crm"
        )
