#!/usr/bin/env python3
"""What the known-answer check adds to a start, in ms, beside what a start costs anyway.

For each model, on each installed runtime: the median wall time of building the detector with its
warm-up inference (the baseline: every start pays it) and of the known-answer check that follows it
(model sha256, frame decode, one inference, decode, comparison), over ``--repeat`` runs in this
process. Models: the bundled one (shipped answers) and, with ../shared, Print Nanny's SSD and
YOLOv8n (answers recorded in a temporary data folder, then compared).

    .venv/bin/python scripts/known_answer_cost.py [--repeat 15] [--json cost.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from agent.bundled import BUNDLED_MODEL
from agent.config.detector import DetectorSettings
from agent.detect.detector import Detector
from agent.detect.known_answer import known_answer
from agent.detect.platform_facts import cpu_description
from agent.detect.runtime import installed_runtimes, runtime_version

SHARED = Path(os.environ.get("EDGE_AGENT_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))


def models() -> dict[str, Path]:
    """The models to measure that are present here."""
    found = {"bundled print3d-guidance": BUNDLED_MODEL}
    for name, rel in (
        ("Print Nanny print3d SSD", "models/print3d/print3d_2020-10-23_ssd_uint8.tflite"),
        ("YOLOv8n int8", "models/yolov8n_full_integer_quant_u8.3.172.tflite"),
    ):
        if (SHARED / rel).is_file():
            found[name] = SHARED / rel
    return found


def measure(model: Path, runtime: str, repeat: int, data_dir: Path) -> dict[str, Any]:
    """Median ms of detector build + warm-up and of the check after it."""
    settings = DetectorSettings(model=str(model), runtime=runtime, num_threads=1)
    known_answer(Detector(settings), data_dir=data_dir)  # records answers where none ship
    build, check, status = [], [], ""
    for _ in range(repeat):
        started = time.perf_counter()
        detector = Detector(settings)
        built = time.perf_counter()
        result = known_answer(detector, data_dir=data_dir)
        build.append((built - started) * 1000.0)
        check.append((time.perf_counter() - built) * 1000.0)
        status = f"{result.status} ({result.source})"
    return {
        "runtime": f"{runtime} {runtime_version(runtime)}",
        "model_mb": round(model.stat().st_size / 1e6, 2),
        "build_and_warm_up_ms": round(statistics.median(build), 1),
        "check_ms": round(statistics.median(check), 1),
        "check_ms_min_max": [round(min(check), 1), round(max(check), 1)],
        "status": status,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure and print a table (and JSON with ``--json``)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {cpu_description()}, Python {platform.python_version()}"
    print(f"machine: {machine}; median of {args.repeat} starts, 1 thread")
    rows = []
    with tempfile.TemporaryDirectory() as data:
        for name, model in models().items():
            for runtime in [r for r in installed_runtimes() if r != "tensorflow"]:
                row = {"model": name, **measure(model, runtime, args.repeat, Path(data))}
                rows.append(row)
                print(
                    f"  {name:<26} {row['runtime']:<22} start (build + warm-up) {row['build_and_warm_up_ms']:7.1f} ms"
                    f"   known-answer check {row['check_ms']:6.1f} ms   {row['status']}"
                )
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine, "repeat": args.repeat, "rows": rows}, indent=1) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
