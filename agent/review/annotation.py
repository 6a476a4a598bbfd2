"""An ``annotations/<frame_id>`` payload, checked: the agent's detections record
(``edge-agent.detections/1``, see ``agent.mqtt.schema`` and ``docs/schema/detections.schema.json``).

The payload is untrusted. The caller has capped its size; here it must be UTF-8 JSON with finite
numbers and bounded integers, name the schema, the frame id of its topic (and the device of its
topic, when it names one), an image size within ``max_side_px``, and at most ``max_regions``
detections, each with a printable label, a score in [0, 1] and a box with area inside the image.
Keys the receiver does not use are not checked (a newer agent may add keys without a new schema
version). Every refusal is a ``Rejected`` with a reason from ``checks.REASONS``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.mqtt.schema import SCHEMA_ID
from agent.review.checks import Rejected, shown

_BOX_TOLERANCE_PX = 0.5  # boxes are rounded to 0.01 px; allow a little more for other producers
_MAX_INT_DIGITS = 18
_MAX_MODEL_CHARS = 200


@dataclass(frozen=True)
class Annotation:
    """A checked annotation: the image size it refers to and one row per detection, boxes
    ``x1, y1, x2, y2`` in pixels of that image, scores (None in files stored before scores were
    required)."""

    frame_id: str
    width: int
    height: int
    model: str | None
    labels: tuple[str, ...]
    boxes: tuple[tuple[float, ...], ...]
    scores: tuple[float | None, ...]

    def to_json(self) -> dict[str, Any]:
        """The form stored on disk (``annotations/<frame_id>.json``)."""
        return {
            "frame_id": self.frame_id,
            "width": self.width,
            "height": self.height,
            "model": self.model,
            "regions": [
                {"label": label, "box_xyxy": list(box), "score": score}
                for label, box, score in zip(self.labels, self.boxes, self.scores, strict=True)
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Annotation:
        """Read back what ``to_json`` wrote (raises KeyError/TypeError/ValueError when damaged)."""
        regions = data["regions"]
        return cls(
            frame_id=str(data["frame_id"]),
            width=int(data["width"]),
            height=int(data["height"]),
            model=None if data.get("model") is None else str(data["model"]),
            labels=tuple(str(r["label"]) for r in regions),
            boxes=tuple(tuple(float(v) for v in r["box_xyxy"]) for r in regions),
            scores=tuple(None if r.get("score") is None else float(r["score"]) for r in regions),
        )


def _refuse_constant(name: str) -> Any:
    raise Rejected("annotation_not_finite", f"JSON holds {name}")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise Rejected("annotation_not_finite", f"JSON holds an integer of {len(text)} digits")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise Rejected("annotation_not_finite", f"JSON number {text[:40]} is out of range")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _load(payload: bytes) -> dict[str, Any]:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected("annotation_not_json", f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        data = json.loads(
            text, parse_constant=_refuse_constant, parse_int=_bounded_int, parse_float=_finite_float
        )
    except json.JSONDecodeError as exc:
        raise Rejected("annotation_not_json", f"not JSON: {exc.msg} at line {exc.lineno}") from None
    except RecursionError:
        raise Rejected("annotation_not_json", "JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise Rejected("annotation_invalid", f"top level is a {type(data).__name__}, not an object")
    return data


def _check_header(data: dict[str, Any], device: str, frame_id: str, max_side_px: int) -> tuple[int, int]:
    """Schema, ids and image size; returns ``(width, height)``."""
    schema = data.get("schema")
    if schema != SCHEMA_ID:
        shown_schema = shown(schema) if isinstance(schema, str) else type(schema).__name__
        raise Rejected(
            "annotation_unknown_schema", f"schema {shown_schema}, this receiver reads {SCHEMA_ID!r}"
        )
    claimed = data.get("frame_id")
    if claimed != frame_id:
        what = shown(claimed) if isinstance(claimed, str) else type(claimed).__name__
        raise Rejected("annotation_frame_id_mismatch", f"frame_id {what} but the topic says {frame_id!r}")
    sender = data.get("device_id", device)
    if sender != device:
        what = shown(sender) if isinstance(sender, str) else type(sender).__name__
        raise Rejected("annotation_device_id_mismatch", f"device_id {what} but the topic says {device!r}")
    model = data.get("model")
    if model is not None and not (
        isinstance(model, str) and len(model) <= _MAX_MODEL_CHARS and model.isprintable()
    ):
        raise Rejected("annotation_invalid", f"'model' must be printable text of at most {_MAX_MODEL_CHARS}")
    width, height = data.get("width"), data.get("height")
    if (
        not (isinstance(width, int) and isinstance(height, int))
        or isinstance(width, bool)
        or isinstance(height, bool)
    ):
        raise Rejected("annotation_bad_size", "width and height must be integers (pixels)")
    if not (0 < width <= max_side_px and 0 < height <= max_side_px):
        raise Rejected(
            "annotation_bad_size", f"{width}x{height} px is not within 1..max_image_px {max_side_px}"
        )
    return width, height


def _detection(i: int, item: Any, max_label_chars: int) -> tuple[str, float, list[float]]:
    """``(label, score, box)`` of ``detections[i]``."""
    if not isinstance(item, dict):
        raise Rejected("annotation_invalid", f"detections[{i}] is a {type(item).__name__}, not an object")
    label, score, box = item.get("label"), item.get("score"), item.get("box_xyxy")
    if not isinstance(label, str) or not 0 < len(label) <= max_label_chars:
        raise Rejected(
            "annotation_bad_label", f"detections[{i}].label must be text of 1-{max_label_chars} characters"
        )
    if not label.isprintable() or not label.strip():
        raise Rejected(
            "annotation_bad_label", f"detections[{i}].label {shown(label, 40)} must be printable, not blank"
        )
    if not (isinstance(score, int | float) and not isinstance(score, bool) and 0.0 <= score <= 1.0):
        raise Rejected("annotation_bad_score", f"detections[{i}].score must be a number in [0, 1]")
    if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
        raise Rejected("annotation_invalid", f"detections[{i}].box_xyxy must be 4 numbers")
    return label, float(score), [float(v) for v in box]


def parse_annotation(
    payload: bytes,
    device: str,
    frame_id: str,
    *,
    max_side_px: int,
    max_regions: int,
    max_label_chars: int,
) -> Annotation:
    """Check an ``annotations/<frame_id>`` payload from ``device`` and return its detections."""
    data = _load(payload)
    width, height = _check_header(data, device, frame_id, max_side_px)
    items = data.get("detections")
    if not isinstance(items, list):
        raise Rejected("annotation_invalid", "'detections' must be a list")
    if len(items) > max_regions:
        raise Rejected(
            "annotation_too_many_regions", f"{len(items)} detections, max_regions is {max_regions}"
        )
    rows = [_detection(i, item, max_label_chars) for i, item in enumerate(items)]
    xyxy = np.array([box for _, _, box in rows], np.float64).reshape(-1, 4)
    tol = _BOX_TOLERANCE_PX
    outside = (xyxy[:, :2] < -tol).any(axis=1) | (xyxy[:, 2] > width + tol) | (xyxy[:, 3] > height + tol)
    xyxy = np.clip(xyxy, 0.0, [width, height, width, height])
    bad = outside | (xyxy[:, 2] <= xyxy[:, 0]) | (xyxy[:, 3] <= xyxy[:, 1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise Rejected(
            "annotation_box_outside",
            f"detections[{i}].box_xyxy {[round(v, 2) for v in rows[i][2]]} is empty or outside "
            f"the {width}x{height} image",
        )
    model = data.get("model")
    return Annotation(
        frame_id=frame_id,
        width=width,
        height=height,
        model=model,
        labels=tuple(label for label, _, _ in rows),
        boxes=tuple(tuple(row) for row in xyxy.tolist()),
        scores=tuple(score for _, score, _ in rows),
    )
