"""A one-item mailbox between a capture thread and its consumer: only the newest item is kept.

A live camera does not wait for us. When the consumer (inference) is slower than the stream,
older unread items are replaced (the caller counts them as dropped) instead of piling up in a backlog.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Holds the newest item put by a producer thread until a consumer takes it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._put_count = 0
        self._taken_count = 0
        self._waiting = 0

    @property
    def consumer_waiting(self) -> bool:
        """True while a consumer is blocked in ``take`` (a producer may then prepare an item)."""
        return self._waiting > 0

    def put(self, item: T) -> bool:
        """Store ``item``; True when it replaced an older item nobody took (a dropped frame)."""
        with self._cond:
            replaced = self._put_count > self._taken_count
            self._item = item
            self._put_count += 1
            self._cond.notify_all()
            return replaced

    def take(
        self, stop: threading.Event, poll_s: float = 0.2, on_poll: Callable[[], None] | None = None
    ) -> T | None:
        """The newest item not yet taken, waiting for one; None once ``stop`` is set. ``on_poll``
        runs every ``poll_s`` while it waits (a heartbeat: waiting for the producer is not a hang)."""
        with self._cond:
            self._waiting += 1
            try:
                while self._put_count == self._taken_count:
                    if stop.is_set():
                        return None
                    self._cond.wait(poll_s)
                    if on_poll is not None:
                        on_poll()
                if stop.is_set():
                    return None
                self._taken_count = self._put_count
                item, self._item = self._item, None
                return item
            finally:
                self._waiting -= 1

    def wake(self) -> None:
        """Wake waiting consumers so they notice a stop at once."""
        with self._cond:
            self._cond.notify_all()
