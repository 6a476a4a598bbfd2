"""Checks on untrusted input: topic levels, ids, JPEG frames and annotation JSON.

Every check raises ``Rejected(reason, detail)``: ``reason`` is one of the short names in
``REASONS`` (counted in the receiver's stats), ``detail`` says what exactly was wrong (logged).
Sizes are checked by the caller before anything here parses a payload; a JPEG's declared
width and height are read from its SOF marker and capped before OpenCV decodes it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from agent.jpeg import JpegError, JpegInfo
from agent.jpeg import jpeg_info as parse_jpeg_info
from agent.vott import parse_regions

# Why a message was dropped; the receiver's stats count each of these.
REASONS: dict[str, str] = {
    "bad_topic": "topic is not <prefix>/<device>/frames|annotations/<frame_id>",
    "bad_device_id": "device id is not 1-160 of A-Z a-z 0-9 . _ - (no leading dot)",
    "bad_frame_id": "frame id is not 1-160 of A-Z a-z 0-9 . _ - (no leading dot)",
    "too_many_devices": "a new device over max_devices",
    "frame_too_large": "frame payload over max_jpeg_mb",
    "not_jpeg": "frame payload does not start like a JPEG",
    "jpeg_malformed": "JPEG markers are malformed or declare no size",
    "jpeg_truncated": "JPEG data ends before its end-of-image marker",
    "image_too_large": "JPEG declares a side over max_image_px",
    "jpeg_undecodable": "OpenCV cannot decode the JPEG",
    "annotation_too_large": "annotation payload over max_annotation_kb",
    "annotation_not_json": "annotation is not UTF-8 JSON",
    "annotation_not_finite": "annotation holds NaN, Infinity or an out-of-range number",
    "annotation_invalid": "annotation lacks the VoTT asset structure or has wrong types",
    "annotation_frame_id_mismatch": "annotation's frame_id differs from its topic",
    "annotation_bad_size": "annotation's image size is not 1..max_image_px",
    "annotation_too_many_regions": "annotation has more than max_regions regions",
    "annotation_bad_label": "a label is empty, too long or has control characters",
    "annotation_box_outside": "a box is empty or outside the image",
    "annotation_bad_score": "a score is not a number in [0, 1]",
    "annotation_size_mismatch": "annotation's image size differs from its frame's JPEG",
    "batch_closed": "the frame is in a closed batch, which is never modified",
    "disk_full": "less than min_free_mb free on the disk of root",
    "path_outside_root": "a path would leave root",
    "write_failed": "writing to disk failed",
    "overloaded": "a QoS 0 message while too many messages wait to be processed",
    "internal_error": "an unexpected error (a bug; see the traceback in the log)",
}

_ID = re.compile(r"[A-Za-z0-9._-]{1,160}")
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"COM{i}" for i in range(1, 10)} | {f"LPT{i}" for i in range(1, 10)}
)
_BOX_TOLERANCE_PX = 1.0  # the agent rounds sizes and boxes separately when it scales a frame
_MAX_INT_DIGITS = 18
_MAX_MODEL_CHARS = 200


class Rejected(Exception):
    """A message that must be dropped: ``reason`` (a key of ``REASONS``) and a human ``detail``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------------------------
# Topics and ids
# --------------------------------------------------------------------------------------------
def id_problem(value: str, *, folder: bool = False) -> str | None:
    """Why ``value`` cannot be a frame id (a file name stem) or, with ``folder``, a device id (a
    folder name), on the receiver and on the reviewer's machine (possibly Windows); None when it
    can."""
    if not _ID.fullmatch(value):
        return "must be 1-160 characters from A-Z a-z 0-9 . _ -"
    if value.startswith("."):
        return "must not start with a dot"
    if folder and value.endswith("."):
        return "must not end with a dot (Windows drops it from folder names)"
    if value.split(".")[0].upper() in _WINDOWS_RESERVED:
        return "is a reserved device name on Windows"
    return None


def parse_topic(topic: str, prefix: str) -> tuple[str, str, str]:
    """``(device_id, kind, frame_id)`` of ``<prefix>/<device_id>/<kind>/<frame_id>`` with ``kind``
    ``frames`` or ``annotations``; ids are checked with ``id_problem``."""
    head = prefix + "/"
    rest = topic[len(head) :].split("/") if topic.startswith(head) else []
    if len(rest) != 3 or rest[1] not in ("frames", "annotations"):
        raise Rejected("bad_topic", f"unexpected topic {_shown(topic)}")
    device, kind, frame_id = rest
    problem = id_problem(device, folder=True)
    if problem:
        raise Rejected("bad_device_id", f"device id {_shown(device)} {problem}")
    problem = id_problem(frame_id)
    if problem:
        raise Rejected("bad_frame_id", f"frame id {_shown(frame_id)} {problem}")
    return device, kind, frame_id


def _shown(text: str, limit: int = 80) -> str:
    """``text`` safe to log: repr (no raw control characters), cut to ``limit`` characters."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


# --------------------------------------------------------------------------------------------
# JPEG
# --------------------------------------------------------------------------------------------
def jpeg_info(data: bytes) -> JpegInfo:
    """``agent.jpeg.jpeg_info`` for an untrusted payload: a bad header is ``Rejected``."""
    try:
        return parse_jpeg_info(data)
    except JpegError as exc:
        raise Rejected(exc.reason, exc.detail) from None


def check_jpeg(data: bytes, max_side_px: int) -> JpegInfo:
    """Check an untrusted JPEG: headers (``jpeg_info``), declared size within ``max_side_px``
    per side BEFORE decoding, an end-of-image marker after the scan data, and a full decode
    by OpenCV giving the declared size. Returns the size."""
    info = jpeg_info(data)
    if info.width == 0 or info.height == 0:
        raise Rejected("jpeg_malformed", f"JPEG declares a {info.width}x{info.height} image")
    if info.width > max_side_px or info.height > max_side_px:
        raise Rejected(
            "image_too_large",
            f"JPEG declares {info.width}x{info.height} px, over max_image_px {max_side_px}",
        )
    # Inside entropy-coded data 0xFF is always followed by 0x00 or a restart marker, so an
    # end-of-image marker after the first scan means the data was not cut short.
    if data.find(b"\xff\xd9", info.scan_offset) < 0:
        raise Rejected("jpeg_truncated", "no end-of-image marker after the image data")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise Rejected("jpeg_undecodable", "OpenCV could not decode the JPEG")
    if image.shape[:2] != (info.height, info.width):
        raise Rejected(
            "jpeg_undecodable",
            f"decoded {image.shape[1]}x{image.shape[0]} px, headers declare {info.width}x{info.height}",
        )
    return info


# --------------------------------------------------------------------------------------------
# Annotation
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Annotation:
    """A validated annotation: the image size it refers to and one row per (region, tag), boxes
    ``x1, y1, x2, y2`` in pixels of that image, scores (None when the message had none)."""

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


def _positive_int(value: Any) -> int | None:
    if _is_number(value) and float(value).is_integer() and value > 0:
        return int(value)
    return None


def parse_annotation(
    payload: bytes,
    frame_id: str,
    *,
    max_side_px: int,
    max_regions: int,
    max_label_chars: int,
) -> Annotation:
    """Validate an ``annotations/<frame_id>`` payload (the agent's VoTT asset JSON plus
    ``scores``, ``frame_id`` and ``model``) and return its boxes.

    Needs ``asset.size`` (1..``max_side_px`` per side) and ``regions`` (VoTT regions with
    finite ``boundingBox`` numbers inside the image and string tags); ``scores`` (optional) maps
    region ids to numbers in [0, 1]; ``frame_id`` (optional) must equal the topic's."""
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

    claimed = data.get("frame_id")
    if claimed is not None and claimed != frame_id:
        shown = _shown(claimed) if isinstance(claimed, str) else type(claimed).__name__
        raise Rejected("annotation_frame_id_mismatch", f"frame_id {shown} but the topic says {frame_id!r}")
    model = data.get("model")
    if model is not None and not (
        isinstance(model, str) and len(model) <= _MAX_MODEL_CHARS and model.isprintable()
    ):
        raise Rejected("annotation_invalid", f"'model' must be printable text of at most {_MAX_MODEL_CHARS}")

    asset = data.get("asset")
    size = asset.get("size") if isinstance(asset, dict) else None
    if not isinstance(size, dict):
        raise Rejected("annotation_invalid", "needs asset.size {width, height}")
    width, height = _positive_int(size.get("width")), _positive_int(size.get("height"))
    if width is None or height is None:
        raise Rejected("annotation_bad_size", "asset.size width and height must be positive integers")
    if width > max_side_px or height > max_side_px:
        raise Rejected(
            "annotation_bad_size", f"asset.size {width}x{height} is over max_image_px {max_side_px}"
        )

    regions = data.get("regions")
    if isinstance(regions, list) and len(regions) > max_regions:
        raise Rejected("annotation_too_many_regions", f"{len(regions)} regions, max_regions is {max_regions}")
    try:
        parsed = parse_regions(regions)
    except ValueError as exc:
        raise Rejected("annotation_invalid", str(exc)) from None

    for label in dict.fromkeys(parsed.labels):
        if len(label) > max_label_chars or not label.isprintable() or not label.strip():
            raise Rejected(
                "annotation_bad_label",
                f"label {_shown(label, 40)} must be printable, not blank, at most {max_label_chars} characters",
            )

    xyxy = parsed.xyxy.astype(np.float64)
    if len(xyxy):
        tol = _BOX_TOLERANCE_PX
        bad = (
            (xyxy[:, 2] <= xyxy[:, 0])
            | (xyxy[:, 3] <= xyxy[:, 1])
            | (xyxy[:, 0] < -tol)
            | (xyxy[:, 1] < -tol)
            | (xyxy[:, 2] > width + tol)
            | (xyxy[:, 3] > height + tol)
        )
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise Rejected(
                "annotation_box_outside",
                f"box {[round(v, 2) for v in xyxy[i].tolist()]} is empty or outside the {width}x{height} image",
            )
        xyxy = np.clip(xyxy, 0.0, [width, height, width, height])

    scores = _region_scores(data.get("scores"), parsed.region_ids)
    return Annotation(
        frame_id=frame_id,
        width=width,
        height=height,
        model=model,
        labels=tuple(parsed.labels),
        boxes=tuple(tuple(row) for row in xyxy.tolist()),
        scores=scores,
    )


def _region_scores(scores: Any, region_ids: list[str]) -> tuple[float | None, ...]:
    """The score of each box row from ``scores`` (``[{"region_id", "score"}]``; absent: None)."""
    if scores is None:
        return tuple(None for _ in region_ids)
    if not isinstance(scores, list) or len(scores) > max(len(region_ids), 1) * 4:
        raise Rejected("annotation_invalid", "'scores' must be a list with an entry per region")
    by_region: dict[str, float] = {}
    for i, entry in enumerate(scores):
        if not isinstance(entry, dict) or not isinstance(entry.get("region_id"), str):
            raise Rejected("annotation_invalid", f"scores[{i}] must be an object with a string region_id")
        value = entry.get("score")
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise Rejected("annotation_bad_score", f"scores[{i}].score must be a number in [0, 1]")
        by_region[entry["region_id"]] = float(value)
    return tuple(by_region.get(rid) for rid in region_ids)
