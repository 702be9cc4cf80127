"""A SOQL subset: parse one query and run it over the emulator's records.

Covered: a field list with relationship paths or COUNT(), one object, WHERE with
comparisons, IN / NOT IN, LIKE, AND / OR / NOT and parentheses, ORDER BY with
NULLS FIRST / LAST, LIMIT and OFFSET. String literals take the documented
escape sequences and nothing else, so text quoted by simple_salesforce's
`format_soql` round-trips exactly.

NOTE: subqueries, aggregate functions other than COUNT(), GROUP BY, date
literals such as TODAY or LAST_N_DAYS:n, INCLUDES / EXCLUDES and bind
variables are not understood; such queries fail with MALFORMED_QUERY.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import ids
from .schema import STRING_TYPES, Field, SObject, find_object

Record = dict[str, Any]
Lookup = Callable[[str], Record | None]

KEYWORDS = frozenset(
    {
        *("SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "ORDER"),
        *("BY", "LIMIT", "OFFSET", "ASC", "DESC", "NULLS", "FIRST", "LAST"),
        *("TRUE", "FALSE", "NULL", "GROUP", "HAVING", "INCLUDES", "EXCLUDES"),
    }
)
_ESCAPES = {
    "n": "\n",
    "N": "\n",
    "t": "\t",
    "T": "\t",
    "r": "\r",
    "R": "\r",
    "b": "\b",
    "B": "\b",
    "f": "\f",
    "F": "\f",
    '"': '"',
    "'": "'",
    "\\": "\\",
    "_": "_",
    "%": "%",
}
_LIKE_SPECIAL = frozenset("_%")
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
    |(?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
    |(?P<date>\d{4}-\d{2}-\d{2})(?![\w:])
    |(?P<number>-?\d+(?:\.\d+)?)(?![\w.])
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    |(?P<op>!=|<>|<=|>=|=|<|>)
    |(?P<punct>[(),])
    """,
    re.VERBOSE,
)
_FIELD_HINT = (
    "If you are attempting to use a custom field, be sure to append the '__c'"
    " after the custom field name. Please reference your WSDL or the describe"
    " call for the appropriate names."
)
_RELATIONSHIP_HINT = (
    "If you are attempting to use a custom relationship, be sure to append the"
    " '__r' after the custom relationship name. Please reference your WSDL or"
    " the describe call for the appropriate names."
)


class SoqlError(Exception):
    """A query the API would refuse, with the errorCode it would give."""

    def __init__(self, code: str, message: str, pos: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.pos = pos

    def render(self, query: str) -> str:
        """Format the message the way the API points at the offending column."""
        if self.pos is None:
            return self.message
        caret = " " * self.pos + "^"
        column = self.pos + 1
        return f"\n{query}\n{caret}\nERROR at Row:1:Column:{column}\n{self.message}"


@dataclass(frozen=True)
class Literal:
    """A value written in the query."""

    kind: str
    value: Any
    pieces: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int
    literal: Literal | None = None

    def is_word(self, *words: str) -> bool:
        """Tell whether this token is one of the given keywords."""
        return self.kind == "ident" and self.text.upper() in words


@dataclass(frozen=True)
class Path:
    """A field reference such as `Opportunity.IsClosed`, as written."""

    parts: tuple[str, ...]
    pos: int


@dataclass
class Condition:
    path: Path
    op: str
    values: tuple[Literal, ...]


@dataclass
class Group:
    op: str
    items: list[Any]


@dataclass
class Negation:
    item: Any


@dataclass
class Order:
    path: Path
    descending: bool
    nulls_first: bool


@dataclass
class Query:
    sobject: str
    sobject_pos: int
    fields: list[Path] = field(default_factory=list)
    count: bool = False
    where: Any = None
    order: list[Order] = field(default_factory=list)
    limit: int | None = None
    offset: int = 0


def tokenize(text: str) -> list[Token]:
    """Split a query into tokens, decoding string literals."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        if text[pos] == "'":
            literal, end = _scan_string(text, pos)
            tokens.append(Token("string", text[pos:end], pos, literal))
            pos = end
            continue
        match = _TOKEN.match(text, pos)
        if not match:
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{text[pos]}'", pos)
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, match.group(), pos, _literal(kind, match)))
        pos = match.end()
    tokens.append(Token("eof", "", len(text)))
    return tokens


def _scan_string(text: str, start: int) -> tuple[Literal, int]:
    """Read a quoted literal starting at `start`; return it and the end index."""
    pieces: list[tuple[str, bool]] = []
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if char == "'":
            value = "".join(c for c, _ in pieces)
            return Literal("string", value, tuple(pieces)), pos + 1
        if char == "\\":
            decoded, pos = _escape(text, pos)
            pieces.append((decoded, True))
            continue
        pieces.append((char, False))
        pos += 1
    raise SoqlError("MALFORMED_QUERY", "unterminated string literal", start)


def _escape(text: str, pos: int) -> tuple[str, int]:
    """Decode the escape sequence at `pos`; return the character and next index."""
    code = text[pos + 1 : pos + 2]
    if code in _ESCAPES:
        return _ESCAPES[code], pos + 2
    hex_digits = text[pos + 2 : pos + 6]
    if code == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", hex_digits):
        return chr(int(hex_digits, 16)), pos + 6
    message = (
        f"Invalid string literal '{text[pos : pos + 2]}'. Illegal character"
        f" sequence '\\{code}' in string literal."
    )
    raise SoqlError("MALFORMED_QUERY", message, pos)


def _literal(kind: str, match: re.Match[str]) -> Literal | None:
    """Turn a scanned number, date or keyword token into a literal."""
    text = match.group()
    if kind == "number":
        return Literal("number", float(text) if "." in text else int(text))
    if kind == "date":
        return Literal("date", text)
    if kind == "datetime":
        return Literal("datetime", parse_datetime(text))
    if kind == "ident" and text.upper() in ("TRUE", "FALSE"):
        return Literal("boolean", text.upper() == "TRUE")
    if kind == "ident" and text.upper() == "NULL":
        return Literal("null", None)
    return None


def parse_datetime(text: str) -> datetime.datetime:
    """Parse an ISO 8601 timestamp with an offset, as the API accepts them."""
    value = datetime.datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"timestamp without offset: {text}")
    return value.astimezone(datetime.UTC)


class Parser:
    """Recursive-descent parser over the token list."""

    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.index = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        """Consume the current token and return it."""
        token = self.token
        self.index += 1
        return token

    def expect_word(self, word: str) -> Token:
        """Consume a required keyword."""
        if not self.token.is_word(word):
            self.fail()
        return self.advance()

    def expect_punct(self, char: str) -> None:
        """Consume a required bracket or comma."""
        if self.token.text != char or self.token.kind != "punct":
            self.fail()
        self.advance()

    def fail(self) -> Any:
        """Reject the current token."""
        token = self.token
        shown = token.text or "<EOF>"
        raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{shown}'", token.pos)

    def parse(self) -> Query:
        """Parse a whole SELECT statement."""
        self.expect_word("SELECT")
        paths, count = self.select_list()
        self.expect_word("FROM")
        name = self.advance()
        if name.kind != "ident" or name.text.upper() in KEYWORDS or "." in name.text:
            self.index -= 1
            self.fail()
        query = Query(name.text, name.pos, paths, count)
        self.clauses(query)
        if self.token.kind != "eof":
            self.fail()
        return query

    def select_list(self) -> tuple[list[Path], bool]:
        """Parse the field list or COUNT()."""
        if self.token.is_word("COUNT") and self.tokens[self.index + 1].text == "(":
            self.advance()
            self.expect_punct("(")
            self.expect_punct(")")
            return [], True
        paths = [self.path()]
        while self.token.text == ",":
            self.advance()
            paths.append(self.path())
        return paths, False

    def path(self) -> Path:
        """Parse a field path."""
        token = self.token
        if token.kind != "ident" or token.text.upper() in KEYWORDS:
            self.fail()
        self.advance()
        return Path(tuple(token.text.split(".")), token.pos)

    def clauses(self, query: Query) -> None:
        """Parse the optional WHERE, ORDER BY, LIMIT and OFFSET clauses."""
        if self.token.is_word("WHERE"):
            self.advance()
            query.where = self.expression()
        if self.token.is_word("ORDER"):
            self.advance()
            self.expect_word("BY")
            query.order = self.order_list()
        if self.token.is_word("LIMIT"):
            self.advance()
            query.limit = self.integer()
        if self.token.is_word("OFFSET"):
            self.advance()
            query.offset = self.integer()

    def order_list(self) -> list[Order]:
        """Parse `field [ASC|DESC] [NULLS FIRST|LAST]`, comma-separated."""
        items = [self.order_item()]
        while self.token.text == ",":
            self.advance()
            items.append(self.order_item())
        return items

    def order_item(self) -> Order:
        """Parse one ORDER BY item; nulls sort first ascending, last descending."""
        path = self.path()
        descending = False
        if self.token.is_word("ASC", "DESC"):
            descending = self.advance().text.upper() == "DESC"
        nulls_first = not descending
        if self.token.is_word("NULLS"):
            self.advance()
            if not self.token.is_word("FIRST", "LAST"):
                self.fail()
            nulls_first = self.advance().text.upper() == "FIRST"
        return Order(path, descending, nulls_first)

    def integer(self) -> int:
        """Parse a non-negative whole number."""
        token = self.token
        if token.kind != "number" or not token.text.isdigit():
            self.fail()
        self.advance()
        return int(token.text)

    def expression(self) -> Any:
        """Parse conditions joined by one kind of operator, as SOQL demands."""
        items = [self.condition()]
        joiner: str | None = None
        while self.token.is_word("AND", "OR"):
            word = self.token.text.upper()
            if joiner not in (None, word):
                self.fail()
            joiner = word
            self.advance()
            items.append(self.condition())
        return items[0] if joiner is None else Group(joiner, items)

    def condition(self) -> Any:
        """Parse a bracketed expression, a negation or a single comparison."""
        if self.token.text == "(" and self.token.kind == "punct":
            self.advance()
            inner = self.expression()
            self.expect_punct(")")
            return inner
        if self.token.is_word("NOT"):
            self.advance()
            return Negation(self.condition())
        path = self.path()
        return self.comparison(path)

    def comparison(self, path: Path) -> Condition:
        """Parse the operator and value(s) after a field path."""
        token = self.token
        if token.kind == "op":
            self.advance()
            op = "!=" if token.text == "<>" else token.text
            return Condition(path, op, (self.value(),))
        if token.is_word("LIKE"):
            self.advance()
            return Condition(path, "LIKE", (self.value(),))
        negated = token.is_word("NOT")
        if negated:
            self.advance()
        self.expect_word("IN")
        return Condition(path, "NOT IN" if negated else "IN", self.value_list())

    def value_list(self) -> tuple[Literal, ...]:
        """Parse a bracketed, comma-separated list of values."""
        self.expect_punct("(")
        values = [self.value()]
        while self.token.text == ",":
            self.advance()
            values.append(self.value())
        self.expect_punct(")")
        return tuple(values)

    def value(self) -> Literal:
        """Parse one literal value."""
        token = self.token
        if token.literal is None:
            self.fail()
        self.advance()
        return token.literal  # type: ignore[return-value]


def parse(text: str) -> Query:
    """Parse a SOQL query, raising SoqlError with the API's errorCode."""
    return Parser(text).parse()


class Planner:
    """Check field paths and literal types against the schema."""

    def __init__(self, schema: dict[str, SObject], query: Query) -> None:
        self.schema = schema
        self.query = query
        found = find_object(schema, query.sobject)
        if found is None:
            message = (
                f"sObject type '{query.sobject}' is not supported. If you are"
                " attempting to use a custom object, be sure to append the '__c'"
                " after the entity name. Please reference your WSDL or the"
                " describe call for the appropriate names."
            )
            raise SoqlError("INVALID_TYPE", message, query.sobject_pos)
        self.root = found

    def check(self) -> None:
        """Validate every path and condition in the query."""
        seen: set[str] = set()
        for path in self.query.fields:
            self.leaf(path)
            key = ".".join(path.parts).lower()
            if key in seen:
                message = f"duplicate field selected: {'.'.join(path.parts)}"
                raise SoqlError("MALFORMED_QUERY", message, path.pos)
            seen.add(key)
        for order in self.query.order:
            self.leaf(order.path)
        if self.query.where is not None:
            self.check_node(self.query.where)

    def leaf(self, path: Path) -> Field:
        """Resolve a path to the field at its end, or raise INVALID_FIELD."""
        candidates = [self.root]
        for hop in path.parts[:-1]:
            ref = _first(o.relationship(hop) for o in candidates)
            if ref is None:
                message = (
                    f"Didn't understand relationship '{hop}' in field path."
                    f" {_RELATIONSHIP_HINT}"
                )
                raise SoqlError("INVALID_FIELD", message, path.pos)
            candidates = [self.schema[t] for t in ref.references]
        found = _first(o.field(path.parts[-1]) for o in candidates)
        if found is None:
            message = (
                f"No such column '{path.parts[-1]}' on entity"
                f" '{candidates[0].name}'. {_FIELD_HINT}"
            )
            raise SoqlError("INVALID_FIELD", message, path.pos)
        return found

    def check_node(self, node: Any) -> None:
        """Validate a WHERE node and its children."""
        if isinstance(node, Group):
            for item in node.items:
                self.check_node(item)
        elif isinstance(node, Negation):
            self.check_node(node.item)
        else:
            target = self.leaf(node.path)
            for value in node.values:
                _check_literal(target, node, value)


def _first(items: Iterable[Field | None]) -> Field | None:
    return next((item for item in items if item is not None), None)


def _check_literal(target: Field, cond: Condition, value: Literal) -> None:
    """Refuse a literal whose type does not fit the field, as the API does."""
    if value.kind == "null":
        return
    if target.type in ("id", "reference"):
        if value.kind != "string" or ids.normalise(value.value) is None:
            message = f"invalid ID field: {value.value}"
            raise SoqlError("INVALID_QUERY_FILTER_OPERATOR", message, cond.path.pos)
        return
    wanted = _literal_kind(target)
    if cond.op == "LIKE" and wanted != "string":
        message = f"invalid operator on {target.type} field: {target.name}"
        raise SoqlError("INVALID_FIELD", message, cond.path.pos)
    if value.kind != wanted:
        quoting = "be enclosed" if wanted == "string" else "not be enclosed"
        label = "dateTime" if wanted == "datetime" else wanted
        message = (
            f"value of filter criterion for field '{target.name}' must be of"
            f" type {label} and should {quoting} in quotes"
        )
        raise SoqlError("INVALID_FIELD", message, cond.path.pos)


def _literal_kind(target: Field) -> str:
    if target.type in STRING_TYPES:
        return "string"
    if target.type in ("double", "currency", "int", "percent"):
        return "number"
    return target.type


class Runner:
    """Evaluate a checked query over records reachable through `lookup`."""

    def __init__(self, schema: dict[str, SObject], lookup: Lookup) -> None:
        self.schema = schema
        self.lookup = lookup

    def follow(
        self, record: Record, parts: tuple[str, ...]
    ) -> tuple[Any, Field | None]:
        """Walk a path from a record; return the value and the field it came from."""
        obj = self.schema[record["attributes"]["type"]]
        for hop in parts[:-1]:
            ref = obj.relationship(hop)
            target_id = record.get(ref.name) if ref else None
            target = self.lookup(target_id) if target_id else None
            if target is None:
                return None, None
            record = target
            obj = self.schema[record["attributes"]["type"]]
        leaf = obj.field(parts[-1])
        return (record.get(leaf.name) if leaf else None), leaf

    def matches(self, record: Record, node: Any) -> bool:
        """Tell whether a record satisfies a WHERE node."""
        if isinstance(node, Group):
            results = (self.matches(record, item) for item in node.items)
            return all(results) if node.op == "AND" else any(results)
        if isinstance(node, Negation):
            return not self.matches(record, node.item)
        value, leaf = self.follow(record, node.path.parts)
        return _test(node, value, leaf)

    def sort(self, records: list[Record], order: list[Order]) -> list[Record]:
        """Order records by the ORDER BY items, most significant first."""
        for item in reversed(order):
            pairs = [(self.follow(r, item.path.parts), r) for r in records]
            nulls = [r for (value, _), r in pairs if value is None]
            present = [
                (value, leaf, r) for (value, leaf), r in pairs if value is not None
            ]
            present.sort(key=lambda t: _sort_key(t[0], t[1]), reverse=item.descending)
            ordered = [r for _, _, r in present]
            records = nulls + ordered if item.nulls_first else ordered + nulls
        return records

    def shape(
        self, record: Record, paths: list[Path], url_of: Callable[[Record], str]
    ) -> Record:
        """Build the JSON row for a record with only the selected fields."""
        out: Record = {"attributes": _attributes(record, url_of)}
        for path in paths:
            self._put(out, record, path.parts, url_of)
        return out

    def _put(
        self,
        out: Record,
        record: Record,
        parts: tuple[str, ...],
        url_of: Callable[[Record], str],
    ) -> None:
        """Copy one path's value into the row, nesting relationship objects."""
        obj = self.schema[record["attributes"]["type"]]
        if len(parts) == 1:
            leaf = obj.field(parts[0])
            out[leaf.name if leaf else parts[0]] = (
                record.get(leaf.name) if leaf else None
            )
            return
        ref = obj.relationship(parts[0])
        name = ref.relationship if ref and ref.relationship else parts[0]
        target_id = record.get(ref.name) if ref else None
        target = self.lookup(target_id) if target_id else None
        if target is None:
            out.setdefault(name, None)
            return
        nested = out.get(name) or {"attributes": _attributes(target, url_of)}
        out[name] = nested
        self._put(nested, target, parts[1:], url_of)


def _attributes(record: Record, url_of: Callable[[Record], str]) -> Record:
    return {"type": record["attributes"]["type"], "url": url_of(record)}


def _test(cond: Condition, value: Any, leaf: Field | None) -> bool:
    """Apply one comparison to a field value."""
    if cond.op in ("IN", "NOT IN"):
        hit = any(_equal(value, v, leaf) for v in cond.values)
        return hit if cond.op == "IN" else not hit
    literal = cond.values[0]
    if cond.op == "LIKE":
        return value is not None and _like(literal).fullmatch(str(value)) is not None
    if cond.op == "=":
        return _equal(value, literal, leaf)
    if cond.op == "!=":
        return not _equal(value, literal, leaf)
    if value is None or literal.value is None:
        return False
    left, right = _sort_key(value, leaf), _literal_key(literal, leaf)
    return {
        "<": left < right,
        ">": left > right,
        "<=": left <= right,
        ">=": left >= right,
    }[cond.op]


def _equal(value: Any, literal: Literal, leaf: Field | None) -> bool:
    if value is None or literal.value is None:
        return value is None and literal.value is None
    return bool(_sort_key(value, leaf) == _literal_key(literal, leaf))


def _sort_key(value: Any, leaf: Field | None) -> Any:
    """Make a stored value comparable the way SOQL compares that field type."""
    kind = leaf.type if leaf else "string"
    if kind in ("id", "reference"):
        return ids.normalise(value) or value
    if kind == "datetime":
        return parse_datetime(value)
    if isinstance(value, str) and kind not in ("date",):
        return value.casefold()
    return value


def _literal_key(literal: Literal, leaf: Field | None) -> Any:
    """Make a query literal comparable with `_sort_key` values."""
    kind = leaf.type if leaf else "string"
    if kind in ("id", "reference"):
        return ids.normalise(literal.value) or literal.value
    if isinstance(literal.value, str) and kind != "date":
        return literal.value.casefold()
    return literal.value


def _like(literal: Literal) -> re.Pattern[str]:
    """Compile a LIKE pattern, honouring escaped wildcards; case-insensitive."""
    parts = []
    for char, escaped in literal.pieces:
        if char in _LIKE_SPECIAL and not escaped:
            parts.append(".*" if char == "%" else ".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def execute(
    schema: dict[str, SObject],
    query: Query,
    records: Iterable[Record],
    lookup: Lookup,
) -> list[Record]:
    """Filter, sort and page records; return them unshaped."""
    Planner(schema, query).check()
    runner = Runner(schema, lookup)
    rows = [r for r in records if query.where is None or runner.matches(r, query.where)]
    rows = runner.sort(rows, query.order)
    end = None if query.limit is None else query.offset + query.limit
    return rows[query.offset : end]


def object_name(schema: dict[str, SObject], query: Query) -> str:
    """Return the canonical name of the queried object."""
    return Planner(schema, query).root.name
