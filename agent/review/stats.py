"""The receiver's counters and its rate-limited log of dropped messages.

Every message taken from the broker ends in exactly one of: an outcome (``frames_written``,
``annotations_stored``, ``annotations_updated``, ``duplicates``) or ``dropped[<reason>]``, so
``received == sum(outcomes) + dropped_total`` once the queue is empty. The reason of every drop
is counted exactly; the log shows the first few of each reason per stats interval with the
detail, and how many more there were.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

log = logging.getLogger(__name__)

OUTCOMES = ("frames_written", "annotations_stored", "annotations_updated", "duplicates")


class ReviewStats:
    """Thread-safe counters of what happened to received messages."""

    def __init__(self, log_per_reason: int = 5) -> None:
        self.log_per_reason = log_per_reason
        self._lock = threading.Lock()
        self._received: Counter[str] = Counter()
        self._outcomes: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        self._logged: Counter[str] = Counter()  # drops logged in this interval, by reason
        self._suppressed: Counter[str] = Counter()
        self._retries = 0
        self._retry_logged = False

    def received(self, kind: str) -> None:
        """A message was taken for processing (``kind``: frames, annotations or other)."""
        with self._lock:
            self._received[kind] += 1

    def outcome(self, name: str) -> None:
        """A message was accepted (one of ``OUTCOMES``)."""
        with self._lock:
            self._outcomes[name] += 1

    def dropped(self, reason: str, detail: str, topic: str) -> None:
        """A message was dropped; logged unless this reason was logged often in this interval."""
        with self._lock:
            self._dropped[reason] += 1
            show = self._logged[reason] < self.log_per_reason
            if show:
                self._logged[reason] += 1
            else:
                self._suppressed[reason] += 1
        if show:
            log.warning("dropped a message on %r: %s: %s", topic[:200], reason, detail)

    def retried(self, detail: str) -> None:
        """A message must wait for another receiver (its device's lock) and is tried again later."""
        with self._lock:
            self._retries += 1
            show, self._retry_logged = not self._retry_logged, True
        if show:
            log.warning("a message waits for another receiver: %s; retrying it", detail)

    def snapshot(self) -> dict[str, Any]:
        """Counters as JSON-ready data: ``received``, ``received_by_kind``, each outcome,
        ``dropped_total`` and ``dropped`` by reason."""
        with self._lock:
            out: dict[str, Any] = {
                "received": sum(self._received.values()),
                "received_by_kind": dict(self._received),
            }
            out.update({name: self._outcomes[name] for name in OUTCOMES})
            out["retries"] = self._retries
            out["dropped_total"] = sum(self._dropped.values())
            out["dropped"] = dict(sorted(self._dropped.items()))
        return out

    def interval_summary(self) -> str:
        """A one-line summary for the periodic log, with the drops not logged one by one; starts a
        new logging interval."""
        snap = self.snapshot()
        with self._lock:
            suppressed = dict(self._suppressed)
            self._suppressed.clear()
            self._logged.clear()
            self._retry_logged = False
        parts = [
            f"received {snap['received']}",
            f"frames written {snap['frames_written']}",
            f"annotations stored {snap['annotations_stored']} (updated {snap['annotations_updated']})",
            f"duplicates {snap['duplicates']}",
            f"dropped {snap['dropped_total']}",
        ]
        line = ", ".join(parts)
        if snap["dropped"]:
            line += " (" + ", ".join(f"{k} {v}" for k, v in snap["dropped"].items()) + ")"
        if suppressed:
            line += "; not logged one by one: " + ", ".join(f"{k} {v}" for k, v in sorted(suppressed.items()))
        return line
