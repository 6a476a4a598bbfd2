"""The known-answers file: what a model must detect on a known frame, per runtime and machine.

``<model stem>.answers.json`` beside a model (and its card) holds the answers shipped with it;
``<model stem>.answers.recorded.json`` the answers this machine recorded the first time it ran a
model that shipped none. Both have the same format (docs/known-answers.md)::

    {"format": "edge-agent-known-answers/1",
     "model": {"file": "m.tflite", "sha256": "..."},
     "frame": {"path": "sample_timelapse/frame_000060.jpg", "sha256": "..."},
     "decode": {"score_threshold": 0.05, "max_detections": 100},
     "tolerance": {"score": 0.05, "iou": 0.8, "why": "..."},
     "answers": [{"runtime": "ai_edge_litert", "runtime_version": "*", "delegate": "none",
                  "delegate_version": "*", "machine": "*", "why": "...",
                  "recorded": {"at": "...Z", "runtime_version": "2.3.0", ...},
                  "detections": [{"class_id": 0, "label": "nozzle", "score": 0.9, "box_xyxy": [...]}]}]}

An entry applies to a platform when each of its runtime, runtime version, delegate, delegate
version and machine is the platform's or ``*``; the most specific entry wins. ``frame.path`` is
relative to the file's folder, or starts with ``{bundled}`` (the agent's own data folder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.bundled import BUNDLED_DATA
from agent.errors import UserError
from agent.fsutil import atomic_write_text

FORMAT: Literal["edge-agent-known-answers/1"] = "edge-agent-known-answers/1"
ANY = "*"
BUNDLED = "{bundled}"
SHIPPED_SUFFIX = ".answers.json"
RECORDED_SUFFIX = ".answers.recorded.json"
DEFAULT_FRAME = f"{BUNDLED}/sample_timelapse/frame_000060.jpg"
DEFAULT_TOLERANCE_WHY = (
    "Answers are kept per runtime and machine, so the same kernels give them again; what the "
    "tolerance absorbs is a runtime or delegate upgrade. The largest legitimate difference measured "
    "between two int8 kernel sets on the first bundled model was 0.033 in score and 3 px on a 60 px box "
    "(LiteRT vs tflite-runtime on x86_64, IoU 0.91; on the retrained one a weak raft box, 0.25, moves "
    "31 px between them, so each runtime keeps its own entry); silently wrong inference changes far "
    "more (0.9 -> nothing, or noise). Score 0.05 and IoU 0.8 keep a margin over the first and catch "
    "the second."
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Answer(_Strict):
    """One detection: model class id, label, score and box (x1, y1, x2, y2 in frame pixels)."""

    class_id: int
    label: str
    score: float = Field(ge=0.0, le=1.0)
    box_xyxy: list[float] = Field(min_length=4, max_length=4)

    def text(self) -> str:
        """e.g. ``nozzle 0.90 at [303,121,363,189]``."""
        box = ",".join(f"{v:.0f}" for v in self.box_xyxy)
        return f"{self.label} {self.score:.2f} at [{box}]"


class Recorded(_Strict):
    """Where and when an entry's answers were made (facts; not used for matching)."""

    at: str
    runtime_version: str
    delegate_version: str | None = None
    machine: str
    cpu: str
    agent_version: str


class AnswerEntry(_Strict):
    """The answers for the platforms this entry's keys match (``*`` matches anything)."""

    runtime: str
    runtime_version: str = ANY
    delegate: str = "none"
    delegate_version: str = ANY
    machine: str = ANY
    why: str | None = None
    recorded: Recorded
    detections: list[Answer]


class ModelRef(_Strict):
    """The model file the answers belong to."""

    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class FrameRef(_Strict):
    """The known frame: a path (relative to the answers file, or ``{bundled}/...``) and its sha256."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class DecodeSettings(_Strict):
    """How the check decodes: a low threshold, so that outputs collapsing to zeros show."""

    score_threshold: float = Field(default=0.05, ge=0.0, le=1.0)
    max_detections: int = Field(default=100, ge=1, le=1000)


class Tolerance(_Strict):
    """How far an answer may move and still count as the same: score difference and box IoU."""

    score: float = Field(default=0.05, gt=0.0, le=1.0)
    iou: float = Field(default=0.8, gt=0.0, le=1.0)
    why: str = DEFAULT_TOLERANCE_WHY


class KnownAnswers(_Strict):
    """A whole known-answers file."""

    format: Literal["edge-agent-known-answers/1"] = FORMAT
    model: ModelRef
    frame: FrameRef
    decode: DecodeSettings = Field(default_factory=DecodeSettings)
    tolerance: Tolerance = Field(default_factory=Tolerance)
    answers: list[AnswerEntry] = Field(default_factory=list)


@dataclass(frozen=True)
class Platform:
    """What runs the model here: runtime and version, delegate and version, machine and CPU."""

    runtime: str
    runtime_version: str
    delegate: str
    delegate_version: str | None
    machine: str
    cpu: str

    def text(self) -> str:
        """e.g. ``ai_edge_litert 2.3.0, no delegate, aarch64 (Cortex-A72)``."""
        delegate = "no delegate" if self.delegate == "none" else self.delegate
        if self.delegate_version:
            delegate += f" {self.delegate_version}"
        return f"{self.runtime} {self.runtime_version}, {delegate}, {self.machine} ({self.cpu})"


Match = Literal["exact", "upgrade"]
_KEYS = ("runtime", "runtime_version", "delegate", "delegate_version", "machine")


def _fits(entry: AnswerEntry, platform: Platform, keys: tuple[str, ...]) -> bool:
    return all(getattr(entry, k) in (ANY, getattr(platform, k) or "none") for k in keys)


def select_entry(answers: KnownAnswers, platform: Platform) -> tuple[AnswerEntry, Match] | None:
    """The entry to compare with: the most specific one whose keys all fit (``exact``); else, when
    only the versions differ, the newest one for this runtime, delegate and machine (``upgrade``:
    the runtime or delegate was upgraded since it was recorded); else None."""
    same_kind = [e for e in answers.answers if _fits(e, platform, ("runtime", "delegate", "machine"))]
    exact = [e for e in same_kind if _fits(e, platform, _KEYS)]
    if exact:
        best = max(exact, key=lambda e: (sum(getattr(e, k) != ANY for k in _KEYS), e.recorded.at))
        return best, "exact"
    if same_kind:
        return max(same_kind, key=lambda e: e.recorded.at), "upgrade"
    return None


def frame_path(answers_file: Path, frame: FrameRef) -> Path:
    """Where the known frame is: ``{bundled}/...`` in the agent's data folder, else relative to the
    answers file's folder (or absolute)."""
    if frame.path.startswith(BUNDLED):
        return BUNDLED_DATA / frame.path[len(BUNDLED) :].lstrip("/")
    return answers_file.parent / frame.path


def load_answers(path: Path) -> KnownAnswers:
    """Read and validate a known-answers file; a damaged one is a ``UserError`` naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return KnownAnswers.model_validate(data)
    except OSError as exc:
        raise UserError(f"cannot read known answers {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise UserError(
            f"known answers {path} is not valid JSON (line {exc.lineno}: {exc.msg}); "
            "restore it, or delete it so that the answers are recorded again"
        ) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(
            f"known answers {path}: {where}: {first['msg']} ({len(exc.errors())} problem(s)); "
            "see docs/known-answers.md, or delete a recorded file so that it is recorded again"
        ) from None


def save_answers(path: Path, answers: KnownAnswers) -> None:
    """Write a known-answers file atomically (creating its folder); raises ``OSError``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(answers.model_dump(exclude_none=True), indent=1) + "\n")
