"""The harvest stages: whether to keep each frame for labelling (before the VoTT stage stores it),
and the disk the kept frames may use (after it).

Evictions travel as events on the output thread: the quota stage posts ``FrameEvicted``; the VoTT
stage takes the frame out of its project and answers ``EvictionDone``; then the store deletes the
files that are left, so the project never lists a frame that is gone. A frame a reviewer worked on
in VoTT is never deleted (it leaves the quota's count).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.alerts.stage import AlertEvents
from agent.flow import EventBus, FrameSynced, Outputs, Stage
from agent.frames import FrameResult
from agent.gate import ChangeGate
from agent.harvest.decision import Eviction, EvictionDone, FrameEvicted, KeepDecision
from agent.harvest.harvester import Harvester
from agent.vott.stage import StoredFrame
from agent.vott.writer import WriteOutcome

log = logging.getLogger(__name__)


class KeepStage(Stage):
    """Asks the harvest policy whether to keep the frame; a frame an alert points at is always kept."""

    name = "harvest"
    uses = (AlertEvents,)
    produces = KeepDecision

    def __init__(
        self, harvester: Harvester, *, gate: ChangeGate | None = None, summary_path: Path | None = None
    ) -> None:
        self.harvester = harvester
        self.gate = gate
        self.summary_path = summary_path

    def handle(self, result: FrameResult, outputs: Outputs) -> KeepDecision:
        """The decision for this frame."""
        alerts = outputs.find(AlertEvents)
        return self.harvester.decide(result, time.monotonic(), alerted=bool(alerts and alerts.events))

    def _count_gate(self) -> None:
        if self.gate is not None:
            self.harvester.count_gate(self.gate.stats())

    def summary_line(self) -> str:
        """The harvest counts for the periodic log line."""
        self._count_gate()
        return self.harvester.summary_line()

    def close(self) -> None:
        """Write the summary and close the harvest index."""
        self._count_gate()
        if self.summary_path is not None:
            self.harvester.write_summary(self.summary_path)
        log.info("%s", self.harvester.summary_line())
        self.harvester.close()

    def stats(self) -> Mapping[str, Any]:
        """Harvest counters (and the change gate's)."""
        self._count_gate()
        return self.harvester.stats()


class QuotaStage(Stage):
    """Counts each stored frame's files against the disk quota; frames the broker acknowledged are
    marked synced (evicted first)."""

    name = "quota"
    needs = (StoredFrame,)
    listens = (FrameSynced, EvictionDone)

    def __init__(self, harvester: Harvester, events: EventBus) -> None:
        self.harvester = harvester
        self.events = events
        self._evict(harvester.maintain())  # also what an earlier run selected and never finished

    def handle(self, result: FrameResult, outputs: Outputs) -> None:
        """Account the files of a stored frame; evict what no longer fits."""
        stored = outputs.get(StoredFrame)
        if stored.files:
            self._evict(self.harvester.record_kept(result.frame.frame_id, [str(p) for p in stored.files]))
        elif stored.asset is not None and stored.asset.outcome == WriteOutcome.KEPT_REVIEWED:
            self.harvester.record_left_to_reviewer(result.frame.frame_id)
        return None

    def _evict(self, evictions: list[Eviction]) -> None:
        for eviction in evictions:
            self.events.post(FrameEvicted(eviction))

    def on_event(self, event: object) -> None:
        """The broker acknowledged a kept frame, or the VoTT stage took an evicted one out."""
        if isinstance(event, FrameSynced):
            self.harvester.mark_synced(event.frame_id)
        elif isinstance(event, EvictionDone):
            self.harvester.confirm_evicted([event.eviction], delete_files=not event.keep_files)
