"""Turn raw hits into stored, graded events and live notifications.

One job takes a batch of hits (RQ forks per job, so one job per hit would cost more
than the work). The job is safe to run twice: each hit id is stored once.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Select,
    func,
    insert,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from app.models import Event, Link, Message, Notification, Organization, as_utc
from app.presenters import describe_event
from app.privacy.rules import untracked_message_ids
from workers.context import WorkerContext, current
from workers.enrich import Location
from workers.grading import (
    BURST_WINDOW,
    Grade,
    HitFacts,
    MessageFacts,
    PriorEvent,
    grade,
    network_prefix,
)

logger = logging.getLogger(__name__)

# How many earlier events of a message grading looks back over (bursts, forwards).
HISTORY_DEPTH = 200

# Parsing an address costs more than the rest of a hit's row; addresses repeat.
_prefix = functools.lru_cache(maxsize=65536)(network_prefix)


@dataclass
class _Target:
    message: Message
    org: Organization
    link: Link | None


def ingest_hits(hits: list[dict[str, Any]]) -> int:
    """Store a batch of raw hits as events; return how many were new."""
    ctx = current()
    with ctx.db.begin() as session:
        targets = _targets(session, hits)
        history = _history(session, {t.message.id for t in targets.values()})
        rows = _event_rows(ctx, hits, targets, history)
        inserted = _insert(session, rows)
        _regrade_bursts(session, inserted)
        notified = _after_insert(session, inserted, targets)
    if notified:
        ctx.notifier.publish_many(notified)
    _hand_on(ctx, inserted)
    logger.info("ingested hits=%d new_events=%d", len(hits), len(inserted))
    return len(inserted)


def _targets(session: Session, hits: Sequence[dict[str, Any]]) -> dict[str, _Target]:
    """Map each hit's token to its message (and link), skipping unknown tokens."""
    open_tokens = {h["token"] for h in hits if h.get("kind") == "open"}
    link_tokens = {h["token"] for h in hits if h.get("kind") == "click"}
    targets: dict[str, _Target] = {}
    if open_tokens:
        query = (
            select(Message, Organization)
            .join(Organization, Organization.id == Message.org_id)
            .where(Message.token.in_(open_tokens), Message.track_opens.is_(True))
        )
        for message, org in session.execute(query):
            targets[message.token] = _Target(message, org, None)
    if link_tokens:
        clicks = (
            select(Message, Organization, Link)
            .join(Organization, Organization.id == Message.org_id)
            .join(Link, Link.message_id == Message.id)
            .where(Link.token.in_(link_tokens))
        )
        for message, org, link in session.execute(clicks):
            targets[link.token] = _Target(message, org, link)
    # A recipient put on the do-not-track list after sending is not tracked either.
    untracked = untracked_message_ids(session, [t.message for t in targets.values()])
    return {k: t for k, t in targets.items() if t.message.id not in untracked}


def _history(session: Session, message_ids: set[int]) -> dict[int, list[PriorEvent]]:
    """The most recent earlier events of each message, oldest first."""
    history: dict[int, list[PriorEvent]] = defaultdict(list)
    if not message_ids:
        return history
    query = (
        _latest_events_lateral(message_ids)
        if session.bind and session.bind.dialect.name == "postgresql"
        else _latest_events_ranked(message_ids)
    )
    for row in session.execute(query):
        history[row.message_id].append(
            PriorEvent(
                kind=row.type,
                at=as_utc(row.occurred_at) or datetime.now(UTC),
                classification=row.classification,
                ip_prefix=row.ip_prefix,
                asn=row.asn,
                link_id=row.link_id,
            )
        )
    return history


_PRIOR_COLUMNS = (
    Event.message_id,
    Event.type,
    Event.occurred_at,
    Event.classification,
    Event.ip_prefix,
    Event.asn,
    Event.link_id,
)


def _latest_events_lateral(message_ids: set[int]) -> Select[Any]:
    """Each message's latest events, read backwards along its index and no further."""
    # A busy message can hold many thousands of events; ranking them all for every
    # batch would make each batch slower than the one before.
    latest = (
        select(*_PRIOR_COLUMNS)
        .where(Event.message_id == Message.id)
        .order_by(Event.occurred_at.desc())
        .limit(HISTORY_DEPTH)
        .lateral()
    )
    return (
        select(latest)
        .select_from(Message)
        .join(latest, true())
        .where(Message.id.in_(message_ids))
        .order_by(latest.c.message_id, latest.c.occurred_at)
    )


def _latest_events_ranked(message_ids: set[int]) -> Select[Any]:
    """The same for databases without LATERAL (SQLite, in the quick start)."""
    ranked = (
        select(
            *_PRIOR_COLUMNS,
            func.row_number()
            .over(partition_by=Event.message_id, order_by=Event.occurred_at.desc())
            .label("rank"),
        )
        .where(Event.message_id.in_(message_ids))
        .subquery()
    )
    return (
        select(*(column for column in ranked.c if column.key != "rank"))
        .where(ranked.c.rank <= HISTORY_DEPTH)
        .order_by(ranked.c.occurred_at)
    )


def _event_rows(
    ctx: WorkerContext,
    hits: Sequence[dict[str, Any]],
    targets: dict[str, _Target],
    history: dict[int, list[PriorEvent]],
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for hit in sorted(hits, key=lambda h: h.get("at", 0)):
        target = targets.get(hit.get("token", ""))
        if target is None:
            continue
        rows.extend(_rows_for_hit(ctx, hit, target, history[target.message.id]))
    return rows


def _rows_for_hit(
    ctx: WorkerContext, hit: dict[str, Any], target: _Target, past: list[PriorEvent]
) -> list[dict[str, Any]]:
    """The hit's event, preceded by an implied open for a click with none before it."""
    facts = _facts(ctx, hit, target)
    message = target.message
    message_facts = MessageFacts(
        sent_at=as_utc(message.sent_at) or facts.at,
        sender_ip=message.sender_ip,
        recipient_count=len(message.recipients),
    )
    verdict = grade(facts, message_facts, past)
    rows = []
    if facts.kind == "click" and not any(p.kind == "open" for p in past):
        rows.append(_row(ctx, hit, target, facts, verdict, kind="open", implied=True))
        past.append(_prior(facts, verdict, "open"))
    rows.append(_row(ctx, hit, target, facts, verdict, kind=facts.kind, implied=False))
    past.append(_prior(facts, verdict, facts.kind))
    return rows


def _facts(ctx: WorkerContext, hit: dict[str, Any], target: _Target) -> HitFacts:
    ip = hit.get("ip")
    return HitFacts(
        kind="click" if hit.get("kind") == "click" else "open",
        at=datetime.fromtimestamp(float(hit.get("at", 0)), UTC),
        method=str(hit.get("method", "GET")).upper(),
        ip=ip,
        network=ctx.enricher.network(ip),
        device=ctx.enricher.device(hit.get("ua")),
        link_id=target.link.id if target.link else None,
    )


def _prior(facts: HitFacts, verdict: Grade, kind: str) -> PriorEvent:
    return PriorEvent(
        kind=kind,
        at=facts.at,
        classification=verdict.classification,
        ip_prefix=_prefix(facts.ip),
        asn=facts.network.asn if facts.network else None,
        link_id=facts.link_id,
    )


def _row(
    ctx: WorkerContext,
    hit: dict[str, Any],
    target: _Target,
    facts: HitFacts,
    verdict: Grade,
    *,
    kind: str,
    implied: bool,
) -> dict[str, Any]:
    org = target.org
    message = target.message
    recipients = message.recipients
    is_proxy = verdict.classification == "proxy"
    location = None if is_proxy else ctx.enricher.location(facts.ip)
    device = facts.device
    return {
        "hit_id": hit["id"] + ("i" if implied else ""),
        "message_id": message.id,
        "link_id": facts.link_id if kind == "click" else None,
        "type": kind,
        "occurred_at": facts.at,
        "received_at": datetime.now(UTC),
        "classification": verdict.classification,
        "counted": verdict.counted,
        "reasons": [*verdict.reasons, *(["implied-by-click"] if implied else [])],
        "implied": implied,
        "possible_forward": verdict.possible_forward,
        "recipient": recipients[0] if len(recipients) == 1 else None,
        "method": facts.method,
        "ip": _kept_ip(org.ip_policy, facts.ip),
        "ip_prefix": _prefix(facts.ip) if org.ip_policy != "none" else None,
        "user_agent": (hit.get("ua") or None),
        "asn": facts.network.asn if facts.network else None,
        "network": facts.network.org if facts.network else None,
        "device_client": device.client,
        "device_os": None if is_proxy else device.os,
        "device_type": "unknown" if is_proxy else device.type,
        **_kept_location(org.location_precision, location),
    }


def _kept_ip(policy: str, ip: str | None) -> str | None:
    """The address as the organisation's privacy setting keeps it."""
    if ip is None or policy == "none":
        return None
    if policy == "full":
        return ip
    prefix = _prefix(ip)
    return str(ipaddress.ip_network(prefix).network_address) if prefix else None


def _kept_location(precision: str, location: Location | None) -> dict[str, Any]:
    if location is None:
        return {"country": None, "country_code": None, "region": None, "city": None}
    return {
        "country": location.country,
        "country_code": location.country_code,
        "region": location.region if precision in {"city", "region"} else None,
        "city": location.city if precision == "city" else None,
    }


def _insert(session: Session, rows: list[dict[str, Any]]) -> list[Event]:
    """Insert events, skipping hits already stored; return the new ones."""
    if not rows:
        return []
    if _is_postgres(session):
        ids = _copy_insert(session, rows)
    else:
        ids = _values_insert(session, rows)
    if not ids:
        return []
    return list(
        session.scalars(select(Event).where(Event.id.in_(ids)).order_by(Event.id))
    )


def _is_postgres(session: Session) -> bool:
    return bool(session.bind and session.bind.dialect.name == "postgresql")


def _values_insert(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    statement = (
        sqlite.insert(Event)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["hit_id"])
        .returning(Event.id)
    )
    return list(session.scalars(statement))


def _copy_insert(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    """COPY the rows into a scratch table, then move over those not stored yet."""
    # A multi-row INSERT of a whole batch costs more to build and parse than to run;
    # COPY costs a few microseconds a row. The column names are the model's own.
    columns = list(rows[0])
    names = ", ".join(columns)
    session.execute(
        text(
            "CREATE TEMP TABLE incoming_events ON COMMIT DROP AS "  # noqa: S608
            f"SELECT 0 AS position, {names} FROM events WITH NO DATA"
        )
    )
    numbered = ([n, *(row[c] for c in columns)] for n, row in enumerate(rows))
    _copy(session, "incoming_events", ["position", *columns], numbered)
    moved = session.execute(
        text(
            f"INSERT INTO events ({names}) SELECT {names} FROM incoming_events "  # noqa: S608
            "ORDER BY position ON CONFLICT (hit_id) DO NOTHING RETURNING id"
        )
    )
    return list(moved.scalars())


def _copy(
    session: Session, table: str, columns: list[str], rows: Iterable[list[Any]]
) -> None:
    """COPY rows into ``table`` over the session's own connection."""
    cursor = session.connection().connection.cursor()
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([_copy_value(value) for value in row])


def _copy_value(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else value


def _regrade_bursts(session: Session, inserted: list[Event]) -> None:
    """Grade the first clicks of a scanner burst like the rest of it.

    A burst is only visible from its second click on; by then the first has been
    graded on its own. The clicks (and the opens they implied) inside the burst's
    window are regraded as the scanner they turned out to be.
    """
    for event in inserted:
        burst = [r for r in event.reasons if r.startswith("burst:")]
        if not burst or event.type != "click":
            continue
        earlier = session.scalars(
            select(Event).where(
                Event.message_id == event.message_id,
                Event.counted.is_(True),
                Event.occurred_at >= event.occurred_at - BURST_WINDOW,
                Event.occurred_at <= event.occurred_at,
            )
        )
        for other in earlier:
            if other.type == "click" or other.implied:
                other.classification = "scanner"
                other.counted = False
                other.reasons = [*other.reasons, f"{burst[0]}-regraded"]
    session.flush()


def _after_insert(
    session: Session, inserted: list[Event], targets: dict[str, _Target]
) -> set[tuple[int, str]]:
    """Refresh counts and write notifications; return (user, message) pairs to wake."""
    messages = {t.message.id: t.message for t in targets.values()}
    _refresh_counts(session, inserted)
    wake: set[tuple[int, str]] = set()
    notes: list[dict[str, Any]] = []
    for event in inserted:
        message = messages[event.message_id]
        if event.counted and not event.implied:
            notes.append(_notification(message, event))
        # Graded-out events make no notification but still belong on an open timeline.
        wake.add((message.user_id, message.public_id))
    _add_notifications(session, notes)
    return wake


def _refresh_counts(session: Session, inserted: list[Event]) -> None:
    """Add the new events to their messages' counts; recount after a regrade."""
    # Recounting from all of a message's events costs more with every event it
    # gets; adding the batch costs the same however busy the message is.
    regraded = {
        event.message_id
        for event in inserted
        if any(reason.startswith("burst:") for reason in event.reasons)
    }
    by_message: dict[int, list[Event]] = defaultdict(list)
    for event in inserted:
        by_message[event.message_id].append(event)
    additions = {}
    for message_id, events in by_message.items():
        if message_id in regraded:
            _recount(session, message_id)
        elif counted := [e for e in events if e.counted]:
            additions[message_id] = counted
    if _is_postgres(session) and additions:
        _add_all_to_counts(session, additions)
    else:
        # The quick start's SQLite holds few events: recounting is cheap there.
        for message_id in additions:
            _recount(session, message_id)


_ADD_TO_COUNTS = text(
    """
    UPDATE messages AS m SET
      open_count = m.open_count + v.opens,
      click_count = m.click_count + v.clicks,
      first_open_at = CASE WHEN v.first_open IS NOT NULL AND
        (m.first_open_at IS NULL OR m.first_open_at > v.first_open)
        THEN v.first_open ELSE m.first_open_at END,
      last_open_at = CASE WHEN v.last_open IS NOT NULL AND
        (m.last_open_at IS NULL OR m.last_open_at < v.last_open)
        THEN v.last_open ELSE m.last_open_at END,
      last_event_id = CASE WHEN (
          COALESCE(
            (SELECT e.occurred_at FROM events AS e WHERE e.id = m.last_event_id),
            '-infinity'::timestamptz
          ),
          COALESCE(m.last_event_id, 0)
        ) < (v.latest_at, v.latest_id)
        THEN v.latest_id ELSE m.last_event_id END
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(
      id int, opens int, clicks int, first_open timestamptz, last_open timestamptz,
      latest_id int, latest_at timestamptz)
    WHERE m.id = v.id
    """
)


def _add_all_to_counts(session: Session, additions: dict[int, list[Event]]) -> None:
    """One UPDATE for every message of the batch (PostgreSQL)."""
    rows = []
    for message_id, counted in additions.items():
        opens = [e.occurred_at for e in counted if e.type == "open"]
        latest = max(counted, key=lambda event: (event.occurred_at, event.id))
        rows.append(
            {
                "id": message_id,
                "opens": len(opens),
                "clicks": sum(1 for e in counted if e.type == "click"),
                "first_open": min(opens).isoformat() if opens else None,
                "last_open": max(opens).isoformat() if opens else None,
                "latest_id": latest.id,
                "latest_at": latest.occurred_at.isoformat(),
            }
        )
    session.execute(_ADD_TO_COUNTS, {"rows": json.dumps(rows)})


def _add_notifications(session: Session, notes: list[dict[str, Any]]) -> None:
    if not notes:
        return
    if _is_postgres(session):
        columns = list(notes[0])
        rows = ([note[c] for c in columns] for note in notes)
        _copy(session, "notifications", columns, rows)
    else:
        session.execute(insert(Notification), notes)


def recount_message(session: Session, message_id: int) -> None:
    """Recompute a message's counts after some of its events were deleted."""
    _recount(session, message_id)


def _recount(session: Session, message_id: int) -> None:
    counted = select(Event).where(
        Event.message_id == message_id, Event.counted.is_(True)
    )
    opens = counted.where(Event.type == "open").subquery()
    clicks = counted.where(Event.type == "click").subquery()
    latest = (
        counted.order_by(Event.occurred_at.desc(), Event.id.desc()).limit(1).subquery()
    )
    session.execute(
        update(Message)
        .where(Message.id == message_id)
        .values(
            open_count=select(func.count()).select_from(opens).scalar_subquery(),
            click_count=select(func.count()).select_from(clicks).scalar_subquery(),
            first_open_at=select(func.min(opens.c.occurred_at)).scalar_subquery(),
            last_open_at=select(func.max(opens.c.occurred_at)).scalar_subquery(),
            last_event_id=select(latest.c.id).scalar_subquery(),
        )
    )


def _notification(message: Message, event: Event) -> dict[str, Any]:
    title, body = describe_event(message, event)
    return {
        "user_id": message.user_id,
        "message_id": message.id,
        "event_id": event.id,
        "title": title[:300],
        "body": body[:500],
        "created_at": datetime.now(UTC),
    }


def _hand_on(ctx: WorkerContext, inserted: list[Event]) -> None:
    """Queue CRM syncing and follow-up rules for the counted events just stored."""
    from workers import followups
    from workers.sync import events_stored

    counted = [event.id for event in inserted if event.counted]
    if counted:
        events_stored(ctx, counted)
        followups.events_stored(ctx, counted)
