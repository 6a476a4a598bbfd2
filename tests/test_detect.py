"""The detector through ``edge-agent detect``: every output layout, both runtimes, bad models."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.detect.labels import labels_from_embedded, parse_label_lines
from agent.detect.layouts import OutputTensor, decode_end2end, detect_layout
from agent.detect.preprocess import Preprocessor, letterbox_geometry
from agent.detect.runtime import installed_runtimes
from tests.helpers import match_detections, run_cli
from tests.reference_cases import SHARED_CASES, reference_file

RUNTIMES = [r for r in installed_runtimes() if r in ("ai_edge_litert", "tflite_runtime")]
FIXTURE_MODELS = Path(__file__).parent / "fixtures" / "models"
LAYOUT_FIXTURES = sorted(
    p.name.removesuffix(".expected.json") for p in FIXTURE_MODELS.glob("*.expected.json")
)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("case", sorted(SHARED_CASES))
def test_detect_reproduces_reference_detections(shared_dir: Path, case: str, runtime: str) -> None:
    """Against ../shared's references (x86_64), or ours for this machine where its runtime's kernels
    legitimately differ (tests/fixtures/reference/README.md)."""
    model, _reference, images, flags = SHARED_CASES[case]
    ref = json.loads(reference_file(shared_dir, case, runtime).read_text())
    paths = [str(shared_dir / "models" / images / entry["image"]) for entry in ref["images"]]
    flags = [f.format(shared=shared_dir) for f in flags]
    result = run_cli(
        "detect",
        "--json",
        "--runtime",
        runtime,
        "--model",
        str(shared_dir / "models" / model),
        *flags,
        *paths,
    )
    assert result.code == 0, result.err
    lines = result.json_lines()
    assert [Path(line["image"]).name for line in lines] == [entry["image"] for entry in ref["images"]]
    threshold = float(flags[flags.index("--threshold") + 1])
    for line, entry in zip(lines, ref["images"], strict=True):
        assert (line["width"], line["height"]) == (entry["width"], entry["height"])
        assert line["runtime"] == runtime
        problems = match_detections(line["detections"], entry["detections"], threshold=threshold)
        assert not problems, f"{entry['image']}: {problems}"


@pytest.mark.parametrize("limit", [1, 5, 14, 40])
@pytest.mark.parametrize("case", ["yolov8n", "print3d"])
def test_max_detections_keeps_the_best_of_what_nms_keeps(shared_dir: Path, case: str, limit: int) -> None:
    """``--max-detections N`` returns min(N, what NMS keeps): the N best of the reference decode.
    (Cutting before suppression, as OpenCV's top_k does, lost detections on crowded images.)"""
    model, reference, images, flags = SHARED_CASES[case]
    runtime = RUNTIMES[0]
    ref = json.loads((shared_dir / "models" / reference.format(runtime=runtime)).read_text())
    entry = max(ref["images"], key=lambda e: len(e["detections"]))  # the most crowded image
    if "--max-detections" in flags:
        at = flags.index("--max-detections")
        flags = flags[:at] + flags[at + 2 :]
    result = run_cli(
        "detect", "--json", "--runtime", runtime, "--model", str(shared_dir / "models" / model), *flags,
        "--max-detections", str(limit), str(shared_dir / "models" / images / entry["image"]),
    )  # fmt: skip
    assert result.code == 0, result.err
    [line] = result.json_lines()
    best = sorted(entry["detections"], key=lambda d: -d["score"])
    assert len(line["detections"]) == min(limit, len(best))
    if limit < len(best):  # scores tied with the last one kept may be either
        cut = best[limit - 1]["score"]
        best = [d for d in best[:limit] if d["score"] > cut + 0.02]
    problems = match_detections(line["detections"], best, threshold=1.0)
    assert not problems, problems


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("fixture", LAYOUT_FIXTURES)
def test_detect_decodes_each_layout_fixture(fixture: str, runtime: str) -> None:
    expected = json.loads((FIXTURE_MODELS / f"{fixture}.expected.json").read_text())
    result = run_cli(
        "detect",
        "--json",
        "--runtime",
        runtime,
        "--threshold",
        str(expected["score_threshold"]),
        "--model",
        str(FIXTURE_MODELS / f"{fixture}.tflite"),
        str(FIXTURE_MODELS / expected["image"]),
    )
    assert result.code == 0, result.err
    (line,) = result.json_lines()
    assert [d["label"] for d in line["detections"]] == [d["label"] for d in expected["detections"]]
    for mine, ref in zip(line["detections"], expected["detections"], strict=True):
        assert mine["class_id"] == ref["class_id"]
        assert mine["score"] == pytest.approx(ref["score"], abs=expected["tolerance_score"])
        assert mine["box_xyxy"] == pytest.approx(ref["box_xyxy"], abs=expected["tolerance_px"] + 0.01)


def test_detect_without_json_prints_one_readable_line_per_image() -> None:
    result = run_cli(
        "detect",
        "--model",
        str(FIXTURE_MODELS / "yolov5_layout_uint8.tflite"),
        str(FIXTURE_MODELS / "yolov5_layout_uint8.png"),
    )
    assert result.code == 0, result.err
    assert re.fullmatch(
        r".*yolov5_layout_uint8\.png: red 0\.99, green 0\.9[67], blue 0\.(89|90)", result.out.strip()
    )


def test_a_classifier_is_refused_at_start_with_what_is_readable() -> None:
    result = run_cli("detect", "--model", str(FIXTURE_MODELS / "classifier_not_detector.tflite"), "x.png")
    assert result.code == 1
    assert "does not look like an object detector" in result.err
    assert "[1, 5]" in result.err
    assert "Traceback" not in result.err


def test_an_edgetpu_model_without_the_tpu_says_what_to_install() -> None:
    result = run_cli("detect", "--model", str(FIXTURE_MODELS / "fake_edgetpu_edgetpu.tflite"), "x.png")
    assert result.code == 1
    assert "compiled for the Edge TPU" in result.err
    assert "detector.edgetpu" in result.err
    assert "libedgetpu1-std" in result.err
    assert "Traceback" not in result.err


def test_asking_for_an_edgetpu_that_is_not_installed_names_the_package() -> None:
    # This machine has no Coral and no libedgetpu: loading the delegate fails as it would on a
    # Pi without the runtime installed.
    result = run_cli(
        "detect", "--edgetpu", "usb", "--model", str(FIXTURE_MODELS / "fake_edgetpu_edgetpu.tflite"), "x.png"
    )
    assert result.code == 1
    assert "cannot open the Edge TPU (usb)" in result.err
    assert "libedgetpu1-std" in result.err and "plugdev" in result.err


def test_a_bad_edgetpu_device_string_is_a_usage_error() -> None:
    result = run_cli(
        "detect", "--edgetpu", "usb0", "--model", str(FIXTURE_MODELS / "yolov8_layout_f32.tflite"), "x"
    )
    assert result.code == 2
    assert "usb, usb:N, pci or pci:N" in result.err


def test_labels_that_do_not_match_the_classes_fail_at_start(tmp_path: Path) -> None:
    labels = tmp_path / "two.txt"
    labels.write_text("red\ngreen\n")
    result = run_cli(
        "detect",
        "--model",
        str(FIXTURE_MODELS / "yolov8_layout_f32.tflite"),
        "--labels",
        str(labels),
        "x.png",
    )
    assert result.code == 1
    assert "has 3 classes but the labels" in result.err and "name 2" in result.err


def test_a_file_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "model.tflite"
    fake.write_bytes(b"<html>404 not found</html>")
    result = run_cli("detect", "--model", str(fake), "x.png")
    assert result.code == 1
    assert "is not a TensorFlow Lite model" in result.err


def test_a_truncated_model_is_refused(tmp_path: Path) -> None:
    data = (FIXTURE_MODELS / "yolov8_layout_f32.tflite").read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(data[: len(data) // 2])
    result = run_cli("detect", "--model", str(cut), "x.png")
    assert result.code == 1
    assert "Traceback" not in result.err
    assert str(cut) in result.err


def test_a_missing_model_is_a_usage_error() -> None:
    result = run_cli("detect", "--model", "/nonexistent/model.tflite", "x.png")
    assert result.code == 2
    assert "model file /nonexistent/model.tflite does not exist" in result.err


def test_a_corrupt_image_among_good_ones_is_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    image = cv2.imread(str(FIXTURE_MODELS / "yolov5_layout_uint8.png"))
    cv2.imwrite(str(folder / "a.png"), image)
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    cv2.imwrite(str(folder / "c.png"), image)
    result = run_cli(
        "detect", "--json", "--model", str(FIXTURE_MODELS / "yolov5_layout_uint8.tflite"), str(folder)
    )
    assert result.code == 0, result.err
    assert [Path(line["image"]).name for line in result.json_lines()] == ["a.png", "c.png"]
    assert "b.jpg" in result.err


def test_class_filter_and_label_map_through_the_config(tmp_path: Path) -> None:
    from agent.config.detector import DetectorSettings
    from agent.detect.detector import Detector

    model = str(FIXTURE_MODELS / "yolov5_layout_uint8.tflite")
    image = cv2.imread(str(FIXTURE_MODELS / "yolov5_layout_uint8.png"))
    detector = Detector(
        DetectorSettings(
            model=model, label_map={"red": "fire"}, classes=["fire", "blue"], class_thresholds={"blue": 0.95}
        )
    )
    detections = detector.detect(image)
    assert detections.label_names() == ["fire"]  # green filtered out, blue below its own threshold


def test_label_files_of_every_shipped_form() -> None:
    assert parse_label_lines("background\nb'nozzle'\nb'raft'\n") == (["background", "nozzle", "raft"], 1)
    assert parse_label_lines("???\nperson\nbicycle\n") == (["???", "person", "bicycle"], 1)
    assert parse_label_lines("0 person\n1 car\n") == (["person", "car"], 0)
    meta = {"metadata.json": json.dumps({"names": {"0": "a", "1": "b"}}).encode()}
    assert labels_from_embedded(meta) == (["a", "b"], 0)
    legacy = {"temp_meta.txt": b"{'names': {0: 'x', 1: 'y'}, 'stride': 32}"}
    assert labels_from_embedded(legacy) == (["x", "y"], 0)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1352, 900), (640, 426, 107, 107, 0, 0)),
        ((480, 640), (480, 640, 0, 0, 80, 80)),
        ((640, 640), (640, 640, 0, 0, 0, 0)),
    ],
)
def test_letterbox_geometry_matches_ultralytics(size: tuple[int, int], expected: tuple[int, ...]) -> None:
    assert letterbox_geometry(size[0], size[1], 640, 640) == expected


def test_preprocess_quantises_with_the_tensors_own_parameters() -> None:
    from agent.detect.preprocess import Preprocessor

    pre = Preprocessor(
        (1, 4, 4, 3), np.dtype(np.int8), (2 / 255, -64), letterbox=False, rgb=True, mean=[0.0], std=[255.0]
    )
    image = np.full((4, 4, 3), 255, dtype=np.uint8)
    tensor, _ = pre(image)
    assert tensor.dtype == np.int8
    assert int(tensor.max()) == 127 - 64 + 1  # 1.0 / (2/255) = 127.5 -> 128 - 64 = 64


@pytest.mark.parametrize(
    ("rows", "labels", "kind"),
    [
        (300, 80, "yolo_end2end"),  # YOLO26n / YOLOv10n exported by Ultralytics: top 300, no NMS
        (300, 1, "yolo_end2end"),  # one class: 300 rows is not a YOLOv5 grid of a 640 input
        (300, None, "yolo_end2end"),
        (25200, 1, "yolov5"),  # one-class YOLOv5 at 640: 3 anchors x (80^2 + 40^2 + 20^2)
        (25200, 2, "yolov5"),  # [1, 25200, 7]: two classes (the column count differs)
        (25500, 1, "yolov5"),  # one-class YOLOv5 P6 (a stride-64 grid too)
        (8400, 2, "yolov8"),  # two-class YOLOv8, channels last: [1, 8400, 6]
        (8400, None, "yolov8"),  # no labels: [1, 8400, 6] is a grid of one row per cell
    ],
)
def test_an_nms_free_head_is_told_from_a_one_class_yolov5_head(
    rows: int, labels: int | None, kind: str
) -> None:
    """Both are one [1, K, 6] tensor when YOLOv5 has one class: the row count decides."""
    cols = 6 if kind != "yolov5" or labels == 1 else 5 + (labels or 0)
    output = OutputTensor(0, "out", (1, rows, cols), np.dtype(np.float32), 0.0, 0)
    layout = detect_layout([output], has_postprocess_op=False, num_labels=labels, input_hw=(640, 640))
    assert layout.kind == kind


def test_an_nms_free_head_skips_rows_that_are_not_numbers() -> None:
    """NaN or infinite rows (seen in some exports past the real candidates) are never detections
    and do not decide whether the boxes are normalised."""
    table = np.array(
        [[0.1, 0.1, 0.3, 0.4, 0.9, 2.0], [np.nan, 0.1, 0.2, 0.2, 0.8, np.nan], [np.inf, 0, 1, 1, 0.7, 1.0],
         [0.5, 0.5, 0.6, 0.7, 0.6, 0.0], [0.0, 0.0, 0.0, 0.0, 0.01, 0.0]],
        dtype=np.float32,
    )  # fmt: skip
    output = OutputTensor(0, "out", (1, 5, 6), np.dtype(np.float32), 0.0, 0)
    cand = decode_end2end(table[None], output, 0.25)
    assert cand.normalized
    assert cand.class_id.tolist() == [2, 0] and cand.score.tolist() == pytest.approx([0.9, 0.6])
    np.testing.assert_allclose(cand.xyxy, [[0.1, 0.1, 0.3, 0.4], [0.5, 0.5, 0.6, 0.7]], rtol=1e-6)


def test_a_channels_first_input_is_refused_with_how_to_fix_it() -> None:
    with pytest.raises(ValueError, match=r"\[1, 3, 640, 640\].*channels-first.*NHWC"):
        Preprocessor(
            (1, 3, 640, 640), np.dtype(np.float32), (0.0, 0), letterbox=True, rgb=True, mean=None, std=None
        )
