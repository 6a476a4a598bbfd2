"""The alert stage: each frame's failure score into the alert monitor, with the printer's state and
the scene check; the events it decides come out as ``AlertEvents`` (the MQTT stage publishes them,
the harvest stage keeps the frames they point at), and ``act`` asks the printer watcher to pause.

Nothing here waits on the printer: the state comes from the watcher's last poll and a pause request
is handed to the watcher's thread, which reports back with a ``PauseOutcome`` event on the bus.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.alerts.events import AlertEvent
from agent.alerts.monitor import AlertMonitor
from agent.alerts.scene import SceneCheck, SceneVerdict
from agent.alerts.score import failure_score
from agent.alerts.view import ViewEvent, ViewTracker
from agent.flow import Outputs, Stage
from agent.frames import FrameResult
from agent.printer.pause import PauseOutcome, PauseRequest
from agent.printer.state import PrintState, PrintStatus
from agent.printer.watcher import PrinterWatcher

log = logging.getLogger(__name__)

SHUTDOWN_PAUSE_WAIT = 3  # at shutdown a pending pause gets this many request timeouts to land


@dataclass(frozen=True, slots=True)
class AlertEvents:
    """What one frame triggered: alert events, view events (both usually none), and the scene
    check's verdict on it (None when the frame was not judged: not a sample, or the check is off)."""

    events: tuple[AlertEvent, ...]
    views: tuple[ViewEvent, ...] = ()
    verdict: SceneVerdict | None = None


class AlertStage(Stage):
    """Failure score (where the camera sees the print) -> alert events -> a pause request.

    ``clock`` gives the time of each frame: the frame's own time when None (cameras, streams), the
    wall clock for a watched folder, a simulated clock for recordings (see ``SteppedClock``)."""

    name = "alerts"
    produces = AlertEvents
    listens = (PauseOutcome,)

    def __init__(
        self,
        monitor: AlertMonitor,
        watcher: PrinterWatcher | None = None,
        *,
        scene: SceneCheck | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.monitor = monitor
        self.watcher = watcher
        self.scene = scene
        self.views = ViewTracker(scene.settings.event_after_samples) if scene is not None else None
        self.clock = clock
        self.counts: dict[str, int] = {"warn": 0, "act": 0, "clear": 0, "pauses_asked": 0, "pauses_landed": 0}
        self._last_verdict: SceneVerdict | None = None

    def resume_pending_pause(self) -> None:
        """After a restart: ask again for a pause the last run asked for and did not see land."""
        st = self.monitor.state
        if self.watcher is None or st.pause_outcome != "pending" or not st.has_print or st.print_ended:
            return
        log.warning(
            "the last run asked to pause print %r and did not see it land: asking again", st.print_name
        )
        request = PauseRequest(
            st.print_name,
            st.pause_episode,
            "asked for before a restart",
            st.pause_requested_at or time.time(),
            restored=True,
        )
        self.watcher.request_pause(request)

    def handle(self, result: FrameResult, outputs: Outputs) -> AlertEvents:
        """Judge the scene, update the monitor with this frame, ask for a pause on ``act``."""
        frame = result.frame
        now = self.clock() if self.clock is not None else frame.timestamp
        state = self.watcher.state() if self.watcher is not None else None
        views = self._follow_print(state, now)
        verdict = self._judge(result, state, now)
        if verdict is not None and self.views is not None:
            views += self.views.update(verdict, now, frame.frame_id, self.monitor.state.print_name)
        if verdict is not None and not verdict.counts:
            score: float | None = None
        else:
            detections = result.detections
            if self.scene is not None:
                detections = self.scene.near_print(detections, (frame.width, frame.height))
            score = failure_score(detections, self.monitor.settings, (frame.width, frame.height))
        events = self.monitor.update_score(score, frame_id=frame.frame_id, now=now, print_state=state)
        for event in events:
            self.counts[event.kind] = self.counts.get(event.kind, 0) + 1
            if event.kind == "act" and event.action == "pause":
                self._ask_for_pause(event)
        return AlertEvents(tuple(events), tuple(views), verdict)

    def on_event(self, event: object) -> None:
        """Record how a pause ended (from the watcher's thread, delivered on the output thread)."""
        if not isinstance(event, PauseOutcome):
            return
        st = self.monitor.state
        if (event.request.print_name, event.request.episode) != (st.print_name, st.pause_episode):
            return  # a pause of an earlier print or episode
        if st.pause_outcome == event.outcome:
            return  # recorded already (close() hands over the last outcome once more)
        st.pause_outcome = event.outcome
        st.pause_requests = event.requests
        st.pause_seconds = round(event.seconds, 3)
        if event.outcome == "landed":
            self.counts["pauses_landed"] += 1
        self.monitor.save()

    def close(self) -> None:
        """Stop the printer watcher (a pending pause gets a few request timeouts to land) and save
        what the monitor has not saved yet."""
        if self.watcher is not None:
            self.watcher.close(wait_s=SHUTDOWN_PAUSE_WAIT * self.watcher.settings.timeout_s)
            if self.watcher.last_outcome is not None:  # posted too late for the output thread
                self.on_event(self.watcher.last_outcome)
        self.monitor.flush()

    def stats(self) -> Mapping[str, Any]:
        """Alert counts, the current level, the scene's view and the pause's state."""
        sample = self.monitor.last_sample
        st = self.monitor.state
        out: dict[str, Any] = {
            **self.counts,
            "level": str(self.monitor.level),
            "active": self.monitor.alert_active,
            "score": round(sample.score, 4) if sample else None,
            "smoothed": round(sample.smoothed, 4) if sample else None,
            "pause": {
                "outcome": st.pause_outcome,
                "requests": st.pause_requests,
                "seconds": st.pause_seconds,
            },
        }
        if self.views is not None:
            out["view"] = {
                "view": self.views.view,
                "blocked_samples": self.views.blocked_samples,
                **self.views.counts,
            }
        if self.watcher is not None:
            out["printer"] = self.watcher.stats()
        return out

    # -- inside --------------------------------------------------------------------------------

    def _follow_print(self, state: PrintState | None, now: float) -> list[ViewEvent]:
        """Forget the learnt scene when a new print starts or the print resumes."""
        if self.scene is None or self.views is None or state is None:
            return []
        st = self.monitor.state
        if state.status == PrintStatus.PRINTING and st.print_status == PrintStatus.PAUSED.value:
            why = "the print was resumed: learning its scene again"
        elif state.status in (PrintStatus.PRINTING, PrintStatus.PAUSED) and self.monitor.is_new_print(state):
            why = "a new print started: learning its scene"
        else:
            return []
        self.scene.reset()
        self._last_verdict = None
        return self.views.reset(now, state.job_name, why)

    def _judge(self, result: FrameResult, state: PrintState | None, now: float) -> SceneVerdict | None:
        """The scene check's verdict on a frame that will be a sample; None when not judged."""
        if self.scene is None or not self.monitor.sample_due(now):
            return None
        if state is not None and state.status != PrintStatus.PRINTING:
            return None
        if result.skipped_inference:  # the change gate saw nothing new: the scene is as it was
            return self._last_verdict
        frame = result.frame
        self._last_verdict = self.scene.judge(frame.image, result.detections, (frame.width, frame.height))
        return self._last_verdict

    def _ask_for_pause(self, event: AlertEvent) -> None:
        st = self.monitor.state
        episode = st.alerts_this_print
        if st.pause_episode == episode and st.pause_outcome in ("pending", "landed"):
            return  # this episode's pause is already asked for
        if self.watcher is None:
            return  # no printer (replay, or printer.kind none, said at start-up)
        st.pause_episode, st.pause_outcome, st.pause_requested_at = episode, "pending", time.time()
        st.pause_requests, st.pause_seconds = 0, None
        self.monitor.save()
        self.counts["pauses_asked"] += 1
        self.watcher.request_pause(PauseRequest(st.print_name, episode, event.reason, st.pause_requested_at))


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
