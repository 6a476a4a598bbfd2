"""Box conventions and the conversions between them.

Inside the agent a box is always float ``x1, y1, x2, y2`` in pixels of the original
frame (``xyxy``). Every other convention exists only at an edge (model outputs in;
VoTT, COCO, YOLO and CSV out) and is converted by exactly one function here.
All functions take and return arrays of shape ``[N, 4]`` and are vectorised.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float32]


def as_boxes(boxes: ArrayLike) -> FloatArray:
    """Return ``boxes`` as a float32 ``[N, 4]`` array (an empty input gives ``[0, 4]``)."""
    arr = np.asarray(boxes, dtype=np.float32)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    return arr.reshape(-1, 4)


def yxyx_to_xyxy(boxes: ArrayLike) -> FloatArray:
    """``ymin, xmin, ymax, xmax`` (TFLite SSD order) to ``x1, y1, x2, y2``; same units."""
    b = as_boxes(boxes)
    return b[:, [1, 0, 3, 2]]


def cxcywh_to_xyxy(boxes: ArrayLike) -> FloatArray:
    """Centre x, centre y, width, height (YOLO order) to corners; same units."""
    b = as_boxes(boxes)
    half = b[:, 2:4] / 2.0
    return np.concatenate([b[:, 0:2] - half, b[:, 0:2] + half], axis=1)


def xyxy_to_cxcywh(boxes: ArrayLike) -> FloatArray:
    """Corners to centre x, centre y, width, height; same units."""
    b = as_boxes(boxes)
    wh = b[:, 2:4] - b[:, 0:2]
    return np.concatenate([b[:, 0:2] + wh / 2.0, wh], axis=1)


def xyxy_to_ltwh(boxes: ArrayLike) -> FloatArray:
    """Corners to ``left, top, width, height`` (VoTT boundingBox, COCO bbox); same units."""
    b = as_boxes(boxes)
    return np.concatenate([b[:, 0:2], b[:, 2:4] - b[:, 0:2]], axis=1)


def ltwh_to_xyxy(boxes: ArrayLike) -> FloatArray:
    """``left, top, width, height`` to corners; same units."""
    b = as_boxes(boxes)
    return np.concatenate([b[:, 0:2], b[:, 0:2] + b[:, 2:4]], axis=1)


def normalize_xyxy(boxes: ArrayLike, width: float, height: float) -> FloatArray:
    """Pixel corners to corners in [0, 1] of an image ``width`` x ``height`` pixels."""
    b = as_boxes(boxes)
    return b / np.array([width, height, width, height], dtype=np.float32)


def denormalize_xyxy(boxes: ArrayLike, width: float, height: float) -> FloatArray:
    """Corners in [0, 1] to pixel corners of an image ``width`` x ``height`` pixels."""
    b = as_boxes(boxes)
    return b * np.array([width, height, width, height], dtype=np.float32)


def clip_xyxy(boxes: ArrayLike, width: float, height: float) -> FloatArray:
    """Clip pixel corners to the image ``[0, width] x [0, height]``."""
    limits = np.array([width, height, width, height], dtype=np.float32)
    return np.clip(as_boxes(boxes), np.float32(0.0), limits)


def area(boxes: ArrayLike) -> FloatArray:
    """Area of each corner box (0 for inverted boxes), in squared input units."""
    b = as_boxes(boxes)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def iou_matrix(a: ArrayLike, b: ArrayLike) -> FloatArray:
    """Pairwise intersection over union of corner boxes: ``[len(a), len(b)]`` in [0, 1]."""
    aa, bb = as_boxes(a), as_boxes(b)
    top_left = np.maximum(aa[:, None, 0:2], bb[None, :, 0:2])
    bottom_right = np.minimum(aa[:, None, 2:4], bb[None, :, 2:4])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    union = area(aa)[:, None] + area(bb)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou.astype(np.float32)
