"""Follow-up tasks in Salesforce: an open Task due on a date, on the person and deal."""

from __future__ import annotations

from typing import Any

from app.followups.tasks import FollowUpTask
from integrations.base import CrmClient
from integrations.salesforce.client import SalesforceClient, _links

PRIORITIES = {"low": "Low", "normal": "Normal", "high": "High"}
DESCRIPTION_MAX = 32000


def task_fields(task: FollowUpTask) -> dict[str, Any]:
    """The fields of an open Task (Status 'Not Started') for a follow-up."""
    activity = task.activity
    fields: dict[str, Any] = {
        "Subject": activity.subject[:255],
        "Status": "Not Started",
        "Priority": PRIORITIES.get(task.priority, "Normal"),
        "ActivityDate": task.due_date.isoformat(),
        "Description": activity.body[-DESCRIPTION_MAX:],
        **_links(activity),
        "TaskSubtype": "Task",
    }
    if activity.owner_id:
        fields["OwnerId"] = activity.owner_id
    return fields


def create_task(client: CrmClient, task: FollowUpTask) -> str:
    """Create the Task; its id. Raises the CrmError family."""
    assert isinstance(client, SalesforceClient)
    with client.call("create follow-up task"):
        # NOTE: the client offers no public create for open Tasks, so this uses its
        # Task handle inside the client's own error translation.
        result = client._tasks.create(task_fields(task))
    return str(result["id"])


def find_task(client: CrmClient, task: FollowUpTask) -> str | None:
    """A Task made earlier for this follow-up, found by the marker it carries."""
    return client.find(task.activity)
