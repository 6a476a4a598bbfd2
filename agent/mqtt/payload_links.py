"""Kept frames in the outbox as hard links, not copies: the ``<outbox>.files`` folder.

A message whose payload is already a file on the same file system (a kept frame's JPEG in the VoTT
project) is stored as a hard link to that file instead of a copy of its bytes in SQLite: copying
50-200 kB into the WAL, again into the database at each checkpoint, and freeing the pages on
acknowledgement was the largest cost of the output thread per kept frame; a link costs one
``link()`` and one ``unlink()``. The row keeps the payload's CRC-32 (SQLite checksums its own
pages, not the linked file), checked before sending. The payloads of links made by this process
stay in memory until taken (up to ``IN_MEMORY_MAX_BYTES``), so the usual path, a frame sent
milliseconds after it was stored, neither reads the file back nor checksums it again: the CRC
guards against a power cut, which a process cannot live through.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import time
import zlib
from collections.abc import Iterable
from pathlib import Path

from agent.fsutil import fsync_dir

log = logging.getLogger(__name__)

IN_MEMORY_MAX_BYTES = 4 * 1024 * 1024
_LASTING_ERRORS = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES)


class PayloadLinks:
    """The files folder of one outbox (``what`` names the outbox in log lines). Not thread-safe:
    the outbox calls it under its own lock."""

    def __init__(self, folder: Path, *, what: str) -> None:
        self.folder = folder
        self.what = what
        self.linking = True  # False once a hard link failed for a lasting reason
        self._unsynced = False  # links made since the folder was last synced
        # unique link names without a getrandom() per frame (uuid4 cost ~0.5 ms a frame on the bench)
        self._prefix = f"{time.time_ns():x}"
        self._count = itertools.count()
        self._in_memory: dict[int, bytes] = {}  # seq -> payload of a link made here, not yet taken
        self._in_memory_bytes = 0
        folder.mkdir(exist_ok=True)

    def remove_orphans(self, named: set[str]) -> None:
        """Remove the links no row names (a crash between linking and committing the row)."""
        orphans = [entry.name for entry in os.scandir(self.folder) if entry.name not in named]
        if orphans:
            log.info(
                "MQTT outbox: removing %d file(s) no message names (a crash while storing)", len(orphans)
            )
            self.unlink(orphans)

    def link(self, source: str | os.PathLike[str], payload: bytes) -> str | None:
        """A hard link to ``source`` (a file holding exactly ``payload``) in the folder, by name;
        None: the bytes go into SQLite (links impossible here, or the file changed since)."""
        if not self.linking:
            return None
        name = f"{self._prefix}-{next(self._count)}"
        target = self.folder / name
        try:
            os.link(source, target)
            size = target.stat().st_size
        except OSError as exc:
            if exc.errno in _LASTING_ERRORS:
                self.linking = False
                log.info(
                    "MQTT outbox: frames are copied into %s (no hard link from %s possible: %s)",
                    self.what,
                    source,
                    exc.strerror,
                )
            self.unlink([name])
            return None
        if size != len(payload):  # the file was replaced since it was read
            self.unlink([name])
            return None
        self._unsynced = True
        return name

    def keep_in_memory(self, seq: int, payload: bytes) -> None:
        """Keep the payload of row ``seq``'s new link until it is taken (the oldest give way first)."""
        self._in_memory[seq] = payload
        self._in_memory_bytes += len(payload)
        while self._in_memory_bytes > IN_MEMORY_MAX_BYTES:
            self.pop_from_memory(next(iter(self._in_memory)))

    def pop_from_memory(self, seq: int) -> bytes | None:
        """Row ``seq``'s payload when it is still in memory (and forget it)."""
        payload = self._in_memory.pop(seq, None)
        if payload is not None:
            self._in_memory_bytes -= len(payload)
        return payload

    def forget_memory(self) -> None:
        """Drop every payload kept in memory."""
        self._in_memory.clear()
        self._in_memory_bytes = 0

    def payload(self, seq: int, name: str, crc: int | None) -> bytes | None:
        """The payload row ``seq``'s link ``name`` holds: from memory when this process made the
        link, else read from the file and checked against ``crc``; None when gone or damaged."""
        data = self.pop_from_memory(seq)
        if data is not None:
            return data
        try:
            data = (self.folder / name).read_bytes()
        except OSError:
            return None
        # a power cut before the frame reached the disk can leave it empty, short or full of zeros
        # (file systems that log the size before the data)
        return data if zlib.crc32(data) == crc else None

    def unlink(self, names: Iterable[str]) -> None:
        """Remove these links (missing ones are fine)."""
        for name in names:
            try:
                os.unlink(self.folder / name)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("MQTT outbox: cannot remove %s: %s", self.folder / name, exc)

    def sync(self) -> None:
        """Flush the folder's new entries to the device (with the WAL that names them)."""
        if self._unsynced:
            self._unsynced = False
            fsync_dir(self.folder)
