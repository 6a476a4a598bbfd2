"""``edge-agent label``: pre-label folders or videos into a VoTT 2.2.0 project, in one batch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from agent.commands.common import (
    add_detector_arguments,
    detector_settings,
    note_demo_model,
    source_settings,
)
from agent.detect.detector import Detector
from agent.errors import ConfigError
from agent.frames import FrameResult
from agent.labeler import VottStage
from agent.pipeline import Pipeline, PipelineSettings
from agent.sources import open_source
from agent.vott import VottProject


def add_label_command(subparsers: Any) -> None:
    """Register ``edge-agent label``."""
    parser = subparsers.add_parser(
        "label",
        help="pre-label folders or videos into a VoTT project",
        description="Detect objects in every frame of each SOURCE and write a VoTT 2.2.0 project whose "
        "regions are the detections: frames in the frames folder, project files in TARGET.",
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
    parser.add_argument("--progress", choices=["auto", "on", "off"], default="auto", help="progress bar")
    parser.add_argument("sources", nargs="+", metavar="SOURCE")
    parser.set_defaults(handler=run_label)


def run_label(args: argparse.Namespace) -> int:
    """Label every source into one project; prints where it is and how many frames it holds."""
    target = Path(args.out).expanduser().resolve()
    single_folder = len(args.sources) == 1 and Path(args.sources[0]).is_dir()
    if args.frames_dir:
        frames_dir = Path(args.frames_dir).expanduser().resolve()
    elif single_folder:
        frames_dir = Path(args.sources[0]).expanduser().resolve()
    else:
        frames_dir = target / "frames"
    in_place = None
    for src in args.sources:
        if Path(src).is_dir() and Path(src).resolve() == frames_dir:
            in_place = frames_dir
    if target == frames_dir:
        raise ConfigError(
            "--out and the frames folder must differ: VoTT keeps project files apart from images"
        )
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
    writer = VottStage(project, in_place_folder=in_place)
    show = args.progress == "on" or (args.progress == "auto" and sys.stderr.isatty())
    totals = {"frames": 0, "with_detections": 0}

    def count(result: FrameResult) -> None:
        totals["frames"] += 1
        totals["with_detections"] += bool(result.asset_id)
        if bar is not None:
            bar.update(1)

    bar = None
    for source in sources:
        if show:
            from tqdm import tqdm

            bar = tqdm(desc=source.description, unit="frame", file=sys.stderr)
        pipeline = Pipeline(source, detector, [writer], PipelineSettings(), live=False, on_result=count)
        try:
            pipeline.run()
        finally:
            if bar is not None:
                bar.close()
    project.close()
    print(
        f"labelled {totals['frames']} frames ({totals['with_detections']} with detections) into "
        f"{project.project_file}; frames in {frames_dir}",
        file=sys.stderr,
    )
    return 0
