"""The printer watcher: a thread that polls the job state and carries out pause requests, so that no
printer HTTP call ever runs on the pipeline's threads (a host that hangs holds up nobody's frames).

The alert stage reads the latest state with ``state()`` (never blocks) and hands over pause requests
with ``request_pause()`` (never blocks). The thread polls every ``poll_interval_s`` while the host
answers and backs off (doubling, up to 60 s) while it does not; a pending pause is asked for, and
confirmed, as ``agent.printer.pause.PauseJob`` says. How a pause ended goes to ``on_outcome`` (the
agent posts it on its event bus, so the alert stage records it on the output thread).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.config.printer import PrinterSettings
from agent.printer.client import PrinterClient
from agent.printer.pause import PauseJob, PauseOutcome, PauseRequest
from agent.printer.state import PrintState, PrintStatus

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0


def next_poll_delay(failures: int, interval_s: float) -> float:
    """Seconds to the next poll after ``failures`` unanswered polls in a row: the interval, doubling
    while the host does not answer, at most ``MAX_BACKOFF_S`` (never less than the interval)."""
    if failures <= 0:
        return interval_s
    return max(interval_s, min(interval_s * 2 ** (failures - 1), MAX_BACKOFF_S))


class PrinterWatcher:
    """Polls a printer host on its own thread and pauses its print when asked."""

    def __init__(
        self,
        client: PrinterClient,
        settings: PrinterSettings,
        *,
        on_outcome: Callable[[PauseOutcome], None] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.settings = settings
        self._on_outcome = on_outcome
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._first = threading.Event()
        self._state = PrintState.unknown(clock(), "not asked yet")
        self._job: PauseJob | None = None
        self._queued: PauseRequest | None = None
        self._failures = 0
        self._counts = {"polls": 0, "unanswered": 0, "pause_requests": 0, "landed": 0, "ended": 0}
        self._last_outcome: PauseOutcome | None = None
        self._thread = threading.Thread(target=self._run, name="printer", daemon=True)

    # -- what other threads call ---------------------------------------------------------------

    def start(self, first_state_timeout_s: float = 10.0) -> None:
        """Start polling; wait (at most ``first_state_timeout_s``) for the first reading, so the first
        frames already know what the printer does."""
        self._thread.start()
        self._first.wait(min(first_state_timeout_s, self.settings.timeout_s + 1.0))

    def state(self) -> PrintState:
        """The latest reading (``UNKNOWN`` until the host first answers)."""
        with self._lock:
            return self._state

    def request_pause(self, request: PauseRequest) -> None:
        """Pause the print for ``request`` (an alert's episode); the same episode twice is one pause."""
        with self._lock:
            current = self._job.request if self._job is not None else self._queued
            if current is not None and (current.print_name, current.episode) == (
                request.print_name,
                request.episode,
            ):
                return
            self._queued = request
        self._wake.set()

    @property
    def pause_pending(self) -> bool:
        """True while a pause request has not landed or ended."""
        with self._lock:
            return self._job is not None or self._queued is not None

    @property
    def last_outcome(self) -> PauseOutcome | None:
        """How the latest pause ended (None before any did)."""
        with self._lock:
            return self._last_outcome

    def close(self, wait_s: float = 0.0) -> None:
        """Stop polling; a pending pause gets up to ``wait_s`` seconds to land first (it stays in
        the alert state and is asked for again at the next start when it does not)."""
        deadline = time.monotonic() + wait_s
        while self.pause_pending and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.05)
        if self.pause_pending:
            log.warning(
                "stopping with a pause of %s still pending: it is asked for again at the next start",
                self.client.name,
            )
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():  # a request to a host that hangs is not waited for
            self._thread.join(timeout=1.0)

    def stats(self) -> dict[str, Any]:
        """Polls, unanswered polls, pause requests sent and how pauses ended; the last outcome."""
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
            out["state"] = str(self._state.status)
            out["pause_pending"] = self._job is not None or self._queued is not None
            last = self._last_outcome
        if last is not None:
            out["last_pause"] = {
                "outcome": last.outcome,
                "requests": last.requests,
                "seconds": round(last.seconds, 3),
            }
        return out

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        next_poll = self._monotonic()
        while not self._stop.is_set():
            self._take_queued()
            now = self._monotonic()
            job = self._job
            if job is not None and now >= job.next_attempt_at:
                if not self._settle(self._poll()):  # read the state first: it may have paused already
                    job.attempt(self.client, self._monotonic())
                    self._count("pause_requests")
                next_poll = self._monotonic() + self._poll_interval()
            elif now >= next_poll:
                self._settle(self._poll())
                next_poll = self._monotonic() + self._poll_interval()
            due = next_poll if self._job is None else min(next_poll, self._job.next_attempt_at)
            self._wake.wait(max(0.0, due - self._monotonic()))
            self._wake.clear()

    def _take_queued(self) -> None:
        with self._lock:
            request, self._queued = self._queued, None
            if request is not None:
                self._job = PauseJob(request, self.settings, self.client.name, self._monotonic())

    def _poll_interval(self) -> float:
        interval = next_poll_delay(self._failures, self.settings.poll_interval_s)
        job = self._job
        return job.poll_interval(interval) if job is not None else interval

    def _poll(self) -> PrintState:
        state = self.client.get_state()
        with self._lock:
            self._state = state
            self._counts["polls"] += 1
            if state.status == PrintStatus.UNKNOWN:
                self._counts["unanswered"] += 1
        self._failures = self._failures + 1 if state.status == PrintStatus.UNKNOWN else 0
        self._first.set()
        return state

    def _settle(self, state: PrintState) -> bool:
        """Let the pending pause see ``state``; True when that settled it."""
        job = self._job
        if job is None:
            return False
        outcome = job.on_state(state, self._clock())
        if outcome is None:
            return False
        with self._lock:
            self._job = None
            self._counts[outcome.outcome] += 1
            self._last_outcome = outcome
        if self._on_outcome is not None:
            self._on_outcome(outcome)
        return True

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1
