"""The HubSpot emulator, driven by the real hubspot-api-client over real HTTP."""

import json
import re
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import urllib3
from hubspot import HubSpot
from hubspot.crm.associations.v4 import AssociationSpec as V4Spec
from hubspot.crm.associations.v4 import (
    BatchInputPublicFetchAssociationsBatchRequest,
    PublicFetchAssociationsBatchRequest,
)
from hubspot.crm.associations.v4.exceptions import (
    ApiException as AssociationsApiException,
)
from hubspot.crm.contacts.exceptions import ApiException as ContactsApiException
from hubspot.crm.contacts.exceptions import NotFoundException as ContactNotFound
from hubspot.crm.contacts.exceptions import ServiceException as ContactsServiceError
from hubspot.crm.contacts.exceptions import UnauthorizedException as ContactsUnauth
from hubspot.crm.deals import BatchReadInputSimplePublicObjectId, SimplePublicObjectId
from hubspot.crm.deals.exceptions import ForbiddenException as DealsForbidden
from hubspot.crm.objects.emails import AssociationSpec as EmailSpec
from hubspot.crm.objects.emails import (
    BatchInputSimplePublicObjectBatchInput,
    BatchInputSimplePublicObjectBatchInputForCreate,
    SimplePublicObjectBatchInput,
    SimplePublicObjectBatchInputForCreate,
    SimplePublicObjectInput,
)
from hubspot.crm.objects.emails import PublicAssociationsForObject as EmailAssoc
from hubspot.crm.objects.emails import PublicObjectId as EmailTarget
from hubspot.crm.objects.emails import SimplePublicObjectInputForCreate as EmailIn
from hubspot.crm.objects.emails.exceptions import ApiException as EmailsApiException
from hubspot.crm.objects.notes import AssociationSpec as NoteSpec
from hubspot.crm.objects.notes import PublicAssociationsForObject as NoteAssoc
from hubspot.crm.objects.notes import PublicObjectId as NoteTarget
from hubspot.crm.objects.notes import SimplePublicObjectInputForCreate as NoteIn
from hubspot.crm.objects.tasks import AssociationSpec as TaskSpec
from hubspot.crm.objects.tasks import PublicAssociationsForObject as TaskAssoc
from hubspot.crm.objects.tasks import PublicObjectId as TaskTarget
from hubspot.crm.objects.tasks import SimplePublicObjectInputForCreate as TaskIn
from hubspot.crm.objects.tasks.exceptions import ApiException as TasksApiException
from hubspot.oauth.exceptions import ApiException as OAuthApiException

from emulators.hubspot import HubSpotEmulator

REDIRECT = "http://127.0.0.1:9/callback"
SCOPES = [
    "oauth",
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    "crm.objects.deals.read",
    "crm.objects.owners.read",
]
WHEN = "2025-06-01T10:00:00Z"


@pytest.fixture
def emu() -> Iterator[HubSpotEmulator]:
    emulator = HubSpotEmulator(
        client_id="hs-client",
        client_secret="hs-secret",
        hub_id=4242,
        rate_limit=110,
        rate_window_s=10,
        token_lifetime_s=1800,
    )
    emulator.start()
    yield emulator
    emulator.stop()


def _client(emu: HubSpotEmulator, token: str | None = None) -> HubSpot:
    """Build the real client the way the product does, pointed at the emulator."""
    token = token or emu.issue_token(SCOPES)["access_token"]
    # No retries, so each fault is seen exactly once by the test.
    return HubSpot(access_token=token, host=emu.url, retry=urllib3.Retry(0))


def _body(exc: Any) -> dict[str, Any]:
    return json.loads(exc.body)


def _consent(emu: HubSpotEmulator, scopes: list[str], decision: str) -> dict:
    """Load the consent page, press one of its buttons, return the redirect query."""
    page = requests.get(emu.authorize_url(REDIRECT, scopes, state="s-1"), timeout=5)
    assert page.status_code == 200
    assert "Connect app" in page.text and "Cancel" in page.text
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', page.text))
    fields["decision"] = decision
    answer = requests.post(
        f"{emu.url}/oauth/authorize", data=fields, allow_redirects=False, timeout=5
    )
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def _exchange(emu: HubSpotEmulator, code: str) -> Any:
    return HubSpot(host=emu.url).oauth.tokens_api.create(
        grant_type="authorization_code",
        code=code,
        redirect_uri=REDIRECT,
        client_id="hs-client",
        client_secret="hs-secret",
    )


def _refresh(emu: HubSpotEmulator, refresh_token: str) -> Any:
    return HubSpot(host=emu.url).oauth.tokens_api.create(
        grant_type="refresh_token",
        refresh_token=refresh_token,
        redirect_uri=REDIRECT,
        client_id="hs-client",
        client_secret="hs-secret",
    )


def _email(props: dict[str, str], links: Sequence[tuple[str, int]] = ()) -> EmailIn:
    associations = [
        EmailAssoc(
            to=EmailTarget(id=to_id),
            types=[
                EmailSpec(association_category="HUBSPOT_DEFINED", association_type_id=t)
            ],
        )
        for to_id, t in links
    ]
    return EmailIn(properties=props, associations=associations)


def _sent(**extra: str) -> dict[str, str]:
    return {
        "hs_timestamp": WHEN,
        "hs_email_direction": "EMAIL",
        "hs_email_status": "SENT",
        "hs_email_subject": "Q3 plan",
        **extra,
    }


def test_consent_code_exchange_gives_tokens_that_work(emu: HubSpotEmulator) -> None:
    query = _consent(emu, SCOPES, "grant")
    assert query["state"] == "s-1"

    tokens = _exchange(emu, query["code"])

    assert tokens.token_type == "bearer"
    assert tokens.expires_in == 1800
    assert tokens.refresh_token.startswith("na1-")
    emu.seed_contact("ada@example.org", firstname="Ada")
    contact = _client(emu, tokens.access_token).crm.contacts.basic_api.get_by_id(
        contact_id="ada@example.org", id_property="email"
    )
    assert contact.properties["firstname"] == "Ada"


def test_token_response_carries_hub_id_and_scopes(emu: HubSpotEmulator) -> None:
    code = _consent(emu, SCOPES, "grant")["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": "hs-client",
        "client_secret": "hs-secret",
    }
    raw = requests.post(f"{emu.url}/oauth/v1/token", data=form, timeout=5).json()
    assert set(raw) == {
        "token_type",
        "refresh_token",
        "access_token",
        "expires_in",
        "hub_id",
        "scopes",
    }
    assert raw["hub_id"] == 4242
    assert raw["scopes"] == SCOPES


def test_auth_code_is_single_use(emu: HubSpotEmulator) -> None:
    code = _consent(emu, SCOPES, "grant")["code"]
    _exchange(emu, code)

    with pytest.raises(OAuthApiException) as failure:
        _exchange(emu, code)

    assert failure.value.status == 400
    assert _body(failure.value)["status"] == "BAD_AUTH_CODE"
    assert "correlationId" in _body(failure.value)


def test_wrong_client_secret_is_refused(emu: HubSpotEmulator) -> None:
    code = _consent(emu, SCOPES, "grant")["code"]
    with pytest.raises(OAuthApiException) as failure:
        HubSpot(host=emu.url).oauth.tokens_api.create(
            grant_type="authorization_code",
            code=code,
            redirect_uri=REDIRECT,
            client_id="hs-client",
            client_secret="wrong",
        )
    assert failure.value.status == 400
    assert _body(failure.value)["status"] == "BAD_CLIENT_SECRET"


def test_cancel_redirects_with_access_denied(emu: HubSpotEmulator) -> None:
    query = _consent(emu, SCOPES, "cancel")
    assert query["error"] == "access_denied"
    assert query["state"] == "s-1"
    assert "code" not in query


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"scope": "oauth crm.objects.contactz.read"}, "unknown scopes"),
        ({"client_id": "someone-else"}, "not known"),
        ({"redirect_uri": "ftp://example.org/"}, "redirect_uri"),
    ],
)
def test_authorize_refuses_bad_requests_with_an_error_page(
    emu: HubSpotEmulator, change: dict[str, str], reason: str
) -> None:
    params = {"client_id": "hs-client", "redirect_uri": REDIRECT, "scope": "oauth"}
    params.update(change)
    page = requests.get(f"{emu.url}/oauth/authorize", params=params, timeout=5)
    assert page.status_code == 400
    assert reason in page.text
    assert "Connect app" not in page.text


def test_refresh_keeps_refresh_token_and_issues_new_access(
    emu: HubSpotEmulator,
) -> None:
    first = _exchange(emu, _consent(emu, SCOPES, "grant")["code"])
    second = _refresh(emu, first.refresh_token)
    assert second.access_token != first.access_token
    assert second.refresh_token == first.refresh_token
    assert second.expires_in == 1800


def test_token_info_describes_the_grant(emu: HubSpotEmulator) -> None:
    tokens = _exchange(emu, _consent(emu, SCOPES, "grant")["code"])
    oauth = HubSpot(host=emu.url).oauth

    info = oauth.access_tokens_api.get(token=tokens.access_token)
    refresh = oauth.refresh_tokens_api.get(token=tokens.refresh_token)

    assert info.hub_id == 4242
    assert info.scopes == SCOPES
    assert info.token_type == "access"
    assert 0 < info.expires_in <= 1800
    assert info.user == "admin@example.com"
    assert refresh.client_id == "hs-client"
    assert refresh.token_type == "refresh"


def test_revoked_refresh_token_is_refused(emu: HubSpotEmulator) -> None:
    tokens = _exchange(emu, _consent(emu, SCOPES, "grant")["code"])
    HubSpot(host=emu.url).oauth.refresh_tokens_api.archive(token=tokens.refresh_token)

    with pytest.raises(OAuthApiException) as failure:
        _refresh(emu, tokens.refresh_token)

    assert failure.value.status == 400
    assert _body(failure.value)["status"] == "BAD_REFRESH_TOKEN"


def test_contact_by_email_ignores_case(emu: HubSpotEmulator) -> None:
    contact_id = emu.seed_contact("Ada@Example.org", firstname="Ada", lastname="L")
    contact = _client(emu).crm.contacts.basic_api.get_by_id(
        contact_id="ada@EXAMPLE.org",
        id_property="email",
        properties=["email", "hubspot_owner_id"],
    )
    assert contact.id == contact_id
    assert contact.properties["email"] == "Ada@Example.org"
    assert contact.properties["hubspot_owner_id"] is None


def test_unknown_contact_is_404_object_not_found(emu: HubSpotEmulator) -> None:
    with pytest.raises(ContactNotFound) as failure:
        _client(emu).crm.contacts.basic_api.get_by_id(
            contact_id="nobody@example.org", id_property="email"
        )
    assert failure.value.status == 404
    assert _body(failure.value)["category"] == "OBJECT_NOT_FOUND"


def test_missing_and_unknown_tokens_are_invalid_authentication(
    emu: HubSpotEmulator,
) -> None:
    with pytest.raises(ContactsUnauth) as failure:
        _client(emu, "not-a-token").crm.contacts.basic_api.get_by_id(contact_id="1")
    body = _body(failure.value)
    assert body["status"] == "error"
    assert body["category"] == "INVALID_AUTHENTICATION"
    assert body["message"].startswith("Authentication credentials not found")


def test_missing_scope_is_403(emu: HubSpotEmulator) -> None:
    token = emu.issue_token(["oauth", "crm.objects.contacts.read"])["access_token"]
    with pytest.raises(DealsForbidden) as failure:
        _client(emu, token).crm.deals.basic_api.get_by_id(deal_id="1")
    assert failure.value.status == 403
    assert _body(failure.value)["category"] == "MISSING_SCOPES"


def test_owner_found_by_email(emu: HubSpotEmulator) -> None:
    owner_id = emu.seed_owner("rep@example.com", "Riley", "Rep", user_id=77)
    emu.seed_owner("other@example.com", "Olive", "Other")

    page = _client(emu).crm.owners.owners_api.get_page(email="REP@example.com")

    assert [o.id for o in page.results] == [owner_id]
    assert page.results[0].user_id == 77
    assert page.results[0].first_name == "Riley"


def test_deals_found_through_v4_associations(emu: HubSpotEmulator) -> None:
    ada = emu.seed_contact("ada@example.org")
    open_deal = emu.seed_deal("Engine", contact_ids=[ada])
    won = emu.seed_deal("Bombe", stage="closedwon", amount=500, contact_ids=[ada])
    hs = _client(emu)

    page = hs.crm.associations.v4.basic_api.get_page(
        "contacts", ada, "deals", limit=500
    )
    ids = [r.to_object_id for r in page.results]
    deal = hs.crm.deals.basic_api.get_by_id(
        deal_id=open_deal, properties=["dealstage", "hs_is_closed"]
    )
    batch = hs.crm.deals.batch_api.read(
        BatchReadInputSimplePublicObjectId(
            inputs=[SimplePublicObjectId(id=won)],
            properties=["amount", "dealstage"],
            properties_with_history=[],
        )
    )

    assert ids == [open_deal, won]
    assert page.results[0].association_types[0].type_id == 4
    assert deal.properties["hs_is_closed"] == "false"
    assert batch.results[0].properties["amount"] == "500"
    assert ("contacts", ada, 3) in emu.associations("deals", won)


def test_v4_batch_read_reports_objects_without_associations(
    emu: HubSpotEmulator,
) -> None:
    ada = emu.seed_contact("ada@example.org")
    lone = emu.seed_contact("lone@example.org")
    deal = emu.seed_deal("Engine", contact_ids=[ada])
    request = BatchInputPublicFetchAssociationsBatchRequest(
        inputs=[
            PublicFetchAssociationsBatchRequest(id=ada),
            PublicFetchAssociationsBatchRequest(id=lone),
        ]
    )
    answer = _client(emu).crm.associations.v4.batch_api.get_page(
        "contacts", "deals", request
    )
    assert [r._from.id for r in answer.results] == [ada]
    assert answer.results[0].to[0].to_object_id == deal
    assert answer.num_errors == 1


def test_email_created_with_contact_and_deal_associations(
    emu: HubSpotEmulator,
) -> None:
    ada = emu.seed_contact("ada@example.org")
    deal = emu.seed_deal("Engine", contact_ids=[ada])

    created = _client(emu).crm.objects.emails.basic_api.create(
        _email(_sent(), [(ada, 198), (deal, 210)])
    )

    assert created.properties["hs_timestamp"] == "2025-06-01T10:00:00.000Z"
    assert created.properties["hs_object_id"] == created.id
    [stored] = emu.objects("emails")
    assert ("contacts", ada, 198) in stored["associations"]
    assert ("deals", deal, 210) in stored["associations"]
    assert ("emails", created.id, 197) in emu.associations("contacts", ada)


def test_note_and_task_take_their_own_type_ids(emu: HubSpotEmulator) -> None:
    ada = emu.seed_contact("ada@example.org")
    deal = emu.seed_deal("Engine", contact_ids=[ada])
    owner = emu.seed_owner("rep@example.com", "Riley", "Rep")
    hs = _client(emu)

    note = hs.crm.objects.notes.basic_api.create(
        NoteIn(
            properties={"hs_timestamp": WHEN, "hs_note_body": "Opened 3 times"},
            associations=[_note_link(ada, 202), _note_link(deal, 214)],
        )
    )
    task = hs.crm.objects.tasks.basic_api.create(
        TaskIn(
            properties=_task_props(hubspot_owner_id=owner),
            associations=[_task_link(ada, 204), _task_link(deal, 216)],
        )
    )

    assert set(emu.associations("notes", note.id)) == {
        ("contacts", ada, 202),
        ("deals", deal, 214),
    }
    assert set(emu.associations("tasks", task.id)) == {
        ("contacts", ada, 204),
        ("deals", deal, 216),
    }


def _note_link(to_id: str, type_id: int) -> NoteAssoc:
    spec = NoteSpec(association_category="HUBSPOT_DEFINED", association_type_id=type_id)
    return NoteAssoc(to=NoteTarget(id=to_id), types=[spec])


def _task_link(to_id: str, type_id: int) -> TaskAssoc:
    spec = TaskSpec(association_category="HUBSPOT_DEFINED", association_type_id=type_id)
    return TaskAssoc(to=TaskTarget(id=to_id), types=[spec])


def _task_props(**extra: str) -> dict[str, str]:
    return {
        "hs_timestamp": WHEN,
        "hs_task_subject": "Follow up",
        "hs_task_status": "NOT_STARTED",
        "hs_task_priority": "HIGH",
        "hs_task_type": "EMAIL",
        **extra,
    }


@pytest.mark.parametrize(
    ("type_id", "target"),
    [(202, "contact"), (4, "contact"), (210, "contact"), (198, "missing")],
)
def test_email_with_wrong_association_is_refused(
    emu: HubSpotEmulator, type_id: int, target: str
) -> None:
    ada = emu.seed_contact("ada@example.org")
    to_id = ada if target == "contact" else "999999"
    emails = _client(emu).crm.objects.emails

    with pytest.raises(EmailsApiException) as failure:
        emails.basic_api.create(_email(_sent(), [(to_id, type_id)]))

    assert failure.value.status == 400
    assert _body(failure.value)["category"] == "VALIDATION_ERROR"
    assert emu.objects("emails") == []


def test_email_without_hs_timestamp_is_refused(emu: HubSpotEmulator) -> None:
    props = _sent()
    del props["hs_timestamp"]
    with pytest.raises(EmailsApiException) as failure:
        _client(emu).crm.objects.emails.basic_api.create(_email(props))
    body = _body(failure.value)
    assert failure.value.status == 400
    assert body["category"] == "VALIDATION_ERROR"
    assert body["context"]["properties"] == ["hs_timestamp"]


def test_bad_enumeration_value_is_invalid_option(emu: HubSpotEmulator) -> None:
    with pytest.raises(TasksApiException) as failure:
        _client(emu).crm.objects.tasks.basic_api.create(
            TaskIn(properties=_task_props(hs_task_priority="URGENT"))
        )
    body = _body(failure.value)
    assert failure.value.status == 400
    assert body["errors"][0]["code"] == "INVALID_OPTION"
    assert "URGENT was not one of the allowed options" in body["message"]


def test_unknown_property_is_property_doesnt_exist(emu: HubSpotEmulator) -> None:
    with pytest.raises(EmailsApiException) as failure:
        _client(emu).crm.objects.emails.basic_api.create(
            _email(_sent(tracking_event_id="evt-1"))
        )
    body = _body(failure.value)
    assert body["category"] == "VALIDATION_ERROR"
    assert body["errors"][0]["code"] == "PROPERTY_DOESNT_EXIST"
    problems = json.loads(body["message"].split(": ", 1)[1])
    assert problems[0]["name"] == "tracking_event_id"


def test_unknown_owner_is_refused(emu: HubSpotEmulator) -> None:
    with pytest.raises(EmailsApiException) as failure:
        _client(emu).crm.objects.emails.basic_api.create(
            _email(_sent(hubspot_owner_id="31337"))
        )
    assert _body(failure.value)["errors"][0]["code"] == "INVALID_OWNER_ID"


def test_email_update_and_read_back_with_associations(emu: HubSpotEmulator) -> None:
    ada = emu.seed_contact("ada@example.org")
    emails = _client(emu).crm.objects.emails
    created = emails.basic_api.create(_email(_sent(), [(ada, 198)]))

    emails.basic_api.update(
        created.id, SimplePublicObjectInput(properties={"hs_email_status": "BOUNCED"})
    )
    read = emails.basic_api.get_by_id(
        created.id, properties=["hs_email_status"], associations=["contacts"]
    )

    assert read.properties["hs_email_status"] == "BOUNCED"
    assert read.associations["contacts"].results[0].id == ada
    assert read.associations["contacts"].results[0].type == "email_to_contact"


def test_batch_create_and_update_emails(emu: HubSpotEmulator) -> None:
    ada = emu.seed_contact("ada@example.org")
    batch = _client(emu).crm.objects.emails.batch_api
    link = _email(_sent(), [(ada, 198)]).associations
    inputs = [
        SimplePublicObjectBatchInputForCreate(
            properties=_sent(hs_email_subject=f"n{i}"), associations=link
        )
        for i in range(3)
    ]

    created = batch.create(BatchInputSimplePublicObjectBatchInputForCreate(inputs))
    ids = [r.id for r in created.results]
    updated = batch.update(
        BatchInputSimplePublicObjectBatchInput(
            [
                SimplePublicObjectBatchInput(id=i, properties={"hs_email_text": "hi"})
                for i in ids
            ]
        )
    )

    assert created.status == "COMPLETE"
    assert len(ids) == 3
    assert {r.properties["hs_email_text"] for r in updated.results} == {"hi"}
    assert all(
        ("contacts", ada, 198) in e["associations"] for e in emu.objects("emails")
    )


def test_batch_create_fails_whole_batch_on_one_bad_input(
    emu: HubSpotEmulator,
) -> None:
    batch = _client(emu).crm.objects.emails.batch_api
    bad = _sent(hs_email_status="LOST")
    inputs = [
        SimplePublicObjectBatchInputForCreate(properties=p) for p in (_sent(), bad)
    ]
    with pytest.raises(EmailsApiException) as failure:
        batch.create(BatchInputSimplePublicObjectBatchInputForCreate(inputs))
    assert failure.value.status == 400
    assert emu.objects("emails") == []


def test_batch_over_100_inputs_is_refused(emu: HubSpotEmulator) -> None:
    batch = _client(emu).crm.objects.emails.batch_api
    inputs = [SimplePublicObjectBatchInputForCreate(properties=_sent())] * 101
    with pytest.raises(EmailsApiException) as failure:
        batch.create(BatchInputSimplePublicObjectBatchInputForCreate(inputs))
    assert failure.value.status == 400
    assert _body(failure.value)["category"] == "VALIDATION_ERROR"
    assert "100" in _body(failure.value)["message"]


def test_v4_put_associates_and_checks_the_type(emu: HubSpotEmulator) -> None:
    ada = emu.seed_contact("ada@example.org")
    deal = emu.seed_deal("Engine")
    v4 = _client(emu).crm.associations.v4.basic_api
    spec = V4Spec(association_category="HUBSPOT_DEFINED", association_type_id=4)

    labels = v4.create("contacts", ada, "deals", deal, [spec])

    assert labels.to_object_id == deal
    assert ("contacts", ada, 3) in emu.associations("deals", deal)
    wrong = V4Spec(association_category="HUBSPOT_DEFINED", association_type_id=3)
    with pytest.raises(AssociationsApiException) as failure:
        v4.create("contacts", ada, "deals", deal, [wrong])
    assert failure.value.status == 400


def test_every_api_answer_carries_rate_limit_headers(emu: HubSpotEmulator) -> None:
    ada = emu.seed_contact("ada@example.org")
    _, status, headers = _client(emu).crm.contacts.basic_api.get_by_id_with_http_info(
        ada
    )
    assert status == 200
    assert headers["X-HubSpot-RateLimit-Max"] == "110"
    assert headers["X-HubSpot-RateLimit-Remaining"] == "109"
    assert headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"


def test_over_budget_is_429_ten_secondly_rolling() -> None:
    emu = HubSpotEmulator(rate_limit=3, rate_window_s=1).start()
    try:
        ada = emu.seed_contact("ada@example.org")
        contacts = _client(emu).crm.contacts.basic_api
        for _ in range(3):
            contacts.get_by_id(ada)
        with pytest.raises(ContactsApiException) as failure:
            contacts.get_by_id(ada)
        time.sleep(1.05)
        contacts.get_by_id(ada)
    finally:
        emu.stop()
    body = _body(failure.value)
    assert failure.value.status == 429
    assert failure.value.headers["X-HubSpot-RateLimit-Remaining"] == "0"
    assert body["errorType"] == "RATE_LIMIT"
    assert body["policyName"] == "TEN_SECONDLY_ROLLING"
    assert body["message"] == "You have reached your ten_secondly_rolling limit."
    assert {"correlationId", "requestId"} <= set(body)
    assert [r[3] for r in emu.requests] == [200, 200, 200, 429, 200]
    assert {r[4] for r in emu.requests} == {4242}


def test_fault_expired_token_then_expire_tokens(emu: HubSpotEmulator) -> None:
    ada = emu.seed_contact("ada@example.org")
    contacts = _client(emu).crm.contacts.basic_api
    emu.fault("expired_token")

    with pytest.raises(ContactsUnauth) as injected:
        contacts.get_by_id(ada)
    contacts.get_by_id(ada)
    emu.expire_tokens()
    with pytest.raises(ContactsUnauth) as expired:
        contacts.get_by_id(ada)

    assert _body(injected.value)["category"] == "EXPIRED_AUTHENTICATION"
    assert _body(expired.value)["category"] == "EXPIRED_AUTHENTICATION"


def test_fault_refresh_refused_both_shapes(emu: HubSpotEmulator) -> None:
    tokens = emu.issue_token(SCOPES)
    emu.fault("refresh_refused")
    emu.fault("refresh_refused", variant="invalid_grant")

    bodies = []
    for _ in range(2):
        with pytest.raises(OAuthApiException) as failure:
            _refresh(emu, tokens["refresh_token"])
        assert failure.value.status == 400
        bodies.append(_body(failure.value))

    assert bodies[0]["status"] == "BAD_REFRESH_TOKEN"
    assert bodies[1]["error"] == "invalid_grant"
    assert _refresh(emu, tokens["refresh_token"]).access_token


def test_fault_rate_limit_and_server_errors(emu: HubSpotEmulator) -> None:
    ada = emu.seed_contact("ada@example.org")
    contacts = _client(emu).crm.contacts.basic_api
    emu.fault("rate_limit", path_contains="/contacts/")
    emu.fault("server_error", status=500)
    emu.fault("server_error", status=502)

    with pytest.raises(ContactsApiException) as limited:
        contacts.get_by_id(ada)
    with pytest.raises(ContactsServiceError) as first:
        contacts.get_by_id(ada)
    with pytest.raises(ContactsServiceError) as second:
        contacts.get_by_id(ada)

    assert limited.value.status == 429
    assert _body(limited.value)["policyName"] == "TEN_SECONDLY_ROLLING"
    assert (first.value.status, second.value.status) == (500, 502)
    assert contacts.get_by_id(ada).id == ada


def test_fault_slow_delays_the_answer(emu: HubSpotEmulator) -> None:
    ada = emu.seed_contact("ada@example.org")
    emu.fault("slow", seconds=0.4)
    started = time.monotonic()
    _client(emu).crm.contacts.basic_api.get_by_id(ada)
    assert time.monotonic() - started >= 0.4


def test_fault_drop_after_commit_writes_but_never_answers(
    emu: HubSpotEmulator,
) -> None:
    ada = emu.seed_contact("ada@example.org")
    emu.fault("drop_after_commit", path_contains="/objects/emails")

    with pytest.raises(urllib3.exceptions.HTTPError):
        _client(emu).crm.objects.emails.basic_api.create(_email(_sent(), [(ada, 198)]))

    [stored] = emu.objects("emails")
    assert ("contacts", ada, 198) in stored["associations"]
    assert emu.requests[-1][2:4] == ("/crm/v3/objects/emails", 0)


def test_http_control_surface_seeds_faults_and_resets(emu: HubSpotEmulator) -> None:
    control = f"{emu.url}/__emulator__"
    seeded = requests.post(
        f"{control}/seed",
        json={
            "owners": [
                {"email": "rep@example.com", "first_name": "R", "last_name": "P"}
            ],
            "contacts": [{"email": "ada@example.org", "firstname": "Ada"}],
        },
        timeout=5,
    ).json()
    requests.post(f"{control}/faults", json={"kind": "server_error"}, timeout=5)
    contact_id = seeded["contacts"][0]

    with pytest.raises(ContactsServiceError):
        _client(emu).crm.contacts.basic_api.get_by_id(contact_id)
    listed = requests.get(f"{control}/objects/contacts", timeout=5).json()
    requests.post(f"{control}/reset", timeout=5)

    assert listed["results"][0]["properties"]["firstname"] == "Ada"
    assert emu.objects("contacts") == []
    assert emu.requests == []


def test_batch_read_reports_unknown_ids_as_207_errors(emu: HubSpotEmulator) -> None:
    deal = emu.seed_deal("Engine", amount=10)
    answer, status, _ = _client(emu).crm.deals.batch_api.read_with_http_info(
        BatchReadInputSimplePublicObjectId(
            inputs=[SimplePublicObjectId(id=deal), SimplePublicObjectId(id="404404")],
            properties=["amount"],
            properties_with_history=[],
        )
    )
    assert status == 207
    assert [r.id for r in answer.results] == [deal]
    assert answer.errors[0].category == "OBJECT_NOT_FOUND"
    assert answer.errors[0].context == {"ids": ["404404"]}
