#!/usr/bin/env python3
"""Make this machine's reference detections where its runtimes differ from ../shared's (x86_64).

For each reference case of tests/test_detect.py (tests/reference_cases.py) and each runtime, runs
``edge-agent detect --json`` with the test's flags on the reference's images, and compares with
../shared's reference by the test's rule (same label, IoU >= 0.9, score within 0.02). Where they
match, nothing is written (the shared reference holds here too); where they differ, the detections
are written to ``tests/fixtures/reference/<machine>/<reference file name>`` with the facts of how
they were made, and the drift from x86_64 is printed. Run it on the machine (or inside the emulated
root of scripts/arm64/check.py, with ``--shell``):

    .venv/bin/python scripts/make_arch_references.py --runtime tflite_runtime --runtime ai_edge_litert
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from agent.detect.answer_compare import compare_answers
from agent.detect.known_answers_file import Answer
from agent.detect.platform_facts import cpu_description
from agent.detect.runtime import runtime_version
from tests.helpers import match_detections
from tests.reference_cases import ARCH_DRIFT, ARCH_REFERENCES, SHARED_CASES, shared_reference

REPO = Path(__file__).resolve().parent.parent
FIELDS = ("class_id", "label", "score", "box_xyxy")


def detect(shared: Path, case: str, runtime: str, reference: dict[str, Any]) -> list[dict[str, Any]]:
    """``edge-agent detect --json`` lines for the reference's images, as the test runs it."""
    model, _pattern, images, flags = SHARED_CASES[case]
    paths = [str(shared / "models" / images / entry["image"]) for entry in reference["images"]]
    command = [sys.executable, "-m", "agent.cli", "detect", "--json", "--runtime", runtime]
    command += ["--model", str(shared / "models" / model), *[f.format(shared=shared) for f in flags], *paths]
    result = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def drift(reference: dict[str, Any], lines: list[dict[str, Any]], threshold: float) -> str:
    """How far these detections are from the x86_64 reference, and whether within ARCH_DRIFT."""
    worst_score, worst_iou, ok = 0.0, 1.0, True
    for entry, line in zip(reference["images"], lines, strict=True):
        expected = [Answer(**{k: d[k] for k in FIELDS}) for d in entry["detections"]]
        got = [Answer(**{k: d[k] for k in FIELDS}) for d in line["detections"]]
        comparison = compare_answers(expected, got, ARCH_DRIFT, threshold)
        worst_score = max(worst_score, comparison.largest_score_difference)
        worst_iou = min(worst_iou, comparison.smallest_iou)
        ok = ok and comparison.ok
    within = "within" if ok else "BEYOND"
    return f"largest score difference {worst_score:.3f}, smallest IoU {worst_iou:.3f} ({within} ARCH_DRIFT)"


def main(argv: list[str] | None = None) -> int:
    """Compare every case with ../shared's reference; write this machine's where they differ."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runtime", action="append", required=True, help="ai_edge_litert, tflite_runtime")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    args = parser.parse_args(argv)
    machine = platform.machine()
    for runtime in args.runtime:
        for case in sorted(SHARED_CASES):
            source = shared_reference(args.shared, case, runtime)
            reference = json.loads(source.read_text())
            lines = detect(args.shared, case, runtime, reference)
            flags = SHARED_CASES[case][3]
            threshold = float(flags[flags.index("--threshold") + 1])
            problems = [
                p
                for entry, line in zip(reference["images"], lines, strict=True)
                for p in match_detections(line["detections"], entry["detections"], threshold=threshold)
            ]
            target = ARCH_REFERENCES / machine / source.name
            if not problems:
                print(f"{case} {runtime}: matches the x86_64 reference; none needed here")
                target.unlink(missing_ok=True)
                continue
            print(
                f"{case} {runtime}: {len(problems)} difference(s) from x86_64, {drift(reference, lines, threshold)}"
            )
            made = {
                "model": reference.get("file") or reference["model"],
                "sha256": reference["sha256"],
                "runtime": runtime,
                "runtime_version": runtime_version(runtime),
                "machine": machine,
                "cpu": cpu_description(),
                "made_by": "scripts/make_arch_references.py (edge-agent detect --json, the test's flags)",
                "x86_64_reference": source.name,
                "differences_from_x86_64": problems[:20],
            }
            images = [
                {k: entry[k] for k in ("image", "width", "height")}
                | {"detections": [{k: d[k] for k in FIELDS} for d in line["detections"]]}
                for entry, line in zip(reference["images"], lines, strict=True)
            ]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(made | {"images": images}, indent=1) + "\n")
            print(f"  wrote {target.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
