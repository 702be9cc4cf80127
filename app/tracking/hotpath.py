"""The pixel and link endpoints, as a bare WSGI layer in front of the Flask app.

These two URLs take nearly all of the traffic, and a Flask dispatch costs far more than
what they need to do: note the hit in the spool and answer. Everything else (looking up
the message, enrichment, grading, storage, notifications) happens in a worker.
"""

from __future__ import annotations

import base64
import itertools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, urlsplit

import idna
from sqlalchemy import Engine, select

from app.models import Link
from app.tracking.spool import Spool
from app.tracking.tokens import is_token
from workers.enrich import canonical_address

logger = logging.getLogger(__name__)

PIXEL_PREFIX = "/o/"
LINK_PREFIX = "/c/"

GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

_PIXEL_HEADERS = [
    ("Content-Type", "image/gif"),
    ("Content-Length", str(len(GIF))),
    ("Cache-Control", "no-store, no-cache, must-revalidate, max-age=0, private"),
    ("Pragma", "no-cache"),
    ("Expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
]

_NOT_FOUND = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>Link not found</title>"
    b"<body style='font-family:system-ui,sans-serif;max-width:32em;margin:4em auto'>"
    b"<h1>This link is not valid</h1><p>The address may be incomplete or mistyped. "
    b"Please use the link exactly as it appears in the email.</p></body></html>"
)
_TRACKING_ONLY = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>Not found</title>"
    b"<body style='font-family:system-ui,sans-serif;max-width:32em;margin:4em auto'>"
    b"<h1>Nothing here</h1><p>This address answers the tracking links of emails "
    b"only.</p></body></html>"
)
_UNAVAILABLE = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>Try again</title>"
    b"<body style='font-family:system-ui,sans-serif;max-width:32em;margin:4em auto'>"
    b"<h1>This link is briefly unavailable</h1><p>Please try again in a moment."
    b"</p></body></html>"
)

# Only the headers that grading may use are kept from a hit.
_KEPT_HEADERS = {
    "HTTP_ACCEPT": "accept",
    "HTTP_ACCEPT_LANGUAGE": "accept-language",
    "HTTP_REFERER": "referer",
    "HTTP_VIA": "via",
    "HTTP_FROM": "from",
    "HTTP_SEC_FETCH_SITE": "sec-fetch-site",
    "HTTP_SEC_PURPOSE": "sec-purpose",
    "HTTP_PURPOSE": "purpose",
}

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class LinkCache:
    """Token-to-redirect lookups, cached: a tracked link never changes.

    Bounded in entries and in the characters of the destinations it holds, so that
    a few messages with very long link URLs cannot grow every process that serves
    clicks: the least recently used go first.
    """

    def __init__(
        self, engine: Engine, size: int = 100_000, chars: int = 32 * 1024 * 1024
    ) -> None:
        self.engine = engine
        self.size = size
        self.chars = chars
        self._held = 0  # characters of the destinations held
        self._cache: OrderedDict[str, str | None] = OrderedDict()
        self._lock = threading.Lock()

    def location(self, token: str) -> str | None:
        """The Location header that sends a browser to the URL recorded for a link
        token, or None when there is no such link.

        The header is written out once per cached link, not on every click.
        """
        with self._lock:
            if token in self._cache:
                self._cache.move_to_end(token)
                return self._cache[token]
        with self.engine.connect() as conn:
            url = conn.execute(select(Link.url).where(Link.token == token)).scalar()
        location = None if url is None else _header_safe(url)
        # Unknown tokens are remembered too, so guessing costs no database query:
        # a link's token is only handed out after the link is committed, so a token
        # looked up in vain can never become a real one later.
        with self._lock:
            if token not in self._cache:
                self._cache[token] = location
                self._held += len(location or "")
            while len(self._cache) > self.size or (
                self._held > self.chars and len(self._cache) > 1
            ):
                _, gone = self._cache.popitem(last=False)
                self._held -= len(gone or "")
        return location


# Hit ids only have to be unique (the worker stores each once), not unguessable: a
# random prefix per process, then a count. No system call per hit, which would also
# hand the GIL to another thread in the middle of a request.
_id_prefix = os.urandom(8).hex()
_id_count = itertools.count()


def _new_process() -> None:
    global _id_prefix, _id_count
    _id_prefix, _id_count = os.urandom(8).hex(), itertools.count()


os.register_at_fork(after_in_child=_new_process)


def hit_id() -> str:
    """A new hit id, unique across processes and restarts."""
    return f"{_id_prefix}{next(_id_count):x}"


def client_ip(environ: dict[str, Any], trusted_proxies: int) -> str | None:
    """The client's address: the socket's, or X-Forwarded-For's as far as trusted."""
    remote = environ.get("REMOTE_ADDR") or None
    if trusted_proxies <= 0:
        return remote
    forwarded = [
        part.strip()
        for part in environ.get("HTTP_X_FORWARDED_FOR", "").split(",")
        if part.strip()
    ]
    if len(forwarded) >= trusted_proxies:
        return forwarded[-trusted_proxies]
    return forwarded[0] if forwarded else remote


def client_address(environ: dict[str, Any], trusted_proxies: int) -> str | None:
    """The client's address in one spelling, or None when it is not an address.

    For what is kept beside a person's account or message: a forged header may hold
    anything, and one address has many spellings (``::ffff:81.2.69.142``, zones).
    """
    return canonical_address(client_ip(environ, trusted_proxies))


class TrackingFront:
    """Answers pixel and link requests itself and passes everything else on."""

    def __init__(
        self,
        app: WSGIApp,
        spool: Spool,
        links: LinkCache,
        trusted_proxies: int = 0,
    ) -> None:
        self.app = app
        self.spool = spool
        self.links = links
        self.trusted_proxies = trusted_proxies

    def alone(self) -> TrackingFront:
        """The same endpoints, answering every other path with a 404.

        For the processes that serve tracking alone (the Procfile's ``track``): one
        thread each, so no page or API request ever holds a pixel up, and no hand-off
        between threads is paid on every hit.
        """
        return TrackingFront(_elsewhere, self.spool, self.links, self.trusted_proxies)

    def __call__(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if path.startswith("//"):
            # A client or proxy that doubles the slash after the host still asked
            # for the pixel: a broken image would lose the open.
            path = "/" + path.lstrip("/")
        if path.startswith(PIXEL_PREFIX):
            return self.pixel(environ, start_response, path[len(PIXEL_PREFIX) :])
        if path.startswith(LINK_PREFIX):
            return self.click(environ, start_response, path[len(LINK_PREFIX) :])
        return self.app(environ, start_response)

    def pixel(
        self, environ: dict[str, Any], start_response: StartResponse, tail: str
    ) -> Iterable[bytes]:
        """Always the image; the hit is noted when the token has the right shape."""
        token = tail.removesuffix(".gif")
        method = environ.get("REQUEST_METHOD", "GET")
        if is_token(token):
            try:
                self.spool.append(self._hit(environ, "open", token, method))
            except Exception:
                # The reader still gets the image; the failure is the operator's to see.
                logger.exception("pixel hit could not be spooled")
        start_response("200 OK", list(_PIXEL_HEADERS))
        return [] if method == "HEAD" else [GIF]

    def click(
        self, environ: dict[str, Any], start_response: StartResponse, token: str
    ) -> Iterable[bytes]:
        """A redirect to exactly the recorded destination, or a page saying why not."""
        if not is_token(token):
            return _page(start_response, "404 Not Found", _NOT_FOUND)
        try:
            location = self.links.location(token)
        except Exception:
            logger.exception("link lookup failed")
            return _page(start_response, "503 Service Unavailable", _UNAVAILABLE)
        if location is None:
            return _page(start_response, "404 Not Found", _NOT_FOUND)
        method = environ.get("REQUEST_METHOD", "GET")
        hit = self._hit(environ, "click", token, method)
        try:
            self.spool.append(hit)
        except Exception:
            logger.exception("click hit could not be spooled")
        start_response(
            "302 Found",
            [
                ("Location", location),
                ("Cache-Control", "no-store"),
                ("Referrer-Policy", "no-referrer"),
                ("Content-Length", "0"),
            ],
        )
        return []

    def _hit(
        self, environ: dict[str, Any], kind: str, token: str, method: str
    ) -> dict[str, Any]:
        headers = {
            name: _text(environ[key][:512])
            for key, name in _KEPT_HEADERS.items()
            if key in environ
        }
        return {
            "id": hit_id(),
            "kind": kind,
            "token": token,
            "at": time.time(),
            "ip": client_ip(environ, self.trusted_proxies),
            "ua": _text(environ.get("HTTP_USER_AGENT", "")[:1024]),
            "method": method,
            "headers": headers,
        }


def _text(value: str) -> str:
    """A header's value as text.

    A WSGI server hands a header over as its bytes read as Latin-1 (PEP 3333); mail
    clients and browsers that send more than ASCII send UTF-8.
    """
    if value.isascii():
        return value
    return value.encode("latin-1", "replace").decode("utf-8", "replace")


_URL_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


def _header_safe(url: str) -> str:
    """The URL as a header value, written as a browser would send it."""
    # Printable ASCII passes unchanged (existing escapes included), so the browser
    # lands on exactly the URL it would have followed from the email.
    if not url.isascii():
        url = _ascii_host(url)
    return quote(url, safe=_URL_SAFE)


def _ascii_host(url: str) -> str:
    """The URL with an international host name in its ASCII form (punycode).

    As browsers write it (UTS 46, nontransitional: "straße" stays itself rather than
    becoming "strasse"), so that clients that cannot read a percent-escaped host
    reach the same one. A host that has no ASCII form is left to be escaped.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # brackets around something that is no IPv6 address
        return url
    # urlsplit lower-cases the scheme; the rest is kept as written.
    scheme = url[: len(parts.scheme)]
    prefix = f"{scheme}://{parts.netloc}"
    if not parts.netloc or not url.startswith(prefix):
        return url
    userinfo, at, host_port = parts.netloc.rpartition("@")
    host, colon, port = host_port.partition(":")
    if host.isascii() or host.startswith("["):
        return url
    ascii_host = _punycode(host)
    if ascii_host is None:
        return url
    netloc = f"{userinfo}{at}{ascii_host}{colon}{port}"
    return f"{scheme}://{netloc}{url[len(prefix) :]}"


# Where IDNA 2003 and browsers part ways: it maps these away ("ß" to "ss").
_DEVIATIONS = frozenset("\u00df\u03c2\u200c\u200d")


def _punycode(host: str) -> str | None:
    """A host name's ASCII form as browsers make it, or None when it has none.

    IDNA 2008 with UTS 46 first. Browsers also take names it refuses (an emoji, an
    underscore), which IDNA 2003 writes as they do unless the name holds one of
    the characters the two treat differently.
    """
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        pass
    if _DEVIATIONS.intersection(host):
        return None
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def _elsewhere(
    environ: dict[str, Any], start_response: StartResponse
) -> Iterable[bytes]:
    return _page(start_response, "404 Not Found", _TRACKING_ONLY)


def _page(start_response: StartResponse, status: str, body: bytes) -> list[bytes]:
    start_response(
        status,
        [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [body]
