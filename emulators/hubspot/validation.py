"""Checks HubSpot makes on property values before it writes an object."""

import re
from datetime import UTC, datetime
from typing import Any

from .errors import ApiError, property_errors, validation
from .schema import ObjectType

_EPOCH_MS = re.compile(r"^\d{10,14}$")


def iso_now() -> str:
    """Return the current time as HubSpot formats timestamps."""
    return iso(datetime.now(UTC))


def iso(moment: datetime) -> str:
    """Format a datetime with milliseconds and a trailing Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_timestamp(value: str) -> datetime | None:
    """Read epoch milliseconds or ISO 8601, as hs_timestamp accepts; None if bad."""
    if _EPOCH_MS.match(value):
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _problem(name: str, error: str, message: str, portal: int) -> dict[str, Any]:
    return {
        "isValid": False,
        "message": message,
        "error": error,
        "name": name,
        "localizedErrorMessage": message,
        "portalId": portal,
    }


def _check_value(
    kind: ObjectType, name: str, value: str, owners: set[str], portal: int
) -> dict[str, Any] | None:
    if name not in kind.properties:
        text = f'Property "{name}" does not exist'
        return _problem(name, "PROPERTY_DOESNT_EXIST", text, portal)
    options = kind.enums.get(name)
    if options and value not in options:
        text = f"{value} was not one of the allowed options: [{', '.join(options)}]"
        return _problem(name, "INVALID_OPTION", text, portal)
    if name == "hs_timestamp" and parse_timestamp(value) is None:
        text = f"{value} was not a valid long or ISO 8601 datetime."
        return _problem(name, "INVALID_DATETIME", text, portal)
    if name == "hubspot_owner_id" and value and value not in owners:
        text = f"{value} is not a valid owner id"
        return _problem(name, "INVALID_OWNER_ID", text, portal)
    return None


def normalise(properties: Any) -> dict[str, str]:
    """Turn the JSON `properties` member into strings, as HubSpot stores them."""
    if not isinstance(properties, dict):
        raise validation("Invalid input JSON: properties must be an object.")
    out: dict[str, str] = {}
    for name, value in properties.items():
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        else:
            out[name] = "" if value is None else str(value)
    return out


def check_properties(
    kind: ObjectType,
    properties: dict[str, str],
    owners: set[str],
    portal: int,
    creating: bool,
) -> None:
    """Raise the error HubSpot sends for the first kind of bad input found."""
    problems = [
        p
        for name, value in properties.items()
        if (p := _check_value(kind, name, value, owners, portal)) is not None
    ]
    if problems:
        raise property_errors(problems)
    missing = [n for n in kind.required if creating and not properties.get(n)]
    if missing:
        raise _missing_required(kind, missing)


def _missing_required(kind: ObjectType, missing: list[str]) -> ApiError:
    # NOTE: HubSpot's exact wording for a missing required property is not
    # published; the category, status and the named properties are what
    # callers can rely on.
    return validation(
        f"Error creating {kind.singular}. Some required properties were not set.",
        context={"properties": missing},
        errors=[
            {
                "message": f'Property "{name}" is required',
                "code": "MISSING_REQUIRED_PROPERTY",
                "context": {"propertyName": [name]},
            }
            for name in missing
        ],
    )


def stored_value(name: str, value: str) -> str:
    """Return the value as HubSpot echoes it back (hs_timestamp becomes ISO)."""
    if name == "hs_timestamp":
        moment = parse_timestamp(value)
        return iso(moment) if moment else value
    return value
