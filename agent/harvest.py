"""Which frames to keep for labelling, and the disk they may use.

Deciding (``Harvester.decide``)
-------------------------------
Policies are listed in ``harvest.policies``. Each is either a *reason* to keep a frame or
a *veto* against keeping it:

* reasons: ``all`` (every inferred frame), ``detection`` (a detection with one of the
  chosen labels and a score in range), ``uncertainty`` (the frame's highest score lies in
  ``[min_score, max_score]``: the detector is unsure, which is what active learning wants),
  ``change`` (the detected labels or their counts differ from the previous inferred frame of
  the same source);
* vetoes: ``interval`` (at most one kept frame per ``interval_s`` per source),
  ``duplicate`` (a 64-bit dHash of the frame within ``max_distance_bits`` of one of the last
  ``window_frames`` kept frames of the source, with the same detected labels), and
  ``class_balance`` (every label in the frame already has ``max_per_label_per_hour`` kept
  frames in the last hour; a frame without detections counts as label ``(none)``).

A frame is kept when at least one listed reason says keep and no listed veto says drop.
When no reason is listed, ``all`` is implied: ``policies: [interval]`` keeps one frame
every ``interval_s``, ``policies: [duplicate]`` every frame that is not a near-duplicate.
The default, ``[all]``, keeps every inferred frame (the core's simple policy). Frames the
change gate let through without inference are never kept. Last comes a guard that is
always on: below ``min_free_mb`` free on the disk holding the frames, nothing is kept
(detection, alerts and publishing go on).

Veto state (last kept time, recent hashes, hourly label counts) advances when ``decide``
says keep, so it holds even if the writer is slow to call ``record_kept``.

Disk (``Harvester.record_kept``)
--------------------------------
The writer reports each kept frame's files (image, VoTT asset, any sidecar); their sizes
count against ``quota_mb``. After each new frame the oldest frames are evicted until the
total fits: first frames the broker has acknowledged (``mark_synced``), oldest first, then
unsynced ones, oldest first. The new frame itself is never evicted, so the files on disk
exceed the quota by at most the one frame being written. Frames older than
``max_age_days`` are evicted too. Eviction calls ``on_evict(frame_id, paths)`` (the VoTT
writer removes the asset from its project there), then deletes whatever files remain.

The index survives restarts in an append-only journal (``harvest-index.jsonl``, one JSON
line per kept / synced / evicted event): appends are cheap on an SD card, unlike
rewriting a whole index per frame, and the journal also knows what scanning the frames
folder cannot (which files belong together, which were synced, labels, hashes). On start
the journal is replayed, entries whose files are gone are dropped, sizes are re-read from
disk, and the journal is rewritten compacted. Lines are flushed at once (a killed process
loses nothing) and fsynced at most every two seconds (a power cut loses at most the last
two seconds: a frame kept then is not evicted by quota later; its files stay).
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import os
import shutil
import threading
import time
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
from numpy.typing import NDArray

from agent.config.harvest import REASON_POLICIES, HarvestSettings
from agent.detections import Detections
from agent.frames import FrameResult
from agent.fsutil import atomic_write_json, atomic_write_text
from agent.utc import utc_iso

log = logging.getLogger(__name__)

NO_DETECTION_LABEL = "(none)"
# Why a frame was not kept, besides the vetoes' own names.
DROP_GATE_SKIPPED = "gate_skipped"
DROP_NO_REASON = "no_reason"
DROP_LOW_DISK = "low_disk"

EvictCallback = Callable[[str, list[Path]], None]

_MB = 1024 * 1024
_HOUR_S = 3600.0
_FSYNC_EVERY_S = 2.0
_DISK_CHECK_INTERVAL_S = 1.0  # free space is read at most this often while it is above the floor


# --------------------------------------------------------------------------- settings


# --------------------------------------------------------------------------- hashing


def dhash64(image: NDArray[np.uint8]) -> int:
    """64-bit difference hash: the image shrunk to 9 x 8 grey pixels, one bit per
    horizontally adjacent pair (left brighter than right). Near-identical images differ
    in few bits; sensor noise flips bits only where neighbours are almost equal."""
    small = cv2.resize(image, (9, 8), interpolation=cv2.INTER_AREA)
    if small.ndim == 3:
        small = cv2.cvtColor(small, cv2.COLOR_BGRA2GRAY if small.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    bits = small[:, :-1] > small[:, 1:]
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming_distances(value: int, others: Sequence[int]) -> NDArray[np.int64]:
    """Bits differing between the 64-bit ``value`` and each of ``others``."""
    if not others:
        return np.zeros(0, dtype=np.int64)
    xor = np.bitwise_xor(np.asarray(others, dtype=np.uint64), np.uint64(value))
    return np.unpackbits(xor.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1, dtype=np.int64)


# --------------------------------------------------------------------------- the store


@dataclass(slots=True)
class KeptFrame:
    """One kept frame as the store knows it. ``kept_at`` is epoch seconds; ``size_bytes``
    the sum of its files' sizes when recorded (or re-read at start)."""

    frame_id: str
    paths: tuple[str, ...]
    size_bytes: int
    labels: tuple[str, ...]
    kept_at: float
    source_id: str = ""
    dhash: int | None = None
    label_counts: dict[str, int] = field(default_factory=dict)
    synced: bool = False
    order: int = 0

    def to_record(self) -> dict[str, Any]:
        """The journal line for this frame."""
        return {
            "op": "kept",
            "id": self.frame_id,
            "paths": list(self.paths),
            "bytes": self.size_bytes,
            "labels": list(self.labels),
            "kept_at": round(self.kept_at, 3),
            "source": self.source_id,
            "dhash": None if self.dhash is None else f"{self.dhash:016x}",
            "counts": self.label_counts,
            "synced": self.synced,
        }


class Eviction(NamedTuple):
    """A frame taken out of the store, and why: ``quota`` or ``age``."""

    frame: KeptFrame
    cause: str


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


class HarvestStore:
    """Index of kept frames on disk with quota, retention and eviction order.

    Thread-safe: ``add`` and ``enforce`` may run on the writer's thread while
    ``mark_synced`` runs on the MQTT publisher's. ``on_evict`` is called without the
    store's lock held, so it may take the writer's own lock.
    """

    def __init__(
        self,
        index_path: str | os.PathLike[str],
        *,
        quota_bytes: int = 0,
        max_age_s: float = 0.0,
        on_evict: EvictCallback | None = None,
    ) -> None:
        self.index_path = Path(index_path)
        self.quota_bytes = int(quota_bytes)
        self.max_age_s = float(max_age_s)
        self.on_evict = on_evict
        self._lock = threading.RLock()
        self._entries: dict[str, KeptFrame] = {}
        # Lazy-deletion heaps of (kept_at, order, frame_id); an item is stale when its frame
        # is gone or (for the unsynced heap) has been synced since.
        self._synced_heap: list[tuple[float, int, str]] = []
        self._unsynced_heap: list[tuple[float, int, str]] = []
        self._total_bytes = 0
        self._order = 0
        self._early_acks: OrderedDict[str, None] = OrderedDict()
        self._journal_lines = 0
        self._last_fsync = time.monotonic()
        self.index_path.parent.mkdir(parents=True, exist_ok=True)
        self._load()
        self._journal = open(self.index_path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)

    # ----------------------------------------------------------------- queries

    @property
    def total_bytes(self) -> int:
        """Bytes of all kept frames' files, as recorded."""
        return self._total_bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, frame_id: object) -> bool:
        return frame_id in self._entries

    def get(self, frame_id: str) -> KeptFrame | None:
        """The kept frame with this id, if it is still on disk."""
        return self._entries.get(frame_id)

    def frames(self) -> list[KeptFrame]:
        """All kept frames, oldest first."""
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: (e.kept_at, e.order))

    # ----------------------------------------------------------------- changes

    def add(
        self,
        frame_id: str,
        paths: Iterable[str | os.PathLike[str]],
        labels: Iterable[str],
        now: float,
        *,
        source_id: str = "",
        dhash: int | None = None,
        label_counts: dict[str, int] | None = None,
    ) -> list[Eviction]:
        """Record a kept frame whose files are already written, then evict what no longer
        fits. ``now`` is epoch seconds (it ages the frame for ``max_age_s``); ``dhash`` and
        ``label_counts`` (detections per label) are kept for the duplicate policy. Returns
        the evictions, whose files are gone when this returns."""
        path_list = tuple(dict.fromkeys(os.fspath(p) for p in paths))
        size = sum(_file_size(p) for p in path_list)
        with self._lock:
            old = self._entries.get(frame_id)
            if old is not None:  # written again: same frame, new files or sizes
                self._total_bytes -= old.size_bytes
                path_list = tuple(dict.fromkeys(old.paths + path_list))
                size = sum(_file_size(p) for p in path_list)
            acknowledged_early = frame_id in self._early_acks
            self._early_acks.pop(frame_id, None)
            entry = KeptFrame(
                frame_id=frame_id,
                paths=path_list,
                size_bytes=size,
                labels=tuple(sorted(set(labels))),
                kept_at=float(now),
                source_id=source_id,
                dhash=dhash,
                label_counts=dict(label_counts or {}),
                synced=(old is not None and old.synced) or acknowledged_early,
                order=self._next_order(),
            )
            self._insert(entry)
            self._append(entry.to_record(), durable=True)
            evictions = self._select_evictions(now, protect=frame_id)
        self._remove_files(evictions)
        return evictions

    def mark_synced(self, frame_id: str) -> bool:
        """The broker acknowledged this frame: it goes first when space is needed. Returns
        False when the frame is not (yet) in the store; an acknowledgement arriving before
        ``add`` is remembered for it."""
        with self._lock:
            entry = self._entries.get(frame_id)
            if entry is None:
                self._early_acks[frame_id] = None
                while len(self._early_acks) > 10_000:
                    self._early_acks.popitem(last=False)
                return False
            if entry.synced:
                return False
            entry.synced = True
            heapq.heappush(self._synced_heap, (entry.kept_at, entry.order, frame_id))
            self._maybe_rebuild_heaps()
            self._append({"op": "synced", "id": frame_id}, durable=False)
            return True

    def enforce(self, now: float) -> list[Eviction]:
        """Evict by age and quota now (at start, after a settings change, periodically so
        retention runs while nothing new is kept). ``now`` is epoch seconds."""
        with self._lock:
            evictions = self._select_evictions(now, protect=None)
        self._remove_files(evictions)
        return evictions

    def close(self) -> None:
        """Flush and close the journal."""
        with self._lock:
            if not self._journal.closed:
                self._journal.flush()
                with contextlib.suppress(OSError):
                    os.fsync(self._journal.fileno())
                self._journal.close()

    # ----------------------------------------------------------------- internals

    def _next_order(self) -> int:
        self._order += 1
        return self._order

    def _insert(self, entry: KeptFrame) -> None:
        self._entries[entry.frame_id] = entry
        self._total_bytes += entry.size_bytes
        key = (entry.kept_at, entry.order, entry.frame_id)
        heapq.heappush(self._synced_heap if entry.synced else self._unsynced_heap, key)
        self._maybe_rebuild_heaps()

    def _maybe_rebuild_heaps(self) -> None:
        """Drop stale heap keys (a frame that became synced keeps its old unsynced key; evicting
        synced frames first never pops those) once they outnumber the live frames."""
        if len(self._synced_heap) + len(self._unsynced_heap) <= 2 * len(self._entries) + 256:
            return
        live = self._entries.values()
        self._synced_heap = [(e.kept_at, e.order, e.frame_id) for e in live if e.synced]
        self._unsynced_heap = [(e.kept_at, e.order, e.frame_id) for e in live if not e.synced]
        heapq.heapify(self._synced_heap)
        heapq.heapify(self._unsynced_heap)

    def _peek(self, synced: bool) -> KeptFrame | None:
        """Oldest live frame in the synced (or unsynced) heap, dropping stale items."""
        heap = self._synced_heap if synced else self._unsynced_heap
        while heap:
            _, order, frame_id = heap[0]
            entry = self._entries.get(frame_id)
            if entry is not None and entry.order == order and entry.synced == synced:
                return entry
            heapq.heappop(heap)
        return None

    def _oldest(self) -> KeptFrame | None:
        candidates = [e for e in (self._peek(True), self._peek(False)) if e is not None]
        return min(candidates, key=lambda e: (e.kept_at, e.order)) if candidates else None

    def _take(self, entry: KeptFrame) -> None:
        del self._entries[entry.frame_id]
        self._total_bytes -= entry.size_bytes

    def _select_evictions(self, now: float, protect: str | None) -> list[Eviction]:
        """Take frames out of the index (files are removed after the lock is released)."""
        evictions: list[Eviction] = []
        if self.max_age_s > 0:
            cutoff = now - self.max_age_s
            while (oldest := self._oldest()) is not None and oldest.kept_at < cutoff:
                if oldest.frame_id == protect:
                    break
                self._take(oldest)
                evictions.append(Eviction(oldest, "age"))
        if self.quota_bytes > 0:
            while self._total_bytes > self.quota_bytes:
                victim = self._peek(True) or self._peek(False)
                if victim is None or victim.frame_id == protect:
                    break
                self._take(victim)
                evictions.append(Eviction(victim, "quota"))
        return evictions

    def _remove_files(self, evictions: list[Eviction]) -> None:
        for eviction in evictions:
            entry = eviction.frame
            if self.on_evict is not None:
                try:
                    self.on_evict(entry.frame_id, [Path(p) for p in entry.paths])
                except Exception:
                    log.exception(
                        "harvest: on_evict failed for %s; deleting its files anyway", entry.frame_id
                    )
            for path in entry.paths:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            log.debug("harvest: evicted %s (%s, %d bytes)", entry.frame_id, eviction.cause, entry.size_bytes)
        if evictions:
            with self._lock:
                for eviction in evictions:
                    self._append({"op": "evicted", "id": eviction.frame.frame_id}, durable=False)

    def _append(self, record: dict[str, Any], *, durable: bool) -> None:
        self._journal.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._journal.flush()
        self._journal_lines += 1
        now = time.monotonic()
        if durable and now - self._last_fsync >= _FSYNC_EVERY_S:
            with contextlib.suppress(OSError):
                os.fsync(self._journal.fileno())
            self._last_fsync = now
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        if self._journal_lines > 2 * len(self._entries) + 1000:
            self._compact()

    def _compact(self) -> None:
        """Rewrite the journal as one ``kept`` line per live frame (atomically)."""
        lines = [
            json.dumps(e.to_record(), ensure_ascii=False, separators=(",", ":"))
            for e in sorted(self._entries.values(), key=lambda e: (e.kept_at, e.order))
        ]
        journal = getattr(self, "_journal", None)
        if journal is not None:
            journal.close()
        atomic_write_text(self.index_path, "".join(line + "\n" for line in lines))
        self._journal_lines = len(lines)
        if journal is not None:
            self._journal = open(self.index_path, "a", encoding="utf-8")  # noqa: SIM115

    def _load(self) -> None:
        """Replay the journal, drop frames whose files are gone, re-read sizes, compact."""
        if not self.index_path.exists():
            return
        entries: dict[str, KeptFrame] = {}
        with open(self.index_path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    op, frame_id = record["op"], record["id"]
                except (ValueError, KeyError, TypeError):
                    log.warning("harvest: %s line %d is damaged; skipped", self.index_path, number)
                    continue
                if op == "kept":
                    try:
                        entries.pop(frame_id, None)  # re-insertion keeps the newest order
                        entries[frame_id] = KeptFrame(
                            frame_id=frame_id,
                            paths=tuple(record["paths"]),
                            size_bytes=int(record["bytes"]),
                            labels=tuple(record.get("labels", ())),
                            kept_at=float(record["kept_at"]),
                            source_id=str(record.get("source", "")),
                            dhash=int(record["dhash"], 16) if record.get("dhash") else None,
                            label_counts={str(k): int(v) for k, v in (record.get("counts") or {}).items()},
                            synced=bool(record.get("synced", False)),
                        )
                    except (ValueError, KeyError, TypeError):
                        log.warning("harvest: %s line %d is damaged; skipped", self.index_path, number)
                elif op == "synced" and frame_id in entries:
                    entries[frame_id].synced = True
                elif op == "evicted":
                    entries.pop(frame_id, None)
        dropped = 0
        for entry in entries.values():
            present = tuple(p for p in entry.paths if os.path.exists(p))
            if not present:
                dropped += 1
                continue
            entry.paths = present
            entry.size_bytes = sum(_file_size(p) for p in present)
            entry.order = self._next_order()
            self._insert(entry)
        log.info(
            "harvest: index %s: %d kept frames, %.1f MB%s",
            self.index_path,
            len(self._entries),
            self._total_bytes / _MB,
            f" ({dropped} whose files were gone dropped)" if dropped else "",
        )
        self._compact()


# --------------------------------------------------------------------------- the harvester


class HarvestDecision(NamedTuple):
    """``keep``: write and publish this frame. ``reasons``: the reason policies that fired
    when kept; otherwise why not (veto names, ``no_reason``, ``low_disk``, ``gate_skipped``)."""

    keep: bool
    reasons: list[str]


@dataclass(slots=True)
class _SourceMemory:
    """What the policies remember per source."""

    last_kept: float | None = None
    previous_signature: tuple[tuple[str, int], ...] | None = None
    recent: deque[tuple[int, tuple[tuple[str, int], ...]]] = field(default_factory=deque)


@dataclass(slots=True)
class _Pending:
    source_id: str
    labels: tuple[str, ...]
    dhash: int | None
    signature: tuple[tuple[str, int], ...]


def _label_stats() -> dict[str, int]:
    return {"seen": 0, "kept": 0, "evicted": 0, "synced": 0}


class Harvester:
    """Keep policies, counts and the disk store behind one small API.

    ``decide`` (hot path, every frame) -> the writer writes kept frames -> ``record_kept``;
    the MQTT publisher calls ``mark_synced`` when the broker acknowledged a kept frame.
    Thread-safe.
    """

    def __init__(
        self,
        settings: HarvestSettings | None,
        frames_dir: str | os.PathLike[str],
        *,
        index_path: str | os.PathLike[str] | None = None,
        on_evict: EvictCallback | None = None,
    ) -> None:
        self.settings = settings or HarvestSettings()
        self.frames_dir = Path(frames_dir)
        self.frames_dir.mkdir(parents=True, exist_ok=True)
        self.store = HarvestStore(
            index_path if index_path is not None else self.frames_dir / "harvest-index.jsonl",
            quota_bytes=int(self.settings.quota_mb * _MB),
            max_age_s=self.settings.max_age_days * 86400.0,
            on_evict=on_evict,
        )
        self._reasons = self.settings.reason_policies
        self._vetoes = self.settings.veto_policies
        self._lock = threading.RLock()
        self._sources: dict[str, _SourceMemory] = {}
        self._label_keeps: dict[str, deque[float]] = defaultdict(deque)
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._frames: Counter[str] = Counter()
        self._policy_counts: dict[str, Counter[str]] = defaultdict(Counter)
        self._labels: dict[str, dict[str, int]] = defaultdict(_label_stats)
        self._evicted_by: Counter[str] = Counter()
        self._low_disk = False
        self._disk_checked = -_DISK_CHECK_INTERVAL_S
        self._restore_hash_windows()

    # ----------------------------------------------------------------- deciding

    def decide(self, result: FrameResult, now: float) -> HarvestDecision:
        """Whether to keep this frame for labelling. ``now`` is ``time.monotonic()`` seconds
        (drives ``interval`` and ``class_balance``). Counts every decision."""
        frame = result.frame
        with self._lock:
            self._frames["seen"] += 1
            if result.skipped_inference:
                self._frames["skipped_inference"] += 1
                return HarvestDecision(False, [DROP_GATE_SKIPPED])

            detections: Detections = (
                result.detections if result.detections is not None else Detections.empty()
            )
            names = detections.label_names()
            signature = tuple(sorted(Counter(names).items()))
            frame_labels = tuple(sorted(set(names))) or (NO_DETECTION_LABEL,)
            for label in frame_labels:
                self._labels[label]["seen"] += 1
            memory = self._sources.setdefault(frame.source_id, _SourceMemory())

            reasons = self._reasons_to_keep(detections, signature, memory)
            memory.previous_signature = signature
            for reason in reasons:
                self._policy_counts[reason]["fired"] += 1
            if not reasons:
                self._frames[DROP_NO_REASON] += 1
                return HarvestDecision(False, [DROP_NO_REASON])

            dhash = dhash64(frame.image) if "duplicate" in self._vetoes else None
            vetoes = self._vetoes_against(now, frame_labels, signature, dhash, memory)
            for veto in vetoes:
                self._policy_counts[veto]["dropped"] += 1
            if vetoes:
                self._frames["vetoed"] += 1
                return HarvestDecision(False, vetoes)

            if self._disk_is_low():
                self._frames[DROP_LOW_DISK] += 1
                return HarvestDecision(False, [DROP_LOW_DISK])

            self._remember_keep(now, frame.frame_id, frame.source_id, frame_labels, signature, dhash, memory)
            for reason in reasons:
                self._policy_counts[reason]["kept"] += 1
            self._frames["selected"] += 1
            return HarvestDecision(True, reasons)

    def _reasons_to_keep(
        self,
        detections: Detections,
        signature: tuple[tuple[str, int], ...],
        memory: _SourceMemory,
    ) -> list[str]:
        reasons: list[str] = []
        for policy in self._reasons:
            if policy == "all":
                fired = True
            elif policy == "detection":
                fired = self._detection_fires(detections)
            elif policy == "uncertainty":
                band = self.settings.uncertainty
                fired = len(detections) > 0 and band.min_score <= detections.top_score <= band.max_score
            else:  # change
                fired = memory.previous_signature != signature
            if fired:
                reasons.append(policy)
        return reasons

    def _detection_fires(self, detections: Detections) -> bool:
        if not len(detections):
            return False
        policy = self.settings.detection
        mask = (detections.score >= policy.min_score) & (detections.score <= policy.max_score)
        if policy.labels:
            wanted = np.isin(np.asarray(detections.label_names(), dtype=object), policy.labels)
            mask &= wanted
        return bool(mask.any())

    def _vetoes_against(
        self,
        now: float,
        frame_labels: tuple[str, ...],
        signature: tuple[tuple[str, int], ...],
        dhash: int | None,
        memory: _SourceMemory,
    ) -> list[str]:
        vetoes: list[str] = []
        for policy in self._vetoes:
            if policy == "interval":
                dropped = (
                    memory.last_kept is not None
                    and now - memory.last_kept < self.settings.interval.interval_s
                )
            elif policy == "class_balance":
                cap = self.settings.class_balance.max_per_label_per_hour
                dropped = all(self._keeps_last_hour(label, now) >= cap for label in frame_labels)
            else:  # duplicate
                dropped = dhash is not None and self._is_duplicate(dhash, signature, memory)
            if dropped:
                vetoes.append(policy)
        return vetoes

    def _is_duplicate(
        self, dhash: int, signature: tuple[tuple[str, int], ...], memory: _SourceMemory
    ) -> bool:
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

    def _remember_keep(
        self,
        now: float,
        frame_id: str,
        source_id: str,
        frame_labels: tuple[str, ...],
        signature: tuple[tuple[str, int], ...],
        dhash: int | None,
        memory: _SourceMemory,
    ) -> None:
        memory.last_kept = now
        if "class_balance" in self.settings.veto_policies:  # only that policy reads them
            for label in frame_labels:
                times = self._label_keeps[label]
                times.append(now)
                while times[0] <= now - _HOUR_S:
                    times.popleft()
        if dhash is not None:
            memory.recent.append((dhash, signature))
            while len(memory.recent) > self.settings.duplicate.window_frames:
                memory.recent.popleft()
        self._pending[frame_id] = _Pending(source_id, frame_labels, dhash, signature)
        while len(self._pending) > 1000:  # the writer never reported some frames
            self._pending.popitem(last=False)

    def _disk_is_low(self) -> bool:
        floor = self.settings.min_free_mb
        if floor <= 0:
            return False
        now = time.monotonic()
        if now - self._disk_checked < _DISK_CHECK_INTERVAL_S and not self._low_disk:
            return False
        self._disk_checked = now
        try:
            free = shutil.disk_usage(self.frames_dir).free
        except OSError as exc:  # the folder vanished or the disk went away: keep the last answer
            log.warning("harvest: cannot read free space of %s: %s", self.frames_dir, exc)
            return self._low_disk
        low = free < floor * _MB
        if low != self._low_disk:
            if low:
                log.warning(
                    "harvest: only %.0f MB free on the disk holding %s (floor min_free_mb=%.0f): "
                    "not keeping frames until space is freed; detection and alerts go on",
                    free / _MB,
                    self.frames_dir,
                    floor,
                )
            else:
                log.info("harvest: %.0f MB free again; keeping frames", free / _MB)
            self._low_disk = low
        return low

    # ----------------------------------------------------------------- disk

    def record_kept(
        self,
        frame_id: str,
        paths: Iterable[str | os.PathLike[str]],
        labels: Iterable[str] | None = None,
        now: float | None = None,
    ) -> list[Eviction]:
        """The writer has written a kept frame's files (image, asset JSON, sidecars): count
        them against the quota and evict what no longer fits. ``labels`` default to those
        seen by ``decide``; ``now`` is epoch seconds (default: the current time; not the
        capture time, which for files is their age) and ages the frame for ``max_age_days``.
        ``paths`` keep their order in ``on_evict`` (put the image first). Returns the
        evictions (their files are gone)."""
        with self._lock:
            pending = self._pending.pop(frame_id, None)
        if labels is None:
            labels = pending.labels if pending else (NO_DETECTION_LABEL,)
        label_tuple = tuple(sorted(set(labels))) or (NO_DETECTION_LABEL,)
        before = self.store.get(frame_id)
        was_synced = before is not None and before.synced
        evictions = self.store.add(
            frame_id,
            paths,
            label_tuple,
            time.time() if now is None else now,
            source_id=pending.source_id if pending else "",
            dhash=pending.dhash if pending else None,
            label_counts=dict(pending.signature) if pending else None,
        )
        after = self.store.get(frame_id)
        with self._lock:
            if after is not None and after.synced and not was_synced:  # acknowledged before recorded
                self._frames["synced"] += 1
                for label in label_tuple:
                    self._labels[label]["synced"] += 1
            self._frames["kept"] += 1
            for label in label_tuple:
                self._labels[label]["kept"] += 1
            self._count_evictions(evictions)
        return evictions

    def mark_synced(self, frame_id: str) -> bool:
        """The broker acknowledged this kept frame (called by the MQTT publisher)."""
        synced = self.store.mark_synced(frame_id)
        if synced:
            entry = self.store.get(frame_id)
            with self._lock:
                self._frames["synced"] += 1
                for label in entry.labels if entry else ():
                    self._labels[label]["synced"] += 1
        return synced

    def maintain(self, now: float | None = None) -> list[Eviction]:
        """Apply retention and quota now (call at start and now and then, e.g. with stats);
        ``now`` is epoch seconds."""
        evictions = self.store.enforce(time.time() if now is None else now)
        with self._lock:
            self._count_evictions(evictions)
        return evictions

    def close(self) -> None:
        """Flush and close the index journal."""
        self.store.close()

    def __enter__(self) -> Harvester:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _count_evictions(self, evictions: list[Eviction]) -> None:
        for eviction in evictions:
            self._frames["evicted"] += 1
            self._evicted_by[eviction.cause] += 1
            for label in eviction.frame.labels:
                self._labels[label]["evicted"] += 1

    def _restore_hash_windows(self) -> None:
        """Rebuild each source's recent kept hashes from the index (so a restart does not
        keep the same scene again)."""
        window = self.settings.duplicate.window_frames
        for entry in self.store.frames():
            if entry.dhash is None:
                continue
            memory = self._sources.setdefault(entry.source_id, _SourceMemory())
            signature = tuple(sorted(entry.label_counts.items()))
            memory.recent.append((entry.dhash, signature))
            while len(memory.recent) > window:
                memory.recent.popleft()

    # ----------------------------------------------------------------- reporting

    def stats(self) -> dict[str, Any]:
        """Counts since start (frames, per policy, per label) and what is on disk now."""
        on_disk: Counter[str] = Counter()
        unsynced = 0
        for entry in self.store.frames():
            on_disk.update(entry.labels)
            unsynced += not entry.synced
        with self._lock:
            frames = {
                key: self._frames[key]
                for key in (
                    "seen",
                    "skipped_inference",
                    DROP_NO_REASON,
                    "vetoed",
                    DROP_LOW_DISK,
                    "selected",
                    "kept",
                    "evicted",
                    "synced",
                )
            }
            policies = {name: dict(counts) for name, counts in sorted(self._policy_counts.items())}
            labels = {
                name: {**counts, "on_disk": on_disk.get(name, 0)}
                for name, counts in sorted(self._labels.items())
            }
            for name in on_disk.keys() - labels.keys():
                labels[name] = {**_label_stats(), "on_disk": on_disk[name]}
            evicted_by = dict(self._evicted_by)
            low_disk = self._low_disk
        return {
            "policies": self.settings.policies,
            "frames": frames,
            "policy_counts": policies,
            "labels": dict(sorted(labels.items())),
            "disk": {
                "frames_on_disk": len(self.store),
                "unsynced_on_disk": unsynced,
                "bytes_on_disk": self.store.total_bytes,
                "quota_bytes": self.store.quota_bytes,
                "evicted_by": evicted_by,
                "low_disk": low_disk,
            },
        }

    def summary_line(self) -> str:
        """One line for the run log: frames seen, skipped, kept (by reason), evicted, synced, disk."""
        stats = self.stats()
        frames, disk = stats["frames"], stats["disk"]
        by_reason = ", ".join(
            f"{name} {counts.get('kept', 0)}"
            for name, counts in stats["policy_counts"].items()
            if name in REASON_POLICIES
        )
        quota = f"/{disk['quota_bytes'] / _MB:.0f}" if disk["quota_bytes"] else ""
        return (
            f"harvest: seen {frames['seen']}, gate-skipped {frames['skipped_inference']}, "
            f"kept {frames['kept']}{f' ({by_reason})' if by_reason else ''}, evicted {frames['evicted']}, "
            f"synced {frames['synced']}, on disk {disk['frames_on_disk']} frames "
            f"{disk['bytes_on_disk'] / _MB:.1f}{quota} MB{' LOW DISK' if disk['low_disk'] else ''}"
        )

    def write_summary(self, path: str | os.PathLike[str]) -> None:
        """Write ``stats()`` and the settings as ``harvest.json`` (atomically)."""
        summary = {
            "generated_at": utc_iso(time.time()),
            **self.stats(),
            "settings": self.settings.model_dump(mode="json"),
        }
        atomic_write_json(path, summary)
