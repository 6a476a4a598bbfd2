"""Detections: one struct of numpy arrays that every stage passes around.

Boxes are float32 ``x1, y1, x2, y2`` in pixels of the original frame (see
``agent.boxes``); per-detection dicts exist only at the JSON edge (``to_records``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from agent.boxes import as_boxes, clip_xyxy, normalize_xyxy


@dataclass(frozen=True, slots=True)
class Detections:
    """``N`` detections: ``xyxy`` float32 ``[N, 4]`` pixels, ``score`` float32 ``[N]`` in
    [0, 1], ``class_id`` int32 ``[N]`` indexing ``labels`` (the label names, in class order)."""

    xyxy: NDArray[np.float32]
    score: NDArray[np.float32]
    class_id: NDArray[np.int32]
    labels: tuple[str, ...]

    @classmethod
    def create(
        cls, xyxy: ArrayLike, score: ArrayLike, class_id: ArrayLike, labels: Sequence[str]
    ) -> Detections:
        """Build from array-likes, coercing dtypes and checking that lengths agree."""
        boxes = as_boxes(xyxy)
        scores = np.asarray(score, dtype=np.float32).reshape(-1)
        classes = np.asarray(class_id, dtype=np.int32).reshape(-1)
        if not len(boxes) == len(scores) == len(classes):
            raise ValueError(f"detections disagree in length: {len(boxes)}, {len(scores)}, {len(classes)}")
        return cls(boxes, scores, classes, tuple(labels))

    @classmethod
    def empty(cls, labels: Sequence[str] = ()) -> Detections:
        """No detections."""
        return cls.create(np.zeros((0, 4)), [], [], labels)

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def label_names(self) -> list[str]:
        """The label of each detection (``class_<id>`` for an id without a name)."""
        n = len(self.labels)
        return [self.labels[c] if 0 <= c < n else f"class_{c}" for c in self.class_id.tolist()]

    def select(self, index: NDArray[Any] | slice) -> Detections:
        """The detections picked by a boolean mask, an index array or a slice."""
        return Detections(self.xyxy[index], self.score[index], self.class_id[index], self.labels)

    def sorted_by_score(self) -> Detections:
        """Highest score first (stable for ties)."""
        return self.select(np.argsort(-self.score, kind="stable"))

    def clipped(self, width: float, height: float) -> Detections:
        """Boxes clipped to an image of ``width`` x ``height`` pixels."""
        return Detections(clip_xyxy(self.xyxy, width, height), self.score, self.class_id, self.labels)

    def scaled(self, sx: float, sy: float) -> Detections:
        """Boxes multiplied by ``sx`` horizontally and ``sy`` vertically (another image size)."""
        factors = np.array([sx, sy, sx, sy], dtype=np.float32)
        return Detections(self.xyxy * factors, self.score, self.class_id, self.labels)

    def with_labels(self, labels: Sequence[str]) -> Detections:
        """The same detections naming their classes with ``labels``."""
        return Detections(self.xyxy, self.score, self.class_id, tuple(labels))

    @property
    def top_score(self) -> float:
        """The highest score, 0.0 when there are none."""
        return float(self.score.max()) if len(self) else 0.0

    def to_records(self, width: int | None = None, height: int | None = None) -> list[dict[str, Any]]:
        """One JSON-ready dict per detection: label, class_id, score, box_xyxy (pixels) and,
        when the image size is given, box_xyxy_norm (in [0, 1])."""
        names = self.label_names()
        boxes = np.round(self.xyxy.astype(np.float64), 2).tolist()
        scores = np.round(self.score.astype(np.float64), 5).tolist()
        records: list[dict[str, Any]] = [
            {"label": names[i], "class_id": int(self.class_id[i]), "score": scores[i], "box_xyxy": boxes[i]}
            for i in range(len(self))
        ]
        if width and height:
            norm = np.round(normalize_xyxy(self.xyxy, width, height).astype(np.float64), 5).tolist()
            for rec, nb in zip(records, norm, strict=True):
                rec["box_xyxy_norm"] = nb
        return records
