"""The bundled guidance model, the synthetic printer-camera generator and the training script.

- the bundled model keeps its measured mAP@0.5 on a small held-out set of generated frames that
  ships with the tests (``tests/fixtures/heldout``, 120 frames rendered with a seed training never
  saw); the issue's bar of 0.8 must hold there and on the training script's own held-out set (its
  figure is recorded in the model card);
- the bundled model is Edge TPU friendly (uint8 I/O, only mapped ops) and under 4 MB, and on
  the bundled timelapse it flags the failing part, not the healthy one;
- the generator's boxes are exact: every pixel an object draws lies inside its box;
- a one-minute ``--quick`` training run on a tiny generated VoTT project gives a quantised
  model the agent loads and runs (needs TensorFlow, the ``train`` extra; skipped without it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from agent.bundled import BUNDLED_MODEL
from agent.config.detector import DetectorSettings
from agent.detect.detector import Detector
from agent.errors import UserError
from export.metrics import ImageBoxes, evaluate

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
DATA = REPO / "agent" / "data"
LABELS = ["nozzle", "raft", "print", "adhesion", "spaghetti"]
EDGETPU_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "CONCATENATION", "RESHAPE", "LOGISTIC", "QUANTIZE",
               "MAX_POOL_2D", "AVERAGE_POOL_2D"}  # fmt: skip


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    return load_script("make_sample_data")


def truth_boxes(truth: dict, root: Path) -> list[tuple[Path, ImageBoxes]]:
    return [
        (
            root / f["image"],
            ImageBoxes.create(f["image"], [b["xyxy"] for b in f["boxes"]], [b["label"] for b in f["boxes"]]),
        )
        for f in truth["frames"]
    ]


# ----------------------------------------------------------------------------------- bundled model


def heldout_map50(fixtures_dir: Path) -> Any:
    """The bundled model's evaluation on the held-out frames that ship with the tests."""
    heldout = fixtures_dir / "heldout"
    truth = json.loads((heldout / "ground_truth.json").read_text(encoding="utf-8"))
    detector = Detector(DetectorSettings(score_threshold=0.01))  # mAP ranks all candidates
    assert detector.labels == tuple(LABELS)
    predictions, truths = [], []
    for path, t in truth_boxes(truth, heldout):
        dets = detector.detect(cv2.imread(str(path)))
        predictions.append(ImageBoxes.create(t.name, dets.xyxy, dets.label_names(), dets.score))
        truths.append(t)
    assert len(truths) >= 100  # with fewer, one adhesion box moves mAP by several points
    return evaluate(predictions, truths, iou_threshold=0.5, classes=LABELS)


def card_map50() -> float:
    """The held-out mAP@0.5 the training script printed and recorded in the model card."""
    card = yaml.safe_load((DATA / "print3d_guidance.yaml").read_text(encoding="utf-8"))
    return float(card["metrics"]["map50"])


def test_bundled_model_keeps_its_measured_map50_on_heldout_frames(fixtures_dir: Path) -> None:
    """A regression guard at the shipped model's level on these 120 frames (0.868; 0.887 before the
    hard negatives of docs/guidance-model.md); the issue's bar is the test below."""
    report = heldout_map50(fixtures_dir)
    assert report.map50 >= 0.86, report.format_table()
    assert (report.per_class_ap50["nozzle"] or 0.0) >= 0.95, report.format_table()


def test_bundled_model_reaches_map50_0_8_on_heldout_frames(fixtures_dir: Path) -> None:
    """Issue #7's bar, on the training script's own held-out figure (400 frames, in the card) and
    on the 120 frames shipped with the tests."""
    assert card_map50() >= 0.8, f"the training script's held-out mAP@0.5 is {card_map50()}"
    report = heldout_map50(fixtures_dir)
    assert report.map50 >= 0.8, report.format_table()


def test_bundled_model_is_small_uint8_and_edgetpu_friendly() -> None:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    assert BUNDLED_MODEL.stat().st_size < 4_000_000
    interpreter = Interpreter(
        model_path=str(BUNDLED_MODEL),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    ops = {d["op_name"] for d in interpreter._get_ops_details()}
    assert ops <= EDGETPU_OPS, ops - EDGETPU_OPS
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    assert inp["dtype"] == np.uint8 and out["dtype"] == np.uint8
    assert list(inp["shape"]) == [1, 320, 320, 3]
    assert out["shape"][0] == 1 and out["shape"][2] == 5 + len(LABELS)
    card = (DATA / "print3d_guidance.yaml").read_text(encoding="utf-8")
    assert "layout: yolov5" in card and "map50:" in card


def test_bundled_model_flags_the_failing_part_of_the_sample_timelapse() -> None:
    truth = json.loads((DATA / "sample_timelapse_truth.json").read_text(encoding="utf-8"))
    frames = sorted((DATA / "sample_timelapse").glob("*.jpg"))
    assert 60 <= len(frames) <= 120
    assert sum(f.stat().st_size for f in frames) < 10_000_000
    assert [f.name for f in frames] == [r["image"] for r in truth["frames"]]
    failure = truth["failure_index"]
    assert len(frames) * 0.4 <= failure <= len(frames) * 0.6
    detector = Detector(DetectorSettings())  # the card's thresholds, as the agent runs it
    failing_labels = {"spaghetti", "adhesion"}
    flagged = []
    for path in frames:
        image = cv2.imread(str(path))
        assert image.shape == (480, 640, 3)
        flagged.append(bool(failing_labels & set(detector.detect(image).label_names())))
    assert not any(flagged[:failure]), [i for i, f in enumerate(flagged[:failure]) if f]
    assert sum(flagged[failure:]) >= 0.8 * (len(frames) - failure)


# ----------------------------------------------------------------------------------- generator


def test_generated_frames_have_boxes_inside_the_image_with_known_labels(generator: ModuleType) -> None:
    seen: set[str] = set()
    for index in range(12):
        image, boxes, quality = generator.train_frame(2024, index, 640, 480)
        assert image.shape == (480, 640, 3) and image.dtype == np.uint8
        assert 1 <= quality <= 100
        for box in boxes:
            x1, y1, x2, y2 = box.xyxy
            assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480, box
            assert box.label in LABELS
            seen.add(box.label)
    assert {"nozzle", "raft", "print"} <= seen


def test_every_pixel_an_object_draws_lies_inside_its_box(generator: ModuleType) -> None:
    """Render each scene with and without each labelled object (camera effects off): the
    pixels that change are that object's, and they must lie inside its box (with 1.5 px of
    slack for anti-aliased line edges). Boxes are amodal, so hidden parts may make a box larger."""
    checked: dict[str, int] = {}
    tight = 0
    for index in range(8):
        printer, state, _ = generator.train_scene(77, index, 640, 480)
        full, boxes = generator.render(printer, state, effects=False)
        for box in boxes:
            without, _ = generator.render(printer, state, effects=False, omit={box.object_id})
            changed = np.nonzero(np.any(full != without, axis=2))
            if not len(changed[0]):
                continue
            ys, xs = changed
            x1, y1, x2, y2 = box.xyxy
            # pixel centres, 1.5 px of slack for anti-aliased edges
            assert xs.min() + 0.5 >= x1 - 1.5 and xs.max() + 0.5 <= x2 + 1.5, (index, box)
            assert ys.min() + 0.5 >= y1 - 1.5 and ys.max() + 0.5 <= y2 + 1.5, (index, box)
            drawn = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            if all(abs(a - b) <= 2.0 for a, b in zip(drawn, box.xyxy, strict=True)):
                tight += 1
            checked[box.label] = checked.get(box.label, 0) + 1
    assert {"nozzle", "print", "raft"} <= set(checked), checked
    assert tight >= sum(checked.values()) // 2  # most objects are fully visible: box = drawn pixels


def test_generator_is_deterministic(generator: ModuleType) -> None:
    a, boxes_a, qa = generator.train_frame(9, 4, 640, 360)
    b, boxes_b, qb = generator.train_frame(9, 4, 640, 360)
    assert np.array_equal(a, b) and boxes_a == boxes_b and qa == qb
    c, _, _ = generator.train_frame(10, 4, 640, 360)
    assert not np.array_equal(a, c)


def test_generator_writes_frames_truth_and_a_valid_vott_project(
    generator: ModuleType, tmp_path: Path
) -> None:
    out = tmp_path / "frames"
    assert generator.main(["train", str(out), "--count", "4", "--seed", "3"]) == 0
    truth = json.loads((out / "ground_truth.json").read_text(encoding="utf-8"))
    assert truth["labels"] == LABELS and len(truth["frames"]) == 4
    for record in truth["frames"]:
        image = cv2.imread(str(out / record["image"]))
        assert image.shape[:2] == (record["height"], record["width"])
    from agent.vott import load_project

    project = load_project(out / "vott-target")
    assert project.tags == LABELS
    by_name = {a.file_name: a for a in project.assets}
    for record in truth["frames"]:
        if record["boxes"]:
            asset = by_name[record["image"]]
            assert asset.labels == [b["label"] for b in record["boxes"]]
            np.testing.assert_allclose(asset.xyxy, [b["xyxy"] for b in record["boxes"]], atol=0.01)


# ----------------------------------------------------------------------------------- training


def training_python() -> str | None:
    """A Python with TensorFlow: ``EDGE_AGENT_TRAIN_PYTHON`` or this one when it has it."""
    configured = os.environ.get("EDGE_AGENT_TRAIN_PYTHON")
    if configured:
        return configured
    return sys.executable if importlib.util.find_spec("tensorflow") is not None else None


def test_learning_rate_warms_up_then_anneals_over_steps_or_time_budget() -> None:
    schedule = load_script("train_guidance_model").Schedule(0.01, warmup=10, total=110, budget_s=600.0)
    assert schedule.at(0, 0.0) == (pytest.approx(0.001), False)
    assert schedule.at(9, 5.0) == (pytest.approx(0.01), False)
    schedule.warmup_ended(10.0)
    lr, by_time = schedule.at(60, 20.0)  # half the steps, little time: the steps set it
    assert lr == pytest.approx(0.01 * (0.02 + 0.98 * 0.5)) and not by_time
    lr, by_time = schedule.at(20, 305.0)  # half the time budget after the warm-up, few steps
    assert lr == pytest.approx(0.01 * (0.02 + 0.98 * 0.5)) and by_time
    assert schedule.at(30, 599.0)[0] == pytest.approx(0.01 * 0.02, rel=0.01)  # annealed by the deadline
    assert schedule.at(30, 600.0) == (None, True)  # the budget is spent: training ends
    assert schedule.at(110, 20.0) == (None, False)  # the steps are done
    short = load_script("train_guidance_model").Schedule(0.01, warmup=10, total=110, budget_s=1.0)
    short.warmup_ended(30.0)  # the warm-up used the whole budget: training ends right after it
    assert short.at(10, 30.0) == (None, True)


def test_training_reads_a_project_vott_saved_from_its_source_folder(shared_dir: Path) -> None:
    """VoTT encrypts the folder paths when it saves a project: the frames are found by name in
    ``--source-folder``, and without it the error says to pass it."""
    trainer = load_script("train_guidance_model")
    fixtures = shared_dir / "vott" / "fixtures"
    with pytest.raises(UserError, match="--source-folder"):
        trainer.load_samples(fixtures / "encrypted", ["person", "car"])
    labels = trainer.source_labels(fixtures / "encrypted", fixtures / "frames")
    samples = trainer.load_samples(fixtures / "encrypted", labels, fixtures / "frames")
    assert samples and all(s.path.parent == fixtures / "frames" and s.path.is_file() for s in samples)
    assert all(len(s.xyxy) == len(s.classes) and (s.xyxy[:, 2:] > s.xyxy[:, :2]).all() for s in samples)


@pytest.mark.e2e
def test_quick_training_gives_a_quantized_model_the_agent_runs(generator: ModuleType, tmp_path: Path) -> None:
    python = training_python()
    if python is None:
        pytest.skip(
            "TensorFlow is not installed (the `train` extra: pip install -e '.[train]'); "
            "or set EDGE_AGENT_TRAIN_PYTHON to a Python that has it"
        )
    data = tmp_path / "frames"
    assert generator.main(["train", str(data), "--count", "40", "--seed", "31"]) == 0
    out = tmp_path / "model" / "quick.tflite"
    result = subprocess.run(
        [python, str(SCRIPTS / "train_guidance_model.py"), "--data", str(data / "vott-target"),
         "--out", str(out), "--quick", "--seed", "5"],
        capture_output=True, text=True, timeout=540, cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "mAP@0.5" in result.stdout
    assert (out.parent / "quick_labels.txt").read_text(encoding="utf-8").split() == LABELS
    first_card = yaml.safe_load((out.parent / "quick.yaml").read_text(encoding="utf-8"))
    assert first_card["metrics"]["stopped_by"] == "epochs" and first_card["metrics"]["epochs_done"] == 6
    detector = Detector(DetectorSettings(model=str(out), score_threshold=0.01))
    assert detector.layout.kind == "yolov5" and detector.labels == tuple(LABELS)
    assert detector.interpreter.get_input_details()[0]["dtype"] == np.uint8
    image = cv2.imread(str(data / json.loads((data / "ground_truth.json").read_text())["frames"][0]["image"]))
    dets = detector.detect(image)  # a one-minute model finds little; what it finds must be well-formed
    assert all(name in LABELS for name in dets.label_names())
    assert np.all(dets.xyxy[:, 2] <= image.shape[1]) and np.all(dets.xyxy[:, 3] <= image.shape[0])
    assert np.all((dets.score >= 0.01) & (dets.score <= 1.0))

    # a later run goes on from this one's weights and anchors; a time budget shorter than the
    # warm-up ends training right after it and still writes the model, and the card says so
    assert (out.parent / "quick.weights.h5").is_file() and (out.parent / "quick_anchors.npy").is_file()
    again = subprocess.run(
        [python, str(SCRIPTS / "train_guidance_model.py"), "--data", str(data / "vott-target"),
         "--out", str(tmp_path / "model2" / "quick.tflite"), "--quick", "--seed", "5",
         "--init", str(out.parent / "quick.weights.h5"), "--max-minutes", "0.001", "--input-size", "160"],
        capture_output=True, text=True, timeout=540, cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "starting from the weights" in again.stderr
    assert "anchors scaled from the 128 px input" in again.stderr, "the weights go on at a larger input"
    assert "--max-minutes 0.001 reached" in again.stderr
    card = yaml.safe_load((tmp_path / "model2" / "quick.yaml").read_text(encoding="utf-8"))
    assert card["metrics"]["stopped_by"] == "time budget" and card["metrics"]["epochs_done"] < 6
    assert card["metrics"]["started_from"] == "quick.weights.h5" and card["metrics"]["input_size"] == 160
    bigger = Detector(DetectorSettings(model=str(tmp_path / "model2" / "quick.tflite")))
    assert bigger.labels == tuple(LABELS) and (bigger.input_width, bigger.input_height) == (160, 160)
