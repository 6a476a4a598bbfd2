"""The pipeline's counters and the stats it reports (``agent.stats.PipelineStats`` plus each
stage's own under its name), as a dict and as the periodic log lines."""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.flow import Stage
from agent.pipeline.contracts import DetectorLike, FrameSourceLike
from agent.stats import PipelineStats

log = logging.getLogger(__name__)


@dataclass
class Counters:
    """Frame counts since start; read by the stats reporter from another thread."""

    captured: int = 0
    dropped: int = 0
    skipped: int = 0
    processed: int = 0
    kept: int = 0
    detector_errors: int = 0
    detector_restarts: int = 0
    stage_errors: dict[str, int] = field(default_factory=dict)
    inference_ms: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    completed_at: deque[float] = field(default_factory=lambda: deque(maxlen=200))


def pipeline_stats(
    counters: Counters,
    *,
    started: float,
    queues: tuple[int, int],
    source: FrameSourceLike,
    detector: DetectorLike,
    stages: Sequence[Stage],
) -> dict[str, Any]:
    """Counters, rates and queue depths now (``agent.stats.PipelineStats``); per-stage and source
    counters nested by name. ``started`` is the pipeline's monotonic start, ``queues`` the capture
    and result queue depths."""
    c = counters
    now = time.monotonic()
    recent = [t for t in c.completed_at if now - t <= 60.0]
    fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
    stats: PipelineStats = {
        "uptime_s": round(now - started, 1),
        "fps": round(fps, 2),
        "inference_ms": round(statistics.median(c.inference_ms), 2) if c.inference_ms else None,
        "frames": {
            "captured": c.captured,
            "dropped": c.dropped,
            "skipped": c.skipped,
            "processed": c.processed,
            "kept": c.kept,
            "detector_errors": c.detector_errors,
            "detector_restarts": c.detector_restarts,
        },
        "queues": {"capture": queues[0], "results": queues[1]},
        "stage_errors": dict(c.stage_errors),
        "source": _source_stats(source),
    }
    describe = getattr(detector, "describe", None)
    if describe is not None:
        stats["detector"] = describe()
    out: dict[str, Any] = dict(stats)
    for stage in stages:
        try:
            out[stage.name] = stage.stats()
        except Exception:
            out[stage.name] = {}
    return out


def _source_stats(source: FrameSourceLike) -> dict[str, int]:
    try:
        return dict(source.stats())
    except Exception:
        return {}


def log_stats(stats: dict[str, Any], stages: Sequence[Stage]) -> None:
    """The periodic log lines: the pipeline's figures, then each stage's ``summary_line``."""
    f = stats["frames"]
    log.info(
        "%.1f fps, inference %s ms, frames: %d captured, %d processed, %d kept, %d skipped, %d dropped; "
        "queues %d/%d",
        stats["fps"],
        stats["inference_ms"],
        f["captured"],
        f["processed"],
        f["kept"],
        f["skipped"],
        f["dropped"],
        stats["queues"]["capture"],
        stats["queues"]["results"],
    )
    for stage in stages:
        summary = getattr(stage, "summary_line", None)
        if summary is not None:
            try:
                log.info("%s", summary())
            except Exception:
                log.exception("summarising %s failed", stage.name)
