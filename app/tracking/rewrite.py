"""Add the open pixel and tracked links to an outgoing message, changing nothing else.

The HTML is tokenized, never reserialised: only the bytes of rewritten attribute
values change, and the pixel is inserted before the closing body tag. Template
placeholders, Outlook conditional comments, VML, entities, quoting and whitespace
reach the recipient exactly as the sender wrote them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html import escape, unescape
from html.entities import html5 as _ENTITIES
from html.parser import HTMLParser
from urllib.parse import SplitResult, urljoin, urlsplit

PIXEL_TAG = (
    '<img src="{src}" width="1" height="1" border="0" alt="" '
    'style="display:block;width:1px;height:1px;border:0;outline:none;" />'
)

_LINK_TAGS = frozenset({"a", "area"})
_WEB_SCHEMES = frozenset({"http", "https"})
_ASCII_WHITESPACE = " \t\n\r\f"
_C0_AND_SPACE = "".join(chr(c) for c in range(0x21))
_TAB_AND_NEWLINE = str.maketrans("", "", "\t\n\r")
# Merge tags of the common template languages and sending platforms; a link that
# still holds one is filled in later, so tracking it would freeze the placeholder.
_PLACEHOLDER_MARKERS = (
    "{{",
    "}}",
    "{%",
    "%}",
    "*|",
    "|*",
    "%%",
    "[[",
    "]]",
    "<%",
    "%>",
    "${",
    "%7b%7b",
    "%7d%7d",
)
_CONDITIONAL_COMMENT = re.compile(r"\[if\b", re.IGNORECASE)
_TAG_NAME = re.compile(r"<[a-zA-Z][^\t\n\r\f />\x00]*(?:\s|/(?!>))*")
_ATTRIBUTE = re.compile(
    r"(?P<name>[^\s/>][^\s/=>]*)"
    r"""(?:\s*=+\s*(?P<value>"[^"]*"|'[^']*'|(?!["'])[^\s>]*))?"""
    r"(?:\s|/(?!>))*"
)
# NOTE: markup left open this many times stops the scan; later links stay as they
# are and the pixel goes at the end. Each restart rescans the rest of the text.
_MAX_RESUMES = 32
_UNQUOTED_UNSAFE = re.compile(r"[\s\"'=<>`]")
_TEXT_URL = re.compile(r"\bhttps?://[^\s<>\"]+", re.IGNORECASE)
# Sentence punctuation, including the ideographic and curly forms, never ends a URL.
_TRAILING_PUNCTUATION = frozenset(
    ".,;:!?'\"*\u2026\u3002\u3001\uff0c\u201d\u2019\u00bb\u203a"
)
_CLOSERS = {")": "(", "]": "[", "}": "{"}


@dataclass(frozen=True)
class TrackedLink:
    """A destination found in the message and the tracked URL that replaced it."""

    url: str
    tracked_url: str


class TooManyLinks(ValueError):
    """A message holds more distinct destinations than may be tracked in one."""

    def __init__(self, limit: int, offset: int) -> None:
        super().__init__(f"more than {limit} distinct links, passed at offset {offset}")
        self.limit = limit
        # Where in the HTML or text the destination over the limit was found.
        self.offset = offset


@dataclass(frozen=True)
class Rewritten:
    """The message as it will be sent, and the links tracked in it."""

    html: str | None
    text: str | None
    links: list[TrackedLink]


def rewrite(
    html: str | None,
    text: str | None,
    *,
    pixel_url: str | None,
    link_for: Callable[[str], str] | None,
    rewrite_text_links: bool = False,
    max_links: int | None = None,
) -> Rewritten:
    """Return the message with its links tracked and the open pixel added.

    With ``max_links``, raise ``TooManyLinks`` as soon as more distinct destinations
    than that are found, without reading the rest of the message.
    """
    book = _LinkBook(link_for, max_links) if link_for is not None else None
    new_html = None if html is None else _rewrite_html(html, pixel_url, book)
    new_text = text
    if text is not None and book is not None and rewrite_text_links:
        new_text = _rewrite_text(text, book)
    return Rewritten(new_html, new_text, book.links() if book else [])


class _LinkBook:
    """Asks for one tracked URL per distinct destination and keeps first-seen order."""

    def __init__(self, link_for: Callable[[str], str], limit: int | None) -> None:
        self._link_for = link_for
        self.limit = limit
        self._tracked: dict[str, str] = {}

    def tracked(self, destination: str, offset: int) -> str:
        """Return the tracked URL for a destination, asking for it only once."""
        if destination not in self._tracked:
            if self.limit is not None and len(self._tracked) >= self.limit:
                raise TooManyLinks(self.limit, offset)
            self._tracked[destination] = self._link_for(destination)
        return self._tracked[destination]

    def links(self) -> list[TrackedLink]:
        """Return every destination seen so far, in the order first seen."""
        return [TrackedLink(url, tracked) for url, tracked in self._tracked.items()]


# -- HTML ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Href:
    """Where one href value sits in the source, without its quotes."""

    start: int
    end: int
    quote: str

    def raw(self, source: str) -> str:
        """Return the value exactly as written."""
        return source[self.start : self.end]


@dataclass
class _Found:
    """What the tokenizer saw that a rewrite needs to know about."""

    hrefs: list[_Href] = field(default_factory=list)
    bases: list[str] = field(default_factory=list)
    body_ends: list[int] = field(default_factory=list)
    limit: int | None = None
    absolute: set[str] = field(default_factory=set)

    def add_href(self, href: _Href, value: str) -> None:
        """Record an href; stop the scan once too many destinations are certain."""
        self.hrefs.append(href)
        if self.limit is None:
            return
        # An absolute link leads where it says whatever base comes later, so these
        # can be counted before the scan ends; relative ones wait for the base.
        destination = _destination(unescape_attribute(value), None)
        if destination is not None:
            self.absolute.add(destination)
            if len(self.absolute) > self.limit:
                raise TooManyLinks(self.limit, href.start)


def _rewrite_html(source: str, pixel_url: str | None, book: _LinkBook | None) -> str:
    """Return the HTML with tracked hrefs and the pixel spliced in."""
    found = _Found(limit=None if book is None else book.limit)
    _scan(source, 0, found, top_level=True)
    edits = [] if book is None else list(_href_edits(source, found, book))
    if pixel_url is not None:
        at = found.body_ends[-1] if found.body_ends else len(source)
        edits.append((at, at, PIXEL_TAG.format(src=escape(pixel_url))))
    return _splice(source, edits)


def _href_edits(
    source: str, found: _Found, book: _LinkBook
) -> Iterator[tuple[int, int, str]]:
    """Yield a replacement for every href that leads to a trackable destination."""
    base = _base_url(found.bases)
    for href in found.hrefs:
        destination = _destination(unescape_attribute(href.raw(source)), base)
        if destination is not None:
            tracked = book.tracked(destination, href.start)
            yield href.start, href.end, _attribute_value(tracked, href.quote)


_REFERENCE = re.compile(r"&(?:#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[A-Za-z][A-Za-z0-9]*;?)")


def unescape_attribute(value: str) -> str:
    """Decode character references in an attribute value as a browser does.

    Unlike text, an attribute keeps a reference without its semicolon as written when
    an ``=`` or a letter or digit follows it, so ``?a=1&region=us&copy=5`` stays that
    query (``html.unescape`` would read ``&reg`` and ``&copy`` as ® and ©).
    """

    def decode(match: re.Match[str]) -> str:
        reference = match.group()
        if reference[1] == "#":
            return unescape(reference)
        name = reference[1:]
        if name.endswith(";") and name in _ENTITIES:
            return _ENTITIES[name]
        for end in range(len(name.rstrip(";")), 0, -1):
            if name[:end] in _ENTITIES:  # a legacy name, valid without ";"
                after = name[end : end + 1] or value[match.end() : match.end() + 1]
                if after == "=" or (after.isascii() and after.isalnum()):
                    return reference
                return _ENTITIES[name[:end]] + name[end:]
        return reference

    return _REFERENCE.sub(decode, value)


def _attribute_value(url: str, quote: str) -> str:
    """Return a URL escaped for the attribute it replaces, keeping its quoting."""
    value = escape(url)
    if not quote and _UNQUOTED_UNSAFE.search(value):
        return f'"{value}"'
    return value


def _splice(source: str, edits: list[tuple[int, int, str]]) -> str:
    """Return the source with each (start, end) span replaced by its new text."""
    parts, last = [], 0
    for start, end, new in sorted(edits, key=lambda edit: edit[0]):
        parts += [source[last:start], new]
        last = end
    parts.append(source[last:])
    return "".join(parts)


def _scan(text: str, origin: int, found: _Found, *, top_level: bool) -> None:
    """Tokenize text, recording what it holds at offsets shifted by origin."""
    for _ in range(_MAX_RESUMES):
        resume = _Scanner(text, origin, found, top_level=top_level).run()
        if resume is None:
            return
        text, origin = text[resume:], origin + resume


class _Scanner(HTMLParser):
    """Finds hrefs, base URLs and closing body tags, with their exact offsets."""

    def __init__(
        self, text: str, origin: int, found: _Found, *, top_level: bool
    ) -> None:
        super().__init__(convert_charrefs=True)
        self._text = text
        self._origin = origin
        self._found = found
        self._top_level = top_level
        self._line_starts = [0, *(m.end() for m in re.finditer("\n", text))]

    def run(self) -> int | None:
        """Tokenize the text; return where to go on when a markup is left open."""
        self.feed(self._text)
        opened = len(self._text) - len(self.rawdata)
        if not self.rawdata.startswith("<"):
            self.close()
            return None
        # The stdlib's close() rescans to the end once per '<' left, which is
        # quadratic. An unclosed comment, or markup with no '>' after it, runs to
        # the end for a browser too; anything else is skipped up to its '>'.
        closing = self._text.find(">", opened + 1)
        if self.rawdata.startswith("<!--") or closing < 0:
            return None
        return closing + 1

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Record the href of a link or VML shape, or the document's base URL."""
        if tag in _LINK_TAGS or tag.startswith("v:"):
            self._record_href(attrs)
        elif tag == "base" and self._top_level:
            self._found.bases += [
                value or "" for name, value in attrs if name == "href"
            ]

    def handle_endtag(self, tag: str) -> None:
        """Record where a closing body tag starts."""
        at = self._offset()
        # A self-closing <body/> also reports an end tag, at its start tag.
        if tag == "body" and self._top_level and self._text.startswith("</", at):
            self._found.body_ends.append(self._origin + at)

    def handle_comment(self, data: str) -> None:
        """Look inside Outlook conditional comments, where VML buttons live."""
        at = self._offset()
        if _CONDITIONAL_COMMENT.match(data) and self._text.startswith("<!--", at):
            _scan(data, self._origin + at + 4, self._found, top_level=False)

    def parse_marked_section(self, i: int, report: bool = True) -> int:
        """Treat a marked section the tokenizer rejects as a bogus comment."""
        try:
            return super().parse_marked_section(i, report)
        except AssertionError:
            # Browsers read an unknown <![...> as a comment up to the next '>'.
            return self.parse_bogus_comment(i, report)

    def _offset(self) -> int:
        """Return the offset in the fed text of the construct being handled."""
        line, column = self.getpos()
        return self._line_starts[line - 1] + column

    def _record_href(self, attrs: list[tuple[str, str | None]]) -> None:
        """Record the first href of the current start tag, if it has a value."""
        at, tag_text = self._offset(), self.get_starttag_text()
        if tag_text is None or not self._text.startswith(tag_text, at):
            return
        href = _first_href(tag_text, attrs)
        if href is not None:
            shift = self._origin + at
            self._found.add_href(
                _Href(href.start + shift, href.end + shift, href.quote),
                href.raw(tag_text),
            )


def _first_href(tag_text: str, attrs: list[tuple[str, str | None]]) -> _Href | None:
    """Return where the first href value sits in a start tag, relative to it."""
    spans = list(_attribute_spans(tag_text))
    # Only rewrite when our reading of the tag agrees with the tokenizer's.
    if [(name, value) for name, value, _ in spans] != attrs:
        return None
    for name, value, href in spans:
        if name == "href":
            return href if value is not None else None
    return None


def _attribute_spans(tag_text: str) -> Iterator[tuple[str, str | None, _Href]]:
    """Yield each attribute's name, decoded value and value span in a start tag."""
    head = _TAG_NAME.match(tag_text)
    position = head.end() if head else len(tag_text)
    while match := _ATTRIBUTE.match(tag_text, position):
        yield _attribute(match)
        position = match.end()


def _attribute(match: re.Match[str]) -> tuple[str, str | None, _Href]:
    """Return an attribute's name, decoded value and where its value sits."""
    raw, (start, end) = match["value"], match.span("value")
    if raw is None:
        return match["name"].lower(), None, _Href(start, end, "")
    quote = raw[0] if raw[:1] in ("'", '"') else ""
    if quote:
        start, end = start + 1, end - 1
    return (
        match["name"].lower(),
        # Decoded as the tokenizer decodes, only to check that both read the tag alike.
        unescape(raw[len(quote) : len(raw) - len(quote)]),
        _Href(start, end, quote),
    )


def _base_url(bases: list[str]) -> str | None:
    """Return the document's base URL: the first base href, when it is absolute."""
    if not bases:
        return None
    base = bases[0].strip(_ASCII_WHITESPACE)
    return base if _is_web_url(base) else None


def _destination(url: str, base: str | None) -> str | None:
    """Return where a decoded href leads, or None when it is not ours to track."""
    # As the URL standard has browsers do: drop leading and trailing C0 controls and
    # spaces, and every tab and newline within.
    url = url.strip(_C0_AND_SPACE).translate(_TAB_AND_NEWLINE)
    if not url or url.startswith("#") or _is_placeholder(url):
        return None
    parts = _split(url)
    if parts is not None and not parts.scheme and base is not None:
        url = _join(base, url)
    return url if _is_web_url(url) else None


# -- URLs ---------------------------------------------------------------------


def _is_placeholder(url: str) -> bool:
    """Tell whether a URL still holds template syntax to be filled in later."""
    lowered = url.lower()
    return any(marker in lowered for marker in _PLACEHOLDER_MARKERS)


def _split(url: str) -> SplitResult | None:
    """Split a URL, or return None when it cannot be parsed."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - reading it validates the port
    except ValueError:
        return None
    return parts


def _join(base: str, url: str) -> str:
    """Resolve a relative URL against an http(s) base, as a browser would."""
    # For http(s) the URL standard reads a backslash as a slash, and any run of
    # slashes before a host as two; urljoin does neither ("\\evil.test/p" would
    # stay on the base's host, where the browser leaves for evil.test).
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    url = url[:cut].replace("\\", "/") + url[cut:]  # the query and fragment stay
    if url.startswith("//"):
        url = "//" + url.lstrip("/")
        if url == "//":
            return ""  # no host: nothing a browser could follow
    try:
        return urljoin(base, url)
    except ValueError:
        return url


def _is_web_url(url: str) -> bool:
    """Tell whether a URL is absolute http(s) with a host."""
    parts = _split(url)
    if parts is None or parts.scheme.lower() not in _WEB_SCHEMES:
        return False
    host = parts.hostname or ""
    return bool(host) and not any(char.isspace() for char in host)


# -- Plain text ---------------------------------------------------------------


def _rewrite_text(text: str, book: _LinkBook) -> str:
    """Return plain text with its bare http(s) URLs tracked."""
    return _TEXT_URL.sub(lambda match: _text_replacement(match, book), text)


def _text_replacement(match: re.Match[str], book: _LinkBook) -> str:
    """Return a matched URL tracked, with any trailing punctuation left outside."""
    candidate = match[0]
    url = _trim_url(candidate)
    if _is_placeholder(url) or not _is_web_url(url):
        return candidate
    return book.tracked(url, match.start()) + candidate[len(url) :]


def _trim_url(url: str) -> str:
    """Drop the sentence punctuation and unbalanced closing brackets a URL ends with."""
    while url:
        last = url[-1]
        closer = last in _CLOSERS and url.count(last) > url.count(_CLOSERS[last])
        if last not in _TRAILING_PUNCTUATION and not closer:
            break
        url = url[:-1]
    return url
