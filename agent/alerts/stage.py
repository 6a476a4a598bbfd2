"""The alert stage: each frame's failure score into the alert monitor, with the printer's state;
the events it decides come out as ``AlertEvents`` (the MQTT stage publishes them, the harvest
stage keeps the frames they point at), and ``act`` pauses the printer."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.alerts.events import AlertEvent
from agent.alerts.monitor import AlertMonitor
from agent.flow import Outputs, Stage
from agent.frames import FrameResult
from agent.printer import PrinterClient, PrinterWatcher

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AlertEvents:
    """The alert events one frame triggered (usually none)."""

    events: tuple[AlertEvent, ...]


def run_action(event: AlertEvent, printer: PrinterClient) -> bool:
    """Carry out an ``act`` event's action (pause the print); True when the printer accepted.

    Every other event is a no-op returning False.
    """
    if event.kind != "act" or event.action != "pause":
        return False
    return printer.pause(f"print-failure alert: {event.reason}")


class AlertStage(Stage):
    """Failure score -> alert events -> the printer's pause button.

    ``clock`` gives the time of each frame: the wall clock for live sources, a simulated clock for
    recordings (see ``SteppedClock``)."""

    name = "alerts"
    produces = AlertEvents

    def __init__(
        self,
        monitor: AlertMonitor,
        printer: PrinterClient | None,
        watcher: PrinterWatcher | None,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.monitor = monitor
        self.printer = printer
        self.watcher = watcher
        self.clock = clock
        self.counts: dict[str, int] = {"warn": 0, "act": 0, "clear": 0, "actions": 0, "action_failures": 0}

    def handle(self, result: FrameResult, outputs: Outputs) -> AlertEvents:
        """Update the monitor with this frame; act on what it decides."""
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
        for event in events:
            self.counts[event.kind] = self.counts.get(event.kind, 0) + 1
            if event.action == "pause" and self.printer is not None:
                self.counts["actions"] += 1
                if not run_action(event, self.printer):
                    self.counts["action_failures"] += 1
                    log.error("could not pause the print (%s); pause it by hand", event.reason)
        return AlertEvents(tuple(events))

    def close(self) -> None:
        """Save the samples the monitor has not saved yet."""
        self.monitor.flush()

    def stats(self) -> Mapping[str, Any]:
        """Alert counts and the current level."""
        sample = self.monitor.last_sample
        return {
            **self.counts,
            "level": str(self.monitor.level),
            "active": self.monitor.alert_active,
            "score": round(sample.score, 4) if sample else None,
            "smoothed": round(sample.smoothed, 4) if sample else None,
        }


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
