"""The Salesforce emulator, driven by the real simple_salesforce client over HTTPS."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from simple_salesforce import (
    Salesforce,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
    format_soql,
)
from simple_salesforce.api import SFType

from emulators.salesforce import SalesforceEmulator

REDIRECT_URI = "http://127.0.0.1:5000/settings/crm/salesforce/callback"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def emu() -> Iterator[SalesforceEmulator]:
    with SalesforceEmulator(daily_api_limit=1000) as emulator:
        yield emulator


@pytest.fixture
def http(emu: SalesforceEmulator) -> Iterator[requests.Session]:
    session = requests.Session()
    session.verify = emu.ca_path
    # REQUESTS_CA_BUNDLE in the environment would override session.verify.
    session.trust_env = False
    yield session
    session.close()


def client(emu: SalesforceEmulator, http: requests.Session, token: str) -> Salesforce:
    return Salesforce(
        instance_url=emu.url, session_id=token, version="59.0", session=http
    )


def tasks(sf: Salesforce) -> SFType:
    """Return the Task handler; the attribute lookup is too dynamic for mypy."""
    return cast(SFType, sf.Task)


def collection(sf: Salesforce, method: str, body: dict[str, Any]) -> list[Any]:
    """Send an sObject Collections request and return its save results."""
    results = sf.restful("composite/sobjects", method=method, json=body)
    return list(results or [])


@pytest.fixture
def sf(emu: SalesforceEmulator, http: requests.Session) -> Salesforce:
    return client(emu, http, emu.issue_tokens()["access_token"])


@pytest.fixture
def org(emu: SalesforceEmulator) -> dict[str, str]:
    account = emu.seed("Account", {"Name": "Acme"})
    contact = emu.seed(
        "Contact", {"LastName": "Ng", "Email": "ann@example.com", "AccountId": account}
    )
    lead = emu.seed("Lead", {"LastName": "Park", "Company": "Globex"})
    deal = emu.seed(
        "Opportunity",
        {"Name": "Renewal", "StageName": "Prospecting", "CloseDate": "2027-01-31"},
    )
    return {"account": account, "contact": contact, "lead": lead, "deal": deal}


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize(
    emu: SalesforceEmulator, http: requests.Session, challenge: str, allow: bool = True
) -> dict[str, list[str]]:
    """Walk the consent page like a browser and return the callback's query."""
    params = {
        "response_type": "code",
        "client_id": emu.client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "api refresh_token",
        "state": "st-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "prompt": "login consent",
    }
    page = http.get(f"{emu.url}/services/oauth2/authorize", params=params)
    assert page.status_code == 200 and ">Allow</button>" in page.text
    consent = re.search(r'name="consent" value="([^"]+)"', page.text)
    assert consent is not None
    decision = {"consent": consent.group(1), "decision": "allow" if allow else "deny"}
    answer = http.post(
        f"{emu.url}/services/oauth2/authorize", data=decision, allow_redirects=False
    )
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT_URI)
    return parse_qs(urlsplit(location).query)


def exchange(
    emu: SalesforceEmulator, http: requests.Session, code: str, verifier: str | None
) -> requests.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": emu.client_id,
        "client_secret": emu.client_secret,
        "redirect_uri": REDIRECT_URI,
    }
    if verifier is not None:
        form["code_verifier"] = verifier
    return http.post(f"{emu.url}/services/oauth2/token", data=form)


def refresh(
    emu: SalesforceEmulator, http: requests.Session, token: str
) -> requests.Response:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": token,
        "client_id": emu.client_id,
        "client_secret": emu.client_secret,
    }
    return http.post(f"{emu.url}/services/oauth2/token", data=form)


def error_code(exc: pytest.ExceptionInfo[Any]) -> str:
    return str(exc.value.content[0]["errorCode"])


def test_code_exchange_with_pkce_returns_documented_fields(
    emu: SalesforceEmulator, http: requests.Session
) -> None:
    verifier, challenge = pkce_pair()
    callback = authorize(emu, http, challenge)
    assert callback["state"] == ["st-1"]

    reply = exchange(emu, http, callback["code"][0], verifier)

    assert reply.status_code == 200
    body = reply.json()
    assert body["instance_url"] == emu.url
    assert body["id"] == f"{emu.url}/id/{emu.org_id}/{emu.user_id}"
    assert body["token_type"] == "Bearer" and body["issued_at"].isdigit()
    assert {"access_token", "refresh_token", "signature", "scope"} <= body.keys()
    assert "expires_in" not in body
    sf = client(emu, http, body["access_token"])
    assert sf.query("SELECT Id FROM User")["totalSize"] == 1


def test_code_is_single_use(emu: SalesforceEmulator, http: requests.Session) -> None:
    verifier, challenge = pkce_pair()
    code = authorize(emu, http, challenge)["code"][0]
    assert exchange(emu, http, code, verifier).status_code == 200

    again = exchange(emu, http, code, verifier)

    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("verifier", [None, "not-the-verifier-" + "x" * 40])
def test_missing_or_wrong_verifier_is_invalid_grant(
    emu: SalesforceEmulator, http: requests.Session, verifier: str | None
) -> None:
    _, challenge = pkce_pair()
    code = authorize(emu, http, challenge)["code"][0]

    reply = exchange(emu, http, code, verifier)

    assert reply.status_code == 400
    assert reply.json()["error"] == "invalid_grant"
    assert reply.json()["error_description"]


def test_deny_redirects_with_access_denied(
    emu: SalesforceEmulator, http: requests.Session
) -> None:
    callback = authorize(emu, http, pkce_pair()[1], allow=False)

    assert callback["error"] == ["access_denied"] and callback["state"] == ["st-1"]
    assert "code" not in callback


def test_unknown_client_gets_an_error_page(
    emu: SalesforceEmulator, http: requests.Session
) -> None:
    params = {
        "response_type": "code",
        "client_id": "other",
        "redirect_uri": REDIRECT_URI,
    }

    page = http.get(f"{emu.url}/services/oauth2/authorize", params=params)

    assert page.status_code == 400 and "Allow" not in page.text


def test_refresh_rotates_and_the_old_token_dies(
    emu: SalesforceEmulator, http: requests.Session
) -> None:
    first = emu.issue_tokens()["refresh_token"]

    renewed = refresh(emu, http, first).json()
    reused = refresh(emu, http, first)

    assert renewed["refresh_token"] != first and "expires_in" not in renewed
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert refresh(emu, http, renewed["refresh_token"]).status_code == 200


def test_no_refresh_token_without_its_scope(emu: SalesforceEmulator) -> None:
    assert "refresh_token" not in emu.issue_tokens(scope="api")


def test_revoking_refresh_token_revokes_its_access_tokens(
    emu: SalesforceEmulator, http: requests.Session
) -> None:
    tokens = emu.issue_tokens()
    sf = client(emu, http, tokens["access_token"])
    url = f"{emu.url}/services/oauth2/revoke"

    assert http.post(url, data={"token": tokens["refresh_token"]}).status_code == 200

    with pytest.raises(SalesforceExpiredSession) as exc:
        sf.query("SELECT Id FROM User")
    assert error_code(exc) == "INVALID_SESSION_ID"
    assert (
        refresh(emu, http, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    )
    unknown = http.post(url, data={"token": "nope"})
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_token"


def test_identity_url_describes_the_user(
    emu: SalesforceEmulator, http: requests.Session
) -> None:
    tokens = emu.issue_tokens()
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}

    identity = http.get(tokens["id"], headers=auth).json()

    assert identity["user_id"] == emu.user_id
    assert identity["organization_id"] == emu.org_id
    assert identity["email"] == "admin@example.com"
    assert identity["urls"]["rest"] == f"{emu.url}/services/data/v59.0/"
    assert http.get(tokens["id"]).status_code == 403


@pytest.mark.parametrize(
    "address",
    ["o'brien@example.com", "back\\slash@example.com", "ann+tag@example.com"],
)
def test_quoted_addresses_match_exactly(
    emu: SalesforceEmulator, sf: Salesforce, address: str
) -> None:
    wanted = emu.seed("Contact", {"LastName": "A", "Email": address})
    emu.seed("Contact", {"LastName": "B", "Email": "ann@example.com"})
    soql = "SELECT Id FROM Contact WHERE Email = {}"

    rows = sf.query(format_soql(soql, address.upper()))["records"]

    assert [r["Id"] for r in rows] == [wanted]


def test_injection_attempt_matches_nothing(
    emu: SalesforceEmulator, sf: Salesforce
) -> None:
    emu.seed("Contact", {"LastName": "A", "Email": "ann@example.com"})
    hostile = "x' OR Email != '"

    result = sf.query(format_soql("SELECT Id FROM Contact WHERE Email = {}", hostile))

    assert result["totalSize"] == 0


def test_contact_roles_filter_on_open_opportunities(
    emu: SalesforceEmulator, sf: Salesforce, org: dict[str, str]
) -> None:
    closed = emu.seed(
        "Opportunity",
        {"Name": "Lost", "StageName": "Closed Lost", "CloseDate": "2026-01-01"},
    )
    for deal in (org["deal"], closed):
        emu.seed(
            "OpportunityContactRole",
            {"ContactId": org["contact"], "OpportunityId": deal},
        )
    soql = (
        "SELECT OpportunityId, Opportunity.Name, Opportunity.IsClosed"
        " FROM OpportunityContactRole WHERE ContactId = {}"
        " AND Opportunity.IsClosed = false"
    )

    rows = sf.query(format_soql(soql, org["contact"]))["records"]

    assert [r["OpportunityId"] for r in rows] == [org["deal"]]
    assert rows[0]["Opportunity"]["Name"] == "Renewal"
    assert rows[0]["Opportunity"]["attributes"]["type"] == "Opportunity"


def test_where_order_and_limit(emu: SalesforceEmulator, sf: Salesforce) -> None:
    for name, mail in [("Cole", "c@x.io"), ("Abe", None), ("Bea", "b@x.io")]:
        emu.seed("Contact", {"LastName": name, "Email": mail})
    soql = (
        "SELECT LastName, Email FROM Contact WHERE (Email != null OR LastName LIKE"
        " 'a%') AND NOT LastName IN ('Zed') ORDER BY Email DESC NULLS LAST LIMIT 2"
    )

    rows = sf.query(soql)["records"]

    assert [r["LastName"] for r in rows] == ["Cole", "Bea"]


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Id FROM Contact WHERE Email = 'unterminated", "MALFORMED_QUERY"),
        ("SELECT Id FROM Contact WHERE A__c = 1 AND B = 2 OR C = 3", "MALFORMED_QUERY"),
        ("SELECT Id FROM Contact WHERE Email = 'a\\qb'", "MALFORMED_QUERY"),
        ("SELECT Id, Fax__c FROM Contact", "INVALID_FIELD"),
        ("SELECT Account.Nope FROM Contact", "INVALID_FIELD"),
        ("SELECT Id FROM Contact WHERE HasOptedOutOfEmail = 'false'", "INVALID_FIELD"),
        ("SELECT Id FROM Widget__c", "INVALID_TYPE"),
    ],
)
def test_bad_queries_raise_malformed_request(
    sf: Salesforce, soql: str, code: str
) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query(soql)

    assert error_code(exc) == code


def test_query_all_follows_next_records_url(
    emu: SalesforceEmulator, sf: Salesforce
) -> None:
    for n in range(450):
        emu.seed("Lead", {"LastName": f"L{n}", "Company": "Co"})
    options = {"Sforce-Query-Options": "batchSize=200"}

    first = sf.query("SELECT Id FROM Lead", headers=options)
    everything = sf.query_all("SELECT Id FROM Lead", headers=options)

    assert first["done"] is False and len(first["records"]) == 200
    assert everything["totalSize"] == 450
    assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == 450


def test_create_task_derives_closed_and_account(
    emu: SalesforceEmulator, sf: Salesforce, org: dict[str, str]
) -> None:
    created = tasks(sf).create(
        {
            "WhoId": org["contact"],
            "WhatId": org["deal"],
            "Subject": "Email Opened: Q3",
            "Status": "Completed",
            "Priority": "Normal",
            "ActivityDate": "2026-12-01",
            "TaskSubtype": "Email",
            "Type": "Email",
            "OwnerId": emu.user_id,
        }
    )

    task = tasks(sf).get(created["id"])

    assert created["success"] is True and created["errors"] == []
    assert created["id"].startswith("00T") and len(created["id"]) == 18
    assert task["IsClosed"] is True and task["AccountId"] == org["account"]
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000", task["CreatedDate"]
    )
    assert emu.record(org["deal"])["LastActivityDate"] == "2026-12-01"


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"Subject": "x" * 256}, "STRING_TOO_LONG"),
        ({"Status": "Done"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        ({"Priority": "Urgent"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        ({"TaskSubtype": "Meeting"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        ({"WhoId": "not-an-id"}, "MALFORMED_ID"),
        ({"WhoId": "account"}, "FIELD_INTEGRITY_EXCEPTION"),
        ({"WhoId": "lead", "WhatId": "deal"}, "FIELD_INTEGRITY_EXCEPTION"),
        ({"WhatId": "contact"}, "FIELD_INTEGRITY_EXCEPTION"),
        ({"OwnerId": "inactive"}, "INACTIVE_OWNER_OR_USER"),
        ({"ActivityDate": "2026-13-01"}, "JSON_PARSER_ERROR"),
        ({"Colour__c": "red"}, "INVALID_FIELD"),
        ({"IsClosed": True}, "INVALID_FIELD_FOR_INSERT_UPDATE"),
    ],
)
def test_task_validation_errors(
    emu: SalesforceEmulator,
    sf: Salesforce,
    org: dict[str, str],
    fields: dict[str, Any],
    code: str,
) -> None:
    org["inactive"] = emu.seed(
        "User",
        {
            "Username": "gone@x.io",
            "Email": "gone@x.io",
            "LastName": "G",
            "IsActive": False,
        },
    )
    values = {k: org.get(v, v) if isinstance(v, str) else v for k, v in fields.items()}

    with pytest.raises(SalesforceMalformedRequest) as exc:
        tasks(sf).create({"Subject": "Follow up", **values})

    assert error_code(exc) == code
    assert emu.records("Task") == []


def test_unknown_field_error_names_the_field(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        tasks(sf).create({"Colour__c": "red"})

    content: list[dict[str, Any]] = exc.value.content  # type: ignore[assignment]
    assert content[0]["fields"] == ["Colour__c"]


def test_update_delete_and_not_found(
    emu: SalesforceEmulator, sf: Salesforce, org: dict[str, str]
) -> None:
    task_id = tasks(sf).create({"Subject": "Call", "TaskSubtype": "Call"})["id"]

    assert tasks(sf).update(task_id, {"Status": "In Progress"}) == 204
    with pytest.raises(SalesforceMalformedRequest) as exc:
        tasks(sf).update(task_id, {"TaskSubtype": "Email"})
    assert error_code(exc) == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert tasks(sf).delete(task_id) == 204
    with pytest.raises(SalesforceResourceNotFound):
        tasks(sf).get(task_id)
    with pytest.raises(SalesforceResourceNotFound):
        tasks(sf).get(org["contact"])
    assert emu.record(task_id)["IsDeleted"] is True


def test_upsert_by_external_id(emu: SalesforceEmulator, sf: Salesforce) -> None:
    key = "Tracking_Event_Id__c/evt_1%2F2"

    assert tasks(sf).upsert(key, {"Subject": "Opened"}) == 201
    assert tasks(sf).upsert(key, {"Subject": "Opened twice"}) == 200

    stored = emu.records("Task")
    assert [(t["Tracking_Event_Id__c"], t["Subject"]) for t in stored] == [
        ("evt_1/2", "Opened twice")
    ]


def test_collection_create_all_or_none_rolls_back(
    emu: SalesforceEmulator, sf: Salesforce
) -> None:
    good = {"attributes": {"type": "Task"}, "Subject": "ok"}
    bad = {"attributes": {"type": "Task"}, "Status": "Nope"}

    results = collection(sf, "POST", {"allOrNone": True, "records": [good, bad]})

    assert [r["success"] for r in results] == [False, False]
    codes = [r["errors"][0]["statusCode"] for r in results]
    assert codes == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
    ]
    assert results[1]["errors"][0]["fields"] == ["Status"]
    assert emu.records("Task") == []


def test_collection_partial_success_and_update(
    emu: SalesforceEmulator, sf: Salesforce
) -> None:
    records = [
        {"attributes": {"type": "Task"}, "Subject": "one"},
        {"attributes": {"type": "Task"}, "Priority": "Urgent"},
    ]
    created = collection(sf, "POST", {"records": records})
    first = created[0]["id"]
    change = [{"attributes": {"type": "Task"}, "id": first, "Status": "Completed"}]

    updated = collection(sf, "PATCH", {"records": change})

    assert [r["success"] for r in created] == [True, False]
    assert updated == [{"id": first, "success": True, "errors": []}]
    assert emu.record(first)["IsClosed"] is True


def test_collection_over_200_records_is_refused(sf: Salesforce) -> None:
    records = [{"attributes": {"type": "Task"}, "Subject": "s"}] * 201

    with pytest.raises(SalesforceMalformedRequest) as exc:
        collection(sf, "POST", {"records": records})

    assert error_code(exc) == "EXCEEDED_ID_LIMIT"


def test_limits_and_usage_header(
    emu: SalesforceEmulator, http: requests.Session, sf: Salesforce
) -> None:
    sf.query("SELECT Id FROM User")
    assert sf.api_usage["api-usage"].used == 1
    assert sf.limits()["DailyApiRequests"] == {"Max": 1000, "Remaining": 998}

    emu.api_usage = 1000
    with pytest.raises(SalesforceRefusedRequest) as exc:
        sf.query("SELECT Id FROM User")

    assert error_code(exc) == "REQUEST_LIMIT_EXCEEDED"
    assert exc.value.status == 403


def test_expired_session_fault_then_recovery(
    emu: SalesforceEmulator, sf: Salesforce
) -> None:
    emu.fault("expired_session", path_contains="/query")

    with pytest.raises(SalesforceExpiredSession) as exc:
        sf.query("SELECT Id FROM User")

    assert error_code(exc) == "INVALID_SESSION_ID"
    assert sf.query("SELECT Id FROM User")["totalSize"] == 1


def test_expire_access_tokens_kills_every_session(
    emu: SalesforceEmulator, http: requests.Session, sf: Salesforce
) -> None:
    refresh_token = emu.issue_tokens()["refresh_token"]
    emu.expire_access_tokens()

    with pytest.raises(SalesforceExpiredSession):
        sf.query("SELECT Id FROM User")

    renewed = refresh(emu, http, refresh_token).json()
    assert client(emu, http, renewed["access_token"]).query("SELECT Id FROM User")


def test_refresh_refused_fault(emu: SalesforceEmulator, http: requests.Session) -> None:
    token = emu.issue_tokens()["refresh_token"]
    emu.fault("refresh_refused")

    refused = refresh(emu, http, token)

    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert refresh(emu, http, token).status_code == 200


def test_request_limit_fault(sf: Salesforce, emu: SalesforceEmulator) -> None:
    emu.fault("request_limit", times=2)

    for _ in range(2):
        with pytest.raises(SalesforceRefusedRequest):
            sf.query("SELECT Id FROM User")

    assert sf.query("SELECT Id FROM User")["totalSize"] == 1


@pytest.mark.parametrize("status", [500, 503])
def test_server_error_fault(
    sf: Salesforce, emu: SalesforceEmulator, status: int
) -> None:
    emu.fault("server_error", status=status)

    with pytest.raises(SalesforceGeneralError) as exc:
        tasks(sf).create({"Subject": "s"})

    assert exc.value.status == status
    assert emu.records("Task") == []


def test_slow_fault_trips_client_timeout(
    sf: Salesforce, emu: SalesforceEmulator
) -> None:
    emu.fault("slow", seconds=1.0)

    with pytest.raises(requests.Timeout):
        sf.query("SELECT Id FROM User", timeout=0.3)


def test_drop_after_commit_writes_but_never_answers(
    emu: SalesforceEmulator, sf: Salesforce
) -> None:
    emu.fault("drop_after_commit", path_contains="sobjects/Task")

    with pytest.raises(requests.ConnectionError):
        tasks(sf).create({"Subject": "lost answer"})

    assert [t["Subject"] for t in emu.records("Task")] == ["lost answer"]
    last = emu.calls[-1]
    assert (last.method, last.status) == ("POST", 0)
    assert tasks(sf).create({"Subject": "next"})["success"] is True


def test_calls_are_logged_with_status(emu: SalesforceEmulator, sf: Salesforce) -> None:
    sf.query("SELECT Id FROM User")
    with pytest.raises(SalesforceResourceNotFound):
        tasks(sf).get("00T000000000000AAA")

    logged = [(c.method, c.status) for c in emu.calls]

    assert logged == [("GET", 200), ("GET", 404)]
    assert emu.calls[0].path == "/services/data/v59.0/query/"


def test_control_surface_drives_the_emulator(
    emu: SalesforceEmulator, http: requests.Session
) -> None:
    base = f"{emu.url}/__emulator__"
    seeded = http.post(
        f"{base}/seed",
        json={"type": "Lead", "fields": {"LastName": "P", "Company": "C"}},
    )
    lead_id = seeded.json()["id"]
    tokens = http.post(f"{base}/tokens", json={"scope": "api"}).json()
    http.post(f"{base}/faults", json={"kind": "server_error", "status": 503})

    sf = client(emu, http, tokens["access_token"])
    with pytest.raises(SalesforceGeneralError):
        sf.query("SELECT Id FROM Lead")

    assert sf.query("SELECT Id FROM Lead")["records"][0]["Id"] == lead_id
    assert (
        http.get(f"{base}/records", params={"type": "Lead"}).json()[0]["Id"] == lead_id
    )
    assert http.post(f"{base}/reset").status_code == 200
    assert http.get(f"{base}/records", params={"type": "Lead"}).json() == []


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_command_line_serves_demo_data(tmp_path: Path) -> None:
    port = _free_port()
    command = [sys.executable, "-m", "emulators.salesforce", "--port", str(port)]
    command += ["--state-dir", str(tmp_path), "--seed-demo"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        printed = dict(_read_lines(process, 10))
        session = requests.Session()
        session.verify, session.trust_env = printed["ca_path"], False
        base = printed["url"]
        tokens = session.post(f"{base}/__emulator__/tokens", json={}).json()
        sf = Salesforce(
            instance_url=base, session_id=tokens["access_token"], session=session
        )
        soql = format_soql(
            "SELECT Opportunity.Name FROM OpportunityContactRole WHERE ContactId = {}",
            printed["contact"],
        )
        assert sf.query(soql)["records"][0]["Opportunity"]["Name"] == "Acme renewal"
        assert base == f"https://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _read_lines(process: subprocess.Popen[str], count: int) -> list[tuple[str, str]]:
    deadline = time.monotonic() + 20
    lines: list[tuple[str, str]] = []
    assert process.stdout is not None
    while len(lines) < count and time.monotonic() < deadline:
        name, _, value = process.stdout.readline().strip().partition(" ")
        lines.append((name, value.strip()))
    return lines
