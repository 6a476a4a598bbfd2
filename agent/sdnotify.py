"""Talk to systemd over the sd_notify protocol: ready, status line, watchdog pings, stopping.

The protocol is one datagram of ``KEY=VALUE`` lines sent to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a path, or an abstract socket when it starts with ``@``), so it is written
here rather than taken from a package. Outside systemd (no ``$NOTIFY_SOCKET``) every call is a
no-op, and a failed send is logged, never raised: telling systemd must not stop the agent.

``Watchdog`` pings ``WATCHDOG=1`` only while the pipeline really advances: the pipeline calls
``beat()`` when a frame completes, and a thread pings at half of ``WatchdogSec`` only if a beat
happened since its last ping. A hung detector stops the beats, so the pings stop and systemd
kills and restarts the agent.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger(__name__)

# Sends STATUS this often when systemd set no watchdog (Type=notify without WatchdogSec).
DEFAULT_STATUS_INTERVAL_S = 10.0


def notify_socket_address() -> str | None:
    """The socket address from ``$NOTIFY_SOCKET`` (abstract ``@name`` as ``\\0name``), or None."""
    raw = os.environ.get("NOTIFY_SOCKET", "")
    if not raw:
        return None
    if raw.startswith("@"):
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract socket; not notifying systemd", raw)
    return None


def notify(
    *,
    ready: bool = False,
    status: str | None = None,
    watchdog: bool = False,
    stopping: bool = False,
    extend_timeout_s: float | None = None,
) -> bool:
    """Send one sd_notify datagram; True when it was sent, False outside systemd or on error.

    ``status`` is a one-line text for ``systemctl status`` (newlines become spaces);
    ``extend_timeout_s`` asks for that much more time to start (``EXTEND_TIMEOUT_USEC``).
    """
    lines = []
    if extend_timeout_s is not None:
        lines.append(f"EXTEND_TIMEOUT_USEC={int(extend_timeout_s * 1e6)}")
    if ready:
        lines.append("READY=1")
    if stopping:
        lines.append("STOPPING=1")
    if status is not None:
        lines.append("STATUS=" + " ".join(status.splitlines()))
    if watchdog:
        lines.append("WATCHDOG=1")
    address = notify_socket_address()
    if address is None or not lines:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(("\n".join(lines) + "\n").encode("utf-8"))
    except OSError as exc:
        log.warning("could not notify systemd at %r: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def watchdog_timeout_s() -> float | None:
    """systemd's watchdog limit in seconds (``$WATCHDOG_USEC``), or None when none is set for us."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (we were started by a child of the main one)
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None


def watchdog_interval_s() -> float | None:
    """How often to ping in seconds: half of the watchdog limit, as sd_watchdog_enabled(3) advises."""
    timeout = watchdog_timeout_s()
    return None if timeout is None else timeout / 2


class Watchdog:
    """Pings systemd's watchdog only while the pipeline makes progress, and keeps STATUS fresh.

    ``beat()`` is cheap and thread-safe: call it whenever a frame completes (inferred or
    skipped) and after any deliberate idle wait, at least once per ping interval (half of
    ``WatchdogSec``). ``status`` returns the STATUS line (fps, outbox size, ...), sent each tick.
    Without ``$NOTIFY_SOCKET`` ``start()`` starts nothing.
    """

    def __init__(
        self,
        status: Callable[[], str] | None = None,
        *,
        interval_s: float | None = None,
        status_interval_s: float = DEFAULT_STATUS_INTERVAL_S,
    ) -> None:
        """``interval_s`` overrides the ping interval read from ``$WATCHDOG_USEC`` (seconds)."""
        self._status = status
        self._interval_s = interval_s
        self._status_interval_s = status_interval_s
        self._beats = 0
        self._beats_at_last_ping = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stalled = False
        self.pings_sent = 0
        self.pings_withheld = 0

    def beat(self) -> None:
        """Record progress: the next tick may ping the watchdog."""
        with self._lock:
            self._beats += 1

    def start(self) -> Watchdog:
        """Start the pinging thread (a no-op outside systemd); returns self."""
        if self._thread is not None or notify_socket_address() is None:
            return self
        interval = self._interval_s if self._interval_s is not None else watchdog_interval_s()
        pinging = interval is not None
        period = interval if interval is not None else self._status_interval_s
        if not pinging and self._status is None:
            return self
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(period, pinging), name="sd-watchdog", daemon=True
        )
        self._thread.start()
        log.debug("systemd watchdog thread started: every %.1f s, pinging=%s", period, pinging)
        return self

    def stop(self) -> None:
        """Stop the thread (no further pings); safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def tick(self, *, pinging: bool = True) -> bool:
        """One round: send STATUS, and WATCHDOG=1 if a beat happened since the last ping.

        Returns True when the watchdog was pinged. The thread calls this every period.
        """
        with self._lock:
            advanced = self._beats != self._beats_at_last_ping
            self._beats_at_last_ping = self._beats
        ping = pinging and advanced
        if pinging:
            self._count(ping)
        notify(status=self._status_text(), watchdog=ping)
        return ping

    def _count(self, ping: bool) -> None:
        if ping:
            self.pings_sent += 1
            if self._stalled:
                log.info("pipeline advances again; watchdog pings resumed")
            self._stalled = False
            return
        self.pings_withheld += 1
        if not self._stalled:
            log.warning(
                "no frame completed since the last tick; withholding the watchdog ping "
                "(systemd restarts the agent when this lasts WatchdogSec)"
            )
        self._stalled = True

    def _status_text(self) -> str | None:
        if self._status is None:
            return None
        try:
            return self._status()
        except Exception:  # a status bug must not silence the watchdog thread
            log.exception("status callback for systemd failed")
            return None

    def _run(self, period: float, pinging: bool) -> None:
        while not self._stop.wait(period):
            self.tick(pinging=pinging)
