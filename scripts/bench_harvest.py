#!/usr/bin/env python3
"""CPU cost of the harvest stage per frame: ``decide`` + ``record_kept`` (+ the eviction that follows),
for the harvest of this checkout and, in the same run, a baseline taken from git.

    .venv/bin/python scripts/bench_harvest.py                       # baseline 0c1ba2d (the JSONL store)
    .venv/bin/python scripts/bench_harvest.py --baseline REV --frames 3000 --json out.json

Each scenario feeds the same generated frames (640 x 480, a few detections) to both implementations,
writes each kept frame's files (an image and an asset JSON, as the VoTT writer would; not timed) and
times only the harvest calls with the thread's CPU clock. The quota is small enough that every new
frame evicts an old one after the first hundred (the steady state of a full disk); the broker
acknowledges each frame ten frames after it was kept (``mark_synced``, timed separately). The two
implementations alternate in rounds (``--rounds``) and the median round is reported, so both see
the same machine state. Prints the machine, then one line per scenario and implementation.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.config.harvest import HarvestSettings  # noqa: E402
from agent.detections import Detections  # noqa: E402
from agent.frames import Frame, FrameResult  # noqa: E402

DEFAULT_BASELINE = "0c1ba2d"  # the last commit with agent/harvest.py and its JSONL journal
LABELS = ("nozzle", "raft", "print", "spaghetti")
SCENARIOS: dict[str, dict[str, Any]] = {
    "all+quota": {"policies": ["all"]},
    "duplicate+quota": {"policies": ["duplicate"]},
}


@dataclass
class Timing:
    """CPU milliseconds per frame of one run."""

    keep_ms: float  # decide + record_kept + eviction
    synced_ms: float  # mark_synced, per acknowledged frame
    kept: int
    evicted: int


def load_baseline(rev: str, folder: Path) -> ModuleType:
    """``agent/harvest.py`` as it was at ``rev``, imported as a module of its own."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:agent/harvest.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = folder / "harvest_baseline.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("harvest_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def open_baseline(module: ModuleType, settings: HarvestSettings, folder: Path) -> Any:
    """The baseline's harvester, its JSONL journal in ``folder``."""
    return module.Harvester(settings, folder, index_path=folder / "harvest-index.jsonl")


def open_current(settings: HarvestSettings, folder: Path) -> Any:
    """This checkout's harvester, its SQLite index in ``folder``."""
    from agent.harvest import Harvester

    return Harvester(settings, folder, index_path=folder / "harvest-index.sqlite3")


def make_results(count: int, seed: int = 7) -> list[FrameResult]:
    """Frames of a slowly changing scene with a few detections, some of them unsure."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    results = []
    for index in range(count):
        image = base.copy()
        x = (index * 7) % 560
        image[100:180, x : x + 80] = (index * 13) % 256
        n = int(rng.integers(2, 6))
        scores = rng.uniform(0.3, 0.95, n)
        classes = rng.integers(0, len(LABELS), n)
        boxes = np.tile(np.array([[10.0, 10.0, 90.0, 90.0]], dtype=np.float32), (n, 1))
        frame = Frame(
            image=image, source_id="cam", sequence=index, timestamp=1.7e9 + index, name=f"{index:06d}"
        )
        results.append(FrameResult(frame, Detections.create(boxes, scores, classes, LABELS), "m", "cpu", 1.0))
    return results


def write_files(folder: Path, frame_id: str, payload: bytes) -> list[Path]:
    """What the VoTT writer leaves for a kept frame: the image and its asset JSON."""
    image = folder / f"{frame_id}.jpg"
    asset = folder / f"{frame_id}-asset.json"
    image.write_bytes(payload)
    asset.write_text('{"asset": {}, "regions": []}')
    return [image, asset]


def run_once(make: Callable[[Path], Any], new_api: bool, results: list[FrameResult], folder: Path) -> Timing:
    """One pass of ``results`` through a fresh harvester; CPU time of the harvest calls only."""
    payload = bytes(20_000)
    harvester = make(folder)
    keep_ns = synced_ns = 0
    kept = evicted = acked = 0
    for index, result in enumerate(results):
        t0 = time.thread_time_ns()
        decision = harvester.decide(result, index * 0.1)
        keep_ns += time.thread_time_ns() - t0
        if decision.keep:
            frame_id = result.frame.frame_id
            paths = write_files(folder, frame_id, payload)
            t0 = time.thread_time_ns()
            evictions = harvester.record_kept(frame_id, paths, now=1.7e9 + index)
            if new_api:
                harvester.confirm_evicted(evictions)
            keep_ns += time.thread_time_ns() - t0
            kept += 1
            evicted += len(evictions)
        if index >= 10:
            t0 = time.thread_time_ns()
            harvester.mark_synced(results[index - 10].frame.frame_id)
            synced_ns += time.thread_time_ns() - t0
            acked += 1
    harvester.close()
    return Timing(keep_ns / 1e6 / len(results), synced_ns / 1e6 / max(acked, 1), kept, evicted)


def machine() -> dict[str, Any]:
    """What this ran on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def main() -> int:
    """Run the scenarios and print (and optionally save) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision of the baseline")
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-harvest-"))
    try:
        baseline = load_baseline(args.baseline, work)
        results = make_results(args.frames)
        info = machine()
        print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, {info['system']}")
        print(
            f"{args.frames} frames per run, {args.rounds} rounds, baseline {args.baseline}, CPU ms per frame"
        )
        report: dict[str, Any] = {
            "machine": info,
            "frames": args.frames,
            "baseline": args.baseline,
            "runs": {},
        }
        for name, policy in SCENARIOS.items():
            # ~100 kept frames' worth of files: from then on each new frame evicts an old one
            settings = HarvestSettings.model_validate({**policy, "quota_mb": 2.0, "min_free_mb": 0})
            makers: dict[str, tuple[Callable[[Path], Any], bool]] = {
                "baseline": (functools.partial(open_baseline, baseline, settings), False),
                "current": (functools.partial(open_current, settings), True),
            }
            rounds: dict[str, list[Timing]] = {key: [] for key in makers}
            for round_no in range(args.rounds):
                for key, (make, new_api) in makers.items():
                    folder = work / f"{name}-{key}-{round_no}"
                    folder.mkdir()
                    rounds[key].append(run_once(make, new_api, results, folder))
                    shutil.rmtree(folder)
            for key, timings in rounds.items():
                median = sorted(timings, key=lambda t: t.keep_ms)[len(timings) // 2]
                spread = statistics.pstdev(t.keep_ms for t in timings)
                print(
                    f"{name:30s} {key:9s} decide+record_kept {median.keep_ms:6.3f} ms/frame "
                    f"(rounds: {', '.join(f'{t.keep_ms:.3f}' for t in timings)}; sd {spread:.3f}), "
                    f"mark_synced {median.synced_ms:.3f} ms, kept {median.kept}, evicted {median.evicted}"
                )
                report["runs"][f"{name}/{key}"] = {
                    "keep_ms_per_frame": round(median.keep_ms, 4),
                    "rounds_keep_ms": [round(t.keep_ms, 4) for t in timings],
                    "mark_synced_ms": round(median.synced_ms, 4),
                    "kept": median.kept,
                    "evicted": median.evicted,
                }
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
