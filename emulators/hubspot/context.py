"""The portal and credentials behind the request being served."""

from flask import current_app, g

from .portal import Portal
from .tokens import AccessToken


def portal() -> Portal:
    """Return the portal the current request is served from."""
    found: Portal = current_app.extensions["hubspot_portal"]
    return found


def bearer() -> AccessToken:
    """Return the access token the current CRM request carries."""
    token: AccessToken = g.token
    return token
