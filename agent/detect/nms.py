"""Non-maximum suppression through OpenCV (which takes ``x, y, w, h`` boxes)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from agent.boxes import FloatArray, xyxy_to_ltwh


def nms(
    xyxy: FloatArray,
    scores: NDArray[np.float32],
    class_ids: NDArray[np.int32],
    *,
    iou_threshold: float,
    class_agnostic: bool = False,
) -> NDArray[np.int64]:
    """Indices of all the boxes kept by greedy NMS, highest score first.

    Class-aware by default (boxes of different classes never suppress each other).
    ``scores`` must already be above the caller's score threshold. No limit on the count here:
    OpenCV's ``top_k`` cuts the candidates BEFORE suppression, which loses detections that a
    suppressed box would have left room for; the caller cuts the kept ones.
    """
    if len(scores) == 0:
        return np.zeros(0, dtype=np.int64)
    ltwh: Any = xyxy_to_ltwh(xyxy).astype(np.float64)
    score_list: Any = scores.astype(np.float64)
    classes: Any = class_ids.astype(np.int32)
    if class_agnostic:
        keep = cv2.dnn.NMSBoxes(ltwh, score_list, 0.0, iou_threshold)
    else:
        keep = cv2.dnn.NMSBoxesBatched(ltwh, score_list, classes, 0.0, iou_threshold)
    order = np.asarray(keep, dtype=np.int64).reshape(-1)
    # OpenCV returns them by descending score already; keep it explicit and stable.
    return order[np.argsort(-scores[order], kind="stable")]
