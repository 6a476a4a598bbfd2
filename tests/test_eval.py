"""Evaluation of pre-labels against reviewed labels: perfect on itself, hand-computed numbers on
a perturbed copy, agreement with pycocotools, and the edge-agent eval command on real projects."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from agent import cli
from agent.detections import Detections
from agent.vott import VottProject
from export.metrics import ImageBoxes, evaluate

CLASSES = ("person", "car")
# image -> [(label, box)] reviewed truth
TRUTH = {
    "a.jpg": [("person", [10, 10, 50, 90]), ("car", [100, 100, 200, 150])],
    "b.jpg": [("person", [20, 20, 60, 100]), ("person", [300, 50, 340, 130])],
    "c.jpg": [("car", [50, 50, 150, 120])],
}
# the pre-labels: the truth with one box shifted (IoU 2/3), one deleted (b's second person),
# one label changed (c's car called person) and one added (a second car in a)
PRED = {
    "a.jpg": [("person", [18, 10, 58, 90], 0.9), ("car", [100, 100, 200, 150], 0.8), ("car", [400, 300, 450, 350], 0.3)],
    "b.jpg": [("person", [20, 20, 60, 100], 0.95)],
    "c.jpg": [("person", [50, 50, 150, 120], 0.6)],
}  # fmt: skip


def truth_boxes() -> list[ImageBoxes]:
    return [ImageBoxes.create(n, [b for _, b in v], [lab for lab, _ in v]) for n, v in TRUTH.items()]


def pred_boxes() -> list[ImageBoxes]:
    return [
        ImageBoxes.create(n, [b for _, b, _ in v], [lab for lab, _, _ in v], [s for _, _, s in v])
        for n, v in PRED.items()
    ]


def test_a_project_against_itself_is_perfect() -> None:
    truth = truth_boxes()
    as_pred = [
        ImageBoxes.create(t.name, t.xyxy, t.labels, np.linspace(0.5, 0.9, len(t.labels))) for t in truth
    ]
    report = evaluate(as_pred, truth)
    assert report.map50 == pytest.approx(1.0) and report.map50_95 == pytest.approx(1.0)
    for result in [*report.classes.values(), report.overall]:
        assert (result.precision, result.recall, result.f1) == (1.0, 1.0, 1.0)
        assert result.fp == result.fn == 0
    assert report.kept_unchanged_share == 1.0 and report.kept_unchanged == 5
    assert report.frames_with_missed == [] and report.frames_with_false_positives == []
    assert report.best_threshold is not None and report.best_threshold.corrections == 0


def test_perturbed_copy_gives_the_numbers_computed_by_hand() -> None:
    report = evaluate(pred_boxes(), truth_boxes(), classes=CLASSES)
    person, car = report.classes["person"], report.classes["car"]
    # person: b 0.95 TP, a 0.9 TP (IoU 2/3), c 0.6 FP (was a car); b's second person missed
    assert (person.truths, person.predictions, person.tp, person.fp, person.fn) == (3, 3, 2, 1, 1)
    assert person.precision == pytest.approx(2 / 3) and person.recall == pytest.approx(2 / 3)
    assert person.f1 == pytest.approx(2 / 3)
    # car: a 0.8 TP, a 0.3 FP (added); c's car missed (labelled person)
    assert (car.truths, car.predictions, car.tp, car.fp, car.fn) == (2, 2, 1, 1, 1)
    assert (car.precision, car.recall, car.f1) == (0.5, 0.5, 0.5)
    overall = report.overall
    assert (overall.tp, overall.fp, overall.fn) == (3, 2, 2)
    assert (overall.precision, overall.recall, overall.f1) == (0.6, 0.6, 0.6)
    # AP50, 101 recall points. person: precision 1 up to recall 2/3 -> points 0.00..0.66 = 67 of 101
    # car: precision 1 up to recall 1/2 -> points 0.00..0.50 = 51 of 101
    assert person.ap50 == pytest.approx(67 / 101) and car.ap50 == pytest.approx(51 / 101)
    assert report.map50 == pytest.approx((67 / 101 + 51 / 101) / 2)
    # the shifted person (IoU 2/3) matches at IoU 0.50..0.65 (4 thresholds) and not at 0.70..0.95 (6),
    # where person precision is 1 only up to recall 1/3 -> 34 of 101 points; car boxes are exact
    assert person.ap50_95 == pytest.approx((4 * 67 + 6 * 34) / 10 / 101)
    assert car.ap50_95 == pytest.approx(51 / 101)
    assert report.map50_95 == pytest.approx(((4 * 67 + 6 * 34) / 10 / 101 + 51 / 101) / 2)
    assert report.kept_unchanged == 2 and report.kept_unchanged_share == pytest.approx(2 / 5)
    assert report.frames_with_missed == ["b.jpg", "c.jpg"]
    assert report.frames_with_false_positives == ["a.jpg", "c.jpg"]
    # sweep: scores 0.95 TP, 0.9 TP, 0.8 TP, 0.6 FP, 0.3 FP and 5 truth boxes
    assert [p.threshold for p in report.sweep] == pytest.approx([0.3, 0.6, 0.8, 0.9, 0.95, 0.950001])
    assert [p.corrections for p in report.sweep] == [4, 3, 2, 3, 4, 5]  # the last shows no pre-label
    assert report.best_threshold is not None
    assert report.best_threshold.threshold == pytest.approx(0.8) and report.best_threshold.corrections == 2
    assert (report.best_threshold.fp, report.best_threshold.fn) == (0, 2)
    table = report.format_table()
    assert "person" in table and "0.800" in table and "58.4" in table  # mAP50 = 59/101


def test_images_only_in_one_set() -> None:
    truth = [*truth_boxes(), ImageBoxes.create("d.jpg", [[1, 1, 9, 9]], ["car"])]
    pred = [*pred_boxes(), ImageBoxes.create("unreviewed.jpg", [[1, 1, 9, 9]], ["car"], [0.5])]
    report = evaluate(pred, truth)
    assert report.images == 4 and report.unmatched_prediction_images == ["unreviewed.jpg"]
    assert report.classes["car"].fn == 2 and "d.jpg" in report.frames_with_missed


def test_matches_pycocotools_on_a_random_set() -> None:
    rng = np.random.default_rng(11)
    labels = ["a", "b", "c"]
    truths, preds = [], []
    for i in range(40):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 400, (n, 2))
        wh = rng.uniform(10, 120, (n, 2))
        t_boxes = np.concatenate([xy, xy + wh], axis=1)
        t_labels = [labels[k] for k in rng.integers(0, 3, n)]
        keep = rng.random(n) < 0.8
        jitter = rng.normal(0, 0.12, (n, 4)) * np.concatenate([wh, wh], axis=1)
        p_boxes = (t_boxes + jitter)[keep]
        p_labels = [
            lab if rng.random() > 0.1 else labels[int(rng.integers(0, 3))]
            for lab, k in zip(t_labels, keep, strict=True)
            if k
        ]
        extra = int(rng.integers(0, 3))
        exy = rng.uniform(0, 400, (extra, 2))
        p_boxes = np.concatenate(
            [p_boxes, np.concatenate([exy, exy + rng.uniform(10, 80, (extra, 2))], axis=1)]
        )
        p_labels += [labels[k] for k in rng.integers(0, 3, extra)]
        p_boxes[:, 2:] = np.maximum(p_boxes[:, 2:], p_boxes[:, :2] + 1)
        name = f"img{i:03d}.jpg"
        truths.append(ImageBoxes.create(name, t_boxes, t_labels))
        preds.append(ImageBoxes.create(name, p_boxes, p_labels, rng.random(len(p_labels))))
    report = evaluate(preds, truths)

    def ltwh(b: np.ndarray) -> list[float]:
        x1, y1, x2, y2 = (float(v) for v in b)
        return [x1, y1, x2 - x1, y2 - y1]

    gt = {
        "images": [
            {"id": i + 1, "file_name": t.name, "width": 600, "height": 600} for i, t in enumerate(truths)
        ],
        "categories": [{"id": k + 1, "name": lab} for k, lab in enumerate(labels)],
        "annotations": [],
    }
    dets = []
    for i, (t, p) in enumerate(zip(truths, preds, strict=True)):
        for box, lab in zip(t.xyxy, t.labels, strict=True):
            bb = ltwh(box)
            gt["annotations"].append(
                {"id": len(gt["annotations"]) + 1, "image_id": i + 1, "category_id": labels.index(lab) + 1,
                 "bbox": bb, "area": bb[2] * bb[3], "iscrowd": 0}
            )  # fmt: skip
        assert p.scores is not None
        for box, lab, score in zip(p.xyxy, p.labels, p.scores, strict=True):
            dets.append(
                {
                    "image_id": i + 1,
                    "category_id": labels.index(lab) + 1,
                    "bbox": ltwh(box),
                    "score": float(score),
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(dets), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert report.map50_95 == pytest.approx(evaluator.stats[0], abs=1e-6)
    assert report.map50 == pytest.approx(evaluator.stats[1], abs=1e-6)
    precision = evaluator.eval["precision"]  # [iou, recall, class, area, max dets]
    for k, lab in enumerate(labels):
        assert report.per_class_ap50[lab] == pytest.approx(precision[0, :, k, 0, 2].mean(), abs=1e-6)
        assert report.per_class_ap50_95[lab] == pytest.approx(precision[:, :, k, 0, 2].mean(), abs=1e-6)
    assert 0.2 < report.map50_95 < report.map50 < 1.0


def write_project(target: Path, frames: Path, data: dict[str, list[tuple]], scores: bool) -> None:
    frames.mkdir(parents=True, exist_ok=True)
    with VottProject(target, frames, tags=CLASSES) as project:
        for name, items in data.items():
            cv2.imwrite(str(frames / name), np.zeros((480, 640, 3), np.uint8))
            det = Detections.create(
                [it[1] for it in items],
                [it[2] if scores else 1.0 for it in items],
                [CLASSES.index(it[0]) for it in items],
                CLASSES,
            )
            project.add_frame(frames / name, 640, 480, det, model="m")


def test_eval_command_on_projects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_project(tmp_path / "pred", tmp_path / "frames", PRED, scores=True)
    write_project(tmp_path / "truth", tmp_path / "frames-reviewed", TRUTH, scores=False)
    monkeypatch.setattr(cli, "COMMANDS", ["export.cli:add_export_command", "export.cli:add_eval_command"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["eval", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"),
                         "--json", str(tmp_path / "report.json")])  # fmt: skip
    assert code == 0
    assert "person" in out.getvalue() and "kept unchanged" in out.getvalue()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["map50"] == pytest.approx(59 / 101)
    assert report["classes"]["person"]["tp"] == 2 and report["overall"]["f1"] == pytest.approx(0.6)
    assert report["best_threshold"]["threshold"] == pytest.approx(0.8)
    assert report["frames_with_missed"] == ["b.jpg", "c.jpg"]

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["eval", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "nope")])
    assert code == 2 and "does not exist" in err.getvalue()
