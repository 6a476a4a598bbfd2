"""The outbox: QoS 1 messages wait on disk until the broker acknowledges them.

paho keeps unsent messages only in memory; this table is ours. A message is committed
here *before* it is handed to paho and deleted only when its PUBACK arrives, so broker
outages, network loss and agent restarts (SIGKILL included) lose nothing: on start-up
and on reconnect the sender drains the table again.

Storage: one SQLite file (opened by ``agent.sqlitedb``, as the harvest index is) in WAL mode with
``synchronous=NORMAL``. Why not ``FULL``:

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

Frames as files: a message whose payload is already a file on the same file system (a kept
frame's JPEG in the VoTT project) is stored as a hard link to that file in the folder beside the
database (``<outbox>.files``) instead of a copy of its bytes in SQLite. Copying 50-200 kB into
the WAL, again into the database at each checkpoint, and freeing the pages on acknowledgement
was the largest cost of the output thread per kept frame; a link costs one ``link()`` and one
``unlink()``. The link is made before the row is committed and removed after the row is
deleted; links no row names (a crash between the two) are removed at start-up. The row keeps the
payload's CRC-32 (SQLite checksums its own pages, not the linked file), checked before sending;
``checkpoint()`` syncs the folder with the WAL. Where links are impossible (another file system,
no permission) the bytes go into SQLite as before. The payloads of links made by this process stay
in memory until taken (up to ``_IN_MEMORY_MAX_BYTES``), so the usual path, a frame sent milliseconds
after it was stored, neither reads the file back nor checksums it again: the CRC guards against a
power cut, which a process cannot live through.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import json
import logging
import os
import sqlite3
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from agent.fsutil import fsync_dir
from agent.sqlitedb import Schema, open_database

log = logging.getLogger(__name__)

_SCHEMA = Schema(
    version=2,  # 2: payload_file, payload_crc
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
    # a table of schema 1 (or one whose version was never stamped) gains these
    added_columns=(("messages", "payload_file", "TEXT"), ("messages", "payload_crc", "INTEGER")),
)
_SWEEP_INTERVAL_S = 5.0
_DROP_LOG_INTERVAL_S = 60.0
# payloads of links made by this process kept in memory until sent (the oldest give way first)
_IN_MEMORY_MAX_BYTES = 4 * 1024 * 1024


class MessageClass(IntEnum):
    """Priority class: lower values are sent first and dropped last."""

    ALERT = 0
    DETECTION = 1
    ANNOTATION = 2
    FRAME = 3

    @property
    def label(self) -> str:
        """Lower-case name used in stats (``alert``, ``detection``, ``annotation``, ``frame``)."""
        return self.name.lower()


# Order in which the size bound evicts: frames give way first, alerts last.
EVICTION_ORDER = (MessageClass.FRAME, MessageClass.ANNOTATION, MessageClass.DETECTION, MessageClass.ALERT)
DROP_REASONS = ("expired", "age", "size", "refused", "missing")


@dataclass(frozen=True, slots=True)
class Message:
    """One message to publish. ``expiry_s`` is the MQTT 5 message expiry (None: none);
    ``frame_id`` ties it to a frame (reported when the broker acknowledges a frame);
    ``payload_file`` names a file holding exactly ``payload``, which the outbox may keep as a
    hard link instead of copying the bytes."""

    topic: str
    payload: bytes
    klass: MessageClass
    qos: int = 1
    retain: bool = False
    content_type: str | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    expiry_s: int | None = None
    frame_id: str | None = None
    payload_file: str | Path | None = None

    @property
    def size(self) -> int:
        """Bytes counted against the outbox bound: payload plus topic."""
        return len(self.payload) + len(self.topic)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as stored: ``seq`` (sending order), wall-clock ``created`` and ``expires`` (s);
    ``size`` the bytes it counts against the bound; ``link`` the name of its payload's hard link in
    the outbox's files folder (None: the payload is in SQLite) and ``crc`` that payload's CRC-32."""

    seq: int
    message: Message
    created: float
    expires: float | None
    size: int
    link: str | None = None
    crc: int | None = None

    def with_payload(self, payload: bytes) -> StoredMessage:
        """This message carrying ``payload`` (read from its link)."""
        return dataclasses.replace(self, message=dataclasses.replace(self.message, payload=payload))

    def remaining_expiry_s(self, now: float) -> int | None:
        """Whole seconds left before expiry (at least 1), or None without expiry."""
        if self.expires is None:
            return None
        return max(1, int(self.expires - now))


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
        self._linking = True  # False once a hard link failed for a lasting reason
        self._links_unsynced = False  # links made since the files folder was last synced
        # unique link names without a getrandom() per frame (uuid4 cost ~0.5 ms a frame on the bench)
        self._link_prefix = f"{time.time_ns():x}"
        self._link_count = itertools.count()
        self._in_memory: dict[int, bytes] = {}  # seq -> payload of a link made by this process, not yet taken
        self._in_memory_bytes = 0
        self._db = open_database(
            self.path, _SCHEMA, what="MQTT outbox", aside_suffixes=(".files",), clock=self._clock
        )  # .files: the frames its rows link to are set aside with it
        self._load_totals()
        self.files_dir.mkdir(exist_ok=True)
        self._remove_orphan_links()

    # ---- lifecycle -------------------------------------------------------------------------------------

    def _load_totals(self) -> None:
        rows = self._db.execute("SELECT klass, COUNT(*), COALESCE(SUM(size), 0) FROM messages GROUP BY klass")
        for klass, count, size in rows:
            if klass in MessageClass._value2member_map_:
                self._count[MessageClass(klass)] = int(count)
                self._bytes[MessageClass(klass)] = int(size)

    def _remove_orphan_links(self) -> None:
        rows = self._db.execute("SELECT payload_file FROM messages WHERE payload_file IS NOT NULL")
        named = {name for (name,) in rows}
        orphans = [entry.name for entry in os.scandir(self.files_dir) if entry.name not in named]
        if orphans:
            log.info(
                "MQTT outbox: removing %d file(s) no message names (a crash while storing)", len(orphans)
            )
            self._unlink(orphans)

    def close(self) -> None:
        """Checkpoint and close the file; messages not yet acknowledged stay for the next start."""
        with self._lock:
            self._inflight.clear()
            self._in_memory.clear()
            self._in_memory_bytes = 0
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
                links.extend(self._link(m) if m.payload_file is not None else None for m in messages)
                self._db.execute("BEGIN")
                try:
                    seqs = [
                        int(
                            self._insert(m, link, now, now + m.expiry_s if m.expiry_s else None).lastrowid
                            or 0
                        )
                        for m, link in zip(messages, links, strict=True)
                    ]
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except BaseException:
                self._unlink(link for link in links if link)
                raise
            for message, link, seq in zip(messages, links, seqs, strict=True):
                self._count[message.klass] += 1
                self._bytes[message.klass] += message.size
                if link:
                    self._keep_in_memory(seq, message.payload)
            self._stored_total += len(messages)
            self._dirty = True
            self._links_unsynced |= any(links)
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

    def _link(self, message: Message) -> str | None:
        """A hard link to the message's payload file in the files folder, by name; None: the bytes
        go into SQLite (links impossible here, or the file no longer holds the payload)."""
        if not self._linking or message.payload_file is None:
            return None
        name = f"{self._link_prefix}-{next(self._link_count)}"
        target = self.files_dir / name
        try:
            os.link(message.payload_file, target)
            size = target.stat().st_size
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                self._linking = False
                log.info(
                    "MQTT outbox: frames are copied into %s (no hard link from %s possible: %s)",
                    self.path,
                    message.payload_file,
                    exc.strerror,
                )
            self._unlink([name])
            return None
        if size != len(message.payload):  # the file was replaced since it was read
            self._unlink([name])
            return None
        return name

    def _keep_in_memory(self, seq: int, payload: bytes) -> None:
        self._in_memory[seq] = payload
        self._in_memory_bytes += len(payload)
        while self._in_memory_bytes > _IN_MEMORY_MAX_BYTES:
            self._pop_from_memory(next(iter(self._in_memory)))

    def _pop_from_memory(self, seq: int) -> bytes | None:
        payload = self._in_memory.pop(seq, None)
        if payload is not None:
            self._in_memory_bytes -= len(payload)
        return payload

    def _linked_payload(self, item: StoredMessage) -> bytes | None:
        """The payload ``item``'s link holds: from memory when this process made the link, else read
        from the file and checked against its CRC-32; None when gone or damaged."""
        data = self._pop_from_memory(item.seq)
        if data is not None:
            return data
        try:
            data = (self.files_dir / str(item.link)).read_bytes()
        except OSError:
            return None
        # a power cut before the frame reached the disk can leave it empty, short or full of zeros
        # (file systems that log the size before the data)
        return data if zlib.crc32(data) == item.crc else None

    def _unlink(self, names: Iterable[str]) -> None:
        for name in names:
            try:
                os.unlink(self.files_dir / name)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("MQTT outbox: cannot remove %s: %s", self.files_dir / name, exc)

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
                    f"SELECT {_COLUMNS} FROM messages"
                    f" WHERE {where} {not_inflight} {fresh} ORDER BY seq LIMIT ?",
                    (*exclude, now, room),
                ).fetchall()
                for row in rows:
                    item = _row_to_stored(row)
                    if item.link:
                        data = self._linked_payload(item)
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
        self._db.execute("BEGIN")
        try:
            for seq, *_ in rows:
                if self._db.execute("DELETE FROM messages WHERE seq = ?", (seq,)).rowcount:
                    deleted.add(seq)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._unlink(link for seq, _, _, link in rows if link and seq in deleted)
        for seq, klass, size, _ in rows:
            if seq in deleted:
                self._pop_from_memory(seq)
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
                if self._links_unsynced:  # the rows' links reach the disk with the WAL they are in
                    self._links_unsynced = False
                    fsync_dir(self.files_dir)
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
                if free > 2048:
                    self._db.execute(f"PRAGMA incremental_vacuum({int(free)})")
            except (sqlite3.Error, OSError) as exc:
                log.debug("MQTT outbox checkpoint failed: %s", exc)

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

    def stats(self) -> dict[str, Any]:
        """Counts for the stats topic: ``messages``, ``bytes``, ``by_class`` (messages), ``inflight``,
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


_COLUMNS = (
    "seq, topic, payload, qos, retain, klass, content_type, user_properties, "
    "expiry_s, frame_id, created, expires, size, payload_file, payload_crc"
)

_REASON_TEXT = {
    "expired": "past their message expiry",
    "age": "older than outbox.max_age_h",
    "size": "outbox over outbox.max_mb (frames go first, then annotations, detections, alerts)",
    "missing": "their frame file in the outbox's .files folder is gone (removed by hand?)",
}


def _row_to_stored(row: tuple[Any, ...]) -> StoredMessage:
    """The stored message of a row (an empty payload when it is in a linked file)."""
    (
        seq,
        topic,
        payload,
        qos,
        retain,
        klass,
        content_type,
        user_props,
        expiry_s,
        frame_id,
        created,
        expires,
        size,
        link,
        crc,
    ) = row
    props = tuple((str(k), str(v)) for k, v in json.loads(user_props)) if user_props else ()
    message = Message(
        topic=topic,
        payload=bytes(payload),
        klass=MessageClass(klass),
        qos=int(qos),
        retain=bool(retain),
        content_type=content_type,
        user_properties=props,
        expiry_s=expiry_s,
        frame_id=frame_id,
    )
    return StoredMessage(
        seq=int(seq),
        message=message,
        created=float(created),
        expires=expires,
        size=int(size),
        link=link,
        crc=crc,
    )
