"""YOLO (Ultralytics) detection dataset.

Layout written::

    DIR/images/<file name>
    DIR/labels/<file name without extension>.txt   one "class cx cy w h" line per box, normalised
    DIR/train.txt, val.txt, test.txt                 image lists ("./images/<file name>")
    DIR/data.yaml                                    path, train, val, test, nc, names

Ultralytics finds a label file by replacing ``/images/`` with ``/labels/`` in the image path.
``path`` in ``data.yaml`` is the absolute output folder (Ultralytics resolves a relative one
against its own datasets folder); edit it after moving the dataset. ``val`` falls back to the
train list when the validation split is empty (Ultralytics requires the key).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agent.boxes import cxcywh_to_xyxy, denormalize_xyxy, normalize_xyxy, xyxy_to_cxcywh
from agent.errors import UserError
from agent.fsutil import atomic_write_text
from export.dataset import IMAGE_SUFFIXES, SPLITS, LabeledDataset, LabeledImage, copy_image, image_size

log = logging.getLogger(__name__)


def label_lines(image: LabeledImage, class_index: dict[str, int]) -> list[str]:
    """``class cx cy w h`` lines (normalised to [0, 1], 6 decimals) for one image."""
    norm = normalize_xyxy(image.xyxy, image.width, image.height)
    cxcywh = np.clip(xyxy_to_cxcywh(norm).astype(np.float64), 0.0, 1.0)
    return [
        f"{class_index[label]} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"
        for label, (cx, cy, w, h) in zip(image.labels, cxcywh.tolist(), strict=True)
    ]


def write_yolo(dataset: LabeledDataset, out: Path, *, final_dir: Path | None = None) -> list[Path]:
    """Write the YOLO layout into ``out``; returns the label files. ``final_dir``: where ``out`` will
    be moved when complete (``data.yaml``'s ``path`` names it; default ``out``)."""
    class_index = dataset.class_index()
    stems: dict[str, str] = {}
    written = []
    (out / "labels").mkdir(parents=True, exist_ok=True)
    for image in dataset.images:
        assert image.image_path is not None
        if image.stem in stems:
            raise UserError(
                f"{stems[image.stem]} and {image.file_name} would share the label file {image.stem}.txt; "
                "rename one of them"
            )
        stems[image.stem] = image.file_name
        copy_image(image.image_path, out / "images" / image.file_name)
        path = out / "labels" / f"{image.stem}.txt"
        atomic_write_text(path, "".join(line + "\n" for line in label_lines(image, class_index)), fsync=False)
        written.append(path)
    lists: dict[str, str] = {}
    for split in SPLITS:
        names = [i.file_name for i in dataset.images if i.split == split]
        if names:
            atomic_write_text(out / f"{split}.txt", "".join(f"./images/{n}\n" for n in names), fsync=False)
            lists[split] = f"{split}.txt"
    data: dict[str, Any] = {
        "path": str((final_dir or out).resolve()),
        "train": lists.get("train") or lists.get("val") or lists.get("test"),
        "val": lists.get("val") or lists.get("train") or lists.get("test"),
    }
    if "test" in lists:
        data["test"] = lists["test"]
    data["nc"] = len(dataset.classes)
    data["names"] = dict(enumerate(dataset.classes))
    atomic_write_text(
        out / "data.yaml", yaml.safe_dump(data, sort_keys=False, allow_unicode=True), fsync=False
    )
    return written


def _images_in(entry: Path, root: Path) -> list[Path]:
    """Image files named by one ``train``/``val``/``test`` entry: a folder, a list file or an image."""
    if entry.is_dir():
        return sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if entry.suffix == ".txt" and entry.is_file():
        out = []
        for line in entry.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line:
                out.append(entry.parent / line[2:] if line.startswith("./") else root / line)
        return out
    if entry.is_file():
        return [entry]
    raise UserError(f"YOLO split entry {entry} does not exist; fix data.yaml")


def _label_path(image: Path) -> Path:
    parts = list(image.parts)
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        parts[i] = "labels"
        return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def _read_labels(path: Path, classes: list[str]) -> tuple[np.ndarray, list[str]]:
    if not path.is_file():
        return np.zeros((0, 4), dtype=np.float32), []
    rows, labels = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            cls = int(fields[0])
            values = [float(v) for v in fields[1:5]]
            if len(values) != 4 or not 0 <= cls < len(classes):
                raise ValueError(f"need 'class cx cy w h' with class < {len(classes)}")
        except ValueError as exc:
            raise UserError(f"{path}:{number}: {exc}; fix the line") from None
        rows.append(values)
        labels.append(classes[cls])
    return np.array(rows, dtype=np.float32).reshape(-1, 4), labels


def read_yolo(root: Path) -> LabeledDataset:
    """Read a YOLO dataset folder with ``data.yaml`` (``names`` as list or mapping; ``train``/
    ``val``/``test`` as folders, list files or lists of them, relative to ``path``)."""
    yaml_files = [root / "data.yaml"] if (root / "data.yaml").is_file() else sorted(root.glob("*.yaml"))
    if not yaml_files:
        raise UserError(f"no data.yaml in {root}; pass the YOLO dataset folder")
    try:
        data = yaml.safe_load(yaml_files[0].read_text(encoding="utf-8"))
        names = data["names"]
        classes = (
            [str(names[k]) for k in sorted(names)] if isinstance(names, dict) else [str(n) for n in names]
        )
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise UserError(f"{yaml_files[0]} is not a YOLO data.yaml with 'names' ({exc})") from None
    base = Path(str(data.get("path") or "."))
    if not base.is_absolute():
        base = root / base
    elif not base.is_dir():
        base = root  # written elsewhere and moved here since
    dataset = LabeledDataset(root.name, classes)
    seen: set[Path] = set()
    for split in SPLITS:
        entries = data.get(split)
        if not entries:
            continue
        for entry in entries if isinstance(entries, list) else [entries]:
            for listed in _images_in(base / str(entry), base):
                image_path = Path(os.path.normpath(listed))
                if image_path in seen:
                    continue
                seen.add(image_path)
                if not image_path.is_file():
                    raise UserError(f"image {image_path} listed in {split} does not exist; fix the list")
                width, height = image_size(image_path)
                cxcywh, labels = _read_labels(_label_path(image_path), classes)
                xyxy = denormalize_xyxy(cxcywh_to_xyxy(cxcywh), width, height)
                dataset.images.append(
                    LabeledImage(
                        file_name=image_path.name,
                        image_path=image_path,
                        width=width,
                        height=height,
                        xyxy=xyxy,
                        labels=labels,
                        split=split,
                    )
                )
    if not dataset.images:
        raise UserError(f"{yaml_files[0]} lists no images; check its train/val/test entries")
    return dataset
