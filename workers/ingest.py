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
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import (
    Select,
    String,
    and_,
    bindparam,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.expression import ColumnClause

from app.messages import hold_messages
from app.models import (
    Event,
    Link,
    Message,
    MessageCopy,
    Notification,
    Organization,
    as_utc,
    utcnow,
)
from app.privacy.rules import untracked_ids
from app.tracking.spool import decode
from workers.context import WorkerContext, current
from workers.enrich import Device, Location, Network, canonical_address
from workers.grading import (
    BURST_WINDOW,
    HUMAN,
    Grade,
    History,
    HitFacts,
    MessageFacts,
    PriorEvent,
    grade,
    network_prefix,
)
from workers.queue import RqJobs, drop_batch, load_batch

logger = logging.getLogger(__name__)


class _Target:
    """A hit's message, organisation, link and copy, with what every hit reads.

    Read off the ORM objects once a batch: an attribute of a mapped object costs a
    descriptor call, and a busy message has a thousand hits in a batch.
    """

    __slots__ = (
        "copy",
        "facts",
        "has_copies",
        "ip_policy",
        "link",
        "link_id",
        "location_precision",
        "message",
        "message_id",
        "recipient",
        "unit",
    )

    def __init__(
        self,
        message: Message,
        org: Organization,
        link: Link | None,
        copy: MessageCopy | None,
        has_copies: bool,
    ) -> None:
        self.message = message
        self.message_id = message.id
        self.link = link
        self.link_id = link.id if link is not None else None
        self.copy = copy
        self.has_copies = has_copies
        copy_recipient = copy.recipient if copy is not None else None
        self.recipient = _named_recipient(message, copy_recipient, has_copies)
        # What grading reads past events of: the whole message, or one recipient's.
        self.unit: _Unit = (self.message_id, self.recipient)
        # A copy went to its recipient alone; the message's own copy beside copies
        # went to the sender's Sent folder, or whoever else had it.
        reached = len(message.recipients) + (1 if has_copies else 0)
        self.ip_policy = org.ip_policy
        self.location_precision = org.location_precision
        self.facts = MessageFacts(
            as_utc(message.sent_at) or utcnow(),
            message.sender_ip,
            1 if copy is not None else reached,
        )


# A message and the recipient its events name (None: "somebody"). A message without
# copies names one recipient in all its events (or none); one with copies has a
# unit per recipient, and its own copy's (the Sent folder's, "somebody") besides.
_Unit = tuple[int, str | None]


def _named_recipient(
    message: Message, copy_recipient: str | None, has_copies: bool
) -> str | None:
    """Whom a hit names: a copy's recipient; for the message's own pixel and links,
    its one recipient, or nobody in particular when it has several or has copies."""
    if copy_recipient is not None:
        return copy_recipient[:_RECIPIENT_LIMIT]
    recipients = message.recipients
    if has_copies or len(recipients) != 1:
        return None
    return recipients[0][:_RECIPIENT_LIMIT]


# Whether a message has copies: its units are then told apart in grading.
_HAS_COPIES = (
    select(MessageCopy.id)
    .where(MessageCopy.message_id == Message.id)
    .correlate(Message)
    .exists()
    .label("has_copies")
)


@dataclass(slots=True)
class NewEvent:
    """An event the batch just stored, as regrading, counting, notifying and handing
    on read it (a notification's words are written out from the stored row).

    Loading the rows back as ORM objects would cost more than storing them.
    """

    id: int
    message_id: int
    type: str
    occurred_at: datetime
    counted: bool
    reasons: list[str]
    implied: bool
    possible_forward: bool
    recipient: str | None
    link: Link | None
    copy: MessageCopy | None

    @classmethod
    def of(cls, event_id: int, row: dict[str, Any], target: _Target) -> NewEvent:
        fields = {name: row[name] for name in _NEW_EVENT_FIELDS}
        link = target.link if row["type"] == "click" else None
        return cls(id=event_id, link=link, copy=target.copy, **fields)

    @property
    def unit(self) -> _Unit:
        return (self.message_id, self.recipient)


_NEW_EVENT_FIELDS = [
    name for name in NewEvent.__dataclass_fields__ if name not in {"id", "link", "copy"}
]


def ingest_batch(key: str) -> int:
    """Store a batch of spooled hits that the spool queued beside this job."""
    jobs = current().jobs
    if not isinstance(jobs, RqJobs):
        raise RuntimeError("queued hit batches are kept in Redis: set REDIS_URL")
    block = load_batch(jobs.connection, key)
    if block is None:
        # An earlier run stored it and was stopped before RQ noted that; or it was
        # kept past its time (a failed job requeued more than a week later).
        logger.warning("hit batch not found key=%s: stored already, or expired", key)
        return 0
    stored = ingest_lines(block)
    drop_batch(jobs.connection, key)
    return stored


# How often hit batches that failed every retry are queued again.
RETRY_FAILED_INTERVAL = 300.0


def retry_failed_batches() -> int:
    """Queue again the hit batches whose job failed every retry; return how many.

    RQ's retries of a batch span about ten minutes: a database down for longer would
    leave its hits among the failed jobs until someone requeued them. Each is tried
    once more every few minutes, for as long as its batch is kept (eight days); a
    batch that has gone by then is dropped with a warning.
    """
    from rq.registry import FailedJobRegistry

    jobs = current().jobs
    if not isinstance(jobs, RqJobs):
        return 0  # in-process jobs are retried by nobody but the sweeps
    registry = FailedJobRegistry("hits", connection=jobs.connection)
    queued = 0
    for job_id in registry.get_job_ids():
        try:
            registry.requeue(job_id)
            queued += 1
        except Exception as exc:  # noqa: BLE001 (gone or already taken up meanwhile)
            logger.warning("failed hit batch not queued again job=%s: %s", job_id, exc)
    if queued:
        logger.warning("queued failed hit batches again jobs=%d", queued)
    return queued


def ingest_lines(block: bytes) -> int:
    """Store a block of spooled hit lines as events; return how many were new."""
    hits = decode(block)
    kept = [hit for hit in hits if _well_formed(hit)]
    if len(kept) < len(hits):
        # Such a hit would fail its batch at every retry, holding up the others.
        logger.warning("skipped malformed hits=%d", len(hits) - len(kept))
    return ingest_hits(kept)


def _well_formed(hit: dict[str, Any]) -> bool:
    """Whether a hit has the fields the endpoints write, each of its type."""
    get = hit.get
    at = get("at")
    return (
        type(get("id")) is str
        and type(get("kind")) is str
        and type(get("token")) is str
        and type(at) in _NUMBERS
        and type(get("ip")) in _TEXT_OR_NONE
        and type(get("ua")) in _TEXT_OR_NONE
        and type(get("method")) in _TEXT_OR_NONE
        and type(get("headers", {})) is dict
    )


# As JSON decodes them: exact types, so that true is not taken for a number.
_NUMBERS = (int, float)
_TEXT_OR_NONE = (str, type(None))


def ingest_hits(hits: list[dict[str, Any]]) -> int:
    """Store a batch of raw hits as events; return how many were new.

    A hit the database refuses must not hold up the others: the batch is split in
    halves until the hit is alone, and that one is logged and dropped.
    """
    if not hits:
        return 0
    try:
        return _ingest(hits)
    except (DataError, psycopg.DataError) as exc:
        if len(hits) == 1:
            reason = (str(getattr(exc, "orig", exc)).splitlines() or [""])[0][:200]
            logger.error(
                "dropped a hit the database refused id=%s: %s",
                hits[0].get("id"),
                reason,
            )
            return 0
        middle = len(hits) // 2
        return ingest_hits(hits[:middle]) + ingest_hits(hits[middle:])


def _ingest(hits: list[dict[str, Any]]) -> int:
    ctx = current()
    for hit in hits:
        # PostgreSQL's text cannot hold NUL, which a client may well send.
        ua = hit.get("ua")
        if ua and "\x00" in ua:
            hit["ua"] = ua.replace("\x00", "")
    with ctx.db.begin() as session:
        targets = _targets(session, hits)
        history = _history(session, hits, targets)
        rows, owners = _event_rows(ctx, hits, targets, history)
        inserted = _insert(session, rows, owners)
        uncounted = _regrade_bursts(session, inserted)
        quiet = _repeat_quiet(ctx)
        notified = _after_insert(session, inserted, uncounted, targets, quiet)
        hand_on = _hand_on(session, inserted, targets)
    if notified:
        ctx.notifier.publish_many(notified)
    hand_on.enqueue(ctx)
    logger.info("ingested hits=%d new_events=%d", len(hits), len(inserted))
    return len(inserted)


def _targets(session: Session, hits: Sequence[dict[str, Any]]) -> dict[str, _Target]:
    """Map each hit's token to its message (and link, and copy), skipping unknown
    tokens and those no longer tracked.

    The messages are held against deletion and erasure until the batch commits (one
    lock a message, where a foreign key would check every event stored), and read
    once held: an erase that came first is seen whole.
    """
    open_tokens = {h["token"] for h in hits if h.get("kind") == "open"}
    link_tokens = {h["token"] for h in hits if h.get("kind") == "click"}
    held = hold_messages(session, _message_ids(session, open_tokens, link_tokens))
    if not held:
        return {}
    targets: dict[str, _Target] = {}
    ids = Message.id.in_(held)
    if open_tokens:
        query = (
            select(Message, Organization, _HAS_COPIES)
            .join(Organization, Organization.id == Message.org_id)
            .where(ids, Message.token.in_(open_tokens), Message.track_opens.is_(True))
        )
        for message, org, has_copies in session.execute(query):
            targets[message.token] = _Target(message, org, None, None, has_copies)
        # Tokens of no message's own pixel may be a recipient's copy's.
        if copy_tokens := open_tokens - targets.keys():
            copies = (
                select(Message, Organization, MessageCopy)
                .join(Organization, Organization.id == Message.org_id)
                .join(MessageCopy, MessageCopy.message_id == Message.id)
                .where(
                    ids,
                    MessageCopy.token.in_(copy_tokens),
                    Message.track_opens.is_(True),
                )
            )
            for message, org, copy in session.execute(copies):
                targets[copy.token] = _Target(message, org, None, copy, True)
    if link_tokens:
        clicks = (
            select(Message, Organization, Link, MessageCopy, _HAS_COPIES)
            .join(Organization, Organization.id == Message.org_id)
            .join(Link, Link.message_id == Message.id)
            .outerjoin(MessageCopy, MessageCopy.id == Link.copy_id)
            .where(ids, Link.token.in_(link_tokens))
        )
        for message, org, link, copy, has_copies in session.execute(clicks):
            targets[link.token] = _Target(message, org, link, copy, has_copies)
    untracked = _untracked(session, targets)
    return {k: t for k, t in targets.items() if t.unit not in untracked}


def _message_ids(
    session: Session, open_tokens: set[str], link_tokens: set[str]
) -> set[int]:
    """The messages the tokens belong to, as one indexed query."""
    parts = []
    if open_tokens:
        parts.append(select(Message.id).where(Message.token.in_(open_tokens)))
        parts.append(
            select(MessageCopy.message_id).where(MessageCopy.token.in_(open_tokens))
        )
    if link_tokens:
        parts.append(select(Link.message_id).where(Link.token.in_(link_tokens)))
    if not parts:
        return set()
    return set(session.scalars(union_all(*parts)))


def _untracked(session: Session, targets: dict[str, _Target]) -> set[_Unit]:
    """Units whose hits are no longer tracked.

    A recipient put on the do-not-track list after sending is not tracked either: on
    their own copy, or on the message's own pixel and links, which may be theirs. Nor
    is the message's own pixel once a recipient has been erased from it.
    """
    gone = {
        t.unit for t in targets.values() if t.copy is None and t.message.erased_count
    }
    wanted = {
        t.unit: (
            t.message.org_id,
            [t.copy.recipient] if t.copy else t.message.recipients,
        )
        for t in targets.values()
        if t.unit not in gone
    }
    return gone | untracked_ids(session, wanted)


def _history(
    session: Session, hits: Sequence[dict[str, Any]], targets: dict[str, _Target]
) -> dict[_Unit, History]:
    """What grading needs of each unit's stored events, in indexed queries.

    Two queries for all messages without copies; two more for each recipient of a
    message with copies that the batch has hits of.
    """
    history = {t.unit: History() for t in targets.values()}
    if not history:
        return history
    shared = {t.message_id: t.unit for t in targets.values() if not t.has_copies}
    if shared:
        for row in session.execute(_FIRSTS, {"ids": sorted(shared)}):
            past = history[shared[row.id]]
            past.has_open = bool(row.opened)
            if row.occurred_at is not None:
                past.add(_prior_of(row))
    for unit in {t.unit for t in targets.values() if t.has_copies}:
        _unit_firsts(session, unit, history[unit])
    # Bursts look back a few seconds from each hit. Each link's clicks in that span
    # are summed up by their first and last time, which answers exactly whenever the
    # stored clicks are older than the hits (the usual order of arrival).
    messages = {t.message_id: t.message for t in targets.values()}
    copied = {t.message_id for t in targets.values() if t.has_copies}
    times = [float(hit.get("at", 0)) for hit in hits]
    start = datetime.fromtimestamp(min(times), UTC) - BURST_WINDOW
    end = datetime.fromtimestamp(max(times), UTC)
    params = {"ids": sorted(messages), "start": start, "end": end}
    for row in session.execute(_RECENT_CLICKS, params):
        if row.first is None:
            continue
        named = _named_recipient(
            messages[row.message_id], row.copy_recipient, row.message_id in copied
        )
        unit = (row.message_id, named)
        if unit not in history:
            continue  # another recipient's copy, with no hit in this batch
        for at in (row.first, row.last):
            history[unit].add(
                PriorEvent("click", as_utc(at) or end, "", None, None, row.link_id)
            )
    return history


def _unit_firsts(session: Session, unit: _Unit, past: History) -> None:
    """Whether one recipient's copy (or the message's own) was opened, and its first
    human open."""
    message_id, recipient = unit
    opens = (
        Event.message_id == message_id,
        Event.type == _OPEN,
        _named(recipient),
    )
    first = session.execute(
        select(*_prior_columns(Event))
        .where(*opens, Event.classification == literal(HUMAN, literal_execute=True))
        .order_by(Event.occurred_at)
        .limit(_ONE)
    ).first()
    if first is not None:
        past.add(_prior_of(first))
    else:
        past.has_open = (
            session.scalar(select(Event.id).where(*opens).limit(_ONE)) is not None
        )


def _named(recipient: str | None) -> Any:
    """Events that name this recipient (None: "somebody")."""
    return (
        Event.recipient == recipient
        if recipient is not None
        else Event.recipient.is_(None)
    )


# The hot queries below spell their constants out in the SQL. PostgreSQL plans a
# statement the driver has prepared once for all values: with "type = $1" it cannot
# use the index of opens alone, and with "LIMIT $2" it cannot tell that one row is
# enough, and it would read every event of a busy message for each batch.
_OPEN = literal("open", literal_execute=True)
_CLICK = literal("click", literal_execute=True)
_ONE: ColumnClause[int] = literal_column("1")


def _firsts() -> Select[Any]:
    """Per message: whether it was ever opened, and its first human open."""
    first_human = aliased(Event)
    # A LIMIT 1 subquery, not EXISTS: without fresh statistics PostgreSQL may answer
    # an EXISTS by hashing every open of the table, once per batch.
    opened = (
        select(Event.id)
        .where(Event.message_id == Message.id, Event.type == _OPEN)
        .limit(_ONE)
        .scalar_subquery()
        .is_not(None)
        .label("opened")
    )
    first_human_id = (
        select(Event.id)
        .where(
            Event.message_id == Message.id,
            Event.type == _OPEN,
            Event.classification == literal(HUMAN, literal_execute=True),
        )
        .order_by(Event.occurred_at)
        .limit(_ONE)
        .scalar_subquery()
    )
    return (
        select(Message.id, opened, *_prior_columns(first_human))
        .outerjoin(first_human, first_human.id == first_human_id)
        .where(Message.id.in_(bindparam("ids", expanding=True)))
    )


def _recent_clicks() -> Select[Any]:
    """Per link of the messages: its first and last click between two times.

    Two probes of the index of clicks per link each, however many clicks a scanner
    storm has put in the span.
    """

    def edge(aggregate: Any) -> Any:
        return (
            select(aggregate(Event.occurred_at))
            .where(
                Event.link_id == Link.id,
                Event.type == _CLICK,
                Event.occurred_at >= bindparam("start", type_=Event.occurred_at.type),
                Event.occurred_at <= bindparam("end", type_=Event.occurred_at.type),
            )
            .scalar_subquery()
        )

    return (
        select(
            Link.message_id,
            Link.id.label("link_id"),
            Link.copy_id,
            MessageCopy.recipient.label("copy_recipient"),
            edge(func.min).label("first"),
            edge(func.max).label("last"),
        )
        .outerjoin(MessageCopy, MessageCopy.id == Link.copy_id)
        .where(Link.message_id.in_(bindparam("ids", expanding=True)))
    )


def _prior_columns(event: type[Event]) -> tuple[Any, ...]:
    return (
        event.type,
        event.occurred_at,
        event.classification,
        event.ip_prefix,
        event.asn,
        event.link_id,
    )


def _prior_of(row: Any) -> PriorEvent:
    return PriorEvent(
        kind=row.type,
        at=as_utc(row.occurred_at) or datetime.now(UTC),
        classification=row.classification,
        ip_prefix=row.ip_prefix,
        asn=row.asn,
        link_id=row.link_id,
    )


# Built once: putting these statements together costs more than running them.
_FIRSTS = _firsts()
_RECENT_CLICKS = _recent_clicks()


def _event_rows(
    ctx: WorkerContext,
    hits: Sequence[dict[str, Any]],
    targets: dict[str, _Target],
    history: dict[_Unit, History],
) -> tuple[list[dict[str, Any]], dict[str, _Target]]:
    """The rows to store, and the target of each by hit id (implied opens too)."""
    rows: list[dict[str, Any]] = []
    owners: dict[str, _Target] = {}
    for hit in sorted(hits, key=lambda h: h.get("at", 0)):
        target = targets.get(hit.get("token", ""))
        if target is None:
            continue
        for row in _rows_for_hit(ctx, hit, target, history[target.unit]):
            rows.append(row)
            owners[row["hit_id"]] = target
    return rows, owners


def _rows_for_hit(
    ctx: WorkerContext, hit: dict[str, Any], target: _Target, past: History
) -> list[dict[str, Any]]:
    """The hit's event, preceded by an implied open for a click with none before it."""
    facts = _facts(ctx, hit, target)
    verdict = grade(facts, target.facts, past)
    rows = []
    if facts.kind == "click" and not past.has_open:
        rows.append(_row(ctx, hit, target, facts, verdict, kind="open", implied=True))
        past.add(_prior(facts, verdict, "open"))
    rows.append(_row(ctx, hit, target, facts, verdict, kind=facts.kind, implied=False))
    past.add(_prior(facts, verdict, facts.kind))
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
        link_id=target.link_id,
    )


def _prior(facts: HitFacts, verdict: Grade, kind: str) -> PriorEvent:
    return PriorEvent(
        kind=kind,
        at=facts.at,
        classification=verdict.classification,
        ip_prefix=network_prefix(facts.ip),
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
    ip_policy = target.ip_policy
    is_proxy = verdict.classification == "proxy"
    location = None if is_proxy else ctx.enricher.location(facts.ip)
    # What comes of a lookup is cut to fit once per cache entry, not once per hit.
    return _clipped(
        {
            "hit_id": hit["id"] + ("i" if implied else ""),
            "message_id": target.message_id,
            "link_id": facts.link_id if kind == "click" else None,
            "type": kind,
            "occurred_at": facts.at,
            "received_at": datetime.now(UTC),
            "classification": verdict.classification,
            "counted": verdict.counted,
            "reasons": [*verdict.reasons, *(["implied-by-click"] if implied else [])],
            "implied": implied,
            "possible_forward": verdict.possible_forward,
            "recipient": target.recipient,
            "method": facts.method,
            "ip": _kept_ip(ip_policy, facts.ip),
            "ip_prefix": network_prefix(facts.ip) if ip_policy != "none" else None,
            "user_agent": (hit.get("ua") or None),
            **_network_columns(facts.network),
            **_device_columns(facts.device, is_proxy),
            **_kept_location(target.location_precision, location),
        },
        _HIT_LIMITS,
    )


# The longest value each text column of events holds: anything a hit brings (a method,
# a user agent's version) is cut to fit rather than failing the whole batch.
_LIMITS = tuple(
    (column.name, column.type.length)
    for column in Event.__table__.columns
    if isinstance(column.type, String) and column.type.length
)


_RECIPIENT_LIMIT = dict(_LIMITS)["recipient"]
# The columns whose value a hit brings itself, rather than a cached lookup.
_HIT_LIMITS = tuple((n, k) for n, k in _LIMITS if n in {"hit_id", "method", "ip"})


def _clipped(
    row: dict[str, Any], limits: tuple[tuple[str, int], ...] = _LIMITS
) -> dict[str, Any]:
    for name, limit in limits:
        value = row.get(name)
        if value.__class__ is str and len(value) > limit:
            row[name] = value[:limit]
    return row


@functools.lru_cache(maxsize=65536)
def _network_columns(network: Network | None) -> dict[str, Any]:
    if network is None:
        return {"asn": None, "network": None}
    return _clipped({"asn": network.asn, "network": network.org})


@functools.lru_cache(maxsize=8192)
def _device_columns(device: Device, is_proxy: bool) -> dict[str, Any]:
    """A proxy's device is the proxy's, not the reader's: only its name is kept."""
    return _clipped(
        {
            "device_client": device.client,
            "device_os": None if is_proxy else device.os,
            "device_type": "unknown" if is_proxy else device.type,
        }
    )


def _kept_ip(policy: str, ip: str | None) -> str | None:
    """The address as the organisation's privacy setting keeps it."""
    if ip is None or policy == "none":
        return None
    if policy == "full":
        return canonical_address(ip)
    return _network_address(ip)


@functools.lru_cache(maxsize=65536)
def _network_address(ip: str) -> str | None:
    """The first address of the hit's network: what the "truncate" policy keeps."""
    prefix = network_prefix(ip)
    return str(ipaddress.ip_network(prefix).network_address) if prefix else None


@functools.lru_cache(maxsize=65536)
def _kept_location(precision: str, location: Location | None) -> dict[str, Any]:
    if location is None:
        return {"country": None, "country_code": None, "region": None, "city": None}
    return _clipped(
        {
            "country": location.country,
            "country_code": location.country_code,
            "region": location.region if precision in {"city", "region"} else None,
            "city": location.city if precision == "city" else None,
        }
    )


def _insert(
    session: Session, rows: list[dict[str, Any]], owners: dict[str, _Target]
) -> list[NewEvent]:
    """Insert events, skipping hits already stored; return the new ones."""
    if not rows:
        return []
    if _is_postgres(session):
        stored = _copy_insert(session, rows)
    else:
        stored = _values_insert(session, rows)
    by_hit = {row["hit_id"]: row for row in rows}
    new = []
    for event_id, hit_id in sorted(stored):
        row = by_hit[hit_id]
        new.append(NewEvent.of(event_id, row, owners[hit_id]))
    return new


def _is_postgres(session: Session) -> bool:
    return bool(session.bind and session.bind.dialect.name == "postgresql")


def _values_insert(
    session: Session, rows: list[dict[str, Any]]
) -> list[tuple[int, str]]:
    statement = (
        sqlite.insert(Event)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["hit_id"])
        .returning(Event.id, Event.hit_id)
    )
    return [(row.id, row.hit_id) for row in session.execute(statement)]


def _copy_insert(session: Session, rows: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """COPY the hits not stored yet straight into the events table.

    Returns (event id, hit id) of the rows stored; the ids are taken from the
    table's sequence beforehand, as COPY cannot return them.
    """
    # A multi-row INSERT of a whole batch costs more to build and parse than to run;
    # COPY costs a few microseconds a row. The column names are the model's own.
    # Nothing is looked up first: hits stored already are rare, and a query over a
    # thousand hit ids is one more plan that stale statistics can turn into a scan.
    ids = session.scalars(_NEXT_EVENT_IDS, {"count": len(rows)}).all()
    columns = ["id", *rows[0]]
    values = ([i, *row.values()] for i, row in zip(ids, rows, strict=True))
    try:
        with session.begin_nested():
            _copy(session, "events", columns, values)
    except psycopg.errors.UniqueViolation:
        # Some of these hits are stored already, or are being stored by another job
        # right now: a batch shipped twice by a process that died between shipping
        # it and noting that. Only the others are stored.
        return _copy_insert_skipping(session, rows)
    return [(i, row["hit_id"]) for i, row in zip(ids, rows, strict=True)]


_NEXT_EVENT_IDS = text(
    "SELECT nextval(pg_get_serial_sequence('events', 'id')) "
    "FROM generate_series(1, :count)"
)


def _copy_insert_skipping(
    session: Session, rows: list[dict[str, Any]]
) -> list[tuple[int, str]]:
    """COPY the rows into a scratch table, then move over those not stored yet."""
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
            "ORDER BY position ON CONFLICT (hit_id) DO NOTHING RETURNING id, hit_id"
        )
    )
    return [(row.id, row.hit_id) for row in moved]


def _copy(
    session: Session, table: str, columns: list[str], rows: Iterable[list[Any]]
) -> None:
    """COPY rows into ``table`` over the session's own connection."""
    cursor = session.connection().connection.cursor()
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        json_columns: list[int] | None = None
        for row in rows:
            if json_columns is None:
                json_columns = [
                    i for i, value in enumerate(row) if isinstance(value, list | dict)
                ]
            for i in json_columns:
                value = row[i]
                row[i] = (
                    _json_list(tuple(value))
                    if isinstance(value, list)
                    else json.dumps(value)
                )
            copy.write_row(row)


@functools.lru_cache(maxsize=4096)
def _json_list(values: tuple[Any, ...]) -> str:
    """A list as JSON; cached, since events share a few lists of reasons."""
    return json.dumps(list(values))


def _regrade_bursts(session: Session, inserted: list[NewEvent]) -> list[Event]:
    """Grade the first clicks of a scanner burst like the rest of it.

    A burst is only visible from its second click on; by then the first has been
    graded on its own. The clicks (and the opens they implied) inside the burst's
    window are regraded as the scanner they turned out to be, in one query for up to
    200 bursts. Returns the events of earlier batches that stopped being counted.
    """
    spans = _burst_spans(inserted)
    windows = [(unit, lo, hi) for unit, found in spans.items() for lo, hi, _ in found]
    regraded: list[Event] = []
    # SQLite parses a chain of ORs as a tree at most 1,000 deep.
    for start in range(0, len(windows), 200):
        within = or_(
            *(
                and_(
                    Event.message_id == message_id,
                    _named(recipient),
                    Event.occurred_at.between(lo, hi),
                )
                for (message_id, recipient), lo, hi in windows[start : start + 200]
            )
        )
        # Locked, so that two jobs never both take the same event off the counts.
        regraded += session.scalars(
            select(Event)
            .where(
                Event.counted.is_(True),
                or_(Event.type == _CLICK, Event.implied.is_(True)),
                within,
            )
            .order_by(Event.id)
            .with_for_update()
        ).all()
    new = {event.id: event for event in inserted}
    for event in regraded:
        label = next(
            name
            for lo, hi, name in spans[(event.message_id, event.recipient)]
            if lo <= event.occurred_at <= hi
        )
        event.classification = "scanner"
        event.counted = False
        event.reasons = [*event.reasons, f"{label}-regraded"]
        if stored := new.get(event.id):
            stored.counted = False
    session.flush()
    return [event for event in regraded if event.id not in new]


def _burst_spans(
    inserted: list[NewEvent],
) -> dict[_Unit, list[tuple[datetime, datetime, str]]]:
    """Per unit, the merged time spans of its new burst clicks, with their label."""
    windows: dict[_Unit, list[tuple[datetime, datetime, str]]] = defaultdict(list)
    for event in inserted:
        label = next((r for r in event.reasons if r.startswith("burst:")), None)
        if label and event.type == "click":
            at = as_utc(event.occurred_at) or datetime.now(UTC)
            windows[event.unit].append((at - BURST_WINDOW, at, label))
    merged: dict[_Unit, list[tuple[datetime, datetime, str]]] = {}
    for unit, spans in windows.items():
        spans.sort()
        out = [spans[0]]
        for lo, hi, label in spans[1:]:
            last_lo, last_hi, last_label = out[-1]
            if lo <= last_hi:
                out[-1] = (last_lo, max(hi, last_hi), last_label)
            else:
                out.append((lo, hi, label))
        merged[unit] = out
    return merged


def _after_insert(
    session: Session,
    inserted: list[NewEvent],
    uncounted: list[Event],
    targets: dict[str, _Target],
    quiet: timedelta,
) -> set[tuple[int, str]]:
    """Refresh counts and write notifications; return (user, message) pairs to wake."""
    messages = {t.message.id: t.message for t in targets.values()}
    _refresh_counts(session, inserted, uncounted)
    wake: set[tuple[int, str]] = set()
    notes: list[dict[str, Any]] = []
    repeats = _Repeats(quiet)
    # In time order, so that of a run of repeats the first is the one told.
    for event in sorted(inserted, key=lambda e: (e.occurred_at, e.id)):
        message = messages[event.message_id]
        told = event.counted and not event.implied
        if told and repeats.news(message, event):
            notes.append(_notification(message, event))
        # Graded-out events make no notification but still belong on an open timeline.
        wake.add((message.user_id, message.public_id))
    repeats.remember()
    _add_notifications(session, notes)
    return wake


def _repeat_quiet(ctx: WorkerContext) -> timedelta:
    """How long after a notified open (or click of a link) repeats notify nobody."""
    seconds = float(ctx.settings.get("NOTIFY_REPEAT_SECONDS") or 0)
    return timedelta(seconds=max(0.0, seconds))


# What remembers when its events were last told of.
_Holder = Message | MessageCopy | Link


class _Repeats:
    """Which counted events of a batch are news to their sender.

    A reader who opens an email again and again, or whose mail client fetches the
    image on every view, makes one notification per ``quiet`` span, not one per
    view: the events are all stored, counted and on the timeline. Opens count per
    message and clicks per link, so a first click is always told. Opens from another
    network than the first reader's (possible forwards) have a span of their own:
    the first is told at once, since it may be a new reader.
    """

    def __init__(self, quiet: timedelta) -> None:
        self.quiet = quiet
        # The time of the latest event told of, per span: read off the row once,
        # written back once, whatever the batch holds.
        self._last: dict[tuple[_Holder, str], datetime | None] = {}
        self._changed: set[tuple[_Holder, str]] = set()

    def news(self, message: Message, event: NewEvent) -> bool:
        span: tuple[_Holder, str]
        # A recipient's copy keeps the spans of its recipient's opens.
        opened: Message | MessageCopy = event.copy or message
        if event.type == "click":
            if event.link is None:
                return True
            span = (event.link, "click_notified_at")
        elif event.possible_forward:
            span = (opened, "forward_notified_at")
        else:
            span = (opened, "open_notified_at")
        if span in self._last:
            last = self._last[span]
        else:
            last = self._last[span] = as_utc(getattr(*span))
        if last is not None and abs(event.occurred_at - last) < self.quiet:
            return False
        if last is None or event.occurred_at > last:
            self._last[span] = event.occurred_at
            self._changed.add(span)
        return True

    def remember(self) -> None:
        """Keep what was told on the rows, for the batches to come."""
        for holder, column in self._changed:
            setattr(holder, column, self._last[(holder, column)])


def _refresh_counts(
    session: Session, inserted: list[NewEvent], uncounted: list[Event]
) -> None:
    """Add the batch's counted events to their messages, less those regraded."""
    touched = {e.message_id for e in inserted} | {e.message_id for e in uncounted}
    if not _is_postgres(session):
        # The quick start's SQLite holds few events: recounting is cheap there.
        for message_id in touched:
            _recount(session, message_id)
        return
    # Recounting from all of a message's events costs more with every event it
    # gets; adding the batch costs the same however busy the message is.
    changes: dict[int, dict[str, Any]] = {
        message_id: {"id": message_id, "opens": 0, "clicks": 0, "counted": []}
        for message_id in touched
    }
    for event in inserted:
        if event.counted:
            change = changes[event.message_id]
            change["opens" if event.type == "open" else "clicks"] += 1
            change["counted"].append(event)
    for old in uncounted:
        changes[old.message_id]["opens" if old.type == "open" else "clicks"] -= 1
    changed = [c for c in changes.values() if c["opens"] or c["clicks"] or c["counted"]]
    if changed:
        _add_all_to_counts(session, changed)
    # An uncounted event may have been a message's first or last open, or its latest.
    for message_id in {old.message_id for old in uncounted}:
        _refresh_edges(session, message_id)


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
      last_event_id = CASE WHEN v.latest_id IS NOT NULL AND (
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


def _add_all_to_counts(session: Session, changes: list[dict[str, Any]]) -> None:
    """One UPDATE for every message of the batch (PostgreSQL)."""
    rows = []
    for change in changes:
        counted: list[NewEvent] = change["counted"]
        opens = [e.occurred_at for e in counted if e.type == "open"]
        latest = max(counted, key=lambda e: (e.occurred_at, e.id), default=None)
        rows.append(
            {
                "id": change["id"],
                "opens": change["opens"],
                "clicks": change["clicks"],
                "first_open": min(opens).isoformat() if opens else None,
                "last_open": max(opens).isoformat() if opens else None,
                "latest_id": latest.id if latest else None,
                "latest_at": latest.occurred_at.isoformat() if latest else None,
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
    """Recompute a message's counts and edges from all of its counted events."""

    def count(kind: str) -> Any:
        return (
            select(func.count())
            .select_from(Event)
            .where(*_counted(message_id), Event.type == kind)
            .scalar_subquery()
        )

    session.execute(
        update(Message)
        .where(Message.id == message_id)
        .values(
            open_count=count("open"), click_count=count("click"), **_edges(message_id)
        )
    )


def _refresh_edges(session: Session, message_id: int) -> None:
    """Recompute a message's first and last counted open and its latest event."""
    session.execute(
        update(Message).where(Message.id == message_id).values(**_edges(message_id))
    )


def _counted(message_id: int) -> tuple[Any, ...]:
    return (Event.message_id == message_id, Event.counted.is_(True))


def _edges(message_id: int) -> dict[str, Any]:
    """First and last counted open and the latest counted event, as subqueries."""
    opens = select(Event.occurred_at).where(*_counted(message_id), Event.type == "open")
    latest = (
        select(Event.id)
        .where(*_counted(message_id))
        .order_by(Event.occurred_at.desc(), Event.id.desc())
        .limit(1)
    )
    return {
        "first_open_at": opens.order_by(Event.occurred_at).limit(1).scalar_subquery(),
        "last_open_at": opens.order_by(Event.occurred_at.desc())
        .limit(1)
        .scalar_subquery(),
        "last_event_id": latest.scalar_subquery(),
    }


def _notification(message: Message, event: NewEvent) -> dict[str, Any]:
    # The words are written out from the event when the notification is read.
    return {
        "user_id": message.user_id,
        "message_id": message.id,
        "event_id": event.id,
        "created_at": datetime.now(UTC),
    }


@dataclass
class _HandOn:
    """Jobs owed to CRM syncing and follow-up rules, queued after the commit."""

    syncs: list[tuple[int, list[int]]]
    rule_events: list[int]

    def enqueue(self, ctx: WorkerContext) -> None:
        from workers import followups, sync

        sync.enqueue_syncs(ctx, self.syncs)
        if self.rule_events:
            ctx.jobs.enqueue(followups.evaluate_events, self.rule_events)


def _hand_on(
    session: Session, inserted: list[NewEvent], targets: dict[str, _Target]
) -> _HandOn:
    """What CRM syncing and follow-up rules the counted events just stored call for."""
    from workers import followups, sync

    counted = [event for event in inserted if event.counted]
    if not counted:
        return _HandOn([], [])
    org_of = {t.message.id: t.message.org_id for t in targets.values()}
    by_org: dict[int, set[int]] = defaultdict(set)
    for event in counted:
        by_org[org_of[event.message_id]].add(event.message_id)
    rules = followups.has_enabled_rules(session, set(by_org))
    return _HandOn(
        sync.syncs_for(session, by_org), [e.id for e in counted] if rules else []
    )
