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
from pathlib import Path
from typing import Any

from agent.alerts import AlertMonitor, Sample, SceneCheck, validate_failure_labels
from agent.alerts.stage import AlertEvents, AlertStage, SteppedClock
from agent.commands.common import note_demo_model
from agent.commands.replay_report import (
    CurvePoint,
    Replay,
    point_record,
    settings_line,
    summary,
    summary_lines,
    table_lines,
    write_plot,
)
from agent.commands.values import number
from agent.config import AgentConfig, load_config
from agent.config.pipeline import PipelineSettings
from agent.config.source import IMAGE_SUFFIXES, SourceKind, SourceSettings
from agent.detect.detector import open_detector
from agent.errors import ConfigError, UserError
from agent.flow import Outputs, Stage
from agent.frames import FrameResult
from agent.pipeline import Pipeline
from agent.sources import open_source
from agent.sources.folder import list_images

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
        alerts = outputs.get(AlertEvents)
        self.points.append(
            CurvePoint(
                name=frame.name,
                frame_id=frame.frame_id,
                t_s=self.clock.now - self.start,
                at=self.clock.now,
                sample=sample if counted else None,
                events=list(alerts.events),
                verdict=alerts.verdict,
                views=list(alerts.views),
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
    scene = SceneCheck(settings.scene, detector.labels) if settings.scene.enabled else None
    recorder = _CurveRecorder(monitor, clock, start)
    pipeline = Pipeline(
        source,
        detector,
        [AlertStage(monitor, scene=scene, clock=clock), recorder],
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
