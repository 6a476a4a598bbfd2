"""The format-neutral dataset every exporter writes and every importer reads.

A ``LabeledDataset`` is a list of class names and of images, each with its pixel size and its
boxes (``xyxy`` pixels, one label per box) and the split it belongs to. ``from_vott`` builds one
from the Tagged assets of a VoTT project; ``into_vott`` writes one into a VoTT project (copying
the images into the project's frames folder).
"""

from __future__ import annotations

import filecmp
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from agent.boxes import area, as_boxes, clip_xyxy
from agent.detections import Detections
from agent.errors import ConfigError, UserError
from agent.fsutil import atomic_write_bytes
from agent.pixel_cap import ImageTooLarge
from agent.sources.decode import check_pixels
from agent.vott import LoadedProject, VottProject, asset_format

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif"})


@dataclass
class LabeledImage:
    """One image: real file name (unique in the dataset), local file, size in pixels, boxes
    ``xyxy`` float32 ``[N, 4]`` pixels with one label each, the split it belongs to, and VoTT's
    URL-encoded asset name (what VoTT's own exporters name files)."""

    file_name: str
    image_path: Path | None
    width: int
    height: int
    xyxy: NDArray[np.float32]
    labels: list[str]
    split: str = "train"
    vott_name: str = ""

    @property
    def stem(self) -> str:
        """The file name without its last extension."""
        return self.file_name.rsplit(".", 1)[0] if "." in self.file_name else self.file_name


@dataclass
class LabeledDataset:
    """Class names (in id order) and images."""

    name: str
    classes: list[str]
    images: list[LabeledImage] = field(default_factory=list)

    def class_index(self) -> dict[str, int]:
        """Class name -> 0-based id."""
        return {c: i for i, c in enumerate(self.classes)}

    def add_classes(self, labels: Sequence[str]) -> None:
        """Append labels not yet known, in order."""
        for label in labels:
            if label not in self.classes:
                self.classes.append(label)


def image_size(path: Path) -> tuple[int, int]:
    """Width and height in pixels of an image file as stored (EXIF orientation ignored, as VoTT
    2.2.0's image element reports it)."""
    try:
        data = path.read_bytes()
        check_pixels(data)
    except OSError as exc:
        raise UserError(f"cannot read the image {path} ({exc.strerror}); replace or remove it") from None
    except ImageTooLarge as exc:
        raise UserError(f"{path}: {exc}") from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise UserError(f"cannot read the image {path}; replace or remove it")
    return int(image.shape[1]), int(image.shape[0])


def js_number(value: float) -> str:
    """``value`` rounded to 1/1000 and printed as JavaScript's ``String(number)`` would
    (``100``, ``400.5``; never an exponent for small values), as VoTT's exporters print pixels."""
    value = round(float(value), 3)
    if value.is_integer():
        return str(int(value))
    text = repr(value)
    return np.format_float_positional(value, trim="-") if "e" in text else text


def clean_boxes(
    xyxy: NDArray[np.float32], labels: Sequence[str], width: int, height: int
) -> tuple[NDArray[np.float32], list[str]]:
    """Boxes clipped to the image, those with no area left dropped."""
    boxes = clip_xyxy(xyxy, width, height)
    keep = area(boxes) > 0
    return boxes[keep], [lab for lab, k in zip(labels, keep.tolist(), strict=True) if k]


def from_vott(project: LoadedProject) -> LabeledDataset:
    """The Tagged (state 2) assets of a VoTT project as the reviewer saved them, with the
    project's tags as classes. Raises ``UserError`` when there is nothing to export or an image
    is missing."""
    tagged = [a for a in project.tagged() if len(a.labels)]
    if not tagged:
        raise UserError(
            f"{project.target_dir}: no tagged assets (state 2 with regions) to export; review and save "
            "frames in VoTT first"
        )
    project.require_images(tagged)
    dataset = LabeledDataset(project.name, list(project.tags))
    for asset in tagged:
        assert asset.image_path is not None  # require_images checked it
        if asset.width and asset.height:
            width, height = asset.width, asset.height
        else:
            width, height = image_size(asset.image_path)
        boxes, labels = clean_boxes(asset.xyxy, asset.labels, width, height)
        dataset.images.append(
            LabeledImage(
                file_name=asset.file_name,
                image_path=asset.image_path,
                width=width,
                height=height,
                xyxy=boxes,
                labels=labels,
                vott_name=str(asset.raw.get("name") or asset.file_name),
            )
        )
    names = [i.file_name for i in dataset.images]
    if len(set(names)) != len(names):
        raise UserError(f"{project.target_dir}: several assets share an image file name; rename them in VoTT")
    return dataset


def parse_split(text: str) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` (train, val, test; 1 or 2 numbers leave the rest 0) -> fractions summing to 1."""
    try:
        parts = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        parts = []
    if not 1 <= len(parts) <= 3 or any(p < 0 for p in parts) or sum(parts) <= 0:
        raise ConfigError(
            f"--split {text!r} must be 1-3 non-negative numbers for train,val,test, e.g. 0.8,0.1,0.1"
        )
    parts += [0.0] * (3 - len(parts))
    total = sum(parts)
    return (parts[0] / total, parts[1] / total, parts[2] / total)


def assign_splits(dataset: LabeledDataset, fractions: tuple[float, float, float], seed: int) -> None:
    """Give each image a split: shuffle (seeded, independent of input order) and cut by
    ``fractions`` (counts by largest remainder, so they add up to the number of images)."""
    names = sorted(i.file_name for i in dataset.images)
    random.Random(seed).shuffle(names)
    n = len(names)
    exact = [f * n for f in fractions]
    counts = [int(e) for e in exact]
    for i in sorted(range(3), key=lambda k: counts[k] - exact[k])[: n - sum(counts)]:
        counts[i] += 1
    split_of: dict[str, str] = {}
    start = 0
    for split, count in zip(SPLITS, counts, strict=True):
        for name in names[start : start + count]:
            split_of[name] = split
        start += count
    for image in dataset.images:
        image.split = split_of[image.file_name]


def prepare_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Create the output folder; refuse one that already holds files."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"output folder {out} is not empty; choose a new or empty folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder {out}: {exc}") from None
    return out


def copy_image(src: Path, dst: Path) -> None:
    """Copy an image file atomically, creating the destination folder."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read the image {src}: {exc}") from None
    atomic_write_bytes(dst, data, fsync=False)


def into_vott(
    dataset: LabeledDataset,
    target_dir: str | os.PathLike[str],
    frames_dir: str | os.PathLike[str],
    *,
    name: str | None = None,
    local_root: str | os.PathLike[str] | None = None,
    reviewer_root: str | None = None,
) -> tuple[int, int]:
    """Write a dataset into a VoTT project (created or resumed): each image is copied into
    ``frames_dir`` under its file name and, when it has boxes, added as a Tagged asset (VoTT
    lists images without boxes as not visited). Returns (assets written, images without boxes)."""
    frames = Path(frames_dir)
    written = skipped = 0
    with VottProject(
        target_dir,
        frames,
        name=name,
        local_root=local_root,
        reviewer_root=reviewer_root,
        tags=dataset.classes,
        flush_every=0,
    ) as project:
        class_ids = dataset.class_index()
        seen: dict[str, Path] = {}
        for image in dataset.images:
            if image.image_path is None:
                raise UserError(f"{image.file_name}: image file not found in the dataset; add it and retry")
            if asset_format(image.file_name).lower() not in {s[1:] for s in IMAGE_SUFFIXES}:
                raise UserError(f"{image.file_name}: VoTT cannot show this image type; convert it to .jpg")
            dst = project.frames_dir / image.file_name
            if image.file_name in seen and not filecmp.cmp(
                seen[image.file_name], image.image_path, shallow=False
            ):
                raise UserError(
                    f"two different images are named {image.file_name} ({seen[image.file_name]} and "
                    f"{image.image_path}); VoTT needs unique names in one folder, so rename one"
                )
            seen[image.file_name] = image.image_path
            if dst.exists():
                if not filecmp.cmp(dst, image.image_path, shallow=False):
                    raise UserError(
                        f"{dst} already exists with other content than {image.image_path}; use another "
                        "--frames-dir or rename the image"
                    )
            else:
                copy_image(image.image_path, dst)
            if not len(image.labels):
                skipped += 1
                continue
            detections = Detections.create(
                as_boxes(image.xyxy),
                np.ones(len(image.labels), dtype=np.float32),
                [class_ids[label] for label in image.labels],
                dataset.classes,
            )
            if project.add_frame(dst, image.width, image.height, detections, record_scores=False):
                written += 1
            else:
                skipped += 1
    log.info("imported %d images into %s (%d without boxes left unlabelled)", written, target_dir, skipped)
    return written, skipped
