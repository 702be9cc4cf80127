"""Sessions live on the server, and guessing passwords is slowed down."""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from app import signin
from app.db import Database
from app.models import ApiToken, PageSession, SignInFailure, User, utcnow
from tests.conftest import Account
from tests.test_pages import sign_in


def _cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def _replay(app: Flask, value: str) -> FlaskClient:
    """Another browser holding a copy of the session cookie."""
    other = app.test_client()
    other.set_cookie("session", value)
    return other


def _sign_out(client: FlaskClient) -> None:
    page = client.get("/").get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match
    assert (
        client.post("/logout", data={"csrf_token": match.group(1)}).status_code == 302
    )


def _sessions(database: Database) -> int:
    with database.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(PageSession)) or 0)


def test_a_copied_cookie_stops_working_when_its_browser_signs_out(
    app: Flask, client: FlaskClient, account: Account, database: Database
) -> None:
    assert sign_in(client, account.email).status_code == 302
    copy = _replay(app, _cookie(client))
    assert copy.get("/").status_code == 200

    _sign_out(client)

    assert copy.get("/").status_code == 302
    assert copy.get("/api/v1/messages").status_code == 401
    assert _sessions(database) == 0


def test_signing_in_again_ends_the_browsers_earlier_session(
    app: Flask, client: FlaskClient, account: Account, database: Database
) -> None:
    sign_in(client, account.email)
    earlier = _replay(app, _cookie(client))

    sign_in(client, account.email)
    _sign_out(client)

    assert earlier.get("/").status_code == 302
    assert _sessions(database) == 0


def test_signing_out_one_browser_leaves_the_others_signed_in(
    app: Flask, account: Account
) -> None:
    laptop, phone = app.test_client(), app.test_client()
    sign_in(laptop, account.email)
    sign_in(phone, account.email)

    _sign_out(laptop)

    assert laptop.get("/").status_code == 302
    assert phone.get("/").status_code == 200


def test_a_cookie_that_only_names_a_user_signs_nobody_in(
    client: FlaskClient, account: Account
) -> None:
    # What a forged or older cookie might carry: a user id and no session key.
    with client.session_transaction() as session:
        session["user_id"] = 1
    assert client.get("/").status_code == 302


@pytest.mark.parametrize(
    ("created", "seen"),
    [
        (signin.LIFETIME + timedelta(minutes=1), timedelta(minutes=1)),
        (timedelta(days=8), signin.IDLE + timedelta(minutes=1)),
    ],
    ids=["past-its-lifetime", "idle-too-long"],
)
def test_an_old_session_ends_by_itself(
    client: FlaskClient,
    account: Account,
    database: Database,
    created: timedelta,
    seen: timedelta,
) -> None:
    sign_in(client, account.email)
    now = utcnow()
    with database.begin() as session:
        session.execute(
            update(PageSession).values(
                created_at=now - created, last_seen_at=now - seen
            )
        )

    assert client.get("/").status_code == 302
    assert _sessions(database) == 0


def test_page_views_keep_a_session_alive(
    client: FlaskClient, account: Account, database: Database
) -> None:
    sign_in(client, account.email)
    now = utcnow()
    with database.begin() as session:
        session.execute(
            update(PageSession).values(last_seen_at=now - timedelta(days=6))
        )

    assert client.get("/").status_code == 200

    with database.session_factory() as session:
        seen = session.scalar(select(PageSession.last_seen_at))
    assert seen is not None and now - seen < timedelta(minutes=1)


def test_too_many_wrong_passwords_lock_the_account_for_a_while(
    app: Flask, client: FlaskClient, account: Account, database: Database
) -> None:
    for _ in range(signin.PER_ACCOUNT):
        assert sign_in(client, account.email, "wrong").status_code == 401

    # The right password does not get in now, from this browser or another.
    locked = sign_in(app.test_client(), account.email.upper())
    assert locked.status_code == 429
    assert "Try again in 15 minutes" in locked.get_data(as_text=True)

    # Once the failures are older than the window, the right password works.
    with database.begin() as session:
        session.execute(update(SignInFailure).values(at=utcnow() - signin.WINDOW))
    assert sign_in(client, account.email).status_code == 302


def test_the_wait_shown_is_until_the_limit_is_no_longer_reached(
    client: FlaskClient, account: Account, database: Database
) -> None:
    for _ in range(signin.PER_ACCOUNT):
        sign_in(client, account.email, "wrong")
    with database.begin() as session:
        session.execute(
            update(SignInFailure).values(at=utcnow() - timedelta(minutes=11))
        )

    locked = sign_in(client, account.email)

    assert "Try again in 4 minutes" in locked.get_data(as_text=True)


def test_a_wait_of_about_a_minute_reads_as_one_and_is_sent_as_retry_after(
    client: FlaskClient, account: Account, database: Database
) -> None:
    for _ in range(signin.PER_ACCOUNT):
        sign_in(client, account.email, "wrong")
    with database.begin() as session:
        almost = utcnow() - signin.WINDOW + timedelta(seconds=30)
        session.execute(update(SignInFailure).values(at=almost))

    locked = sign_in(client, account.email)

    assert "Try again in 1 minute," in locked.get_data(as_text=True)
    assert 1 <= int(locked.headers["Retry-After"]) <= 30


def test_wrong_passwords_sent_at_once_still_stop_at_the_limit(
    app: Flask, account: Account
) -> None:
    browsers = [app.test_client() for _ in range(3 * signin.PER_ACCOUNT)]
    forms = []
    for browser in browsers:
        page = browser.get("/login").get_data(as_text=True)
        match = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert match
        forms.append((browser, match.group(1)))

    def guess(form: tuple[FlaskClient, str]) -> int:
        browser, csrf = form
        data = {"email": account.email, "password": "guess", "csrf_token": csrf}
        return browser.post("/login", data=data).status_code

    with ThreadPoolExecutor(max_workers=len(forms)) as pool:
        answers = list(pool.map(guess, forms))

    # Each guess is written down before its password is checked, so no more than the
    # limit are ever checked, however many arrive together.
    checked = answers.count(401)
    assert 1 <= checked <= signin.PER_ACCOUNT
    assert checked + answers.count(429) == len(answers)
    # What is left of the limit can still be used, and not one guess more.
    late = app.test_client()
    for _ in range(signin.PER_ACCOUNT - checked):
        assert sign_in(late, account.email, "guess").status_code == 401
    assert sign_in(late, account.email).status_code == 429


def test_spaces_around_the_email_do_not_stop_a_sign_in(
    client: FlaskClient, account: Account
) -> None:
    assert sign_in(client, f"  {account.email.upper()}\t").status_code == 302


@pytest.mark.parametrize(
    "forwarded",
    [
        "a" * 65,
        "2001:db8::ff00:42:8329%" + "a-very-long-zone-identifier" * 3,
        "not an address",
    ],
)
def test_an_odd_forwarded_address_at_sign_in_is_no_error(
    app: Flask, client: FlaskClient, account: Account, forwarded: str
) -> None:
    app.config["TRUSTED_PROXIES"] = 1
    client.environ_base["HTTP_X_FORWARDED_FOR"] = forwarded

    assert sign_in(client, account.email, "wrong").status_code == 401
    assert sign_in(client, account.email).status_code == 302


def test_one_address_in_two_spellings_is_one_client(
    app: Flask, make_account: Callable[..., Account], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(signin, "PER_ADDRESS", 2)
    app.config["TRUSTED_PROXIES"] = 1
    ann = make_account("ann@seller.test")
    for n, spelling in enumerate(["2001:DB8:0000::0001", "2001:db8::1%eth0"]):
        guesser = app.test_client()
        guesser.environ_base["HTTP_X_FORWARDED_FOR"] = spelling
        assert sign_in(guesser, f"nobody{n}@seller.test", "guess").status_code == 401

    same = app.test_client()
    same.environ_base["HTTP_X_FORWARDED_FOR"] = "2001:db8::1"
    assert sign_in(same, ann.email).status_code == 429


def test_a_right_password_clears_the_count_of_wrong_ones(
    client: FlaskClient, account: Account
) -> None:
    for _ in range(signin.PER_ACCOUNT - 1):
        sign_in(client, account.email, "wrong")
    assert sign_in(client, account.email).status_code == 302
    _sign_out(client)

    for _ in range(signin.PER_ACCOUNT - 1):
        assert sign_in(client, account.email, "wrong").status_code == 401
    assert sign_in(client, account.email).status_code == 302


def test_one_address_guessing_across_accounts_is_slowed_too(
    app: Flask,
    make_account: Callable[..., Account],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(signin, "PER_ADDRESS", 3)
    app.config["TRUSTED_PROXIES"] = 1
    ann = make_account("ann@seller.test")
    guesser = app.test_client()
    guesser.environ_base["HTTP_X_FORWARDED_FOR"] = "203.0.113.9"
    for n in range(3):
        assert sign_in(guesser, f"nobody{n}@seller.test", "guess").status_code == 401

    assert sign_in(guesser, ann.email).status_code == 429
    office = app.test_client()
    office.environ_base["HTTP_X_FORWARDED_FOR"] = "198.51.100.4"
    assert sign_in(office, ann.email).status_code == 302


def test_cli_signs_every_browser_of_a_user_out(
    app: Flask, account: Account, make_account: Callable[..., Account]
) -> None:
    other = make_account("bob@seller.test")
    laptop, phone, bobs = app.test_client(), app.test_client(), app.test_client()
    sign_in(laptop, account.email)
    sign_in(phone, account.email)
    sign_in(bobs, other.email)

    result = app.test_cli_runner().invoke(args=["user", "sign-out", account.email])

    assert result.exit_code == 0, result.output
    assert "Signed out 2 browser(s)" in result.output
    assert laptop.get("/").status_code == 302
    assert phone.get("/").status_code == 302
    assert bobs.get("/").status_code == 200


def test_cli_sets_a_password_signs_out_and_unlocks(
    app: Flask, client: FlaskClient, account: Account
) -> None:
    browser = app.test_client()
    sign_in(browser, account.email)
    for _ in range(signin.PER_ACCOUNT):
        sign_in(client, account.email, "wrong")

    result = app.test_cli_runner().invoke(
        args=["user", "password", account.email, "--password", "new battery staple"]
    )

    assert result.exit_code == 0, result.output
    assert browser.get("/").status_code == 302
    assert sign_in(client, account.email).status_code == 401
    assert sign_in(client, account.email, "new battery staple").status_code == 302


def test_a_password_shorter_than_8_characters_is_refused(
    app: Flask, client: FlaskClient, account: Account, database: Database
) -> None:
    runner = app.test_cli_runner()

    changed = runner.invoke(
        args=["user", "password", account.email, "--password", "seven77"]
    )
    created = runner.invoke(
        args=["user", "create", "new@seller.test", "--org", "Seller", "--password", "x"]
    )

    for result in (changed, created):
        assert result.exit_code != 0
        assert "use at least 8 characters" in result.output
    assert sign_in(client, account.email).status_code == 302
    with database.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 1


def test_cli_revokes_a_users_api_tokens(
    app: Flask, account: Account, make_account: Callable[..., Account]
) -> None:
    other = make_account("bob@seller.test")

    result = app.test_cli_runner().invoke(args=["user", "revoke-tokens", account.email])

    assert result.exit_code == 0, result.output
    assert "Revoked 1 API token(s)" in result.output
    assert account.get("/api/v1/messages").status_code == 401
    assert other.get("/api/v1/messages").status_code == 200
    fresh = app.test_cli_runner().invoke(args=["user", "token", account.email])
    token = fresh.output.strip().splitlines()[-1]
    again = app.test_client().get(
        "/api/v1/messages", headers={"Authorization": f"Bearer {token}"}
    )
    assert again.status_code == 200


def test_reading_the_api_notes_when_a_token_was_last_used(
    account: Account, database: Database
) -> None:
    assert account.get("/api/v1/messages").status_code == 200

    with database.session_factory() as session:
        used = session.scalar(select(ApiToken.last_used_at))
    assert used is not None and utcnow() - used < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["user", "password", "nobody@seller.test", "--password", "x"], "no user"),
        (["user", "sign-out", "nobody@seller.test"], "no user"),
        (["user", "password", "rep@seller.test", "--password", "  "], "password"),
        # Bytes that are not UTF-8 reach a command as lone surrogates.
        (["user", "password", "rep@seller.test", "--password", "\udcff"], "UTF-8"),
        (["user", "sign-out", "a\udcff@seller.test"], "UTF-8"),
        (["user", "create", "b\udcff@seller.test", "--org", "Seller"], "UTF-8"),
        (["user", "create", "c@seller.test", "--org", "\udcff"], "UTF-8"),
        (["privacy", "export", "d\udcff@example.com"], "UTF-8"),
        (["user", "create", "e@seller.test", "--org", "S", "--password", " "], "give"),
        (["user", "create", "f@seller.test", "--org", "S", "--password", ""], "give"),
        (["db", "upgrade", "nosuchrevision"], "nosuchrevision"),
        (["user", "password", "rep@seller.test", "--password", "x"], "at least 8"),
    ],
)
def test_cli_refuses_what_it_cannot_do(
    app: Flask, account: Account, args: list[str], message: str
) -> None:
    result = app.test_cli_runner().invoke(args=args)

    assert result.exit_code != 0
    assert message in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_pruning_forgets_dead_sessions_and_old_failures(
    client: FlaskClient, account: Account, database: Database
) -> None:
    sign_in(client, account.email)
    sign_in(client, "nobody@seller.test", "wrong")
    later = utcnow() + signin.IDLE + timedelta(minutes=1)

    with database.begin() as session:
        signin.prune(session, now=later)

    with database.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(PageSession)) == 0
        assert session.scalar(select(func.count()).select_from(SignInFailure)) == 0
