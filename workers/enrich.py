"""Location, network owner and device of a tracking hit, from its IP and user agent."""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

import geoip2.database
import geoip2.errors
import maxminddb
import user_agents

logger = logging.getLogger(__name__)

# Sized for a worker at ~2,000 hits/s: user agents repeat heavily, addresses less.
DEVICE_CACHE_SIZE = 8192
ADDRESS_CACHE_SIZE = 65536

# Image proxies that fetch the pixel for a reader; their UA says nothing of the
# reader. Apple Mail Privacy Protection sends a bare "Mozilla/5.0" (uap-core#509).
PROXY_TOKENS = (
    ("googleimageproxy", "gmail", "Gmail"),
    ("via ggpht.com", "gmail", "Gmail"),
    ("yahoomailproxy", "yahoo", "Yahoo Mail"),
)
APPLE_PROXY_UA = "mozilla/5.0"

# Security gateways that name themselves. Most of them pose as a desktop browser,
# so grading also relies on network and timing; these catch the honest ones.
SCANNER_TOKENS = (
    ("barracuda sentinel", "barracuda", "Barracuda Sentinel"),
    ("barracuda", "barracuda", "Barracuda"),
    ("safelinks", "safelinks", "Microsoft Safe Links"),
    ("proofpoint", "proofpoint", "Proofpoint"),
    ("mimecast", "mimecast", "Mimecast"),
)

# Scripts, HTTP libraries and crawlers the user-agents library misses or misnames.
BOT_TOKENS = (
    ("applebot", "Applebot"),
    ("headlesschrome", "HeadlessChrome"),
    ("python-requests", "Python Requests"),
    ("python-urllib", "Python urllib"),
    ("aiohttp", "aiohttp"),
    ("curl/", "curl"),
    ("wget/", "Wget"),
    ("go-http-client", "Go-http-client"),
    ("java/", "Java"),
    ("okhttp", "OkHttp"),
    ("apache-httpclient", "Apache HttpClient"),
    ("node-fetch", "node-fetch"),
    ("axios/", "axios"),
    ("phantomjs", "PhantomJS"),
)

# Outlook for Windows reports its internal major version, not its marketing year.
# NOTE: 16 covers Outlook 2016, 2019, 2021 and Microsoft 365 alike; the UA cannot
# tell them apart, so all of them read as "Outlook 2016".
OUTLOOK_YEARS = {"12": "2007", "14": "2010", "15": "2013", "16": "2016"}
OUTLOOK_DESKTOP = re.compile(r"microsoft outlook (\d+)")

MOBILE_MAIL_APPS = (
    ("outlook-ios/", "Outlook (iOS)"),
    ("outlook-android/", "Outlook (Android)"),
)


@dataclass(frozen=True, slots=True)
class Location:
    """Where an address is, as far as the City database knows."""

    country: str | None
    country_code: str | None
    region: str | None
    city: str | None


@dataclass(frozen=True, slots=True)
class Network:
    """Who owns an address: its autonomous system."""

    asn: int | None
    org: str | None


@dataclass(frozen=True, slots=True)
class Device:
    """What fetched the pixel or followed the link."""

    client: str | None
    os: str | None
    type: str  # desktop | mobile | tablet | unknown
    agent: str  # browser | mail_client | image_proxy | scanner | bot | unknown
    proxy: str | None = None  # gmail | yahoo | apple
    scanner: str | None = None  # barracuda | safelinks | proofpoint | mimecast
    bot: bool = False


UNKNOWN_DEVICE = Device(client=None, os=None, type="unknown", agent="unknown")


class Enricher:
    """Cached GeoIP and user-agent lookups; safe to build before the worker forks."""

    def __init__(self, city_db: str | None = None, asn_db: str | None = None) -> None:
        self._city_path = city_db
        self._asn_path = asn_db
        self._readers: dict[str, Any] = {}
        self._pid = os.getpid()
        self._location = functools.lru_cache(ADDRESS_CACHE_SIZE)(self._lookup_location)
        self._network = functools.lru_cache(ADDRESS_CACHE_SIZE)(self._lookup_network)
        self._device = functools.lru_cache(DEVICE_CACHE_SIZE)(parse_device)

    def location(self, ip: str | None) -> Location | None:
        """Location of a public address, or None when unknown."""
        return self._location(ip)

    def network(self, ip: str | None) -> Network | None:
        """Network owner of a public address; None without an ASN database."""
        return self._network(ip)

    def device(self, ua: str | None) -> Device:
        """Device behind a user agent; an empty one gives the unknown device."""
        return self._device(ua or "")

    def _lookup_location(self, ip: str | None) -> Location | None:
        """Read the City database for one address."""
        address = public_address(ip)
        record = self._query("city", address) if address else None
        return _location_of(record) if record is not None else None

    def _lookup_network(self, ip: str | None) -> Network | None:
        """Read the ASN database for one address."""
        address = public_address(ip)
        record = self._query("asn", address) if address else None
        return _network_of(record) if record is not None else None

    def _query(self, kind: str, address: str) -> Any:
        """Look an address up in one database; None when it is not there."""
        reader = self._reader(kind)
        if reader is None:
            return None
        try:
            return reader.asn(address) if kind == "asn" else reader.city(address)
        except (geoip2.errors.AddressNotFoundError, ValueError):
            return None
        except maxminddb.InvalidDatabaseError:
            logger.warning("geoip database corrupt kind=%s", kind)
            return None

    def _reader(self, kind: str) -> Any:
        """The open reader for a database, opened on first use in this process."""
        if self._pid != os.getpid():
            # A reader opened in the parent is not ours to share after a fork.
            self._readers, self._pid = {}, os.getpid()
        if kind not in self._readers:
            self._readers[kind] = self._open(kind)
        return self._readers[kind]

    def _open(self, kind: str) -> Any:
        """Open one database, or None when it is not configured or unreadable."""
        path = self._asn_path if kind == "asn" else self._city_path or _packaged_city()
        if path is None:
            return None
        try:
            return geoip2.database.Reader(path)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError):
            logger.warning("geoip database unreadable kind=%s path=%s", kind, path)
            return None


def _packaged_city() -> str | None:
    """Path of the GeoLite2 City file shipped by the maxminddb-geolite2 package."""
    try:
        from geolite2 import geolite2
    except ImportError:
        return None
    return str(geolite2.filename)


@functools.lru_cache(maxsize=65536)
def canonical_address(ip: str | None) -> str | None:
    """One spelling of an address (``2001:db8::1``, IPv4 unwrapped, no zone), or None.

    What is stored of a client's address, whatever the header said.
    """
    address = parse_address(ip)
    if address is None:
        return None
    return str(address).split("%", 1)[0]


@functools.lru_cache(maxsize=65536)
def parse_address(
    ip: str | None,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as given by a client, IPv4-mapped IPv6 unwrapped; None if invalid.

    Cached: a batch meets the same few addresses again and again, and parsing one
    costs more than grading the hit.
    """
    text = (ip or "").strip()
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        # Some proxies append the client's port: 81.2.69.142:443, [2001:db8::1]:443.
        host, colon, port = text.rpartition(":")
        if not (colon and port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            return None
        bracketed = host.startswith("[") and host.endswith("]")
        if ":" in host and not bracketed:
            return None  # a bare IPv6 address with a port would be ambiguous
        try:
            address = ipaddress.ip_address(host[1:-1] if bracketed else host)
        except ValueError:
            return None
        if bracketed != isinstance(address, ipaddress.IPv6Address):
            return None  # brackets are for IPv6 alone
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def public_address(ip: str | None) -> str | None:
    """The address in canonical form if it is a routable unicast one, else None."""
    address = parse_address(ip)
    if address is None or not address.is_global or address.is_multicast:
        return None
    return str(address)


def _location_of(record: Any) -> Location | None:
    """Location from a geoip2 City record, None when it names no place."""
    region = record.subdivisions[0].name if record.subdivisions else None
    location = Location(
        country=record.country.name,
        country_code=record.country.iso_code,
        region=region,
        city=record.city.name,
    )
    return location if location.country_code or location.city else None


def _network_of(record: Any) -> Network | None:
    """Network from a geoip2 ASN record, None when it names no owner."""
    asn = record.autonomous_system_number
    org = record.autonomous_system_organization
    return Network(asn=asn, org=org) if asn or org else None


def parse_device(ua: str) -> Device:
    """Device behind a user agent: our rules first, then the user-agents library."""
    text = ua.strip()
    if not text:
        return UNKNOWN_DEVICE
    lowered = text.lower()
    return _proxy(lowered) or _scanner(lowered) or _parsed(text, lowered)


def _proxy(lowered: str) -> Device | None:
    """An image proxy that fetches on the reader's behalf."""
    if lowered == APPLE_PROXY_UA:
        return _machine("image_proxy", client=None, proxy="apple")
    for token, proxy, client in PROXY_TOKENS:
        if token in lowered:
            return _machine("image_proxy", client=client, proxy=proxy)
    return None


def _scanner(lowered: str) -> Device | None:
    """A security gateway that names itself."""
    for token, scanner, client in SCANNER_TOKENS:
        if token in lowered:
            return _machine("scanner", client=client, scanner=scanner)
    return None


def _machine(
    agent: str,
    client: str | None,
    proxy: str | None = None,
    scanner: str | None = None,
) -> Device:
    """A device that is not a reader's: no OS, no form factor."""
    return Device(client, None, "unknown", agent, proxy, scanner, bot=agent == "bot")


def _parsed(text: str, lowered: str) -> Device:
    """Device from the user-agents library, corrected for mail clients and bots."""
    parsed = user_agents.parse(text)
    family = _known(parsed.browser.family)
    bot_name = next((name for token, name in BOT_TOKENS if token in lowered), None)
    if parsed.is_bot or bot_name:
        return _machine("bot", client=family or bot_name)
    mail_client = _mail_client(lowered, parsed)
    os_name = _os_name(parsed)
    form = _form_factor(parsed)
    if mail_client:
        return Device(mail_client, os_name, form, "mail_client")
    if family is None:
        return Device(None, os_name, form, "unknown")
    return Device(family, os_name, form, "browser")


def _mail_client(lowered: str, parsed: Any) -> str | None:
    """Name of the mail client behind the UA, when it is one."""
    outlook = OUTLOOK_DESKTOP.search(lowered)
    if outlook:
        year = OUTLOOK_YEARS.get(outlook.group(1))
        return f"Outlook {year}" if year else "Outlook"
    if "ms-office" in lowered or "msoffice" in lowered:
        return "Microsoft Office"
    for token, name in MOBILE_MAIL_APPS:
        if token in lowered:
            return name
    if "thunderbird/" in lowered:
        return "Thunderbird"
    if _is_bare_webkit(lowered):
        return "Apple Mail"
    if "superhuman" in lowered:
        return "Superhuman"
    return _known(parsed.browser.family) if parsed.is_email_client else None


def _is_bare_webkit(lowered: str) -> bool:
    """Apple Mail's UA: an Apple WebKit engine with no browser named after it."""
    # NOTE: other apps embedding WebKit on iOS send the same string; on a pixel
    # it is nearly always Mail, so that is what we call it.
    apple = "(macintosh" in lowered or "(iphone" in lowered or "(ipad" in lowered
    browser = any(word in lowered for word in ("safari", "version/", "chrome"))
    return apple and "applewebkit/" in lowered and not browser


def _os_name(parsed: Any) -> str | None:
    """Operating system with its version, None when the library cannot tell."""
    family = _known(parsed.os.family)
    if family is None:
        return None
    return f"{family} {parsed.os.version_string}".strip()


def _form_factor(parsed: Any) -> str:
    """desktop, mobile, tablet or unknown."""
    if parsed.is_tablet:
        return "tablet"
    if parsed.is_mobile:
        return "mobile"
    return "desktop" if parsed.is_pc else "unknown"


def _known(name: str | None) -> str | None:
    """The library's name for something, None for its 'Other' placeholder."""
    return None if not name or name == "Other" else name
