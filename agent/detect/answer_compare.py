"""Compare a model's detections now with its known answers, within a tolerance.

Rule (docs/known-answers.md): detections are paired one to one, best expected score first, with the
same class, box IoU >= ``tolerance.iou`` and a score within ``tolerance.score``. Every expected
detection scoring at least ``threshold + tolerance.score`` must be paired, and every detection now
scoring that much must have been expected; those closer to the decode threshold may legitimately
fall on either side of it and are not required.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.boxes import iou_matrix
from agent.detect.known_answers_file import Answer, Tolerance

SHOWN = 3  # differences named in the one-line message


@dataclass
class Comparison:
    """Expected vs now: the pairs (expected, now, IoU), what is missing and what is extra."""

    expected: list[Answer]
    got: list[Answer]
    pairs: list[tuple[Answer, Answer, float]] = field(default_factory=list)
    missing: list[Answer] = field(default_factory=list)
    extra: list[Answer] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing required is missing or extra."""
        return not self.missing and not self.extra

    @property
    def largest_score_difference(self) -> float:
        """The largest |score now - score expected| among the pairs (0 without pairs)."""
        return max((abs(e.score - g.score) for e, g, _ in self.pairs), default=0.0)

    @property
    def smallest_iou(self) -> float:
        """The smallest box IoU among the pairs (1 without pairs)."""
        return min((iou for _, _, iou in self.pairs), default=1.0)

    def agreement(self) -> str:
        """e.g. ``4 of 4 known detections match (largest score difference 0.000, smallest IoU 1.00)``."""
        return (
            f"{len(self.pairs)} of {len(self.expected)} known detections match (largest score "
            f"difference {self.largest_score_difference:.3f}, smallest IoU {self.smallest_iou:.2f})"
        )

    def differences(self) -> str:
        """The first few differences in words: ``expected nozzle 0.90 at [..], got nothing``."""
        if not self.got and self.missing:
            shown = ", ".join(a.text() for a in self.missing[:SHOWN])
            more = f" and {len(self.missing) - SHOWN} more" if len(self.missing) > SHOWN else ""
            return f"expected {shown}{more}, got nothing"
        items, named = [], []
        for want in self.missing:
            instead = self._nearest(want)
            items.append(f"expected {want.text()}, got {instead.text() if instead else 'no ' + want.label}")
            named += [instead] if instead else []
        items += [f"unexpected {a.text()}" for a in self.extra if not any(a is n for n in named)]
        more = f"; and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
        return "; ".join(items[:SHOWN]) + more

    def _nearest(self, wanted: Answer) -> Answer | None:
        """The detection now of the same class with the box closest to ``wanted``'s, if any."""
        same = [g for g in self.got if g.class_id == wanted.class_id]
        if not same:
            return None
        ious = iou_matrix([wanted.box_xyxy], [g.box_xyxy for g in same])[0]
        return same[int(np.argmax(ious))]

    def summary(self, limit: int = 20) -> dict[str, Any]:
        """JSON-ready: counts, the largest differences, and the first ``limit`` missing, extra and
        current answers (the stats message carries this every ``stats_interval_s``)."""
        return {
            "ok": self.ok,
            "expected": len(self.expected),
            "matched": len(self.pairs),
            "now_count": len(self.got),
            "largest_score_difference": round(self.largest_score_difference, 4),
            "smallest_iou": round(self.smallest_iou, 4),
            "missing": [a.model_dump() for a in self.missing[:limit]],
            "extra": [a.model_dump() for a in self.extra[:limit]],
            "now": [a.model_dump() for a in self.got[:limit]],
        }


def compare_answers(
    expected: list[Answer], got: list[Answer], tolerance: Tolerance, threshold: float
) -> Comparison:
    """Pair ``got`` with ``expected`` by the rule in the module docstring."""
    result = Comparison(expected=expected, got=got)
    required = threshold + tolerance.score
    ious = (
        iou_matrix([a.box_xyxy for a in expected], [a.box_xyxy for a in got])
        if expected and got
        else np.zeros((len(expected), len(got)), dtype=np.float32)
    )
    used: set[int] = set()
    for i in sorted(range(len(expected)), key=lambda k: -expected[k].score):
        want = expected[i]
        fits = [
            j
            for j, have in enumerate(got)
            if j not in used
            and have.class_id == want.class_id
            and ious[i, j] >= tolerance.iou
            and abs(have.score - want.score) <= tolerance.score
        ]
        if fits:
            best = max(fits, key=lambda j: float(ious[i, j]))
            used.add(best)
            result.pairs.append((want, got[best], float(ious[i, best])))
        elif want.score >= required:
            result.missing.append(want)
    result.extra = [have for j, have in enumerate(got) if j not in used and have.score >= required]
    return result
