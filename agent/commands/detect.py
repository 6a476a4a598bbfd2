"""``edge-agent detect``: run the detector on images, folders or videos and print the results.

With ``--json`` one JSON object per frame on stdout (scripting, and the way decoding is
checked against reference detections)::

    {"image": "...", "width": 640, "height": 480, "runtime": "ai_edge_litert", "model": "...",
     "detections": [{"label": "spaghetti", "class_id": 2, "score": 0.91, "box_xyxy": [x1, y1, x2, y2]}]}

Boxes are in pixels of the original image.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from agent.commands.common import add_detector_arguments, detector_settings, note_demo_model, source_settings
from agent.commands.values import number
from agent.detect.detector import Detector
from agent.sources import open_source


def add_detect_command(subparsers: Any) -> None:
    """Register ``edge-agent detect``."""
    parser = subparsers.add_parser(
        "detect",
        help="detect objects in images, folders or videos",
        description="Run a TFLite detector on each frame of each SOURCE (an image, a folder of images, "
        "a video file, a camera or stream URL) and print the detections.",
    )
    add_detector_arguments(parser, model_required=True)
    parser.add_argument("--json", action="store_true", help="one JSON object per frame on stdout")
    parser.add_argument(
        "--max-frames", type=number(int, ge=0), default=0, help="stop after this many frames per source"
    )
    parser.add_argument("sources", nargs="+", metavar="SOURCE")
    parser.set_defaults(handler=run_detect)


def frame_record(frame: Any, detections: Any, detector: Detector) -> dict[str, Any]:
    """The JSON object printed for one frame."""
    return {
        "image": frame.origin or frame.name,
        "width": frame.width,
        "height": frame.height,
        "runtime": detector.runtime,
        "model": detector.name,
        "detections": detections.to_records(),
    }


def run_detect(args: argparse.Namespace) -> int:
    """Detect in every source; returns 0, or 1 when a source yielded no frame at all."""
    detector = Detector(detector_settings(args))
    note_demo_model(detector)
    settings = [source_settings(s) for s in args.sources]
    sources = [open_source(s) for s in settings]  # fail on a bad source before any work
    out = sys.stdout
    empty = 0
    for source in sources:
        count = 0
        with source:
            for frame in source:
                detections = detector.detect(frame.image)
                record = frame_record(frame, detections, detector)
                if args.json:
                    out.write(json.dumps(record) + "\n")
                else:
                    found = (
                        ", ".join(f"{d['label']} {d['score']:.2f}" for d in record["detections"]) or "nothing"
                    )
                    out.write(f"{record['image']}: {found}\n")
                out.flush()
                count += 1
                if args.max_frames and count >= args.max_frames:
                    break
        if count == 0:
            print(f"edge-agent: warning: {source.description} gave no frames", file=sys.stderr)
            empty += 1
    return 1 if empty == len(sources) else 0
