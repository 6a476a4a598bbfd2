"""Google AutoML Vision object-detection CSV (the format of the AutoML + VoTT article in the seeds).

Layout written::

    DIR/images/<file name>
    DIR/automl.csv     one row per box: SET,PATH,LABEL,X1,Y1,,,X2,Y2,,  (no header)

``SET`` is TRAIN, VALIDATION or TEST; ``PATH`` is ``<path prefix>images/<file name>`` (upload
DIR to the bucket and pass its ``gs://`` URL as the prefix); ``X1,Y1`` (top left) and ``X2,Y2``
(bottom right) are relative to the image size, in [0, 1], 6 decimals. The empty columns are the
unused vertices of the four-vertex form.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from agent.boxes import normalize_xyxy
from agent.fsutil import atomic_write_text
from export.dataset import LabeledDataset, copy_image

AUTOML_SETS = {"train": "TRAIN", "val": "VALIDATION", "test": "TEST"}


def automl_rows(dataset: LabeledDataset, path_prefix: str = "") -> list[list[str]]:
    """The CSV rows (11 fields each) for every box of every image."""
    rows = []
    for image in dataset.images:
        norm = np.clip(normalize_xyxy(image.xyxy, image.width, image.height).astype(np.float64), 0.0, 1.0)
        path = f"{path_prefix}images/{image.file_name}"
        for label, (x1, y1, x2, y2) in zip(image.labels, norm.tolist(), strict=True):
            coords = [f"{v:.6f}" for v in (x1, y1, x2, y2)]
            rows.append([AUTOML_SETS[image.split], path, label, coords[0], coords[1], "", "",
                         coords[2], coords[3], "", ""])  # fmt: skip
    return rows


def write_automl(dataset: LabeledDataset, out: Path, path_prefix: str = "") -> list[Path]:
    """Write images and ``automl.csv`` into ``out``; returns the CSV path."""
    for image in dataset.images:
        assert image.image_path is not None
        copy_image(image.image_path, out / "images" / image.file_name)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(automl_rows(dataset, path_prefix))
    path = out / "automl.csv"
    atomic_write_text(path, buffer.getvalue(), fsync=False)
    return [path]
