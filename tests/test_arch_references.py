"""Our per-architecture reference detections stay anchored to ../shared's x86_64 references.

tests/fixtures/reference/<machine>/ holds the expectations for a runtime whose kernels legitimately
give other outputs on that architecture (made there by scripts/make_arch_references.py). They are
checked on every machine against the x86_64 reference they replace: the same model, images and
image sizes, and every detection within ``ARCH_DRIFT`` (the largest move measured, with a margin),
so that an architecture's truth can never quietly become something else.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.detect.answer_compare import compare_answers
from agent.detect.known_answers_file import Answer
from tests.reference_cases import ARCH_DRIFT, ARCH_REFERENCES, SHARED_CASES, shared_reference

ARCH_FILES = sorted(ARCH_REFERENCES.glob("*/*.json"))
FIELDS = ("class_id", "label", "score", "box_xyxy")


def case_of(path: Path) -> tuple[str, str]:
    """(case, runtime) of an architecture's reference file, by its file name."""
    for case, (_model, pattern, _images, _flags) in SHARED_CASES.items():
        for runtime in ("ai_edge_litert", "tflite_runtime"):
            if Path(pattern.format(runtime=runtime)).name == path.name:
                return case, runtime
    raise AssertionError(f"{path.name} names no reference case of tests/reference_cases.py")


def answers(detections: list[dict[str, object]]) -> list[Answer]:
    return [Answer(**{k: d[k] for k in FIELDS}) for d in detections]  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ARCH_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_an_architectures_reference_stays_near_the_x86_64_one(shared_dir: Path, path: Path) -> None:
    case, runtime = case_of(path)
    ours = json.loads(path.read_text())
    x86 = json.loads(shared_reference(shared_dir, case, runtime).read_text())
    assert ours["sha256"] == x86["sha256"] and ours["runtime"] == runtime == x86["runtime"]
    assert ours["machine"] == path.parent.name
    sizes = [(e["image"], e["width"], e["height"]) for e in ours["images"]]
    assert sizes == [(e["image"], e["width"], e["height"]) for e in x86["images"]]
    flags = SHARED_CASES[case][3]
    threshold = float(flags[flags.index("--threshold") + 1])
    for mine, theirs in zip(ours["images"], x86["images"], strict=True):
        comparison = compare_answers(
            answers(theirs["detections"]), answers(mine["detections"]), ARCH_DRIFT, threshold
        )
        assert comparison.ok, f"{mine['image']}: {comparison.differences()}"
