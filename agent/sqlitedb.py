"""Opening the SQLite files that hold durable state (the MQTT outbox, the harvest index).

Both are one file in WAL mode with ``synchronous=NORMAL``: a commit is a ``write()`` into the WAL,
so a killed process (SIGKILL, OOM) loses nothing committed, and the owner bounds what a power cut
can take by calling ``checkpoint()`` every couple of seconds (it syncs the WAL), instead of an
fsync per commit that an SD card would pay in milliseconds and wear.

``open_database`` also:

- upgrades the schema by what the tables have: missing columns are added in one transaction
  with the new ``user_version``, so a crash half-way leaves the old schema, never half of one;
- sets an unreadable file aside (``<name>.corrupt-<epoch s>``, with its ``-wal``, ``-shm`` and any
  companion named by ``aside_suffixes``) and starts an empty one, because a damaged file must not
  stop the agent from doing its main job.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schema:
    """What a database file holds: ``create`` (``CREATE ... IF NOT EXISTS`` statements), the columns
    added since version 1 as ``(table, column, type)`` and the current ``version``; files of
    ``accepted_versions`` are opened (and upgraded), others are treated as unreadable."""

    version: int
    create: str
    added_columns: Sequence[tuple[str, str, str]] = ()
    accepted_versions: Sequence[int] = (0, 1)


def open_database(
    path: Path,
    schema: Schema,
    *,
    what: str,
    aside_suffixes: Sequence[str] = (),
    clock: Callable[[], float] = time.time,
) -> sqlite3.Connection:
    """Open (or create) ``path`` for use from several threads (the caller serialises access with
    its own lock; ``isolation_level=None``: the caller writes ``BEGIN``/``COMMIT``). ``what`` names
    the file in log lines (e.g. ``MQTT outbox``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _connect(path, schema, what)
    except sqlite3.DatabaseError as exc:
        aside = path.with_name(f"{path.name}.corrupt-{int(clock())}")
        log.error("%s %s is unreadable (%s); moved it to %s and started empty", what, path, exc, aside)
        for suffix in ("", "-wal", "-shm", *aside_suffixes):
            src = Path(f"{path}{suffix}")
            if src.exists():
                src.replace(Path(f"{aside}{suffix}"))
        return _connect(path, schema, what)


def _connect(path: Path, schema: Schema, what: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    try:
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # effective only when the file is new
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("%s %s: WAL mode unavailable (journal_mode=%s)", what, path, mode)
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA journal_size_limit = 16777216")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (*schema.accepted_versions, schema.version):
            raise sqlite3.DatabaseError(f"schema version {version}, expected {schema.version}")
        db.executescript(schema.create)
        _add_columns(db, schema)
    except BaseException:
        db.close()
        raise
    return db


def _add_columns(db: sqlite3.Connection, schema: Schema) -> None:
    """Add the columns a table of an older schema (or one whose version was never stamped) lacks,
    judged by what the table has, in one transaction with the version."""
    present: dict[str, set[str]] = {}
    for table, _, _ in schema.added_columns:
        if table not in present:
            present[table] = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    with transaction(db):
        for table, name, kind in schema.added_columns:
            if name not in present[table]:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        db.execute(f"PRAGMA user_version = {int(schema.version)}")


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN`` ... ``COMMIT``, or ``ROLLBACK`` when the block raises."""
    db.execute("BEGIN")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def checkpoint(db: sqlite3.Connection, what: str) -> None:
    """Sync the WAL and copy it into the database file; give freed pages back when many."""
    try:
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        if free > 2048:
            db.execute(f"PRAGMA incremental_vacuum({int(free)})")
    except sqlite3.Error as exc:
        log.debug("%s checkpoint failed: %s", what, exc)


class DeferredCheckpoint:
    """Bounds what a power cut can take to ~``interval_s`` of commits: after a change, checkpoint
    at once when the last one is that old, else from a timer when the interval is over (so the last
    commits of a burst do not wait for the next change). ``lock`` is the owner's lock around ``db``."""

    def __init__(
        self, db: sqlite3.Connection, lock: threading.RLock, *, what: str, interval_s: float = 2.0
    ) -> None:
        self.db = db
        self.lock = lock
        self.what = what
        self.interval_s = interval_s
        self._dirty = False
        self._synced_at = time.monotonic()
        self._timer: threading.Timer | None = None
        self._closed = False

    def changed(self) -> None:
        """A commit happened (call with ``lock`` held)."""
        self._dirty = True
        wait = self.interval_s - (time.monotonic() - self._synced_at)
        if wait <= 0:
            self.sync()
        elif self._timer is None:
            self._timer = threading.Timer(wait, self._from_timer)
            self._timer.daemon = True
            self._timer.start()

    @property
    def pending(self) -> bool:
        """Commits wait for the next checkpoint."""
        return self._dirty

    def sync(self) -> None:
        """Checkpoint now if anything changed since the last one."""
        with self.lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._dirty and not self._closed:
                checkpoint(self.db, self.what)
            self._dirty = False
            self._synced_at = time.monotonic()

    def close(self) -> None:
        """Checkpoint what is pending; no timer fires after this."""
        with self.lock:
            self.sync()
            self._closed = True

    def _from_timer(self) -> None:
        with self.lock:
            self._timer = None
            self.sync()
