"""The index of kept frames on disk: their files, the quota, retention and the eviction order.

One SQLite file (``harvest-index.sqlite3``, table in ``agent.harvest.rows``), opened like the MQTT
outbox (``agent.sqlitedb``): WAL with ``synchronous=NORMAL``, so a SIGKILL at any moment loses
nothing committed, and a checkpoint (which syncs the WAL) at most ~2 s after a change, from a timer
when nothing else comes, so a power cut loses at most the last ~2 s (a frame kept then is not
evicted by quota later; its files stay).

Eviction, in two steps so the VoTT project never lists a frame whose files are gone:

1. ``add`` (after each new frame) and ``enforce`` select frames older than ``max_age_s`` (cause
   ``age``), then, while the total exceeds ``quota_bytes``, frames the broker acknowledged (synced),
   oldest first, then unsynced ones, oldest first (``quota``). The frame just added is never chosen,
   so the files on disk exceed the quota by at most the one frame being written. Chosen rows are
   marked ``evicting`` in the same transaction and no longer count; their files are untouched.
2. The caller takes them out of its project, then ``confirm_evicted`` deletes the files still
   there, then the rows. Rows still marked at the next start (a crash in between) are handed back
   by the first ``enforce``.

At start, rows whose files are all gone are dropped and sizes are re-read from disk. A journal of
an older version (``harvest-index.jsonl``) is imported once (``agent.harvest.journal``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from agent.harvest.decision import Eviction
from agent.harvest.journal import import_journal
from agent.harvest.rows import (
    EVICTION_COLUMNS,
    FRAME_COLUMNS,
    SCHEMA,
    KeptFrame,
    insert_frame,
    to_eviction,
    to_frame,
)
from agent.sqlitedb import DeferredCheckpoint, open_database, transaction

log = logging.getLogger(__name__)

_MB = 1024 * 1024
SYNC_INTERVAL_S = 2.0


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


class HarvestStore:
    """The kept frames on disk; thread-safe (one lock around the SQLite connection)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        quota_bytes: int = 0,
        max_age_s: float = 0.0,
        legacy_journal: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.quota_bytes = int(quota_bytes)
        self.max_age_s = float(max_age_s)
        self._lock = threading.RLock()
        self._db = open_database(self.path, SCHEMA, what="harvest index")
        self._checkpoint = DeferredCheckpoint(
            self._db, self._lock, what="harvest index", interval_s=SYNC_INTERVAL_S
        )
        self._total_bytes = 0
        self._unsynced = 0
        self._labels_on_disk: Counter[str] = Counter()
        self._count = 0
        self._order = 0
        self._carried_over: list[Eviction] = []  # selected by an earlier run, never confirmed
        self._closed = False
        if legacy_journal is not None and Path(legacy_journal).exists():
            import_journal(self._db, Path(legacy_journal))
        self._load()

    # ----------------------------------------------------------------- queries

    @property
    def total_bytes(self) -> int:
        """Bytes of the kept frames' files (those not being evicted), as recorded."""
        return self._total_bytes

    @property
    def unsynced(self) -> int:
        """Kept frames the broker has not acknowledged."""
        return self._unsynced

    @property
    def sync_pending(self) -> bool:
        """Changes wait for the next checkpoint (a power cut now could lose them)."""
        return self._checkpoint.pending

    def labels_on_disk(self) -> dict[str, int]:
        """Kept frames per label."""
        with self._lock:
            return {label: n for label, n in self._labels_on_disk.items() if n > 0}

    def __len__(self) -> int:
        return self._count

    def __contains__(self, frame_id: object) -> bool:
        return isinstance(frame_id, str) and self.get(frame_id) is not None

    def get(self, frame_id: str) -> KeptFrame | None:
        """The kept frame with this id, unless it is gone or being evicted."""
        sql = f"SELECT {FRAME_COLUMNS} FROM frames WHERE frame_id = ? AND evicting IS NULL"
        rows = self._query(sql, (frame_id,))
        return to_frame(rows[0]) if rows else None

    def frames(self) -> list[KeptFrame]:
        """All kept frames, oldest first."""
        rows = self._query(f"SELECT {FRAME_COLUMNS} FROM frames WHERE evicting IS NULL ORDER BY kept_at, ord")
        return [to_frame(row) for row in rows]

    def newest(self, limit: int) -> list[KeptFrame]:
        """The ``limit`` most recently kept frames, newest first."""
        sql = (
            f"SELECT {FRAME_COLUMNS} FROM frames WHERE evicting IS NULL"
            " ORDER BY kept_at DESC, ord DESC LIMIT ?"
        )
        return [to_frame(row) for row in self._query(sql, (limit,))]

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # ----------------------------------------------------------------- changes

    def add(  # noqa: PLR0913 (the facts the store keeps of a frame; all but four keyword-only)
        self,
        frame_id: str,
        paths: Iterable[str | os.PathLike[str]],
        labels: Iterable[str],
        now: float,
        *,
        source_id: str = "",
        dhash: int | None = None,
        label_counts: dict[str, int] | None = None,
        why: dict[str, Any] | None = None,
        synced: bool = False,
    ) -> list[Eviction]:
        """Record a kept frame whose files are written (again: its files are merged), then select
        what no longer fits. ``now`` is epoch seconds (it ages the frame for ``max_age_s``);
        ``synced``: the broker already acknowledged it. Returns the evictions for the caller to
        carry out and confirm."""
        path_list = tuple(dict.fromkeys(os.fspath(p) for p in paths))
        frame = KeptFrame(
            frame_id=frame_id,
            paths=path_list,
            size_bytes=sum(_file_size(p) for p in path_list),
            labels=tuple(sorted(set(labels))),
            kept_at=float(now),
            source_id=source_id,
            dhash=dhash,
            label_counts=tuple(sorted((label_counts or {}).items())),
            synced=synced,
            why=why,
        )
        with self._lock:
            self._order += 1
            with transaction(self._db):
                if not insert_frame(self._db, frame, self._order, replace=False):
                    frame = self._merge(frame)  # written again: the same frame, new files or sizes
                    insert_frame(self._db, frame, self._order)
                evictions = self._select_evictions(now, protect=frame_id, extra_bytes=frame.size_bytes)
            self._count_in(frame)
            self._count_out(evictions)
            self._checkpoint.changed()
        return evictions

    def mark_synced(self, frame_id: str) -> tuple[str, ...] | None:
        """The broker acknowledged this frame: it goes first when space is needed. Returns its
        labels when newly synced; None when it already was or is not in the store."""
        with self._lock:
            sql = "UPDATE frames SET synced = 1 WHERE frame_id = ? AND synced = 0"
            if not self._db.execute(sql, (frame_id,)).rowcount:
                return None
            sql = "SELECT labels, evicting FROM frames WHERE frame_id = ?"
            labels, evicting = self._db.execute(sql, (frame_id,)).fetchone()
            if evicting is None:
                self._unsynced -= 1
            self._checkpoint.changed()
            return tuple(json.loads(labels))

    def enforce(self, now: float) -> list[Eviction]:
        """Select frames to evict by age and quota now (at start, after a settings change, now and
        then so retention runs while nothing new is kept), plus, once, the evictions an earlier run
        selected and never confirmed. ``now`` is epoch seconds."""
        with self._lock:
            with transaction(self._db):
                evictions = self._select_evictions(now, protect=None, extra_bytes=0)
            self._count_out(evictions)
            carried, self._carried_over = self._carried_over, []
            if evictions:
                self._checkpoint.changed()
        return carried + evictions

    def confirm_evicted(self, evictions: Iterable[Eviction], *, delete_files: bool = True) -> list[Eviction]:
        """The caller has taken these frames out of its project: delete the files still there (unless
        ``delete_files`` is False), then forget the frames. Returns those confirmed (a frame recorded
        again meanwhile stays)."""
        done: list[Eviction] = []
        sql = "DELETE FROM frames WHERE frame_id = ? AND evicting IS NOT NULL"
        with self._lock:
            with transaction(self._db):
                done += [e for e in evictions if self._db.execute(sql, (e.frame_id,)).rowcount]
                # the files before the commit: a crash in between leaves rows whose files are gone
                # (dropped at start) or partly gone (handed back by the first enforce)
                for eviction in done if delete_files else ():
                    for path in eviction.paths:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(path)
            if done:
                self._checkpoint.changed()
        return done

    def sync(self) -> None:
        """Make every change so far survive a power cut (checkpoint the WAL)."""
        self._checkpoint.sync()

    def close(self) -> None:
        """Sync and close the file."""
        with self._lock:
            if self._closed:
                return
            self._checkpoint.close()
            with contextlib.suppress(Exception):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._closed = True
            self._db.close()

    # ----------------------------------------------------------------- internals

    def _select_evictions(self, now: float, protect: str | None, extra_bytes: int) -> list[Eviction]:
        """Mark what must go (inside the caller's transaction); ``extra_bytes``: bytes added by the
        frame just inserted, not yet in ``_total_bytes``."""
        chosen: list[Eviction] = []
        keep = protect or ""
        if self.max_age_s > 0:
            rows = self._db.execute(
                f"SELECT {EVICTION_COLUMNS} FROM frames"
                " WHERE evicting IS NULL AND kept_at < ? AND frame_id != ? ORDER BY kept_at, ord",
                (now - self.max_age_s, keep),
            ).fetchall()
            chosen += [self._mark(row, "age") for row in rows]
        if self.quota_bytes <= 0:
            return chosen
        total = self._total_bytes + extra_bytes - sum(e.size_bytes for e in chosen)
        for synced in (1, 0):
            while total > self.quota_bytes:
                rows = self._db.execute(
                    f"SELECT {EVICTION_COLUMNS} FROM frames WHERE evicting IS NULL"
                    " AND synced = ? AND frame_id != ? ORDER BY kept_at, ord LIMIT 16",
                    (synced, keep),
                ).fetchall()
                if not rows:
                    break
                for row in rows:
                    chosen.append(self._mark(row, "quota"))
                    total -= chosen[-1].size_bytes
                    if total <= self.quota_bytes:
                        break
        return chosen

    def _mark(self, row: Sequence[Any], cause: str) -> Eviction:
        eviction = to_eviction(row, cause)
        self._db.execute("UPDATE frames SET evicting = ? WHERE frame_id = ?", (cause, eviction.frame_id))
        return eviction

    def _count_in(self, frame: KeptFrame | Eviction) -> None:
        self._count += 1
        self._total_bytes += frame.size_bytes
        self._unsynced += not frame.synced
        self._labels_on_disk.update(frame.labels)

    def _count_out(self, evictions: Iterable[Eviction]) -> None:
        """Take frames out of the totals (a row read as an ``Eviction`` record: cause "" when it is
        not being evicted)."""
        for eviction in evictions:
            self._count -= 1
            self._total_bytes -= eviction.size_bytes
            self._unsynced -= not eviction.synced
            self._labels_on_disk.subtract(eviction.labels)

    def _merge(self, frame: KeptFrame) -> KeptFrame:
        """``frame`` recorded again: its files merged with those of its old row, which leaves the
        totals (or the evictions waiting for confirmation)."""
        sql = f"SELECT {EVICTION_COLUMNS} FROM frames WHERE frame_id = ?"
        old = to_eviction(self._db.execute(sql, (frame.frame_id,)).fetchone())
        if not old.cause:  # counted as on disk
            self._count_out([old])
        self._carried_over = [e for e in self._carried_over if e.frame_id != frame.frame_id]
        paths = tuple(dict.fromkeys((*old.paths, *frame.paths)))
        return dataclasses.replace(
            frame,
            paths=paths,
            size_bytes=sum(_file_size(p) for p in paths),
            synced=frame.synced or old.synced,
        )

    def _load(self) -> None:
        """Drop frames whose files are gone, re-read sizes, rebuild the totals."""
        rows = self._db.execute(f"SELECT {EVICTION_COLUMNS}, ord FROM frames").fetchall()
        dropped = 0
        with transaction(self._db):
            for row in rows:
                recorded = to_eviction(row[:-1])
                self._order = max(self._order, int(row[-1]))
                frame = self._reread(recorded)
                if frame is None:
                    dropped += not recorded.cause
                elif frame.cause:
                    self._carried_over.append(frame)
                else:
                    self._count_in(frame)
        log.info(
            "harvest: index %s: %d kept frames, %.1f MB%s",
            self.path,
            self._count,
            self._total_bytes / _MB,
            f" ({dropped} whose files were gone dropped)" if dropped else "",
        )

    def _reread(self, recorded: Eviction) -> Eviction | None:
        """The row with its files as they are now: None (and the row deleted) when all are gone."""
        present = tuple(p for p in recorded.paths if os.path.exists(p))
        if not present:
            self._db.execute("DELETE FROM frames WHERE frame_id = ?", (recorded.frame_id,))
            return None
        size = sum(_file_size(p) for p in present)
        if present != recorded.paths or size != recorded.size_bytes:
            self._db.execute(
                "UPDATE frames SET paths = ?, size_bytes = ? WHERE frame_id = ?",
                (json.dumps(present), size, recorded.frame_id),
            )
        return Eviction(recorded.frame_id, present, recorded.cause, size, recorded.labels, recorded.synced)
