"""The receiver's per-device spool on disk: a flooding device's messages wait here, not in the broker.

When the inbox is full and one device holds at least its fair share of it, that device's QoS 1
messages are written here, one file per message, and acknowledged at once (they are on disk),
so the broker keeps sending and the other devices' messages are read. Once a device has spooled
messages, all its messages come here until the workers have stored them all, so a device's
messages are stored in the order they came.

Layout: ``<root>/.edge-agent-review/spool/<client>/<device>/<seq>.msg``, ``<seq>`` a zero-padded
per-device sequence number. A file holds the header ``EASPOOL1 <payload bytes> <topic>\\n`` and
the payload, written atomically (``fsutil.atomic_write_bytes``). With ``fsync``, a message is
acknowledged once it is on the device: a thread of the spool flushes the files written since its
last flush with one ``syncfs`` and then runs their ``then`` callbacks (the acknowledgements), so
paho's network thread never waits for the disk. A receiver started on a spool
serves what it finds; a file that cannot be read whole (cut short by a crash of the machine
without fsync) is deleted and counted (``corrupt``). ``max_bytes`` bounds the files in all;
when it is reached, ``put`` refuses (or waits for room) and the receiver pauses reading as
before.

Memory: per device, two sequence numbers and the messages the workers have taken but not yet
removed; the index never holds a message per spooled file.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import UserError
from agent.fsutil import atomic_write_bytes, remove_stale_temp_files, syncfs
from agent.naming import safe_name

log = logging.getLogger(__name__)

MAGIC = b"EASPOOL1"
SUFFIX = ".msg"
_SEQ_DIGITS = 12


@dataclass(frozen=True, slots=True)
class SpooledMessage:
    """A message read back from the spool; ``remove(device, seq)`` once it is stored or refused."""

    device: str
    seq: int
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """What the spool holds now (files not yet removed) and counters since start."""

    messages: int
    bytes: int
    devices: int
    spooled_total: int  # messages written since start
    corrupt: int  # files that could not be read whole, deleted


@dataclass
class _Device:
    next_take: int = 0  # the oldest sequence number not yet taken
    next_write: int = 0
    waiting: int = 0  # files in [next_take, next_write) (there may be gaps after a restart)
    writing: int = 0  # puts under way
    taken: dict[int, int] = field(default_factory=dict)  # seq -> bytes, taken but not removed


class Spool:
    """Per-device FIFOs of message files under ``folder``, at most ``max_bytes`` in all.

    Thread-safe: paho's network thread puts, worker threads take and remove."""

    def __init__(self, folder: Path, max_bytes: int, *, fsync: bool) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.fsync = fsync
        self._devices: dict[str, _Device] = {}
        self._bytes = 0
        self._spooled_total = 0
        self._corrupt = 0
        self._closed = False
        self._cond = threading.Condition()
        self._unsynced: list[Callable[[], None]] = []  # what to do once the files are on the device
        self.syncs = 0
        folder.mkdir(parents=True, exist_ok=True)
        self._recover()
        if fsync:
            threading.Thread(target=self._sync_loop, name="review-spool-sync", daemon=True).start()

    def _recover(self) -> None:
        """Index the files an earlier receiver left (its temp files are deleted)."""
        for device_dir in sorted(p for p in self.folder.iterdir() if p.is_dir()):
            seqs = []
            remove_stale_temp_files(device_dir)
            for path in device_dir.iterdir():
                if path.name.endswith(SUFFIX) and path.name[: -len(SUFFIX)].isdigit():
                    seqs.append(int(path.name[: -len(SUFFIX)]))
                    self._bytes += path.stat().st_size
            if seqs:
                self._devices[device_dir.name] = _Device(min(seqs), max(seqs) + 1, len(seqs))

    def pending(self) -> dict[str, int]:
        """Messages not yet taken, per device (what a restarted receiver must serve)."""
        with self._cond:
            return {name: d.waiting for name, d in self._devices.items() if d.waiting}

    def holds(self, device: str) -> bool:
        """True while ``device`` has files not yet removed (its new messages must come here too)."""
        with self._cond:
            return device in self._devices

    def put(self, device: str, topic: str, payload: bytes, *, block: bool, then: Callable[[], None]) -> bool:
        """Write one message for ``device`` and call ``then`` once it is on the device (at once
        without ``fsync``, else from the spool's thread); waits for room while ``block``. False
        when it was not written: the spool is full (and not ``block``), closed, or the write
        failed (logged)."""
        data = b"%s %d %s\n" % (MAGIC, len(payload), topic.encode()) + payload
        if len(data) > self.max_bytes:  # would never fit, however empty: never wait for it
            return False
        with self._cond:
            while self._bytes + len(data) > self.max_bytes and not self._closed:
                if not block:
                    return False
                self._cond.wait()
            if self._closed:
                return False
            state = self._devices.setdefault(device, _Device())
            seq = state.next_write
            state.next_write += 1
            state.writing += 1
            self._bytes += len(data)
        try:
            (self.folder / device).mkdir(exist_ok=True)
            atomic_write_bytes(self._path(device, seq), data, fsync=False)
        except OSError as exc:
            log.warning("review: cannot write to the spool %s: %s", self.folder, exc)
            with self._cond:
                state.writing -= 1
                self._bytes -= len(data)
                self._forget_if_empty(device)
                self._cond.notify_all()
            return False
        with self._cond:
            state.writing -= 1
            state.waiting += 1
            self._spooled_total += 1
            if self.fsync:
                self._unsynced.append(then)
                self._cond.notify_all()
                return True
        then()
        return True

    def _sync_loop(self) -> None:
        """Flush what was written since the last flush, then acknowledge it; until ``close``."""
        while True:
            with self._cond:
                while not self._unsynced and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return  # not acknowledged: the broker sends them again (and the store sees duplicates)
                done, self._unsynced = self._unsynced, []
            try:
                syncfs(self.folder)
            except OSError as exc:
                log.warning("review: cannot flush the spool %s: %s; retrying", self.folder, exc)
                with self._cond:
                    self._unsynced[:0] = done
                    self._cond.wait(1.0)
                continue
            self.syncs += 1
            for then in done:
                try:
                    then()
                except Exception:  # one failed acknowledgement must not stop all the others
                    log.exception("review: acknowledging a spooled message failed")

    def take(self, device: str) -> SpooledMessage | None:
        """The oldest message of ``device`` not yet taken; None when there is none, or when the next
        file is not a whole message (deleted and counted). ``OSError`` when it cannot be read now
        (it stays the next one: it was acknowledged, so it must not be lost)."""
        with self._cond:
            state = self._devices.get(device)
            if state is None or not state.waiting:
                return None
            while not self._path(device, state.next_take).exists():  # a gap: a failed write, a restart
                state.next_take += 1
                if state.next_take >= state.next_write:  # the files went (deleted by hand)
                    state.waiting = 0
                    self._forget_if_empty(device)
                    return None
            seq = state.next_take
            state.next_take += 1
            state.waiting -= 1
            path = self._path(device, seq)
        try:
            data = path.read_bytes()
        except OSError as exc:
            log.warning("review: cannot read the spool file %s: %s; trying again later", path, exc)
            with self._cond:
                state.next_take = min(state.next_take, seq)
                state.waiting += 1
            raise
        with self._cond:
            state.taken[seq] = len(data)  # what put() or the start-up counted
        message = _parse(device, seq, data)
        if message is None:
            with self._cond:
                self._corrupt += 1
            log.warning("review: skipped the spool file %s: not a whole message (%d bytes)", path, len(data))
            self.remove(device, seq)
        return message

    def next_size(self, device: str) -> int | None:
        """Bytes of the file ``take(device)`` would read next (None when there is none)."""
        with self._cond:
            state = self._devices.get(device)
            if state is None or not state.waiting:
                return None
            seq = state.next_take
        try:
            return self._path(device, seq).stat().st_size
        except OSError:
            return 0

    def remove(self, device: str, seq: int) -> None:
        """Delete a taken message's file (it was stored or refused)."""
        with contextlib.suppress(FileNotFoundError):
            self._path(device, seq).unlink()
        with self._cond:
            state = self._devices.get(device)
            if state is not None and seq in state.taken:
                self._bytes -= state.taken.pop(seq)
                self._forget_if_empty(device)
            self._cond.notify_all()

    def close(self) -> None:
        """Wake and refuse every waiting and later ``put``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def stats(self) -> SpoolStats:
        """Counts now and since start."""
        with self._cond:
            messages = sum(d.waiting + len(d.taken) for d in self._devices.values())
            return SpoolStats(messages, self._bytes, len(self._devices), self._spooled_total, self._corrupt)

    def _forget_if_empty(self, device: str) -> None:
        state = self._devices.get(device)
        if state is not None and not (state.waiting or state.taken or state.writing):
            del self._devices[device]

    def _path(self, device: str, seq: int) -> Path:
        return self.folder / device / f"{seq:0{_SEQ_DIGITS}d}{SUFFIX}"


def open_spool(state_dir: Path, client_id: str, max_bytes: int, *, fsync: bool) -> Spool | None:
    """The receiver ``client_id``'s spool under ``state_dir`` (None when ``max_bytes`` is 0), with
    what an earlier run of it left."""
    if max_bytes <= 0:
        return None
    folder = state_dir / "spool" / safe_name(client_id, 100)
    try:
        return Spool(folder, max_bytes, fsync=fsync)
    except OSError as exc:
        raise UserError(f"cannot open the spool {folder}: {exc.strerror or exc}") from None


def spool_stats(spool: Spool | None) -> dict[str, int]:
    """The receiver's stats of its spool (zeros when it has none)."""
    stats = spool.stats() if spool is not None else SpoolStats(0, 0, 0, 0, 0)
    return {
        "messages": stats.messages,
        "bytes": stats.bytes,
        "devices": stats.devices,
        "spooled_total": stats.spooled_total,
        "corrupt": stats.corrupt,
    }


def _parse(device: str, seq: int, data: bytes) -> SpooledMessage | None:
    """A whole spool file as a message; None when it is cut short or not ours."""
    header, newline, payload = data.partition(b"\n")
    parts = header.split(b" ", 2)
    if not newline or len(parts) != 3 or parts[0] != MAGIC or not parts[1].isdigit():
        return None
    if int(parts[1]) != len(payload):
        return None
    try:
        topic = parts[2].decode()
    except UnicodeDecodeError:
        return None
    return SpooledMessage(device, seq, topic, payload)
