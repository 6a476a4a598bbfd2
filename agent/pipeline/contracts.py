"""What the pipeline needs of its source, detector and gate, and what it hands ``on_result``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from agent.detections import Detections
from agent.flow import Outputs
from agent.frames import Frame, FrameResult


class FrameSourceLike(Protocol):
    """What the pipeline needs of a source (see ``agent.sources``)."""

    def __iter__(self) -> Any: ...

    def close(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...


class DetectorLike(Protocol):
    """What the pipeline needs of a detector (see ``agent.detect.detector``)."""

    runtime: str
    labels: tuple[str, ...]

    @property
    def name(self) -> str: ...

    def detect(self, image: Any, timings: dict[str, float] | None = None) -> Detections: ...


class GateLike(Protocol):
    """The change gate: decides whether a frame is worth running the detector on."""

    def should_infer(self, frame: Frame, now: float) -> tuple[bool, str]: ...


@dataclass(frozen=True, slots=True)
class HandledFrame:
    """A result after the output stages: their ``outputs`` and the wall time each took (ms)."""

    result: FrameResult
    outputs: Outputs
    stage_ms: dict[str, float]
