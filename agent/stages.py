"""Output stages that adapt the harvest policy and the alert monitor to the pipeline.

Each stage sees every ``FrameResult`` on the output thread (see ``agent.pipeline``):

- ``KeepStage``: asks the harvest policy whether to keep the frame, has the labeller write
  it, then counts its files against the disk quota (evicting old frames through the
  labeller, so the VoTT project never lists a frame that is gone).
- ``MqttStage``: publishes every frame's detections and each kept frame's JPEG and its
  annotation, the same detections record (through the on-disk outbox).
- ``AlertStage``: feeds the failure score to the alert monitor with the printer's state,
  publishes every event, runs the configured action and logs why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.alerts import AlertEvent, AlertMonitor, alert_payload, run_action
from agent.frames import FrameResult
from agent.harvest import Harvester
from agent.labeler import VottStage
from agent.mqtt.client import MqttPublisher
from agent.printer import PrinterClient, PrinterWatcher

log = logging.getLogger(__name__)


class KeepStage:
    """Harvest decision, VoTT writing and the disk quota, in that order."""

    name = "harvest"

    def __init__(self, harvester: Harvester, writer: VottStage, summary_path: Path | None = None) -> None:
        self.harvester = harvester
        self.writer = writer
        self.summary_path = summary_path
        self.harvester.maintain()

    def handle(self, result: FrameResult) -> None:
        """Decide, write when kept, account the files."""
        decision = self.harvester.decide(result, time.monotonic())
        result.keep = decision.keep
        result.keep_reasons = list(decision.reasons)
        if result.alerts and not result.keep:
            # the frame an alert points at must reach the reviewer, whatever the policy says
            result.keep, result.keep_reasons = True, ["alert"]
        if not result.keep:
            return
        self.writer.handle(result)
        if result.image_path is None:
            return
        paths = [result.image_path]
        if result.asset_id:
            project = self.writer.project
            paths += [str(project.asset_file(result.asset_id)), str(project.scores_file(result.asset_id))]
        self.harvester.record_kept(result.frame.frame_id, paths)

    def evict(self, frame_id: str, paths: list[str]) -> None:
        """Called by the harvest store for each evicted frame: drop it from the VoTT project."""
        if paths:
            self.writer.remove(paths[0])
        log.debug("evicted %s", frame_id)

    def mark_synced(self, frame_id: str) -> None:
        """The broker acknowledged this kept frame."""
        self.harvester.mark_synced(frame_id)

    def summary_line(self) -> str:
        """The harvest counts for the periodic log line."""
        return self.harvester.summary_line()

    def close(self) -> None:
        """Save the project, the harvest index and the summary."""
        self.writer.close()
        if self.summary_path is not None:
            self.harvester.write_summary(self.summary_path)
        log.info("%s", self.harvester.summary_line())
        self.harvester.close()

    def stats(self) -> dict[str, Any]:
        """Harvest counters plus the writer's."""
        return {**self.harvester.stats(), "vott": self.writer.stats()}


class AlertStage:
    """Failure score -> alert events -> MQTT, log and the printer's pause button.

    Runs before ``KeepStage`` so that a frame that triggers an alert is always kept. ``clock``
    gives the time of each frame: the wall clock for live sources, a simulated clock for
    recordings (see ``SteppedClock``)."""

    name = "alerts"

    def __init__(
        self,
        monitor: AlertMonitor,
        printer: PrinterClient | None,
        watcher: PrinterWatcher | None,
        *,
        publish: Callable[[dict[str, Any]], None] | None = None,
        device_id: str | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.monitor = monitor
        self.printer = printer
        self.watcher = watcher
        self.publish = publish
        self.device_id = device_id
        self.clock = clock
        self.events: list[AlertEvent] = []
        self.counts: dict[str, int] = {"warn": 0, "act": 0, "clear": 0, "actions": 0, "action_failures": 0}

    def handle(self, result: FrameResult) -> None:
        """Update the monitor with this frame; publish and act on what it decides."""
        frame = result.frame
        now = self.clock() if self.clock is not None else frame.timestamp
        state = self.watcher.state() if self.watcher is not None else None
        events = self.monitor.update(
            result.detections,
            frame_id=frame.frame_id,
            now=now,
            print_state=state,
            image_size=(frame.width, frame.height),
        )
        result.alerts.extend(events)
        for event in events:
            self.events.append(event)
            self.counts[event.kind] = self.counts.get(event.kind, 0) + 1
            if self.publish is not None:
                self.publish(alert_payload(event, device_id=self.device_id))
            if event.action == "pause" and self.printer is not None:
                self.counts["actions"] += 1
                if not run_action(event, self.printer):
                    self.counts["action_failures"] += 1
                    log.error("could not pause the print (%s); pause it by hand", event.reason)

    def close(self) -> None:
        """Save the samples the monitor has not saved yet."""
        self.monitor.flush()

    def stats(self) -> dict[str, Any]:
        """Alert counts and the current level."""
        sample = self.monitor.last_sample
        return {
            **self.counts,
            "level": str(self.monitor.level),
            "active": self.monitor.alert_active,
            "score": round(sample.score, 4) if sample else None,
            "smoothed": round(sample.smoothed, 4) if sample else None,
        }


class MqttStage:
    """Every result's detections, and each kept frame with its annotation, to the broker."""

    name = "mqtt"

    def __init__(self, publisher: MqttPublisher) -> None:
        self.publisher = publisher

    def handle(self, result: FrameResult) -> None:
        """Queue the messages in the outbox (sending happens on the publisher's thread)."""
        t0 = time.perf_counter()
        self.publisher.publish_result(result)
        result.timings_ms["publish"] = (time.perf_counter() - t0) * 1000.0

    def summary_line(self) -> str:
        """Broker link and outbox size for the periodic log line (the outbox grows while no
        broker answers)."""
        stats = self.publisher.stats()
        outbox = stats.get("outbox", {})
        link = (
            "connected"
            if stats.get("connected")
            else f"not connected ({stats.get('last_error') or 'no broker yet'})"
        )
        return (
            f"mqtt: {link}; outbox {outbox.get('messages', 0)} messages, "
            f"{outbox.get('bytes', 0) / 1e6:.1f} MB, {outbox.get('dropped_total', 0)} dropped; acked {stats.get('acked', 0)}"
        )

    def close(self) -> None:
        """Publish ``stopped`` and wait a bounded time for in-flight messages."""
        self.publisher.close(clean=True)

    def stats(self) -> dict[str, Any]:
        """Connection and outbox counters."""
        return self.publisher.stats()


class SteppedClock:
    """A simulated clock for recorded frames: each call is ``step_s`` seconds after the last.

    Recordings carry no trustworthy time (file times are when they were copied), so alerts on
    a recorded timelapse run as if one frame came every ``step_s`` seconds."""

    def __init__(self, start: float, step_s: float) -> None:
        self.now = start - step_s
        self.step_s = step_s

    def __call__(self) -> float:
        self.now += self.step_s
        return self.now
