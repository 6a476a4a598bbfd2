"""The harvest stages: whether to keep each frame for labelling (before the VoTT stage stores it),
and the disk its kept frames may use (after)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.alerts.stage import AlertEvents
from agent.flow import EventBus, FrameSynced, KeepDecision, Outputs, Stage
from agent.frames import FrameResult
from agent.harvest import Harvester
from agent.vott.stage import FrameEvicted, StoredFrame

log = logging.getLogger(__name__)


class KeepStage(Stage):
    """Asks the harvest policy whether to keep the frame; a frame an alert points at is always kept."""

    name = "harvest"
    uses = (AlertEvents,)
    produces = KeepDecision

    def __init__(self, harvester: Harvester, summary_path: Path | None = None) -> None:
        self.harvester = harvester
        self.summary_path = summary_path
        self.harvester.maintain()

    def handle(self, result: FrameResult, outputs: Outputs) -> KeepDecision:
        """The decision for this frame."""
        decision = self.harvester.decide(result, time.monotonic())
        alerts = outputs.find(AlertEvents)
        if alerts is not None and alerts.events and not decision.keep:
            # the frame an alert points at must reach the reviewer, whatever the policy says
            return KeepDecision(True, ("alert",))
        return KeepDecision(decision.keep, tuple(decision.reasons))

    def summary_line(self) -> str:
        """The harvest counts for the periodic log line."""
        return self.harvester.summary_line()

    def close(self) -> None:
        """Write the summary and close the harvest index."""
        if self.summary_path is not None:
            self.harvester.write_summary(self.summary_path)
        log.info("%s", self.harvester.summary_line())
        self.harvester.close()

    def stats(self) -> Mapping[str, Any]:
        """Harvest counters."""
        return self.harvester.stats()


class QuotaStage(Stage):
    """Counts each stored frame's files against the disk quota; the frames it evicts go out as
    ``FrameEvicted`` events; frames the broker acknowledged are marked synced (evicted first)."""

    name = "quota"
    needs = (StoredFrame,)
    listens = (FrameSynced,)

    def __init__(self, harvester: Harvester, events: EventBus) -> None:
        self.harvester = harvester
        self.events = events

    def handle(self, result: FrameResult, outputs: Outputs) -> None:
        """Account the files of a stored frame."""
        stored = outputs.get(StoredFrame)
        if stored.files:
            self.harvester.record_kept(result.frame.frame_id, [str(p) for p in stored.files])
        return None

    def evicted(self, frame_id: str, paths: list[Path]) -> None:
        """The harvest store evicted a frame: tell the VoTT stage (on the output thread)."""
        self.events.post(FrameEvicted(frame_id, tuple(paths)))

    def on_event(self, event: object) -> None:
        """The broker acknowledged a kept frame."""
        assert isinstance(event, FrameSynced)
        self.harvester.mark_synced(event.frame_id)
