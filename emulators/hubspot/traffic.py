"""Per-portal rolling rate limits, the request log, and injected faults."""

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any

FAULT_KINDS = frozenset(
    {
        "expired_token",
        "refresh_refused",
        "rate_limit",
        "server_error",
        "slow",
        "drop_after_commit",
    }
)


class RateLimiter:
    """A rolling window of `limit` requests per `window_s` for each portal."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self.lock = threading.Lock()
        self.seen: dict[int, collections.deque[float]] = {}

    def admit(self, portal: int) -> tuple[bool, int]:
        """Count one request if the budget allows; return (admitted, remaining)."""
        now = time.monotonic()
        with self.lock:
            window = self.seen.setdefault(portal, collections.deque())
            while window and window[0] <= now - self.window_s:
                window.popleft()
            # NOTE: refused requests are not counted against the window, so a
            # client hammering through 429s recovers once the window rolls.
            if len(window) >= self.limit:
                return False, 0
            window.append(now)
            return True, self.limit - len(window)

    def headers(self, remaining: int) -> dict[str, str]:
        """Return the rate-limit headers HubSpot puts on every API answer."""
        return {
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self.window_s * 1000)),
            "X-HubSpot-RateLimit-Max": str(self.limit),
            "X-HubSpot-RateLimit-Remaining": str(remaining),
        }

    def reset(self) -> None:
        """Start every portal's window afresh."""
        with self.lock:
            self.seen.clear()


@dataclass
class Fault:
    """A failure to inject into the next `times` matching requests."""

    kind: str
    times: int
    path_contains: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def matches(self, kind: str, path: str) -> bool:
        """Tell whether this fault applies to a request at this point."""
        if self.kind != kind or self.times <= 0:
            return False
        return self.path_contains is None or self.path_contains in path


class FaultBook:
    """Thread-safe queue of pending faults, consumed as they fire."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: list[Fault] = []

    def add(
        self, kind: str, times: int, path_contains: str | None, options: dict[str, Any]
    ) -> None:
        """Arm a fault."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; use one of {FAULT_KINDS}")
        with self.lock:
            self.pending.append(Fault(kind, times, path_contains, dict(options)))

    def take(self, kind: str, path: str) -> Fault | None:
        """Consume one firing of the first armed fault of this kind for the path."""
        with self.lock:
            for fault in self.pending:
                if fault.matches(kind, path):
                    fault.times -= 1
                    return fault
        return None

    def clear(self) -> None:
        """Disarm every fault."""
        with self.lock:
            self.pending.clear()


class RequestLog:
    """Thread-safe append-only log of answered requests."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: list[tuple[float, str, str, int, int | None]] = []

    def add(self, method: str, path: str, status: int, portal: int | None) -> None:
        """Record a request; status 0 means the connection was dropped."""
        with self.lock:
            self.entries.append((time.monotonic(), method, path, status, portal))

    def copy(self) -> list[tuple[float, str, str, int, int | None]]:
        """Return a copy of the log."""
        with self.lock:
            return list(self.entries)

    def clear(self) -> None:
        """Empty the log."""
        with self.lock:
            self.entries.clear()
