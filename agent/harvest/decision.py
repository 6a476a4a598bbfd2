"""What the harvest stage hands back: the keep decision for a frame, the evictions to carry out, and
the events that carry an eviction out on the output thread (``agent.harvest.stage``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

NO_DETECTION_LABEL = "(none)"
# A frame an alert points at is kept whatever the policies say (the reviewer must see it).
REASON_ALERT = "alert"
# Why a frame was not kept, besides the vetoes' own names.
DROP_GATE_SKIPPED = "gate_skipped"
DROP_NO_REASON = "no_reason"
DROP_LOW_DISK = "low_disk"


class TriggerJson(TypedDict):
    """A trigger as harvest.json shows it."""

    policy: str
    label: str
    score: float


@dataclass(frozen=True, slots=True)
class Trigger:
    """A detection that made a reason policy fire: ``policy`` (``uncertainty`` or ``detection``),
    its ``label`` and ``score`` (0..1)."""

    policy: str
    label: str
    score: float

    def to_json(self) -> TriggerJson:
        """The JSON record (score rounded to 4 places)."""
        return {"policy": self.policy, "label": self.label, "score": round(self.score, 4)}


@dataclass(frozen=True, slots=True)
class KeepDecision:
    """Whether to keep a frame for labelling, and why.

    ``keep``: write and publish this frame. ``reasons``: when kept, the reason policies that fired
    (``all``, ``detection``, ``uncertainty``, ``change``) or ``alert``; when not, why not (veto
    names, ``no_reason``, ``low_disk``, ``gate_skipped``). ``triggers``: for ``uncertainty`` and
    ``detection``, the detections that fired them (at most each policy's ``max_reported``).
    ``labels``: the frame's detected labels, sorted (``(none)`` without detections).
    """

    keep: bool
    reasons: tuple[str, ...]
    triggers: tuple[Trigger, ...] = ()
    labels: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class Eviction:
    """A kept frame that no longer fits (``cause`` ``quota``) or is too old (``age``).

    The caller takes it out of whatever lists it (the VoTT writer: its project, via ``paths[0]``,
    the image) and then confirms with ``Harvester.confirm_evicted``, which deletes the files still
    there and forgets the frame. ``paths`` are in the order the writer recorded them."""

    frame_id: str
    paths: tuple[str, ...]
    cause: str
    size_bytes: int
    labels: tuple[str, ...]
    synced: bool


@dataclass(frozen=True, slots=True)
class FrameEvicted:
    """Event: the disk quota (or retention) dropped a kept frame; take it out of the project.
    ``eviction.paths``: its files, picture first."""

    eviction: Eviction


@dataclass(frozen=True, slots=True)
class EvictionDone:
    """Event: the frame is out of the project; ``keep_files``: a reviewer's frame whose files stay."""

    eviction: Eviction
    keep_files: bool = False
