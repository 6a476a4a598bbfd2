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


def _by_name(items: Sequence[ImageBoxes], what: str) -> dict[str, ImageBoxes]:
    out: dict[str, ImageBoxes] = {}
    for item in items:
        if item.name in out:
            raise ValueError(f"two {what} entries for image {item.name!r}")
        out[item.name] = item
    return out


@dataclass
class _Matching:
    """Every image's predictions matched to its truths, gathered per class."""

    thresholds: NDArray[np.float64]
    buckets: dict[str, dict[str, list[Any]]]
    n_truth: dict[str, int]
    n_pred: dict[str, int]
    missed_frames: list[str] = field(default_factory=list)
    fp_frames: list[str] = field(default_factory=list)


def _match(
    names: list[str], truth_by_name: dict[str, ImageBoxes], pred_by_name: dict[str, ImageBoxes],
    order: list[str], iou_threshold: float,
) -> _Matching:  # fmt: skip
    thresholds = np.concatenate([COCO_IOU_THRESHOLDS, [iou_threshold, KEPT_IOU]])
    at_iou = len(COCO_IOU_THRESHOLDS)
    m = _Matching(
        thresholds,
        {c: {"scores": [], "tp": [], "capped": []} for c in order},
        dict.fromkeys(order, 0),
        dict.fromkeys(order, 0),
    )
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
            m.n_truth[label] += len(t_idx)
            m.n_pred[label] += len(p_idx)
            bucket = m.buckets[label]
            bucket["scores"].append(scores[p_idx])
            bucket["tp"].append(tp)
            bucket["capped"].append(np.arange(len(p_idx)) < COCO_MAX_DETECTIONS)
            matched = int(tp[at_iou].sum())
            image_missed |= matched < len(t_idx)
            image_fp |= matched < len(p_idx)
        if image_missed:
            m.missed_frames.append(name)
        if image_fp:
            m.fp_frames.append(name)
    return m


def _class_result(label: str, m: _Matching) -> tuple[ClassResult, NDArray[np.float32], NDArray[Any], int]:
    """One class's result, its prediction scores, their TP flags at the IoU threshold and how many
    predictions were kept unchanged."""
    at_iou, at_kept = len(COCO_IOU_THRESHOLDS), len(COCO_IOU_THRESHOLDS) + 1
    bucket = m.buckets[label]
    scores = np.concatenate(bucket["scores"]) if bucket["scores"] else np.zeros(0, np.float32)
    tp = np.concatenate(bucket["tp"], axis=1) if bucket["tp"] else np.zeros((len(m.thresholds), 0), bool)
    capped = np.concatenate(bucket["capped"]) if bucket["capped"] else np.zeros(0, bool)
    n_truth, n_pred = m.n_truth[label], m.n_pred[label]
    aps = [_average_precision(scores[capped], tp[t][capped], n_truth) for t in range(at_iou)]
    tp_count = int(tp[at_iou].sum())
    result = _counts_result(label, n_truth, n_pred, tp_count)
    if n_truth:
        result.ap50, result.ap50_95 = aps[0], float(np.mean(aps))
    return result, scores, tp[at_iou], int(tp[at_kept].sum())


def _counts_result(label: str, truths: int, predictions: int, tp: int) -> ClassResult:
    return ClassResult(
        label=label,
        truths=truths,
        predictions=predictions,
        tp=tp,
        fp=predictions - tp,
        fn=truths - tp,
        precision=_ratio(tp, predictions),
        recall=_ratio(tp, truths),
        f1=_ratio(2 * tp, predictions + truths),
        ap50=None,
        ap50_95=None,
    )


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
    truth_by_name, pred_by_name = _by_name(truths, "truth"), _by_name(predictions, "prediction")
    names = sorted(truth_by_name)
    present = [n for n in names if n in pred_by_name]
    scores_available = bool(present) and all(pred_by_name[n].scores is not None for n in present)
    order = _class_order([truth_by_name[n] for n in names] + [pred_by_name[n] for n in present], classes)
    m = _match(names, truth_by_name, pred_by_name, order, iou_threshold)

    results: dict[str, ClassResult] = {}
    all_scores, all_tp = [], []
    kept = 0
    for label in order:
        results[label], scores, tp, kept_here = _class_result(label, m)
        all_scores.append(scores)
        all_tp.append(tp)
        kept += kept_here
    overall = _overall(list(results.values()))
    map50 = math.nan if overall.ap50 is None else overall.ap50
    map50_95 = math.nan if overall.ap50_95 is None else overall.ap50_95
    total_truth, total_pred = overall.truths, overall.predictions
    report = EvalReport(
        iou_threshold=iou_threshold,
        images=len(names),
        classes=results,
        overall=overall,
        map50=map50,
        map50_95=map50_95,
        kept_unchanged=kept,
        kept_unchanged_share=_ratio(kept, total_pred),
        frames_with_missed=m.missed_frames,
        frames_with_false_positives=m.fp_frames,
        scores_available=scores_available,
        unmatched_prediction_images=sorted(n for n in pred_by_name if n not in truth_by_name),
    )
    if scores_available and all_scores:
        report.sweep = threshold_sweep(np.concatenate(all_scores), np.concatenate(all_tp), total_truth)
        report.best_threshold = min(report.sweep, key=lambda s: (s.corrections, -s.predictions), default=None)
    return report


def _overall(results: list[ClassResult]) -> ClassResult:
    """The ``all`` row: summed counts, and mAP as the mean AP of the classes that have truths."""
    overall = _counts_result(
        "all", sum(r.truths for r in results), sum(r.predictions for r in results), sum(r.tp for r in results)
    )
    with_ap = [r for r in results if r.ap50 is not None and r.ap50_95 is not None]
    if with_ap:
        overall.ap50 = float(np.mean([r.ap50 or 0.0 for r in with_ap]))
        overall.ap50_95 = float(np.mean([r.ap50_95 or 0.0 for r in with_ap]))
    return overall


def _class_order(images: Sequence[ImageBoxes], classes: Sequence[str] | None) -> list[str]:
    """The labels seen in ``images``: those of ``classes`` first, in that order, then the others sorted."""
    seen = {label for image in images for label in image.labels}
    order = [c for c in classes or () if c in seen]
    return order + sorted(seen - set(order))


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
