"""The outbox: QoS 1 messages wait on disk until the broker acknowledges them.

paho keeps unsent messages only in memory; this table is ours. A message is committed
here *before* it is handed to paho and deleted only when its PUBACK arrives, so broker
outages, network loss and agent restarts (SIGKILL included) lose nothing: on start-up
and on reconnect the sender drains the table again.

Storage: one SQLite file in WAL mode with ``synchronous=NORMAL``. Why not ``FULL``:

- A commit in WAL/NORMAL is a ``write()`` into the WAL file, i.e. into the kernel's page
  cache. A killed process (SIGKILL, OOM, crash) loses nothing that was committed, because
  the kernel still writes those pages out.
- On *power loss* the database stays consistent (the WAL is checksummed and a torn tail is
  ignored), but commits since the WAL was last synced can be lost. ``FULL`` would fsync on
  every commit: several milliseconds per message on an SD card, once per detection
  message of every frame, wearing the card and competing with inference. Instead the
  sender calls ``checkpoint()`` every couple of seconds, which syncs the WAL; that bounds
  what power loss can take to the last ~2 s of messages, produced from frames that were
  themselves only in RAM. Acknowledged rows whose deletion is lost come back and are sent
  again: a duplicate with the same frame id, which consumers de-duplicate.

Sending order: alerts first (oldest first), then every other message in the order it was
stored. In-flight messages (sent, not yet acknowledged) are at most ``inflight_max``.

Bounds (every drop is counted by reason and class, see ``Outbox.stats``):

- ``expired``: a message past its own expiry (frames: ``frame_expiry_s``) is never sent.
- ``age``: anything older than ``max_age_s`` is dropped, whatever its class.
- ``size``: while the stored payload bytes exceed ``max_bytes``, the oldest message of the
  lowest class goes: frames first, then annotations, then detections, and alerts last.
- ``refused``: the broker answered the PUBACK with an error reason code (e.g. 0x87 not
  authorised): sending it again cannot succeed.
- ``missing``: a frame kept as a file (below) whose file is gone or fails its CRC-32 (a power cut before
  it reached the disk): it cannot be sent.

Messages in flight are never dropped by the bounds (their PUBACK may be on its way).
Times for age and expiry are wall-clock seconds (they must survive restarts).

Frames as files: a kept frame's JPEG is stored as a hard link in ``<outbox>.files``, not a copy
(``agent.mqtt.payload_links``); a link whose file is gone or damaged is dropped as ``missing``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from agent.mqtt.messages import (
    COLUMNS,
    DROP_REASONS,
    EVICTION_ORDER,
    Message,
    MessageClass,
    StoredMessage,
    row_to_stored,
)
from agent.mqtt.payload_links import PayloadLinks
from agent.sqlitedb import Schema, checkpoint, open_database, transaction
from agent.stats import OutboxStats

log = logging.getLogger(__name__)

_SCHEMA = Schema(
    version=2,  # 2: payload_file, payload_crc
    added_columns=(("messages", "payload_file", "TEXT"), ("messages", "payload_crc", "INTEGER")),
    create="""
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    klass INTEGER NOT NULL,
    content_type TEXT,
    user_properties TEXT,
    expiry_s INTEGER,
    frame_id TEXT,
    created REAL NOT NULL,
    expires REAL,
    size INTEGER NOT NULL,
    payload_file TEXT,
    payload_crc INTEGER
);
CREATE INDEX IF NOT EXISTS messages_klass_seq ON messages (klass, seq);
CREATE INDEX IF NOT EXISTS messages_created ON messages (created);
CREATE INDEX IF NOT EXISTS messages_expires ON messages (expires) WHERE expires IS NOT NULL;
""",
)
_SWEEP_INTERVAL_S = 5.0
_DROP_LOG_INTERVAL_S = 60.0
# payloads of links made by this process kept in memory until sent (the oldest give way first)
_IN_MEMORY_MAX_BYTES = 4 * 1024 * 1024


class Outbox:
    """A durable, bounded FIFO of ``Message`` in one SQLite file; safe to share between threads."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int,
        max_age_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.files_dir = self.path.with_name(f"{self.path.name}.files")
        self.max_bytes = int(max_bytes)
        self.max_age_s = float(max_age_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._inflight: dict[int, StoredMessage] = {}
        self._count = dict.fromkeys(MessageClass, 0)
        self._bytes = dict.fromkeys(MessageClass, 0)
        self._dropped: dict[str, dict[str, int]] = {
            r: {c.label: 0 for c in MessageClass} for r in DROP_REASONS
        }
        self._stored_total = 0
        self._dirty = False
        self._last_sweep = 0.0
        self._last_drop_log: dict[str, float] = {}
        self._db = open_database(
            self.path,
            _SCHEMA,
            what="MQTT outbox",
            aside_suffixes=(".files",),  # the frames its rows link to go aside with it
            clock=self._clock,
        )
        self._load_totals()
        self.links = PayloadLinks(self.files_dir, what=str(self.path))
        rows = self._db.execute("SELECT payload_file FROM messages WHERE payload_file IS NOT NULL")
        self.links.remove_orphans({name for (name,) in rows})

    # ---- lifecycle -------------------------------------------------------------------------------------

    def _load_totals(self) -> None:
        rows = self._db.execute("SELECT klass, COUNT(*), COALESCE(SUM(size), 0) FROM messages GROUP BY klass")
        for klass, count, size in rows:
            if klass in MessageClass._value2member_map_:
                self._count[MessageClass(klass)] = int(count)
                self._bytes[MessageClass(klass)] = int(size)

    def close(self) -> None:
        """Checkpoint and close the file; messages not yet acknowledged stay for the next start."""
        with self._lock:
            self._inflight.clear()
            self.links.forget_memory()
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.debug("MQTT outbox checkpoint on close failed: %s", exc)
            self._db.close()

    # ---- producing -------------------------------------------------------------------------------------

    def put(self, message: Message) -> int:
        """Store ``message`` durably (committed before this returns) and return its sequence number.

        May drop older messages (or this one) to respect the size bound.
        """
        return self.put_many([message])[0]

    def put_many(self, messages: Sequence[Message]) -> list[int]:
        """``put`` for several messages in one transaction (one commit for a frame's messages);
        returns their sequence numbers in order."""
        now = self._clock()
        links: list[str | None] = []
        with self._lock:
            try:
                links.extend(
                    self.links.link(m.payload_file, m.payload) if m.payload_file is not None else None
                    for m in messages
                )
                with transaction(self._db):
                    seqs = [
                        int(
                            self._insert(m, link, now, now + m.expiry_s if m.expiry_s else None).lastrowid
                            or 0
                        )
                        for m, link in zip(messages, links, strict=True)
                    ]
            except BaseException:
                self.links.unlink(link for link in links if link)
                raise
            for message, link, seq in zip(messages, links, seqs, strict=True):
                self._count[message.klass] += 1
                self._bytes[message.klass] += message.size
                if link:
                    self.links.keep_in_memory(seq, message.payload)
            self._stored_total += len(messages)
            self._dirty = True
            if self.total_bytes > self.max_bytes:
                self._evict_for_size()
        return seqs

    def _insert(
        self, message: Message, link: str | None, now: float, expires: float | None
    ) -> sqlite3.Cursor:
        return self._db.execute(
            "INSERT INTO messages (topic, payload, qos, retain, klass, content_type, user_properties,"
            " expiry_s, frame_id, created, expires, size, payload_file, payload_crc)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                message.topic,
                b"" if link else message.payload,
                message.qos,
                int(message.retain),
                int(message.klass),
                message.content_type,
                json.dumps(message.user_properties) if message.user_properties else None,
                message.expiry_s,
                message.frame_id,
                now,
                expires,
                message.size,
                link,
                zlib.crc32(message.payload) if link else None,  # SQLite checksums its own pages, not ours
            ),
        )

    # ---- sending ---------------------------------------------------------------------------------------

    def take(self, limit: int) -> list[StoredMessage]:
        """Up to ``limit`` messages to send next (alerts first, then in stored order), now marked in
        flight. Stale messages are dropped first."""
        if limit <= 0:
            return []
        now = self._clock()
        with self._lock:
            if now - self._last_sweep >= _SWEEP_INTERVAL_S:
                self._drop_stale(now)
            exclude = list(self._inflight)
            marks = ",".join("?" * len(exclude))
            not_inflight = f"AND seq NOT IN ({marks})" if exclude else ""
            fresh = "AND (expires IS NULL OR expires > ?)"
            picked: list[StoredMessage] = []
            missing: list[StoredMessage] = []
            for where in ("klass = 0", "klass > 0"):
                room = limit - len(picked)
                if room <= 0:
                    break
                rows = self._db.execute(
                    f"SELECT {COLUMNS} FROM messages"
                    f" WHERE {where} {not_inflight} {fresh} ORDER BY seq LIMIT ?",
                    (*exclude, now, room),
                ).fetchall()
                for row in rows:
                    item = row_to_stored(row)
                    if item.link:
                        data = self.links.payload(item.seq, str(item.link), item.crc)
                        if data is None:
                            missing.append(item)
                            continue
                        item = item.with_payload(data)
                    picked.append(item)
            if missing:
                self._drop_missing(missing)
            for item in picked:
                self._inflight[item.seq] = item
            return picked

    def _drop_missing(self, items: list[StoredMessage]) -> None:
        for item in self._delete(items):
            self._count_drop("missing", item.message.klass, 1)

    def ack(self, seqs: Iterable[int]) -> list[StoredMessage]:
        """The broker acknowledged these: delete them (one transaction). Returns the in-flight records
        that were deleted (unknown sequence numbers are ignored)."""
        with self._lock:
            items = [self._inflight.pop(s) for s in seqs if s in self._inflight]
            return self._delete(items) if items else []

    def _delete(self, items: list[StoredMessage]) -> list[StoredMessage]:
        """Delete these stored messages (``_delete_rows``); returns those deleted."""
        deleted = self._delete_rows([(item.seq, item.message.klass, item.size, item.link) for item in items])
        return [item for item in items if item.seq in deleted]

    def _delete_rows(self, rows: Sequence[tuple[int, int, int, str | None]]) -> set[int]:
        """Every deletion goes through here: rows ``(seq, klass, size, link)`` in one transaction, then
        their payload links, then the counters. Returns the sequence numbers deleted."""
        deleted: set[int] = set()
        with transaction(self._db):
            for seq, *_ in rows:
                if self._db.execute("DELETE FROM messages WHERE seq = ?", (seq,)).rowcount:
                    deleted.add(seq)
        self.links.unlink(link for seq, _, _, link in rows if link and seq in deleted)
        for seq, klass, size, _ in rows:
            if seq in deleted:
                self.links.pop_from_memory(seq)
                self._count[MessageClass(klass)] -= 1
                self._bytes[MessageClass(klass)] -= size
        self._dirty = True
        return deleted

    def refuse(self, seq: int) -> StoredMessage | None:
        """The broker refused this message (PUBACK error code): drop it, counted as ``refused``."""
        with self._lock:
            item = self._inflight.pop(seq, None)
            if item is None:
                return None
            if self._delete([item]):
                self._count_drop("refused", item.message.klass, 1)
        return item

    def release(self, seqs: Iterable[int] | None = None) -> None:
        """No longer in flight (all when ``seqs`` is None): they will be taken again."""
        with self._lock:
            if seqs is None:
                self._inflight.clear()
            else:
                for seq in seqs:
                    self._inflight.pop(seq, None)

    # ---- bounds ----------------------------------------------------------------------------------------

    def enforce_bounds(self) -> None:
        """Drop expired and too old messages now, then apply the size bound."""
        with self._lock:
            self._drop_stale(self._clock())
            if self.total_bytes > self.max_bytes:
                self._evict_for_size()

    def _drop_stale(self, now: float) -> None:
        self._last_sweep = now
        self._drop_where("expired", "expires IS NOT NULL AND expires <= ?", (now,))
        self._drop_where("age", "created < ?", (now - self.max_age_s,))

    def _drop_where(self, reason: str, where: str, params: tuple[Any, ...]) -> None:
        exclude = list(self._inflight)
        not_inflight = f" AND seq NOT IN ({','.join('?' * len(exclude))})" if exclude else ""
        rows = self._db.execute(
            f"SELECT seq, klass, size, payload_file FROM messages WHERE {where}{not_inflight}",
            (*params, *exclude),
        ).fetchall()
        if not rows:
            return
        deleted = self._delete_rows(rows)
        for klass, count in Counter(
            MessageClass(klass) for seq, klass, _, _ in rows if seq in deleted
        ).items():
            self._count_drop(reason, klass, count)

    def _evict_for_size(self) -> None:
        exclude = set(self._inflight)
        for klass in EVICTION_ORDER:
            while self.total_bytes > self.max_bytes and self._count[klass] > 0:
                rows = self._db.execute(
                    "SELECT seq, klass, size, payload_file FROM messages WHERE klass = ? ORDER BY seq"
                    " LIMIT 256",
                    (int(klass),),
                ).fetchall()
                victims = []
                freed = 0
                for row in rows:
                    if row[0] in exclude:
                        continue
                    victims.append(row)
                    freed += row[2]
                    if self.total_bytes - freed <= self.max_bytes:
                        break
                deleted = self._delete_rows(victims) if victims else set()
                if not deleted:
                    break
                self._count_drop("size", klass, len(deleted))
            if self.total_bytes <= self.max_bytes:
                return

    def _count_drop(self, reason: str, klass: MessageClass, count: int) -> None:
        self._dropped[reason][klass.label] += count
        if reason == "refused":
            return  # the sender logs refusals with the broker's reason code
        now = time.monotonic()
        if now - self._last_drop_log.get(reason, -_DROP_LOG_INTERVAL_S) >= _DROP_LOG_INTERVAL_S:
            self._last_drop_log[reason] = now
            log.warning(
                "MQTT outbox dropped %d %s message(s): %s (further drops are counted in stats, logged "
                "at most once a minute)",
                count,
                klass.label,
                _REASON_TEXT[reason],
            )

    # ---- maintenance and figures -----------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Sync the WAL and copy it into the database (bounds what power loss can take); returns quickly
        when nothing changed since the last call."""
        with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            try:
                self.links.sync()  # the rows' links reach the disk with the WAL they are in
            except OSError as exc:
                log.debug("MQTT outbox: syncing %s failed: %s", self.files_dir, exc)
            checkpoint(self._db, "MQTT outbox")

    @property
    def total_bytes(self) -> int:
        """Bytes stored (payload plus topic) over all classes."""
        return sum(self._bytes.values())

    def __len__(self) -> int:
        return sum(self._count.values())

    @property
    def inflight_count(self) -> int:
        """Messages taken and not yet acknowledged, refused or released."""
        return len(self._inflight)

    def stats(self) -> OutboxStats:
        """Counts for the stats topic (``agent.stats.OutboxStats``): ``messages``, ``bytes``, ``by_class`` (messages), ``inflight``,
        ``stored`` (since start), ``dropped`` (reason -> class -> count), ``dropped_total`` and
        ``oldest_age_s`` (None when empty)."""
        with self._lock:
            row = self._db.execute("SELECT MIN(created) FROM messages").fetchone()
            oldest = row[0] if row else None
            dropped = {reason: dict(classes) for reason, classes in self._dropped.items()}
            return {
                "messages": len(self),
                "bytes": self.total_bytes,
                "by_class": {c.label: self._count[c] for c in MessageClass},
                "inflight": len(self._inflight),
                "stored": self._stored_total,
                "dropped": dropped,
                "dropped_total": sum(sum(v.values()) for v in dropped.values()),
                "oldest_age_s": None if oldest is None else round(max(0.0, self._clock() - oldest), 1),
            }


_REASON_TEXT = {
    "expired": "past their message expiry",
    "age": "older than outbox.max_age_h",
    "size": "outbox over outbox.max_mb (frames go first, then annotations, detections, alerts)",
    "missing": "their frame file in the outbox's .files folder is gone (removed by hand?)",
}
