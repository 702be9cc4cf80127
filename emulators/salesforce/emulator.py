"""SalesforceEmulator: an in-process HTTPS server with a Python API for tests."""

from __future__ import annotations

import copy
import logging
import shutil
import ssl
import tempfile
import threading
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from ..tls import make_cert
from . import operations as ops
from .app import create_app
from .control import seed_record
from .oauth import token_response
from .state import Call, Config, Fault, State

logger = logging.getLogger(__name__)


class _QuietHandler(WSGIRequestHandler):
    """Send the server's per-request lines to DEBUG instead of stderr."""

    def log(self, type: str, message: str, *args: Any) -> None:
        logger.debug("%s " + message, type, *args)


class SalesforceEmulator:
    """A local Salesforce org served over TLS on loopback."""

    def __init__(
        self,
        client_id: str = "test-client",
        client_secret: str = "test-secret",  # noqa: S107
        rotate_refresh_tokens: bool = True,
        api_version: str = "59.0",
        daily_api_limit: int = 15000,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        state_dir: str | Path | None = None,
        **options: Any,
    ) -> None:
        config = Config(
            client_id=client_id,
            client_secret=client_secret,
            rotate_refresh_tokens=rotate_refresh_tokens,
            api_version=api_version,
            daily_api_limit=daily_api_limit,
            **options,
        )
        self.state = State(config)
        self.host, self.port = host, port
        self._state_dir = Path(state_dir) if state_dir else None
        self._temp_dir: str | None = None
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.ca_path = ""

    @property
    def url(self) -> str:
        """Return the instance URL, e.g. `https://127.0.0.1:8443`."""
        return self.state.config.url

    @property
    def client_id(self) -> str:
        return self.state.config.client_id

    @property
    def client_secret(self) -> str:
        return self.state.config.client_secret

    @property
    def org_id(self) -> str:
        return self.state.org.org_id

    @property
    def user_id(self) -> str:
        """Return the id of the admin user that every authorization is granted as."""
        return self.state.user_id

    def start(self) -> SalesforceEmulator:
        """Generate the certificate and serve in a background thread."""
        folder = self._state_dir or Path(self._make_temp_dir())
        cert, key = make_cert(folder)
        self.ca_path = cert
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        app = create_app(self.state)
        self._server = make_server(
            self.host,
            self.port,
            app,
            threaded=True,
            request_handler=_QuietHandler,
            ssl_context=context,
        )
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.state.config.url = f"https://{host}:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="salesforce-emulator", daemon=True
        )
        self._thread.start()
        logger.info("salesforce emulator started url=%s", self.url)
        return self

    def _make_temp_dir(self) -> str:
        self._temp_dir = tempfile.mkdtemp(prefix="salesforce-emulator-")
        return self._temp_dir

    def serve_forever(self) -> None:
        """Block until the server thread ends (used by the command line)."""
        if self._thread is not None:
            self._thread.join()

    def stop(self) -> None:
        """Stop serving and remove a temporary certificate directory."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def __enter__(self) -> SalesforceEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def seed(self, type_name: str, fields: dict[str, Any]) -> str:
        """Insert a record as test data (read-only fields allowed); return its id."""
        return seed_record(self.state, type_name, fields)

    def records(
        self, type_name: str, include_deleted: bool = False
    ) -> list[dict[str, Any]]:
        """Return copies of the records of one type, in API shape."""
        with self.state.lock:
            rows = self.state.org.of_type(type_name, include_deleted)
            return [ops.to_api(self.state.config.api_version, r) for r in rows]

    def record(self, record_id: str) -> dict[str, Any]:
        """Return a copy of one record, deleted or not; KeyError if unknown."""
        with self.state.lock:
            found = self.state.org.records[record_id]
            return ops.to_api(self.state.config.api_version, found)

    @property
    def calls(self) -> list[Call]:
        """Return the calls answered so far: (method, path, status, at)."""
        with self.state.lock:
            return list(self.state.calls)

    def fault(
        self,
        kind: str,
        times: int = 1,
        path_contains: str | None = None,
        *,
        seconds: float = 2.0,
        status: int = 500,
    ) -> None:
        """Arm a failure for the next `times` matching requests."""
        self.state.arm(Fault(kind, times, path_contains, seconds, status))

    def clear_faults(self) -> None:
        """Disarm every fault."""
        with self.state.lock:
            self.state.faults.clear()

    def expire_access_tokens(self) -> None:
        """Make every access token issued so far answer INVALID_SESSION_ID."""
        with self.state.lock:
            self.state.tokens.expire_access_tokens()

    def issue_tokens(self, scope: str = "api refresh_token") -> dict[str, Any]:
        """Return a token response as if the admin had just authorized the app."""
        with self.state.lock:
            grant_id = self.state.tokens.open_grant(self.user_id, tuple(scope.split()))
            return copy.deepcopy(token_response(self.state, grant_id, True))

    @property
    def api_usage(self) -> int:
        """Return the API calls counted today."""
        return self.state.api_used

    @api_usage.setter
    def api_usage(self, used: int) -> None:
        with self.state.lock:
            self.state.api_used = used

    def reset(self) -> None:
        """Forget all records, tokens, faults and calls."""
        self.state.reset()
