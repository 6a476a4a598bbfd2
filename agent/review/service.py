"""``edge-agent review`` under systemd (``Type=notify``, ``WatchdogSec``): ready, status, watchdog.

``READY=1`` is sent once the broker has confirmed the subscriptions (before that the service
would receive nothing). Until then, while the worker runs, ``EXTEND_TIMEOUT_USEC`` asks systemd
for more start-up time every few seconds, so a broker that is down at boot does not make
systemd kill and restart the receiver over and over, yet a receiver hung before it is ready is
still killed after ``TimeoutStartSec``.

The watchdog is pinged only while the worker makes progress: it finishes a message or a
housekeeping round, or waits idle with nothing queued. A worker stuck in a write, in a lock
another receiver never gives back, or anywhere else stops the pings, and systemd restarts the
receiver after ``WatchdogSec`` (the broker keeps the messages in our session meanwhile).
``STATUS`` carries the receiver's counts. Outside systemd nothing is sent.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from agent import sdnotify
from agent.config.review import ReviewSettings
from agent.review.receiver import ReviewReceiver

EXTEND_EVERY_S = 5.0
EXTEND_BY_S = 30.0


class _Starting:
    """Asks systemd for more start-up time while the worker progresses and we are not ready."""

    def __init__(self, receiver: ReviewReceiver) -> None:
        self.receiver = receiver
        self.ready = threading.Event()
        self._beats = 0
        self._seen = 0
        self._thread = threading.Thread(target=self._run, name="sd-starting", daemon=True)

    def beat(self) -> None:
        self._beats += 1  # one writer (the worker); a lost increment only delays one extension

    def start(self) -> None:
        if sdnotify.notify_socket_address() is not None:
            self._thread.start()

    def _run(self) -> None:
        while not self.ready.wait(EXTEND_EVERY_S):
            if self._beats == self._seen:
                continue  # the worker is stuck: let TimeoutStartSec run out
            self._seen = self._beats
            m = self.receiver.settings.mqtt
            status = f"waiting for the broker {m.host}:{m.effective_port}; {self.receiver.status_line()}"
            sdnotify.notify(extend_timeout_s=EXTEND_BY_S, status=status)


@contextlib.contextmanager
def supervised_receiver(settings: ReviewSettings) -> Iterator[ReviewReceiver]:
    """A receiver wired to systemd's notify socket; run it inside the block."""
    watchdog: sdnotify.Watchdog | None = None
    starting: _Starting | None = None

    def progress() -> None:
        if watchdog is not None:
            watchdog.beat()
        if starting is not None:
            starting.beat()

    def subscribed() -> None:
        if starting is not None:
            starting.ready.set()
        sdnotify.notify(ready=True, status=receiver.status_line())

    receiver = ReviewReceiver(settings, on_progress=progress, on_subscribed=subscribed)
    watchdog = sdnotify.Watchdog(receiver.status_line)
    starting = _Starting(receiver)
    watchdog.beat()
    starting.start()
    with watchdog:
        try:
            yield receiver
        finally:
            starting.ready.set()
            sdnotify.notify(stopping=True, status="stopping")
