"""A local HubSpot, served over plain HTTP on loopback, for tests and demos."""

import logging
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Self
from urllib.parse import urlencode

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .app import create_app
from .portal import AppSettings, Portal, seed_demo
from .schema import DEFAULT_SCOPES, OBJECT_TYPES

logger = logging.getLogger(__name__)


class _QuietHandler(WSGIRequestHandler):
    """Request handler that logs each request at DEBUG rather than INFO."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        logger.debug("request line=%r status=%s", self.requestline, code)


class HubSpotEmulator:
    """HubSpot's OAuth pages, token endpoints and CRM API for one portal.

    Point the real client at it with `HubSpot(access_token=t, host=emu.url)`:
    the client wants the scheme and no trailing slash.
    """

    def __init__(
        self,
        client_id: str = "hs-client",
        client_secret: str = "hs-secret",  # noqa: S107 - a fixed demo credential
        hub_id: int = 4242,
        rate_limit: int = 110,
        rate_window_s: float = 10,
        token_lifetime_s: int = 1800,
        redirect_uris: Sequence[str] = (),
        user_email: str = "admin@example.com",
        user_id: int = 7001,
    ) -> None:
        settings = AppSettings(
            client_id, client_secret, hub_id, tuple(redirect_uris), user_email, user_id
        )
        self.portal = Portal(settings, rate_limit, rate_window_s, token_lifetime_s)
        self.client_id = client_id
        self.client_secret = client_secret
        self.hub_id = hub_id
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self, port: int = 0, host: str = "127.0.0.1") -> Self:
        """Serve on loopback in a background thread; port 0 picks a free one."""
        app = create_app(self.portal)
        self._server = make_server(
            host, port, app, threaded=True, request_handler=_QuietHandler
        )
        server = self._server
        # A short poll keeps stop() quick in test teardown.
        self._thread = threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.05),
            name="hubspot-emulator",
            daemon=True,
        )
        self._thread.start()
        logger.info("hubspot emulator started url=%s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        logger.info("hubspot emulator stopped")

    def __enter__(self) -> Self:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Return the base URL, e.g. http://127.0.0.1:8090, for `host=`."""
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return f"http://{self._server.host}:{self._server.port}"

    def authorize_url(
        self, redirect_uri: str, scopes: Iterable[str], state: str = ""
    ) -> str:
        """Return the consent page URL an app would send an admin to."""
        query = {
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(scopes),
        }
        if state:
            query["state"] = state
        return f"{self.url}/oauth/authorize?{urlencode(query)}"

    def seed_owner(
        self, email: str, first_name: str, last_name: str, user_id: int | None = None
    ) -> str:
        """Add an owner; return its id."""
        return self.portal.seed_owner(email, first_name, last_name, user_id)

    def seed_contact(
        self,
        email: str,
        firstname: str | None = None,
        lastname: str | None = None,
        owner_id: str | None = None,
        **properties: str,
    ) -> str:
        """Add a contact; return its id."""
        return self.portal.seed_contact(
            email, firstname, lastname, owner_id, **properties
        )

    def seed_deal(
        self,
        name: str,
        stage: str = "appointmentscheduled",
        closed: bool = False,
        amount: float | str | None = None,
        contact_ids: Sequence[str] = (),
        last_modified: datetime | str | None = None,
    ) -> str:
        """Add a deal associated both ways (3 and 4) with the contacts; return id."""
        return self.portal.seed_deal(
            name, stage, closed, amount, contact_ids, last_modified
        )

    def seed_demo(self) -> dict[str, list[str]]:
        """Seed a small team and pipeline for local demos."""
        return seed_demo(self.portal)

    def issue_token(self, scopes: Iterable[str] = DEFAULT_SCOPES) -> dict[str, Any]:
        """Issue tokens without the consent page; returns the v1 token response."""
        grant = self.portal.grant(sorted(scopes))
        return self.portal.tokens.issue_direct(grant)

    def objects(self, type_name: str) -> list[dict[str, Any]]:
        """Return copies of every record of a type, with `associations`."""
        if type_name not in OBJECT_TYPES:
            raise ValueError(f"unknown object type {type_name!r}")
        return self.portal.store.snapshot(type_name)

    def associations(self, from_type: str, from_id: str) -> list[tuple[str, str, int]]:
        """Return one object's associations as (to type, to id, type id)."""
        return self.portal.store.links_from(from_type, str(from_id))

    @property
    def requests(self) -> list[tuple[float, str, str, int, int | None]]:
        """Return (monotonic time, method, path, status, portal) per request.

        Status 0 marks a request whose connection was dropped on purpose.
        """
        return self.portal.log.copy()

    def fault(
        self,
        kind: str,
        times: int = 1,
        path_contains: str | None = None,
        **options: Any,
    ) -> None:
        """Inject a failure into the next `times` matching requests.

        Kinds: expired_token, refresh_refused (variant="invalid_grant" for the
        RFC 6749 body), rate_limit (policy=...), server_error (status=500|502),
        slow (seconds=...), drop_after_commit.
        """
        self.portal.faults.add(kind, times, path_contains, options)

    def clear_faults(self) -> None:
        """Disarm every pending fault."""
        self.portal.faults.clear()

    def expire_tokens(self) -> None:
        """Make every issued access token expired."""
        self.portal.tokens.expire_all()

    def reset(self) -> None:
        """Forget records, tokens, faults, rate windows and the request log."""
        self.portal.reset()
