"""The per-frame failure score: the weighted confidences of the failure detections in a frame."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from agent.config.alerts import AlertSettings
from agent.detections import Detections
from agent.errors import ConfigError


def validate_failure_labels(settings: AlertSettings, model_labels: Sequence[str]) -> None:
    """Raise ``ConfigError`` when none of the configured failure labels is one of the model's."""
    if not set(settings.failure_labels) & set(model_labels):
        raise ConfigError(
            f"alerts.failure_labels {sorted(settings.failure_labels)} names none of the model's labels "
            f"{list(model_labels)}: use the model's names for its failure classes"
        )


def failure_score(
    detections: Detections, settings: AlertSettings, image_size: tuple[int, int] | None = None
) -> float:
    """One frame's failure score: weighted confidences of failure detections, summed (or max).

    ``image_size`` is ``(width, height)`` in pixels, needed only with an ``area_of_interest``.
    """
    if len(detections) == 0:
        return 0.0
    weights = _label_weights(detections, settings.failure_labels)
    keep = (weights > 0) & (detections.score >= settings.min_detection_score)
    if settings.area_of_interest is not None:
        if image_size is None:
            raise ValueError("failure_score needs image_size (width, height) when an area_of_interest is set")
        width, height = image_size
        x1, y1, x2, y2 = settings.area_of_interest
        cx = (detections.xyxy[:, 0] + detections.xyxy[:, 2]) / (2.0 * width)
        cy = (detections.xyxy[:, 1] + detections.xyxy[:, 3]) / (2.0 * height)
        keep &= (cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= y2)
    weighted = detections.score[keep].astype(np.float64) * weights[keep]
    if weighted.size == 0:
        return 0.0
    return float(weighted.sum() if settings.aggregate == "sum" else weighted.max())


def _label_weights(detections: Detections, table: dict[str, float]) -> NDArray[np.float64]:
    """Per-detection weight, looked up through a per-class table (ids without a name: ``class_<id>``)."""
    ids = detections.class_id
    n_classes = max(len(detections.labels), int(ids.max()) + 1)
    lut = np.array(
        [
            table.get(detections.labels[i] if i < len(detections.labels) else f"class_{i}", 0.0)
            for i in range(n_classes)
        ],
        dtype=np.float64,
    )
    return np.where(ids >= 0, lut[np.clip(ids, 0, n_classes - 1)], 0.0)
