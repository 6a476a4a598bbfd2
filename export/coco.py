"""COCO object-detection JSON, as ``pycocotools`` loads it.

Layout written::

    DIR/images/<file name>                     every image once
    DIR/annotations/instances_<split>.json     one per non-empty split (train, val, test)

Category ids are 1-based in the project's tag order; ``bbox`` is ``[x, y, width, height]`` in
pixels (rounded to 1/1000 px), ``area`` its width x height, ``iscrowd`` 0.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from agent.boxes import ltwh_to_xyxy, xyxy_to_ltwh
from agent.errors import UserError
from agent.fsutil import atomic_write_json
from agent.utc import utc_iso
from export.dataset import SPLITS, LabeledDataset, LabeledImage, copy_image, image_size

log = logging.getLogger(__name__)


def coco_dict(dataset: LabeledDataset, images: list[LabeledImage]) -> dict[str, Any]:
    """The COCO JSON object for ``images`` (ids: images 1..N in the given order)."""
    category_id = {c: i + 1 for i, c in enumerate(dataset.classes)}
    coco_images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, image in enumerate(images, start=1):
        coco_images.append(
            {"id": image_id, "file_name": image.file_name, "width": image.width, "height": image.height}
        )
        ltwh = np.round(xyxy_to_ltwh(image.xyxy).astype(np.float64), 3)
        for box, label in zip(ltwh.tolist(), image.labels, strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id[label],
                    "bbox": box,
                    "area": round(box[2] * box[3], 3),
                    "iscrowd": 0,
                }
            )
    return {
        "info": {
            "description": f"{dataset.name} (exported by edge-agent)",
            "version": "1.0",
            "date_created": utc_iso(time.time()),
        },
        "licenses": [],
        "images": coco_images,
        "annotations": annotations,
        "categories": [{"id": category_id[c], "name": c, "supercategory": "none"} for c in dataset.classes],
    }


def write_coco(dataset: LabeledDataset, out: Path) -> list[Path]:
    """Write the COCO layout into ``out``; returns the annotation files."""
    for image in dataset.images:
        assert image.image_path is not None
        copy_image(image.image_path, out / "images" / image.file_name)
    written = []
    for split in SPLITS:
        images = [i for i in dataset.images if i.split == split]
        if images:
            path = out / "annotations" / f"instances_{split}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, coco_dict(dataset, images), indent=None, fsync=False)
            written.append(path)
    return written


def _find_image(root: Path, json_path: Path, file_name: str) -> Path | None:
    split = json_path.stem.removeprefix("instances_")
    for folder in (
        root / "images",
        root / "images" / split,
        root / split,
        json_path.parent,
        json_path.parent.parent / "images",
        root,
    ):
        candidate = folder / file_name
        if candidate.is_file():
            return candidate
    return None


def _read_file(path: Path) -> tuple[dict[int, str], dict[int, Any], list[Any]]:
    """Categories (id -> name), images (id -> entry) and annotations of one COCO JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        categories = {int(c["id"]): str(c["name"]) for c in sorted(data["categories"], key=lambda c: c["id"])}
        images = {int(i["id"]): i for i in data["images"]}
        return categories, images, list(data.get("annotations") or [])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is not a COCO detection JSON ({exc}); pass a COCO instances file") from None


def _boxes_by_image(
    path: Path, annotations: list[Any], categories: dict[int, str], image_ids: Iterable[int]
) -> tuple[dict[int, list[list[float]]], dict[int, list[str]], int]:
    """Each image's ``ltwh`` boxes and labels, and how many crowd annotations were skipped."""
    boxes: dict[int, list[list[float]]] = {i: [] for i in image_ids}
    labels: dict[int, list[str]] = {i: [] for i in boxes}
    crowd = 0
    for ann in annotations:
        try:
            if ann.get("iscrowd"):
                crowd += 1
                continue
            boxes[int(ann["image_id"])].append([float(v) for v in ann["bbox"]])
            labels[int(ann["image_id"])].append(categories[int(ann["category_id"])])
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise UserError(
                f"{path}: malformed annotation {ann.get('id')!r} ({exc}); fix or remove it"
            ) from None
    return boxes, labels, crowd


def _image(root: Path, path: Path, info: dict[str, Any], xyxy: Any, labels: list[str]) -> LabeledImage:
    file_name = Path(str(info["file_name"])).name
    image_path = _find_image(root, path, str(info["file_name"])) or _find_image(root, path, file_name)
    if image_path is None:
        raise UserError(f"{path}: image {info['file_name']} not found under {root}; put it in {root}/images")
    width, height = int(info.get("width") or 0), int(info.get("height") or 0)
    if not (width and height):
        width, height = image_size(image_path)
    return LabeledImage(
        file_name=file_name,
        image_path=image_path,
        width=width,
        height=height,
        xyxy=xyxy,
        labels=labels,
        split=path.stem.removeprefix("instances_") if path.stem.startswith("instances_") else "train",
    )


def read_coco(in_path: Path) -> LabeledDataset:
    """Read a COCO dataset: a JSON file, or a folder with ``annotations/*.json`` (or ``*.json``)
    and the images in ``images/``, ``images/<split>/``, ``<split>/`` or beside the JSON.
    Crowd annotations (``iscrowd`` 1) have no VoTT equivalent and are skipped."""
    if in_path.is_file():
        files, root = [in_path], in_path.parent
    else:
        files = sorted((in_path / "annotations").glob("*.json")) or sorted(in_path.glob("*.json"))
        root = in_path
    if not files:
        raise UserError(f"no COCO JSON found in {in_path}; pass the file or a folder with annotations/*.json")
    dataset = LabeledDataset(root.name, [])
    names: set[str] = set()
    crowd = 0
    for path in files:
        categories, images, annotations = _read_file(path)
        dataset.add_classes(list(categories.values()))
        boxes, labels, skipped = _boxes_by_image(path, annotations, categories, images)
        crowd += skipped
        for image_id, info in images.items():
            image = _image(root, path, info, ltwh_to_xyxy(boxes[image_id]), labels[image_id])
            if image.file_name in names:
                raise UserError(
                    f"{path}: image name {image.file_name} appears twice in the dataset; rename one"
                )
            names.add(image.file_name)
            dataset.images.append(image)
    if crowd:
        log.warning("skipped %d crowd annotation(s): VoTT has no crowd regions", crowd)
    return dataset
