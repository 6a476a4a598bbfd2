"""The keep policies: reasons to keep a frame, vetoes against it, and what they remember per source.

Reasons: ``all`` (every inferred frame), ``detection`` and ``uncertainty`` (score bands judged on
every detection, see ``agent.harvest.reasons``), ``change`` (the detected labels or their counts
differ from the previous inferred frame of the same source). Vetoes: ``interval`` (at most one kept
frame per ``interval_s`` per source), ``duplicate`` (a 64-bit dHash within ``max_distance_bits`` of
one of the last ``window_frames`` kept frames of the source, with the same labels when
``compare_labels``), ``class_balance`` (every label of the frame already has
``max_per_label_per_hour`` kept frames in the last hour; a frame without detections counts as
``(none)``).

A frame is kept when a reason fires and no veto drops it, then only with ``min_free_mb`` free (the
caller's guard). A frame an alert points at is kept whatever the policies say. Veto memory (last
kept time, recent hashes, hourly label counts) advances when the policies keep a frame, so it holds
even if the writer is slow to report the frame's files; alert-forced keeps leave it alone.
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from agent.config.harvest import HarvestSettings
from agent.detections import Detections
from agent.frames import FrameResult
from agent.harvest.decision import (
    DROP_GATE_SKIPPED,
    DROP_LOW_DISK,
    DROP_NO_REASON,
    NO_DETECTION_LABEL,
    REASON_ALERT,
    KeepDecision,
    Trigger,
)
from agent.harvest.dhash import dhash64, hamming_distances
from agent.harvest.reasons import BandReason, detection_reason, uncertainty_reason

_HOUR_S = 3600.0

Signature = tuple[tuple[str, int], ...]  # (label, detections with it), sorted


@dataclass(slots=True)
class _SourceMemory:
    """What the policies remember per source."""

    last_kept: float | None = None
    previous_signature: Signature | None = None
    recent: deque[tuple[int, Signature]] = field(default_factory=deque)


class _Facts(NamedTuple):
    """What the vetoes look at: the frame's labels, its signature, its hash (when computed)."""

    labels: tuple[str, ...]
    signature: Signature
    dhash: int | None


@dataclass(frozen=True, slots=True)
class Judgement:
    """One frame judged: the ``decision``, the reasons that ``fired`` and the ``vetoes`` that
    dropped it (both even when an alert overrode them), and what the store keeps of a kept frame
    (``source_id``, ``signature``, ``dhash``)."""

    decision: KeepDecision
    fired: tuple[str, ...]
    vetoes: tuple[str, ...]
    source_id: str
    signature: Signature
    dhash: int | None


class KeepPolicy:
    """Applies the configured reasons and vetoes to each frame; not thread-safe (the caller locks)."""

    def __init__(self, settings: HarvestSettings) -> None:
        self.settings = settings
        self.reasons = settings.reason_policies
        self.vetoes = settings.veto_policies
        self._bands: dict[str, BandReason] = {
            "detection": detection_reason(settings.detection),
            "uncertainty": uncertainty_reason(settings.uncertainty),
        }
        self._sources: dict[str, _SourceMemory] = {}
        self._label_keeps: dict[str, deque[float]] = defaultdict(deque)

    def judge(
        self, result: FrameResult, now: float, *, disk_low: Callable[[], bool], alerted: bool = False
    ) -> Judgement:
        """Judge one frame. ``now`` is ``time.monotonic()`` seconds (drives ``interval`` and
        ``class_balance``); ``disk_low()`` (asked only for a frame the policies keep): below
        ``min_free_mb``, nothing is kept but frames an alert points at (``alerted``)."""
        frame = result.frame
        if result.skipped_inference:
            return Judgement(KeepDecision(False, (DROP_GATE_SKIPPED,)), (), (), frame.source_id, (), None)
        detections: Detections = result.detections if result.detections is not None else Detections.empty()
        names = detections.label_names()
        signature: Signature = tuple(sorted(Counter(names).items()))
        labels = tuple(sorted(set(names))) or (NO_DETECTION_LABEL,)
        memory = self._sources.setdefault(frame.source_id, _SourceMemory())
        fired, triggers = self._reasons_to_keep(detections, signature, memory)
        memory.previous_signature = signature
        dhash = dhash64(frame.image) if fired and "duplicate" in self.vetoes else None
        facts = _Facts(labels, signature, dhash)
        vetoes = self._vetoes_against(now, facts, memory) if fired else ()
        if not fired:
            outcome = KeepDecision(False, (DROP_NO_REASON,), (), labels)
        elif vetoes:
            outcome = KeepDecision(False, vetoes, (), labels)
        elif disk_low():
            outcome = KeepDecision(False, (DROP_LOW_DISK,), (), labels)
        else:
            self._remember_keep(now, facts, memory)
            outcome = KeepDecision(True, fired, triggers, labels)
        if not outcome.keep and alerted:
            outcome = KeepDecision(True, (REASON_ALERT,), (), labels)
        return Judgement(outcome, fired, vetoes, frame.source_id, signature, dhash)

    def restore(self, kept: Iterable[tuple[str, int, Signature]]) -> None:
        """Rebuild each source's recent kept hashes from ``(source_id, dhash, signature)`` of the
        frames on disk, oldest first (so a restart does not keep the same scene again)."""
        window = self.settings.duplicate.window_frames
        for source_id, dhash, signature in kept:
            memory = self._sources.setdefault(source_id, _SourceMemory())
            memory.recent.append((dhash, signature))
            while len(memory.recent) > window:
                memory.recent.popleft()

    def _reasons_to_keep(
        self, detections: Detections, signature: Signature, memory: _SourceMemory
    ) -> tuple[tuple[str, ...], tuple[Trigger, ...]]:
        fired: list[str] = []
        triggers: list[Trigger] = []
        for policy in self.reasons:
            if policy == "all":
                hit = True
            elif policy == "change":
                hit = memory.previous_signature != signature
            else:  # detection, uncertainty
                found = self._bands[policy].triggers(detections)
                triggers.extend(found)
                hit = bool(found)
            if hit:
                fired.append(policy)
        return tuple(fired), tuple(triggers)

    def _vetoes_against(self, now: float, facts: _Facts, memory: _SourceMemory) -> tuple[str, ...]:
        labels, signature, dhash = facts
        vetoes: list[str] = []
        for policy in self.vetoes:
            if policy == "interval":
                dropped = (
                    memory.last_kept is not None
                    and now - memory.last_kept < self.settings.interval.interval_s
                )
            elif policy == "class_balance":
                cap = self.settings.class_balance.max_per_label_per_hour
                dropped = all(self._keeps_last_hour(label, now) >= cap for label in labels)
            else:  # duplicate
                dropped = dhash is not None and self._is_duplicate(dhash, signature, memory)
            if dropped:
                vetoes.append(policy)
        return tuple(vetoes)

    def _is_duplicate(self, dhash: int, signature: Signature, memory: _SourceMemory) -> bool:
        policy = self.settings.duplicate
        if policy.compare_labels:
            hashes = [h for h, sig in memory.recent if sig == signature]
        else:
            hashes = [h for h, _ in memory.recent]
        distances = hamming_distances(dhash, hashes)
        return bool(distances.size and distances.min() <= policy.max_distance_bits)

    def _keeps_last_hour(self, label: str, now: float) -> int:
        times = self._label_keeps.get(label)
        if not times:
            return 0
        while times and times[0] <= now - _HOUR_S:
            times.popleft()
        return len(times)

    def _remember_keep(self, now: float, facts: _Facts, memory: _SourceMemory) -> None:
        labels, signature, dhash = facts
        memory.last_kept = now
        if "class_balance" in self.vetoes:  # only that policy reads them
            for label in labels:
                times = self._label_keeps[label]
                times.append(now)
                while times[0] <= now - _HOUR_S:
                    times.popleft()
        if dhash is not None:
            memory.recent.append((dhash, signature))
            while len(memory.recent) > self.settings.duplicate.window_frames:
                memory.recent.popleft()
