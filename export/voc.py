"""Pascal VOC laid out the way VoTT 2.2.0's own exporter does it (SPEC §5).

Layout written (``DIR`` plays the role of VoTT's ``<name>-PascalVOC-export/``)::

    DIR/JPEGImages/<asset name>
    DIR/Annotations/<asset name without extension>.xml
    DIR/ImageSets/Main/<tag>_train.txt, <tag>_val.txt (and <tag>_test.txt when there is a test split)
    DIR/pascal_label_map.pbtxt

As in VoTT, file names are VoTT's URL-encoded asset names, box values are the raw pixel numbers
(0-based, floats possible), every exported image appears in every tag's list as
``<asset name> 1`` (has the tag) or ``<asset name> -1``, and the label map ids are 1-based in
tag order. Unlike VoTT, the train/val(/test) assignment comes from the seeded ``--split``.
"""

from __future__ import annotations

import glob
import logging
import re
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from agent.errors import UserError
from agent.fsutil import atomic_write_text
from export.dataset import SPLITS, LabeledDataset, LabeledImage, copy_image, image_size, js_number

log = logging.getLogger(__name__)


def annotation_xml(image: LabeledImage, project_name: str) -> str:
    """The Annotations/<stem>.xml text VoTT's pascalVOC template produces for one image."""
    name = image.vott_name or image.file_name
    folder = re.sub(r"\s", "-", project_name)
    objects = []
    for box, label in zip(image.xyxy.astype(np.float64).tolist(), image.labels, strict=True):
        objects.append(
            "    <object>\n"
            f"    <name>{escape(label)}</name>\n"
            "    <pose>Unspecified</pose>\n"
            "    <truncated>0</truncated>\n"
            "    <difficult>0</difficult>\n"
            "    <bndbox>\n"
            f"        <xmin>{js_number(box[0])}</xmin>\n"
            f"        <ymin>{js_number(box[1])}</ymin>\n"
            f"        <xmax>{js_number(box[2])}</xmax>\n"
            f"        <ymax>{js_number(box[3])}</ymax>\n"
            "    </bndbox>\n"
            "</object>\n"
        )
    return (
        '<annotation verified="yes">\n'
        "    <folder>Annotation</folder>\n"
        f"    <filename>{escape(name)}</filename>\n"
        f"    <path>{escape(folder)}-PascalVOC-export/Annotations/{escape(name)}</path>\n"
        "    <source>\n"
        "        <database>Unknown</database>\n"
        "    </source>\n"
        "    <size>\n"
        f"        <width>{image.width}</width>\n"
        f"        <height>{image.height}</height>\n"
        "        <depth>3</depth>\n"
        "    </size>\n"
        "    <segmented>0</segmented>\n" + "".join(objects) + "</annotation>"
    )


def label_map(classes: list[str]) -> str:
    """``pascal_label_map.pbtxt``: ``item { id: <1-based> name: '<tag>' }`` per tag."""
    return "".join(f"item {{\n id: {i}\n name: '{c}'\n}}\n" for i, c in enumerate(classes, start=1))


def write_voc(dataset: LabeledDataset, out: Path) -> list[Path]:
    """Write the VoTT-style Pascal VOC layout into ``out``; returns the annotation files."""
    written = []
    (out / "Annotations").mkdir(parents=True, exist_ok=True)
    (out / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for image in dataset.images:
        assert image.image_path is not None
        name = image.vott_name or image.file_name
        copy_image(image.image_path, out / "JPEGImages" / name)
        stem = name.rsplit(".", 1)[0]
        path = out / "Annotations" / f"{stem}.xml"
        atomic_write_text(path, annotation_xml(image, dataset.name), fsync=False)
        written.append(path)
    for tag in dataset.classes:
        for split in SPLITS:
            images = [i for i in dataset.images if i.split == split]
            if not images and split != "train":
                continue
            lines = [f"{i.vott_name or i.file_name} {1 if tag in i.labels else -1}" for i in images]
            atomic_write_text(
                out / "ImageSets" / "Main" / f"{tag}_{split}.txt", "\n".join(lines), fsync=False
            )
    atomic_write_text(out / "pascal_label_map.pbtxt", label_map(dataset.classes), fsync=False)
    return written


def _read_label_map(path: Path) -> list[str]:
    if not path.is_file():
        return []
    items = re.findall(r"id:\s*(\d+)\s*name:\s*['\"]([^'\"]*)['\"]", path.read_text(encoding="utf-8"))
    return [name for _, name in sorted(items, key=lambda item: int(item[0]))]


def _split_of(root: Path) -> dict[str, str]:
    """Image name -> split from ImageSets/Main/<tag>_<split>.txt (or <split>.txt) lists."""
    out: dict[str, str] = {}
    for path in sorted((root / "ImageSets" / "Main").glob("*.txt")):
        split = path.stem.rsplit("_", 1)[-1]
        split = {"trainval": "train"}.get(split, split)
        if split not in SPLITS:
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            name = re.sub(r"\s+(?:-?1|0)\s*$", "", line).strip()
            if name:
                out.setdefault(name, split)
    return out


def _read_annotation(path: Path) -> tuple[str, list[list[float]], list[str], int, int]:
    """One VOC XML: the stored image name, ``xyxy`` boxes, labels, width and height (0: unknown)."""
    try:
        tree = ET.parse(path).getroot()
        boxes, labels = [], []
        for obj in tree.iter("object"):
            bnd = obj.find("bndbox")
            if bnd is not None:
                boxes.append([float(bnd.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax")])
                labels.append((obj.findtext("name") or "").strip())
        width = int(float(tree.findtext("size/width") or 0))
        height = int(float(tree.findtext("size/height") or 0))
    except (ET.ParseError, ValueError) as exc:
        raise UserError(f"{path} is not a Pascal VOC annotation ({exc}); fix or remove it") from None
    if not all(labels) or not np.isfinite(np.array(boxes, dtype=np.float64)).all():
        raise UserError(f"{path}: an object lacks a name or a numeric bndbox; fix or remove it")
    return (tree.findtext("filename") or "").strip(), boxes, labels, width, height


def _voc_image(root: Path, path: Path, stored_name: str) -> Path:
    """The image an annotation names, or the one named like the annotation file."""
    image_path = root / "JPEGImages" / stored_name if stored_name else None
    if image_path is None or not image_path.is_file():
        matches = sorted((root / "JPEGImages").glob(f"{glob.escape(path.stem)}.*"))
        image_path = matches[0] if matches else None
    if image_path is None:
        raise UserError(f"{path}: image {stored_name or path.stem} not found in {root / 'JPEGImages'}")
    return image_path


def read_voc(root: Path) -> LabeledDataset:
    """Read a Pascal VOC folder (``Annotations/*.xml`` + ``JPEGImages/``). File names are
    URL-decoded (VoTT's exporter writes them encoded); class order comes from
    ``pascal_label_map.pbtxt`` when present, else from first appearance."""
    xml_files = sorted((root / "Annotations").glob("*.xml"))
    if not xml_files:
        raise UserError(f"no Annotations/*.xml in {root}; pass the Pascal VOC folder")
    dataset = LabeledDataset(root.name, _read_label_map(root / "pascal_label_map.pbtxt"))
    splits = _split_of(root)
    for path in xml_files:
        stored_name, boxes, labels, width, height = _read_annotation(path)
        image_path = _voc_image(root, path, stored_name)
        if not (width and height):
            width, height = image_size(image_path)
        dataset.add_classes(labels)
        dataset.images.append(
            LabeledImage(
                file_name=urllib.parse.unquote(image_path.name),
                image_path=image_path,
                width=width,
                height=height,
                xyxy=np.array(boxes, dtype=np.float32).reshape(-1, 4),
                labels=labels,
                split=splits.get(image_path.name, splits.get(image_path.stem, "train")),
                vott_name=image_path.name,
            )
        )
    return dataset
