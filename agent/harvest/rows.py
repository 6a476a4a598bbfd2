"""The harvest index's table: its schema, one kept frame as a record, and the row conversions."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.harvest.decision import Eviction
from agent.sqlitedb import Schema

SCHEMA = Schema(
    version=1,
    create="""
    CREATE TABLE IF NOT EXISTS frames (
        frame_id TEXT PRIMARY KEY,
        ord INTEGER NOT NULL,           -- order kept (ties of kept_at)
        paths TEXT NOT NULL,            -- JSON list, the image first
        size_bytes INTEGER NOT NULL,
        labels TEXT NOT NULL,           -- JSON list, sorted
        kept_at REAL NOT NULL,          -- epoch seconds
        source_id TEXT NOT NULL DEFAULT '',
        dhash TEXT,                     -- 16 hex digits (the duplicate veto)
        label_counts TEXT,              -- JSON {label: detections}
        synced INTEGER NOT NULL DEFAULT 0,
        evicting TEXT,                  -- the cause, once handed to the caller for removal
        why TEXT                        -- JSON {reasons, triggers}
    );
    CREATE INDEX IF NOT EXISTS frames_by_sync ON frames (synced, kept_at, ord) WHERE evicting IS NULL;
    CREATE INDEX IF NOT EXISTS frames_by_age ON frames (kept_at, ord) WHERE evicting IS NULL;
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
)
FRAME_COLUMNS = "frame_id, paths, size_bytes, labels, kept_at, source_id, dhash, label_counts, synced, why"
EVICTION_COLUMNS = "frame_id, paths, size_bytes, labels, synced, evicting"


@dataclass(frozen=True, slots=True)
class KeptFrame:
    """One kept frame as the store knows it: ``kept_at`` epoch seconds, ``size_bytes`` the sum of
    its files' sizes, ``dhash`` and ``label_counts`` for the duplicate veto, ``why`` the decision's
    reasons and triggers as JSON."""

    frame_id: str
    paths: tuple[str, ...]
    size_bytes: int
    labels: tuple[str, ...]
    kept_at: float
    source_id: str = ""
    dhash: int | None = None
    label_counts: tuple[tuple[str, int], ...] = ()
    synced: bool = False
    why: dict[str, Any] | None = None


def to_frame(row: Sequence[Any]) -> KeptFrame:
    """A row of ``FRAME_COLUMNS`` as a ``KeptFrame``."""
    frame_id, paths, size, labels, kept_at, source_id, dhash, counts, synced, why = row
    return KeptFrame(
        frame_id=frame_id,
        paths=tuple(json.loads(paths)),
        size_bytes=int(size),
        labels=tuple(json.loads(labels)),
        kept_at=float(kept_at),
        source_id=source_id,
        dhash=int(dhash, 16) if dhash else None,
        label_counts=tuple(sorted(json.loads(counts).items())) if counts else (),
        synced=bool(synced),
        why=json.loads(why) if why else None,
    )


def to_eviction(row: Sequence[Any], cause: str | None = None) -> Eviction:
    """A row of ``EVICTION_COLUMNS`` as an ``Eviction`` (``cause``: the row's own when None)."""
    frame_id, paths, size, labels, synced, evicting = row
    return Eviction(
        frame_id,
        tuple(json.loads(paths)),
        cause if cause is not None else str(evicting or ""),
        int(size),
        tuple(json.loads(labels)),
        bool(synced),
    )


def insert_frame(db: sqlite3.Connection, frame: KeptFrame, order: int, *, replace: bool = True) -> bool:
    """Insert ``frame`` as the ``order``-th kept frame, replacing a row of the same id (or, with
    ``replace=False``, leaving it: then returns False)."""
    cursor = db.execute(
        f"INSERT OR {'REPLACE' if replace else 'IGNORE'} INTO frames ({FRAME_COLUMNS}, ord, evicting)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
        (
            frame.frame_id,
            json.dumps(frame.paths),
            frame.size_bytes,
            json.dumps(frame.labels),
            frame.kept_at,
            frame.source_id,
            None if frame.dhash is None else f"{frame.dhash:016x}",
            json.dumps(dict(frame.label_counts)) if frame.label_counts else None,
            int(frame.synced),
            json.dumps(frame.why) if frame.why else None,
            order,
        ),
    )
    return bool(cursor.rowcount)
