"""Server-rendered pages: sign in, the inbox, a message's timeline, settings."""

from __future__ import annotations

from flask import Blueprint, Response

bp = Blueprint("pages", __name__)

# Only frame-ancestors: a script-src or style-src policy would also block the inline
# handlers and styles the pages use (the rules page confirms a delete inline).
_NO_FRAMING = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
}


@bp.after_app_request
def _refuse_framing(response: Response) -> Response:
    """Keep every HTML page out of other sites' frames, where clicks can be stolen."""
    if response.mimetype == "text/html":
        for name, value in _NO_FRAMING.items():
            response.headers.setdefault(name, value)
    return response


from app.pages import integrations, privacy, rules, views  # noqa: E402, F401
