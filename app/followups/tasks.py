"""A follow-up task as every CRM integration receives it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from integrations.base import Activity


@dataclass
class FollowUpTask:
    """An open task for the rep: the engine's activity plus what only tasks have.

    ``activity.kind`` is ``followup:<rule id>``, its ``marker`` the ledger row's, its
    ``occurred_at`` the moment the task falls due and its ``owner_id`` the sender's
    CRM user.
    """

    activity: Activity
    priority: str  # low, normal, high
    due_date: date
