"""The receiver's folders: frames and annotations per device and batch, sealing and closing.

All state lives in the files under ``root`` (layout: ``docs/review.md``); nothing is kept only in
memory except caches of closed batches, which never change.

Batch states (``batches.py``): **open** takes new frames (one per device at most); **sealed**
(``SEALED``) takes no new frames but still takes a part whose other part is in it; sealed when
the UTC day changes (``batch_by: day``), at ``batch_size`` frames (``count``) or on request
(``--close-batch``, a ``CLOSE`` file in the batch folder); **closed** (``CLOSED``) once every
frame has its annotation and every annotation its frame, or ``close_grace_s`` after sealing.

A frame belongs to the batch that was open when its first part (frame or annotation) arrived.
A frame whose annotation waits in a closed batch goes into the open batch with a copy of that
annotation; an annotation whose frame is in a closed batch is dropped (``batch_closed``). A
frame id already stored with the same bytes (a device re-sending after a restart) is a
duplicate, counted as ``frames_resent``; with other bytes it is refused (``frame_id_reused``).

Several receivers, on one host or several, share one root (they must, when they split messages
with a shared subscription). Everything a message changes happens under the device's lease lock
(``locks.LeaseLocks``: lock files, not ``flock``), checked again right before each write, and
files are written atomically, so a receiver killed at any point leaves a state the next one
continues from, and no two receivers ever write one batch at the same time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from agent.config.review import ReviewSettings
from agent.errors import UserError
from agent.fsutil import atomic_write_bytes, atomic_write_json
from agent.review.annotation import Annotation
from agent.review.batches import (
    ANNOTATIONS_DIR,
    CLOSE_REQUEST,
    FRAMES_DIR,
    SEALED,
    STATE_DIR,
    Batch,
    ClosedBatches,
    CloseResult,
    batch_names,
    read_json,
)
from agent.review.checks import Rejected, check_free_space, id_problem, untrusted_jpeg_info
from agent.review.closing import previous_tags, ready_to_close, write_project
from agent.review.locks import LeaseLocks
from agent.review.presence import Presence
from agent.utc import utc_iso
from agent.vott import PathMapping

log = logging.getLogger(__name__)

# What the store counts (the stats file and message list each, zero or not)
STORE_COUNTERS = (
    "assets_written",
    "annotations_resent",
    "annotations_discarded_size_mismatch",
    "batches_sealed",
    "batches_closed",
    "close_failed",
    "frames_resent",
    "late_frames_with_annotation_from_closed_batch",
)

DEDUPE_CLOSED_BATCHES = 20  # closed batches per device searched for duplicates and late parts

# What happened to an accepted message.
FRAME_WRITTEN = "frames_written"
ANNOTATION_STORED = "annotations_stored"
ANNOTATION_UPDATED = "annotations_updated"
DUPLICATE = "duplicates"


class ReviewStore:
    """The receiver's root folder: stores frames and annotations, seals and closes batches.

    Safe to use from several processes and hosts on one root (lease locks per device) and from
    several threads of one process, each on other devices (the lock files keep threads apart
    too, but a thread waits for another one by polling). ``owner`` names this process in lock
    files and its heartbeat (the receiver's MQTT client id)."""

    def __init__(self, settings: ReviewSettings, owner: str = "edge-agent-review") -> None:
        self.settings = settings
        self.owner = owner
        root = settings.root_path()
        try:
            root.mkdir(parents=True, exist_ok=True)
            self.root = root.resolve(strict=True)
            self.state_dir = self.root / STATE_DIR
            self.presence = Presence(self.state_dir / "receivers", owner)
            self.locks = LeaseLocks(self.state_dir / "locks", owner, lease_s=settings.lock_lease_s)
        except OSError as exc:
            raise UserError(f"cannot create the review root {root}: {exc.strerror or exc}") from None
        # Checks reviewer_root now, so a mistake stops the receiver at start-up.
        self.mapping = PathMapping.create(self.root, settings.reviewer_root)
        self.counters: Counter[str] = Counter(dict.fromkeys(STORE_COUNTERS, 0))  # zeros show in the stats
        self._counters_lock = threading.Lock()
        self._local = threading.local()  # the lock this thread works under
        self._checked_devices: set[str] = set()
        self.closed = ClosedBatches(self.root, DEDUPE_CLOSED_BATCHES)
        self._close_failures: set[str] = set()

    # ---- locks ----------------------------------------------------------------
    @contextlib.contextmanager
    def holding(self, device: str) -> Iterator[None]:
        """Hold the device's lock for several ``put_*`` calls (they then take it no more)."""
        self._device_dir(device)
        with self._locked(f"device-{device}"):
            yield

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        if getattr(self._local, "name", None) == name:  # this thread holds it already (holding())
            yield
            return
        with self.locks.hold(name, self.settings.lock_wait_s):
            outer, self._local.name = getattr(self._local, "name", None), name
            try:
                yield
            finally:
                self._local.name = outer

    def _verify(self) -> None:
        """Raise ``LockLost`` unless the lock we work under is still ours (before each commit)."""
        name = getattr(self._local, "name", None)
        if name is not None:
            self.locks.verify(name)

    def _count(self, key: str, n: int = 1) -> None:
        with self._counters_lock:
            self.counters[key] += n

    def close(self) -> None:
        """Release the locks and stop their heartbeat thread."""
        self.locks.close()

    # ---- paths ------------------------------------------------------------------------------
    def _inside(self, path: Path) -> Path:
        """``path`` when it stays under root after resolving symlinks and ``..``; else Rejected."""
        if not path.resolve().is_relative_to(self.root):
            raise Rejected("path_outside_root", f"{path} resolves outside {self.root}")
        return path

    def devices(self) -> list[str]:
        """Device ids that have a folder under root, sorted."""
        try:
            with os.scandir(self.root) as entries:
                names = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return []
        return sorted(n for n in names if id_problem(n, folder=True) is None)

    def _device_dir(self, device: str) -> Path:
        folder = self.root / device
        if device in self._checked_devices:
            return folder
        if folder.is_dir():
            self._checked_devices.add(device)
            return self._inside(folder)
        with self._locked("root"):
            if not folder.is_dir():
                count = len(self.devices())
                if count >= self.settings.max_devices:
                    raise Rejected(
                        "too_many_devices",
                        f"device {device!r} would be number {count + 1}, max_devices is {self.settings.max_devices}",
                    )
                self._verify()
                self._inside(folder).mkdir(exist_ok=True)
                log.info("new device %s", device)
        return folder

    # ---- batches ----------------------------------------------------------------------------
    def batches(self, device: str, *, include_closed: bool = False) -> list[Batch]:
        """The device's batches, oldest first: open and sealed ones (and closed ones if asked)."""
        folder = self.root / device
        out = []
        for name in batch_names(folder):
            path = folder / name
            if self.closed.known(device, name):
                if include_closed:
                    out.append(Batch(device, name, path, "closed"))
                continue
            out.append(Batch(device, name, path, "sealed" if (path / SEALED).exists() else "open"))
        return out

    def _new_batch(self, device: str, now: float) -> Batch:
        stem = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d-%H%M%S")
        name, n = stem, 1
        while (self.root / device / name).exists():
            n += 1
            name = f"{stem}-{n}"
        batch = Batch(device, name, self._inside(self.root / device / name), "open")
        self._verify()
        batch.path.mkdir()
        (batch.path / FRAMES_DIR).mkdir()
        (batch.path / ANNOTATIONS_DIR).mkdir()
        log.info("device %s: opened batch %s", device, name)
        return batch

    def _seal(self, batch: Batch, reason: str, now: float) -> Batch:
        self._verify()
        atomic_write_json(
            batch.path / SEALED,
            {"sealed_at": utc_iso(now), "sealed_at_s": now, "reason": reason},
            fsync=self.settings.fsync,
        )
        with contextlib.suppress(FileNotFoundError):
            (batch.path / CLOSE_REQUEST).unlink()
        self._count("batches_sealed", 1)
        log.info("device %s: batch %s sealed (%s)", batch.device, batch.name, reason)
        return batch.with_state("sealed")

    def _seal_reason(self, batch: Batch, now: float) -> str | None:
        """Why the open ``batch`` must stop taking new frames now, or None."""
        if (batch.path / CLOSE_REQUEST).exists():
            return "CLOSE file"
        s = self.settings
        if s.batch_by == "day" and batch.name[:8] != datetime.fromtimestamp(now, UTC).strftime("%Y%m%d"):
            return "new day"
        if s.batch_by == "count" and len(batch.frame_ids()) >= s.batch_size:
            return f"{s.batch_size} frames"
        return None

    def _open_batch(self, device: str, batches: list[Batch], now: float) -> Batch:
        """The batch new frames go to, sealing an expired one and opening a new one as needed."""
        current = None
        for batch in batches:
            if batch.state != "open":
                continue
            if current is not None:  # only one may be open; keep the newest
                self._seal(current, "another batch is open", now)
            current = batch
        if current is not None:
            reason = self._seal_reason(current, now)
            if reason is None:
                return current
            self._seal(current, reason, now)
        return self._new_batch(device, now)

    def _locate(self, device: str, frame_id: str, batches: list[Batch]) -> tuple[Batch | None, bool, bool]:
        """The newest batch holding the frame or its annotation: ``(batch, has_frame, has_annotation)``."""
        for batch in reversed(batches):
            has_frame = batch.frame_file(frame_id).exists()
            has_annotation = batch.annotation_file(frame_id).exists()
            if has_frame or has_annotation:
                return batch, has_frame, has_annotation
        return self.closed.find(device, frame_id)

    # ---- messages ---------------------------------------------------------------------------
    def put_frame(self, device: str, frame_id: str, jpeg: bytes, now: float | None = None) -> str:
        """Store a checked JPEG; returns ``FRAME_WRITTEN`` or ``DUPLICATE``. Raises ``Rejected``,
        ``LockTimeout`` or ``LockLost``."""
        now = time.time() if now is None else now
        width, height = _size_of(jpeg)
        self._device_dir(device)  # before the device's lock file exists
        with self._locked(f"device-{device}"):
            check_free_space(self.root, self.settings.min_free_mb)
            batches = self.batches(device)
            found, has_frame, _ = self._locate(device, frame_id, batches)
            if found is not None and has_frame:
                return self._resent(found, frame_id, jpeg)
            carried: Annotation | None = None  # an annotation to copy out of a closed batch
            if found is not None and found.state != "closed":
                target = found  # its annotation came first and waits there
                pending = self._read_annotation(found, frame_id)
            else:
                target = self._open_batch(device, batches, now)
                pending = carried = self._read_annotation(found, frame_id) if found is not None else None
            if pending is not None and (pending.width, pending.height) != (width, height):
                log.warning(
                    "device %s: the annotation of %s is for a %dx%d image but the frame is %dx%d; "
                    "discarding the annotation",
                    device, frame_id, pending.width, pending.height, width, height,
                )  # fmt: skip
                self._count("annotations_discarded_size_mismatch", 1)
                if carried is None:
                    self._verify()
                    target.annotation_file(frame_id).unlink(missing_ok=True)
                carried = None
            self._verify()
            # os.replace() replaces a symlink at the name rather than following it: no _inside() needed
            atomic_write_bytes(target.frame_file(frame_id), jpeg, fsync=self.settings.fsync)
            if carried is not None:
                self._write_annotation(target, carried)
                self._count("late_frames_with_annotation_from_closed_batch", 1)
            full = self.settings.batch_by == "count" and len(target.frame_ids()) >= self.settings.batch_size
            if target.state == "open" and full:
                self._seal(target, f"{self.settings.batch_size} frames", now)
            return FRAME_WRITTEN

    def _resent(self, batch: Batch, frame_id: str, jpeg: bytes) -> str:
        """A frame id that is stored already: the same bytes again are a duplicate, other bytes
        are refused (the stored frame is what the annotation and the reviewer refer to)."""
        path = batch.frame_file(frame_id)
        if path.stat().st_size == len(jpeg) and path.read_bytes() == jpeg:
            self._count("frames_resent", 1)
            return DUPLICATE
        raise Rejected(
            "frame_id_reused", f"frame {frame_id!r} is stored in {batch.device}/{batch.name} with other bytes"
        )

    def put_annotation(
        self, device: str, frame_id: str, annotation: Annotation, now: float | None = None
    ) -> str:
        """Store a checked annotation; returns ``ANNOTATION_STORED``, ``ANNOTATION_UPDATED`` or
        ``DUPLICATE``. Raises ``Rejected`` (e.g. ``batch_closed``), ``LockTimeout`` or ``LockLost``."""
        now = time.time() if now is None else now
        self._device_dir(device)  # before the device's lock file exists
        with self._locked(f"device-{device}"):
            check_free_space(self.root, self.settings.min_free_mb)
            batches = self.batches(device)
            found, has_frame, _ = self._locate(device, frame_id, batches)
            if found is not None and found.state == "closed":
                if has_frame:
                    raise Rejected(
                        "batch_closed",
                        f"frame {frame_id!r} is in the closed batch {device}/{found.name}, which is never modified",
                    )
                found = None  # only an earlier copy of this annotation is there: start afresh
            target = found if found is not None else self._open_batch(device, batches, now)
            if has_frame:
                size = _size_of(target.frame_file(frame_id).read_bytes())
                if size != (annotation.width, annotation.height):
                    raise Rejected(
                        "annotation_size_mismatch",
                        f"annotation is for a {annotation.width}x{annotation.height} image, the frame is "
                        f"{size[0]}x{size[1]}",
                    )
            if target.annotation_file(frame_id).exists():
                if self._read_annotation(target, frame_id) == annotation:
                    self._count("annotations_resent", 1)
                    return DUPLICATE
                self._write_annotation(target, annotation)
                return ANNOTATION_UPDATED
            self._write_annotation(target, annotation)
            return ANNOTATION_STORED

    def _write_annotation(self, batch: Batch, annotation: Annotation) -> None:
        path = batch.annotation_file(annotation.frame_id)
        self._verify()
        atomic_write_json(path, annotation.to_json(), indent=None, fsync=self.settings.fsync)

    def _read_annotation(self, batch: Batch, frame_id: str) -> Annotation | None:
        path = batch.annotation_file(frame_id)
        try:
            return Annotation.from_json(read_json(path))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s is damaged (%s); ignoring it", path, exc)
            return None

    def remove_temp_files(self) -> int:
        """Delete temporary files a killed receiver left in open and sealed batches (under each
        device's lock, so no write is in progress there); returns how many."""
        removed = 0
        for device in self.devices():
            with self._locked(f"device-{device}"):
                for batch in self.batches(device):
                    for folder in (batch.path, batch.frames_dir, batch.annotations_dir, batch.vott_dir):
                        for path in folder.glob(".*.tmp"):
                            path.unlink(missing_ok=True)
                            removed += 1
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted receiver", removed)
        return removed

    # ---- sealing and closing ----------------------------------------------------------------
    def request_close(self, device: str | None = None, now: float | None = None) -> list[Batch]:
        """Seal the open batch of ``device`` (every device when None); returns the sealed batches."""
        now = time.time() if now is None else now
        sealed = []
        for dev in [device] if device is not None else self.devices():
            with self._locked(f"device-{dev}"):
                sealed += [
                    self._seal(b, "close requested", now) for b in self.batches(dev) if b.state == "open"
                ]
        return sealed

    def housekeeping(
        self, now: float | None = None, *, force_close: bool = False, device: str | None = None
    ) -> list[CloseResult]:
        """Seal open batches that are due (new day, ``CLOSE`` file) and close sealed ones that are
        complete or past ``close_grace_s`` (every sealed one with ``force_close``); of ``device``
        only, or of every device."""
        now = time.time() if now is None else now
        results = []
        for dev in [device] if device is not None else self.devices():
            if not force_close and not self._has_work(dev, now):
                continue
            with self._locked(f"device-{dev}"):
                for batch in self.batches(dev):
                    result = self._seal_or_close(batch, now, force_close)
                    if result is not None:
                        results.append(result)
        return results

    def _has_work(self, device: str, now: float) -> bool:
        """Whether a device has an open batch due for sealing or a sealed one (checked without
        the lock: a quick look that saves taking every device's lock every second)."""
        return any(b.state == "sealed" or self._seal_reason(b, now) for b in self.batches(device))

    def _seal_or_close(self, batch: Batch, now: float, force_close: bool) -> CloseResult | None:
        try:
            if batch.state == "open":
                reason = self._seal_reason(batch, now)
                if reason is None:
                    return None
                batch = self._seal(batch, reason, now)
            if not force_close and not ready_to_close(batch, now, self.settings.close_grace_s):
                return None
            result = write_project(
                batch,
                self.settings,
                local_root=str(self.root),
                tags_before=previous_tags(batch, self.closed.newest_first(batch.device)),
                read_annotation=self._read_annotation,
                verify=self._verify,
                now=now,
            )
        except (UserError, OSError) as exc:
            if str(batch.path) not in self._close_failures:  # log once, retried every tick
                self._close_failures.add(str(batch.path))
                self._count("close_failed", 1)
                log.error("device %s: cannot close batch %s: %s", batch.device, batch.name, exc)
            return None
        self.closed.add(batch.device, batch.name)
        self._count("batches_closed", 1)
        self._count("assets_written", result.assets)
        return result


def _size_of(jpeg: bytes) -> tuple[int, int]:
    info = untrusted_jpeg_info(jpeg)
    return info.width, info.height
