"""The message API: registering, listing, reading, and refusing bad input clearly."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from tests.conftest import DATA, PUBLIC_URL, Account

MESSAGE: dict[str, Any] = {"subject": "s", "to": ["a@x.test"], "text": "t"}
RULE: dict[str, Any] = {
    "name": "Nudge",
    "trigger": {"type": "nth_open", "count": 2},
    "actions": [{"type": "reminder"}],
}


def test_register_real_template_returns_tracked_html_and_links(
    account: Account,
) -> None:
    html = (DATA / "emails" / "postmark-welcome.html").read_text()
    created = account.send(html=html, text="Welcome!")
    assert created["pixel_url"].startswith(f"{PUBLIC_URL}/o/")
    assert created["pixel_url"] in created["html"]
    assert created["links"], "the welcome template has http links"
    for link in created["links"]:
        assert link["tracked_url"] in created["html"]
        assert link["url"] not in created["html"] or link["url"] in html
        assert len(link["tracked_url"]) < 100
        assert "--" not in link["tracked_url"]
    assert created["text"] == "Welcome!"


def test_tracking_urls_carry_no_personal_data(account: Account) -> None:
    created = account.send(
        to=["jane.doe@prospect.test"],
        html='<a href="https://prospect.test/?email=jane.doe@prospect.test">x</a>',
    )
    urls = [created["pixel_url"], *(link["tracked_url"] for link in created["links"])]
    for url in urls:
        assert "jane" not in url and "prospect" not in url and "@" not in url


def test_track_flags_off_leave_the_html_untouched(account: Account) -> None:
    html = '<html><body><a href="https://x.test/a">a</a></body></html>'
    created = account.send(html=html, track_opens=False, track_links=False)
    assert created["html"] == html
    assert created["pixel_url"] is None
    assert created["links"] == []


def test_missing_fields_get_a_message_per_field(account: Account) -> None:
    response = account.post(
        "/api/v1/messages", json={"to": [], "cc": ["not-an-address"]}
    )
    assert response.status_code == 422
    fields = response.get_json()["fields"]
    assert set(fields) >= {"subject", "to", "cc"}
    assert "html" in fields  # neither html nor text was given


def test_unknown_fields_and_wrong_types_are_refused(account: Account) -> None:
    body: dict[str, Any] = {"subject": 5, "to": "a@b.test", "html": "<p>", "colour": 1}
    response = account.post("/api/v1/messages", json=body)
    assert response.status_code == 422
    assert set(response.get_json()["fields"]) == {"subject", "to", "colour"}


def test_a_body_that_is_not_json_gets_400_not_500(account: Account) -> None:
    response = account.post(
        "/api/v1/messages", data=b"\xff\xfe{", content_type="application/json"
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.get_json()["message"]
    listed = account.post("/api/v1/messages", json=[1, 2])
    assert listed.status_code == 400
    assert "JSON object" in listed.get_json()["message"]


@pytest.mark.parametrize(
    ("body", "kind"),
    [("null", "null"), ("[]", "an array"), ("3", "a number"), ('"hi"', "a string")],
)
def test_a_json_body_that_is_not_an_object_is_told_so(
    account: Account, body: str, kind: str
) -> None:
    response = account.post(
        "/api/v1/messages", data=body, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.get_json()["message"] == (
        f"The request body must be a JSON object, not {kind}."
    )


def _chunked(account: Account, body: bytes) -> Any:
    """Post a body as a server that reads chunked requests hands it on: no length."""
    return account.client.post(
        "/api/v1/messages",
        input_stream=io.BytesIO(body),
        headers={
            **account.headers,
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
        },
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_a_chunked_body_over_the_limit_gets_413_like_one_with_a_length(
    account: Account,
) -> None:
    big = json.dumps({**MESSAGE, "text": "x" * 5_000_000}).encode()
    sized = account.post("/api/v1/messages", data=big, content_type="application/json")
    chunked = _chunked(account, big)
    assert sized.status_code == chunked.status_code == 413
    assert chunked.get_json() == sized.get_json()
    assert "larger than the limit of 4 MiB" in sized.get_json()["message"]
    assert _chunked(account, json.dumps(MESSAGE).encode()).status_code == 201


def test_requests_without_a_valid_token_get_401(account: Account) -> None:
    client = account.client
    missing = client.get("/api/v1/messages")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer realm=api"
    bad = {"Authorization": "Bearer tm_not-a-real-token"}
    response = client.get("/api/v1/messages", headers=bad)
    assert response.status_code == 401
    assert "Bearer" in response.get_json()["message"]
    assert "invalid_token" in response.headers["WWW-Authenticate"]


def test_list_is_newest_first_and_paginated(account: Account) -> None:
    for n, day in enumerate(["2026-11-01", "2026-11-03", "2026-11-02"]):
        account.send(subject=f"m{n}", text="hi", sent_at=f"{day}T10:00:00Z")
    page = account.get("/api/v1/messages?per_page=2").get_json()
    assert [m["subject"] for m in page["messages"]] == ["m1", "m2"]
    assert page["total"] == 3
    second = account.get("/api/v1/messages?per_page=2&page=2").get_json()
    assert [m["subject"] for m in second["messages"]] == ["m0"]
    assert account.get("/api/v1/messages?per_page=0").status_code == 422


def test_other_organisations_messages_are_404(make_account: Any) -> None:
    ours = make_account("ann@seller.test", org="Seller")
    theirs = make_account("bob@rival.test", org="Rival")
    message_id = ours.send(text="hi")["id"]
    assert ours.get(f"/api/v1/messages/{message_id}").status_code == 200
    for path in (
        f"/api/v1/messages/{message_id}",
        f"/api/v1/messages/{message_id}/events",
    ):
        response = theirs.get(path)
        assert response.status_code == 404
        assert "no message" in response.get_json()["message"]


def test_message_shows_recipients_and_zero_counts(account: Account) -> None:
    created = account.send(to=["a@x.test"], cc=["b@x.test"], bcc=["a@x.test"], text="t")
    message = account.get(f"/api/v1/messages/{created['id']}").get_json()
    assert message["recipients"] == ["a@x.test", "b@x.test"]
    assert (message["opens"], message["clicks"], message["first_opened_at"]) == (
        0,
        0,
        None,
    )


def test_openapi_document_describes_the_endpoints(account: Account) -> None:
    spec = account.client.get("/api/v1/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert {"/api/v1/messages", "/api/v1/messages/{public_id}/events"} <= set(
        spec["paths"]
    )
    create = spec["components"]["schemas"]["MessageCreate"]
    assert {"subject", "to"} <= set(create["required"])
    post = spec["paths"]["/api/v1/messages"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MessageCreate"
    }
    assert "422" in post["responses"]


def test_openapi_document_lists_every_api_route(app: Any, account: Account) -> None:
    spec = account.client.get("/api/v1/openapi.json").get_json()
    documented = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method != "parameters"
    }
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("api.") and rule.endpoint != "api.openapi_document":
            path = rule.rule.replace("<int:", "{").replace("<", "{").replace(">", "}")
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                assert (method, path) in documented


def test_hostile_json_gets_400_not_500(account: Account) -> None:
    deep = "[" * 5000 + "]" * 5000
    response = account.post(
        "/api/v1/messages", data=deep, content_type="application/json"
    )
    assert response.status_code == 400
    for subject in ("\ud800 lone surrogate", "nul \x00 byte"):
        response = account.post(
            "/api/v1/messages",
            json={"subject": subject, "to": ["a@x.test"], "text": "t"},
        )
        assert response.status_code == 400
        assert "cannot be stored" in response.get_json()["message"]


@pytest.mark.parametrize(
    "sent_at", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "1900-01-01"]
)
def test_times_out_of_range_are_refused_per_field(
    account: Account, sent_at: str
) -> None:
    body = {"subject": "s", "to": ["a@x.test"], "text": "t", "sent_at": sent_at}
    response = account.post("/api/v1/messages", json=body)
    assert response.status_code == 422
    assert "sent_at" in response.get_json()["fields"]


def test_huge_page_numbers_and_ids_are_4xx(account: Account) -> None:
    assert account.get("/api/v1/messages?page=99999999999999999999").status_code == 422
    assert account.get("/api/v1/rules/99999999999999999999999").status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/messages/%00"),
        ("GET", "/api/v1/messages/a%00b/events"),
        ("POST", "/api/v1/messages/%00/replied"),
        ("GET", "/api/v1/messages/a%0Ab"),
        ("GET", "/messages/%00"),
    ],
)
def test_control_characters_in_an_id_name_nothing(
    account: Account, method: str, path: str
) -> None:
    response = account.client.open(path, method=method, headers=account.headers)
    assert response.status_code == 404


def test_too_many_links_are_refused(account: Account) -> None:
    html = "".join(f'<a href="https://x.test/{n}">{n}</a>' for n in range(1001))
    body = {"subject": "s", "to": ["a@x.test"], "html": html}
    response = account.post("/api/v1/messages", json=body)
    assert response.status_code == 422
    assert "at most 1000" in response.get_json()["fields"]["html"][0]


def test_a_message_with_thousands_of_links_is_refused_with_the_limit(
    account: Account,
) -> None:
    html = "".join(f'<a href="https://x.test/{n}">{n}</a>' for n in range(20_000))
    body = {"subject": "s", "to": ["a@x.test"], "html": html}
    response = account.post("/api/v1/messages", json=body)
    assert response.status_code == 422
    assert response.get_json()["fields"] == {
        "html": ["Track at most 1000 distinct links in one message."]
    }
    assert account.get("/api/v1/messages").get_json()["total"] == 0


def test_a_signed_in_browser_cannot_change_anything_without_the_token(
    account: Account,
) -> None:
    from tests.test_pages import sign_in

    created = account.send(text="hi")
    client = account.client
    sign_in(client, account.email)
    assert client.get(f"/api/v1/messages/{created['id']}").status_code == 200
    # What another site could make the browser send, cookie attached:
    assert client.post(f"/api/v1/messages/{created['id']}/replied").status_code == 401
    assert client.post("/api/v1/messages", json={"subject": "x"}).status_code == 401


def test_one_address_written_in_two_cases_is_one_recipient(account: Account) -> None:
    created = account.send(html="<p>Hi</p>", to=["Ann@B.test"], cc=["ann@b.test"])
    message = account.get(f"/api/v1/messages/{created['id']}").get_json()
    assert message["recipients"] == ["Ann@B.test"]


def test_list_ignores_query_parameters_it_does_not_know(account: Account) -> None:
    account.send(html="<p>Hi</p>")
    response = account.get("/api/v1/messages?_=1700000000&utm_source=x")
    assert response.status_code == 200
    assert len(response.get_json()["messages"]) == 1


def test_an_address_over_320_characters_is_refused(account: Account) -> None:
    body = {"subject": "s", "to": ["a" * 64 + "@" + "b" * 300 + ".test"], "text": "t"}
    response = account.post("/api/v1/messages", json=body)
    assert response.status_code == 422
    assert "320" in str(response.get_json()["fields"])


def test_a_forwarded_for_that_is_no_address_is_not_kept(
    app: Any, account: Account, database: Any
) -> None:
    from sqlalchemy import text

    app.config["TRUSTED_PROXIES"] = 1
    forged = {"X-Forwarded-For": "x" * 80}
    response = account.client.post(
        "/api/v1/messages",
        json={"subject": "s", "to": ["a@x.test"], "text": "t"},
        headers=account.headers | forged,
    )
    assert response.status_code == 201
    with database.engine.connect() as conn:
        assert conn.execute(text("SELECT sender_ip FROM messages")).scalars().all() == [
            None
        ]


@pytest.mark.parametrize("value", ["yes", "no", 1])
@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/api/v1/messages", MESSAGE, ["track"]),
        ("POST", "/api/v1/messages", MESSAGE, ["track_opens"]),
        ("POST", "/api/v1/messages", MESSAGE, ["track_links"]),
        ("POST", "/api/v1/messages", MESSAGE, ["track_text_links"]),
        ("PATCH", "/api/v1/settings/privacy", {}, ["track_eea"]),
        ("POST", "/api/v1/rules", RULE, ["enabled"]),
        ("POST", "/api/v1/rules", RULE, ["trigger", "distinct_days"]),
    ],
)
def test_a_boolean_field_takes_only_true_or_false(
    make_account: Any,
    method: str,
    path: str,
    body: dict[str, Any],
    field: list[str],
    value: object,
) -> None:
    admin = make_account(admin=True)
    sent = json.loads(json.dumps(body))
    *parents, name = field
    inner = sent
    for parent in parents:
        inner = inner[parent]
    inner[name] = value

    response = admin.client.open(path, method=method, headers=admin.headers, json=sent)

    assert response.status_code == 422
    reasons = response.get_json()["fields"]
    for part in field:
        reasons = reasons[part]
    assert reasons == ["Must be true or false."]


def test_events_come_a_page_at_a_time_in_time_order(
    app: Any, account: Account, make_account: Any
) -> None:
    from workers.ingest import ingest_hits

    created = account.send(html="<p>Hi</p>")
    token = created["pixel_url"].rsplit("/", 1)[1].removesuffix(".gif")
    # Seven opens, three of them at the same moment: pages must neither skip nor
    # repeat an event that shares its time with the last one of a page.
    times = [1.0e9 + 60, 1.0e9 + 10, 1.0e9 + 30, 1.0e9 + 30, 1.0e9 + 30, 1.0e9, 1.0e9]
    hits = [
        {
            "id": f"{n:032x}",
            "kind": "open",
            "token": token,
            "at": at,
            "ip": "89.160.20.112",
            "ua": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0",
            "method": "GET",
            "headers": {},
        }
        for n, at in enumerate(times)
    ]
    assert ingest_hits(hits) == 7
    path = f"/api/v1/messages/{created['id']}/events"

    whole = account.get(path).get_json()
    assert whole["next_after"] is None
    everything = [(e["occurred_at"], e["id"]) for e in whole["events"]]
    assert everything == sorted(everything) and len(everything) == 7

    seen, after, pages = [], None, 0
    while True:
        query = f"?limit=3&after={after}" if after else "?limit=3"
        page = account.get(path + query).get_json()
        pages += 1
        assert len(page["events"]) <= 3
        seen += [(e["occurred_at"], e["id"]) for e in page["events"]]
        after = page["next_after"]
        if after is None:
            break
        assert after == page["events"][-1]["id"]
    assert seen == everything and pages == 3

    for query, field in (
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?limit=ten", "limit"),
        ("?after=-4", "after"),
        ("?after=99999999999", "after"),
        ("?after=123456", "after"),  # no such event
        ("?limit=1_0", "limit"),  # what int() would read as 10
        ("?limit=%EF%BC%91", "limit"),  # a full-width 1
        ("?after=%D9%A3", "after"),  # an Arabic-Indic 3
        ("?limit=1&limit=abc", "limit"),  # not read as its first value alone
    ):
        answer = account.get(path + query)
        assert answer.status_code == 422, query
        assert field in answer.get_json()["fields"], query

    assert account.get("/api/v1/messages/nosuch/events?limit=0").status_code == 404
    assert account.get("/api/v1/messages?page=1_0").status_code == 422

    # An event of another organisation's message is no cursor into this one.
    other = make_account("other@else.test", org="Else")
    theirs = other.send(html="<p>Hi</p>")
    assert account.get(f"/api/v1/messages/{theirs['id']}/events").status_code == 404
    mine = account.send(html="<p>Again</p>")
    first = whole["events"][0]["id"]
    answer = account.get(f"/api/v1/messages/{mine['id']}/events?after={first}")
    assert answer.status_code == 422
