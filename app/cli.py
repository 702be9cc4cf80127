"""Command-line tasks: users and tokens, database migrations."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from werkzeug.security import generate_password_hash

from app import signin
from app.auth import issue_token
from app.extensions import db_session
from app.models import ApiToken, Organization, User, utcnow

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "migrations")
MIN_PASSWORD_LENGTH = 8


def alembic_config(url: str) -> Config:
    """The Alembic configuration for a database URL."""
    # Imported here: Alembic is only needed by the release step, not by every process.
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.attributes["database_url"] = url
    return config


class Utf8Text(click.ParamType):
    """Text that can be stored: bytes that are not UTF-8 get an error, not a crash."""

    name = "text"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        text = str(value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            self.fail("is not valid UTF-8 text", param, ctx)
        return text


TEXT = Utf8Text()


def _check_password(password: str, blank: str) -> None:
    """Refuse a blank password with ``blank``, and one too short to resist guessing."""
    if not password.strip():
        raise click.BadParameter(blank, param_hint="--password")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise click.BadParameter(
            f"use at least {MIN_PASSWORD_LENGTH} characters", param_hint="--password"
        )


@click.group("user", cls=AppGroup)
def user_cli() -> None:
    """Manage users."""


@user_cli.command("create")
@click.argument("email", type=TEXT)
@click.option(
    "--org", "org_name", type=TEXT, required=True, help="Organisation (created if new)."
)
@click.option("--admin", is_flag=True, help="Make the user an administrator.")
@click.option("--password", type=TEXT, help="Password for the web pages (optional).")
@click.option("--name", type=TEXT, help="Display name.")
def create_user(
    email: str, org_name: str, admin: bool, password: str | None, name: str | None
) -> None:
    """Create a user and print an API token on the last line."""
    session = db_session()
    email = email.strip().lower()
    if "@" not in email:
        raise click.BadParameter(
            "give an email address, like ann@example.com", param_hint="EMAIL"
        )
    org_name = org_name.strip()
    if not org_name:
        raise click.BadParameter("give the organisation a name", param_hint="--org")
    if password is not None:
        _check_password(
            password, "give a password, or leave --password out to set one later"
        )
    if session.scalars(select(User).where(User.email == email)).first():
        raise click.ClickException(f"A user with the email {email} already exists.")
    # "your team" joins "Your team" rather than starting a second organisation.
    org = session.scalars(
        select(Organization)
        .where(func.lower(Organization.name) == org_name.lower())
        .order_by(Organization.id)
    ).first()
    if org is None:
        org = Organization(name=org_name)
        session.add(org)
        click.echo(f"Created organisation {org_name}")
    user = User(
        organization=org,
        email=email,
        name=name,
        is_admin=admin,
        password_hash=generate_password_hash(password)
        if password is not None
        else None,
    )
    token, plain = issue_token(user, label="created with the CLI")
    session.add_all([user, token])
    session.commit()
    click.echo(f"Created {'admin ' if admin else ''}user {email} in {org_name}")
    click.echo(plain)


@user_cli.command("token")
@click.argument("email", type=TEXT)
def new_token(email: str) -> None:
    """Issue another API token for a user; printed on the last line."""
    session = db_session()
    user = _user(session, email)
    token, plain = issue_token(user, label="issued with the CLI")
    session.add(token)
    session.commit()
    click.echo(plain)


def _user(session: Session, email: str) -> User:
    user = session.scalars(
        select(User).where(User.email == email.strip().lower())
    ).first()
    if user is None:
        raise click.ClickException(f"There is no user with the email {email}.")
    return user


@user_cli.command("password")
@click.argument("email", type=TEXT)
@click.password_option(type=TEXT, help="The new password (asked for when not given).")
def set_password(email: str, password: str) -> None:
    """Set a user's password for the pages; every browser of theirs is signed out."""
    session = db_session()
    user = _user(session, email)
    _check_password(password, "give a password")
    user.password_hash = generate_password_hash(password)
    ended = signin.end_all(session, user)
    signin.forget_failures(session, user.email)
    session.commit()
    click.echo(f"Set the password of {user.email}; signed out {ended} browser(s)")


@user_cli.command("sign-out")
@click.argument("email", type=TEXT)
def sign_out(email: str) -> None:
    """Sign every browser of a user out (a lost laptop, a shared screen)."""
    session = db_session()
    user = _user(session, email)
    ended = signin.end_all(session, user)
    session.commit()
    click.echo(f"Signed out {ended} browser(s) of {user.email}")


@user_cli.command("revoke-tokens")
@click.argument("email", type=TEXT)
def revoke_tokens(email: str) -> None:
    """Revoke every API token of a user (a leaked token, someone leaving)."""
    session = db_session()
    user = _user(session, email)
    tokens = session.scalars(
        select(ApiToken).where(
            ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None)
        )
    ).all()
    for token in tokens:
        token.revoked_at = utcnow()
    session.commit()
    click.echo(f"Revoked {len(tokens)} API token(s) of {user.email}")


@click.group("db", cls=AppGroup)
def db_cli() -> None:
    """Database schema migrations."""


@db_cli.command("upgrade")
@click.argument("revision", type=TEXT, default="head")
def upgrade(revision: str) -> None:
    """Bring the schema up to date (the release step)."""
    from alembic import command
    from alembic.util import CommandError

    engine = current_app.extensions["trailmark.db"].engine
    try:
        before = _schema_revision(engine)
        command.upgrade(alembic_config(current_app.config["DATABASE_URL"]), revision)
        after = _schema_revision(engine)
    except CommandError as exc:
        raise click.ClickException(str(exc)) from None
    except DBAPIError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0][:300]
        raise click.ClickException(
            f"The database at DATABASE_URL cannot be used: {reason}. Check that it "
            "runs, that the database exists and that the URL is right."
        ) from None
    if before == after:
        click.echo(f"Database schema is up to date (revision {after}).")
    elif before is None:
        click.echo(f"Database schema created (revision {after}).")
    else:
        click.echo(f"Database schema upgraded from revision {before} to {after}.")


def _schema_revision(engine: Any) -> str | None:
    """The schema's Alembic revision, or None for a database without the schema."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        revision = MigrationContext.configure(conn).get_current_revision()
    return str(revision) if revision else None


def init_app(app: Flask) -> None:
    app.cli.add_command(user_cli)
    app.cli.add_command(db_cli)
    from app.privacy.cli import privacy_cli

    app.cli.add_command(privacy_cli)
