"""The JSON API under /api/v1, for mail client add-ons and integrations."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")

from app.api import messages, notifications, openapi, privacy, rules  # noqa: E402, F401
