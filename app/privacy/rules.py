"""Who may be tracked: the do-not-track list and the EEA and UK option."""

from __future__ import annotations

import functools
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import idna
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import DoNotTrack, Organization

# Country-code top-level domains of the EEA (the 27 EU countries, Iceland,
# Liechtenstein, Norway), of the EU's outermost regions and the Åland Islands, the
# EU's own .eu (in Latin, Cyrillic and Greek script) and the UK. A domain ending in
# one of these is taken to belong to someone there. Generic domains (.com, .org,
# .io, ...) say nothing about where a person is: they are never assumed to be in
# the EEA.
EEA_UK_TLDS = frozenset(
    {
        # EU member states
        "at", "be", "bg", "hr", "cy", "cz", "dk", "ee", "fi", "fr", "de", "gr",
        "hu", "ie", "it", "lv", "lt", "lu", "mt", "nl", "pl", "pt", "ro", "sk",
        "si", "es", "se",
        # Internationalised ccTLDs of member states: Bulgaria's and Greece's
        "xn--90ae", "xn--qxam",
        # Parts of member states with their own ccTLD
        "ax", "gf", "gp", "mq", "re", "yt", "mf",
        # The rest of the EEA
        "is", "li", "no",
        # The EU itself: .eu, and .eu in Cyrillic and in Greek script
        "eu", "xn--e1a4c", "xn--qxa6a",
        # The United Kingdom (.gb was never taken into use)
        "uk", "gb",
    }
)  # fmt: skip

DO_NOT_TRACK_REASON = (
    "A recipient is on your organisation's do-not-track list, so the message was "
    "left as written: no open pixel and no tracked links."
)
EEA_REASON = (
    "A recipient's address is in the EEA or the UK (told by its domain) and your "
    "organisation does not track recipients there, so the message was left as written."
)
SENDER_REASON = "Tracking was turned off for this message by its sender."
OPENS_OFF_REASON = "Open tracking was turned off for this message by its sender."
LINKS_OFF_REASON = "Link tracking was turned off for this message by its sender."


@dataclass(frozen=True)
class TrackingDecision:
    """What a message gets: a pixel, tracked links, and why not when it does not."""

    opens: bool
    links: bool
    reason: str | None


def normalise(value: str) -> str:
    """An address or domain as compared: trimmed, lower case, no final dot."""
    return value.strip().lower().rstrip(".")


def list_key(value: str) -> str:
    """An address or domain as the do-not-track list keeps it: normalised, with an
    international domain in its ASCII form (``bücher.de`` as ``xn--bcher-kva.de``),
    so that both spellings of one domain match."""
    local, at, domain = normalise(value).rpartition("@")
    return f"{local}{at}{_ascii_domain(domain)}"


@functools.lru_cache(maxsize=4096)
def _ascii_domain(domain: str) -> str:
    """The ASCII form as mail and browsers spell it today (IDNA 2008, UTS #46)."""
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return _ascii_domain_2003(domain)


@functools.lru_cache(maxsize=4096)
def _ascii_domain_2003(domain: str) -> str:
    """The older ASCII form, which maps ``ß`` to ``ss``: ``straße.de`` as
    ``strasse.de``. Python's own codec, and how earlier entries were kept."""
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


@functools.lru_cache(maxsize=4096)
def _unicode_domain(domain: str) -> str:
    try:
        return idna.decode(domain)
    except (idna.IDNAError, UnicodeError):
        try:
            return domain.encode("ascii").decode("idna")
        except UnicodeError:
            return domain


def domain_of(address: str) -> str:
    return list_key(address).rpartition("@")[2]


def lookup_keys(address: str) -> list[str]:
    """The list entries that would cover an address: itself and each of its domains.

    Each in its ASCII form, in the older ASCII form where that differs (an entry
    ``straße.de`` made either way covers the address), and, for entries kept before
    domains were stored in ASCII, its Unicode form.
    """
    normal = normalise(address)
    keys = _with_domains(list_key(normal))
    local, at, domain = normal.rpartition("@")
    keys += _with_domains(f"{local}{at}{_ascii_domain_2003(domain)}")
    spelled = []
    for key in keys:
        head, sign, name = key.rpartition("@")
        spelled.append(f"{head}{sign}{_unicode_domain(name)}")
    return list(dict.fromkeys([*keys, *spelled]))


def _with_domains(address: str) -> list[str]:
    """The address and each domain above it: ``a@eu.example.org``, ``eu.example.org``,
    ``example.org``."""
    labels = address.rpartition("@")[2].split(".")
    return [address, *(".".join(labels[i:]) for i in range(len(labels) - 1))]


def in_eea_or_uk(address: str) -> bool:
    """True when the address's domain ends in an EEA or UK country-code TLD."""
    return domain_of(address).rpartition(".")[2] in EEA_UK_TLDS


def listed(session: Session, org_id: int, recipients: Iterable[str]) -> bool:
    """Whether any recipient is on the organisation's do-not-track list."""
    keys = {key for address in recipients for key in lookup_keys(address)}
    if not keys:
        return False
    query = select(DoNotTrack.id).where(
        DoNotTrack.org_id == org_id, DoNotTrack.value.in_(keys)
    )
    return session.scalar(query.limit(1)) is not None


def decide(
    session: Session,
    org: Organization,
    recipients: list[str],
    *,
    track: bool = True,
    track_opens: bool = True,
    track_links: bool = True,
) -> TrackingDecision:
    """Whether a new message gets a pixel and tracked links, and the reason if not."""
    if listed(session, org.id, recipients):
        return TrackingDecision(False, False, DO_NOT_TRACK_REASON)
    if not org.track_eea and any(in_eea_or_uk(r) for r in recipients):
        return TrackingDecision(False, False, EEA_REASON)
    if not track or not (track_opens or track_links):
        return TrackingDecision(False, False, SENDER_REASON)
    if not track_opens:
        return TrackingDecision(False, True, OPENS_OFF_REASON)
    if not track_links:
        return TrackingDecision(True, False, LINKS_OFF_REASON)
    return TrackingDecision(True, True, None)


K = TypeVar("K", bound=Hashable)


def untracked_ids(
    session: Session, wanted: Mapping[K, tuple[int, Sequence[str]]]
) -> set[K]:
    """Which of the given (organisation, recipients) have a recipient on that
    organisation's do-not-track list: a message or a copy put on it after sending."""
    keys_of = {
        key: {k for address in addresses for k in lookup_keys(address)}
        for key, (_, addresses) in wanted.items()
    }
    keys = set().union(*keys_of.values()) if keys_of else set()
    if not keys:
        return set()
    orgs = {org_id for org_id, _ in wanted.values()}
    rows = session.execute(
        select(DoNotTrack.org_id, DoNotTrack.value).where(
            DoNotTrack.org_id.in_(orgs), DoNotTrack.value.in_(keys)
        )
    )
    entries = {(org_id, value) for org_id, value in rows}
    return {
        key
        for key, its_keys in keys_of.items()
        if any((wanted[key][0], k) in entries for k in its_keys)
    }
