"""Model output layouts: which one a model has, and how to decode it.

Detected from the output tensors (read after ``allocate_tensors``, before which shapes
read ``[]``), never guessed by index alone; a model card's ``layout`` overrides.

- ``ssd_tf1``: ``TFLite_Detection_PostProcess`` outputs in the order boxes ``[1,M,4]``,
  classes ``[1,M]``, scores ``[1,M]``, count ``[1]`` (TF1 Object Detection API, AutoML).
- ``ssd_tf2``: the same op, outputs ordered scores, boxes, count, classes (TF2 OD API,
  EfficientDet-Lite, Model Maker).
- ``yolov5``: one ``[1, N, 5+nc]`` tensor: cx, cy, w, h, objectness, class scores;
  score = objectness x class score.
- ``yolov8`` (and YOLO11): one ``[1, 4+nc, N]`` tensor (or ``[1, N, 4+nc]``): cx, cy, w, h,
  class scores, no objectness.
- ``yolo_end2end`` (YOLOv10, YOLO26 and other NMS-free heads): one ``[1, K, 6]`` tensor of the
  top K candidates: x1, y1, x2, y2, score, class id; no NMS (the head already gives one box
  per object).
Boxes of YOLO exports are normalised to the input size in Ultralytics' TFLite exports and
in input pixels in some others; the decoder tells them apart per frame by their range.
Every tensor is dequantised with its own scale and zero point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.boxes import FloatArray, cxcywh_to_xyxy, yxyx_to_xyxy
from agent.errors import UserError

SSD_ROLES_TF1 = ("boxes", "classes", "scores", "count")
SSD_ROLES_TF2 = ("scores", "boxes", "count", "classes")
AUTOML_ROLE_NAMES = {
    "bounding_boxes": "boxes",
    "class_labels": "classes",
    "class_confidences": "scores",
    "num_of_boxes": "count",
}


@dataclass(frozen=True, slots=True)
class OutputTensor:
    """One output tensor as the interpreter describes it."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int

    @classmethod
    def from_details(cls, details: dict[str, Any]) -> OutputTensor:
        """From an entry of ``interpreter.get_output_details()``."""
        scale, zero_point = details.get("quantization", (0.0, 0))
        return cls(
            index=int(details["index"]),
            name=str(details.get("name", "")),
            shape=tuple(int(d) for d in details["shape"]),
            dtype=np.dtype(details["dtype"]),
            scale=float(scale),
            zero_point=int(zero_point),
        )

    def dequantize(self, raw: NDArray[Any]) -> NDArray[np.float32]:
        """Raw tensor values to float32 with this tensor's own quantisation."""
        if self.dtype == np.float32 or not self.scale:
            return raw.astype(np.float32, copy=False)
        return (raw.astype(np.float32) - np.float32(self.zero_point)) * np.float32(self.scale)


@dataclass(frozen=True, slots=True)
class Layout:
    """The layout of a model's outputs and where each part lives."""

    kind: str  # ssd_tf1 | ssd_tf2 | yolov5 | yolov8 | yolo_end2end
    num_classes: int | None
    ssd_roles: dict[str, int] | None = None  # role -> position in the output list
    channels_first: bool = True  # yolov8: [1, 4+nc, N] (True) or [1, N, 4+nc]

    @property
    def family(self) -> str:
        """``ssd`` or ``yolo``: decides default resize and normalisation."""
        return "ssd" if self.kind.startswith("ssd") else "yolo"


def _not_a_detector(outputs: list[OutputTensor], model_name: str) -> UserError:
    shapes = ", ".join(str(list(o.shape)) for o in outputs)
    return UserError(
        f"{model_name} does not look like an object detector: its outputs are {shapes}. "
        "edge-agent reads SSD models with TFLite_Detection_PostProcess (4 outputs), YOLOv5 [1,N,5+nc] "
        "YOLOv8/11 [1,4+nc,N] and NMS-free YOLOv10/YOLO26 [1,K,6]. If this is one of those with unusual "
        "shapes, set `layout:` in the "
        "model card (model.yaml beside the model)"
    )


def _automl_roles(automl_order: list[str]) -> tuple[str, dict[str, int]] | None:
    """The SSD output roles an AutoML ``tflite_metadata.json`` names, when it names all four."""
    roles = [AUTOML_ROLE_NAMES.get(name) for name in automl_order]
    if sorted(r for r in roles if r) != sorted(SSD_ROLES_TF1):
        return None
    kind = "ssd_tf1" if roles == list(SSD_ROLES_TF1) else "ssd_tf2"
    return kind, {str(role): i for i, role in enumerate(roles)}


def _ssd_roles(
    outputs: list[OutputTensor], forced: str, automl_order: list[str] | None
) -> tuple[str, dict[str, int]]:
    named = _automl_roles(automl_order) if automl_order and forced == "auto" else None
    if named is not None:
        return named
    if forced in ("ssd_tf1", "ssd_tf2"):
        order = SSD_ROLES_TF1 if forced == "ssd_tf1" else SSD_ROLES_TF2
        return forced, {role: i for i, role in enumerate(order)}
    boxes = [i for i, o in enumerate(outputs) if len(o.shape) == 3 and o.shape[-1] == 4]
    counts = [i for i, o in enumerate(outputs) if int(np.prod(o.shape)) == 1]
    if boxes == [0] and counts == [3]:
        return "ssd_tf1", {role: i for i, role in enumerate(SSD_ROLES_TF1)}
    if boxes == [1] and counts == [2]:
        return "ssd_tf2", {role: i for i, role in enumerate(SSD_ROLES_TF2)}
    raise UserError(
        "the model has 4 SSD-like outputs in an order edge-agent does not know; "
        "set `layout: ssd_tf1` (boxes, classes, scores, count) or `layout: ssd_tf2` "
        "(scores, boxes, count, classes) in the model card"
    )


def detect_layout(
    outputs: list[OutputTensor],
    *,
    forced: str = "auto",
    has_postprocess_op: bool,
    num_labels: int | None,
    automl_order: list[str] | None = None,
    postprocess_classes: int | None = None,
    model_name: str = "the model",
    input_hw: tuple[int, int] | None = None,
) -> Layout:
    """Work out the layout from the output tensors; ``forced`` (from the card) wins.
    ``input_hw`` (the model's input height and width, pixels) tells a one-class YOLOv5 or a
    two-class YOLOv8 head (rows = cells of its grids) from an NMS-free ``[1, K, 6]`` one; K must
    be above 6 and not a grid's row count, else set ``layout: yolo_end2end`` in the card."""
    if forced.startswith("ssd") or (forced == "auto" and has_postprocess_op and len(outputs) == 4):
        if len(outputs) != 4:
            raise _not_a_detector(outputs, model_name)
        kind, roles = _ssd_roles(outputs, forced, automl_order)
        return Layout(kind, postprocess_classes, ssd_roles=roles)
    if len(outputs) != 1 or len(outputs[0].shape) != 3 or outputs[0].shape[0] != 1:
        raise _not_a_detector(outputs, model_name)
    layout = _yolo_layout(outputs[0].shape[1], outputs[0].shape[2], forced, num_labels, input_hw)
    if layout is None:
        raise _not_a_detector(outputs, model_name)
    return layout


def _yolo_layout(
    a: int, b: int, forced: str, num_labels: int | None, input_hw: tuple[int, int] | None
) -> Layout | None:
    """The layout of a single ``[1, a, b]`` output, or None when it is no YOLO head we know."""
    if forced == "yolo_end2end" or (forced == "auto" and _looks_end2end(a, b, num_labels, input_hw)):
        return Layout("yolo_end2end", num_labels) if b == 6 else None
    # without labels, [1, N, 5+nc] (YOLOv5) and channels-last [1, N, 4+nc] (YOLOv8) differ only in N
    anchor_free_rows = num_labels is None and input_hw is not None and a in _grid_rows(input_hw, 1)
    if forced == "yolov5" or (
        forced == "auto"
        and a > b
        and not (num_labels is not None and num_labels == b - 4)
        and not anchor_free_rows
    ):
        return Layout("yolov5", b - 5) if b >= 6 else None
    if forced in ("yolov8", "auto"):
        channels_first = a < b
        rows = a if channels_first else b
        return Layout("yolov8", rows - 4, channels_first=channels_first) if rows >= 5 else None
    return None


def _grid_rows(input_hw: tuple[int, int], per_cell: int) -> set[int]:
    """Row counts of YOLO heads on an ``input_hw`` input with ``per_cell`` rows per cell (1:
    YOLOv8/11, 3: YOLOv5's anchors) of the stride 8, 16, 32 grids, and of P6 models' extra
    stride-64 grid."""
    h, w = input_hw
    cells = [-(-h // s) * -(-w // s) for s in (8, 16, 32, 64)]
    return {sum(cells[:3]) * per_cell, sum(cells) * per_cell}


def _looks_end2end(rows: int, cols: int, num_labels: int | None, input_hw: tuple[int, int] | None) -> bool:
    # [1, K, 6] is also a one-class YOLOv5 head or a two-class channels-last YOLOv8 one
    if cols != 6 or rows <= cols:
        return False
    if num_labels is not None and num_labels not in (1, 2):
        return True
    return input_hw is not None and rows not in _grid_rows(input_hw, 1) | _grid_rows(input_hw, 3)


@dataclass(slots=True)
class Candidates:
    """Decoded boxes before NMS: ``xyxy`` in model-input pixels (or normalised when
    ``normalized``), ``score``, ``class_id``."""

    xyxy: FloatArray
    score: NDArray[np.float32]
    class_id: NDArray[np.int32]
    normalized: bool


def decode_ssd(
    raw: list[NDArray[Any]], outputs: list[OutputTensor], layout: Layout, threshold: float
) -> Candidates:
    """Decode ``TFLite_Detection_PostProcess`` outputs; boxes come back normalised (0..1)."""
    assert layout.ssd_roles is not None
    r = layout.ssd_roles

    def part(role: str) -> NDArray[np.float32]:
        return outputs[r[role]].dequantize(raw[r[role]])

    scores = part("scores").reshape(-1)
    # rows past `count` are undefined (NaN in some exports): never touch them
    count = int(np.clip(np.nan_to_num(part("count").reshape(-1)[0]), 0, len(scores)))
    scores = scores[:count]
    boxes = part("boxes").reshape(-1, 4)[:count]
    classes = np.rint(part("classes").reshape(-1)[:count]).astype(np.int32)
    keep = scores >= threshold
    return Candidates(yxyx_to_xyxy(boxes[keep]), scores[keep], classes[keep], True)


def decode_yolo(raw: NDArray[Any], output: OutputTensor, layout: Layout, threshold: float) -> Candidates:
    """Decode a YOLOv5 or YOLOv8 head: keep candidates whose best score is above ``threshold``.

    Works on the quantised values where it can (a monotonic mapping) so that only the few
    candidates above the threshold are dequantised: a YOLOv8 head has 8,400 of them.
    """
    table = raw[0]
    if layout.kind == "yolov8" and not layout.channels_first:
        table = table.T
    if layout.kind == "yolov5":
        table = table.T  # -> [5+nc, N]
    first_class = 5 if layout.kind == "yolov5" else 4
    quantized = output.dtype != np.float32 and output.scale > 0
    cls = table[first_class:]
    # A max along the class axis is a fast vectorised reduction; argmax along it is not (numpy
    # loops per column: ~1.6 ms for [80, 8400] int8). So prefilter with the max and take the
    # argmax of the few candidate columns only (same first-index tie rule).
    if layout.kind == "yolov5":
        objectness_raw = table[4]
        pre = objectness_raw >= _raw_bound(threshold, output) if quantized else objectness_raw > threshold
    else:
        best_all = cls.max(axis=0)
        pre = best_all >= _raw_bound(threshold, output) if quantized else best_all > threshold
    idx = np.flatnonzero(pre)
    sub = cls[:, idx]
    best_class = np.argmax(sub, axis=0).astype(np.int32)
    best_raw = np.take_along_axis(sub, best_class[None, :], axis=0)[0]
    if layout.kind == "yolov5":
        scores = output.dequantize(objectness_raw[idx]) * output.dequantize(best_raw)
    else:
        scores = output.dequantize(best_raw)
    above = scores > threshold
    idx, scores, best_class = idx[above], scores[above], best_class[above]
    boxes_all = table[:4]
    normalized = _looks_normalized(boxes_all, output)
    boxes = output.dequantize(boxes_all[:, idx]).T
    return Candidates(cxcywh_to_xyxy(boxes), scores.astype(np.float32), best_class, normalized)


def decode_end2end(raw: NDArray[Any], output: OutputTensor, threshold: float) -> Candidates:
    """Decode an NMS-free ``[1, K, 6]`` head (x1, y1, x2, y2, score, class id): the rows above
    ``threshold`` by descending score."""
    table = output.dequantize(raw[0])
    finite = np.isfinite(table).all(axis=1)
    scores = table[:, 4]
    idx = np.flatnonzero(finite & (scores > threshold))
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    boxes = table[idx, :4]
    # Ultralytics' TFLite exports give 0..1 boxes, others input pixels; judged on the whole table
    normalized = float(table[finite, :4].max(initial=0.0)) <= 2.0
    classes = np.rint(table[idx, 5]).astype(np.int32)
    return Candidates(boxes.astype(np.float32), scores[idx].astype(np.float32), classes, normalized)


def _raw_bound(threshold: float, output: OutputTensor) -> float:
    """The raw (quantised) value below which a dequantised score cannot exceed ``threshold``."""
    return float(np.floor(threshold / output.scale + output.zero_point))


def _looks_normalized(boxes_raw: NDArray[Any], output: OutputTensor) -> bool:
    # Centre x of the right-most anchors reaches the input width in pixel outputs, ~1.0 in normalised ones.
    # one max over both rows, then dequantised (a monotonic mapping): a max per row along the
    # anchors of a transposed [N, 5+nc] table is a strided loop, ~0.09 ms for 6,300 anchors
    peak = float(output.dequantize(np.asarray(boxes_raw[0:2].max())))
    return peak <= 2.0
