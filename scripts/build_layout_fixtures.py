"""Build the tiny, deterministic ``.tflite`` test fixtures in ``tests/fixtures/models/``.

The agent's decoder tests load these models with ai-edge-litert or tflite-runtime only; TensorFlow is
needed just to regenerate them. Every model has hand-set weights (no training), so what it detects on
its test image is known exactly and is written down beside it.

How to run
----------
Build (needs TensorFlow; tested with ``tensorflow-cpu==2.21.0``, numpy 1.26.4, Python 3.11)::

    python3 -m venv /tmp/tf-fixtures
    /tmp/tf-fixtures/bin/pip install tensorflow-cpu==2.21.0 'numpy<2'
    /tmp/tf-fixtures/bin/python scripts/build_layout_fixtures.py

This writes every file under ``tests/fixtures/models/`` and then re-runs this script with
``--verify`` in the project's venv (``.venv/bin/python``; change it with ``--verify-python``), which
loads each model in BOTH ai-edge-litert and tflite-runtime, checks ops, tensor shapes (read after
``allocate_tensors()``), dtypes and quantisation, runs each test image and compares the detections
with ``<fixture>.expected.json``. Verify the committed files without TensorFlow::

    .venv/bin/python scripts/build_layout_fixtures.py --verify

The build is byte-for-byte reproducible with the same TensorFlow version (it prints the sha256 of
every file; run it twice to check). Other TensorFlow versions may produce different (but equivalent)
bytes.

What the models compute
-----------------------
Every detector looks at the average colour of grid cells. With ``(r, g, b)`` the mean of a cell in
[0, 1], the class logits are ``z_c = 5 * (2 * c - other1 - other2) - 5`` (a 1x1 convolution after an
average pool), so a pure red cell gives class 0 ("red") ``sigmoid(5) = 0.99331``, pure green class 1,
pure blue class 2, while black, white and grey (the letterbox padding 114) give ``sigmoid(-5)``.
A channel at intensity ``I`` (0..1) alone gives ``sigmoid(10 * I - 5)``.

- SSD (``TFLite_Detection_PostProcess``): a 4x4 grid of 24 px cells at 96x96, one anchor per cell
  equal to the cell, zero box encodings, so each detected box is exactly its cell. The float graph
  expects input in [-1, 1] (``(pixel - 127.5) / 127.5``, the SSD default); the uint8 graphs take raw
  pixels (input quant (2/255, 128)). Op attributes: ``max_detections`` 10, ``nms_score_threshold``
  0.3, ``nms_iou_threshold`` 0.5, fast NMS, scales 10/10/5/5, ``num_classes`` 3.
- YOLO: heads at strides 8, 16, 32 with one candidate per cell, N = 144 + 36 + 9 = 189 rows in that
  order (row-major within a stride), boxes ``cx, cy, w, h`` normalised to 0..1 = the cell. YOLOv8
  layout ``[1, 4 + nc, N]`` (class scores, no objectness); YOLOv5 layout ``[1, N, 5 + nc]`` with
  objectness ``sigmoid(sum_c relu(z_c + 5) - 5)``, score = objectness x class. Graphs expect
  ``pixel / 255``.

The test images are black with coloured squares placed so that, after the stated resize
(stretch for SSD, Ultralytics letterbox for YOLO), each square fills exactly one cell: the expected
box of each detection is the square itself, in original-image pixels. Squares have different
intensities, so scores differ and the SSD's output order (by score) is defined.

Output order of the SSDs
------------------------
The converter maps the stand-in function's results by position onto the op's outputs (boxes,
classes, scores, count) and then orders the flatbuffer's outputs by signature key: for keys
``output_0..3`` it is always ``[output_1, output_3, output_0, output_2]``. Returning
``(count, scores, classes, boxes)`` (the OD API's ``[::-1]``) gives the TF2 order (scores, boxes,
count, classes); returning ``(scores, boxes, count, classes)`` gives the TF1 order (boxes, classes,
scores, count). The SSD weights live in ``tf.Variable``s so the graph is stateful and the TF2
outputs are named ``StatefulPartitionedCall:1/3/0/2`` like real TF2 / Model Maker exports. The TF1
fixture is then patched to look like a TF1 ``export_tflite_ssd_graph`` + TOCO model: input
``normalized_input_image_tensor``, outputs ``TFLite_Detection_PostProcess``, ``:1``, ``:2``, ``:3``,
no signature (as ../shared/models/ssd_mobilenet_v1_coco_quant_detect.tflite).

Fixtures
--------
- ``ssd_tf2_order_f32``, ``ssd_tf2_order_uint8in``, ``ssd_tf1_order_uint8in``: SSD layouts.
- ``yolov5_layout_uint8``: ``[1, 189, 8]`` uint8 in/out; ``yolov8_layout_f32``: ``[1, 7, 189]``.
- ``yolov8_layout_int8_in2``: int8 in/out whose input quant is (2/255, -64) (calibrated on
  [-0.5, 1.5]) although the graph expects ``pixel / 255``: assuming (1/255, -128) gives a wrong answer.
- ``yolov8_ultralytics_meta`` / ``yolov8_ultralytics_legacy_meta``: int8 (1/255, -128) YOLOv8 with
  Ultralytics 8.3 / 8.2 metadata (labels red, green, blue) and no model card.
- ``classifier_not_detector``: ``[1, 96, 96, 3]`` float32 -> ``[1, 5]`` softmax.
- ``fake_edgetpu_edgetpu``: see below.
Detector fixtures come with ``<name>.png`` (test image, some not square), ``<name>.expected.json``
(expected detections in original-image pixels, preprocessing, quant, tolerances) and, where labels
are not embedded, ``<name>.yaml`` (model card naming ``labels_rgb.txt``).

Ultralytics metadata embedding (found in ../shared/models/yolov8n_full_integer_quant_u8.3.172.tflite)
----------------------------------------------------------------------------------------------------
Ultralytics 8.3.x appends a zip archive straight after the flatbuffer
(``zipfile.ZipFile(file, "a", zipfile.ZIP_DEFLATED).writestr("metadata.json", json.dumps(meta,
indent=2))``): one member ``metadata.json``, deflated, created by Unix (``create_system`` 3),
``external_attr`` ``0o600 << 16``, zip offsets absolute from the start of the file; the flatbuffer
itself is untouched. The member is UTF-8 JSON, indent 2, keys in this order: description, author,
date, version, license, docs, stride, task, batch, imgsz ([h, w]), names (an object whose keys are
class ids as STRINGS, "0": "person", ...), args ({batch, fraction, half, int8, nms}), channels.
Older releases (8.2.x, e.g. ../shared/models/yolov8n_full_integer_quant_u8.2.23_edgetpu.tflite)
used tflite-support instead: a ``TFLITE_METADATA`` flatbuffer entry plus an appended zip whose one
member ``temp_meta.txt`` (stored, not deflated) holds ``str(meta)``, a Python dict literal with
integer keys (``{0: 'person', ...}``, read with ``ast.literal_eval``), keys as above without args and
channels. This script writes the 8.3
form exactly (with a fixed date so the bytes repeat) and the zip part of the 8.2 form.

The fake Edge TPU model is a real YOLOv8-layout int8 model whose operators are replaced by one
custom operator named ``edgetpu-custom-op`` (input -> output; its custom options a small flexbuffer
map, as in real compiled models, but with no program in it), with no signature, as edgetpu_compiler
leaves it; without the Edge TPU delegate ``allocate_tensors()`` fails
with "Encountered unresolved custom op: edgetpu-custom-op." in both runtimes.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import io
import json
import math
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "tests" / "fixtures" / "models"
DEFAULT_VERIFY_PYTHON = REPO / ".venv" / "bin" / "python"

INPUT_PX = 96
NUM_CLASSES = 3
LABELS = ("red", "green", "blue")
LABELS_FILE = "labels_rgb.txt"
YOLO_STRIDES = (8, 16, 32)
SSD_CELL_PX = 24
SSD_MAX_DETECTIONS = 10
SSD_SCORE_THRESHOLD = 0.3
SSD_IOU_THRESHOLD = 0.5
YOLO_SCORE_THRESHOLD = 0.25
END2END_K = 20  # rows of the end-to-end fixture's output (Ultralytics: max_det, 300)
LETTERBOX_PAD = 114
EDGETPU_OP = "edgetpu-custom-op"
SSD_OP = "TFLite_Detection_PostProcess"
# Fixed so the appended metadata (and so the file) is the same on every build.
META_DATE = "2026-01-01T00:00:00.000000"
ZIP_DATE_TIME = (2026, 1, 1, 0, 0, 0)

# Colour kernel of the 1x1 convolution: z[c] = sum_i x[i] * KERNEL[i, c] = 5 * (2 x_c - x_o1 - x_o2).
COLOUR_KERNEL = np.full((3, 3), -5.0, dtype=np.float32) + np.eye(3, dtype=np.float32) * 15.0
CLASS_BIAS = -5.0


# --------------------------------------------------------------------------------------------------
# Fixture descriptions (no TensorFlow needed)
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Square:
    """A filled rectangle of one colour channel at ``value`` (0..255), in original-image pixels."""

    class_id: int
    value: int
    xyxy: tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True)
class TestImage:
    """A black RGB image with coloured squares."""

    width: int
    height: int
    squares: tuple[Square, ...]

    def pixels_rgb(self) -> np.ndarray:
        """The image as uint8 RGB ``[height, width, 3]``."""
        img = np.zeros((self.height, self.width, 3), dtype=np.uint8)
        for sq in self.squares:
            x1, y1, x2, y2 = sq.xyxy
            img[y1:y2, x1:x2, sq.class_id] = sq.value
        return img


@dataclasses.dataclass(frozen=True)
class Fixture:
    """One detector fixture: how it is built, what it expects, what it should find."""

    name: str
    family: str  # ssd_tf2 | ssd_tf1 | yolov5 | yolov8 | yolo_end2end
    io: str  # float32 | uint8 | int8 (input, and output for YOLO)
    image: TestImage
    resize: str  # stretch | letterbox
    normalisation: str  # human-readable statement of what the float graph expects
    mean: float
    std: float
    calibration: str = "unit"  # unit | wide  (wide: int8 input calibrated on [-0.5, 1.5])
    card: bool = True
    metadata: str | None = None  # ultralytics | ultralytics_legacy


def _ssd_cells(width: int, height: int, cells: list[tuple[int, int, int, int]]) -> TestImage:
    """Squares that fill SSD cells (row, col) after a stretch of ``width x height`` to 96x96."""
    sx, sy = width // INPUT_PX, height // INPUT_PX
    squares = []
    for class_id, value, row, col in cells:
        x1, y1 = col * SSD_CELL_PX * sx, row * SSD_CELL_PX * sy
        squares.append(Square(class_id, value, (x1, y1, x1 + SSD_CELL_PX * sx, y1 + SSD_CELL_PX * sy)))
    return TestImage(width, height, tuple(squares))


def _yolo_cells(width: int, height: int, cells: list[tuple[int, int, int, int]]) -> TestImage:
    """Squares that fill stride-8 cells (row, col) of the 96x96 input after letterboxing.

    Only sizes whose letterbox gain is 1/k for an integer k are supported (exact block averages).
    """
    gain = min(INPUT_PX / height, INPUT_PX / width)
    k = round(1 / gain)
    assert abs(k * gain - 1) < 1e-9, "letterbox gain must be 1/k"
    left, top, _, _ = letterbox_geometry(width, height)
    squares = []
    for class_id, value, row, col in cells:
        x1, y1 = (col * 8 - left) * k, (row * 8 - top) * k
        assert x1 >= 0 and y1 >= 0 and x1 + 8 * k <= width and y1 + 8 * k <= height, (row, col)
        squares.append(Square(class_id, value, (x1, y1, x1 + 8 * k, y1 + 8 * k)))
    return TestImage(width, height, tuple(squares))


def letterbox_geometry(width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, new_w, new_h) of the Ultralytics letterbox of ``width x height`` into 96x96."""
    r = min(INPUT_PX / height, INPUT_PX / width)
    new_w, new_h = round(width * r), round(height * r)
    dw, dh = (INPUT_PX - new_w) / 2, (INPUT_PX - new_h) / 2
    return round(dw - 0.1), round(dh - 0.1), new_w, new_h


SSD_FLOAT_NORM = "float32 input = (pixel - 127.5) / 127.5, RGB (the SSD default: mean 127.5, std 127.5)"
RAW_PIXELS = "raw uint8 RGB pixels (the input tensor's quantisation maps them to the graph's [-1, 1])"
YOLO_NORM = "pixel / 255, RGB (the YOLO default: mean 0, std 255)"
YOLO_INT8_NORM = (
    "pixel / 255, RGB, then quantised with the input tensor's OWN (scale, zero_point): "
    "q = clip(round(x / scale) + zero_point, -128, 127)"
)

FIXTURES: tuple[Fixture, ...] = (
    Fixture(
        "ssd_tf2_order_f32",
        "ssd_tf2",
        "float32",
        _ssd_cells(96, 96, [(0, 255, 1, 2), (1, 230, 3, 0), (2, 200, 2, 3)]),
        "stretch",
        SSD_FLOAT_NORM,
        127.5,
        127.5,
    ),
    Fixture(
        "ssd_tf2_order_uint8in",
        "ssd_tf2",
        "uint8",
        _ssd_cells(192, 96, [(0, 255, 1, 2), (1, 230, 3, 0), (2, 200, 2, 3)]),
        "stretch",
        RAW_PIXELS,
        0.0,
        1.0,
    ),
    Fixture(
        "ssd_tf1_order_uint8in",
        "ssd_tf1",
        "uint8",
        _ssd_cells(96, 192, [(2, 255, 0, 1), (0, 230, 3, 3), (1, 200, 1, 0)]),
        "stretch",
        RAW_PIXELS,
        0.0,
        1.0,
    ),
    Fixture(
        "yolov5_layout_uint8",
        "yolov5",
        "uint8",
        _yolo_cells(96, 96, [(0, 255, 1, 2), (1, 230, 9, 4), (2, 200, 5, 10)]),
        "letterbox",
        "raw uint8 RGB pixels (input quant (1/255, 0), i.e. the graph sees pixel / 255)",
        0.0,
        1.0,
    ),
    Fixture(
        "yolov8_layout_f32",
        "yolov8",
        "float32",
        _yolo_cells(192, 96, [(0, 255, 4, 2), (1, 230, 8, 9), (2, 200, 6, 11)]),
        "letterbox",
        YOLO_NORM,
        0.0,
        255.0,
    ),
    Fixture(
        "yolov8_layout_int8_in2",
        "yolov8",
        "int8",
        _yolo_cells(96, 96, [(0, 255, 2, 3), (2, 128, 7, 7), (1, 64, 10, 1)]),
        "letterbox",
        YOLO_INT8_NORM,
        0.0,
        255.0,
        calibration="wide",
    ),
    Fixture(
        "yolov8_ultralytics_meta",
        "yolov8",
        "int8",
        _yolo_cells(96, 192, [(0, 255, 1, 3), (1, 230, 10, 5), (2, 200, 6, 8)]),
        "letterbox",
        YOLO_INT8_NORM,
        0.0,
        255.0,
        card=False,
        metadata="ultralytics",
    ),
    Fixture(
        "yolov8_ultralytics_legacy_meta",
        "yolov8",
        "int8",
        _yolo_cells(96, 96, [(2, 255, 11, 11), (0, 230, 0, 0), (1, 200, 6, 2)]),
        "letterbox",
        YOLO_INT8_NORM,
        0.0,
        255.0,
        card=False,
        metadata="ultralytics_legacy",
    ),
    Fixture(
        "yolo_end2end_f32",
        "yolo_end2end",
        "float32",
        _yolo_cells(96, 192, [(1, 255, 3, 3), (0, 230, 9, 8), (2, 200, 1, 6)]),
        "letterbox",
        YOLO_NORM,
        0.0,
        255.0,
    ),
)

CLASSIFIER = "classifier_not_detector"
FAKE_EDGETPU = "fake_edgetpu_edgetpu"

LAYOUT_TEXT = {
    "ssd_tf2": "SSD + TFLite_Detection_PostProcess, outputs in TF2 order: scores [1,10], boxes [1,10,4] "
    "(ymin, xmin, ymax, xmax, 0..1), count [1], classes [1,10] (0-based, float)",
    "ssd_tf1": "SSD + TFLite_Detection_PostProcess, outputs in TF1 order: boxes [1,10,4] "
    "(ymin, xmin, ymax, xmax, 0..1), classes [1,10] (0-based, float), scores [1,10], count [1]",
    "yolov5": "YOLOv5 [1, N, 5 + nc]: cx, cy, w, h (0..1), objectness, nc class scores; "
    "score = objectness x class score",
    "yolov8": "YOLOv8 [1, 4 + nc, N]: rows cx, cy, w, h (0..1), then nc class scores; no objectness",
    "yolo_end2end": f"NMS-free YOLO (YOLOv10 / YOLO26 end-to-end) [1, {END2END_K}, 6]: the top {END2END_K} "
    "candidates by best class score, rows x1, y1, x2, y2 (0..1), score, class id (float); no NMS",
}


# --------------------------------------------------------------------------------------------------
# The models' arithmetic in numpy: the analytic expectation
# --------------------------------------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def _block_resize(img: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """Integer-factor downscale by block means (what cv2 INTER_LINEAR gives at exactly 1/2, 1/1)."""
    h, w, _ = img.shape
    fy, fx = h // out_h, w // out_w
    assert fy * out_h == h and fx * out_w == w and fy in (1, 2) and fx in (1, 2)
    return np.asarray(img.reshape(out_h, fy, out_w, fx, 3).mean(axis=(1, 3)))


def model_input_01(fixture: Fixture) -> np.ndarray:
    """The 96x96 RGB input the graph should see, as floats in [0, 1] (before quantisation)."""
    img = fixture.image.pixels_rgb().astype(np.float64)
    if fixture.resize == "stretch":
        return _block_resize(img, INPUT_PX, INPUT_PX) / 255.0
    left, top, new_w, new_h = letterbox_geometry(fixture.image.width, fixture.image.height)
    canvas = np.full((INPUT_PX, INPUT_PX, 3), float(LETTERBOX_PAD))
    canvas[top : top + new_h, left : left + new_w] = _block_resize(img, new_w, new_h)
    return canvas / 255.0


def _cell_means(x01: np.ndarray, cell: int) -> np.ndarray:
    g = INPUT_PX // cell
    return np.asarray(x01.reshape(g, cell, g, cell, 3).mean(axis=(1, 3)).reshape(g * g, 3))


def _cell_boxes_xyxy(cell: int) -> np.ndarray:
    """Normalised (x1, y1, x2, y2) of each cell, row-major."""
    g = INPUT_PX // cell
    rows, cols = np.divmod(np.arange(g * g), g)
    return np.stack([cols / g, rows / g, (cols + 1) / g, (rows + 1) / g], axis=1)


def analytic_candidates(fixture: Fixture) -> tuple[np.ndarray, np.ndarray]:
    """Every candidate box (normalised xyxy, [N, 4]) and its final per-class scores ([N, nc])."""
    x01 = model_input_01(fixture)
    cells = [SSD_CELL_PX] if fixture.family.startswith("ssd") else [*YOLO_STRIDES]
    boxes, scores = [], []
    for cell in cells:
        z = _cell_means(x01, cell) @ COLOUR_KERNEL.astype(np.float64)
        cls = _sigmoid(z + CLASS_BIAS)
        if fixture.family == "yolov5":
            obj = _sigmoid(np.maximum(z, 0.0).sum(axis=1, keepdims=True) + CLASS_BIAS)
            cls = obj * cls
        boxes.append(_cell_boxes_xyxy(cell))
        scores.append(cls)
    return np.concatenate(boxes), np.concatenate(scores)


def to_original_px(fixture: Fixture, boxes01: np.ndarray) -> np.ndarray:
    """Map normalised input boxes (xyxy) back to original-image pixels, clipped to the image."""
    w, h = fixture.image.width, fixture.image.height
    px = boxes01 * INPUT_PX
    if fixture.resize == "stretch":
        out = px * np.array([w, h, w, h]) / INPUT_PX
    else:
        left, top, new_w, new_h = letterbox_geometry(w, h)
        gain = np.array([new_w / w, new_h / h, new_w / w, new_h / h])
        out = (px - np.array([left, top, left, top])) / gain
    return np.clip(out, 0, [w, h, w, h])


def expected_detections(fixture: Fixture, labels: tuple[str, ...]) -> tuple[list[dict[str, Any]], float]:
    """The detections above the threshold (best class per candidate), by descending score, and the
    best score among the rest (the margin)."""
    boxes01, scores = analytic_candidates(fixture)
    threshold = SSD_SCORE_THRESHOLD if fixture.family.startswith("ssd") else YOLO_SCORE_THRESHOLD
    best = scores.max(axis=1)
    cls = scores.argmax(axis=1)
    keep = np.flatnonzero(best > threshold)
    keep = keep[np.argsort(-best[keep], kind="stable")]
    rest = np.delete(best, keep)
    boxes_px = to_original_px(fixture, boxes01[keep])
    dets: list[dict[str, Any]] = [
        {
            "class_id": int(cls[i]),
            "label": labels[int(cls[i])],
            "score": round(float(best[i]), 5),
            "box_xyxy": [round(float(v), 3) for v in box],
        }
        for i, box in zip(keep, boxes_px, strict=True)
    ]
    # Self-check of the design: exactly one detection per square, box == the square.
    want = sorted((sq.class_id, sq.xyxy) for sq in fixture.image.squares if sq.value >= 100)
    got = sorted((d["class_id"], tuple(round(v) for v in d["box_xyxy"])) for d in dets)
    assert want == got, (fixture.name, want, got)
    for d in dets:
        assert all(abs(v - round(v)) < 1e-6 for v in d["box_xyxy"]), d
    return dets, round(float(rest.max()), 5)


# --------------------------------------------------------------------------------------------------
# Files other than the models
# --------------------------------------------------------------------------------------------------


def png_bytes(rgb: np.ndarray) -> bytes:
    """A deterministic 8-bit RGB PNG (no ancillary chunks, zlib level 9)."""
    h, w, _ = rgb.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def ultralytics_metadata(names: tuple[str, ...]) -> dict[str, Any]:
    """The metadata dict Ultralytics 8.3 exports, for a 96x96 int8 detect model."""
    return {
        "description": "edge-agent test fixture: YOLOv8-layout colour-square detector (Ultralytics-style)",
        "author": "edge-agent",
        "date": META_DATE,
        "version": "8.3.172",
        "license": "Apache-2.0",
        "docs": "https://docs.ultralytics.com",
        "stride": 32,
        "task": "detect",
        "batch": 1,
        "imgsz": [INPUT_PX, INPUT_PX],
        "names": dict(enumerate(names)),
        "args": {"batch": 1, "fraction": 1.0, "half": False, "int8": True, "nms": False},
        "channels": 3,
    }


def append_zip(model: bytes, member: str, text: str, *, deflate: bool) -> bytes:
    """``model`` followed by a zip holding ``member``, as ``zipfile.ZipFile(path, "a")`` writes it
    (offsets absolute from the file start), with a fixed timestamp."""
    buf = io.BytesIO()
    buf.write(model)
    buf.seek(0)
    compression = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "a", compression) as zf:
        info = zipfile.ZipInfo(member, date_time=ZIP_DATE_TIME)
        info.compress_type = compression
        info.create_system = 3
        info.external_attr = 0o600 << 16
        zf.writestr(info, text)
    return buf.getvalue()


def card_yaml(fixture: Fixture) -> str:
    """A minimal model card: labels only (layout and input left to auto-detection)."""
    return (
        f"name: {fixture.name}\n"
        'version: "1"\n'
        f'description: "edge-agent test fixture ({fixture.family}, {fixture.io}); see '
        f'{fixture.name}.expected.json"\n'
        "license: Apache-2.0\n"
        f"labels_file: {LABELS_FILE}\n"
    )


def write_file(path: Path, data: bytes) -> None:
    """Write atomically (temp file in the same folder, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------
# Building the models (TensorFlow)
# --------------------------------------------------------------------------------------------------


def _import_tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def _representative(kind: str) -> list[np.ndarray]:
    """Calibration images [1, 96, 96, 3] float32 in the graph's input range.

    ``unit``: [0, 1]; ``signed``: [-1, 1]; ``wide``: [-0.5, 1.5] (a graph that expects [0, 1] but
    whose int8 input tensor ends up covering [-0.5, 1.5]). Random images plus saturated colours so
    every internal range (and the scores) reach their extremes.
    """
    rng = np.random.default_rng(20260101)
    lo, hi = {"unit": (0.0, 1.0), "signed": (-1.0, 1.0), "wide": (-0.5, 1.5)}[kind]
    u_lo, u_hi = (-1.0, 1.0) if kind == "signed" else (0.0, 1.0)
    shape = (1, INPUT_PX, INPUT_PX, 3)
    samples = [rng.uniform(u_lo, u_hi, shape) for _ in range(16)]
    for colour in ([1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [0, 0, 0], [0.447, 0.447, 0.447]):
        c = np.asarray(colour, dtype=np.float64)
        samples.append(np.broadcast_to(u_lo + (u_hi - u_lo) * c, shape))
    # A black image with a coloured block per channel, like the test images.
    for ch in range(3):
        img = np.full(shape, u_lo)
        img[0, 24:48, 24:48, ch] = u_hi
        samples.append(img)
    if kind == "wide":
        samples.append(np.full(shape, lo))
        samples.append(np.full(shape, hi))
    return [s.astype(np.float32) for s in samples]


def _convert(tf: Any, fn: Any, quant: dict[str, Any] | None, module: Any = None) -> bytes:
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], module or tf.Module())
    if quant is not None:
        samples = _representative(quant["calibration"])

        def dataset() -> Iterator[list[np.ndarray]]:
            for s in samples:
                yield [s]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = quant["ops"]
        converter.inference_input_type = quant["input"]
        if quant.get("output") is not None:
            converter.inference_output_type = quant["output"]
    return bytes(converter.convert())


def _colour_logits(tf: Any, pooled: Any) -> Any:
    """z = 5 * (2 c - o1 - o2), a 1x1 convolution over pooled cell colours."""
    kernel = tf.constant(COLOUR_KERNEL.reshape(1, 1, 3, 3))
    return tf.nn.conv2d(pooled, kernel, strides=1, padding="VALID")


def _yolo_box_table() -> np.ndarray:
    """[N, 4] normalised cx, cy, w, h of every cell of every stride, in output row order."""
    rows = []
    for s in YOLO_STRIDES:
        xyxy = _cell_boxes_xyxy(s)
        rows.append(
            np.stack(
                [
                    (xyxy[:, 0] + xyxy[:, 2]) / 2,
                    (xyxy[:, 1] + xyxy[:, 3]) / 2,
                    xyxy[:, 2] - xyxy[:, 0],
                    xyxy[:, 3] - xyxy[:, 1],
                ],
                axis=1,
            )
        )
    return np.concatenate(rows).astype(np.float32)


def build_yolo(tf: Any, family: str, io_type: str, calibration: str = "unit") -> bytes:
    """A YOLOv5 ([1, N, 5+nc]), YOLOv8 ([1, 4+nc, N]) or end-to-end ([1, K, 6]) layout model;
    input ``images`` [1,96,96,3]."""
    boxes = _yolo_box_table()
    corners = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], axis=1)
    ones = tf.constant(np.ones((1, 1, 3, 1), dtype=np.float32))

    def body(x: Any) -> Any:
        rows = []
        for s in YOLO_STRIDES:
            g = INPUT_PX // s
            pooled = tf.nn.avg_pool2d(x, ksize=s, strides=s, padding="VALID")
            z = _colour_logits(tf, pooled)
            parts = [tf.sigmoid(z + CLASS_BIAS)]
            if family == "yolov5":
                obj_logit = tf.nn.conv2d(tf.nn.relu(z), ones, strides=1, padding="VALID") + CLASS_BIAS
                parts.insert(0, tf.sigmoid(obj_logit))
            rows.append(tf.reshape(tf.concat(parts, axis=-1), [1, g * g, -1]))
        scores = tf.concat(rows, axis=1)
        if family == "yolo_end2end":  # Ultralytics' end2end postprocess: top K by best class score
            best, index = tf.math.top_k(tf.reduce_max(scores[0], axis=-1), k=END2END_K)
            cls = tf.cast(tf.argmax(tf.gather(scores[0], index), axis=-1), tf.float32)
            top = [tf.gather(tf.constant(corners), index), best[:, None], cls[:, None]]
            return tf.concat(top, axis=-1)[None]
        out = tf.concat([tf.constant(boxes[None]), scores], axis=-1)
        return tf.transpose(out, [0, 2, 1]) if family == "yolov8" else out

    spec = tf.TensorSpec([1, INPUT_PX, INPUT_PX, 3], tf.float32, name="images")
    fn = tf.function(body).get_concrete_function(spec)
    quant = None
    if io_type != "float32":
        dtype = {"uint8": tf.uint8, "int8": tf.int8}[io_type]
        quant = {
            "calibration": calibration,
            "ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8],
            "input": dtype,
            "output": dtype,
        }
    return _convert(tf, fn, quant)


def _ssd_implements() -> str:
    attrs = [
        ("max_detections", "i", SSD_MAX_DETECTIONS),
        ("max_classes_per_detection", "i", 1),
        ("use_regular_nms", "b", "false"),
        ("nms_score_threshold", "f", SSD_SCORE_THRESHOLD),
        ("nms_iou_threshold", "f", SSD_IOU_THRESHOLD),
        ("y_scale", "f", 10.0),
        ("x_scale", "f", 10.0),
        ("h_scale", "f", 5.0),
        ("w_scale", "f", 5.0),
        ("num_classes", "i", NUM_CLASSES),
    ]
    parts = [f'name: "{SSD_OP}"']
    parts += [f'attr {{ key: "{k}" value {{ {t}: {v} }} }}' for k, t, v in attrs]
    return " ".join(parts)


def build_ssd(tf: Any, order: str, io_type: str) -> bytes:
    """An SSD whose ``TFLite_Detection_PostProcess`` outputs come in TF1 or TF2 order."""
    g = INPUT_PX // SSD_CELL_PX
    xyxy = _cell_boxes_xyxy(SSD_CELL_PX)
    anchors = np.stack(
        [
            (xyxy[:, 1] + xyxy[:, 3]) / 2,
            (xyxy[:, 0] + xyxy[:, 2]) / 2,
            xyxy[:, 3] - xyxy[:, 1],
            xyxy[:, 2] - xyxy[:, 0],
        ],
        axis=1,
    ).astype(np.float32)
    cls_kernel = np.zeros((1, 1, 3, NUM_CLASSES + 1), dtype=np.float32)
    cls_kernel[0, 0, :, 1:] = COLOUR_KERNEL
    # Weights held in variables, as in a real OD API model: the graph is then stateful and the
    # outputs are named StatefulPartitionedCall:N like real TF2 / Model Maker exports.
    module = tf.Module()
    module.cls_kernel = tf.Variable(cls_kernel, name="class_kernel")
    module.box_kernel = tf.Variable(np.zeros((1, 1, 3, 4), dtype=np.float32), name="box_kernel")

    @tf.function(experimental_implements=_ssd_implements())
    def postprocess(box_encodings: Any, class_predictions: Any, anchor_boxes: Any) -> Any:
        # A stand-in the converter replaces with the op; results map by POSITION onto the op's
        # outputs (boxes, classes, scores, count), whatever they are called here.
        del box_encodings, class_predictions, anchor_boxes
        return (
            tf.constant(0.0, name="boxes"),
            tf.constant(0.0, name="classes"),
            tf.constant(0.0, name="scores"),
            tf.constant(0.0, name="num_detections"),
        )

    def body(x: Any) -> Any:
        x01 = x * 0.5 + 0.5
        pooled = tf.nn.avg_pool2d(x01, ksize=SSD_CELL_PX, strides=SSD_CELL_PX, padding="VALID")
        logits = tf.nn.conv2d(pooled, module.cls_kernel, strides=1, padding="VALID") + CLASS_BIAS
        class_predictions = tf.reshape(tf.sigmoid(logits), [1, g * g, NUM_CLASSES + 1])
        encodings = tf.nn.conv2d(pooled, module.box_kernel, strides=1, padding="VALID")
        box_encodings = tf.reshape(encodings, [1, g * g, 4])
        boxes, classes, scores, count = postprocess(box_encodings, class_predictions, tf.constant(anchors))
        # Signature keys output_0..3 land in the flatbuffer as [output_1, output_3, output_0, output_2].
        if order == "tf2":
            return count, scores, classes, boxes  # -> scores, boxes, count, classes
        return scores, boxes, count, classes  # -> boxes, classes, scores, count

    spec = tf.TensorSpec([1, INPUT_PX, INPUT_PX, 3], tf.float32, name="input")
    fn = tf.function(body).get_concrete_function(spec)
    quant = None
    if io_type == "uint8":
        quant = {
            "calibration": "signed",
            "ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS],
            "input": tf.uint8,
            "output": None,  # keep the op's float outputs, as Model Maker exports do
        }
    data = _convert(tf, fn, quant, module)
    return data if order == "tf2" else as_tf1_export(data)


def as_tf1_export(model: bytes) -> bytes:
    """Name the tensors as TF1 ``export_tflite_ssd_graph`` + TOCO models name them and drop the
    signature (those models have none), like ../shared/models/ssd_mobilenet_v1_coco_quant_detect."""
    from tensorflow.lite.tools import flatbuffer_utils

    m = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    sg = m.subgraphs[0]
    sg.tensors[sg.inputs[0]].name = b"normalized_input_image_tensor"
    for k, i in enumerate(sg.outputs):
        sg.tensors[i].name = (SSD_OP + (f":{k}" if k else "")).encode()
    m.signatureDefs = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


def build_classifier(tf: Any) -> bytes:
    """[1, 96, 96, 3] float32 (pixel / 255) -> [1, 5] softmax over the mean colour."""
    weights = np.array([[4, -2, -2, -3, 3], [-2, 4, -2, -3, 3], [-2, -2, 4, -3, 3]], dtype=np.float32)
    bias = np.array([0, 0, 0, 2, -4], dtype=np.float32)

    def body(x: Any) -> Any:
        mean = tf.reshape(tf.nn.avg_pool2d(x, ksize=INPUT_PX, strides=INPUT_PX, padding="VALID"), [1, 3])
        return tf.nn.softmax(tf.matmul(mean, tf.constant(weights)) + tf.constant(bias))

    spec = tf.TensorSpec([1, INPUT_PX, INPUT_PX, 3], tf.float32, name="input")
    return _convert(tf, tf.function(body).get_concrete_function(spec), None)


def make_fake_edgetpu(model: bytes) -> bytes:
    """Replace every operator of ``model`` by one ``edgetpu-custom-op`` from its input to its
    output and drop what is no longer used, as an Edge TPU compiled model looks to a CPU runtime."""
    from flatbuffers import flexbuffers
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    m = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    sg = m.subgraphs[0]
    (inp,), (out,) = list(sg.inputs), list(sg.outputs)
    code = schema.OperatorCodeT()
    code.builtinCode = schema.BuiltinOperator.CUSTOM
    code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = EDGETPU_OP.encode()
    code.version = 1
    op = schema.OperatorT()
    op.opcodeIndex = 0
    op.inputs = [0]
    op.outputs = [1]
    # A flexbuffer map like the real op's (whose map holds the compiled program); no program here.
    op.customOptions = list(flexbuffers.Dumps({"edge_agent_fixture": "not a compiled Edge TPU program"}))
    op.customOptionsFormat = schema.CustomOptionsFormat.FLEXBUFFERS
    tensors = [sg.tensors[inp], sg.tensors[out]]
    empty = schema.BufferT()
    buffers = [empty]
    for t in tensors:
        t.buffer = 0
    sg.tensors = tensors
    sg.inputs, sg.outputs = [0], [1]
    sg.operators = [op]
    m.operatorCodes = [code]
    m.buffers = buffers
    m.signatureDefs = None  # edgetpu_compiler drops the signature
    m.metadata = None
    m.description = b"edge-agent fake Edge TPU model"
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


def tensor_quant(model: bytes) -> dict[str, Any]:
    """Input/output names, shapes, dtypes and quantisation read from the flatbuffer."""
    from tensorflow.lite.tools import flatbuffer_utils

    m = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    sg = m.subgraphs[0]
    dtypes = {0: "float32", 3: "uint8", 9: "int8", 2: "int32"}

    def describe(i: int) -> dict[str, Any]:
        t = sg.tensors[i]
        q = t.quantization
        quant = None
        if q is not None and q.scale is not None and len(q.scale) == 1:
            quant = {"scale": float(np.float32(q.scale[0])), "zero_point": int(q.zeroPoint[0])}
        return {
            "name": t.name.decode(),
            "dtype": dtypes[t.type],
            "shape": [int(v) for v in t.shape],
            "quant": quant,
        }

    return {"inputs": [describe(i) for i in sg.inputs], "outputs": [describe(i) for i in sg.outputs]}


def build_models() -> dict[str, bytes]:
    """Every ``.tflite`` fixture by name."""
    tf = _import_tf()
    models: dict[str, bytes] = {}
    for fx in FIXTURES:
        if fx.family.startswith("ssd"):
            data = build_ssd(tf, fx.family.removeprefix("ssd_"), fx.io)
        else:
            data = build_yolo(tf, fx.family, fx.io, fx.calibration)
        if fx.metadata == "ultralytics":
            data = append_zip(
                data, "metadata.json", json.dumps(ultralytics_metadata(LABELS), indent=2), deflate=True
            )
        elif fx.metadata == "ultralytics_legacy":
            # 8.2.x wrote the same dict without "args" and "channels".
            meta = {k: v for k, v in ultralytics_metadata(LABELS).items() if k not in ("args", "channels")}
            meta["version"] = "8.2.23"
            data = append_zip(data, "temp_meta.txt", str(meta), deflate=False)
        models[fx.name] = data
    models[CLASSIFIER] = build_classifier(tf)
    models[FAKE_EDGETPU] = make_fake_edgetpu(build_yolo(tf, "yolov8", "int8"))
    return models


# --------------------------------------------------------------------------------------------------
# Writing everything
# --------------------------------------------------------------------------------------------------


def expected_json(fixture: Fixture, io_info: dict[str, Any]) -> dict[str, Any]:
    """The ``<fixture>.expected.json`` document."""
    dets, margin = expected_detections(fixture, LABELS)
    quantised_out = fixture.io != "float32" and not fixture.family.startswith("ssd")
    quantised_any = fixture.io != "float32"
    w, h = fixture.image.width, fixture.image.height
    if fixture.resize == "stretch":
        resize = "stretch: cv2.resize(image, (96, 96), interpolation=cv2.INTER_LINEAR) (per-axis gains "
        resize += f"{INPUT_PX / w:g} x, {INPUT_PX / h:g} y)"
    else:
        left, top, new_w, new_h = letterbox_geometry(w, h)
        resize = (
            f"letterbox (Ultralytics): resize with cv2.INTER_LINEAR to {new_w}x{new_h}, pad with "
            f"{LETTERBOX_PAD} to 96x96: left {left}, top {top}, right {INPUT_PX - new_w - left}, "
            f"bottom {INPUT_PX - new_h - top}"
        )
    # Boxes: output quantisation step (0..1 range) x 96 px / gain back to the image, plus margin.
    out_io = io_info["outputs"]
    tol_px = 0.05
    if quantised_out:
        # Half an output quantisation step of a 0..1 coordinate, in original pixels (largest
        # per-axis factor back to the image), twice for safety, rounded up to 0.1 px.
        step_px = out_io[0]["quant"]["scale"] * INPUT_PX * max(w, h) / INPUT_PX
        tol_px = math.ceil(step_px * 10) / 10
    tol_score = 0.001 if not quantised_any else (0.02 if fixture.calibration == "wide" else 0.01)
    doc: dict[str, Any] = {
        "fixture": f"{fixture.name}.tflite",
        "image": f"{fixture.name}.png",
        "image_size_wh": [w, h],
        "layout": LAYOUT_TEXT[fixture.family],
        "preprocessing": {
            "color_order": "rgb (the PNG read with cv2.imread is BGR: convert)",
            "resize": resize,
            "normalisation": fixture.normalisation,
            "mean": fixture.mean,
            "std": fixture.std,
        },
        "input": io_info["inputs"][0],
        "input_quant": io_info["inputs"][0]["quant"],
        "outputs": out_io,
        "postprocessing": (
            f"in-graph (score threshold {SSD_SCORE_THRESHOLD}, fast NMS IoU {SSD_IOU_THRESHOLD}); "
            "detections = the first `count` rows"
            if fixture.family.startswith("ssd")
            else f"keep rows with score > {YOLO_SCORE_THRESHOLD}, in row order; no NMS"
            if fixture.family == "yolo_end2end"
            else f"dequantise with each tensor's own quant; keep max class score > {YOLO_SCORE_THRESHOLD}; "
            "class-aware NMS (no overlapping boxes here, so NMS removes nothing)"
        ),
        "score_threshold": SSD_SCORE_THRESHOLD if fixture.family.startswith("ssd") else YOLO_SCORE_THRESHOLD,
        "detections": dets,
        "detections_order": "descending score",
        "best_other_score": margin,
        "tolerance_px": tol_px,
        "tolerance_score": tol_score,
        "expected_from": "analytic float computation of the hand-set weights (this script); "
        "confirmed in ai-edge-litert and tflite-runtime",
    }
    if fixture.calibration == "wide":
        doc["note"] = (
            "The graph expects pixel / 255 but its int8 input tensor was calibrated on [-0.5, 1.5], so "
            "its quant is NOT (1/255, -128). A decoder that assumes (1/255, -128), i.e. feeds pixel - 128, "
            "gets 4 detections instead of 2: the 64-green square becomes a detection (score about 0.5), "
            "so does the 16x16 stride-16 cell around the red square (about 0.5), and the 128-blue square "
            "scores about 0.99 instead of about 0.5."
        )
    if fixture.metadata == "ultralytics":
        doc["labels_from"] = "the appended zip's metadata.json (Ultralytics 8.3 style); no model card"
    elif fixture.metadata == "ultralytics_legacy":
        doc["labels_from"] = "the appended zip's temp_meta.txt (Ultralytics 8.2 style dict literal); no card"
    else:
        doc["labels_from"] = f"{fixture.name}.yaml -> {LABELS_FILE}"
    return doc


def readme(io_infos: dict[str, dict[str, Any]], sizes: dict[str, int]) -> str:
    """A table of the fixtures, generated so it stays true."""

    def fmt(t: dict[str, Any]) -> str:
        q = t["quant"]
        qs = f" q=({q['scale']:.7g}, {q['zero_point']})" if q else ""
        return f"{t['dtype']} {t['shape']}{qs}"

    lines = [
        "# Layout test fixtures (generated: do not edit)",
        "",
        "Built by `scripts/build_layout_fixtures.py` (see its docstring: how to run, TensorFlow version,",
        "what the hand-set weights compute). Each detector has a test image `<name>.png` and",
        "`<name>.expected.json` with the detections in original-image pixels and the preprocessing it",
        "assumes; `<name>.yaml` is its model card (labels only) where it needs one.",
        "",
        "| fixture | bytes | input | outputs (in order, shapes after allocate_tensors) |",
        "|---|---|---|---|",
    ]
    for name, info in io_infos.items():
        outs = "; ".join(fmt(t) for t in info["outputs"])
        lines.append(f"| `{name}.tflite` | {sizes[name]} | {fmt(info['inputs'][0])} | {outs} |")
    lines += [
        "",
        f"`{CLASSIFIER}.tflite`: an image classifier (softmax over 5 classes), not a detector.",
        f"`{FAKE_EDGETPU}.tflite`: one `{EDGETPU_OP}` operator; without the Edge TPU delegate",
        "`allocate_tensors()` fails with `Encountered unresolved custom op: edgetpu-custom-op.`",
        "(SSD output shapes read `[]` until `allocate_tensors()`; the table shows them after it.)",
        "",
    ]
    return "\n".join(lines)


def build_all() -> dict[str, bytes]:
    """Every file of the fixtures folder by name."""
    models = build_models()
    files: dict[str, bytes] = {}
    io_infos: dict[str, dict[str, Any]] = {}
    for name, data in models.items():
        files[f"{name}.tflite"] = data
        io_infos[name] = tensor_quant(data)
    # The edgetpu model's output shape is the YOLOv8 one; SSD outputs are shapeless in the file.
    files[LABELS_FILE] = ("\n".join(LABELS) + "\n").encode()
    for fx in FIXTURES:
        info = io_infos[fx.name]
        if fx.family.startswith("ssd"):
            shapes = [[1, SSD_MAX_DETECTIONS], [1, SSD_MAX_DETECTIONS, 4], [1], [1, SSD_MAX_DETECTIONS]]
            if fx.family == "ssd_tf1":
                shapes = [shapes[1], shapes[3], shapes[0], shapes[2]]
            for t, shape in zip(info["outputs"], shapes, strict=True):
                t["shape"] = shape
                t["shape_note"] = "after allocate_tensors() (reads [] before)"
        files[f"{fx.name}.png"] = png_bytes(fx.image.pixels_rgb())
        doc = expected_json(fx, info)
        files[f"{fx.name}.expected.json"] = (json.dumps(doc, indent=2) + "\n").encode()
        if fx.card:
            files[f"{fx.name}.yaml"] = card_yaml(fx).encode()
    sizes = {name: len(data) for name, data in models.items()}
    files["README.md"] = readme(io_infos, sizes).encode()
    return files


# --------------------------------------------------------------------------------------------------
# Verification in the project's venv (ai-edge-litert and tflite-runtime; no TensorFlow)
# --------------------------------------------------------------------------------------------------


def _interpreters() -> dict[str, Callable[..., Any]]:
    from ai_edge_litert.interpreter import Interpreter as LiteRT
    from tflite_runtime.interpreter import Interpreter as TfliteRuntime

    return {"ai_edge_litert": LiteRT, "tflite_runtime": TfliteRuntime}


def _preprocess(image_bgr: np.ndarray, doc: dict[str, Any], inp: dict[str, Any]) -> np.ndarray:
    """Reference preprocessing exactly as ``doc`` states it, to the input tensor's dtype."""
    import cv2

    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    if doc["preprocessing"]["resize"].startswith("stretch"):
        x = cv2.resize(rgb, (INPUT_PX, INPUT_PX), interpolation=cv2.INTER_LINEAR)
    else:
        left, top, new_w, new_h = letterbox_geometry(w, h)
        resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        x = cv2.copyMakeBorder(
            resized,
            top,
            INPUT_PX - new_h - top,
            left,
            INPUT_PX - new_w - left,
            cv2.BORDER_CONSTANT,
            value=(LETTERBOX_PAD,) * 3,
        )
    x = x[None]
    if inp["dtype"] == np.uint8:
        return x.astype(np.uint8)
    norm = (x.astype(np.float32) - doc["preprocessing"]["mean"]) / doc["preprocessing"]["std"]
    if inp["dtype"] == np.float32:
        return norm.astype(np.float32)
    scale, zp = inp["quantization"]
    return np.clip(np.round(norm / scale) + zp, -128, 127).astype(np.int8)


def _dequant(detail: dict[str, Any], value: np.ndarray) -> np.ndarray:
    scale, zp = detail["quantization"]
    if detail["dtype"] == np.float32 or scale == 0:
        with np.errstate(invalid="ignore"):  # SSD rows past `count` may hold anything
            return value.astype(np.float64)
    return (value.astype(np.float64) - zp) * scale


def _reference_decode(doc: dict[str, Any], fixture: Fixture, outs: list[np.ndarray]) -> list[dict[str, Any]]:
    """Minimal decode for verification only (the agent has its own): detections in original px."""
    if fixture.family.startswith("ssd"):
        if fixture.family == "ssd_tf2":
            scores, boxes, count, classes = outs
        else:
            boxes, classes, scores, count = outs
        n = int(count[0])
        yxyx = boxes[0, :n]
        xyxy01 = yxyx[:, [1, 0, 3, 2]]
        cls = np.rint(classes[0, :n]).astype(int)
        sc = scores[0, :n]
    elif fixture.family == "yolo_end2end":
        raw = outs[0][0]
        keep = np.flatnonzero(raw[:, 4] > YOLO_SCORE_THRESHOLD)
        xyxy01, sc, cls = raw[keep, :4], raw[keep, 4], np.rint(raw[keep, 5]).astype(int)
    else:
        raw = outs[0][0]
        if fixture.family == "yolov8":
            raw = raw.T
            sc_all = raw[:, 4:]
        else:
            sc_all = raw[:, 5:] * raw[:, 4:5]
        cls_all = sc_all.argmax(axis=1)
        best = sc_all.max(axis=1)
        keep = np.flatnonzero(best > YOLO_SCORE_THRESHOLD)
        keep = keep[np.argsort(-best[keep], kind="stable")]
        cxcywh = raw[keep, :4]
        xyxy01 = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], 1)
        cls, sc = cls_all[keep], best[keep]
    px = to_original_px(fixture, xyxy01)
    return [
        {"class_id": int(c), "score": float(s), "box_xyxy": [float(v) for v in b]}
        for c, s, b in zip(cls, sc, px, strict=True)
    ]


def _check_io(name: str, runtime: str, interp: Any, info: dict[str, Any]) -> None:
    for detail, want in zip(interp.get_input_details(), info["inputs"], strict=True):
        _check_tensor(name, runtime, detail, want)
    for detail, want in zip(interp.get_output_details(), info["outputs"], strict=True):
        _check_tensor(name, runtime, detail, want)


def _check_tensor(name: str, runtime: str, detail: dict[str, Any], want: dict[str, Any]) -> None:
    where = f"{name} [{runtime}] {detail['name']}"
    assert list(detail["shape"]) == want["shape"], (where, detail["shape"], want["shape"])
    assert np.dtype(detail["dtype"]).name == want["dtype"], (where, detail["dtype"], want["dtype"])
    scale, zp = detail["quantization"]
    if want["quant"] is None:
        assert scale == 0.0, (where, detail["quantization"])
    else:
        assert math.isclose(scale, want["quant"]["scale"], rel_tol=1e-6), (where, scale, want)
        assert zp == want["quant"]["zero_point"], (where, zp, want)


def verify(out_dir: Path) -> int:
    """Check every fixture in both runtimes; print a summary; 0 when all pass."""
    import cv2

    runtimes = _interpreters()
    failures: list[str] = []
    for fx in FIXTURES:
        path = out_dir / f"{fx.name}.tflite"
        doc = json.loads((out_dir / f"{fx.name}.expected.json").read_text())
        info = {"inputs": [doc["input"]], "outputs": doc["outputs"]}
        image = cv2.imread(str(out_dir / doc["image"]), cv2.IMREAD_COLOR)
        assert image.shape[1::-1] == tuple(doc["image_size_wh"])
        for rt_name, interpreter in runtimes.items():
            try:
                interp = interpreter(model_path=str(path))
                interp.allocate_tensors()
                ops = {op["op_name"] for op in interp._get_ops_details()}
                if fx.family.startswith("ssd"):
                    assert SSD_OP in ops, (fx.name, ops)
                _check_io(fx.name, rt_name, interp, info)
                inp = interp.get_input_details()[0]
                interp.set_tensor(inp["index"], _preprocess(image, doc, inp))
                interp.invoke()
                outs = [_dequant(d, interp.get_tensor(d["index"])) for d in interp.get_output_details()]
                got = _reference_decode(doc, fx, outs)
                _compare(fx.name, rt_name, doc, got)
                if fx.calibration == "wide":
                    _check_wrong_input_quant(fx, doc, interp, image)
            except AssertionError as exc:
                failures.append(f"{fx.name} [{rt_name}]: {exc}")
        if fx.metadata:
            _check_metadata(fx, path)
    for rt_name, interpreter in runtimes.items():
        try:
            _check_classifier(out_dir, interpreter)
            _check_edgetpu(out_dir, interpreter)
        except AssertionError as exc:
            failures.append(f"{rt_name}: {exc}")
    for name in sorted(p.name for p in out_dir.iterdir() if p.is_file()):
        size = (out_dir / name).stat().st_size
        if size > 20_000:
            failures.append(f"{name} is {size} bytes (> 20 KB)")
    for f in failures:
        print("FAIL", f)
    print("verify:", "OK" if not failures else f"{len(failures)} failure(s)")
    return 0 if not failures else 1


def _compare(name: str, runtime: str, doc: dict[str, Any], got: list[dict[str, Any]]) -> None:
    want = doc["detections"]
    assert len(got) == len(want), (f"{len(got)} detections, want {len(want)}", got)
    err_px = err_score = 0.0
    for g, w in zip(got, want, strict=True):  # both by descending score
        assert g["class_id"] == w["class_id"], (g, w)
        err_px = max(err_px, float(np.abs(np.subtract(g["box_xyxy"], w["box_xyxy"])).max()))
        err_score = max(err_score, abs(g["score"] - w["score"]))
    assert err_px <= doc["tolerance_px"], (f"box error {err_px:.4f} px", got)
    assert err_score <= doc["tolerance_score"], (f"score error {err_score:.5f}", got)
    print(
        f"ok  {name:32s} {runtime:15s} {len(got)} dets, max box err {err_px:.4f} px "
        f"(tol {doc['tolerance_px']}), max score err {err_score:.5f} (tol {doc['tolerance_score']}); "
        f"scores {[round(g['score'], 4) for g in got]}"
    )


def _check_wrong_input_quant(fx: Fixture, doc: dict[str, Any], interp: Any, image_bgr: np.ndarray) -> None:
    """The mistake this fixture exists to catch: assuming (1/255, -128) makes a different answer."""
    inp = interp.get_input_details()[0]
    wrong = _preprocess(
        image_bgr,
        {**doc, "preprocessing": {**doc["preprocessing"], "mean": 0.0, "std": 1.0}},
        {**inp, "dtype": np.uint8},
    )
    interp.set_tensor(inp["index"], (wrong.astype(np.int16) - 128).astype(np.int8))
    interp.invoke()
    outs = [_dequant(d, interp.get_tensor(d["index"])) for d in interp.get_output_details()]
    got = _reference_decode(doc, fx, outs)
    assert len(got) > len(doc["detections"]), ("wrong input quant should add detections", got)
    blue = [g["score"] for g in got if g["class_id"] == 2]
    assert blue and max(blue) > 0.95, ("wrong input quant should raise the blue score", got)
    print(
        f"ok  {fx.name:32s} assuming (1/255, -128) instead gives {len(got)} dets, scores "
        f"{[round(g['score'], 4) for g in got]} (as the note says)"
    )


def _check_metadata(fx: Fixture, path: Path) -> None:
    with zipfile.ZipFile(path) as zf:
        (member,) = zf.namelist()
        text = zf.read(member).decode()
    if fx.metadata == "ultralytics":
        assert member == "metadata.json"
        names = {int(k): v for k, v in json.loads(text)["names"].items()}
    else:
        assert member == "temp_meta.txt"
        names = ast.literal_eval(text)["names"]
    assert names == dict(enumerate(LABELS)), names
    print(f"ok  {fx.name:32s} zip member {member}: names {names}")


def _check_classifier(out_dir: Path, interpreter: Callable[..., Any]) -> None:
    interp = interpreter(model_path=str(out_dir / f"{CLASSIFIER}.tflite"))
    interp.allocate_tensors()
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    assert list(inp["shape"]) == [1, INPUT_PX, INPUT_PX, 3] and inp["dtype"] == np.float32
    assert list(out["shape"]) == [1, 5] and out["dtype"] == np.float32
    x = np.zeros((1, INPUT_PX, INPUT_PX, 3), np.float32)
    x[..., 0] = 1.0
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    probs = interp.get_tensor(out["index"])[0]
    assert abs(float(probs.sum()) - 1) < 1e-5 and int(probs.argmax()) == 0, probs
    print(f"ok  {CLASSIFIER:32s} [1,5] softmax, red image -> {np.round(probs, 4).tolist()}")


def _check_edgetpu(out_dir: Path, interpreter: Callable[..., Any]) -> None:
    interp = interpreter(model_path=str(out_dir / f"{FAKE_EDGETPU}.tflite"))
    (inp,) = interp.get_input_details()
    (out,) = interp.get_output_details()
    try:
        interp.allocate_tensors()
    except RuntimeError as exc:
        message = str(exc)
    else:
        raise AssertionError("fake Edge TPU model allocated without the delegate")
    assert "Encountered unresolved custom op: edgetpu-custom-op" in message, message
    print(
        f"ok  {FAKE_EDGETPU:32s} input {inp['dtype'].__name__} {list(inp['shape'])} "
        f"q={inp['quantization']}, output {list(out['shape'])}; allocate_tensors: {message.splitlines()[0]!r}"
    )


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--verify", action="store_true", help="only verify the existing fixtures (no TF)")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="fixtures folder (default: %(default)s)")
    parser.add_argument(
        "--verify-python",
        default=str(DEFAULT_VERIFY_PYTHON),
        help="interpreter with ai-edge-litert and tflite-runtime (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.verify:
        return verify(args.out)
    files = build_all()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in sorted(files.items()):
        write_file(args.out / name, data)
        print(f"{hashlib.sha256(data).hexdigest()[:16]}  {len(data):6d}  {name}")
    cmd = [args.verify_python, str(Path(__file__).resolve()), "--verify", "--out", str(args.out)]
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
