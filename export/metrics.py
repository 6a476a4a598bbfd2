"""How good were the pre-labels? Detection metrics of predictions against reviewed truth.

Public API (stable; training scripts call it)::

    from export.metrics import ImageBoxes, evaluate
    report = evaluate(predictions, truths, iou_threshold=0.5)
    report.map50, report.map50_95, report.per_class_ap50, report.per_class_ap50_95

``predictions`` and ``truths`` are sequences of ``ImageBoxes`` (one per image: name, ``xyxy``
pixel boxes, labels, scores or None) matched by image name. The images of ``truths`` are the
evaluation set: an image with no truth entry is not evaluated (listed in
``report.unmatched_prediction_images``), a truth image with no prediction entry has only misses.

Definitions:

* **AP** is COCO's: per class and IoU threshold, predictions of all images ranked by score (at
  most 100 per image and class), each matched greedily to the unmatched truth box of the same
  class with the highest IoU >= threshold; precision made monotone and sampled at 101 recall
  points. ``map50`` averages AP at IoU 0.5 and ``map50_95`` AP over IoU 0.50:0.05:0.95, over
  the classes that have truth boxes (as ``pycocotools`` ``COCOeval`` does). Without scores
  every prediction counts as equally confident.
* **precision / recall / F1** at ``iou_threshold`` use every prediction with the same greedy
  matching; ``overall`` sums the counts over classes (micro average).
* **kept unchanged**: predictions matched one-to-one to a truth box with the same label at
  IoU >= 0.9, i.e. the reviewer left them (nearly) as they were.
* **threshold sweep** (when scores exist): for each candidate threshold, the corrections a
  reviewer would have made had only predictions scoring >= it been shown: false positives to
  delete plus missed objects to draw. ``best_threshold`` minimises them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from agent.boxes import as_boxes, iou_matrix

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
COCO_RECALL_POINTS = np.linspace(0.0, 1.0, 101)
COCO_MAX_DETECTIONS = 100
KEPT_IOU = 0.9


@dataclass(frozen=True)
class ImageBoxes:
    """Boxes of one image: ``xyxy`` float32 ``[N, 4]`` pixels, one label per box, and scores
    ``[N]`` in [0, 1] for predictions (None for truth or when unknown)."""

    name: str
    xyxy: NDArray[np.float32]
    labels: tuple[str, ...]
    scores: NDArray[np.float32] | None = None

    @classmethod
    def create(
        cls, name: str, xyxy: ArrayLike, labels: Sequence[str], scores: ArrayLike | None = None
    ) -> ImageBoxes:
        """Build from array-likes, checking that lengths agree."""
        boxes = as_boxes(xyxy)
        score_arr = None if scores is None else np.asarray(scores, dtype=np.float32).reshape(-1)
        if len(labels) != len(boxes) or (score_arr is not None and len(score_arr) != len(boxes)):
            raise ValueError(f"{name}: {len(boxes)} boxes but {len(labels)} labels / scores")
        return cls(name, boxes, tuple(labels), score_arr)


@dataclass
class ClassResult:
    """Counts and metrics of one class (or ``all``); AP values are None without truth boxes."""

    label: str
    truths: int
    predictions: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    ap50: float | None
    ap50_95: float | None


@dataclass
class SweepPoint:
    """What showing only predictions with score >= ``threshold`` would have given."""

    threshold: float
    predictions: int
    tp: int
    fp: int
    fn: int
    corrections: int


@dataclass
class EvalReport:
    """Result of ``evaluate``; ``to_dict()`` for JSON, ``format_table()`` for a terminal."""

    iou_threshold: float
    images: int
    classes: dict[str, ClassResult]
    overall: ClassResult
    map50: float
    map50_95: float
    kept_unchanged: int
    kept_unchanged_share: float
    frames_with_missed: list[str]
    frames_with_false_positives: list[str]
    scores_available: bool
    sweep: list[SweepPoint] = field(default_factory=list)
    best_threshold: SweepPoint | None = None
    unmatched_prediction_images: list[str] = field(default_factory=list)

    @property
    def per_class_ap50(self) -> dict[str, float | None]:
        """Class -> AP at IoU 0.5 (None for a class without truth boxes)."""
        return {k: v.ap50 for k, v in self.classes.items()}

    @property
    def per_class_ap50_95(self) -> dict[str, float | None]:
        """Class -> AP averaged over IoU 0.50:0.95."""
        return {k: v.ap50_95 for k, v in self.classes.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None)."""
        return _json_safe(asdict(self))

    def format_table(self, max_frames: int = 10) -> str:
        """A human-readable table of the report."""

        def pct(v: float | None) -> str:
            return "    -" if v is None or math.isnan(v) else f"{100 * v:5.1f}"

        head = f"{'class':<20} {'truth':>6} {'pred':>6} {'TP':>5} {'FP':>5} {'FN':>5}  prec   rec    F1  AP50 AP50:95 (%)"
        lines = [head, "-" * len(head)]
        for r in [*self.classes.values(), self.overall]:
            lines.append(
                f"{r.label[:20]:<20} {r.truths:>6} {r.predictions:>6} {r.tp:>5} {r.fp:>5} {r.fn:>5} "
                f"{pct(r.precision)} {pct(r.recall)} {pct(r.f1)} {pct(r.ap50)} {pct(r.ap50_95):>7}"
            )
        lines.append("")
        lines.append(
            f"{self.images} frames, IoU >= {self.iou_threshold:g}; mAP50 {pct(self.map50).strip()}%, "
            f"mAP50:95 {pct(self.map50_95).strip()}%"
        )
        lines.append(
            f"pre-labels kept unchanged (IoU >= {KEPT_IOU:g}, same label): {self.kept_unchanged}/"
            f"{self.overall.predictions} ({pct(self.kept_unchanged_share).strip()}%)"
        )
        for title, frames in (
            ("frames with missed objects", self.frames_with_missed),
            ("frames with false positives", self.frames_with_false_positives),
        ):
            shown = ", ".join(frames[:max_frames]) + (" ..." if len(frames) > max_frames else "")
            lines.append(f"{title} ({len(frames)}): {shown or '-'}")
        if self.unmatched_prediction_images:
            lines.append(
                f"frames with pre-labels but absent from the truth: {len(self.unmatched_prediction_images)}"
            )
        if not self.scores_available:
            lines.append(
                "no scores for the pre-labels: AP ranks them as equally confident; no threshold sweep"
            )
        elif self.best_threshold is not None and self.sweep:
            now = self.sweep[0]
            best = self.best_threshold
            lines.append(
                f"score threshold: showing pre-labels with score >= {best.threshold:.3f} would have needed "
                f"{best.corrections} corrections ({best.fp} deletions + {best.fn} drawings) instead of "
                f"{now.corrections} at {now.threshold:.3f}"
            )
        return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _greedy_match(ious: NDArray[np.float32], thresholds: NDArray[np.float64]) -> NDArray[np.bool_]:
    """COCO's greedy matching. ``ious`` is ``[P, G]`` with predictions in descending score
    order; returns ``[T, P]``: prediction p is a true positive at threshold t."""
    n_pred, n_truth = ious.shape
    tp = np.zeros((len(thresholds), n_pred), dtype=bool)
    if n_pred == 0 or n_truth == 0:
        return tp
    limits = np.minimum(thresholds, 1 - 1e-10)[:, None]
    matched = np.zeros((len(thresholds), n_truth), dtype=bool)
    rows = np.arange(len(thresholds))
    for p in range(n_pred):  # sequential by nature: each match removes a truth box
        candidates = (ious[p][None, :] >= limits) & ~matched
        masked = np.where(candidates, ious[p][None, :], -1.0)
        best = len(masked[0]) - 1 - np.argmax(masked[:, ::-1], axis=1)  # COCO keeps the last best
        hit = candidates[rows, best]
        matched[rows[hit], best[hit]] = True
        tp[:, p] = hit
    return tp


def _average_precision(scores: NDArray[np.float32], tp: NDArray[np.bool_], n_truth: int) -> float:
    """COCO 101-point interpolated AP of ranked detections (``tp`` aligned with ``scores``)."""
    if n_truth == 0:
        return math.nan
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-scores, kind="mergesort")
    tps = np.cumsum(tp[order]).astype(np.float64)
    fps = np.cumsum(~tp[order]).astype(np.float64)
    recall = tps / n_truth
    precision = tps / (tps + fps + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, COCO_RECALL_POINTS, side="left")
    sampled = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return float(sampled.mean())


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def evaluate(
    predictions: Sequence[ImageBoxes],
    truths: Sequence[ImageBoxes],
    iou_threshold: float = 0.5,
    *,
    classes: Sequence[str] | None = None,
) -> EvalReport:
    """Compare ``predictions`` with ``truths`` (matched by ``name``) and return an ``EvalReport``
    with per-class and overall precision/recall/F1 at ``iou_threshold``, COCO AP50 and
    AP50:95, kept-unchanged share, frames with misses / false positives and, when every
    prediction has scores, a score-threshold sweep. ``classes`` fixes the order of classes in
    the report (others follow, sorted)."""
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    truth_by_name: dict[str, ImageBoxes] = {}
    for t in truths:
        if t.name in truth_by_name:
            raise ValueError(f"two truth entries for image {t.name!r}")
        truth_by_name[t.name] = t
    pred_by_name: dict[str, ImageBoxes] = {}
    for p in predictions:
        if p.name in pred_by_name:
            raise ValueError(f"two prediction entries for image {p.name!r}")
        pred_by_name[p.name] = p
    unmatched = sorted(n for n in pred_by_name if n not in truth_by_name)
    names = sorted(truth_by_name)
    scores_available = all(pred_by_name[n].scores is not None for n in names if n in pred_by_name) and any(
        n in pred_by_name for n in names
    )
    seen = {label for n in names for label in truth_by_name[n].labels} | {
        label for n in names if n in pred_by_name for label in pred_by_name[n].labels
    }
    order = [c for c in classes or () if c in seen]
    order += sorted(seen - set(order))

    thresholds = np.concatenate([COCO_IOU_THRESHOLDS, [iou_threshold, KEPT_IOU]])
    at_iou, at_kept = len(COCO_IOU_THRESHOLDS), len(COCO_IOU_THRESHOLDS) + 1
    per_class: dict[str, dict[str, list[Any]]] = {c: {"scores": [], "tp": [], "capped": []} for c in order}
    n_truth = dict.fromkeys(order, 0)
    n_pred = dict.fromkeys(order, 0)
    missed_frames, fp_frames = [], []
    for name in names:
        truth = truth_by_name[name]
        pred = pred_by_name.get(name) or ImageBoxes.create(name, [], [])
        scores = np.ones(len(pred.labels), dtype=np.float32) if pred.scores is None else pred.scores
        scores = np.nan_to_num(scores, nan=0.0)
        truth_labels, pred_labels = np.array(truth.labels, dtype=object), np.array(pred.labels, dtype=object)
        image_missed = image_fp = False
        for label in order:
            t_idx = np.flatnonzero(truth_labels == label)
            p_idx = np.flatnonzero(pred_labels == label)
            if not len(t_idx) and not len(p_idx):
                continue
            p_idx = p_idx[np.argsort(-scores[p_idx], kind="mergesort")]
            tp = _greedy_match(iou_matrix(pred.xyxy[p_idx], truth.xyxy[t_idx]), thresholds)
            n_truth[label] += len(t_idx)
            n_pred[label] += len(p_idx)
            bucket = per_class[label]
            bucket["scores"].append(scores[p_idx])
            bucket["tp"].append(tp)
            bucket["capped"].append(np.arange(len(p_idx)) < COCO_MAX_DETECTIONS)
            matched = int(tp[at_iou].sum())
            image_missed |= matched < len(t_idx)
            image_fp |= matched < len(p_idx)
        if image_missed:
            missed_frames.append(name)
        if image_fp:
            fp_frames.append(name)

    results: dict[str, ClassResult] = {}
    all_scores, all_tp = [], []
    kept = 0
    for label in order:
        bucket = per_class[label]
        scores = np.concatenate(bucket["scores"]) if bucket["scores"] else np.zeros(0, np.float32)
        tp = np.concatenate(bucket["tp"], axis=1) if bucket["tp"] else np.zeros((len(thresholds), 0), bool)
        capped = np.concatenate(bucket["capped"]) if bucket["capped"] else np.zeros(0, bool)
        aps = [_average_precision(scores[capped], tp[t][capped], n_truth[label]) for t in range(at_iou)]
        tp_count = int(tp[at_iou].sum())
        kept += int(tp[at_kept].sum())
        all_scores.append(scores)
        all_tp.append(tp[at_iou])
        precision = _ratio(tp_count, n_pred[label])
        recall = _ratio(tp_count, n_truth[label])
        results[label] = ClassResult(
            label=label,
            truths=n_truth[label],
            predictions=n_pred[label],
            tp=tp_count,
            fp=n_pred[label] - tp_count,
            fn=n_truth[label] - tp_count,
            precision=precision,
            recall=recall,
            f1=_ratio(int(2 * tp_count), n_pred[label] + n_truth[label]),
            ap50=None if n_truth[label] == 0 else aps[0],
            ap50_95=None if n_truth[label] == 0 else float(np.mean(aps)),
        )
    ap50s = [r.ap50 for r in results.values() if r.ap50 is not None]
    ap50_95s = [r.ap50_95 for r in results.values() if r.ap50_95 is not None]
    map50 = float(np.mean(ap50s)) if ap50s else math.nan
    map50_95 = float(np.mean(ap50_95s)) if ap50_95s else math.nan
    total_truth, total_pred = sum(n_truth.values()), sum(n_pred.values())
    total_tp = sum(r.tp for r in results.values())
    overall = ClassResult(
        label="all",
        truths=total_truth,
        predictions=total_pred,
        tp=total_tp,
        fp=total_pred - total_tp,
        fn=total_truth - total_tp,
        precision=_ratio(total_tp, total_pred),
        recall=_ratio(total_tp, total_truth),
        f1=_ratio(2 * total_tp, total_pred + total_truth),
        ap50=map50 if ap50s else None,
        ap50_95=map50_95 if ap50s else None,
    )
    report = EvalReport(
        iou_threshold=iou_threshold,
        images=len(names),
        classes=results,
        overall=overall,
        map50=map50,
        map50_95=map50_95,
        kept_unchanged=kept,
        kept_unchanged_share=_ratio(kept, total_pred),
        frames_with_missed=missed_frames,
        frames_with_false_positives=fp_frames,
        scores_available=scores_available,
        unmatched_prediction_images=unmatched,
    )
    if scores_available:
        scores = np.concatenate(all_scores) if all_scores else np.zeros(0, np.float32)
        tp_flags = np.concatenate(all_tp) if all_tp else np.zeros(0, bool)
        report.sweep = threshold_sweep(scores, tp_flags, total_truth)
        report.best_threshold = min(report.sweep, key=lambda s: (s.corrections, -s.predictions), default=None)
    return report


def threshold_sweep(scores: NDArray[np.float32], tp: NDArray[np.bool_], n_truth: int) -> list[SweepPoint]:
    """Corrections needed at each candidate score threshold, lowest threshold first.

    Candidates are the distinct prediction scores (showing every prediction >= it) and one
    above the highest score (showing none). Greedy matching in score order means a prediction's
    match does not depend on lower-scored ones, so one matching serves every threshold."""
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order].astype(np.float64)
    tps = np.cumsum(tp[order])
    points: list[SweepPoint] = []
    distinct = np.unique(sorted_scores)  # ascending
    for threshold in distinct.tolist():
        shown = int(np.searchsorted(-sorted_scores, -threshold, side="right"))
        tp_count = int(tps[shown - 1]) if shown else 0
        fp, fn = shown - tp_count, n_truth - tp_count
        points.append(SweepPoint(round(threshold, 6), shown, tp_count, fp, fn, fp + fn))
    above_all = round(float(distinct[-1]) + 1e-6, 6) if len(distinct) else 0.0
    points.append(SweepPoint(above_all, 0, 0, 0, n_truth, n_truth))
    return points
