"""Print-failure score and the alert state machine that decides when to warn and when to act.

The method is Obico's (TheSpaghettiDetective, ``obico-server`` ``backend/lib/prediction.py``,
``backend/config/settings.py``, ``backend/api/octoprint_views.py``), whose parameters were
found by a grid search over real failed prints sampled once every 10 s:

1. **Per-frame score** ``p``: the sum of the confidences of the failure detections in the
   frame (Obico sums every box its one-class model finds above 0.08). We weight each label
   (``spaghetti`` 1.0, ``adhesion`` 0.5, other labels 0) and by default sum too: several
   failure boxes are more evidence than one, and Obico's thresholds are calibrated on sums.
   ``aggregate: max`` is there for models that report one failure as many overlapping boxes.
2. **Smoothing**: an exponentially weighted mean of ``p`` (span 12 samples), a short rolling
   mean over this print (310 samples) and a long rolling mean over the printer's lifetime
   (7200 samples, ~20 h: the camera's base noise level, kept across prints; on a new install
   it starts as if it had seen an hour of clean frames).
3. **Levels**: the signal is the EWM minus the long mean. It must exceed
   ``clamp(short_mean_excess * 3.8, threshold, threshold_high)``: at least 0.38, more when
   this print has been noisy all along, never more than 0.78. ``warn`` fires at 1x that level
   and ``act`` (pause, when configured) at 1.75x, as Obico escalates "warning" to "error".
   Unlike Obico we hold the short mean still while alerting, so that a failure does not
   raise its own bar before it can escalate to act.
4. **Not crying wolf**: no alerts in the first 30 samples of a print (Obico's safe frames);
   at least 90 s between alerts (Obico's cooldown), except that a warning may always
   escalate to act; one warning and one act per episode, an episode ending only when the
   signal falls below 0.8x the level (hysteresis); a cap per print.
5. **Resume**: Obico treats resuming as acknowledging the alert. Here a resume restarts the
   smoothing from a clean state, waits a few samples, and takes the score level the user
   accepted by resuming (mess still in view) as the print's new zero, so the same scene does
   not pause the print again; only a score that rises again does.

``AlertMonitor`` is pure logic with an injectable clock: feed it detections (or scores),
the printer's state and a time, and it returns ``AlertEvent``s. Its state is saved
atomically after every change so that an agent restarted mid-print carries on where it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

import numpy as np

from agent.alerts.events import LEVEL_RANK, AlertEvent, AlertLevel, EventKind, Sample, log_event
from agent.alerts.score import failure_score
from agent.alerts.state import MonitorState, StateFile
from agent.config.alerts import AlertSettings
from agent.detections import Detections
from agent.printer.state import PrintState, PrintStatus

log = logging.getLogger(__name__)

# Two readings of the same print may disagree this much in elapsed time / start time (s).
SAME_PRINT_TOLERANCE_S = 60.0


class AlertMonitor:
    """Turns per-frame failure scores and the printer's state into warn / act / clear events.

    Call ``update`` once per analysed frame with the printer's current state. Only frames
    taken while printing count; a new print (another job name, a job restarted, a print
    seen ending) resets the print's state; a resume restarts smoothing from a clean state.
    No threads and no I/O besides saving ``state_file``.
    """

    def __init__(self, settings: AlertSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._clock = clock
        self._alpha = 2.0 / (settings.ewm_span + 1)
        self._unsaved_at: float | None = None  # time of the newest sample not yet in state_file
        self._unknown_logged = False
        self.last_sample: Sample | None = None
        self._file = StateFile(settings.state_file) if settings.state_file else None
        self.state = self._file.load() if self._file is not None else MonitorState()
        if self.state.long_count == 0:
            self.state.long_count = settings.long_mean_prior_samples

    # -- public API --------------------------------------------------------------------------

    @property
    def level(self) -> AlertLevel:
        """The current level of the smoothed signal (with hysteresis)."""
        return AlertLevel(self.state.level)

    @property
    def alert_active(self) -> bool:
        """True while a warn or act alert has been sent and not cleared."""
        return self.state.notified != AlertLevel.OK.value

    def update(
        self,
        detections: Detections,
        frame_id: str | None = None,
        now: float | None = None,
        print_state: PrintState | None = None,
        *,
        image_size: tuple[int, int] | None = None,
    ) -> list[AlertEvent]:
        """Count one frame's detections; the events it triggers (usually none).

        ``now`` is epoch seconds (default: the clock); ``print_state`` None means no printer
        integration (one untracked print, always printing); ``image_size`` is ``(width,
        height)``, needed with an ``area_of_interest``.
        """
        score = failure_score(detections, self.settings, image_size)
        return self.update_score(score, frame_id=frame_id, now=now, print_state=print_state)

    def update_score(
        self,
        score: float | None,
        *,
        frame_id: str | None = None,
        now: float | None = None,
        print_state: PrintState | None = None,
    ) -> list[AlertEvent]:
        """``update`` for an already computed frame score. ``None``: the frame is not a sample (the
        camera did not see the print, see ``agent.alerts.scene``); it still follows the printer's
        state and takes the sample's time slot, but leaves the smoothing alone."""
        now = self._clock() if now is None else float(now)
        ps = print_state if print_state is not None else PrintState.untracked(now)
        if ps.status == PrintStatus.UNKNOWN:
            if not self._unknown_logged:
                log.info("printer state unknown (%s): frames are not counted until it answers", ps.raw_state)
                self._unknown_logged = True
            return []
        self._unknown_logged = False
        events, changed = self._observe(ps, score, frame_id, now)
        durable = bool(events) or changed == "durable"
        if durable:
            self._save(now, durable=True)
        elif changed:
            self._unsaved_at = now
            # real seconds, not the sample clock: a replay at full speed must not save every frame
            since = time.monotonic() - (self._file.saved_monotonic if self._file is not None else 0.0)
            if since >= self.settings.state_save_interval_s:
                self._save(now, durable=False)
        for event in events:
            log_event(event)
        return events

    def is_new_print(self, ps: PrintState) -> bool:
        """True when ``ps`` (printing or paused) is not the print the monitor follows."""
        return self._is_new_print(ps)

    def sample_due(self, now: float) -> bool:
        """True when a frame at ``now`` would be a sample (``min_sample_interval_s`` since the last)."""
        return self._sample_due(now)

    def _observe(
        self, ps: PrintState, score: float | None, frame_id: str | None, now: float
    ) -> tuple[list[AlertEvent], Literal["", "sample", "durable"]]:
        """Apply one reading; the events and how much changed ("" nothing, "durable" print state)."""
        st = self.state
        events: list[AlertEvent] = []
        shown = 0.0 if score is None else score  # the score a clear event reports
        if ps.status == PrintStatus.IDLE:
            if not st.has_print or st.print_ended:
                return events, ""
            log.info("print %r ended (%s)", st.print_name, ps.raw_state or "idle")
            events += self._clear_if_active(now, shown, frame_id, "the print ended")
            st.print_ended = True
            st.print_status = PrintStatus.IDLE.value
            return events, "durable"

        changed: Literal["", "sample", "durable"] = ""
        if self._is_new_print(ps):
            events += self._clear_if_active(now, shown, frame_id, "a new print started")
            self._start_print(ps, now)
            changed = "durable"
        elif st.print_status == PrintStatus.PAUSED.value and ps.status == PrintStatus.PRINTING:
            events += self._resume(now, shown, frame_id)
        if st.print_status != ps.status.value:
            changed = "durable"
        st.print_status = ps.status.value
        if ps.elapsed_s is not None:
            st.print_elapsed_s = ps.elapsed_s
        if ps.started_at is not None:
            st.print_started_at = ps.started_at
        if ps.status == PrintStatus.PRINTING and self._sample_due(now):
            if score is None:
                st.last_sample_at = now
            else:
                events += self._sample(score, frame_id, now)
            changed = changed or "sample"
        return events, changed

    # -- print tracking ----------------------------------------------------------------------

    def _is_new_print(self, ps: PrintState) -> bool:
        st = self.state
        if not st.has_print or st.print_ended or ps.job_name != st.print_name:
            return True
        tol = SAME_PRINT_TOLERANCE_S
        if (
            ps.elapsed_s is not None
            and st.print_elapsed_s is not None
            and ps.elapsed_s < st.print_elapsed_s - tol
        ):
            return True  # the job went back to its start: the same file printed again
        return (
            ps.started_at is not None
            and st.print_started_at is not None
            and abs(ps.started_at - st.print_started_at) > tol
        )

    def _start_print(self, ps: PrintState, now: float) -> None:
        st = self.state
        st.has_print, st.print_ended = True, False
        st.print_name, st.print_first_seen_at = ps.job_name, now
        st.print_started_at, st.print_elapsed_s = ps.started_at, ps.elapsed_s
        st.ewm, st.short_mean, st.short_count, st.samples_this_print = 0.0, 0.0, 0, 0
        st.grace_left = self.settings.startup_grace_samples
        st.baseline, st.baseline_scores = 0.0, None
        st.level = st.notified = AlertLevel.OK.value
        st.alerts_this_print, st.last_alert_at, st.last_sample_at = 0, None, None
        st.cap_logged = False
        st.history = []
        st.pause_episode, st.pause_outcome, st.pause_requested_at = 0, "", None
        st.pause_requests, st.pause_seconds = 0, None
        log.info(
            "%s: alert state reset; no alerts for its first %d samples",
            f"new print {ps.job_name!r}" if ps.job_name else "watching the camera's print",
            st.grace_left,
        )

    def _resume(self, now: float, score: float, frame_id: str | None) -> list[AlertEvent]:
        st = self.state
        events = self._clear_if_active(now, score, frame_id, "the print was resumed")
        st.ewm = 0.0
        st.level = st.notified = AlertLevel.OK.value
        st.grace_left = max(st.grace_left, self.settings.resume_grace_samples)
        st.baseline_scores = []
        st.last_sample_at = None
        log.info(
            "print %r resumed: smoothing restarts; the mean score of the next %d samples becomes its new zero",
            st.print_name,
            st.grace_left,
        )
        return events

    # -- scoring -----------------------------------------------------------------------------

    def _sample_due(self, now: float) -> bool:
        last = self.state.last_sample_at
        return last is None or not (0 <= now - last < self.settings.min_sample_interval_s)

    def _sample(self, score: float, frame_id: str | None, now: float) -> list[AlertEvent]:
        s, st = self.settings, self.state
        st.ewm = self._alpha * score + (1.0 - self._alpha) * st.ewm
        if not (s.freeze_short_mean_while_alerting and st.level != AlertLevel.OK.value):
            st.short_count += 1
            st.short_mean += (score - st.short_mean) / min(st.short_count, s.short_window_samples)
        st.long_count += 1
        st.long_mean += (score - st.long_mean) / min(st.long_count, s.long_window_samples)
        st.samples_this_print += 1
        st.last_sample_at = now
        st.history.append([now, score, st.ewm])
        del st.history[: -s.history_samples]

        in_grace = st.grace_left > 0
        if in_grace:
            st.grace_left -= 1
            if st.baseline_scores is not None:
                st.baseline_scores.append(score)
                if st.grace_left == 0:
                    # Start the smoothing at the level the user accepted by resuming.
                    st.baseline = float(np.mean(st.baseline_scores))
                    st.ewm = st.baseline
                    st.baseline_scores = None
                    log.info("print %r: score level after resume is %.3f", st.print_name, st.baseline)

        base = min(max((st.short_mean - st.long_mean) * s.short_mean_multiple, s.threshold), s.threshold_high)
        warn_level, act_level = base * s.warn_multiplier, base * s.act_multiplier
        signal = st.ewm - max(st.long_mean, st.baseline)
        level = (
            AlertLevel.OK
            if in_grace
            else _next_level(self.level, signal, warn_level, act_level, s.clear_ratio)
        )
        st.level = level.value
        self.last_sample = Sample(
            at=now,
            frame_id=frame_id,
            score=score,
            smoothed=st.ewm,
            short_mean=st.short_mean,
            long_mean=st.long_mean,
            baseline=st.baseline,
            signal=signal,
            warn_level=warn_level,
            act_level=act_level,
            level=level,
            in_grace=in_grace,
        )
        return self._decide(level, now, score, frame_id)

    def _decide(self, level: AlertLevel, now: float, score: float, frame_id: str | None) -> list[AlertEvent]:
        s, st = self.settings, self.state
        notified = AlertLevel(st.notified)
        smp = self.last_sample
        assert smp is not None
        if level == AlertLevel.OK:
            if notified == AlertLevel.OK:
                return []
            reason = (
                f"the smoothed signal {smp.signal:.2f} fell below {s.clear_ratio:g}x the warn level "
                f"{smp.warn_level:.2f}"
            )
            return self._clear_if_active(now, score, frame_id, reason)
        if LEVEL_RANK[level] <= LEVEL_RANK[notified]:
            return []  # already said so in this episode
        if st.alerts_this_print >= s.max_alerts_per_print:
            if not st.cap_logged:
                log.warning(
                    "print %r: %s suppressed, %d alerts already sent for this print (max_alerts_per_print)",
                    st.print_name,
                    level.value,
                    st.alerts_this_print,
                )
                st.cap_logged = True
            return []
        escalation = notified != AlertLevel.OK
        if not escalation and st.last_alert_at is not None:
            since = now - st.last_alert_at
            if since < 0:  # the clock went back: restart the cooldown rather than wait for it
                st.last_alert_at, since = now, 0.0
            if since < s.cooldown_s:
                log.debug("%s held back: %.0f s of cooldown left", level.value, s.cooldown_s - since)
                return []
        st.notified = level.value
        st.alerts_this_print += 1
        st.last_alert_at = now
        if level == AlertLevel.ACT:
            reason = (
                f"the smoothed signal {smp.signal:.2f} rose above the act level {smp.act_level:.2f} "
                f"({s.act_multiplier:g}x {smp.act_level / s.act_multiplier:.2f}); action: {s.action}"
            )
        else:
            reason = (
                f"the smoothed signal {smp.signal:.2f} rose above the warn level {smp.warn_level:.2f} "
                f"({s.warn_multiplier:g}x {smp.warn_level / s.warn_multiplier:.2f})"
            )
        reason += f"; this frame scored {score:.2f}"
        kind: EventKind = "act" if level == AlertLevel.ACT else "warn"
        return [self._event(kind, now, reason, score, frame_id)]

    def _clear_if_active(
        self, now: float, score: float, frame_id: str | None, reason: str
    ) -> list[AlertEvent]:
        if not self.alert_active:
            return []
        self.state.notified = AlertLevel.OK.value
        return [self._event("clear", now, reason, score, frame_id)]

    def _event(
        self, kind: EventKind, now: float, reason: str, score: float, frame_id: str | None
    ) -> AlertEvent:
        s, st = self.settings, self.state
        smp = self.last_sample
        return AlertEvent(
            kind=kind,
            at=now,
            reason=reason,
            print_name=st.print_name,
            frame_id=frame_id,
            score=score,
            smoothed=st.ewm,
            signal=smp.signal if smp else 0.0,
            warn_level=smp.warn_level if smp else s.threshold * s.warn_multiplier,
            act_level=smp.act_level if smp else s.threshold * s.act_multiplier,
            short_mean=st.short_mean,
            long_mean=st.long_mean,
            baseline=st.baseline,
            action=s.action if kind == "act" else "none",
            alerts_this_print=st.alerts_this_print,
            max_alerts_per_print=s.max_alerts_per_print,
            history=tuple((h[0], h[1], h[2]) for h in st.history),
        )

    # -- persistence -------------------------------------------------------------------------

    def save(self, now: float | None = None) -> None:
        """Save the state now, durably (a pause asked for or landed)."""
        self._save(self._clock() if now is None else now, durable=True)

    def flush(self) -> None:
        """Save samples not yet saved (``state_save_interval_s``); call on a clean exit."""
        if self._unsaved_at is not None:
            self._save(self._unsaved_at, durable=True)

    def _save(self, now: float, *, durable: bool) -> None:
        if self._file is not None and self._file.save(self.state, now, durable=durable):
            self._unsaved_at = None


def _next_level(
    current: AlertLevel, signal: float, warn: float, act: float, clear_ratio: float
) -> AlertLevel:
    """The level after one sample: up at 1x a level, down only below ``clear_ratio`` x it."""
    if signal > act or (current == AlertLevel.ACT and signal >= act * clear_ratio):
        return AlertLevel.ACT
    if signal > warn or (current != AlertLevel.OK and signal >= warn * clear_ratio):
        return AlertLevel.WARN
    return AlertLevel.OK
