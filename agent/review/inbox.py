"""The receiver's bounded, per-device fair queue between paho's network thread and the worker.

Bounded by a message count and a byte count (the bytes of messages the workers are storing
count until they are done). When it is full, ``put`` blocks the caller (paho's
network thread), which then stops reading from the socket: TCP flow control holds the broker
back and the messages wait in the broker's session, not in our memory, whatever the broker's
idea of our Receive Maximum. One message larger than the byte bound is let in when the queue is
empty (the size caps on messages keep it bounded), so nothing can block for good.

A device may also have messages in the receiver's spool (``spool.py``), counted here by
``add_spooled``: it takes its turns like a device with queued messages, its queued messages
first (they are older), and ``get`` then returns ``(device, None)``: take it from the spool.

``get`` serves devices round-robin: a message, once read, waits behind at most one message of
each other device with queued messages, however many one device has queued. With several
workers, a device's messages go to one worker at a time (``get`` marks the device busy until
``done``), so they are stored in the order they came and workers never wait for each other.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class InboxStats:
    """What the queue holds now and the most it held."""

    messages: int
    bytes: int
    devices: int
    peak_messages: int
    peak_bytes: int
    blocked_s: float  # time put() spent waiting for room (reading paused), seconds


class FairInbox(Generic[T]):
    """Per-device FIFOs served round-robin, at most ``max_messages`` and ``max_bytes`` in all."""

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._queues: OrderedDict[str, deque[tuple[T, int]]] = OrderedDict()
        self._messages = 0
        self._bytes = 0
        self._peak_messages = 0
        self._peak_bytes = 0
        self._blocked_s = 0.0
        self._closed = False
        self._busy: dict[str, int] = {}  # device -> bytes of the message a worker has
        self._spooled: dict[str, int] = {}  # device -> its messages waiting in the spool
        self._cond = threading.Condition()

    def put(self, device: str, item: T, size: int, *, block: bool = True) -> bool:
        """Queue ``item`` (``size`` bytes) for ``device``, waiting for room while ``block``.
        False when it was not queued: the inbox is closed, or full and not ``block``."""
        with self._cond:
            if not self._has_room(size):
                if not block:
                    return False
                started = time.monotonic()
                while not self._closed and not self._has_room(size):
                    self._cond.wait()
                self._blocked_s += time.monotonic() - started
            if self._closed:
                return False
            self._queues.setdefault(device, deque()).append((item, size))
            self._messages += 1
            self._bytes += size
            self._peak_messages = max(self._peak_messages, self._messages)
            self._peak_bytes = max(self._peak_bytes, self._bytes)
            self._cond.notify_all()
            return True

    def add_spooled(self, device: str, count: int = 1) -> None:
        """``count`` more messages of ``device`` wait in the spool (served after its queued ones)."""
        with self._cond:
            self._spooled[device] = self._spooled.get(device, 0) + count
            self._queues.setdefault(device, deque())
            self._cond.notify_all()

    def queued(self, device: str) -> int:
        """Messages of ``device`` in the queue (not counting the spool)."""
        with self._cond:
            fifo = self._queues.get(device)
            return len(fifo) if fifo is not None else 0

    def holds_fair_share(self, device: str) -> bool:
        """True when ``device`` holds at least an average share (among the devices with messages
        queued or being stored) of what fills the queue: its messages when ``max_messages`` is
        reached, else its bytes (queued and being stored)."""
        with self._cond:
            fifo = self._queues.get(device) or deque()
            if not fifo and device not in self._busy:
                return False
            devices = len({d for d, q in self._queues.items() if q} | self._busy.keys())
            if self._messages >= self.max_messages:
                return len(fifo) * devices >= self._messages
            held = sum(size for _, size in fifo) + self._busy.get(device, 0)
            return held * devices >= self._bytes

    def get(self, timeout_s: float) -> tuple[str, T | None] | None:
        """``(device, message)``, the devices taking turns, skipping devices another worker has
        (call ``done(device)`` after it); ``(device, None)`` when that device's turn is a message
        in the spool; None after ``timeout_s`` with none."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while (device := self._next_device()) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return None
                self._cond.wait(remaining)
            fifo = self._queues[device]
            item: T | None = None
            size = 0
            if fifo:
                item, size = fifo.popleft()
                self._messages -= 1
            else:
                self._take_spooled(device)
            if fifo or device in self._spooled:
                self._queues.move_to_end(device)  # its next message waits for the others' turns
            else:
                del self._queues[device]
            self._busy[device] = size  # its bytes count until done(): the worker still holds them
            self._cond.notify_all()
            return device, item

    def take_more(self, device: str, limit: int) -> list[T]:
        """Up to ``limit`` more queued messages of ``device``, which the caller got from ``get``
        (they are its until ``done``)."""
        with self._cond:
            fifo = self._queues.get(device)
            if device not in self._busy or not fifo:
                return []
            items: list[T] = []
            while fifo and len(items) < limit:
                item, size = fifo.popleft()
                items.append(item)
                self._busy[device] += size
                self._messages -= 1
            if not fifo and device not in self._spooled:
                del self._queues[device]
            self._cond.notify_all()
            return items

    def take_spooled(self, device: str) -> bool:
        """Take one more spool turn of ``device``, which the caller got from ``get``: True when it
        had one (the caller then takes that message from the spool)."""
        with self._cond:
            if device not in self._busy or not self._spooled.get(device) or self._queues[device]:
                return False
            self._take_spooled(device)
            if device not in self._spooled:
                del self._queues[device]
            return True

    def _take_spooled(self, device: str) -> None:
        self._spooled[device] -= 1
        if not self._spooled[device]:
            del self._spooled[device]

    def done(self, device: str) -> None:
        """The worker that got a message of ``device`` has finished with it."""
        with self._cond:
            self._bytes -= self._busy.pop(device, 0)
            self._cond.notify_all()

    def _next_device(self) -> str | None:
        return next(
            (d for d, q in self._queues.items() if d not in self._busy and (q or d in self._spooled)), None
        )

    def close(self) -> None:
        """Wake and refuse every waiting and later ``put``; ``get`` returns what is left, then None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def stats(self) -> InboxStats:
        """Counts now and peaks."""
        with self._cond:
            return InboxStats(
                self._messages,
                self._bytes,
                len(self._queues),
                self._peak_messages,
                self._peak_bytes,
                round(self._blocked_s, 3),
            )

    def _has_room(self, size: int) -> bool:
        if self._messages == 0 and not self._busy:
            return True
        return self._messages < self.max_messages and self._bytes + size <= self.max_bytes
