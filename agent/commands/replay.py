"""``edge-agent replay``: the print-failure alerts on a recording, to tune them before trusting them.

Runs the configured detector, failure score and alert monitor (through the very ``AlertStage``
that ``edge-agent run`` uses) over a folder of frames or a video, with a simulated clock: one
frame every ``--interval-s`` seconds (default: the config's ``source.interval_s``, else 10 s, as
Obico samples). Nothing leaves the machine: no printer is asked or paused, nothing is published,
and no alert state file is read or written: every replay starts from a fresh monitor, as at the
start of a print. Every frame is scored (the change gate does not apply).

It prints the score curve as a table (or JSON lines with ``--json``) and, with ``--plot``, draws
it into a PNG when matplotlib is installed. The table's ``warn at`` and ``act at`` columns are
on the same scale as ``smoothed``: the smoothed score at which the alert would fire, i.e. the
level plus the baseline it is measured from (the long mean, or the score accepted at a resume).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.alerts import AlertEvent, AlertMonitor, Sample, validate_failure_labels
from agent.alerts.stage import AlertEvents, AlertStage, SteppedClock
from agent.commands.common import note_demo_model
from agent.commands.values import number
from agent.config import AgentConfig, load_config
from agent.config.alerts import AlertSettings
from agent.config.pipeline import PipelineSettings
from agent.config.source import IMAGE_SUFFIXES, SourceKind, SourceSettings
from agent.detect.detector import open_detector
from agent.errors import ConfigError, UserError
from agent.flow import Outputs, Stage
from agent.frames import FrameResult
from agent.pipeline import Pipeline
from agent.sources import open_source
from agent.sources.folder import list_images
from agent.utc import utc_iso

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 10.0  # Obico samples a printer every 10 s; its parameters assume that rate


def add_replay_command(subparsers: Any) -> None:
    """Register ``edge-agent replay``."""
    parser = subparsers.add_parser(
        "replay",
        help="run the failure alerts on a recorded print and show the score curve",
        description="Run the configured detector, failure score and alert logic over a folder of "
        "frames (in name order) or a video, as if one frame came every --interval-s seconds, and "
        "print the score curve with the warn and act levels. No printer calls, no MQTT, no state "
        "file: use it to tune the alerts section on your own failed prints.",
    )
    parser.add_argument("--config", "-c", help="YAML config whose detector and alerts sections are used")
    parser.add_argument(
        "recording",
        nargs="?",
        metavar="FOLDER_OR_VIDEO",
        help="a folder of frames (e.g. a timelapse's JPEGs) or a video file; default: the config's "
        "source.url when it is one",
    )
    parser.add_argument(
        "--interval-s",
        type=number(float, gt=0, le=86400),
        metavar="S",
        help="simulated seconds between frames (default: --video-every-s, else source.interval_s, else 10)",
    )
    parser.add_argument(
        "--video-every-s",
        type=number(float, gt=0, le=86400),
        metavar="S",
        help="for a real-time video: take one frame per S seconds of video (default: every frame, "
        "as in a timelapse video)",
    )
    parser.add_argument(
        "--max-frames", type=number(int, ge=0), default=0, metavar="N", help="stop after N frames"
    )
    parser.add_argument("--plot", metavar="PNG", help="also draw the curve into this PNG (needs matplotlib)")
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per frame on stdout, then a summary"
    )
    parser.set_defaults(handler=run_replay)


@dataclass
class CurvePoint:
    """One replayed frame: its simulated time (s since the first frame), the monitor's sample
    when the frame was counted (None when it came too soon after the last one), and events."""

    name: str
    frame_id: str
    t_s: float
    at: float
    sample: Sample | None
    events: list[AlertEvent] = field(default_factory=list)

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
        """Every event with the frame that triggered it, in order."""
        return [(p, e) for p in self.points for e in p.events]

    @property
    def counted(self) -> int:
        """Frames the monitor counted as samples."""
        return sum(p.sample is not None for p in self.points)


class _CurveRecorder(Stage):
    """An output stage after the ``AlertStage``: notes what the monitor made of each frame."""

    name = "replay"
    needs = (AlertEvents,)

    def __init__(self, monitor: AlertMonitor, clock: SteppedClock, start: float) -> None:
        self.monitor = monitor
        self.clock = clock
        self.start = start
        self.points: list[CurvePoint] = []
        self._previous: Sample | None = None

    def handle(self, result: FrameResult, outputs: Outputs) -> None:
        """Record the sample this frame produced (if any) and its events."""
        sample = self.monitor.last_sample
        counted = sample is not None and sample is not self._previous
        self._previous = sample
        frame = result.frame
        self.points.append(
            CurvePoint(
                name=frame.name,
                frame_id=frame.frame_id,
                t_s=self.clock.now - self.start,
                at=self.clock.now,
                sample=sample if counted else None,
                events=list(outputs.get(AlertEvents).events),
            )
        )

    def stats(self) -> dict[str, Any]:
        """Frames recorded so far."""
        return {"frames": len(self.points)}


def recording_settings(recording: Path, video_every_s: float | None) -> SourceSettings:
    """Source settings that read the folder, image or video as fast as it decodes; ``ConfigError``
    / ``UserError`` naming FOLDER_OR_VIDEO when it is missing or holds no images."""
    if not recording.exists():
        raise ConfigError(
            f"FOLDER_OR_VIDEO {str(recording)!r} does not exist: give a folder of frames (a timelapse's "
            "JPEGs, read in name order) or a video file"
        )
    if recording.is_dir() and not list_images(recording):
        raise UserError(
            f"no images (.jpg, .jpeg, .png, .bmp) in {recording}: give the folder that holds the "
            "recorded frames, or a video file"
        )
    kind: SourceKind = (
        "folder" if recording.is_dir() or recording.suffix.lower() in IMAGE_SUFFIXES else "video"
    )
    if video_every_s is not None and kind != "video":
        raise ConfigError("--video-every-s applies to video files only; a folder replays every frame")
    return SourceSettings(url=str(recording), kind=kind, interval_s=video_every_s)


def _live_url(url: str) -> bool:
    return "://" in url or url.startswith("/dev/") or url.isdigit() or url == "picamera2"


def resolve_recording(args_recording: str | None, config: AgentConfig, config_name: str) -> Path:
    """FOLDER_OR_VIDEO, or the config's ``source.url`` when that is a recording."""
    if args_recording:
        if _live_url(args_recording):
            raise ConfigError(
                f"{args_recording!r} is a live source; replay reads recordings (a folder of frames or a "
                "video file). Save some frames first, or watch it live with `edge-agent run`"
            )
        return Path(args_recording).expanduser()
    url = config.source.url
    if _live_url(url):
        raise ConfigError(
            f"give FOLDER_OR_VIDEO: source.url in {config_name} is a live source ({config.source.redacted_url}), "
            "and replay reads recordings (a folder of frames or a video file)"
        )
    return Path(url).expanduser()


def replay_recording(
    config: AgentConfig,
    recording: Path,
    *,
    interval_s: float,
    video_every_s: float | None = None,
    max_frames: int = 0,
) -> Replay:
    """Run ``config``'s detector and alerts over ``recording`` with one frame every ``interval_s``
    simulated seconds; the curve, one point per frame. No printer, MQTT or state file is used."""
    if not interval_s > 0:
        raise ConfigError(f"--interval-s must be more than 0 seconds, got {interval_s:g}")
    if video_every_s is not None and not video_every_s > 0:
        raise ConfigError(f"--video-every-s must be more than 0 seconds, got {video_every_s:g}")
    source_settings = recording_settings(recording, video_every_s)
    settings = config.alerts.model_copy(update={"state_file": None})
    detector = open_detector(config.detector)
    note_demo_model(detector)
    validate_failure_labels(settings, detector.labels)
    source = open_source(source_settings)
    start = float(int(time.time()))
    clock = SteppedClock(start, interval_s)
    monitor = AlertMonitor(settings)
    recorder = _CurveRecorder(monitor, clock, start)
    pipeline = Pipeline(
        source,
        detector,
        [AlertStage(monitor, printer=None, watcher=None, clock=clock), recorder],
        PipelineSettings(max_frames=max(max_frames, 0), stats_interval_s=300.0),
        live=False,
    )
    stats = pipeline.run()
    if stats.get("stage_errors"):
        raise UserError(f"the alert logic failed on some frames ({stats['stage_errors']}); see the log above")
    points = recorder.points
    if not points:
        raise UserError(f"no frame of {recording} could be read and scored; see the log above")
    return Replay(
        recording=recording,
        description=source.description,
        model=detector.name,
        runtime=detector.runtime,
        interval_s=interval_s,
        settings=settings,
        points=points,
    )


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
        else:
            cells = f"{s.score:6.3f}  {s.smoothed:8.3f}  {p.warn_at:7.3f}  {p.act_at:7.3f}"
            note = ""
        events = ", ".join(_event_text(e) for e in p.events)
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
    record["events"] = [{"kind": e.kind, "action": e.action, "reason": e.reason} for e in p.events]
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
        "events": {k: sum(e.kind == k for _, e in replay.events) for k in ("warn", "act", "clear")},
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
    if info["counted"] < info["frames"]:
        yield (
            f"note: alerts.min_sample_interval_s is {s.min_sample_interval_s:g} s, so with one frame every "
            f"{replay.interval_s:g} s only {info['counted']} of {info['frames']} frames counted; pass "
            f"--interval-s {s.min_sample_interval_s:g} or more to count every frame"
        )
    for p, e in replay.events:
        yield f"{_event_text(e)} at {p.name} ({clock_text(p.t_s)}): {e.reason}"
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


def run_replay(args: argparse.Namespace) -> int:
    """Replay the recording and print the curve; exit code 0 when it could be replayed."""
    config = load_config(args.config)
    config_name = args.config or "the bundled default config"
    recording = resolve_recording(args.recording, config, config_name)
    plot = Path(args.plot).expanduser() if args.plot else None
    if plot is not None and plot.suffix.lower() != ".png":
        raise ConfigError(f"--plot {args.plot!r}: give a file name ending in .png")
    if plot is not None and plot.parent.exists() and not plot.parent.is_dir():
        raise ConfigError(f"--plot {args.plot!r}: {plot.parent} is not a folder")
    if args.max_frames < 0:
        raise ConfigError("--max-frames must be 0 (all frames) or more")
    if args.interval_s is not None:
        interval = args.interval_s
    else:
        interval = args.video_every_s or config.source.interval_s or DEFAULT_INTERVAL_S
    replay = replay_recording(
        config,
        recording,
        interval_s=interval,
        video_every_s=args.video_every_s,
        max_frames=args.max_frames,
    )
    info = summary(replay)
    if not config.alerts.enabled:
        print(
            f"edge-agent: note: alerts.enabled is false in {config_name}, so `edge-agent run` does not "
            "alert; replay used its alerts section anyway",
            file=sys.stderr,
        )
    out = sys.stdout
    if args.json:
        for p in replay.points:
            out.write(json.dumps(point_record(p)) + "\n")
        out.write(json.dumps({"summary": info}) + "\n")
    else:
        out.write(f"replay of {replay.description} with {replay.model} ({replay.runtime})\n")
        out.write(settings_line(replay.settings) + "\n\n")
        for line in table_lines(replay):
            out.write(line + "\n")
        out.write("\n")
        for line in summary_lines(replay, info):
            out.write(line + "\n")
    out.flush()
    if plot is not None:
        if write_plot(replay, plot):
            print(f"plot written to {plot}", file=sys.stderr)
        else:
            print(
                "edge-agent: note: matplotlib is not installed, so no plot was written "
                "(pip install matplotlib, then run again with --plot)",
                file=sys.stderr,
            )
    return 0
