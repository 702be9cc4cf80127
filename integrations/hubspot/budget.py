"""A request budget per HubSpot portal, shared by every worker through Redis.

HubSpot allows a public app 110 requests per rolling 10 seconds in each portal it is
installed in. (CRM search has a lower limit of its own; the integration never calls
it.) Every call takes a slot
from a sliding window kept in a Redis sorted set before it is made, so all workers
together stay under the limit instead of finding it through 429s. The window is a
little longer than HubSpot's and holds fewer slots, so network jitter between taking
a slot and HubSpot counting the request cannot push a window over.

The rate-limit headers of each answer are read back: ``Max`` (less the margin) and
``Interval-Milliseconds`` size the budget, and a ``Remaining`` near zero (another
process of ours, a second install of the app) holds the portal for one interval. A
429 holds it for as long as HubSpot asked.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import redis

logger = logging.getLogger(__name__)

PUBLIC_APP_LIMIT = 110
MARGIN = 10
WINDOW_S = 10.0
# Added to HubSpot's window: more than the spread of request latencies.
GUARD_S = 0.5
# Longest a call waits for a slot; beyond it the caller is told it is rate limited.
MAX_WAIT_S = 15.0

# KEYS: window, hold, limit, length. ARGV: default length ms, default limit, member.
# Returns 0 when a slot was taken, else the milliseconds to wait.
_TAKE = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local held = redis.call('PTTL', KEYS[2])
if held > 0 then return held end
local window = tonumber(redis.call('GET', KEYS[4]) or ARGV[1])
local limit = tonumber(redis.call('GET', KEYS[3]) or ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], ms, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - ms)
"""


class BudgetExhausted(Exception):
    """No slot came free within the longest wait; retry after ``wait_s``."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"portal request budget used up; retry in {wait_s:.1f}s")
        self.wait_s = wait_s


class Budget:
    """The shared request budget of one portal."""

    def __init__(
        self,
        connection: redis.Redis,
        portal: str,
        limit: int = PUBLIC_APP_LIMIT - MARGIN,
        window_s: float = WINDOW_S,
    ) -> None:
        self._redis = connection
        self._take = connection.register_script(_TAKE)
        prefix = f"trailmark:hubspot:{portal}"
        self._keys = [f"{prefix}:{k}" for k in ("window", "hold", "limit", "length")]
        self.limit = limit
        self.window_ms = int((window_s + GUARD_S) * 1000)

    def acquire(self, max_wait_s: float = MAX_WAIT_S) -> None:
        """Take one slot, waiting for it; BudgetExhausted after ``max_wait_s``."""
        deadline = time.monotonic() + max_wait_s
        while True:
            wait_ms = int(self._take(self._keys, self._args()))
            if wait_ms == 0:
                return
            left = deadline - time.monotonic()
            if wait_ms / 1000 > left:
                raise BudgetExhausted(wait_ms / 1000)
            logger.debug("waiting for budget key=%s ms=%d", self._keys[0], wait_ms)
            time.sleep(min(wait_ms / 1000, 1.0) + 0.005)

    def _args(self) -> list[Any]:
        return [self.window_ms, self.limit, uuid.uuid4().hex]

    def observe(self, headers: Mapping[str, str] | None) -> None:
        """Adjust to the X-HubSpot-RateLimit-* headers of an answer."""
        if not headers:
            return
        most = _int(headers.get("X-HubSpot-RateLimit-Max"))
        left = _int(headers.get("X-HubSpot-RateLimit-Remaining"))
        interval = _int(headers.get("X-HubSpot-RateLimit-Interval-Milliseconds"))
        if most is not None and max(1, most - MARGIN) != self.limit:
            self.limit = max(1, most - MARGIN)
            self._redis.set(self._keys[2], self.limit, ex=3600)
            logger.info("budget set key=%s limit=%d", self._keys[0], self.limit)
        if interval and interval + int(GUARD_S * 1000) != self.window_ms:
            self.window_ms = interval + int(GUARD_S * 1000)
            self._redis.set(self._keys[3], self.window_ms, ex=3600)
        if left is not None and left <= 1 and interval:
            self.hold(interval / 1000)

    def hold(self, seconds: float) -> None:
        """Let no call through for ``seconds`` (HubSpot said to slow down)."""
        self._redis.set(self._keys[1], "1", px=max(1, int(seconds * 1000)))
        logger.warning("budget held key=%s seconds=%.1f", self._keys[0], seconds)


class LocalBudget:
    """The same budget for one process, when no Redis is configured."""

    def __init__(self, limit: int = PUBLIC_APP_LIMIT - MARGIN) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._taken: list[float] = []
        self._held_until = 0.0

    def acquire(self, max_wait_s: float = MAX_WAIT_S) -> None:
        """Take one slot, waiting for it; BudgetExhausted after ``max_wait_s``."""
        deadline = time.monotonic() + max_wait_s
        while (wait := self._try()) > 0:
            if wait > deadline - time.monotonic():
                raise BudgetExhausted(wait)
            time.sleep(min(wait, 1.0))

    def _try(self) -> float:
        now = time.monotonic()
        window = WINDOW_S + GUARD_S
        with self._lock:
            if self._held_until > now:
                return self._held_until - now
            self._taken = [t for t in self._taken if t > now - window]
            if len(self._taken) < self.limit:
                self._taken.append(now)
                return 0.0
            return self._taken[0] + window - now

    def observe(self, headers: Mapping[str, str] | None) -> None:
        """Read the rate-limit headers (only ``Max`` matters in one process)."""
        most = _int((headers or {}).get("X-HubSpot-RateLimit-Max"))
        if most is not None:
            self.limit = min(self.limit, max(1, most - MARGIN))

    def hold(self, seconds: float) -> None:
        """Let no call through for ``seconds``."""
        with self._lock:
            self._held_until = max(self._held_until, time.monotonic() + seconds)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


_connections: dict[str, redis.Redis] = {}
_local: dict[str, LocalBudget] = {}


def budget_for(redis_url: str, portal: str) -> Budget | LocalBudget:
    """The budget of a portal: in Redis when one is configured, else in-process."""
    if not redis_url:
        return _local.setdefault(portal, LocalBudget())
    if redis_url not in _connections:
        _connections[redis_url] = redis.Redis.from_url(
            redis_url, socket_connect_timeout=2, socket_timeout=5
        )
    return Budget(_connections[redis_url], portal)
