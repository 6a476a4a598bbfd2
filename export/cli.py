"""``edge-agent export`` (VoTT project <-> training formats) and ``edge-agent eval`` (pre-labels
against reviewed labels)."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from agent.commands.interrupts import Interrupts, JobInterrupted
from agent.commands.values import number
from agent.errors import ConfigError
from agent.fsutil import atomic_write_json
from agent.vott import LoadedProject, load_project
from export.automl import write_automl
from export.coco import read_coco, write_coco
from export.dataset import (
    SPLITS,
    LabeledDataset,
    assign_splits,
    from_vott,
    into_vott,
    parse_split,
    prepare_out_dir,
)
from export.metrics import ImageBoxes, evaluate
from export.voc import read_voc, write_voc
from export.vott_csv import write_vott_csv
from export.yolo import read_yolo, write_yolo

log = logging.getLogger(__name__)

EXPORT_FORMATS: dict[str, Callable[[LabeledDataset, Path], list[Path]]] = {
    "coco": write_coco,
    "voc": write_voc,
    "yolo": write_yolo,
    "vott-csv": write_vott_csv,
}
IMPORT_FORMATS: dict[str, Callable[[Path], LabeledDataset]] = {
    "coco": read_coco,
    "voc": read_voc,
    "yolo": read_yolo,
}
ALL_EXPORT_FORMATS = [*EXPORT_FORMATS, "automl-csv"]


def add_export_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``edge-agent export``."""
    parser = subparsers.add_parser(
        "export",
        help="export a reviewed VoTT project to COCO/VOC/YOLO/AutoML CSV/VoTT CSV, or import a dataset",
        description="Export the Tagged assets of a VoTT project (as the reviewer saved them) to a training "
        "format, or, with --from, import a COCO/VOC/YOLO dataset into a VoTT project for review.",
    )
    parser.add_argument("--project", required=True, help="VoTT target folder (holds <name>.vott)")
    parser.add_argument("--format", help=f"export format: {', '.join(ALL_EXPORT_FORMATS)}")
    parser.add_argument("--out", help="output folder for --format (new or empty)")
    parser.add_argument(
        "--split", default="0.8,0.1,0.1", help="train,val,test fractions (default 0.8,0.1,0.1)"
    )
    parser.add_argument(
        "--seed", type=number(int, ge=0), default=0, help="seed of the split shuffle (default 0)"
    )
    parser.add_argument(
        "--source-folder",
        help="folder holding the project's frames (needed when VoTT saved the project: its paths are encrypted)",
    )
    parser.add_argument(
        "--path-prefix", default="", help="automl-csv: prefix of the image paths, e.g. gs://bucket/dataset/"
    )
    parser.add_argument("--from", dest="from_format", help=f"import format: {', '.join(IMPORT_FORMATS)}")
    parser.add_argument("--in", dest="in_path", help="dataset folder (or COCO JSON file) for --from")
    parser.add_argument(
        "--frames-dir", help="--from: folder the images are copied to (default: <project>-frames beside it)"
    )
    parser.add_argument("--name", help="--from: project name when creating one (default: folder name)")
    parser.add_argument("--local-root", help="--from: local folder holding project and frames folders")
    parser.add_argument("--reviewer-root", help="--from: that folder as the reviewer's computer sees it")
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Handler of ``edge-agent export``."""
    if bool(args.format) == bool(args.from_format):
        raise ConfigError("give either --format FORMAT --out DIR (export) or --from FORMAT --in DIR (import)")
    if args.from_format:
        return _run_import(args)
    fmt = args.format.lower()
    if fmt not in ALL_EXPORT_FORMATS:
        raise ConfigError(
            f"unknown export format {args.format!r}; choose one of {', '.join(ALL_EXPORT_FORMATS)}"
        )
    if not args.out:
        raise ConfigError("--out DIR is required with --format (a new or empty folder)")
    fractions = parse_split(args.split)
    project = load_project(args.project, args.source_folder)
    dataset = from_vott(project)
    assign_splits(dataset, fractions, args.seed)
    out = prepare_out_dir(args.out)
    # all or nothing: written beside OUT and renamed onto it, so an interrupted export leaves OUT empty
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        with Interrupts():
            partial.mkdir()
            if fmt == "automl-csv":
                write_automl(dataset, partial, args.path_prefix)
            elif fmt == "yolo":
                write_yolo(dataset, partial, final_dir=out)
            else:
                EXPORT_FORMATS[fmt](dataset, partial)
            os.replace(partial, out)
    except JobInterrupted as stop:
        shutil.rmtree(partial, ignore_errors=True)
        print(f"interrupted by {stop.signal.name}: nothing was written to {out} (an export is all or nothing); "
              "run the same command again", file=sys.stderr)  # fmt: skip
        return stop.exit_code
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    counts = Counter(i.split for i in dataset.images)
    boxes = sum(len(i.labels) for i in dataset.images)
    split_text = ", ".join(f"{s} {counts[s]}" for s in SPLITS if counts[s])
    print(
        f"exported {len(dataset.images)} images ({split_text}), {boxes} boxes, {len(dataset.classes)} classes to {out}"
    )
    return 0


def _run_import(args: argparse.Namespace) -> int:
    fmt = args.from_format.lower()
    if fmt not in IMPORT_FORMATS:
        raise ConfigError(
            f"unknown import format {args.from_format!r}; choose one of {', '.join(IMPORT_FORMATS)}"
        )
    if not args.in_path:
        raise ConfigError("--in DIR is required with --from (the dataset folder)")
    in_path = Path(args.in_path)
    if not in_path.exists():
        raise ConfigError(f"dataset {in_path} does not exist; pass the dataset folder with --in")
    dataset = IMPORT_FORMATS[fmt](in_path)
    project = Path(args.project)
    frames = Path(args.frames_dir) if args.frames_dir else project.parent / f"{project.name}-frames"
    try:
        with Interrupts():
            written, skipped = into_vott(
                dataset,
                project,
                frames,
                name=args.name,
                local_root=args.local_root,
                reviewer_root=args.reviewer_root,
            )
    except JobInterrupted as stop:
        print(f"interrupted by {stop.signal.name}: the images imported so far are saved in {project}; run the "
              "same command again to import the rest", file=sys.stderr)  # fmt: skip
        return stop.exit_code
    print(
        f"imported {written} images with {sum(len(i.labels) for i in dataset.images)} boxes into {project} "
        f"(frames in {frames}; {skipped} images without boxes left unlabelled)"
    )
    return 0


def add_eval_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``edge-agent eval``."""
    parser = subparsers.add_parser(
        "eval",
        help="how good were the pre-labels: compare a pre-label project with its reviewed version",
        description="Compare the pre-labels of one VoTT project with the reviewed labels of another, frame by "
        "frame (matched by image file name). Frames the reviewer saved (Visited or Tagged) are the truth; "
        "VoTT cannot tell whether a Tagged frame was looked at, so review every frame before evaluating.",
    )
    parser.add_argument("--pred", required=True, help="VoTT target folder with the pre-labels")
    parser.add_argument("--truth", required=True, help="VoTT target folder with the reviewed labels")
    parser.add_argument("--json", help="also write the report as JSON to this file")
    parser.add_argument(
        "--iou",
        type=number(float, gt=0, le=1),
        default=0.5,
        help="IoU for a match in precision/recall (default 0.5)",
    )
    parser.set_defaults(handler=run_eval)


def project_image_boxes(project: LoadedProject, states: tuple[int, ...] = (1, 2)) -> list[ImageBoxes]:
    """One ``ImageBoxes`` per asset of ``project`` whose state is in ``states``, named by file name."""
    return [
        ImageBoxes.create(a.file_name, a.xyxy, a.labels, a.scores)
        for a in project.assets
        if a.state in states
    ]


def run_eval(args: argparse.Namespace) -> int:
    """Handler of ``edge-agent eval``."""
    if not 0.0 < args.iou <= 1.0:
        raise ConfigError(f"--iou {args.iou} must be in (0, 1], e.g. 0.5")
    pred = load_project(args.pred)
    truth = load_project(args.truth)
    report = evaluate(
        project_image_boxes(pred, (0, 1, 2)), project_image_boxes(truth), args.iou, classes=truth.tags
    )
    if report.images == 0:
        raise ConfigError(
            f"{truth.target_dir} has no reviewed frames (Visited or Tagged); review some in VoTT first"
        )
    print(report.format_table())
    if args.json:
        atomic_write_json(args.json, report.to_dict(), indent=2)
        print(f"report written to {args.json}")
    return 0
