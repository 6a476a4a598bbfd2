"""Command-line pieces shared by the core commands: detector flags and source opening."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from agent.commands.values import like, one_line
from agent.config.detector import DetectorSettings
from agent.config.source import SourceSettings
from agent.errors import ConfigError

if TYPE_CHECKING:
    from agent.detect.detector import Detector
# The config keys the detector flags override, named as the user typed them in error messages.
FLAGS = {
    "score_threshold": "--threshold",
    "iou_threshold": "--iou",
    "max_detections": "--max-detections",
    "num_threads": "--threads",
    "model": "--model",
    "labels": "--labels",
    "runtime": "--runtime",
    "edgetpu": "--edgetpu",
}


def add_detector_arguments(parser: argparse.ArgumentParser, *, model_required: bool) -> None:
    """The flags that choose and tune the detector (they override the config file)."""
    group = parser.add_argument_group("detector")
    group.add_argument(
        "--model", required=model_required, help="a .tflite file, or a catalog name (edge-agent models list)"
    )
    group.add_argument("--labels", help="labels file (default: the model's own)")
    group.add_argument(
        "--threshold",
        type=like(DetectorSettings, "score_threshold"),
        help="minimum score, 0..1 (default 0.25 or the model card's)",
    )
    group.add_argument(
        "--iou", type=like(DetectorSettings, "iou_threshold"), help="NMS IoU threshold for YOLO models, 0..1"
    )
    group.add_argument(
        "--max-detections",
        type=like(DetectorSettings, "max_detections"),
        help="at most this many detections per frame",
    )
    group.add_argument(
        "--runtime",
        choices=["auto", "ai_edge_litert", "tflite_runtime", "tensorflow"],
        help="TFLite runtime (default auto: the fastest installed)",
    )
    group.add_argument(
        "--threads",
        type=like(DetectorSettings, "num_threads"),
        help="interpreter threads (default: all cores)",
    )
    group.add_argument("--edgetpu", help="run on a Coral: usb, usb:N, pci or pci:N")


def detector_settings(args: argparse.Namespace, base: DetectorSettings | None = None) -> DetectorSettings:
    """``base`` (from a config file, or defaults) with the flags that were given applied."""
    overrides = {
        "model": args.model,
        "labels": args.labels,
        "score_threshold": args.threshold,
        "iou_threshold": args.iou,
        "max_detections": args.max_detections,
        "runtime": args.runtime,
        "num_threads": args.threads,
        "edgetpu": args.edgetpu,
    }
    data = (base or DetectorSettings()).model_dump()
    data.update({k: v for k, v in overrides.items() if v is not None})
    if data.get("model"):
        data["model"] = str(Path(data["model"]).expanduser())
    try:
        return DetectorSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(one_line(exc, FLAGS)) from None


def source_settings(url: str) -> SourceSettings:
    """Settings for a SOURCE given on the command line; a malformed one is a ``ConfigError``."""
    try:
        return SourceSettings(url=url)
    except ValidationError as exc:
        reasons = "; ".join(str(e.get("msg", "")).removeprefix("Value error, ") for e in exc.errors())
        raise ConfigError(f"SOURCE {url!r}: {reasons}") from None


_demo_noted: set[Path] = set()


def note_demo_model(detector: Detector) -> None:
    """Say on stderr when the model is the bundled DEMO model, with the command for the real one;
    once per process (a script replaying many recordings says it once)."""
    if detector.demo_notice and detector.spec.path not in _demo_noted:
        _demo_noted.add(detector.spec.path)
        print(f"edge-agent: note: {detector.name} is a {detector.demo_notice}", file=sys.stderr)
