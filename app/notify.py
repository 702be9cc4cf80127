"""Wake-ups for live notification streams, across processes (Redis) or within one."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Protocol

import redis


class Subscription(Protocol):
    def wait(self, timeout: float) -> bool:
        """Block until woken or ``timeout`` seconds pass; True when woken."""

    def close(self) -> None: ...


class Notifier(Protocol):
    def publish(self, user_id: int) -> None:
        """Tell the user's open streams that notifications are waiting."""

    def subscribe(self, user_id: int) -> Subscription: ...


def _channel(user_id: int) -> str:
    return f"trailmark:notify:{user_id}"


class _RedisSubscription:
    def __init__(self, connection: redis.Redis, user_id: int) -> None:
        self._pubsub = connection.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(_channel(user_id))

    def wait(self, timeout: float) -> bool:
        return self._pubsub.get_message(timeout=timeout) is not None

    def close(self) -> None:
        self._pubsub.close()


class RedisNotifier:
    """Publishes on a per-user channel; the notifications themselves are in the DB."""

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection

    def publish(self, user_id: int) -> None:
        self.connection.publish(_channel(user_id), b"1")

    def subscribe(self, user_id: int) -> Subscription:
        return _RedisSubscription(self.connection, user_id)


class _LocalSubscription:
    def __init__(self, notifier: LocalNotifier, user_id: int) -> None:
        self._notifier = notifier
        self._user_id = user_id
        self._event = threading.Event()
        notifier.listeners[user_id].add(self._event)

    def wait(self, timeout: float) -> bool:
        woken = self._event.wait(timeout)
        self._event.clear()
        return woken

    def close(self) -> None:
        with self._notifier.lock:
            self._notifier.listeners[self._user_id].discard(self._event)


class LocalNotifier:
    """For the single-process quick start, where jobs run beside the web app."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.listeners: defaultdict[int, set[threading.Event]] = defaultdict(set)

    def publish(self, user_id: int) -> None:
        with self.lock:
            for event in self.listeners[user_id]:
                event.set()

    def subscribe(self, user_id: int) -> Subscription:
        with self.lock:
            return _LocalSubscription(self, user_id)
