"""What ``edge-agent replay`` shows: the curve of a replayed recording as a table, JSON lines, a
summary and a plot. Each point is one frame: its simulated time, the monitor's sample when it was
counted, the scene check's verdict, and the alert and view events it triggered."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.alerts import AlertEvent, Sample
from agent.alerts.scene import SceneVerdict
from agent.alerts.view import ViewEvent
from agent.config.alerts import AlertSettings
from agent.utc import utc_iso

EVENT_KINDS = ("warn", "act", "clear", "view_changed", "obstructed", "view_restored")


@dataclass
class CurvePoint:
    """One replayed frame: its simulated time (s since the first frame), the monitor's sample when
    the frame was counted (None when it came too soon after the last one, or the camera did not see
    the print), the scene check's verdict (None when not judged), and the events it triggered."""

    name: str
    frame_id: str
    t_s: float
    at: float
    sample: Sample | None
    events: list[AlertEvent] = field(default_factory=list)
    verdict: SceneVerdict | None = None
    views: list[ViewEvent] = field(default_factory=list)

    @property
    def left_out(self) -> bool:
        """True when the scene check kept this frame out of the smoothing."""
        return self.verdict is not None and not self.verdict.counts

    @property
    def warn_at(self) -> float | None:
        """The smoothed score at which ``warn`` fires at this sample."""
        s = self.sample
        return None if s is None else s.warn_level + (s.smoothed - s.signal)

    @property
    def act_at(self) -> float | None:
        """The smoothed score at which ``act`` fires at this sample."""
        s = self.sample
        return None if s is None else s.act_level + (s.smoothed - s.signal)


@dataclass
class Replay:
    """The curve of one recording and what produced it."""

    recording: Path
    description: str
    model: str
    runtime: str
    interval_s: float
    settings: AlertSettings
    points: list[CurvePoint]

    @property
    def events(self) -> list[tuple[CurvePoint, AlertEvent]]:
        """Every alert event with the frame that triggered it, in order."""
        return [(p, e) for p in self.points for e in p.events]

    @property
    def view_events(self) -> list[tuple[CurvePoint, ViewEvent]]:
        """Every view event with the frame that triggered it, in order."""
        return [(p, v) for p in self.points for v in p.views]

    @property
    def counted(self) -> int:
        """Frames the monitor counted as samples."""
        return sum(p.sample is not None for p in self.points)


# -- output --------------------------------------------------------------------------------------


def clock_text(seconds: float) -> str:
    """Elapsed seconds as ``H:MM:SS``."""
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _event_text(event: AlertEvent) -> str:
    if event.kind == "act":
        return "ACT (would pause)" if event.action == "pause" else "ACT"
    return event.kind.upper() if event.kind == "warn" else "clear"


def _level_text(sample: Sample | None) -> str:
    if sample is None:
        return "-"
    return "grace" if sample.in_grace else str(sample.level)


def settings_line(settings: AlertSettings) -> str:
    """The alert settings that shape the curve, in one line."""
    labels = ", ".join(f"{name} {weight:g}" for name, weight in settings.failure_labels.items())
    return (
        f"alerts: {labels} ({settings.aggregate}, min score {settings.min_detection_score:g}); level "
        f"{settings.threshold:g}..{settings.threshold_high:g} x{settings.short_mean_multiple:g} short mean; "
        f"warn x{settings.warn_multiplier:g}, act x{settings.act_multiplier:g}; EWM span {settings.ewm_span}; "
        f"grace {settings.startup_grace_samples} samples; cooldown {settings.cooldown_s:g} s; "
        f"action {settings.action}"
    )


def table_lines(replay: Replay) -> Iterator[str]:
    """The score curve as an aligned text table, one row per frame."""
    width = min(max([len("frame"), *(len(p.name) for p in replay.points)]), 40)
    yield (
        f"{'frame':<{width}}  {'time':>8}  {'score':>6}  {'smoothed':>8}  {'warn at':>7}  "
        f"{'act at':>7}  {'level':<5}  event"
    )
    for p in replay.points:
        s = p.sample
        name = p.name if len(p.name) <= width else "…" + p.name[-(width - 1) :]
        if s is None:
            cells = f"{'-':>6}  {'-':>8}  {'-':>7}  {'-':>7}"
            note = "not counted (sooner than alerts.min_sample_interval_s)"
            if p.left_out and p.verdict is not None:
                note = f"left out: {p.verdict.view} ({p.verdict.reason})"
        else:
            cells = f"{s.score:6.3f}  {s.smoothed:8.3f}  {p.warn_at:7.3f}  {p.act_at:7.3f}"
            note = ""
        events = ", ".join([*(_event_text(e) for e in p.events), *(v.kind.upper() for v in p.views)])
        yield f"{name:<{width}}  {clock_text(p.t_s):>8}  {cells}  {_level_text(s):<5}  {events or note}".rstrip()


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def point_record(p: CurvePoint) -> dict[str, Any]:
    """The JSON object printed for one frame with ``--json``."""
    s = p.sample
    record: dict[str, Any] = {
        "frame": p.name,
        "frame_id": p.frame_id,
        "t_s": round(p.t_s, 3),
        "timestamp": utc_iso(p.at),
        "counted": s is not None,
    }
    if s is not None:
        record.update(
            score=_r(s.score),
            smoothed=_r(s.smoothed),
            signal=_r(s.signal),
            warn_level=_r(s.warn_level),
            act_level=_r(s.act_level),
            warn_at=_r(p.warn_at),
            act_at=_r(p.act_at),
            short_mean=_r(s.short_mean),
            long_mean=_r(s.long_mean),
            baseline=_r(s.baseline),
            level=str(s.level),
            in_grace=s.in_grace,
        )
    v = p.verdict
    if v is not None:
        record["view"] = v.view
        record["scene"] = {
            "changed_share": _r(v.changed_share),
            "foreign_share": _r(v.foreign_share),
            "hidden_share": _r(v.hidden_share),
            "context": v.context,
            "reason": v.reason,
        }
    record["events"] = [
        *({"kind": e.kind, "action": e.action, "reason": e.reason} for e in p.events),
        *({"kind": e.kind, "action": "none", "reason": e.reason, "samples": e.samples} for e in p.views),
    ]
    return record


def summary(replay: Replay) -> dict[str, Any]:
    """Counts, the first warn and act, and the peak of the signal against its warn level."""
    samples = [p for p in replay.points if p.sample is not None]
    judged = [p for p in samples if p.sample is not None and not p.sample.in_grace]
    first: dict[str, dict[str, Any] | None] = {"warn": None, "act": None}
    for p, e in replay.events:
        if e.kind in first and first[e.kind] is None:
            first[e.kind] = {"frame": p.name, "t_s": round(p.t_s, 3)}
    peak: dict[str, Any] | None = None
    if judged:
        top = max(judged, key=lambda p: p.sample.signal - p.sample.warn_level)  # type: ignore[union-attr]
        s = top.sample
        assert s is not None
        peak = {
            "frame": top.name,
            "t_s": round(top.t_s, 3),
            "signal": _r(s.signal),
            "warn_level": _r(s.warn_level),
            "act_level": _r(s.act_level),
        }
    return {
        "recording": str(replay.recording),
        "model": replay.model,
        "runtime": replay.runtime,
        "interval_s": replay.interval_s,
        "frames": len(replay.points),
        "counted": len(samples),
        "in_grace": len(samples) - len(judged),
        "events": {
            k: sum(e.kind == k for _, e in replay.events) + sum(v.kind == k for _, v in replay.view_events)
            for k in EVENT_KINDS
        },
        "left_out": sum(p.left_out for p in replay.points),
        "first_warn": first["warn"],
        "first_act": first["act"],
        "peak": peak,
    }


def summary_lines(replay: Replay, info: dict[str, Any]) -> Iterator[str]:
    """The human summary under the table: events with their reasons and a tuning hint."""
    s = replay.settings
    yield (
        f"{info['frames']} frames, {info['counted']} counted as samples ({info['in_grace']} in the startup "
        f"grace), one every {replay.interval_s:g} s: {clock_text(replay.points[-1].t_s)} simulated"
    )
    too_soon = info["frames"] - info["counted"] - info["left_out"]
    if too_soon > 0:
        yield (
            f"note: alerts.min_sample_interval_s is {s.min_sample_interval_s:g} s, so with one frame every "
            f"{replay.interval_s:g} s {too_soon} of {info['frames']} frames came too soon to count; pass "
            f"--interval-s {s.min_sample_interval_s:g} or more to count every frame"
        )
    for p, e in replay.events:
        yield f"{_event_text(e)} at {p.name} ({clock_text(p.t_s)}): {e.reason}"
    for p, v in replay.view_events:
        yield f"{v.kind.upper()} at {p.name} ({clock_text(p.t_s)}) after {v.samples} samples: {v.reason}"
    if info["left_out"]:
        yield (
            f"{info['left_out']} frames were left out of the failure score: the camera did not see the print "
            "scene learnt at its start (alerts.scene)"
        )
    peak = info["peak"]
    if peak is None:
        yield (
            f"no frame was judged: all {info['counted']} samples fell in the startup grace "
            f"(alerts.startup_grace_samples = {s.startup_grace_samples})"
        )
        return
    if info["first_warn"] is None:
        yield (
            f"no alert: the signal (smoothed minus baseline) peaked at {peak['signal']:.3f} at {peak['frame']} "
            f"({clock_text(peak['t_s'])}), where warn needed more than {peak['warn_level']:.3f}. If this "
            f"recording shows a failure, lower alerts.threshold (now {s.threshold:g}) or "
            "alerts.short_mean_multiple, or check alerts.failure_labels and the detector's thresholds"
        )
    elif info["first_act"] is None:
        yield (
            f"warned but never acted: act needs {s.act_multiplier:g}x the level; the signal peaked at "
            f"{peak['signal']:.3f} against an act level of {peak['act_level']:.3f} at {peak['frame']}"
        )


def write_plot(replay: Replay, path: Path) -> bool:
    """Draw the curve into a PNG at ``path``; False (nothing written) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    hours = replay.points[-1].t_s > 3 * 3600
    scale, unit = (3600.0, "h") if hours else (60.0, "min")
    pts: list[CurvePoint] = []
    samples: list[Sample] = []
    for p in replay.points:
        if p.sample is not None:
            pts.append(p)
            samples.append(p.sample)
    x = [p.t_s / scale for p in pts]
    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=100)
    try:
        ax.scatter(x, [s.score for s in samples], s=8, color="0.6", label="frame score", zorder=2)
        ax.plot(x, [s.smoothed for s in samples], color="tab:blue", lw=1.8, label="smoothed (EWM)", zorder=3)
        ax.step(
            x, [p.warn_at for p in pts], where="post", color="tab:orange", ls="--", lw=1.2, label="warn at"
        )
        ax.step(x, [p.act_at for p in pts], where="post", color="tab:red", ls="--", lw=1.2, label="act at")
        grace = [p.t_s / scale for p, s in zip(pts, samples, strict=True) if s.in_grace]
        if grace:
            ax.axvspan(min(grace), max(grace), color="0.92", zorder=0, label="grace (not judged)")
        colours = {"warn": "tab:orange", "act": "tab:red", "clear": "tab:green"}
        for p, e in replay.events:
            ax.axvline(p.t_s / scale, color=colours[e.kind], lw=1, alpha=0.7, zorder=1)
            ax.annotate(
                _event_text(e),
                (p.t_s / scale, 1.0),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="top",
                ha="right",
                fontsize=8,
                color=colours[e.kind],
            )
        ax.set_xlabel(f"simulated time ({unit}), one frame every {replay.interval_s:g} s")
        ax.set_ylabel("failure score")
        ax.set_title(f"{replay.recording.name}: {replay.model}", fontsize=10)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return True
