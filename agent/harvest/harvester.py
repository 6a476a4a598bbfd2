"""The harvest facade the pipeline uses: decide, record, evict, count.

Per frame, on the output thread::

    decision = harvester.decide(result, time.monotonic())      # KeepDecision
    if decision.keep:
        ... the writer writes the frame's files ...
        evictions = harvester.record_kept(frame_id, paths)      # list[Eviction]
        ... the writer takes each evicted frame out of its project ...
        harvester.confirm_evicted(evictions)                    # the store deletes what is left

and now and then ``maintain()`` (retention while nothing new is kept; at start it also hands back
evictions an earlier run selected and never confirmed), ``mark_synced(frame_id)`` for each kept
frame the broker acknowledged, ``count_gate(gate.stats())`` for the frames the change gate kept
from the detector (the output stages never see them). No callbacks: what the caller must do
comes back as return values. Every method is thread-safe; the pipeline calls them from its output
thread, ``stats()`` also from the stats reporter.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from agent.config.harvest import HarvestSettings
from agent.frames import FrameResult
from agent.fsutil import atomic_write_json
from agent.harvest.decision import NO_DETECTION_LABEL, Eviction, KeepDecision
from agent.harvest.floor import FreeSpaceFloor
from agent.harvest.policy import Judgement, KeepPolicy
from agent.harvest.store import HarvestStore
from agent.harvest.summary import (
    HarvestCounters,
    HarvestStats,
    HarvestSummary,
    gate_stats,
    kept_frames_report,
    summary_line,
)
from agent.utc import utc_iso

log = logging.getLogger(__name__)

_MB = 1024 * 1024
INDEX_NAME = "harvest-index.sqlite3"
LEGACY_JOURNAL_NAME = "harvest-index.jsonl"
_PENDING_MAX = 1000  # decisions whose files the writer never reported are forgotten beyond this
_EARLY_ACKS_MAX = 10_000


class Harvester:
    """Keep policies, counts and the disk store behind one small API (see the module docstring)."""

    def __init__(
        self,
        settings: HarvestSettings | None,
        frames_dir: str | os.PathLike[str],
        *,
        index_path: str | os.PathLike[str] | None = None,
        legacy_journal: str | os.PathLike[str] | None = None,
    ) -> None:
        """``index_path``: the SQLite index (default ``<frames_dir>/harvest-index.sqlite3``);
        ``legacy_journal``: an older version's JSONL index to import once (default
        ``harvest-index.jsonl`` beside the index)."""
        self.settings = settings or HarvestSettings()
        self.frames_dir = Path(frames_dir)
        self.frames_dir.mkdir(parents=True, exist_ok=True)
        index = Path(index_path) if index_path is not None else self.frames_dir / INDEX_NAME
        self.store = HarvestStore(
            index,
            quota_bytes=int(self.settings.quota_mb * _MB),
            max_age_s=self.settings.max_age_days * 86400.0,
            legacy_journal=legacy_journal
            if legacy_journal is not None
            else index.with_name(LEGACY_JOURNAL_NAME),
        )
        self.policy = KeepPolicy(self.settings)
        self.policy.restore(
            (frame.source_id, frame.dhash, frame.label_counts)
            for frame in self.store.frames()
            if frame.dhash is not None
        )
        self.floor = FreeSpaceFloor(self.frames_dir, self.settings.min_free_mb)
        self._counters = HarvestCounters()
        self._pending: OrderedDict[str, Judgement] = OrderedDict()
        self._early_acks: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.RLock()

    # ----------------------------------------------------------------- deciding

    def decide(self, result: FrameResult, now_monotonic_s: float, *, alerted: bool = False) -> KeepDecision:
        """Whether to keep this frame for labelling, and why. ``now_monotonic_s`` is
        ``time.monotonic()`` seconds (drives ``interval`` and ``class_balance``); ``alerted``: an alert
        points at the frame (it is kept whatever the policies say). Counts it."""
        with self._lock:
            judgement = self.policy.judge(
                result, now_monotonic_s, disk_low=self.floor.is_low, alerted=alerted
            )
            self._counters.judged(judgement)
            if judgement.decision.keep:
                self._pending[result.frame.frame_id] = judgement
                while len(self._pending) > _PENDING_MAX:
                    self._pending.popitem(last=False)
            return judgement.decision

    # ----------------------------------------------------------------- disk

    def record_kept(
        self,
        frame_id: str,
        paths: Iterable[str | os.PathLike[str]],
        labels: Iterable[str] | None = None,
        now: float | None = None,
    ) -> list[Eviction]:
        """The writer has written a kept frame's files (image first, then asset JSON, sidecars):
        count them against the quota. ``labels`` default to those ``decide`` saw; ``now`` is epoch
        seconds (default: now; it ages the frame for ``max_age_days``). Returns the frames that no
        longer fit: take each out of the project, then ``confirm_evicted`` them."""
        with self._lock:
            judgement = self._pending.pop(frame_id, None)
            if labels is None:
                labels = judgement.decision.labels if judgement else (NO_DETECTION_LABEL,)
            label_tuple = tuple(sorted(set(labels))) or (NO_DETECTION_LABEL,)
            synced_early = frame_id in self._early_acks
            self._early_acks.pop(frame_id, None)
            evictions = self.store.add(
                frame_id,
                paths,
                label_tuple,
                time.time() if now is None else now,
                source_id=judgement.source_id if judgement else "",
                dhash=judgement.dhash if judgement else None,
                label_counts=dict(judgement.signature) if judgement else None,
                why=_why(judgement),
                synced=synced_early,
            )
            self._counters.recorded(label_tuple, synced=synced_early)
            return evictions

    def record_left_to_reviewer(self, frame_id: str) -> None:
        """The writer left a kept frame as a reviewer saved it in VoTT: nothing joins the quota."""
        with self._lock:
            self._pending.pop(frame_id, None)
            self._counters.left_to_reviewer()

    def confirm_evicted(self, evictions: Iterable[Eviction], *, delete_files: bool = True) -> None:
        """The caller took these frames out of its project: delete their remaining files (not with
        ``delete_files`` False: a frame a reviewer worked on stays, outside the quota) and forget them."""
        done = self.store.confirm_evicted(evictions, delete_files=delete_files)
        with self._lock:
            self._counters.evicted(done)

    def maintain(self, now: float | None = None) -> list[Eviction]:
        """Apply retention and quota now (at start, and now and then); ``now`` is epoch seconds.
        Returns evictions to carry out and confirm, as ``record_kept``."""
        return self.store.enforce(time.time() if now is None else now)

    def mark_synced(self, frame_id: str) -> bool:
        """The broker acknowledged this kept frame; True when it was not synced before. An
        acknowledgement that arrives before ``record_kept`` is remembered for it."""
        with self._lock:
            labels = self.store.mark_synced(frame_id)
            if labels is not None:
                self._counters.synced(labels)
                return True
            if frame_id not in self.store:
                self._early_acks[frame_id] = None
                while len(self._early_acks) > _EARLY_ACKS_MAX:
                    self._early_acks.popitem(last=False)
            return False

    def count_gate(self, gate: Mapping[str, Any]) -> None:
        """The change gate's counts now (``ChangeGate.stats()``; its skipped frames never reach
        ``decide``)."""
        snapshot = gate_stats(gate)
        with self._lock:
            self._counters.gate = snapshot

    # ----------------------------------------------------------------- reporting

    def stats(self) -> HarvestStats:
        """Counts since start (frames, per policy, per label), what is on disk now, the gate's."""
        with self._lock:
            counters = self._counters
            stats: HarvestStats = {
                "policies": list(self.settings.policies),
                "frames": counters.frame_counts(),
                "policy_counts": counters.policy_counts(),
                "labels": counters.label_counts(self.store.labels_on_disk()),
                "disk": {
                    "frames_on_disk": len(self.store),
                    "unsynced_on_disk": self.store.unsynced,
                    "bytes_on_disk": self.store.total_bytes,
                    "quota_bytes": self.store.quota_bytes,
                    "evicted_by": dict(counters.evicted_by),
                    "low_disk": self.floor.low,
                },
            }
            if counters.gate is not None:
                stats["gate"] = counters.gate
            return stats

    def summary_line(self) -> str:
        """One line for the run log: frames seen, skipped, kept (by reason), evicted, synced, disk."""
        return summary_line(self.stats())

    def write_summary(self, path: str | os.PathLike[str]) -> None:
        """Write harvest.json atomically: ``stats()``, the settings, and why each of the newest
        ``report_frames`` kept frames still on disk was kept (``kept_frames``, newest first)."""
        summary: HarvestSummary = {
            "generated_at": utc_iso(time.time()),
            **self.stats(),
            "settings": self.settings.model_dump(mode="json"),
            "kept_frames": kept_frames_report(self.store.newest(self.settings.report_frames)),
        }
        atomic_write_json(path, summary)

    def close(self) -> None:
        """Sync and close the index."""
        self.store.close()

    def __enter__(self) -> Harvester:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _why(judgement: Judgement | None) -> dict[str, Any] | None:
    """What the store keeps of a decision: its reasons and triggers."""
    if judgement is None:
        return None
    decision = judgement.decision
    return {"reasons": list(decision.reasons), "triggers": [t.to_json() for t in decision.triggers]}
