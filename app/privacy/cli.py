"""``flask --app app privacy export|erase ADDRESS``: a person's data, for operators."""

from __future__ import annotations

import json
import logging
from typing import Any

import click
from flask.cli import AppGroup
from marshmallow import ValidationError, validate
from sqlalchemy import func, select

from app.cli import TEXT
from app.extensions import db_session
from app.models import Organization
from app.privacy import person
from app.privacy.rules import normalise

logger = logging.getLogger(__name__)


def _address(value: str) -> str:
    try:
        validate.Email()(value.strip())
    except ValidationError as exc:
        raise click.BadParameter(
            "give an email address, like ann@example.com", param_hint="ADDRESS"
        ) from exc
    return normalise(value)


def _org_id(name: str | None) -> int | None:
    if name is None:
        return None
    # Matched as `user create` matches it: whatever its case.
    org_id = db_session().scalar(
        select(Organization.id).where(
            func.lower(Organization.name) == name.strip().lower()
        )
    )
    if org_id is None:
        raise click.ClickException(f"There is no organisation named {name}.")
    return org_id


def _write(data: dict[str, Any], output: str | None) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False)
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    else:
        click.echo(text)


@click.group("privacy", cls=AppGroup)
def privacy_cli() -> None:
    """A person's data: export it, or erase it."""


_org_option = click.option(
    "--org",
    "org_name",
    type=TEXT,
    help="Only this organisation (default: all of them).",
)
_output_option = click.option(
    "--output", "-o", type=click.Path(dir_okay=False), help="Write JSON to a file."
)


@privacy_cli.command("export")
@click.argument("address", type=TEXT)
@_org_option
@_output_option
def export(address: str, org_name: str | None, output: str | None) -> None:
    """Write everything held about a recipient address as JSON."""
    data = person.export_person(db_session(), _address(address), _org_id(org_name))
    _write(data, output)


@privacy_cli.command("erase")
@click.argument("address", type=TEXT)
@_org_option
@_output_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def erase(address: str, org_name: str | None, output: str | None, yes: bool) -> None:
    """Delete what is held about an address; report what the CRMs still hold."""
    address = _address(address)
    org_id = _org_id(org_name)
    if not yes:
        click.confirm(f"Erase everything held about {address}?", abort=True)
    session = db_session()
    report = person.erase_person(session, address, org_id)
    session.commit()
    logger.info(
        "person erased from the command line messages_deleted=%d events_deleted=%d",
        report["messages_deleted"],
        report["events_deleted"],
    )
    _write(report, output)
    if report["crm_records"]:
        click.echo(
            f"{len(report['crm_records'])} record(s) remain in the CRMs; delete them "
            "there (listed under crm_records).",
            err=True,
        )


@privacy_cli.command("retention")
def retention() -> None:
    """Apply every organisation's retention limits now (the workers do it hourly)."""
    from workers.retention import run_retention

    totals = run_retention()
    click.echo(
        "Raw details cleared from {raw_cleared} events; deleted {events_deleted} "
        "events and {messages_deleted} messages.".format(**totals)
    )
