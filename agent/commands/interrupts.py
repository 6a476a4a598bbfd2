"""SIGINT and SIGTERM during a long job: finish cleanly, keep what was written, say how to go on.

The first signal asks the job to stop (a pipeline finishes the frames already queued and closes
every stage, so projects and records are saved); a second SIGINT stops at once. A job that runs on
the main thread (an export) is stopped by ``JobInterrupted``, raised where it is, which unwinds it
through its ``with`` blocks and atomic writes. The command then exits with 128 + the signal's
number (130 for SIGINT, 143 for SIGTERM), as shells expect.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

log = logging.getLogger(__name__)


class JobInterrupted(BaseException):
    """A signal stopped a job that runs on the main thread (``Interrupts`` without ``stop``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signal = signal.Signals(signum)
        self.exit_code = 128 + signum


class Interrupts:
    """A context in which SIGINT/SIGTERM call ``stop`` (once) instead of killing the job; without
    ``stop`` they raise ``JobInterrupted`` in the main thread."""

    def __init__(self, stop: Callable[[], None] | None = None) -> None:
        self.stop = stop
        self.signal: signal.Signals | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.signal is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now
            return
        self.signal = signal.Signals(signum)
        if self.stop is None:
            raise JobInterrupted(signum)
        log.info("received %s: finishing the frames under way and saving", self.signal.name)
        self.stop()

    @property
    def interrupted(self) -> bool:
        """True when a signal asked the job to stop."""
        return self.signal is not None

    @property
    def exit_code(self) -> int:
        """128 + the signal's number after an interrupt, else 0."""
        return 128 + int(self.signal) if self.signal is not None else 0
