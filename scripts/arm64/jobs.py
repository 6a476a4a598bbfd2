"""The main job (``edge-agent run`` on the bundled demo) as the arm64 check runs and compares it.

``job_config(runtime)`` is the bundled default config with the runtime pinned; ``read_job(folder)``
reads what a finished run left in its output folder (every frame's detections and the alerts from
the MQTT outbox, the VoTT assets); ``compare_jobs(x86, arm64)`` pairs the two runs' detections
frame by frame: the same label, every box corner within the runtime's ``BOX_PX`` pixels and the
score within ``SCORE``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent.parent
DEFAULT_CONFIG = REPO / "agent" / "data" / "default.yaml"
# LiteRT's XNNPACK gives the same numbers on both architectures, so a pixel is all it may move.
# tflite-runtime's aarch64 int8 kernels differ from x86_64's by a quantisation step now and then
# (tests/fixtures/reference/aarch64/); on the bundled demo that swaps which of two raft candidates
# with the same score NMS keeps in one frame of 90: the box moves 5.15 px sideways.
BOX_PX = {"ai_edge_litert": 1.0, "tflite_runtime": 6.0}
SCORE = 0.02


def job_config(runtime: str) -> str:
    """The bundled default config (``{bundled}`` paths kept) with ``detector.runtime`` set, as YAML."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["detector"]["runtime"] = runtime
    return yaml.safe_dump(config, sort_keys=False)


@dataclass
class JobOutput:
    """What one run of the main job left behind."""

    detections: dict[str, list[dict[str, Any]]]  # frame id -> its detections
    alerts: list[dict[str, Any]]
    assets: int
    messages: int


def read_job(output_dir: Path) -> JobOutput:
    """Read a finished run's outbox (a copy: reading marks messages in flight) and VoTT project."""
    from agent.mqtt.outbox import Outbox

    with tempfile.TemporaryDirectory() as work:
        copy = Path(work) / "outbox.sqlite3"
        shutil.copy(output_dir / "mqtt-outbox.sqlite3", copy)
        files = output_dir / "mqtt-outbox.sqlite3.files"
        if files.is_dir():
            shutil.copytree(files, Path(work) / "outbox.sqlite3.files")
        box = Outbox(str(copy), max_bytes=10**12, max_age_s=10**9)
        try:
            stored = box.take(1_000_000)
        finally:
            box.close()
    detections: dict[str, list[dict[str, Any]]] = {}
    alerts = []
    for item in stored:
        topic = item.message.topic
        if topic.endswith("/detections"):
            body = json.loads(item.message.payload)
            detections[body["frame_id"]] = body["detections"]
        elif topic.endswith("/alerts"):
            alerts.append(json.loads(item.message.payload))
    project = json.loads(next((output_dir / "vott").glob("*.vott")).read_text())
    return JobOutput(detections, alerts, len(project["assets"]), len(stored))


@dataclass
class JobComparison:
    """Two runs, detection by detection: how far apart the pairs are and what found no partner."""

    box_px: float  # the limit for this runtime (``BOX_PX``)
    frames: int = 0
    detections: int = 0
    largest_box_px: float = 0.0
    largest_box_at: str = ""  # the frame, label and score of the pair furthest apart
    largest_score: float = 0.0
    unmatched: list[str] = field(default_factory=list)
    alerts: tuple[int, int] = (0, 0)
    assets: tuple[int, int] = (0, 0)
    messages: tuple[int, int] = (0, 0)

    @property
    def same(self) -> bool:
        """Every detection paired within the limits, the same alerts, assets and messages."""
        return (
            not self.unmatched
            and self.largest_box_px <= self.box_px
            and self.largest_score <= SCORE
            and self.alerts[0] == self.alerts[1]
            and self.assets[0] == self.assets[1]
            and self.messages[0] == self.messages[1]
        )

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "same_within_limits": self.same,
            "limits": {"box_px": self.box_px, "score": SCORE},
            "frames": self.frames,
            "detections": self.detections,
            "largest_box_difference_px": round(self.largest_box_px, 3),
            "largest_box_difference_at": self.largest_box_at,
            "largest_score_difference": round(self.largest_score, 4),
            "unmatched": self.unmatched[:10],
            "unmatched_count": len(self.unmatched),
            "alerts_x86_arm64": list(self.alerts),
            "vott_assets_x86_arm64": list(self.assets),
            "outbox_messages_x86_arm64": list(self.messages),
        }


def _corner_gap(a: dict[str, Any], b: dict[str, Any]) -> float:
    """The largest difference between the two detections' box coordinates, in pixels."""
    return float(max(abs(p - q) for p, q in zip(a["box_xyxy"], b["box_xyxy"], strict=True)))


def _pair(frame: str, mine: list[dict[str, Any]], theirs: list[dict[str, Any]], out: JobComparison) -> None:
    """Pair same-label detections closest first over the whole frame (pairing each of ``mine`` in
    turn with its closest could take another's twin: two boxes of one label, scores equal, 5 px apart)."""
    gaps = sorted(
        (_corner_gap(a, b), i, j)
        for i, a in enumerate(mine)
        for j, b in enumerate(theirs)
        if a["label"] == b["label"]
    )
    paired_mine: set[int] = set()
    paired_theirs: set[int] = set()
    for box, i, j in gaps:
        if i in paired_mine or j in paired_theirs:
            continue
        paired_mine.add(i)
        paired_theirs.add(j)
        if box > out.largest_box_px:
            out.largest_box_px = box
            out.largest_box_at = f"{frame}: {mine[i]['label']} {mine[i]['score']:.3f}"
        out.largest_score = max(out.largest_score, abs(mine[i]["score"] - theirs[j]["score"]))
        out.detections += 1
    out.unmatched += [
        f"{frame}: {d['label']} {d['score']:.3f} only on x86_64"
        for i, d in enumerate(mine)
        if i not in paired_mine
    ]
    out.unmatched += [
        f"{frame}: {d['label']} {d['score']:.3f} only on arm64"
        for j, d in enumerate(theirs)
        if j not in paired_theirs
    ]


def compare_jobs(x86: JobOutput, arm64: JobOutput, runtime: str) -> JobComparison:
    """Pair the detections of two runs of the same job, frame by frame (see the module docstring)."""
    out = JobComparison(
        box_px=BOX_PX[runtime],
        alerts=(len(x86.alerts), len(arm64.alerts)),
        assets=(x86.assets, arm64.assets),
        messages=(x86.messages, arm64.messages),
    )
    for frame in sorted(set(x86.detections) | set(arm64.detections)):
        out.frames += 1
        _pair(frame, x86.detections.get(frame, []), arm64.detections.get(frame, []), out)
    return out
