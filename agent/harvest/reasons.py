"""The score-band reasons to keep a frame, judged on every detection of the frame (vectorised).

``detection`` fires for a detection of a wanted label scored in ``[min_score, max_score]``;
``uncertainty`` for a detection scored within its class's band (``classes``, else
``[min_score, max_score]``). Both are a band per class: a label that does not count has an
empty band. Each returns the detections that fired it, as ``Trigger``s, at most
``max_reported`` of them: for ``uncertainty`` the lowest scores first (nearest the detector's
threshold, where it is most often wrong), for ``detection`` the highest first.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from agent.config.harvest import DetectionPolicy, UncertaintyPolicy
from agent.detections import Detections
from agent.harvest.decision import Trigger

_EMPTY_BAND = (2.0, -1.0)  # no score is in it


class BandReason:
    """A reason policy that fires for any detection whose score lies in its class's band."""

    def __init__(
        self,
        name: str,
        band_of: Callable[[str], tuple[float, float]],
        *,
        max_reported: int,
        lowest_first: bool,
    ) -> None:
        self.name = name
        self.band_of = band_of
        self.max_reported = max_reported
        self.lowest_first = lowest_first
        # per label tuple of a model: the band of each class id, plus one slot for unknown ids
        self._tables: dict[tuple[str, ...], tuple[NDArray[np.float32], NDArray[np.float32]]] = {}

    def triggers(self, detections: Detections) -> tuple[Trigger, ...]:
        """The detections that fire this reason (empty: it does not fire), capped and ordered."""
        if not len(detections):
            return ()
        low, high = self._table(detections.labels)
        slots = len(detections.labels)
        ids = detections.class_id
        index = np.where((ids >= 0) & (ids < slots), ids, slots)
        score = detections.score
        hits = np.flatnonzero((score >= low[index]) & (score <= high[index]))
        if not hits.size:
            return ()
        order = np.argsort(score[hits] if self.lowest_first else -score[hits], kind="stable")
        chosen = hits[order[: self.max_reported]]
        labels = detections.labels
        return tuple(
            Trigger(self.name, labels[c] if 0 <= c < slots else f"class_{c}", float(s))
            for c, s in zip(ids[chosen].tolist(), score[chosen].tolist(), strict=True)
        )

    def _table(self, labels: tuple[str, ...]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        table = self._tables.get(labels)
        if table is None:
            bands = [self.band_of(label) for label in labels] + [self.band_of("")]
            table = (
                np.array([b[0] for b in bands], dtype=np.float32),
                np.array([b[1] for b in bands], dtype=np.float32),
            )
            self._tables[labels] = table
        return table


def uncertainty_reason(policy: UncertaintyPolicy) -> BandReason:
    """``uncertainty``: any detection within its class's band (``""``: ids without a label)."""
    return BandReason("uncertainty", policy.band, max_reported=policy.max_reported, lowest_first=True)


def detection_reason(policy: DetectionPolicy) -> BandReason:
    """``detection``: any detection of ``labels`` (all when empty) scored in range."""
    wanted = set(policy.labels)
    band = (policy.min_score, policy.max_score)

    def band_of(label: str) -> tuple[float, float]:
        return band if not wanted or label in wanted else _EMPTY_BAND

    return BandReason("detection", band_of, max_reported=policy.max_reported, lowest_first=False)
