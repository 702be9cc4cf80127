"""Wake-ups for live notification streams, across processes (Redis) or within one.

A wake-up carries the public id of the message that changed. The notifications
themselves live in the database; a stream woken up reads what is new there, and tells
an open message page to refresh even for events that make no notification (a scanner's
click still belongs on the timeline, greyed out).
"""

from __future__ import annotations

import queue
import threading
from collections import defaultdict
from collections.abc import Iterable
from typing import Protocol

import redis


class Subscription(Protocol):
    def wait(self, timeout: float) -> list[str] | None:
        """Wait up to ``timeout``; the ids of messages that changed, or None."""

    def close(self) -> None: ...


class Notifier(Protocol):
    def publish(self, user_id: int, message_id: str = "") -> None:
        """Wake the user's open streams; ``message_id`` names a message that changed."""

    def subscribe(self, user_id: int) -> Subscription: ...

    def publish_many(self, wakes: Iterable[tuple[int, str]]) -> None:
        """Publish several (user, message) wake-ups."""


def _channel(user_id: int) -> str:
    return f"trailmark:notify:{user_id}"


class _RedisSubscription:
    def __init__(self, connection: redis.Redis, user_id: int) -> None:
        self._pubsub = connection.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(_channel(user_id))

    def wait(self, timeout: float) -> list[str] | None:
        first = self._pubsub.get_message(timeout=timeout)
        if first is None:
            return None
        found = [first]
        while (more := self._pubsub.get_message(timeout=0)) is not None:
            found.append(more)
        return [_text(m["data"]) for m in found]

    def close(self) -> None:
        self._pubsub.close()


def _text(data: bytes | str) -> str:
    return data.decode() if isinstance(data, bytes) else str(data)


class RedisNotifier:
    """Publishes on a per-user channel."""

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection

    def publish(self, user_id: int, message_id: str = "") -> None:
        self.connection.publish(_channel(user_id), message_id)

    def publish_many(self, wakes: Iterable[tuple[int, str]]) -> None:
        """Publish several wake-ups in one round trip."""
        pipeline = self.connection.pipeline(transaction=False)
        for user_id, message_id in wakes:
            pipeline.publish(_channel(user_id), message_id)
        pipeline.execute()

    def subscribe(self, user_id: int) -> Subscription:
        return _RedisSubscription(self.connection, user_id)


class _LocalSubscription:
    def __init__(self, notifier: LocalNotifier, user_id: int) -> None:
        self._notifier = notifier
        self._user_id = user_id
        self.inbox: queue.SimpleQueue[str] = queue.SimpleQueue()
        notifier.listeners[user_id].add(self)

    def wait(self, timeout: float) -> list[str] | None:
        try:
            found = [self.inbox.get(timeout=timeout)]
        except queue.Empty:
            return None
        while not self.inbox.empty():
            found.append(self.inbox.get_nowait())
        return found

    def close(self) -> None:
        with self._notifier.lock:
            self._notifier.listeners[self._user_id].discard(self)


class LocalNotifier:
    """For the single-process quick start, where jobs run beside the web app."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.listeners: defaultdict[int, set[_LocalSubscription]] = defaultdict(set)

    def publish(self, user_id: int, message_id: str = "") -> None:
        with self.lock:
            for subscription in self.listeners[user_id]:
                subscription.inbox.put(message_id)

    def publish_many(self, wakes: Iterable[tuple[int, str]]) -> None:
        for user_id, message_id in wakes:
            self.publish(user_id, message_id)

    def subscribe(self, user_id: int) -> Subscription:
        with self.lock:
            return _LocalSubscription(self, user_id)
