"""Follow-up automation in the workers: evaluate rules, deliver reminders, make tasks.

Rules are evaluated when counted events are stored (``evaluate_events``, queued by the
ingest job when the organisation has an enabled rule) and by a periodic ``sweep``,
which also runs the "no counted open within D business days" checks. Everything the
sweep needs is in the database, so a worker or Redis restart loses nothing: jobs lost
with Redis are redone by the next sweep.

Exactly once: a firing is a row unique on (rule, message, recipient), inserted with
ON CONFLICT DO NOTHING together with the actions it owes, in one transaction. A
reminder becomes a notification in the transaction that marks it done; a CRM task
goes through the sync engine's ledger (kind ``followup:<rule id>``), its per-connection
lock, token refresh and rate-limit pauses.
"""

from __future__ import annotations

import importlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

from sqlalchemy import exists, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.followups.models import FollowUpAction, FollowUpFiring, FollowUpRule
from app.followups.schedule import Schedule
from app.followups.tasks import FollowUpTask
from app.followups.triggers import (
    Signal,
    counted_events_by_recipient,
    event_signal,
    lookback_for,
    no_open_signal,
    plan_actions,
    recipient_of,
    spelled_as_sent,
)
from app.messages import hold_messages
from app.models import (
    CrmConnection,
    CrmRecord,
    Event,
    Message,
    MessageCopy,
    Notification,
    User,
)
from integrations.base import (
    Activity,
    AuthLost,
    CrmClient,
    Match,
    RateLimited,
    Rejected,
)
from integrations.jobs import (
    REPLAY_DAYS,
    _active,
    _created,
    _ledger_row,
    _one_at_a_time,
    _with_client,
)
from workers.context import WorkerContext, current

logger = logging.getLogger(__name__)

EVENT_TRIGGERS = ("first_open", "nth_open", "click")
# The sweep re-evaluates messages with counted events this recent (lost jobs).
EVENT_LOOKBACK = timedelta(days=1)
# A task is queued by the sweep once the job queued at firing had time to run.
TASK_GRACE = timedelta(seconds=30)
SWEEP_LIMIT = 2000
FINAL_STATES = ("created", "no_match", "failed")


def schedule_for(user: User) -> Schedule:
    """The rep's working week: Mon-Fri, quiet 20:00-08:00, in their time zone.

    NOTE: working days and quiet hours are the same for everyone for now; only the
    time zone is the rep's own.
    """
    return Schedule(timezone=user.timezone or "UTC")


# Evaluation ---------------------------------------------------------------------


def has_enabled_rules(session: Session, org_ids: set[int]) -> bool:
    """Whether any of these organisations has a rule switched on."""
    return bool(
        session.scalar(
            select(
                exists().where(
                    FollowUpRule.enabled.is_(True), FollowUpRule.org_id.in_(org_ids)
                )
            )
        )
    )


def evaluate_events(event_ids: list[int]) -> int:
    """Fire the rules that these events make true; return how many fired."""
    ctx = current()
    with ctx.db.session_factory() as session:
        message_ids = session.scalars(
            select(Event.message_id).where(Event.id.in_(event_ids)).distinct()
        ).all()
    return evaluate_messages(ctx, list(message_ids))


def evaluate_messages(ctx: WorkerContext, message_ids: Iterable[int]) -> int:
    new_actions: list[int] = []
    now = datetime.now(UTC)
    for message_id in message_ids:
        with ctx.db.begin() as session:
            new_actions.extend(_evaluate_message(session, message_id, now))
    dispatch(ctx, new_actions)
    return len(new_actions)


def _evaluate_message(session: Session, message_id: int, now: datetime) -> list[int]:
    message = session.get(Message, message_id)
    if message is None or message.replied_at is not None:
        return []
    rules = [r for r in _rules_for(session, message) if r.trigger["type"] != "no_open"]
    if not rules:
        return []
    schedule = schedule_for(message.user)
    fired: list[int] = []
    for recipient, events in counted_events_by_recipient(session, message):
        for rule in rules:
            signal = event_signal(rule.trigger, events, schedule)
            if signal is None or (signal.received_at or now) < rule.armed_at:
                continue
            fired.extend(fire(session, rule, message, signal, schedule, now, recipient))
    return fired


def _rules_for(session: Session, message: Message) -> Sequence[FollowUpRule]:
    """The enabled rules that apply to a message: its organisation's and its rep's."""
    return session.scalars(
        select(FollowUpRule).where(
            FollowUpRule.org_id == message.org_id,
            FollowUpRule.enabled.is_(True),
            (FollowUpRule.user_id.is_(None))
            | (FollowUpRule.user_id == message.user_id),
        )
    ).all()


def fire(
    session: Session,
    rule: FollowUpRule,
    message: Message,
    signal: Signal,
    schedule: Schedule,
    now: datetime,
    recipient: str | None = None,
) -> list[int]:
    """Record a firing and its actions, unless the rule already fired for this message
    and recipient (the message's one recipient when not given, or '' for several).

    Returns the ids of the new actions (none when it had fired before).
    """
    if recipient is None:
        recipient = recipient_of(message.recipients)
    firing_id = _insert_firing(
        session,
        {
            "rule_id": rule.id,
            "message_id": message.id,
            "recipient": recipient,
            "signal": signal.text[:500],
            "rule_snapshot": {"trigger": rule.trigger, "actions": rule.actions},
            "fired_at": now,
        },
    )
    if firing_id is None:
        return []
    values = {
        "subject": message.subject,
        "recipient": spelled_as_sent(message, recipient),
        "signal": signal.text,
    }
    actions = [
        FollowUpAction(
            firing_id=firing_id,
            position=position,
            kind=planned.kind,
            due_at=planned.due_at,
            payload=planned.payload,
            state="pending",
            created_at=now,
        )
        for position, planned in enumerate(
            plan_actions(rule.actions, values, now, schedule)
        )
    ]
    session.add_all(actions)
    session.flush()
    logger.info(
        "rule fired rule_id=%s message_id=%s firing_id=%s actions=%d",
        rule.id,
        message.id,
        firing_id,
        len(actions),
    )
    return [action.id for action in actions]


def _insert_firing(session: Session, row: dict[str, Any]) -> int | None:
    bind = session.get_bind()
    dialect = postgresql if bind.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(FollowUpFiring)
        .values(row)
        .on_conflict_do_nothing(index_elements=["rule_id", "message_id", "recipient"])
        .returning(FollowUpFiring.id)
    )
    return session.scalar(statement)


# Hand-off ------------------------------------------------------------------------


def dispatch(ctx: WorkerContext, action_ids: Sequence[int]) -> None:
    """Queue new actions: reminders for when they are due, tasks at once."""
    if not action_ids:
        return
    now = datetime.now(UTC)
    tasks_by_org: dict[int, list[int]] = defaultdict(list)
    with ctx.db.session_factory() as session:
        rows = session.execute(
            select(FollowUpAction.id, FollowUpAction.kind, FollowUpAction.due_at)
            .add_columns(Message.org_id)
            .join(FollowUpFiring, FollowUpFiring.id == FollowUpAction.firing_id)
            .join(Message, Message.id == FollowUpFiring.message_id)
            .where(FollowUpAction.id.in_(action_ids))
        ).all()
    for action_id, kind, due_at, org_id in rows:
        if kind == "reminder":
            _queue_reminder(ctx, action_id, due_at - now)
        else:
            tasks_by_org[org_id].append(action_id)
    _queue_tasks(ctx, tasks_by_org)


def _queue_reminder(ctx: WorkerContext, action_id: int, delay: timedelta) -> None:
    if delay <= timedelta(0):
        ctx.jobs.enqueue(deliver_reminder, action_id)
    else:
        ctx.jobs.enqueue_in(delay, deliver_reminder, action_id)


def _queue_tasks(ctx: WorkerContext, by_org: dict[int, list[int]]) -> None:
    if not by_org:
        return
    with ctx.db.session_factory() as session:
        connections = session.execute(
            select(CrmConnection.id, CrmConnection.org_id).where(
                CrmConnection.org_id.in_(by_org), CrmConnection.status == "connected"
            )
        ).all()
    for connection_id, org_id in connections:
        ctx.jobs.enqueue(
            create_tasks, connection_id, sorted(by_org[org_id]), queue="crm"
        )


# Reminders -----------------------------------------------------------------------


def deliver_reminder(action_id: int) -> bool:
    """Turn a due reminder into a live notification, once; True when delivered now."""
    ctx = current()
    now = datetime.now(UTC)
    with ctx.db.begin() as session:
        message_id = session.scalar(
            select(FollowUpFiring.message_id)
            .join(FollowUpAction, FollowUpAction.firing_id == FollowUpFiring.id)
            .where(FollowUpAction.id == action_id)
        )
        # Held before the claim, so that an erase deleting the message either waits
        # for this notification (and deletes it) or leaves nothing to deliver.
        if message_id is None or not hold_messages(session, [message_id]):
            return False
        claimed = session.execute(
            update(FollowUpAction)
            .where(
                FollowUpAction.id == action_id,
                FollowUpAction.kind == "reminder",
                FollowUpAction.state == "pending",
                FollowUpAction.due_at <= now + timedelta(seconds=1),
            )
            .values(state="done", done_at=now)
            .execution_options(synchronize_session=False)
        )
        if not getattr(claimed, "rowcount", 0):
            return False
        action = session.get(FollowUpAction, action_id)
        assert action is not None
        message = action.firing.message
        session.add(
            Notification(
                user_id=message.user_id,
                message_id=message.id,
                event_id=None,
                title=str(action.payload.get("title", ""))[:300],
                body=str(action.payload.get("body", ""))[:500],
                created_at=now,
            )
        )
        user_id = message.user_id
    ctx.notifier.publish(user_id)
    logger.info("reminder delivered action_id=%s user_id=%s", action_id, user_id)
    return True


# CRM tasks -----------------------------------------------------------------------


def _provider_tasks(provider: str) -> ModuleType:
    return importlib.import_module(f"integrations.{provider}.followups")


def create_tasks(connection_id: int, action_ids: list[int]) -> None:
    """Create the follow-up tasks of some actions in one connection's CRM."""
    ctx = current()
    with _one_at_a_time(ctx, connection_id) as held:
        if not held:
            ctx.jobs.enqueue_in(
                timedelta(seconds=5),
                create_tasks,
                connection_id,
                action_ids,
                queue="crm",
            )
            return
        _create_tasks_of(ctx, connection_id, action_ids)


def _create_tasks_of(
    ctx: WorkerContext, connection_id: int, action_ids: list[int]
) -> None:
    with ctx.db.session_factory() as session:
        connection = session.get(CrmConnection, connection_id)
        if connection is None or not _active(connection):
            logger.info("tasks wait connection_id=%s (not active)", connection_id)
            return
        try:
            _with_client(
                ctx,
                session,
                connection,
                lambda client: _write_tasks(session, client, connection, action_ids),
            )
        except RateLimited as exc:
            _pause(ctx, session, connection, exc, action_ids)
        except AuthLost:
            logger.warning("tasks wait: access lost connection_id=%s", connection_id)


def _pause(
    ctx: WorkerContext,
    session: Session,
    connection: CrmConnection,
    exc: RateLimited,
    action_ids: list[int],
) -> None:
    """Hold the connection's writes as the CRM asked, then try these tasks again."""
    session.rollback()
    delay = max(exc.retry_after, 1.0)
    now = datetime.now(UTC)
    connection.paused_until = now + timedelta(seconds=delay)
    connection.last_error = str(exc)[:1000]
    connection.last_error_at = now
    session.commit()
    logger.warning(
        "rate limited; tasks paused connection_id=%s seconds=%.0f",
        connection.id,
        delay,
    )
    ctx.jobs.enqueue_in(
        timedelta(seconds=delay), create_tasks, connection.id, action_ids, queue="crm"
    )


def _write_tasks(
    session: Session,
    client: CrmClient,
    connection: CrmConnection,
    action_ids: list[int],
) -> None:
    actions = session.scalars(
        select(FollowUpAction).where(
            FollowUpAction.id.in_(action_ids),
            FollowUpAction.kind == "crm_task",
            FollowUpAction.state == "pending",
        )
    ).all()
    provider = _provider_tasks(connection.provider)
    owners: dict[str, str | None] = {}
    for action in actions:
        _write_task(session, client, provider, connection, action, owners)
        _settle(session, action)
        session.commit()
    connection.last_success_at = datetime.now(UTC)
    session.commit()


def _write_task(
    session: Session,
    client: CrmClient,
    provider: ModuleType,
    connection: CrmConnection,
    action: FollowUpAction,
    owners: dict[str, str | None],
) -> None:
    """One task through the ledger: found again after a lost answer, never twice."""
    firing = action.firing
    message = firing.message
    kind = f"followup:{firing.rule_id}"
    record = _ledger_row(session, connection, message, kind, firing.recipient)
    session.commit()
    if record.state in FINAL_STATES:
        return
    sender = message.user.email
    if sender not in owners:
        owners[sender] = client.owner_for(sender)
    match = _target(client, firing, message, owners[sender])
    if match is None:
        record.state = "no_match"
        return
    task = _task(action, record, match, owners[sender] or match.owner_id, message)
    if record.attempted_at is not None:
        found = provider.find_task(client, task)
        if found:
            logger.info("found earlier task marker=%s", record.marker)
            _created(record, str(found), 1)
            return
    record.attempted_at = datetime.now(UTC)
    record.object_type = "task"
    session.commit()
    try:
        external_id = provider.create_task(client, task)
    except Rejected as exc:
        record.state = "failed"
        record.last_error = str(exc)[:1000]
        logger.warning("task refused action_id=%s error=%s", action.id, exc)
        return
    _created(record, str(external_id), 1)
    logger.info("task created action_id=%s connection_id=%s", action.id, connection.id)


def _target(
    client: CrmClient, firing: FollowUpFiring, message: Message, owner: str | None
) -> Match | None:
    """The person the task goes on: the attributed recipient, else the first known.

    A client that can match for an owner (HubSpot) prefers the sender's own deal,
    as the engine does for the timeline activities.
    """
    candidates = [firing.recipient] if firing.recipient else message.recipients
    match_many = getattr(client, "match_many", None)
    if match_many is not None:
        found = match_many(candidates, owner_id=owner)
        return next(
            (found[c.lower()] for c in candidates if found.get(c.lower())), None
        )
    for recipient in candidates:
        match = client.match(recipient)
        if match is not None:
            return match
    return None


def _task(
    action: FollowUpAction,
    record: CrmRecord,
    match: Match,
    owner_id: str | None,
    message: Message,
) -> FollowUpTask:
    payload = action.payload
    activity = Activity(
        kind=record.kind,
        marker=record.marker,
        match=match,
        owner_id=owner_id,
        subject=str(payload["subject"])[:255],
        body=f"{payload['body']}\n\nRef: tm-{record.marker}",
        occurred_at=datetime.fromisoformat(payload["due_at"]),
        event_count=1,
        message_subject=message.subject,
    )
    return FollowUpTask(
        activity=activity,
        priority=str(payload.get("priority", "normal")),
        due_date=datetime.fromisoformat(payload["due_date"]).date(),
    )


def _settle(session: Session, action: FollowUpAction) -> None:
    """Done once every connected CRM of the organisation holds the task (or cannot)."""
    firing = action.firing
    message = firing.message
    connected = session.scalars(
        select(CrmConnection.id).where(
            CrmConnection.org_id == message.org_id,
            CrmConnection.status == "connected",
        )
    ).all()
    settled = session.scalars(
        select(CrmRecord.connection_id).where(
            CrmRecord.message_id == message.id,
            CrmRecord.kind == f"followup:{firing.rule_id}",
            CrmRecord.recipient == firing.recipient.lower(),
            CrmRecord.state.in_(FINAL_STATES),
        )
    ).all()
    if connected and set(connected) <= set(settled):
        action.state = "done"
        action.done_at = datetime.now(UTC)


# The periodic sweep --------------------------------------------------------------


def sweep() -> None:
    """Rebuild everything scheduled from the database; safe to run at any time."""
    ctx = current()
    now = datetime.now(UTC)
    fired = check_no_open(ctx, now)
    fired += evaluate_messages(ctx, _recent_messages(ctx, now))
    delivered = deliver_due_reminders(ctx, now)
    queued = queue_pending_tasks(ctx, now)
    logger.info(
        "follow-up sweep fired=%d reminders=%d task_batches=%d",
        fired,
        delivered,
        queued,
    )


def check_no_open(ctx: WorkerContext, now: datetime) -> int:
    """Fire every "no counted open within D business days" rule that is due."""
    with ctx.db.session_factory() as session:
        rule_ids = session.scalars(
            select(FollowUpRule.id).where(FollowUpRule.enabled.is_(True))
        ).all()
    new_actions: list[int] = []
    for rule_id in rule_ids:
        with ctx.db.begin() as session:
            rule = session.get(FollowUpRule, rule_id)
            if rule is not None and rule.trigger.get("type") == "no_open":
                new_actions.extend(_check_rule(session, rule, now))
    dispatch(ctx, new_actions)
    return len(new_actions)


def _check_rule(session: Session, rule: FollowUpRule, now: datetime) -> list[int]:
    """Fire a "no open" rule for each unopened message it is due for, and for each
    recipient's copy left unopened when the message went as one copy per recipient."""
    due = [
        Message.org_id == rule.org_id,
        Message.replied_at.is_(None),
        Message.track_opens.is_(True),
        Message.sent_at >= now - lookback_for(rule.trigger),
        # A business day is at least 23 hours (a DST change), so nothing newer is due.
        Message.sent_at <= now - timedelta(hours=23),
    ]
    if rule.user_id is not None:
        due.append(Message.user_id == rule.user_id)
    fired_already = exists().where(
        FollowUpFiring.rule_id == rule.id, FollowUpFiring.message_id == Message.id
    )
    has_copies = exists().where(MessageCopy.message_id == Message.id)
    whole = select(Message, literal(None)).where(
        *due, Message.open_count == 0, ~fired_already, ~has_copies
    )
    # A copy is due when its own recipient has no counted open and was not reminded.
    opened = exists().where(
        Event.message_id == Message.id,
        Event.type == "open",
        Event.counted.is_(True),
        Event.recipient == MessageCopy.recipient,
    )
    fired_for_copy = exists().where(
        FollowUpFiring.rule_id == rule.id,
        FollowUpFiring.message_id == Message.id,
        FollowUpFiring.recipient == MessageCopy.recipient_key,
    )
    copies = (
        select(Message, MessageCopy.recipient_key)
        .join(MessageCopy, MessageCopy.message_id == Message.id)
        .where(*due, ~opened, ~fired_for_copy)
    )
    new_actions: list[int] = []
    for query in (whole, copies):
        ordered = query.order_by(Message.id).limit(SWEEP_LIMIT)
        for message, recipient in session.execute(ordered):
            schedule = schedule_for(message.user)
            signal = no_open_signal(rule.trigger, message.sent_at, [], now, schedule)
            if signal is None or signal.at < rule.armed_at:
                continue
            new_actions.extend(
                fire(session, rule, message, signal, schedule, now, recipient)
            )
    return new_actions


def _recent_messages(ctx: WorkerContext, now: datetime) -> list[int]:
    """Messages with recent counted events, in organisations with event rules."""
    with ctx.db.session_factory() as session:
        orgs_with_rules = select(FollowUpRule.org_id).where(
            FollowUpRule.enabled.is_(True)
        )
        return list(
            session.scalars(
                select(Event.message_id)
                .join(Message, Message.id == Event.message_id)
                .where(
                    Event.counted.is_(True),
                    Event.received_at >= now - EVENT_LOOKBACK,
                    Message.org_id.in_(orgs_with_rules),
                    Message.replied_at.is_(None),
                )
                .distinct()
                .limit(SWEEP_LIMIT)
            )
        )


def deliver_due_reminders(ctx: WorkerContext, now: datetime) -> int:
    with ctx.db.session_factory() as session:
        due = session.scalars(
            select(FollowUpAction.id).where(
                FollowUpAction.state == "pending",
                FollowUpAction.kind == "reminder",
                FollowUpAction.due_at <= now,
            )
        ).all()
    return sum(1 for action_id in due if deliver_reminder(action_id))


def queue_pending_tasks(ctx: WorkerContext, now: datetime) -> int:
    """Queue the tasks still owed (a CRM was down, paused or disconnected)."""
    with ctx.db.session_factory() as session:
        rows = session.execute(
            select(FollowUpAction.id, Message.org_id)
            .join(FollowUpFiring, FollowUpFiring.id == FollowUpAction.firing_id)
            .join(Message, Message.id == FollowUpFiring.message_id)
            .where(
                FollowUpAction.state == "pending",
                FollowUpAction.kind == "crm_task",
                FollowUpAction.due_at <= now - TASK_GRACE,
                FollowUpAction.created_at >= now - timedelta(days=REPLAY_DAYS),
            )
            .limit(SWEEP_LIMIT)
        ).all()
    by_org: dict[int, list[int]] = defaultdict(list)
    for action_id, org_id in rows:
        by_org[org_id].append(action_id)
    _queue_tasks(ctx, by_org)
    return len(by_org)
