"""Salesforce-style record ids: key prefixes and the 18-character form."""

from __future__ import annotations

import secrets
import string

KEY_PREFIXES = {
    "Account": "001",
    "Contact": "003",
    "Lead": "00Q",
    "Opportunity": "006",
    "OpportunityContactRole": "00k",
    "User": "005",
    "Task": "00T",
    "Organization": "00D",
    "QueryLocator": "01g",
}
TYPES_BY_PREFIX = {prefix: name for name, prefix in KEY_PREFIXES.items()}

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_SUFFIX = string.ascii_uppercase + "012345"
_ID_CHARS = frozenset(string.ascii_letters + string.digits)


def new_pod() -> str:
    """Pick the two characters that keep one emulator's ids apart from another's."""
    return "".join(secrets.choice(_BASE62) for _ in range(2))


def make_id(type_name: str, pod: str, serial: int) -> str:
    """Build the 18-character id of the `serial`-th record made by one emulator."""
    body = _base62(serial).rjust(10, "0")
    short = KEY_PREFIXES[type_name] + pod + body
    return short + checksum(short)


def checksum(short_id: str) -> str:
    """Compute the three-character case suffix that turns a 15-char id into 18."""
    suffix = ""
    for start in (0, 5, 10):
        chunk = short_id[start : start + 5]
        bits = sum(1 << i for i, ch in enumerate(chunk) if "A" <= ch <= "Z")
        suffix += _SUFFIX[bits]
    return suffix


def normalise(value: object) -> str | None:
    """Return the 18-character form of a 15- or 18-character id, None if malformed."""
    if not isinstance(value, str) or len(value) not in (15, 18):
        return None
    if not set(value) <= _ID_CHARS:
        return None
    short = value[:15]
    if len(value) == 18 and value[15:].upper() != checksum(short):
        return None
    return short + checksum(short)


def type_of(record_id: str) -> str | None:
    """Name the object type an id's key prefix belongs to."""
    return TYPES_BY_PREFIX.get(record_id[:3])


def _base62(number: int) -> str:
    """Spell a non-negative integer in base 62."""
    digits = ""
    while True:
        number, rest = divmod(number, 62)
        digits = _BASE62[rest] + digits
        if number == 0:
            return digits
