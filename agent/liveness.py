"""Heartbeats: how the threads that read a source show the watchdog they are alive.

A source read that never returns (a camera driver, a network read that trickles, a decode) leaves
the capture thread where no other thread can see it. So every thread that reads a source enrolls
(``with heartbeats.alive():``) and beats on each turn of its loop; a deliberate wait (the interval
between samples, a folder's poll, a reconnect backoff) beats every ``BEAT_EVERY_S`` while it
waits (``StopEvent.wait``). ``stalest()`` names the enrolled thread that beat longest ago: the
pipeline counts it as stuck once that is longer than ``pipeline.stall_timeout_s``, and the systemd
watchdog pings stop. An idle source that waits for its next sample keeps beating; a thread blocked
in a read does not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

BEAT_EVERY_S = 1.0  # a deliberate wait beats at least this often


class Heartbeats:
    """The enrolled threads and the monotonic time each last beat. Beats from threads that are not
    enrolled (the thread that opens the source, a doctor probe) are ignored."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[str, float]] = {}
        self._lock = threading.Lock()

    @contextmanager
    def alive(self) -> Iterator[None]:
        """Enroll the calling thread for the block (it has beaten on entry); it leaves on exit."""
        ident = threading.get_ident()
        with self._lock:
            self._last[ident] = (threading.current_thread().name, time.monotonic())
        try:
            yield
        finally:
            with self._lock:
                self._last.pop(ident, None)  # by the enrolled id: a generator may be closed elsewhere

    def beat(self) -> None:
        """The calling thread is alive now (cheap; a no-op for a thread that is not enrolled)."""
        ident = threading.get_ident()
        with self._lock:
            entry = self._last.get(ident)
            if entry is not None:
                self._last[ident] = (entry[0], time.monotonic())

    def stalest(self) -> tuple[str, float] | None:
        """``(thread name, seconds since its last beat)`` of the enrolled thread that beat longest
        ago, or None when no thread is enrolled."""
        now = time.monotonic()
        with self._lock:
            entries = list(self._last.values())
        if not entries:
            return None
        name, last = min(entries, key=lambda entry: entry[1])
        return name, now - last


class StopEvent(threading.Event):
    """A source's stop flag whose ``wait`` beats the heartbeats while it waits, so a deliberate
    wait (however long) shows the waiting thread is alive."""

    def __init__(self, heartbeats: Heartbeats) -> None:
        super().__init__()
        self.heartbeats = heartbeats

    def wait(self, timeout: float | None = None) -> bool:
        """``threading.Event.wait``, in slices of at most ``BEAT_EVERY_S`` with a beat after each."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.heartbeats.beat()
            left = BEAT_EVERY_S if deadline is None else min(BEAT_EVERY_S, deadline - time.monotonic())
            if left <= 0:
                return self.is_set()
            if super().wait(left):
                return True
