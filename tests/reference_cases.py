"""The reference-detection cases of tests/test_detect.py, and which reference file holds the truth.

``../shared/models`` holds reference detections made on x86_64. Where a runtime's kernels give
legitimately different outputs on another architecture (tflite-runtime 2.14's aarch64 int8 kernels),
our own expectations for that machine live in ``tests/fixtures/reference/<machine>/`` under the same
file name; ``scripts/make_arch_references.py`` makes them (see tests/fixtures/reference/README.md).
"""

from __future__ import annotations

import platform
from pathlib import Path

from agent.detect.known_answers_file import Tolerance

ARCH_REFERENCES = Path(__file__).resolve().parent / "fixtures" / "reference"

# (model file, reference file pattern, image folder, extra detect flags) in ../shared/models
SHARED_CASES = {
    "print3d": (
        "print3d/print3d_2020-10-23_ssd_uint8.tflite",
        "print3d/reference/reference_print3d.{runtime}.json",
        "print3d/images",
        ["--threshold", "0"],
    ),
    "coco_ssd": (
        "ssd_mobilenet_v1_coco_quant_detect.tflite",
        "reference/reference_ssd_mobilenet_v1_coco_quant.{runtime}.json",
        "images",
        ["--threshold", "0", "--labels", "{shared}/models/ssd_mobilenet_v1_coco_labelmap.txt"],
    ),
    "yolov8n": (
        "yolov8n_full_integer_quant_u8.3.172.tflite",
        "reference/reference_yolov8n_full_integer_quant_u8.3.172.{runtime}.json",
        "images",
        ["--threshold", "0.25", "--iou", "0.7", "--max-detections", "300"],
    ),
}

# How far another architecture's expectations may sit from the x86_64 reference (checked on every
# machine). Measured for tflite-runtime 2.14 aarch64 vs x86_64 under qemu (cortex-a72): scores move by
# up to 0.258 (a small, low-confidence person in kite_and_cold.jpg, 0.297 -> 0.555 with YOLOv8n) and
# matched boxes overlap by IoU 0.802 at worst (print3d's low-score top-K); a margin over both. Loose,
# yet an empty or noisy answer (what broken kernels give) is still far outside it.
ARCH_DRIFT = Tolerance(
    score=0.3,
    iou=0.75,
    why="tflite-runtime 2.14 aarch64 vs x86_64 under qemu: tests/fixtures/reference/README.md",
)


def shared_reference(shared: Path, case: str, runtime: str) -> Path:
    """../shared's reference file (made on x86_64) for ``case`` on ``runtime``."""
    return shared / "models" / SHARED_CASES[case][1].format(runtime=runtime)


def reference_file(shared: Path, case: str, runtime: str, machine: str | None = None) -> Path:
    """The truth for ``case`` on ``runtime`` on ``machine`` (default this one): ours for that
    architecture when we keep one, else ../shared's."""
    reference = shared_reference(shared, case, runtime)
    ours = ARCH_REFERENCES / (machine or platform.machine()) / reference.name
    return ours if ours.is_file() else reference
