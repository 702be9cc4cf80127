"""Server-rendered pages: sign in, the inbox, a message's timeline, settings."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("pages", __name__)

from app.pages import integrations, privacy, rules, views  # noqa: E402, F401
