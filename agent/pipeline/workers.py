"""One interpreter's slot in the pipeline: its detector, the thread feeding it, and what it is
doing (for the hang check and the stall watchdog); and the end-of-queue marker."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from agent.pipeline.contracts import DetectorLike

END = object()  # the last item of a queue: the source ended or the pipeline stops


@dataclass
class InferenceWorker:
    """One interpreter and the thread that feeds it; replaced as a whole when it hangs."""

    slot: int
    detector: DetectorLike
    generation: int = 0  # bumped when a hung detector is replaced; the old thread then quits
    since: float | None = None  # monotonic start of the running inference
    # monotonic time this slot began work it has not finished: kept across a replacement, so
    # building and warming the new detector counts towards a stall (cleared by a finished frame)
    busy_since: float | None = None
    seq: int | None = None  # sequence number of the frame being detected
    # guards generation/since/seq between the worker thread and the hang check
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, generation: int, seq: int) -> bool:
        """Mark the start of frame ``seq``; False when this thread has been replaced."""
        with self.lock:
            if generation != self.generation:
                return False
            self.seq, self.since = seq, time.monotonic()
            self.busy_since = self.busy_since or self.since
            return True

    def finish(self, generation: int) -> bool:
        """Mark the end of the running inference; False when this thread has been replaced."""
        with self.lock:
            if generation != self.generation:
                return False
            self.since = self.busy_since = None
            return True

    def busy(self, generation: int) -> None:
        """This slot works on something other than a frame (re-opening its detector)."""
        with self.lock:
            if generation == self.generation:
                self.busy_since = self.busy_since or time.monotonic()

    def idle(self, generation: int) -> None:
        """This slot waits for a frame: nothing is stuck in it."""
        with self.lock:
            if generation == self.generation and self.since is None:
                self.busy_since = None

    def replace_if_stuck(self, limit_s: float) -> int | None:
        """When the running inference has taken over ``limit_s``: retire the thread (its
        generation moves on) and return the frame number it holds; else None."""
        with self.lock:
            since = self.since
            if since is None or time.monotonic() - since < limit_s:
                return None
            self.generation += 1
            self.since = None
            return self.seq if self.seq is not None else -1


def put_end(q: queue.Queue[Any]) -> None:
    """Put the end marker even into a full queue (dropping an item): only after a fatal error."""
    while True:
        try:
            q.put_nowait(END)
            return
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                q.get_nowait()
