"""Checks at the edge of every request, so odd input gets a 4xx, never a 500."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from flask import Flask, abort, request
from marshmallow import Schema, ValidationError, fields
from werkzeug.routing import IntegerConverter, UnicodeConverter

# The largest id a PostgreSQL integer column holds; a larger one can name nothing.
MAX_ID = 2**31 - 1


class IdConverter(IntegerConverter):
    """``<int:...>`` in routes: a number too large to be an id does not match (404)."""

    def __init__(self, map: object, **kwargs: object) -> None:
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, **kwargs)  # type: ignore[arg-type]


class TextConverter(UnicodeConverter):
    """``<...>`` and ``<string:...>`` in routes: a part with a control character
    (NUL above all, which PostgreSQL text cannot hold) names nothing, so it is a 404."""

    def __init__(self, map: object, *args: object, **kwargs: object) -> None:
        super().__init__(map, *args, **kwargs)  # type: ignore[arg-type]
        self.regex = self.regex.replace("[^/]", r"[^/\x00-\x1f\x7f]")


class WholeNumber(fields.Integer):
    """A count of something: 1.5 is a mistake to point out, not to round down."""

    def _validated(self, value: Any) -> int:
        if isinstance(value, float) and not value.is_integer():
            raise self.make_error("invalid")
        return int(super()._validated(value))


class QueryInteger(fields.Integer):
    """A whole number as a query string writes it: ASCII digits, perhaps a minus.

    Python's int() also reads "1_0" as 10 and other scripts' digits ("٣" as 3): a
    link with such a value is a mistake to point out, not a number to guess at.
    """

    def _deserialize(
        self,
        value: Any,
        attr: str | None,
        data: Mapping[str, Any] | None,
        **kwargs: Any,
    ) -> int:
        if isinstance(value, str) and not _DIGITS.fullmatch(value):
            raise self.make_error("invalid")
        return int(super()._deserialize(value, attr, data, **kwargs))


_DIGITS = re.compile(r"-?[0-9]+")


def load_query(schema: Schema) -> dict[str, Any]:
    """The request's query string as ``schema`` reads it, each of its fields once.

    ``?limit=1&limit=abc`` would otherwise be read as its first value, and the
    second, whatever it says, ignored without a word.
    """
    repeated = {
        name: ["Give this parameter once."]
        for name, field in schema.fields.items()
        if len(request.args.getlist(field.data_key or name)) > 1
    }
    if repeated:
        raise ValidationError(repeated)
    loaded: dict[str, Any] = schema.load(request.args)
    return loaded


class JsonBoolean(fields.Boolean):
    """JSON true or false, and nothing else: "no", "yes", 0 or 1 is a mistake."""

    def _deserialize(
        self,
        value: Any,
        attr: str | None,
        data: Mapping[str, Any] | None,
        **kwargs: Any,
    ) -> bool:
        if not isinstance(value, bool):
            raise ValidationError("Must be true or false.")
        return value


def refuse_nul_in_forms() -> None:
    """NUL cannot be stored in PostgreSQL text: say so instead of failing."""
    if request.method in {"POST", "PUT", "PATCH"} and request.mimetype in {
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    }:
        for values in request.form.listvalues():
            if any("\x00" in value for value in values):
                abort(400, "The form holds a NUL character, which cannot be stored.")


def init_app(app: Flask) -> None:
    """Register the checks; call before any blueprint adds its routes."""
    app.url_map.converters["int"] = IdConverter
    app.url_map.converters["default"] = TextConverter
    app.url_map.converters["string"] = TextConverter
    app.before_request(refuse_nul_in_forms)
