"""The sync engine: what each message puts in a connected CRM, written exactly once.

For every message, each matched recipient gets up to three activities: the sent email
(when the organisation logs sends), one for its opens and one for its clicks, kept up to
date as more counted events arrive rather than one per hit.

Exactly once: a ledger row (``CrmRecord``) per (connection, message, kind, recipient) is
committed before the CRM is called, with a marker that goes into the record. The create
call is preceded by ``attempted_at``; a row attempted but without an id may have been
created upstream (a lost response, a killed worker), so the next run first asks the CRM
for the record carrying its marker and only creates when there is none.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app.models import (
    CrmConnection,
    CrmRecord,
    Event,
    Message,
    MessageCopy,
    Organization,
    User,
    as_utc,
)
from app.presenters import device, link_label, place
from integrations.base import (
    Activity,
    AuthLost,
    CrmClient,
    CrmError,
    Match,
    RateLimited,
    Rejected,
    SessionExpired,
    UpstreamFailed,
)
from integrations.crypto import TokenCipher
from integrations.registry import get_provider
from integrations.tokens import needs_refresh, refresh, tokens_of
from workers.context import WorkerContext, current

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How far back a replay after reconnecting looks for messages to bring up to date.
REPLAY_DAYS = 30
# A job waits this long for another job of the same connection before it requeues.
LOCK_WAIT = 30.0
LOCK_NAMESPACE = 7301  # first key of the PostgreSQL advisory lock of a connection


@dataclass
class Plan:
    """One activity the CRM should hold, and its ledger row."""

    record: CrmRecord
    activity: Activity


def sync_messages(connection_id: int, message_ids: list[int]) -> None:
    """Bring the CRM up to date for some messages of one connection."""
    ctx = current()
    with _one_at_a_time(ctx, connection_id) as held:
        if not held:
            logger.info("sync requeued connection_id=%s (busy)", connection_id)
            ctx.jobs.enqueue_in(
                timedelta(seconds=5),
                sync_messages,
                connection_id,
                message_ids,
                queue="crm",
            )
            return
        _sync_connection(ctx, connection_id, message_ids)


@contextmanager
def _one_at_a_time(ctx: WorkerContext, connection_id: int) -> Iterator[bool]:
    """Hold the connection's advisory lock, so no two jobs write the same activity.

    Two jobs of one message at once would both see no CRM id in the ledger and both
    create. The lock lives in the database session, so a killed worker's lock goes
    with its connection. SQLite (the quick start) runs one job at a time anyway.
    """
    engine = ctx.db.engine
    if engine.dialect.name != "postgresql":
        yield True
        return
    key = {"ns": LOCK_NAMESPACE, "id": connection_id}
    with engine.connect() as conn:
        deadline = time.monotonic() + LOCK_WAIT
        while not conn.scalar(text("SELECT pg_try_advisory_lock(:ns, :id)"), key):
            if time.monotonic() > deadline:
                yield False
                return
            time.sleep(0.2)
        conn.commit()  # the lock outlives the transaction; hold no snapshot
        try:
            yield True
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:ns, :id)"), key)
            conn.commit()


def _sync_connection(
    ctx: WorkerContext, connection_id: int, message_ids: list[int]
) -> None:
    with ctx.db.session_factory() as session:
        connection = session.get(CrmConnection, connection_id)
        if connection is not None and _paused(connection):
            _later(ctx, connection, message_ids)
            return
        if connection is None or not _active(connection):
            logger.info("sync skipped connection_id=%s (not active)", connection_id)
            return
        try:
            _with_client(
                ctx,
                session,
                connection,
                lambda c: _sync(session, c, connection, message_ids),
            )
        except RateLimited as exc:
            _pause(ctx, session, connection, exc, message_ids)
        except AuthLost:
            logger.warning("sync stopped: access lost connection_id=%s", connection_id)


def _paused(connection: CrmConnection) -> bool:
    paused = as_utc(connection.paused_until)
    return connection.status == "connected" and (
        paused is not None and paused > datetime.now(UTC)
    )


def _later(
    ctx: WorkerContext, connection: CrmConnection, message_ids: list[int]
) -> None:
    """A job that arrives during a pause (the scheduler runs to the second) waits."""
    paused = as_utc(connection.paused_until) or datetime.now(UTC)
    delay = max(paused - datetime.now(UTC), timedelta(seconds=1))
    logger.info("sync deferred connection_id=%s (paused)", connection.id)
    ctx.jobs.enqueue_in(delay, sync_messages, connection.id, message_ids, queue="crm")


def _active(connection: CrmConnection) -> bool:
    paused = as_utc(connection.paused_until)
    return connection.status == "connected" and (
        paused is None or paused <= datetime.now(UTC)
    )


def _with_client(
    ctx: WorkerContext,
    session: Session,
    connection: CrmConnection,
    work: Callable[[CrmClient], T],
) -> T:
    """Run ``work`` with a client, refreshing the token once when it has expired."""
    provider = get_provider(connection.provider)
    cipher = TokenCipher(ctx.settings["TOKEN_ENCRYPTION_KEYS"])
    tokens = tokens_of(connection, cipher)
    if needs_refresh(connection):
        tokens = refresh(ctx.db, ctx.settings, connection.id, connection.token_version)
        session.refresh(connection)
    try:
        return work(provider.client(ctx.settings, tokens))
    except SessionExpired:
        logger.info("session expired, refreshing connection_id=%s", connection.id)
        session.rollback()
        tokens = refresh(ctx.db, ctx.settings, connection.id, connection.token_version)
        session.refresh(connection)
        return work(provider.client(ctx.settings, tokens))


def _pause(
    ctx: WorkerContext,
    session: Session,
    connection: CrmConnection,
    exc: RateLimited,
    message_ids: list[int],
) -> None:
    """Hold the connection's writes for as long as the CRM asked, then try again."""
    session.rollback()
    delay = max(exc.retry_after, 1.0)
    connection.paused_until = datetime.now(UTC) + timedelta(seconds=delay)
    connection.last_error = str(exc)[:1000]
    connection.last_error_at = datetime.now(UTC)
    session.commit()
    logger.warning(
        "rate limited; writes paused connection_id=%s seconds=%.0f",
        connection.id,
        delay,
    )
    ctx.jobs.enqueue_in(
        timedelta(seconds=delay), sync_messages, connection.id, message_ids, queue="crm"
    )


def _sync(
    session: Session,
    client: CrmClient,
    connection: CrmConnection,
    message_ids: list[int],
) -> None:
    messages = session.scalars(
        select(Message).where(
            Message.id.in_(message_ids), Message.org_id == connection.org_id
        )
    ).all()
    org = session.get(Organization, connection.org_id)
    assert org is not None
    matches: dict[str, Match | None] = {}
    owners: dict[str, str | None] = {}
    plans: list[Plan] = []
    _match_all(client, messages, matches, owners)
    for message in messages:
        plans.extend(_plans(session, client, connection, org, message, matches, owners))
    session.commit()
    _write(session, client, connection, plans)


def _match_all(
    client: CrmClient,
    messages: Sequence[Message],
    matches: dict[str, Match | None],
    owners: dict[str, str | None],
) -> None:
    """Match every recipient up front when the client can match in batches."""
    match_many = getattr(client, "match_many", None)
    if match_many is None:
        return
    by_sender: dict[str, list[str]] = {}
    for message in messages:
        by_sender.setdefault(message.user.email, []).extend(message.recipients)
    for sender, recipients in by_sender.items():
        if sender not in owners:
            owners[sender] = client.owner_for(sender)
        todo = [r for r in recipients if r.lower() not in matches]
        if todo:
            matches.update(match_many(todo, owners[sender]))


def _plans(
    session: Session,
    client: CrmClient,
    connection: CrmConnection,
    org: Organization,
    message: Message,
    matches: dict[str, Match | None],
    owners: dict[str, str | None],
) -> list[Plan]:
    """The activities one message should have, each with its ledger row."""
    sender: User = message.user
    if sender.email not in owners:
        owners[sender.email] = client.owner_for(sender.email)
    counts_of = _counts_of(session, message.id, copied=bool(message.copies))
    kinds = [k for k in ("sent", "open", "click") if k != "sent" or org.log_sent_email]
    plans = []
    for recipient in message.recipients:
        key = recipient.lower()
        if key not in matches:
            matches[key] = client.match(recipient)
        match = matches[key]
        counts = counts_of(key)
        for kind in kinds:
            if kind != "sent" and not counts[kind]:
                continue
            record = _ledger_row(session, connection, message, kind, recipient)
            if match is None:
                record.state = "no_match"
                continue
            activity = _activity(session, message, kind, match, record, counts[kind])
            activity.owner_id = owners[sender.email] or match.owner_id
            plans.append(Plan(record, activity))
    return plans


def _counts_of(
    session: Session, message_id: int, *, copied: bool
) -> Callable[[str], dict[str, int]]:
    """Counted events of each kind that a recipient's activities stand for.

    With one copy per recipient, each recipient's own (events name them); otherwise
    the whole message's, the same for everyone it went to.
    """
    rows = session.execute(
        select(Event.recipient, Event.type, func.count())
        .where(Event.message_id == message_id, Event.counted.is_(True))
        .group_by(Event.recipient, Event.type)
    )
    whole = _no_events()
    mine: dict[str, dict[str, int]] = defaultdict(_no_events)
    for recipient, kind, count in rows:
        whole[kind] += int(count)
        if recipient is not None:
            mine[recipient.lower()][kind] += int(count)
    if not copied:
        return lambda _recipient: whole
    return lambda recipient: mine.get(recipient.lower(), _no_events())


def _no_events() -> dict[str, int]:
    """Counts of a message sent (an email is one) with nothing seen yet."""
    return {"sent": 1, "open": 0, "click": 0}


def _ledger_row(
    session: Session,
    connection: CrmConnection,
    message: Message,
    kind: str,
    recipient: str,
) -> CrmRecord:
    """The ledger row for one activity, created (and committed) on first sight."""
    key = {
        "connection_id": connection.id,
        "message_id": message.id,
        "kind": kind,
        "recipient": recipient.lower(),
    }
    record = session.scalars(select(CrmRecord).filter_by(**key)).first()
    if record is None:
        record = CrmRecord(**key, marker=uuid.uuid4().hex)
        session.add(record)
        session.flush()
    return record


def _write(
    session: Session, client: CrmClient, connection: CrmConnection, plans: list[Plan]
) -> None:
    to_create: list[Plan] = []
    to_update: list[Plan] = []
    in_doubt: list[Plan] = []
    for plan in plans:
        record = plan.record
        if record.external_id is None and record.attempted_at is not None:
            found = client.find(plan.activity)
            if found:
                logger.info("found earlier record marker=%s", record.marker)
                _created(record, found, 0)
            elif _maybe_in_flight(record):
                in_doubt.append(plan)
                continue
        if record.external_id is None:
            to_create.append(plan)
        elif record.synced_event_count < plan.activity.event_count:
            to_update.append(plan)
    _update_all(client, to_update)
    session.commit()
    _create(session, client, to_create)
    if in_doubt:
        session.commit()
        raise UpstreamFailed(
            f"{len(in_doubt)} earlier write(s) may still be in progress; retrying later"
        )
    connection.last_success_at = datetime.now(UTC)
    usage = client.usage()
    if usage is not None:
        connection.api_usage = usage
    session.commit()


def _maybe_in_flight(record: CrmRecord) -> bool:
    """Whether a create not found yet may still be running at the CRM.

    A request that timed out or whose worker died can still commit upstream for a
    while; creating again inside that window would make a second record.
    """
    window = float(current().settings.get("CRM_IN_DOUBT_SECONDS") or 120.0)
    attempted = as_utc(record.attempted_at)
    return attempted is not None and attempted > datetime.now(UTC) - timedelta(
        seconds=window
    )


def _update_all(client: CrmClient, plans: Sequence[Plan]) -> None:
    """Bring records up to date, in batches when the client offers them."""
    update_many = getattr(client, "update_many", None)
    if update_many is None or len(plans) < 2:
        for plan in plans:
            _update(client, plan.record, plan.activity)
        return
    errors = update_many([(p.record.external_id, p.activity) for p in plans])
    for plan, error in zip(plans, errors, strict=True):
        if error is None:
            _created(
                plan.record, str(plan.record.external_id), plan.activity.event_count
            )
        elif isinstance(error, Rejected):
            _refused(plan.record, plan.activity, error)
    retryable = [e for e in errors if e is not None and not isinstance(e, Rejected)]
    if retryable:
        raise retryable[0]


def _update(client: CrmClient, record: CrmRecord, activity: Activity) -> None:
    """Bring a record up to date; one the CRM refuses (say, deleted there) is left."""
    assert record.external_id is not None
    try:
        client.update(record.external_id, activity)
    except Rejected as exc:
        _refused(record, activity, exc)
        return
    _created(record, record.external_id, activity.event_count)


def _refused(record: CrmRecord, activity: Activity, exc: Rejected) -> None:
    logger.warning(
        "update refused marker=%s external_id=%s error=%s",
        record.marker,
        record.external_id,
        exc,
    )
    record.last_error = str(exc)[:1000]
    record.synced_event_count = activity.event_count


def _create(session: Session, client: CrmClient, plans: Sequence[Plan]) -> None:
    if not plans:
        return
    now = datetime.now(UTC)
    for plan in plans:
        plan.record.attempted_at = now
    session.commit()
    results = client.create([plan.activity for plan in plans])
    failures = []
    for plan, result in zip(plans, results, strict=True):
        if isinstance(result, CrmError):
            plan.record.last_error = str(result)[:1000]
            if isinstance(result, Rejected):
                plan.record.state = "failed"
            if isinstance(result, RateLimited | SessionExpired):
                # Refused before anything was written: nothing to look for later.
                plan.record.attempted_at = None
            failures.append(result)
        else:
            _created(plan.record, result, plan.activity.event_count)
    session.commit()
    retryable = [f for f in failures if not isinstance(f, Rejected)]
    if retryable:
        raise retryable[0]


def _created(record: CrmRecord, external_id: str, count: int) -> None:
    record.external_id = external_id
    record.state = "created"
    record.synced_event_count = max(record.synced_event_count, count)
    record.updated_at = datetime.now(UTC)
    record.last_error = None


def _activity(
    session: Session,
    message: Message,
    kind: str,
    match: Match,
    record: CrmRecord,
    count: int,
) -> Activity:
    # With copies, a recipient's activity tells of their own copy's events only,
    # which name the recipient as the copy spells it.
    copy = next(
        (c for c in message.copies if c.recipient_key == record.recipient), None
    )
    spelled = copy.recipient if copy is not None else None
    events = _counted_events(
        session, message.id, kind, spelled, mine=bool(message.copies)
    )
    subject, body = describe(message, kind, events, per_recipient=bool(message.copies))
    return Activity(
        kind=kind,
        marker=record.marker,
        match=match,
        owner_id=None,
        subject=subject[:255],
        body=f"{body}\n\nRef: tm-{record.marker}",
        occurred_at=(as_utc(events[-1].occurred_at) if events else None)
        or as_utc(message.sent_at)
        or datetime.now(UTC),
        event_count=count,
        message_subject=message.subject,
    )


def _counted_events(
    session: Session,
    message_id: int,
    kind: str,
    recipient: str | None = None,
    *,
    mine: bool = False,
) -> list[Event]:
    """A message's counted events of a kind; with ``mine``, only those that name
    ``recipient`` (none when it is None: a copy since erased)."""
    if kind == "sent":
        return []
    named = (Event.recipient == recipient,) if mine else ()
    return list(
        session.scalars(
            select(Event)
            .where(
                Event.message_id == message_id,
                Event.type == kind,
                Event.counted.is_(True),
                *named,
            )
            .order_by(Event.occurred_at, Event.id)
        )
    )


def describe(
    message: Message,
    kind: str,
    events: Sequence[Event],
    *,
    per_recipient: bool = False,
) -> tuple[str, str]:
    """The subject and text of an activity, as a rep reads them in the CRM.

    ``per_recipient``: the events are one recipient's own copy's.
    """
    recipients = ", ".join(message.recipients)
    if kind == "sent":
        sent = (as_utc(message.sent_at) or datetime.now(UTC)).strftime(
            "%Y-%m-%d %H:%M UTC"
        )
        return f"Email: {message.subject}", f"Sent {sent} to {recipients}."
    title = "Email opened" if kind == "open" else "Link clicked"
    lines = [f"{len(events)} {'open' if kind == 'open' else 'click'}(s) counted."]
    if events:
        first, last = events[0], events[-1]
        lines.append(f"First: {_when(first)}. Last: {_when(last)}{_where(last)}.")
    if kind == "click":
        lines.extend(_clicked_links(events))
    if len(message.recipients) > 1 and not per_recipient:
        lines.append(
            f"Sent to several people ({recipients}); one tracking pixel cannot tell "
            "them apart, so this may have been any of them."
        )
    if any(e.possible_forward for e in events):
        lines.append(
            "Some opens came from a new network: the email may have been forwarded."
        )
    return f"{title}: {message.subject}", "\n".join(lines)


def _when(event: Event) -> str:
    return (as_utc(event.occurred_at) or datetime.now(UTC)).strftime(
        "%Y-%m-%d %H:%M UTC"
    )


def _where(event: Event) -> str:
    parts = [
        f" in {place(event)}" if place(event) else "",
        f" on {device(event)}" if device(event) else "",
    ]
    return "".join(parts)


def _clicked_links(events: Iterable[Event]) -> list[str]:
    counts: dict[str, int] = {}
    for event in events:
        url = event.link.url if event.link else None
        label = link_label(url)
        counts[label] = counts.get(label, 0) + 1
    return [f"- {label} ({n}x)" for label, n in counts.items()]


def unsynced_messages(
    session: Session, connection: CrmConnection, limit: int = 500
) -> list[int]:
    """Messages whose counted events or send are not yet in the CRM ledger."""
    since = datetime.now(UTC) - timedelta(days=REPLAY_DAYS)
    candidates = session.scalars(
        select(Message.id)
        .where(Message.org_id == connection.org_id, Message.sent_at >= since)
        .order_by(Message.id)
        .limit(limit * 4)
    ).all()
    behind = []
    for message_id in candidates:
        if _behind(session, connection.id, message_id):
            behind.append(message_id)
        if len(behind) >= limit:
            break
    return behind


def _behind(session: Session, connection_id: int, message_id: int) -> bool:
    """Whether the ledger lacks a row, or a row lags the counted events."""
    copied = session.scalar(
        select(MessageCopy.id).where(MessageCopy.message_id == message_id).limit(1)
    )
    counts_of = _counts_of(session, message_id, copied=copied is not None)
    rows = session.scalars(
        select(CrmRecord).where(
            CrmRecord.connection_id == connection_id, CrmRecord.message_id == message_id
        )
    ).all()
    if not rows:
        return True
    for row in rows:
        if row.state in {"pending"} or (
            row.state == "created"
            and row.synced_event_count < counts_of(row.recipient).get(row.kind, 0)
        ):
            return True
    kinds_with_rows = {(row.recipient, row.kind) for row in rows}
    recipients = {row.recipient for row in rows}
    return any(
        counts_of(r)[k] and (r, k) not in kinds_with_rows
        for r in recipients
        for k in ("open", "click")
    )


def replay(connection_id: int) -> int:
    """After (re)connecting: queue every message that is behind; return how many."""
    ctx = current()
    with ctx.db.session_factory() as session:
        connection = session.get(CrmConnection, connection_id)
        if connection is None or not _active(connection):
            return 0
        message_ids = unsynced_messages(session, connection)
    for start in range(0, len(message_ids), 100):
        ctx.jobs.enqueue(
            sync_messages, connection_id, message_ids[start : start + 100], queue="crm"
        )
    logger.info(
        "replay queued connection_id=%s messages=%d", connection_id, len(message_ids)
    )
    return len(message_ids)


def sweep() -> None:
    """Periodic safety net: replay every active connection (lost jobs, pauses ended)."""
    ctx = current()
    with ctx.db.session_factory() as session:
        ids = session.scalars(
            select(CrmConnection.id).where(CrmConnection.status == "connected")
        ).all()
    for connection_id in ids:
        replay(connection_id)
