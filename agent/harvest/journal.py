"""Reading the JSONL journal that held the harvest index before it moved into SQLite.

Earlier versions wrote ``harvest-index.jsonl``: one JSON line per event, ``kept`` (the frame's
files, sizes, labels, hash, synced flag), ``synced`` and ``evicted``. ``read_journal`` replays it
into the frames it left on disk, oldest first; a damaged line (a power cut mid-write) is skipped
with a warning. ``import_journal`` copies them into the SQLite index once, in one transaction that
also records the import, then renames the journal ``harvest-index.jsonl.imported`` (a crash before
the rename: the next start sees the import recorded and only renames).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

from agent.harvest.rows import KeptFrame, insert_frame
from agent.sqlitedb import checkpoint, transaction

log = logging.getLogger(__name__)

_IMPORTED_KEY = "imported_journal"


def read_journal(path: Path) -> list[KeptFrame]:
    """The frames the journal at ``path`` says are kept, in the order they were (last) kept."""
    frames: dict[str, KeptFrame] = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                _apply(json.loads(line), frames)
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("harvest: %s line %d is damaged; skipped", path, number)
    return list(frames.values())


def _apply(record: dict[str, Any], frames: dict[str, KeptFrame]) -> None:
    op, frame_id = record["op"], str(record["id"])
    if op == "kept":
        entry = KeptFrame(
            frame_id=frame_id,
            paths=tuple(str(p) for p in record["paths"]),
            size_bytes=int(record["bytes"]),
            labels=tuple(str(label) for label in record.get("labels", ())),
            kept_at=float(record["kept_at"]),
            source_id=str(record.get("source", "")),
            dhash=int(record["dhash"], 16) if record.get("dhash") else None,
            label_counts=tuple(sorted((str(k), int(v)) for k, v in (record.get("counts") or {}).items())),
            synced=bool(record.get("synced", False)),
        )
        frames.pop(frame_id, None)  # kept again: it moves to the end, as the newest
        frames[frame_id] = entry
    elif op == "synced" and frame_id in frames:
        frames[frame_id] = dataclasses.replace(frames[frame_id], synced=True)
    elif op == "evicted":
        frames.pop(frame_id, None)


def import_journal(db: sqlite3.Connection, journal: Path) -> None:
    """Copy the frames of ``journal`` into the index ``db`` (unless done before), then rename it."""
    done = db.execute("SELECT value FROM meta WHERE key = ?", (_IMPORTED_KEY,)).fetchone()
    if done is None:
        frames = read_journal(journal)
        with transaction(db):
            for order, frame in enumerate(frames, start=1):
                insert_frame(db, frame, order)
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (_IMPORTED_KEY, str(journal)))
        log.info("harvest: imported %d kept frames from %s", len(frames), journal)
    checkpoint(db, "harvest index")  # on the disk before the journal is renamed away
    os.replace(journal, journal.with_name(journal.name + ".imported"))
