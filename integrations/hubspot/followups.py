"""Follow-up tasks in HubSpot: a NOT_STARTED task due at hs_timestamp, on the contact
(association 204) and the deal (216).
"""

from __future__ import annotations

from typing import Any

from app.followups.tasks import FollowUpTask
from integrations.base import CrmClient
from integrations.hubspot.client import TASK, HubSpotClient, _create_input

PRIORITIES = {"low": "LOW", "normal": "MEDIUM", "high": "HIGH"}


def task_input(task: FollowUpTask) -> dict[str, Any]:
    """The create body: the client's task properties and associations, plus priority."""
    body = _create_input(TASK, task.activity)
    body["properties"].update(
        hs_task_status="NOT_STARTED",
        hs_task_priority=PRIORITIES.get(task.priority, "MEDIUM"),
        hs_task_type="TODO",  # HubSpot's own name for a to-do task
    )
    return body


def create_task(client: CrmClient, task: FollowUpTask) -> str:
    """Create the task; its id. Raises the CrmError family."""
    assert isinstance(client, HubSpotClient)
    # NOTE: the client's create writes no priority, so the call goes through its
    # budgeted, error-translating helpers with a body of our own.
    api = client._api("tasks", lambda: client._basic_api(TASK))
    record = client._call(
        "create follow-up task", api.create_with_http_info, task_input(task)
    )
    return str(record.id)


def find_task(client: CrmClient, task: FollowUpTask) -> str | None:
    """A task made earlier for this follow-up, found by its marker on the contact."""
    return client.find(task.activity)
