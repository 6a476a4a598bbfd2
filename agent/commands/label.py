"""``edge-agent label``: pre-label folders or videos into a VoTT 2.2.0 project, in one batch.

A label job resumes: the images (and video frames) it finished are recorded in the project's
target folder (``edge-agent-state/label-progress.json``), so running the same command again
labels only what is new or not yet done (``--redo`` labels everything again). Ctrl-C saves what
was done and says so. An asset the reviewer touched in VoTT is never changed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from agent.commands.common import add_detector_arguments, detector_settings, note_demo_model, source_settings
from agent.commands.interrupts import Interrupts
from agent.config.pipeline import PipelineSettings
from agent.detect.detector import Detector
from agent.errors import ConfigError
from agent.flow import Outputs, Stage
from agent.frames import FrameResult
from agent.harvest.decision import KeepDecision
from agent.pipeline import HandledFrame, Pipeline
from agent.sources import FrameSource, open_source
from agent.sources.folder import FolderSource
from agent.sources.resume import DoneFiles, source_key
from agent.sources.video import VideoFileSource
from agent.vott import VottProject, WriteOutcome
from agent.vott.records import STATE_DIR
from agent.vott.stage import StoredFrame, VottStage

PROGRESS_FILE = "label-progress.json"
KEEP_ALL = KeepDecision(True, ("label",))


def add_label_command(subparsers: Any) -> None:
    """Register ``edge-agent label``."""
    parser = subparsers.add_parser(
        "label",
        help="pre-label folders or videos into a VoTT project",
        description="Detect objects in every frame of each SOURCE and write a VoTT 2.2.0 project whose "
        "regions are the detections: frames in the frames folder, project files in TARGET. Run again, it "
        "labels only what it has not done yet; assets a reviewer changed in VoTT are never touched.",
    )
    add_detector_arguments(parser, model_required=True)
    parser.add_argument("--out", required=True, metavar="TARGET", help="VoTT target folder (project files)")
    parser.add_argument(
        "--frames-dir",
        metavar="F",
        help="where frames go (VoTT's source folder); default: a single SOURCE folder is used in place, "
        "otherwise TARGET/frames",
    )
    parser.add_argument(
        "--reviewer-root",
        metavar="R",
        help="the folder holding TARGET and the frames folder, as the reviewer's machine will see it "
        "(e.g. C:\\Users\\ann\\review); default: the same path as here",
    )
    parser.add_argument("--name", help="project name (default: the TARGET folder's name)")
    parser.add_argument(
        "--redo", action="store_true", help="label every frame again, also those already done"
    )
    parser.add_argument("--progress", choices=["auto", "on", "off"], default="auto", help="progress bar")
    parser.add_argument("sources", nargs="+", metavar="SOURCE")
    parser.set_defaults(handler=run_label)


class _KeepAll(Stage):
    """Every frame of a label job is kept."""

    name = "keep"
    produces = KeepDecision

    def handle(self, result: FrameResult, outputs: Outputs) -> KeepDecision:
        return KEEP_ALL


class _RecordDone(Stage):
    """Notes each finished frame in the job's progress record."""

    name = "progress"
    needs = (StoredFrame,)

    def __init__(self, done: DoneFiles, key: str, video: bool) -> None:
        self.done = done
        self.key = key
        self.video = video

    def handle(self, result: FrameResult, outputs: Outputs) -> None:
        point = result.frame.resume_point
        if point is not None:
            self.done.done(self.key, point, video=self.video)
        return None

    def tick(self) -> None:
        self.done.save()

    def close(self) -> None:
        self.done.save()


def _frames_dir(args: argparse.Namespace, target: Path) -> tuple[Path, Path | None]:
    """The frames folder, and the SOURCE folder used in place (None when frames are copied)."""
    single_folder = len(args.sources) == 1 and Path(args.sources[0]).is_dir()
    if args.frames_dir:
        frames_dir = Path(args.frames_dir).expanduser().resolve()
    elif single_folder:
        frames_dir = Path(args.sources[0]).expanduser().resolve()
    else:
        frames_dir = target / "frames"
    if target == frames_dir:
        raise ConfigError(
            "--out and the frames folder must differ: VoTT keeps project files apart from images"
        )
    in_place = next(
        (frames_dir for src in args.sources if Path(src).is_dir() and Path(src).resolve() == frames_dir), None
    )
    return frames_dir, in_place


def _prepare(source: FrameSource, done: DoneFiles, key: str, redo: bool) -> int | None:
    """Skip what the job finished before (unless ``redo``); returns how many frames are left, when known."""
    if isinstance(source, FolderSource):
        if not redo:
            source.skip_file = lambda path: done.is_done(key, path)
        return source.remaining()
    if isinstance(source, VideoFileSource):
        if not redo:
            source.resume_after = done.video_point(key)
        return source.remaining()
    return None


def run_label(args: argparse.Namespace) -> int:
    """Label every source into one project; prints where it is and how many frames it holds."""
    target = Path(args.out).expanduser().resolve()
    frames_dir, in_place = _frames_dir(args, target)
    detector = Detector(detector_settings(args))
    note_demo_model(detector)
    sources = [open_source(source_settings(s)) for s in args.sources]
    project = VottProject(
        target,
        frames_dir,
        name=args.name,
        reviewer_root=args.reviewer_root,
        tags=[label for label in detector.labels if label and label != "???"],
        flush_every=0,
    )
    done = DoneFiles(target / STATE_DIR / PROGRESS_FILE)
    writer = VottStage(project, in_place_folder=in_place)
    show = args.progress == "on" or (args.progress == "auto" and sys.stderr.isatty())
    totals = {"frames": 0, "assets": 0}
    started = time.monotonic()
    pipeline: Pipeline | None = None

    def stop() -> None:
        if pipeline is not None:
            pipeline.stop()

    with Interrupts(stop) as interrupts:
        for settings_url, source in zip(args.sources, sources, strict=True):
            if interrupts.interrupted:
                source.close()
                continue
            key = source_key(source.source_id, str(Path(settings_url).expanduser().resolve()))
            left = _prepare(source, done, key, args.redo)
            stages = [_KeepAll(), writer, _RecordDone(done, key, isinstance(source, VideoFileSource))]
            bar = _progress_bar(show, source.description, left)

            def count(handled: HandledFrame, bar: Any = bar) -> None:
                totals["frames"] += 1
                stored = handled.outputs.find(StoredFrame)
                totals["assets"] += bool(stored and stored.asset and stored.asset.asset_id)
                if bar is not None:
                    bar.update(1)

            pipeline = Pipeline(source, detector, stages, PipelineSettings(), live=False, on_result=count)
            try:
                pipeline.run()
            finally:
                if bar is not None:
                    bar.close()
    project.close()
    done.save()
    _report(project, writer, frames_dir, totals, time.monotonic() - started, interrupts)
    return interrupts.exit_code


def _progress_bar(show: bool, description: str, total: int | None) -> Any:
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(desc=description, total=total, unit="frame", file=sys.stderr)


def _report(
    project: VottProject,
    writer: VottStage,
    frames_dir: Path,
    totals: dict[str, int],
    seconds: float,
    interrupts: Interrupts,
) -> None:
    reviewed = writer.counts[WriteOutcome.KEPT_REVIEWED]
    kept_note = f"; {reviewed} reviewed in VoTT left as they were" if reviewed else ""
    print(
        f"labelled {totals['frames']} frames ({totals['assets']} with detections{kept_note}) in {seconds:.0f} s "
        f"into {project.project_file} ({len(project)} assets); frames in {frames_dir}",
        file=sys.stderr,
    )
    if interrupts.signal is not None:
        print(
            f"interrupted by {interrupts.signal.name}: what was labelled is saved; run the same command "
            "again to label the rest",
            file=sys.stderr,
        )
