"""Locks that hold across hosts on a shared review root (NFS, SMB): lock files with a lease.

``flock`` is not enough: some network file systems keep it on one client, some do not support it.
A lock here is a file, ``<folder>/<name>.lock``, and uses only operations NFSv3+/SMB2+ servers
carry out atomically:

* **take**: create it with ``O_CREAT | O_EXCL`` (exactly one creator wins) and write who holds it:
  ``{"owner", "host", "pid", "token", "beat"}``. The holder keeps the file open.
* **hold long**: a holder that keeps a lock longer than a third of ``lease_s`` rewrites it through
  its open descriptor with ``beat`` + 1 and ``fsync`` (its heartbeat), from a thread, at most for
  ``max_hold_s``: a holder stuck for longer stops beating and loses the lock.
* **wait**: a waiter re-reads the file (``open`` + ``read``: close-to-open consistency gives the
  server's current content) and polls with back-off.
* **break a stale lock**: a lock whose content has not changed for ``lease_s`` of the *waiter's*
  own monotonic clock (no clock is compared across hosts), or whose holder was a process on this
  host that no longer exists, is renamed to a unique tomb name (one renamer wins), and the tomb
  is read back: if it is the stale lock seen, it is deleted; if it is a fresh lock taken in the
  meantime, it is linked back (``link`` fails if yet another lock exists) and its holder finds
  out when it checks (below).
* **check before writing**: the holder reads the lock file again right before each write that
  commits (``verify``); if it is no longer its own, ``LockLost`` is raised and nothing is written.
* **release**: only when the file is still its own, unlink it.

A holder paused longer than ``lease_s`` between its check and its write could still write after
its lock was broken; ``lease_s`` (default 30 s) is chosen much longer than that step (a rename).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_POLL_MIN_S = 0.0005
_POLL_MAX_S = 0.05


class LockTimeout(Exception):
    """The lock stayed held by someone else longer than the wait allowed."""


class LockLost(Exception):
    """Our lock was broken by another receiver (we held it past its lease without a heartbeat)."""


@dataclass
class _Held:
    name: str
    path: Path
    fd: int
    token: str
    taken_at: float
    content: bytes
    beat: int = 0
    beaten_at: float = field(default=0.0)


@dataclass
class _Seen:
    content: bytes
    since: float


class LeaseLocks:
    """Lease lock files in ``folder`` for one process (``owner`` names it in the files)."""

    def __init__(self, folder: Path, owner: str, *, lease_s: float = 30.0, max_hold_s: float = 600.0) -> None:
        self.folder = folder
        self.owner = owner
        self.lease_s = lease_s
        self.max_hold_s = max_hold_s
        self.host = socket.gethostname()
        self.broken = 0  # stale locks of others we broke
        self.folder.mkdir(parents=True, exist_ok=True)
        self._held: dict[str, _Held] = {}
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._beater: threading.Thread | None = None

    # ---- public -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def hold(self, name: str, wait_s: float) -> Iterator[None]:
        """Hold lock ``name`` for the block; ``LockTimeout`` when it cannot be had in ``wait_s``."""
        self.acquire(name, wait_s)
        try:
            yield
        finally:
            self.release(name)

    def acquire(self, name: str, wait_s: float) -> None:
        """Take lock ``name``, waiting at most ``wait_s`` seconds for its holder."""
        path = self.folder / f"{name}.lock"
        deadline = time.monotonic() + wait_s
        seen: _Seen | None = None
        delay = _POLL_MIN_S
        while True:
            if self._try_create(name, path):
                return
            seen = self._observe(path, seen)
            if seen is not None and self._is_stale(seen):
                self._break(path, seen.content)
                seen = None
                continue
            if time.monotonic() >= deadline:
                raise LockTimeout(f"lock {name} is held by {_holder(seen)} for more than {wait_s:g} s")
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, _POLL_MAX_S)

    def verify(self, name: str) -> None:
        """Raise ``LockLost`` unless lock ``name`` is still ours (call right before a commit)."""
        with self._mutex:
            held = self._held.get(name)
            if held is None or _read(held.path) != held.content:
                raise LockLost(f"lock {name} is no longer ours")

    def release(self, name: str) -> None:
        """Give lock ``name`` back (the file is deleted only while it is still ours)."""
        with self._mutex:
            held = self._held.pop(name, None)
        if held is None:
            return
        try:
            with self._mutex:
                ours = _read(held.path) == held.content
            if ours:
                held.path.unlink()
            else:
                log.warning("lock %s was broken by another receiver while we held it", name)
        except FileNotFoundError:
            log.warning("lock %s was removed by another receiver while we held it", name)
        finally:
            os.close(held.fd)

    def close(self) -> None:
        """Stop the heartbeat thread and release every lock still held."""
        self._stop.set()
        if self._beater is not None:
            self._beater.join()
            self._beater = None
        for name in list(self._held):
            self.release(name)

    # ---- taking -----------------------------------------------------------------------------
    def _try_create(self, name: str, path: Path) -> bool:
        token = secrets.token_hex(8)
        body = {"owner": self.owner, "host": self.host, "pid": os.getpid(), "token": token, "beat": 0}
        content = json.dumps(body).encode()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, content)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        now = time.monotonic()
        with self._mutex:
            self._held[name] = _Held(name, path, fd, token, now, content, 0, now)
        self._start_beater()
        return True

    # ---- waiting and breaking ---------------------------------------------------------------
    def _observe(self, path: Path, seen: _Seen | None) -> _Seen | None:
        """What the lock file holds now; ``since`` resets whenever its content changes."""
        content = _read(path)
        if content is None:
            return None
        if seen is None or seen.content != content:
            return _Seen(content, time.monotonic())
        return seen

    def _is_stale(self, seen: _Seen) -> bool:
        if time.monotonic() - seen.since >= self.lease_s:
            return True
        try:
            body = json.loads(seen.content)
            pid, host = int(body["pid"]), str(body["host"])
        except (ValueError, KeyError, TypeError):
            return False  # being written; judged by its age alone
        return host == self.host and pid != os.getpid() and not _process_exists(pid)

    def _break(self, path: Path, stale: bytes) -> None:
        tomb = path.with_name(f"{path.name}.{secrets.token_hex(6)}.broken")
        try:
            os.rename(path, tomb)
        except FileNotFoundError:
            return  # released or broken by someone else meanwhile
        moved = _read(tomb)
        if moved == stale:
            self.broken += 1
            log.warning("broke the stale lock %s of %s", path.name, _holder(_Seen(stale, 0.0)))
        else:  # a fresh lock was taken between our read and the rename: put it back
            with contextlib.suppress(FileExistsError):
                os.link(tomb, path)
        tomb.unlink(missing_ok=True)

    # ---- heartbeat --------------------------------------------------------------------------
    def _start_beater(self) -> None:
        if self._beater is None:
            self._beater = threading.Thread(target=self._beat_loop, name="review-lock-beat", daemon=True)
            self._beater.start()

    def _beat_loop(self) -> None:
        period = self.lease_s / 3
        while not self._stop.wait(min(period, 1.0)):
            now = time.monotonic()
            with self._mutex:
                due = [h for h in self._held.values() if now - h.beaten_at >= period]
            for held in due:
                if now - held.taken_at > self.max_hold_s:
                    continue  # held too long: stop beating, others may break it
                self._beat(held, now)

    def _beat(self, held: _Held, now: float) -> None:
        """Rewrite the lock through our own descriptor (our file, wherever it is now)."""
        with self._mutex:
            if self._held.get(held.name) is not held:
                return  # released meanwhile
            body = json.loads(held.content)
            body["beat"] = held.beat + 1
            content = json.dumps(body).encode()
            try:
                os.pwrite(held.fd, content, 0)
                os.ftruncate(held.fd, len(content))
                os.fsync(held.fd)
            except OSError as exc:
                log.warning("cannot renew lock %s: %s", held.name, exc)
                return
            held.beat += 1
            held.content = content
            held.beaten_at = now


def _read(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return file.read(4096)
    except FileNotFoundError:
        return None


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(seen: _Seen | None) -> str:
    if seen is None:
        return "another receiver"
    try:
        body = json.loads(seen.content)
        return f"{body['owner']} (pid {body['pid']} on {body['host']})"
    except (ValueError, KeyError, TypeError):
        return "another receiver"
