"""Configuration in layers: safe defaults here, overridden by environment variables."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from typing import Any


class ConfigError(RuntimeError):
    """A setting that stops the start; the message names it and says what to set."""


DEFAULTS: dict[str, Any] = {
    "DATABASE_URL": "sqlite:///var/trailmark.sqlite3",
    "REDIS_URL": "",
    "SECRET_KEY": "",
    "PUBLIC_URL": "http://127.0.0.1:5000",
    "TRUSTED_PROXIES": 0,
    "GEOIP_CITY_DB": "",
    "GEOIP_ASN_DB": "",
    "SPOOL_DIR": "var/spool",
    # Hits are shipped to the queue in batches at most this often (seconds): a job
    # costs the worker some milliseconds besides its hits, so a busy process ships
    # a few large batches a second rather than many small ones.
    "SPOOL_FLUSH_INTERVAL": 0.25,
    # Hits a job stores at most; batches only grow while the workers are busy.
    "SPOOL_BATCH_SIZE": 5000,
    "TOKEN_ENCRYPTION_KEYS": "",
    "SESSION_COOKIE_SECURE": False,
    # How long one live-notification stream stays open before the browser reconnects.
    "STREAM_SECONDS": 25.0,
    # Open streams per web process; keep it well below the process's threads.
    "STREAM_LIMIT": 8,
    # After a notified open of a message (or click of a link), repeats within this
    # many seconds are stored and counted without notifying the sender again; 0
    # notifies every counted event.
    "NOTIFY_REPEAT_SECONDS": 300.0,
    # How often (seconds) a worker starts RQ's scheduler again if it stopped (it does
    # when Redis goes away) and cleans RQ's registries (RQ's own default is 600).
    "WORKER_MAINTENANCE_INTERVAL": 30,
    "SALESFORCE_CLIENT_ID": "",
    "SALESFORCE_CLIENT_SECRET": "",
    "SALESFORCE_LOGIN_URL": "https://login.salesforce.com",
    "SALESFORCE_CA_BUNDLE": "",
    # Read timeout (seconds) of every Salesforce call; connecting gets at most 5.
    "SALESFORCE_TIMEOUT": 30.0,
    # How often (seconds) a worker makes sure one CRM sweep is queued.
    "CRM_SWEEP_INTERVAL": 60.0,
    # How long (seconds) a create whose answer was lost may still land at the CRM;
    # it is looked for, not repeated, until then. Keep it above every read timeout.
    "CRM_IN_DOUBT_SECONDS": 120.0,
    "HUBSPOT_CLIENT_ID": "",
    "HUBSPOT_CLIENT_SECRET": "",
    "HUBSPOT_API_URL": "https://api.hubapi.com",
    "HUBSPOT_AUTHORIZE_URL": "https://app.hubspot.com/oauth/authorize",
    # Read timeout (seconds) of every HubSpot call; connecting gets at most 5.
    "HUBSPOT_TIMEOUT": 20.0,
}

_INTS = {
    "TRUSTED_PROXIES",
    "SPOOL_BATCH_SIZE",
    "STREAM_LIMIT",
    "WORKER_MAINTENANCE_INTERVAL",
}
_FLOATS = {
    "SPOOL_FLUSH_INTERVAL",
    "SALESFORCE_TIMEOUT",
    "CRM_SWEEP_INTERVAL",
    "CRM_IN_DOUBT_SECONDS",
    "HUBSPOT_TIMEOUT",
    "STREAM_SECONDS",
    "NOTIFY_REPEAT_SECONDS",
}
# The least each number may be, and whether that least is allowed itself. A batch of
# no hits or a wait of no time would leave hits in the spool for ever; a negative
# count of proxies would read a client's address from the wrong end of the header.
_LEAST: dict[str, tuple[float, bool]] = {
    "TRUSTED_PROXIES": (0, True),
    "SPOOL_BATCH_SIZE": (1, True),
    "STREAM_LIMIT": (0, True),
    "WORKER_MAINTENANCE_INTERVAL": (1, True),
    "SPOOL_FLUSH_INTERVAL": (0, False),
    "SALESFORCE_TIMEOUT": (0, False),
    "CRM_SWEEP_INTERVAL": (0, False),
    "CRM_IN_DOUBT_SECONDS": (0, True),
    "HUBSPOT_TIMEOUT": (0, False),
    "STREAM_SECONDS": (0, False),
    "NOTIFY_REPEAT_SECONDS": (0, True),
}
_BOOLS = {"SESSION_COOKIE_SECURE"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _coerce(key: str, raw: str) -> Any:
    try:
        if key in _INTS:
            return int(raw)
        if key in _FLOATS:
            return float(raw)
    except ValueError:
        raise ConfigError(f"{key} must be a number, got {raw!r}") from None
    if key in _BOOLS:
        value = raw.strip().lower()
        if value not in _TRUE | _FALSE:
            raise ConfigError(f"{key} must be on or off (1 or 0), got {raw!r}")
        return value in _TRUE
    return raw


def load(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return the settings: defaults, then any environment variable of the same name."""
    env = os.environ if environ is None else environ
    settings = dict(DEFAULTS)
    for key in DEFAULTS:
        if key in env:
            settings[key] = _coerce(key, env[key])
    settings["PUBLIC_URL"] = str(settings["PUBLIC_URL"]).rstrip("/")
    check_numbers(settings)
    return settings


def log_level(text: str) -> str:
    """A log level's name, or ConfigError naming the ones there are."""
    level = text.strip().upper()
    if not isinstance(logging.getLevelName(level), int):
        raise ConfigError(
            f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {text!r}"
        )
    return level


def configure_logging(level: str | None = None) -> None:
    """Log to stderr at ``level``, else at LOG_LEVEL, else at INFO."""
    logging.basicConfig(
        level=log_level(level or os.environ.get("LOG_LEVEL") or "INFO"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def check_databases(settings: Mapping[str, Any]) -> None:
    """Refuse a GeoIP database path that cannot be read: every hit would be stored
    without a place, with a warning in the log at most."""
    for key in ("GEOIP_CITY_DB", "GEOIP_ASN_DB"):
        path = str(settings.get(key) or "")
        if path and not os.access(path, os.R_OK):
            raise ConfigError(f"{key} cannot be read: {path}")


def check_numbers(settings: Mapping[str, Any]) -> None:
    """Refuse a number setting that cannot work, naming it and what it may be."""
    for key, (least, allowed) in _LEAST.items():
        value = settings.get(key, DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if (
            not math.isfinite(value)
            or value < least
            or (value == least and not allowed)
        ):
            bound = f"{least:g} or more" if allowed else f"more than {least:g}"
            raise ConfigError(f"{key} must be {bound}, got {value!r}")
