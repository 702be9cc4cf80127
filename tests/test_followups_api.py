"""Follow-up rules over the API: validation, who may do what, marking replied."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Account

FIRST_OPEN_REMINDER: dict[str, Any] = {
    "name": "Nudge on first open",
    "trigger": {"type": "first_open"},
    "actions": [{"type": "reminder"}],
}


@pytest.fixture
def team(make_account: Callable[..., Account]) -> tuple[Account, Account]:
    return make_account("admin@seller.test", admin=True), make_account()


def test_a_rep_creates_lists_edits_and_deletes_a_personal_rule(
    account: Account,
) -> None:
    created = account.post("/api/v1/rules", json=FIRST_OPEN_REMINDER)
    assert created.status_code == 201, created.get_json()
    rule = created.get_json()
    assert rule["scope"] == "personal" and rule["enabled"] is True
    assert rule["actions"][0]["body"].startswith("Follow up with {recipient}")

    listed = account.get("/api/v1/rules").get_json()["rules"]
    assert [r["id"] for r in listed] == [rule["id"]]

    patched = account.client.patch(
        f"/api/v1/rules/{rule['id']}", headers=account.headers, json={"enabled": False}
    )
    assert patched.status_code == 200 and patched.get_json()["enabled"] is False
    assert patched.get_json()["name"] == "Nudge on first open"

    deleted = account.client.delete(
        f"/api/v1/rules/{rule['id']}", headers=account.headers
    )
    assert deleted.status_code == 204
    assert account.get(f"/api/v1/rules/{rule['id']}").status_code == 404


@pytest.mark.parametrize(
    ("body", "field_errors"),
    [
        ({}, {"name", "trigger", "actions"}),
        ({**FIRST_OPEN_REMINDER, "trigger": {"type": "bounce"}}, {"trigger"}),
        ({**FIRST_OPEN_REMINDER, "trigger": {"type": "nth_open"}}, {"trigger"}),
        (
            {**FIRST_OPEN_REMINDER, "trigger": {"type": "nth_open", "count": 1}},
            {"trigger"},
        ),
        ({**FIRST_OPEN_REMINDER, "trigger": {"type": "no_open"}}, {"trigger"}),
        ({**FIRST_OPEN_REMINDER, "actions": []}, {"actions"}),
        (
            {
                **FIRST_OPEN_REMINDER,
                "actions": [{"type": "crm_task", "subject": "Call {prospect}"}],
            },
            {"actions"},
        ),
        (
            {
                **FIRST_OPEN_REMINDER,
                "actions": [{"type": "crm_task", "subject": "Call {recipient"}],
            },
            {"actions"},
        ),
        (
            {**FIRST_OPEN_REMINDER, "actions": [{"type": "crm_task", "due_days": 99}]},
            {"actions"},
        ),
        (
            {**FIRST_OPEN_REMINDER, "actions": [{"type": "crm_task", "priority": "x"}]},
            {"actions"},
        ),
        ({**FIRST_OPEN_REMINDER, "name": "   "}, {"name"}),
        (
            {**FIRST_OPEN_REMINDER, "trigger": {"type": "no_open", "days": 1.5}},
            {"trigger"},
        ),
        (
            {**FIRST_OPEN_REMINDER, "actions": [{"type": "crm_task", "due_days": 2.5}]},
            {"actions"},
        ),
    ],
)
def test_invalid_rules_get_422_with_a_reason_per_field(
    account: Account, body: dict[str, Any], field_errors: set[str]
) -> None:
    response = account.post("/api/v1/rules", json=body)
    assert response.status_code == 422
    assert set(response.get_json()["fields"]) == field_errors


def test_the_reason_names_the_placeholders_allowed(account: Account) -> None:
    body = {
        **FIRST_OPEN_REMINDER,
        "actions": [{"type": "crm_task", "subject": "Call {prospect}"}],
    }
    fields = account.post("/api/v1/rules", json=body).get_json()["fields"]
    assert "{subject}, {recipient}, {signal}" in str(fields["actions"])


def test_only_admins_set_organisation_rules_and_reps_see_them(
    team: tuple[Account, Account],
) -> None:
    admin, rep = team
    org_rule = {**FIRST_OPEN_REMINDER, "scope": "org"}
    refused = rep.post("/api/v1/rules", json=org_rule)
    assert refused.status_code == 403
    assert "administrator" in refused.get_json()["message"]

    created = admin.post("/api/v1/rules", json=org_rule).get_json()
    assert created["scope"] == "org"
    mine = rep.post("/api/v1/rules", json=FIRST_OPEN_REMINDER).get_json()

    assert [r["id"] for r in rep.get("/api/v1/rules").get_json()["rules"]] == [
        created["id"],
        mine["id"],
    ]
    # An admin sees the organisation's rules, not a rep's personal ones.
    assert [r["id"] for r in admin.get("/api/v1/rules").get_json()["rules"]] == [
        created["id"]
    ]
    edit = rep.client.patch(
        f"/api/v1/rules/{created['id']}", headers=rep.headers, json={"name": "x"}
    )
    assert edit.status_code == 403
    gone = rep.client.delete(f"/api/v1/rules/{created['id']}", headers=rep.headers)
    assert gone.status_code == 403
    assert admin.get(f"/api/v1/rules/{mine['id']}").status_code == 404


def test_patch_validates_only_what_it_changes(account: Account) -> None:
    rule = account.post("/api/v1/rules", json=FIRST_OPEN_REMINDER).get_json()
    path = f"/api/v1/rules/{rule['id']}"
    bad = account.client.patch(
        path, headers=account.headers, json={"trigger": {"type": "no_open"}}
    )
    assert bad.status_code == 422 and "trigger" in bad.get_json()["fields"]
    good = account.client.patch(
        path,
        headers=account.headers,
        json={"trigger": {"type": "no_open", "days": 3}},
    )
    body = good.get_json()
    assert body["trigger"] == {"type": "no_open", "days": 3}
    assert body["armed_at"] > rule["armed_at"]


def test_marking_replied_records_the_first_reply_and_404s_for_strangers(
    make_account: Callable[..., Account], account: Account
) -> None:
    sent = account.send(html="<p>Hi</p>")
    path = f"/api/v1/messages/{sent['id']}/replied"
    first = account.post(path)
    assert first.status_code == 200
    assert first.get_json()["replied_at"] and first.get_json()["cancelled"] == 0
    again = account.post(path, json={"replied_at": "2030-01-01T00:00:00Z"})
    assert again.get_json()["replied_at"] == first.get_json()["replied_at"]
    assert account.get(f"/api/v1/messages/{sent['id']}").get_json()["replied_at"]

    stranger = make_account("someone@elsewhere.test", org="Elsewhere")
    assert stranger.post(path).status_code == 404
    bad = account.post(path, json={"replied_at": "yesterday"})
    assert bad.status_code == 422
