"""Grading of tracking hits: did a person do this, or a machine on their behalf?"""

from __future__ import annotations

import functools
import ipaddress
import math
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from workers.enrich import Device, Network, parse_address

HUMAN = "human"
PROXY = "proxy"
PREFETCH = "prefetch"
SCANNER = "scanner"
BOT = "bot"
SELF = "self"
COUNTED = frozenset({HUMAN, PROXY})

APPLE_ASNS = frozenset({714, 6185})
MICROSOFT_ASNS = frozenset({8068, 8069, 8074, 8075, 12076})
GOOGLE_ASNS = frozenset({15169, 396982})
# Mail-security vendors, matched on the ASN owner's name so that no AS number
# has to be kept in step with their acquisitions and new regions.
SCANNER_ORGS = ("mimecast", "proofpoint", "barracuda")

# Gateways scan at delivery, and sent_at is stamped when the add-on registers the
# message, before SMTP and the recipient's MX. Safe Links detonations seen in the
# field land a few seconds after delivery; a 10 s window proved too tight in
# other trackers and 60 s was their fix, so two minutes leaves room for a slow
# outbound queue while staying far below a person's reaction to a new mail.
SCANNER_WINDOW = timedelta(minutes=2)

# Apple Mail Privacy Protection fetches when the message reaches Apple, which with
# push mail is within minutes of delivery. A fetch from Apple's network after this
# is graded a proxy open (counted, location hidden), the safer error for a rep.
PREFETCH_WINDOW = timedelta(minutes=15)

# The rep's own client shows the sent message right after sending; later, a hit
# from the same office network is as likely to be a colleague reading a forward.
SELF_WINDOW = timedelta(minutes=10)

# Scanners fetch every link of a message within milliseconds; a person cannot
# click two different links of one mail within two seconds.
BURST_WINDOW = timedelta(seconds=2)
BURST_MIN_LINKS = 2

IPV4_PREFIX = 24
IPV6_PREFIX = 48


# The records made once or twice for every hit are not frozen: a frozen dataclass
# sets each field through a call, which costs the worker a microsecond a record.
# Nothing changes them once made.


@dataclass(slots=True)
class HitFacts:
    """What the worker knows about one hit after enrichment."""

    kind: str  # open | click
    at: datetime  # UTC
    method: str  # GET | HEAD
    ip: str | None
    network: Network | None
    device: Device
    link_id: int | None = None
    hosting: bool = False  # Anonymous-IP database: a hosting provider's address


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """What the worker knows about the tracked message."""

    sent_at: datetime  # UTC
    sender_ip: str | None  # the address that registered the message
    recipient_count: int


@dataclass(slots=True)
class PriorEvent:
    """An earlier, already graded event of the same message."""

    kind: str
    at: datetime
    classification: str
    ip_prefix: str | None  # see network_prefix()
    asn: int | None
    link_id: int | None


@dataclass(slots=True)
class Grade:
    """Verdict on a hit, with the stable reasons behind it."""

    classification: str
    counted: bool
    reasons: tuple[str, ...]
    possible_forward: bool


class History:
    """What grading needs to know of a message's earlier events.

    Only three things: whether it was ever opened, its first human open (forwards are
    told from that), and the times each link was clicked lately (bursts). A message
    with fifty thousand events costs no more to grade against than one with five.
    """

    __slots__ = ("_clicks", "first_human_open", "has_open")

    def __init__(self, events: Iterable[PriorEvent] = ()) -> None:
        self.has_open = False
        self.first_human_open: PriorEvent | None = None
        self._clicks: dict[int, list[datetime]] = {}
        for event in events:
            self.add(event)

    def add(self, event: PriorEvent) -> None:
        """Take in one more graded event, in any order."""
        if event.kind == "open":
            self.has_open = True
            first = self.first_human_open
            if event.classification == HUMAN and (first is None or event.at < first.at):
                self.first_human_open = event
        elif event.link_id is not None:
            insort(self._clicks.setdefault(event.link_id, []), event.at)

    def clicks_between(self, start: datetime, end: datetime) -> dict[int, datetime]:
        """Each link clicked from ``start`` to ``end``, with its earliest such click."""
        found = {}
        for link_id, times in self._clicks.items():
            index = bisect_left(times, start)
            if index < len(times) and times[index] <= end:
                found[link_id] = times[index]
        return found


@dataclass(slots=True)
class _Context:
    """One hit with its message and history, as every rule sees it."""

    hit: HitFacts
    message: MessageFacts
    history: History

    @property
    def elapsed(self) -> timedelta:
        """Time since the message was registered; negative under clock skew."""
        return self.hit.at - self.message.sent_at

    @property
    def asn(self) -> int | None:
        """ASN of the hit's address, when the ASN database is configured."""
        return self.hit.network.asn if self.hit.network else None


_Verdict = tuple[str, tuple[str, ...]]


def grade(
    hit: HitFacts, message: MessageFacts, history: History | Iterable[PriorEvent]
) -> Grade:
    """Grade one hit; pure, so it can be rerun on stored events."""
    if not isinstance(history, History):
        history = History(history)
    context = _Context(hit, message, history)
    classification: str = HUMAN
    reasons: tuple[str, ...] = ("no-machine-signal",)
    for rule in _RULES:
        if verdict := rule(context):
            classification, reasons = verdict
            break
    forward = classification == HUMAN and _is_forward(context)
    return Grade(classification, classification in COUNTED, reasons, forward)


@functools.lru_cache(maxsize=65536)
def network_prefix(ip: str | None) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) network of an address, None if invalid."""
    address = parse_address(ip)
    if address is None:
        return None
    length = IPV4_PREFIX if address.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{address}/{length}", strict=False))


def _bot(context: _Context) -> _Verdict | None:
    """Crawlers, scripts and HTTP libraries; and hits with no usable UA."""
    device = context.hit.device
    if device.bot:
        return BOT, ("ua:bot",)
    if context.hit.method not in {"GET", "HEAD"}:
        # Mail clients only GET an image or a link; a POST or DELETE is a script.
        return BOT, (f"method:{context.hit.method.lower()[:10]}",)
    if device.agent == "image_proxy" and context.hit.kind == "click":
        # Image proxies never follow links; something is replaying the URL.
        return BOT, ("ua:image-proxy-click",)
    if device.agent == "unknown" and device.client is None and device.os is None:
        return BOT, ("ua:unidentified",)
    return None


def _named_scanner(context: _Context) -> _Verdict | None:
    """Gateways that say who they are, and HEAD requests no mail client sends."""
    if context.hit.device.scanner:
        return SCANNER, (f"ua:{context.hit.device.scanner}",)
    if context.hit.method.upper() == "HEAD":
        return SCANNER, ("method:head",)
    return None


def _self(context: _Context) -> _Verdict | None:
    """The sender's own open: their address, or their network just after sending."""
    sender = context.message.sender_ip
    if not sender or not context.hit.ip:
        return None
    if _same_address(sender, context.hit.ip):
        return SELF, ("ip:sender",)
    near = context.elapsed <= SELF_WINDOW
    if near and network_prefix(sender) == network_prefix(context.hit.ip):
        return SELF, ("ip:sender-network", "within-self-window")
    return None


def _burst(context: _Context) -> _Verdict | None:
    """Several distinct links of the message clicked within a couple of seconds."""
    # The first click of a burst has already been graded when the second arrives;
    # the worker regrades it (workers.ingest._regrade_bursts).
    hit = context.hit
    if hit.kind != "click" or hit.link_id is None:
        return None
    recent = context.history.clicks_between(hit.at - BURST_WINDOW, hit.at)
    links = set(recent) | {hit.link_id}
    if len(links) < BURST_MIN_LINKS:
        return None
    span = (hit.at - min(recent.values())).total_seconds()
    return SCANNER, (f"burst:{len(links)}-links-in-{max(1, math.ceil(span))}s",)


def _scanner_network(context: _Context) -> _Verdict | None:
    """Security vendors' networks, and cloud networks at delivery time."""
    network = context.hit.network
    vendor = _scanner_vendor(network.org) if network else None
    if vendor:
        return SCANNER, (f"org:{vendor}",)
    if context.elapsed > SCANNER_WINDOW:
        return None
    return _delivery_time_network(context)


@functools.lru_cache(maxsize=4096)
def _scanner_vendor(org: str | None) -> str | None:
    """The mail-security vendor an ASN's owner name names, if any."""
    lowered = (org or "").lower()
    return next((name for name in SCANNER_ORGS if name in lowered), None)


def _delivery_time_network(context: _Context) -> _Verdict | None:
    """Microsoft, Google or a hosting provider within the delivery window."""
    window = "within-delivery-window"
    # NOTE: an Outlook.com reader who opens within the window is graded with
    # Defender's delivery-time fetches; the two are indistinguishable by then.
    if context.asn in MICROSOFT_ASNS:
        return SCANNER, ("asn:microsoft", window)
    if context.asn in GOOGLE_ASNS and context.hit.device.proxy != "gmail":
        return SCANNER, ("asn:google", window)
    if context.hit.hosting:
        return SCANNER, ("ip:hosting", window)
    return None


def _apple(context: _Context) -> _Verdict | None:
    """Apple Mail Privacy Protection: machine prefetch, or a proxied open."""
    if context.hit.kind != "open":
        return None
    device = context.hit.device
    apple_network = context.asn in APPLE_ASNS
    if device.proxy != "apple" and not apple_network:
        return None
    source = "asn:apple" if apple_network else "ua:apple-proxy"
    # NOTE: iCloud Private Relay also egresses through Akamai, Cloudflare and
    # Fastly; those networks carry too much ordinary traffic to read as Apple,
    # so only Apple's own network or the MPP user agent counts here.
    if context.elapsed <= PREFETCH_WINDOW:
        return PREFETCH, (source, "within-delivery-window")
    return PROXY, (source, "after-delivery-window")


def _image_proxy(context: _Context) -> _Verdict | None:
    """Gmail, Yahoo and Outlook.com fetching the pixel for a reader who opened."""
    proxy = context.hit.device.proxy
    if proxy and proxy != "apple":
        return PROXY, (f"ua:{proxy}-proxy",)
    if context.hit.kind == "open" and context.asn in MICROSOFT_ASNS:
        # Outlook.com and Outlook on the web load images through Microsoft's own
        # proxy, so a later Microsoft-network open is a reader, seen through it.
        return PROXY, ("asn:microsoft", "after-delivery-window")
    return None


_RULES: tuple[Callable[[_Context], _Verdict | None], ...] = (
    _bot,
    _named_scanner,
    _self,
    _burst,
    _scanner_network,
    _apple,
    _image_proxy,
)


def _is_forward(context: _Context) -> bool:
    """A human hit from another network than the first human open's."""
    # With several recipients a new network is most likely another recipient.
    if context.message.recipient_count > 1:
        return False
    first = context.history.first_human_open
    if first is None or first.at >= context.hit.at:
        return False
    if first.asn is not None and context.asn is not None:
        return first.asn != context.asn
    prefix = network_prefix(context.hit.ip)
    return None not in (first.ip_prefix, prefix) and first.ip_prefix != prefix


@functools.lru_cache(maxsize=65536)
def _same_address(left: str, right: str) -> bool:
    """Whether two address strings name the same address (IPv4-mapped or not)."""
    address = parse_address(left)
    return address is not None and address == parse_address(right)
