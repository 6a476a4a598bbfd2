"""Atomic file writes: a killed process leaves the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import itertools
import json
import logging
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_temp_names = itertools.count()  # next() on it is atomic under the GIL: safe from any thread


def _temp_name(target: str) -> str:
    folder, name = os.path.split(target)
    return f"{folder or '.'}/.{name}.{os.getpid()}-{next(_temp_names)}.tmp"


def create_temp(target: str | os.PathLike[str]) -> tuple[int, str]:
    """A new ``.<name>.<pid>-<n>.tmp`` beside ``target``, open for writing, with an ordinary file's
    permissions (0666 less the umask, as ``open()`` gives; ``mkstemp`` would give 0600, which hides
    kept frames and exports from a reviewer's sync or share running as another user)."""
    while True:
        tmp = _temp_name(os.fspath(target))
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), tmp
        except FileExistsError:  # left by an earlier process with the same pid
            continue


@contextlib.contextmanager
def _renamed_into_place(tmp: str, target: str, *, fsync: bool) -> Iterator[None]:
    """After the block, rename ``tmp`` over ``target`` (and with ``fsync`` flush the folder);
    when the block raises, remove ``tmp``."""
    try:
        yield
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if fsync:
        fsync_dir(os.path.dirname(target) or ".")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``.

    ``fsync`` flushes the file to the device before the rename (and the folder after it);
    turn it off only for files that are cheap to regenerate.
    """
    target = os.fspath(path)  # strings, not Paths: a few microseconds a file
    fd, tmp = create_temp(target)
    with _renamed_into_place(tmp, target, fsync=fsync):
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)


_LASTING_LINK_ERRORS = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES)


class LinkRefused(Exception):
    """A hard link cannot be made here for a reason that will not go away (another file system,
    no permission, links unsupported): stop trying."""


class _NotTheSameFile(Exception):
    pass


class _AlreadyLinked(Exception):
    pass


def atomic_link(
    source: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    size: int,
    mtime_ns: int,
    fsync: bool = True,
) -> bool:
    """Make ``path`` a hard link to ``source``, atomically (a temp link renamed into place), when
    ``source`` is still the file it was (``size`` bytes, modified at ``mtime_ns``) and others may
    read it as they may read the files written here; True when done. False (nothing changed) when
    the file is not the same or not readable by group and others; ``LinkRefused`` for a lasting
    reason. ``fsync`` as for ``atomic_write_bytes``."""
    target = os.fspath(path)
    while True:
        tmp = _temp_name(target)
        try:
            os.link(source, tmp)
            break
        except FileExistsError:  # left by an earlier process with the same pid
            continue
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno in _LASTING_LINK_ERRORS:
                raise LinkRefused(exc.strerror or str(exc)) from None
            raise
    try:
        with _renamed_into_place(tmp, target, fsync=fsync):
            st = os.stat(tmp)
            readable = st.st_mode & (stat.S_IRGRP | stat.S_IROTH) == stat.S_IRGRP | stat.S_IROTH
            if not (st.st_size == size and st.st_mtime_ns == mtime_ns and readable):
                raise _NotTheSameFile
            if _is_file(target, st):
                # renaming a link over another link to the same file does nothing (rename(2)) and
                # would leave the temp link behind
                raise _AlreadyLinked
            if fsync:
                fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
    except _NotTheSameFile:
        return False
    except _AlreadyLinked:
        return True
    return True


def _is_file(path: str, st: os.stat_result) -> bool:
    """Whether ``path`` is the file ``st`` describes (another hard link to it)."""
    try:
        return os.path.samestat(os.stat(path), st)
    except FileNotFoundError:
        return False


def atomic_write_text(path: str | os.PathLike[str], text: str, *, fsync: bool = True) -> None:
    """``atomic_write_bytes`` for UTF-8 text (no BOM)."""
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_write_json(
    path: str | os.PathLike[str], obj: Any, *, indent: int | None = 4, fsync: bool = True
) -> None:
    """Write ``obj`` as UTF-8 JSON atomically (``indent=4`` matches what VoTT writes)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False), fsync=fsync)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename) to the device; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def syncfs(folder: str | os.PathLike[str]) -> None:
    """Flush every written file of the filesystem holding ``folder`` to the device (Linux
    ``syncfs``; ``os.sync`` elsewhere)."""
    libc_syncfs = _libc_syncfs()
    if libc_syncfs is None:
        os.sync()
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        if libc_syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


@functools.cache
def _libc_syncfs() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


class GroupSync:
    """Group commit for files written with ``fsync=False``: one ``syncfs`` of their filesystem at
    most every ``interval_s`` seconds instead of two fsyncs per file. A power cut loses at most
    the files of the last interval (they may come back empty); call ``flush()`` before writing a
    file that refers to them, and on close."""

    def __init__(self, folder: str | os.PathLike[str], interval_s: float) -> None:
        self.folder = Path(folder)
        self.interval_s = interval_s
        self._dirty = False
        self._flushed_at = time.monotonic()
        self.flushes = 0

    def wrote(self) -> None:
        """Note a file written without fsync; flushes when the interval is over."""
        self._dirty = True
        self.flush_if_due()

    def flush_if_due(self) -> None:
        """Flush when files wait and the interval is over (call it now and then, so that the last
        files of a burst do not wait for the next write)."""
        if self._dirty and time.monotonic() - self._flushed_at >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        """Flush now if anything was written since the last flush."""
        if self._dirty:
            syncfs(self.folder)
            self._dirty = False
            self.flushes += 1
        self._flushed_at = time.monotonic()


def remove_stale_temp_files(*folders: Path) -> int:
    """Delete the temp files (``.<name>.<pid>-<n>.tmp``) that writes killed half-way left in
    ``folders``: those whose process no longer runs on this machine. Returns how many."""
    removed = 0
    for folder in folders:
        try:
            names = [e.name for e in os.scandir(folder) if e.name.startswith(".") and e.name.endswith(".tmp")]
        except FileNotFoundError:
            continue
        for name in names:
            match = re.search(r"\.(\d+)-\d+\.tmp$", name)
            if match and _process_alive(int(match.group(1))):
                continue
            (folder / name).unlink(missing_ok=True)
            removed += 1
    if removed:
        log.info("removed %d temporary file(s) left by interrupted writes", removed)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in ``chunk_bytes`` chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
