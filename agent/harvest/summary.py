"""Harvest counters, their typed shape (the ``harvest`` part of the stats message and harvest.json)
and the one-line summary for the log.

``frames`` counts every frame once: ``seen`` = ``skipped_inference`` (the change gate kept it from
the detector) + ``no_reason`` + ``vetoed`` + ``low_disk`` + ``selected`` (to be kept, by a policy
or an alert). Each selected frame is then ``kept`` (the writer recorded its files) or
``kept_reviewed`` (a reviewer changed its asset in VoTT, so the writer left it as saved and it stays
outside the quota). ``evicted`` counts frames whose files the store deleted after the writer took
them out of its project, ``synced`` those the broker acknowledged.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, NotRequired, TypedDict, cast

from agent.config.harvest import REASON_POLICIES
from agent.harvest.decision import DROP_LOW_DISK, DROP_NO_REASON, REASON_ALERT, Eviction, TriggerJson
from agent.harvest.policy import Judgement
from agent.harvest.store import KeptFrame
from agent.utc import utc_iso

_MB = 1024 * 1024


class FrameCounts(TypedDict):
    """Frames since start, by what became of them (see the module docstring)."""

    seen: int
    skipped_inference: int
    no_reason: int
    vetoed: int
    low_disk: int
    selected: int
    kept: int
    kept_reviewed: int
    evicted: int
    synced: int


class PolicyCounts(TypedDict, total=False):
    """Per policy: reasons ``fired`` and ``kept`` (the frame was kept), vetoes ``dropped``."""

    fired: int
    kept: int
    dropped: int


class LabelCounts(TypedDict):
    """Frames per detected label (``(none)``: frames without detections)."""

    seen: int
    kept: int
    evicted: int
    synced: int
    on_disk: int


class DiskStats(TypedDict):
    """What the store holds now."""

    frames_on_disk: int
    unsynced_on_disk: int
    bytes_on_disk: int
    quota_bytes: int
    evicted_by: dict[str, int]
    low_disk: bool


class GateStats(TypedDict):
    """The change gate's counts (``agent.gate.ChangeGate.stats``): frames it judged, inferred and
    skipped, and its decisions by reason."""

    enabled: bool
    frames: int
    inferred: int
    skipped: int
    skipped_share: float
    reasons: dict[str, int]


class HarvestStats(TypedDict):
    """The ``harvest`` stats: settings' policy list, counts, and the gate's when it runs."""

    policies: list[str]
    frames: FrameCounts
    policy_counts: dict[str, PolicyCounts]
    labels: dict[str, LabelCounts]
    disk: DiskStats
    gate: NotRequired[GateStats]


class KeptFrameReport(TypedDict):
    """Why one frame on disk was kept (harvest.json ``kept_frames``)."""

    frame_id: str
    kept_at: str
    reasons: list[str]
    triggers: list[TriggerJson]
    labels: list[str]
    synced: bool


class HarvestSummary(HarvestStats):
    """harvest.json: the stats, the settings, and why the newest kept frames were kept."""

    generated_at: str
    settings: dict[str, Any]
    kept_frames: list[KeptFrameReport]


def gate_stats(stats: Mapping[str, Any]) -> GateStats:
    """The typed copy of ``ChangeGate.stats()``."""
    return {
        "enabled": bool(stats["enabled"]),
        "frames": int(stats["frames"]),
        "inferred": int(stats["inferred"]),
        "skipped": int(stats["skipped"]),
        "skipped_share": float(stats["skipped_share"]),
        "reasons": {str(k): int(v) for k, v in stats["reasons"].items()},
    }


def _label_counts() -> Counter[str]:
    return Counter({"seen": 0, "kept": 0, "evicted": 0, "synced": 0})


class HarvestCounters:
    """Counts since start; not thread-safe (the harvester locks)."""

    def __init__(self) -> None:
        self.frames: Counter[str] = Counter()
        self.policies: dict[str, Counter[str]] = defaultdict(Counter)
        self.labels: dict[str, Counter[str]] = defaultdict(_label_counts)
        self.evicted_by: Counter[str] = Counter()
        self.gate: GateStats | None = None

    def judged(self, judgement: Judgement) -> None:
        """One frame decided."""
        decision = judgement.decision
        self.frames["seen"] += 1
        for label in decision.labels:
            self.labels[label]["seen"] += 1
        for reason in judgement.fired:
            self.policies[reason]["fired"] += 1
        if decision.keep:
            self.frames["selected"] += 1
            for reason in decision.reasons:
                self.policies[reason]["kept"] += 1
            return
        reason = decision.reasons[0]
        if judgement.vetoes:
            self.frames["vetoed"] += 1
            for veto in judgement.vetoes:
                self.policies[veto]["dropped"] += 1
        elif reason in (DROP_NO_REASON, DROP_LOW_DISK):
            self.frames[reason] += 1
        else:  # gate_skipped: a frame the gate let through without inference
            self.frames["skipped_inference"] += 1

    def recorded(self, labels: Iterable[str], *, synced: bool) -> None:
        """A kept frame's files were recorded (``synced``: acknowledged before that)."""
        self.frames["kept"] += 1
        for label in labels:
            self.labels[label]["kept"] += 1
        if synced:
            self.synced(labels)

    def left_to_reviewer(self) -> None:
        """A selected frame's asset was the reviewer's: left as saved, no files recorded."""
        self.frames["kept_reviewed"] += 1

    def synced(self, labels: Iterable[str]) -> None:
        """The broker acknowledged a kept frame."""
        self.frames["synced"] += 1
        for label in labels:
            self.labels[label]["synced"] += 1

    def evicted(self, evictions: Iterable[Eviction]) -> None:
        """These frames' files are gone."""
        for eviction in evictions:
            self.frames["evicted"] += 1
            self.evicted_by[eviction.cause] += 1
            for label in eviction.labels:
                self.labels[label]["evicted"] += 1

    def frame_counts(self) -> FrameCounts:
        """The ``frames`` counts, with the gate's skips (frames the output stages never saw)."""
        gate_skipped = self.gate["skipped"] if self.gate else 0
        f = self.frames
        return {
            "seen": f["seen"] + gate_skipped,
            "skipped_inference": f["skipped_inference"] + gate_skipped,
            "no_reason": f[DROP_NO_REASON],
            "vetoed": f["vetoed"],
            "low_disk": f[DROP_LOW_DISK],
            "selected": f["selected"],
            "kept": f["kept"],
            "kept_reviewed": f["kept_reviewed"],
            "evicted": f["evicted"],
            "synced": f["synced"],
        }

    def label_counts(self, on_disk: dict[str, int]) -> dict[str, LabelCounts]:
        """Per label, with the frames of it on disk now."""
        names = sorted(self.labels.keys() | on_disk.keys())
        result: dict[str, LabelCounts] = {}
        for name in names:
            counts = self.labels.get(name) or _label_counts()
            result[name] = {
                "seen": counts["seen"],
                "kept": counts["kept"],
                "evicted": counts["evicted"],
                "synced": counts["synced"],
                "on_disk": on_disk.get(name, 0),
            }
        return result

    def policy_counts(self) -> dict[str, PolicyCounts]:
        """Per policy (and ``alert``), only the counts that happened."""
        return {name: cast(PolicyCounts, dict(counts)) for name, counts in sorted(self.policies.items())}


def summary_line(stats: HarvestStats) -> str:
    """One line for the run log: frames seen, skipped, kept (by reason), evicted, synced, disk."""
    frames, disk = stats["frames"], stats["disk"]
    by_reason = ", ".join(
        f"{name} {counts.get('kept', 0)}"
        for name, counts in stats["policy_counts"].items()
        if name in (*REASON_POLICIES, REASON_ALERT)
    )
    quota = f"/{disk['quota_bytes'] / _MB:.0f}" if disk["quota_bytes"] else ""
    reviewed = f", {frames['kept_reviewed']} left as a reviewer saved them" if frames["kept_reviewed"] else ""
    return (
        f"harvest: seen {frames['seen']}, gate-skipped {frames['skipped_inference']}, "
        f"kept {frames['kept']}{f' ({by_reason})' if by_reason else ''}{reviewed}, evicted {frames['evicted']}, "
        f"synced {frames['synced']}, on disk {disk['frames_on_disk']} frames "
        f"{disk['bytes_on_disk'] / _MB:.1f}{quota} MB{' LOW DISK' if disk['low_disk'] else ''}"
    )


def kept_frames_report(frames: Iterable[KeptFrame]) -> list[KeptFrameReport]:
    """Why each of these kept frames was kept (frames recorded without a decision say ``[]``)."""
    report: list[KeptFrameReport] = []
    for frame in frames:
        why = frame.why or {}
        report.append(
            {
                "frame_id": frame.frame_id,
                "kept_at": utc_iso(frame.kept_at),
                "reasons": list(why.get("reasons", [])),
                "triggers": list(why.get("triggers", [])),
                "labels": list(frame.labels),
                "synced": frame.synced,
            }
        )
    return report
