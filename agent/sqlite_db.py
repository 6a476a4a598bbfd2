"""Durable state in one SQLite file: WAL, ``synchronous=NORMAL``, a schema that grows by columns,
and an unreadable file set aside instead of stopping the agent.

In WAL mode with ``synchronous=NORMAL`` a commit is a ``write()`` into the WAL, i.e. into the
kernel's page cache: a killed process (SIGKILL, OOM, crash) loses nothing committed; a power cut
keeps the file consistent (the WAL is checksummed) and loses at most the commits since the caller
last checkpointed (``PRAGMA wal_checkpoint``), which callers do every few seconds instead of an
fsync per commit (milliseconds each on an SD card).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)


def open_database(
    path: Path,
    *,
    what: str,
    schema: str,
    version: int,
    older_versions: Sequence[int] = (0,),
    added_columns: Sequence[tuple[str, str, str]] = (),
    companions: Sequence[str] = (),
    clock: Callable[[], float] = time.time,
) -> sqlite3.Connection:
    """The database at ``path`` (created with ``schema``, ``PRAGMA user_version`` = ``version``),
    shareable between threads (the caller serialises access). A file of an ``older_versions``
    schema gains the ``added_columns`` ``(table, column, type)`` it lacks, in one transaction with
    the version. An unreadable file (and its ``companions``: paths ``<path><suffix>``) is moved to
    ``<path>.corrupt-<time>`` and an empty database started, logged naming ``what``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _connect(path, what, schema, version, older_versions, added_columns)
    except sqlite3.DatabaseError as exc:
        # A damaged file must not stop the agent from doing its main job: keep it for inspection.
        aside = path.with_name(f"{path.name}.corrupt-{int(clock())}")
        log.error("%s %s is unreadable (%s); moved it to %s and started empty", what, path, exc, aside)
        for suffix in ("", "-wal", "-shm", *companions):
            src = Path(f"{path}{suffix}")
            if src.exists():
                src.replace(Path(f"{aside}{suffix}"))
        return _connect(path, what, schema, version, older_versions, added_columns)


def _connect(
    path: Path,
    what: str,
    schema: str,
    version: int,
    older_versions: Sequence[int],
    added_columns: Sequence[tuple[str, str, str]],
) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    try:
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # effective only when the file is new
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("%s %s: WAL mode unavailable (journal_mode=%s)", what, path, mode)
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA journal_size_limit = 16777216")
        found = db.execute("PRAGMA user_version").fetchone()[0]
        if found != version and found not in older_versions:
            raise sqlite3.DatabaseError(f"schema version {found}, expected {version}")
        db.executescript(schema)
        # By what the tables have, in one transaction with the version: a crash half-way is harmless.
        db.execute("BEGIN")
        try:
            for table, column, kind in added_columns:
                columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                if column not in columns:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            db.execute(f"PRAGMA user_version = {version}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    except BaseException:
        db.close()
        raise
    return db
