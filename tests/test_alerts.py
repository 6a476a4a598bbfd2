"""Failure score and alert state machine, driven by synthetic score sequences and a simulated clock.

Times are plain numbers (epoch seconds) passed to ``update_score``; nothing sleeps.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from pydantic import ValidationError

from agent.alerts import (
    AlertLevel,
    AlertMonitor,
    alert_payload,
    failure_score,
    validate_failure_labels,
)
from agent.config.alerts import AlertSettings
from agent.detections import Detections
from agent.errors import ConfigError
from agent.printer import PrintState, PrintStatus

T0 = 1_760_000_000.0  # a fixed epoch for the simulated clock
DT = 10.0  # one sample every 10 s, as Obico's parameters assume
LABELS = ("nozzle", "adhesion", "spaghetti", "print", "raft")


def printing(name: str = "benchy.gcode", **kw: float) -> PrintState:
    return PrintState(PrintStatus.PRINTING, job_name=name, **kw)


def paused(name: str = "benchy.gcode") -> PrintState:
    return PrintState(PrintStatus.PAUSED, job_name=name)


IDLE = PrintState(PrintStatus.IDLE, raw_state="Operational")


class Run:
    """Feeds a monitor one score per simulated tick and records the events by sample index."""

    def __init__(self, monitor: AlertMonitor, t: float = T0) -> None:
        self.monitor = monitor
        self.t = t
        self.i = 0
        self.events: list[tuple[int, str]] = []
        self.all_events: list = []

    def feed(self, scores, ps: PrintState | None = None, dt: float = DT) -> list[tuple[int, str]]:
        new: list[tuple[int, str]] = []
        for score in scores:
            evs = self.monitor.update_score(
                float(score), frame_id=f"frame{self.i}", now=self.t, print_state=ps or printing()
            )
            new += [(self.i, e.kind) for e in evs]
            self.all_events += evs
            self.t += dt
            self.i += 1
        self.events += new
        return new


def quiet_settings(**kw) -> AlertSettings:
    """Crisp settings for step-by-step checks: no smoothing (ewm = score), no startup grace."""
    base = {"ewm_span": 1, "startup_grace_samples": 0}
    base.update(kw)
    return AlertSettings(**base)


# -- frame score ---------------------------------------------------------------------------------


def test_frame_score_weights_failure_labels_and_ignores_the_rest() -> None:
    det = Detections.create(
        [[10, 10, 50, 50], [60, 60, 100, 100], [0, 0, 200, 200], [10, 10, 20, 20], [0, 0, 5, 5]],
        [0.9, 0.8, 0.95, 0.05, 0.7],
        [2, 1, 3, 2, 7],  # spaghetti, adhesion, print, spaghetti below 0.08, an id without a name
        LABELS,
    )
    settings = AlertSettings()
    assert failure_score(det, settings) == pytest.approx(0.9 * 1.0 + 0.8 * 0.5)
    assert failure_score(det, AlertSettings(aggregate="max")) == pytest.approx(0.9)
    unnamed = AlertSettings(failure_labels={"class_7": 2.0})
    assert failure_score(det, unnamed) == pytest.approx(1.4)
    assert failure_score(Detections.empty(LABELS), settings) == 0.0


def test_area_of_interest_drops_detections_centred_off_the_bed() -> None:
    # 200 x 100 px frame; the bed is the right half. Spaghetti centred at x=30 (left), adhesion at x=150.
    det = Detections.create([[10, 10, 50, 50], [130, 40, 170, 80]], [0.9, 0.8], [2, 1], LABELS)
    settings = AlertSettings(area_of_interest=(0.5, 0.0, 1.0, 1.0))
    assert failure_score(det, settings, image_size=(200, 100)) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="image_size"):
        failure_score(det, settings)


def test_monitor_update_takes_detections() -> None:
    monitor = AlertMonitor(quiet_settings())
    det = Detections.create([[10, 10, 50, 50]], [0.9], [2], LABELS)
    monitor.update(det, "f0", T0, printing())
    assert monitor.last_sample is not None
    assert monitor.last_sample.score == pytest.approx(0.9)
    assert monitor.last_sample.frame_id == "f0"


# -- state machine -------------------------------------------------------------------------------


def test_noise_under_the_threshold_never_alerts() -> None:
    rng = np.random.default_rng(1)
    scores = rng.uniform(0.0, 0.25, 1500)
    scores[::60] = 1.0  # a lone false detection now and then
    run = Run(AlertMonitor(AlertSettings()))
    run.feed(scores)
    assert run.events == []
    assert run.monitor.state.samples_this_print == 1500


def test_a_step_up_warns_within_a_few_samples_then_acts() -> None:
    rng = np.random.default_rng(2)
    run = Run(AlertMonitor(AlertSettings(action="pause")))
    run.feed(rng.uniform(0.0, 0.1, 60))  # healthy stretch, past the 30-sample startup grace
    assert run.events == []
    step = run.i
    run.feed(np.full(30, 1.5))  # a real failure: spaghetti boxes summing to ~1.5 per frame
    kinds = [k for _, k in run.events]
    assert kinds == ["warn", "act"], run.events
    warn_at, act_at = (i - step for i, _ in run.events)
    assert warn_at < 4, "warn within 4 samples (40 s) of the failure appearing"
    assert warn_at < act_at < 12
    act = run.all_events[-1]
    assert act.action == "pause"
    assert act.print_name == "benchy.gcode"
    assert act.frame_id == f"frame{step + act_at}"
    assert run.monitor.alert_active


def test_no_alerts_during_the_startup_grace() -> None:
    run = Run(AlertMonitor(AlertSettings(startup_grace_samples=30)))
    run.feed(np.full(30, 2.0))  # failing from the first frame (or a scene the model misreads)
    assert run.events == []
    run.feed(np.full(10, 2.0))
    assert run.events[:1] in ([(30, "warn")], [(30, "act")]), "alerts start right after the grace"


def test_cooldown_holds_back_a_new_warning_for_90_seconds() -> None:
    run = Run(AlertMonitor(quiet_settings()))
    run.feed(np.zeros(50))
    run.feed([0.5])  # warn
    first = run.events[-1]
    run.feed([0.0])  # clear
    assert [k for _, k in run.events] == ["warn", "clear"]
    run.feed(np.full(12, 0.5))  # back above the warn level 10 s after clearing
    warns = [i for i, k in run.events if k == "warn"]
    assert len(warns) == 2
    assert (warns[1] - first[0]) * DT >= 90, "the second warning waits for the cooldown"
    assert (warns[1] - first[0]) * DT < 100, "and comes as soon as the cooldown is over"


def test_escalation_from_warn_to_act_is_not_delayed_by_the_cooldown() -> None:
    run = Run(AlertMonitor(quiet_settings()))
    run.feed(np.zeros(50))
    run.feed([0.5, 1.0])
    assert [k for _, k in run.events] == ["warn", "act"]
    assert run.events[1][0] - run.events[0][0] == 1


def test_cap_per_print_and_reset_for_the_next_print(caplog: pytest.LogCaptureFixture) -> None:
    run = Run(AlertMonitor(quiet_settings(max_alerts_per_print=2, cooldown_s=0)))
    run.feed(np.zeros(50))
    with caplog.at_level(logging.WARNING, logger="agent.alerts"):
        for _ in range(5):
            run.feed([0.5, 0.0])
    assert [k for _, k in run.events] == ["warn", "clear", "warn", "clear"]
    assert sum("max_alerts_per_print" in r.getMessage() for r in caplog.records) == 1
    run.feed(np.zeros(5), ps=printing("next.gcode"))
    run.feed([0.5], ps=printing("next.gcode"))
    assert run.events[-1][1] == "warn"


def test_hysteresis_clears_only_well_below_the_warn_level() -> None:
    run = Run(AlertMonitor(quiet_settings()))
    run.feed(np.zeros(100))
    run.feed([0.5])  # warn: level 0.38, clear below 0.8 x 0.38 = 0.304
    assert run.monitor.level == AlertLevel.WARN
    run.feed(np.full(5, 0.34))  # under the warn level but above the clear level
    assert [k for _, k in run.events] == ["warn"]
    assert run.monitor.level == AlertLevel.WARN
    run.feed([0.25])
    assert [k for _, k in run.events] == ["warn", "clear"]
    assert run.monitor.level == AlertLevel.OK
    run.feed(np.full(20, 0.34))  # from OK, the same value is not enough to warn again
    assert [k for _, k in run.events] == ["warn", "clear"]


def test_act_drops_to_warn_without_a_new_event_and_does_not_act_twice() -> None:
    run = Run(AlertMonitor(quiet_settings(cooldown_s=0)))
    run.feed(np.zeros(100))
    run.feed([1.0, 0.45, 1.0, 0.45, 1.0])
    assert [k for _, k in run.events] == ["act"]


def test_a_new_print_resets_the_print_state_and_clears_an_active_alert() -> None:
    run = Run(AlertMonitor(AlertSettings(startup_grace_samples=5)))
    run.feed(np.zeros(40))
    run.feed(np.full(20, 1.5))
    assert [k for _, k in run.events] == ["warn", "act"]
    long_mean = run.monitor.state.long_mean
    new = run.feed(np.full(5, 1.5), ps=printing("bracket.gcode"))
    assert new == [(60, "clear")]
    assert "new print" in run.all_events[-1].reason
    st = run.monitor.state
    assert st.print_name == "bracket.gcode"
    assert st.alerts_this_print == 0
    assert st.samples_this_print == 5
    assert st.long_mean > long_mean * 0.9, "the printer's long-term noise level survives prints"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("idle", printing()),  # the same file printed again after the last print was seen ending
        (printing(elapsed_s=3000.0), printing(elapsed_s=20.0)),  # restarted: elapsed time went back
        (printing(started_at=T0 - 3000), printing(started_at=T0 + 600)),  # Moonraker: another start time
    ],
)
def test_the_same_file_printed_again_is_a_new_print(before, after) -> None:
    run = Run(AlertMonitor(AlertSettings(startup_grace_samples=3)))
    first = printing() if before == "idle" else before
    run.feed(np.zeros(10), ps=first)
    if before == "idle":
        run.feed([0.0], ps=IDLE)
    run.feed([0.0], ps=after)
    assert run.monitor.state.samples_this_print == 1


def test_the_same_print_keeps_its_state_across_readings() -> None:
    run = Run(AlertMonitor(AlertSettings()))
    for k in range(20):
        run.feed([0.0], ps=printing(elapsed_s=100.0 + 10 * k, started_at=T0 - 100 + (k % 3)))
    assert run.monitor.state.samples_this_print == 20


def test_frames_count_only_while_printing() -> None:
    run = Run(AlertMonitor(quiet_settings()))
    run.feed(np.zeros(50))
    unknown = PrintState.unknown(T0, "connection refused")
    run.feed(np.full(10, 3.0), ps=paused())
    run.feed(np.full(10, 3.0), ps=unknown)
    run.feed(np.full(10, 3.0), ps=IDLE)
    assert run.events == []
    assert run.monitor.state.samples_this_print == 50


def test_frames_closer_than_the_sample_interval_are_not_counted() -> None:
    run = Run(AlertMonitor(AlertSettings()))
    run.feed(np.zeros(100), dt=1.0)  # a 1 fps pipeline
    assert 10 <= run.monitor.state.samples_this_print <= 13


def test_without_a_printer_the_camera_watches_one_long_print() -> None:
    monitor = AlertMonitor(AlertSettings(startup_grace_samples=3))
    kinds = []
    for i in range(40):
        events = monitor.update_score(0.0 if i < 20 else 1.5, now=T0 + DT * i)
        kinds += [e.kind for e in events]
    assert kinds == ["warn", "act"]


def test_after_resume_the_same_scene_does_not_alert_again_until_the_score_rises() -> None:
    run = Run(AlertMonitor(AlertSettings(action="pause")))
    run.feed(np.random.default_rng(3).uniform(0, 0.1, 60))
    run.feed(np.full(20, 1.5))
    assert [k for _, k in run.events] == ["warn", "act"]
    run.feed(np.full(30, 1.5), ps=paused())  # the pipeline paused the print; the user looks at it
    resume_at = run.i
    resumed = run.feed(np.full(200, 1.5))  # resumed with the mess still in view
    assert resumed[:1] == [(resume_at, "clear")], "the resume clears the alert"
    assert [k for _, k in resumed] == ["clear"], "no second warn or pause for the same scene"
    risen = run.feed(np.full(30, 3.0))  # a new failure on top of the old one
    assert [k for _, k in risen] == ["warn", "act"]


def test_resume_from_a_manual_pause_starts_smoothing_from_a_clean_state() -> None:
    run = Run(AlertMonitor(AlertSettings(resume_grace_samples=6)))
    run.feed(np.zeros(60))
    run.feed(np.full(3, 0.3))  # ewm rising, not yet alerting
    run.feed(np.zeros(5), ps=paused())
    run.feed(np.zeros(6))  # resume grace on a clean bed
    assert run.monitor.state.ewm == pytest.approx(0.0)
    assert run.monitor.state.baseline == pytest.approx(0.0)
    start = run.i
    first = run.feed(np.full(10, 1.5))[0]
    assert first[1] == "warn"
    assert first[0] - start < 4, "warns as fast as at the start of a print"


# -- persistence ---------------------------------------------------------------------------------


def test_state_survives_a_restart_mid_print_without_re_alerting(tmp_path) -> None:
    state_file = tmp_path / "state" / "alerts.json"
    settings = AlertSettings(state_file=state_file)
    run = Run(AlertMonitor(settings))
    run.feed(np.zeros(60), ps=printing(elapsed_s=600.0))
    run.feed(np.full(20, 1.5), ps=printing(elapsed_s=800.0))
    assert [k for _, k in run.events] == ["warn", "act"]
    run.monitor.flush()  # a clean exit (the alert stage's close)
    saved = json.loads(state_file.read_text())
    assert saved["samples_this_print"] == 80
    assert saved["notified"] == "act"

    restarted = Run(AlertMonitor(settings), t=run.t + 30)  # the agent restarts 30 s later
    assert restarted.monitor.alert_active
    assert restarted.monitor.state.samples_this_print == 80
    restarted.feed(np.full(40, 1.5), ps=printing(elapsed_s=830.0))
    assert restarted.events == [], "the same print carries on without a second alert"
    restarted.feed([0.0], ps=IDLE)
    assert [k for _, k in restarted.events] == ["clear"]


def test_samples_are_saved_at_most_every_interval_and_events_at_once(tmp_path) -> None:
    state_file = tmp_path / "alerts.json"
    settings = AlertSettings(state_file=state_file, state_save_interval_s=60.0, min_sample_interval_s=10.0)
    monitor = AlertMonitor(settings)
    saved = []
    for i in range(30):  # a sample every 10 s of sample time, all within a second of real time
        monitor.update_score(0.0, now=T0 + 10.0 * i, print_state=printing())
        saved.append(json.loads(state_file.read_text())["samples_this_print"])
    assert saved == [1] * 30, "the print's start is saved at once, samples wait for 60 real seconds"
    for i in range(30, 50):  # a failure: the warn event is saved at once with its samples
        monitor.update_score(1.5, now=T0 + 10.0 * i, print_state=printing())
    assert json.loads(state_file.read_text())["notified"] in ("warn", "act")
    monitor.flush()  # a clean exit
    assert json.loads(state_file.read_text())["samples_this_print"] == 50

    every = AlertSettings(state_file=tmp_path / "every.json", state_save_interval_s=0)
    eager = AlertMonitor(every)
    for i in range(5):
        eager.update_score(0.0, now=T0 + 10.0 * i, print_state=printing())
        assert json.loads((tmp_path / "every.json").read_text())["samples_this_print"] == i + 1


def test_a_resume_while_the_agent_was_down_is_seen_after_the_restart(tmp_path) -> None:
    settings = AlertSettings(state_file=tmp_path / "alerts.json", action="pause")
    run = Run(AlertMonitor(settings))
    run.feed(np.zeros(60))
    run.feed(np.full(20, 1.5))
    run.feed([1.5], ps=paused())  # paused by the act; then the agent stops
    restarted = Run(AlertMonitor(settings), t=run.t + 600)
    restarted.feed(np.full(100, 1.5))  # the user resumed while the agent was down
    assert [k for _, k in restarted.events] == ["clear"]
    assert restarted.monitor.state.baseline == pytest.approx(1.5)


def test_after_a_restart_a_different_print_starts_clean(tmp_path) -> None:
    settings = AlertSettings(state_file=tmp_path / "alerts.json", startup_grace_samples=5)
    run = Run(AlertMonitor(settings))
    run.feed(np.zeros(40))
    run.feed(np.full(20, 1.5))
    restarted = Run(AlertMonitor(settings), t=run.t + 3600)
    restarted.feed(np.zeros(3), ps=printing("other.gcode"))
    assert [k for _, k in restarted.events] == ["clear"]
    assert restarted.monitor.state.samples_this_print == 3
    assert restarted.monitor.state.alerts_this_print == 0


def test_an_unreadable_state_file_starts_clean(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    state_file = tmp_path / "alerts.json"
    state_file.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="agent.alerts"):
        monitor = AlertMonitor(AlertSettings(state_file=state_file))
    assert monitor.state.samples_this_print == 0
    assert "unreadable" in caplog.text
    monitor.update_score(0.1, now=T0, print_state=printing())
    assert json.loads(state_file.read_text())["version"] == 1


# -- payload and settings ------------------------------------------------------------------------


def test_alert_payload_carries_level_scores_history_and_snapshot() -> None:
    run = Run(AlertMonitor(AlertSettings(history_samples=10)))
    run.feed(np.zeros(60))
    run.feed(np.full(5, 1.5))
    event = run.all_events[0]
    payload = alert_payload(event, device_id="pi-printer")
    json.dumps(payload)
    assert payload["level"] == "warn"
    assert payload["active"] is True
    assert payload["device_id"] == "pi-printer"
    assert payload["print"] == "benchy.gcode"
    assert payload["frame_id"] == event.frame_id
    assert payload["timestamp"].endswith("Z")
    assert payload["history"][-1]["timestamp"] == payload["timestamp"]
    assert payload["score"] == pytest.approx(1.5)
    assert payload["smoothed"] > payload["warn_level"] * 0.9
    assert len(payload["history"]) == 10
    assert payload["history"][-1]["score"] == pytest.approx(1.5)
    assert "warn level" in payload["reason"]


def test_settings_refuse_impossible_values() -> None:
    with pytest.raises(ValidationError, match="area_of_interest"):
        AlertSettings(area_of_interest=(0.5, 0.0, 0.4, 1.0))
    with pytest.raises(ValidationError, match="act_multiplier"):
        AlertSettings(act_multiplier=0.5)
    with pytest.raises(ValidationError, match="failure label"):
        AlertSettings(failure_labels={})
    with pytest.raises(ValidationError):
        AlertSettings(cooldown_s=-1)
    with pytest.raises(ValidationError):
        AlertSettings(ewm_spam=12)  # typo: unknown keys are refused


def test_failure_labels_must_match_the_model() -> None:
    validate_failure_labels(AlertSettings(), LABELS)
    with pytest.raises(ConfigError, match="none of the model's labels"):
        validate_failure_labels(AlertSettings(failure_labels={"failure": 1.0}), LABELS)
