"""VoTT's own CSV export (SPEC §5), byte for byte.

Layout written (``DIR`` plays the role of VoTT's ``vott-csv-export/``)::

    DIR/<project name, whitespace as "-">-export.csv
    DIR/<asset name>            the images, named by VoTT's URL-encoded asset name

The CSV has the header ``"image","xmin","ymin","xmax","ymax","label"`` and one row per region
per tag; strings are quoted (json2csv style: ``"`` doubled), numbers printed as JavaScript prints
them, pixels, ``xmax = left + width``; rows joined by ``\\n`` with no trailing newline.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from agent.fsutil import atomic_write_text
from export.dataset import LabeledDataset, copy_image, js_number

HEADER = '"image","xmin","ymin","xmax","ymax","label"'


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def vott_csv_text(dataset: LabeledDataset) -> str:
    """The CSV text VoTT writes for the dataset's images."""
    lines = [HEADER]
    for image in dataset.images:
        name = _quote(image.vott_name or image.file_name)
        for box, label in zip(image.xyxy.astype(np.float64).tolist(), image.labels, strict=True):
            lines.append(",".join([name, *(js_number(v) for v in box), _quote(label)]))
    return "\n".join(lines)


def write_vott_csv(dataset: LabeledDataset, out: Path) -> list[Path]:
    """Write the CSV and the images into ``out``; returns the CSV path."""
    for image in dataset.images:
        assert image.image_path is not None
        copy_image(image.image_path, out / (image.vott_name or image.file_name))
    stem = re.sub(r"\s", "-", dataset.name)
    path = out / f"{stem}-export.csv"
    atomic_write_text(path, vott_csv_text(dataset), fsync=False)
    return [path]
