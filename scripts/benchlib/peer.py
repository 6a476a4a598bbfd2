"""The peer: Ultralytics' own predict on the same YOLOv8n int8 model and frames as the agent.

Ultralytics (and the PyTorch it needs) is never a dependency of edge-agent: the peer runs in a
separate virtualenv whose Python is given with ``--peer-python`` (docs/performance.md has the
recipe). Each peer run is a child process (``peer_child.py``), like each agent run, in the same
interleaved rounds; the bench compares throughput, start-up time (process start to the first
result) and peak RSS, and checks that both found the same objects: a peer box is matched by an
agent box of the same class at IoU >= 0.5 (greedy, best score first, one agent box per peer box).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PEER_MODEL = "yolov8n"  # the one model both run
MATCH_IOU = 0.5
TARGET_PEER_RATIO = 2.0
CHILD = Path(__file__).resolve().parent / "peer_child.py"


def peer_environment(work: Path) -> dict[str, str]:
    """The peer's environment: ours, with Ultralytics kept offline, quiet and its settings file in
    the bench's work folder (not the user's home)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(YOLO_OFFLINE="1", YOLO_VERBOSE="False", YOLO_CONFIG_DIR=str(work / "ultralytics-config"))
    return env


def check_peer(python: Path | None, work: Path) -> tuple[str | None, str | None]:
    """``(ultralytics version, None)`` when ``python`` imports Ultralytics, else ``(None, why the
    peer is skipped)``."""
    if python is None:
        return (
            None,
            "no --peer-python given (a virtualenv's python with ultralytics: see docs/performance.md)",
        )
    if not python.exists():
        return None, f"--peer-python {python} does not exist"
    try:
        proc = subprocess.run(
            [str(python), "-c", "import ultralytics; print(ultralytics.__version__)"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env=peer_environment(work),
        )
    except OSError as exc:
        return None, f"--peer-python {python} does not run: {exc}"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        return None, f"ultralytics does not import with {python}: {last}"
    return proc.stdout.strip(), None


def run_peer(
    python: Path, model: Path, frames_dir: Path, params: dict[str, Any], work: Path, timeout_s: float = 3600.0
) -> dict[str, Any]:
    """One peer run in its own process on every frame of ``frames_dir``, with the agent's
    detection ``params`` (score_threshold, iou_threshold, max_detections, class_agnostic)."""
    work.mkdir(parents=True, exist_ok=True)
    result_path = work / "peer-result.json"
    result_path.unlink(missing_ok=True)
    spec = {
        "model": str(model),
        "source": str(frames_dir),
        "conf": params["score_threshold"],
        "iou": params["iou_threshold"],
        "max_det": params["max_detections"],
        "agnostic_nms": params.get("class_agnostic", False),
        "result": str(result_path),
    }
    spec_path = work / "peer-spec.json"
    log_path = work / "peer.log"
    spec["launched_s"] = time.monotonic()
    spec_path.write_text(json.dumps(spec, indent=2))
    with open(log_path, "wb") as log_file:
        proc = subprocess.run(
            [str(python), "-I", str(CHILD), str(spec_path)],  # -I: benchlib's folder not on its path
            stdout=log_file,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
            check=False,
            cwd=work,
            env=peer_environment(work),
        )
    if proc.returncode != 0 or not result_path.exists():
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the peer run failed (exit {proc.returncode}); its log ends with:\n{tail}")
    result: dict[str, Any] = json.loads(result_path.read_text())
    result["settings"] = {k: spec[k] for k in ("conf", "iou", "max_det", "agnostic_nms")}
    return result


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes ``a`` [N,4] and ``b`` [M,4] (x1, y1, x2, y2)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_frame(agent: Sequence[Sequence[float]], peer: Sequence[Sequence[float]]) -> list[float]:
    """IoUs of the peer boxes matched by an agent box of the same class at IoU >= 0.5: each peer
    box, best score first, takes the unmatched agent box it overlaps most. Rows are
    ``[x1, y1, x2, y2, class_id, score]``."""
    if not agent or not peer:
        return []
    a = np.asarray(agent, dtype=np.float64)
    p = np.asarray(peer, dtype=np.float64)
    p = p[np.argsort(-p[:, 5], kind="stable")]
    iou = _iou(p[:, :4], a[:, :4])
    iou[p[:, 4][:, None] != a[:, 4][None, :]] = 0.0
    taken = np.zeros(len(a), dtype=bool)
    matched = []
    for row in iou:
        row = np.where(taken, 0.0, row)
        j = int(np.argmax(row))
        if row[j] >= MATCH_IOU:
            taken[j] = True
            matched.append(float(row[j]))
    return matched


def agreement(agent: dict[str, list[list[float]]], peer: dict[str, list[list[float]]]) -> dict[str, Any]:
    """How far the agent's and the peer's detections on the same frames agree."""
    ious: list[float] = []
    names = sorted(set(agent) & set(peer))
    for name in names:
        ious += match_frame(agent[name], peer[name])
    agent_boxes = sum(len(agent[n]) for n in names)
    peer_boxes = sum(len(peer[n]) for n in names)
    most = max(agent_boxes, peer_boxes)
    return {
        "frames_compared": len(names),
        "agent_boxes": agent_boxes,
        "peer_boxes": peer_boxes,
        "matched": len(ious),
        "match_iou": MATCH_IOU,
        # matched pairs over the larger of the two counts: 1.0 = the same objects, no extras either side
        "share": round(len(ious) / most, 4) if most else 1.0,
        "median_iou": round(float(np.median(ious)), 4) if ious else None,
    }


def summarize_peer(peer: dict[str, Any], frames: int, rate_fps: float) -> dict[str, Any]:
    """One peer run for the report (rate computed by the caller as for the agent)."""
    n = max(1, len(peer["done_s"]))
    return {
        "processed": len(peer["done_s"]),
        "frames": frames,
        "fps": round(rate_fps, 2),
        "startup_s": peer["first_result_s"],
        "ready_s": peer["ready_s"],
        "peak_rss_mb": round(peer["vm_hwm_kb"] / 1024, 1),
        "cpu_ms_per_frame": round(peer["cpu_s"] * 1000.0 / n, 2),
        "interpreter_threads": peer["interpreter_threads"],
        "ultralytics": peer["ultralytics"],
        "settings": peer["settings"],
    }


def every_frame_kept_and_published(run: dict[str, Any]) -> bool:
    """The agent run the peer is compared with kept every frame and, with MQTT on, had every
    message acknowledged (three a frame, none left in the outbox)."""
    mqtt = run.get("mqtt")
    all_kept = run["kept"] == run["processed"] == run["frames"]
    published = (
        mqtt is not None and (mqtt.get("acked") or 0) >= 3 * run["frames"] and mqtt.get("left_in_outbox") == 0
    )
    return bool(all_kept and published)


def peer_ratio(agent_fps: float, peer_fps: float) -> float | None:
    """Agent throughput over the peer's, rounded down to 0.01 (None without a peer rate)."""
    return int(agent_fps / peer_fps * 100) / 100 if peer_fps > 0 else None
