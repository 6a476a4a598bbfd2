"""Ultralytics' own predict on a folder of frames, timed: the bench's peer, one run per process.

Run by ``scripts/bench.py`` with the peer's Python (a virtualenv with ``ultralytics``, passed as
``--peer-python``), never imported by it: this file needs only the standard library and
Ultralytics. It loads the model with ``YOLO(model, task="detect")``, runs
``predict(source=folder, stream=True)`` with the thresholds it is given (the agent's), and writes
when each frame's result came, the boxes of each frame, the start-up times, its CPU and its peak
RSS as JSON::

    /path/to/peer-venv/bin/python scripts/benchlib/peer_child.py spec.json
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any


def _peak_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main(spec_path: str) -> int:
    """Run the spec's predict; write the result JSON it names."""
    spec: dict[str, Any] = json.loads(Path(spec_path).read_text())
    t_main = time.monotonic()
    import ultralytics
    from ultralytics import YOLO
    from ultralytics.utils import NUM_THREADS

    model = YOLO(spec["model"], task="detect")
    t_loaded = time.monotonic()
    usage_start = resource.getrusage(resource.RUSAGE_SELF)
    done: list[float] = []
    detections: dict[str, list[list[float]]] = {}
    results = model.predict(
        source=spec["source"],
        stream=True,
        conf=spec["conf"],
        iou=spec["iou"],
        max_det=spec["max_det"],
        agnostic_nms=spec.get("agnostic_nms", False),
        imgsz=spec.get("imgsz", 640),
        verbose=False,
    )
    for result in results:
        done.append(time.monotonic())
        boxes = result.boxes
        rows = zip(boxes.xyxy.tolist(), boxes.cls.tolist(), boxes.conf.tolist(), strict=True)
        detections[Path(result.path).stem] = [
            [*(round(v, 2) for v in xyxy), int(cls), round(conf, 4)] for xyxy, cls, conf in rows
        ]
    usage_end = resource.getrusage(resource.RUSAGE_SELF)
    launched = float(spec["launched_s"])
    out = {
        "ultralytics": ultralytics.__version__,
        "python": sys.version.split()[0],
        "interpreter_threads": NUM_THREADS,
        "python_start_s": round(t_main - launched, 3),
        "ready_s": round(t_loaded - launched, 3),
        "first_result_s": round(done[0] - launched, 3) if done else None,
        "done_s": [round(t - launched, 5) for t in done],
        "cpu_s": round(
            usage_end.ru_utime + usage_end.ru_stime - usage_start.ru_utime - usage_start.ru_stime, 3
        ),
        "vm_hwm_kb": _peak_rss_kb(),
        "detections": detections,
    }
    Path(spec["result"]).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
