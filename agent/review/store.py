"""The receiver's folders: frames and annotations per device and batch, and the VoTT project
each batch becomes when it is closed.

Layout under ``root`` (all state lives in these files; nothing is kept only in memory)::

    <root>/<device>/<batch>/frames/<frame_id>.jpg        VoTT's source folder
    <root>/<device>/<batch>/annotations/<frame_id>.json  validated annotation (see checks.Annotation)
    <root>/<device>/<batch>/SEALED                       no new frames; parts of its frames still come
    <root>/<device>/<batch>/CLOSED                       the project is complete; never modified again
    <root>/<device>/<batch>/vott/<device>-<batch>.vott   VoTT's target folder, written when closing,
    <root>/<device>/<batch>/vott/<asset id>-asset.json   with the asset files and the scores sidecars
    <root>/.edge-agent-review/                           locks and stats files

A batch is named after its opening time, ``YYYYMMDD-HHMMSS`` (UTC), and lives through three states:

* **open**: takes new frames. One per device at most.
* **sealed** (file ``SEALED``): takes no new frames, but a frame or annotation whose other part
  is already in it still goes there. Sealed when the UTC day changes (``batch_by: day``), when it
  holds ``batch_size`` frames (``count``), or on request (``edge-agent review --close-batch`` or a
  file named ``CLOSE`` in the batch folder).
* **closed** (file ``CLOSED``): once every frame has its annotation and every annotation its
  frame, or ``close_grace_s`` after sealing, the VoTT project is written and ``CLOSED`` last.
  Nothing in a closed batch is ever written again (VoTT rewrites the ``.vott`` of an open
  project, so the receiver must keep out of a batch a reviewer may have open).

A frame belongs to the batch that was open when its first part (frame or annotation) arrived.
Later parts: a frame whose annotation waits in a closed batch goes into the open batch with a
copy of that annotation (the closed batch is only read); an annotation whose frame is in a
closed batch is dropped (``batch_closed``). The same frame twice is a duplicate; an annotation
that differs from the stored one replaces it while its batch is not closed.

Several receivers may share one root (they must, when they split messages with a shared
subscription: a frame and its annotation can reach different receivers). Everything a message
changes happens under an exclusive ``flock`` per device, and files are written atomically, so
a receiver killed at any point leaves a state the next one continues from.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from agent.config.review import ReviewSettings
from agent.detections import Detections
from agent.errors import ConfigError, UserError
from agent.fsutil import atomic_write_bytes, atomic_write_json
from agent.review.annotation import Annotation
from agent.review.checks import Rejected, id_problem, jpeg_info
from agent.utc import utc_iso
from agent.vott import PathMapping, VottProject

log = logging.getLogger(__name__)

STATE_DIR = ".edge-agent-review"
FRAMES_DIR = "frames"
ANNOTATIONS_DIR = "annotations"
VOTT_DIR = "vott"
SEALED = "SEALED"
CLOSED = "CLOSED"
CLOSE_REQUEST = "CLOSE"
DEDUPE_CLOSED_BATCHES = 20  # closed batches per device searched for duplicates and late parts
_BATCH_NAME = re.compile(r"\d{8}-\d{6}(?:-\d{1,4})?")
_MAX_TAGS = 1000

# What happened to an accepted message.
FRAME_WRITTEN = "frames_written"
ANNOTATION_STORED = "annotations_stored"
ANNOTATION_UPDATED = "annotations_updated"
DUPLICATE = "duplicates"


@dataclass(frozen=True)
class Batch:
    """One batch folder of a device; ``state`` is ``open``, ``sealed`` or ``closed``."""

    device: str
    name: str
    path: Path
    state: str

    @property
    def frames_dir(self) -> Path:
        """VoTT's source folder."""
        return self.path / FRAMES_DIR

    @property
    def annotations_dir(self) -> Path:
        """Validated annotations, one JSON per frame id."""
        return self.path / ANNOTATIONS_DIR

    @property
    def vott_dir(self) -> Path:
        """VoTT's target folder (written when the batch closes)."""
        return self.path / VOTT_DIR

    @property
    def project_name(self) -> str:
        """The VoTT project name, ``<device>-<batch>``."""
        return f"{self.device}-{self.name}"

    @property
    def project_file(self) -> Path:
        """The ``.vott`` file (exists once the batch is closed)."""
        return self.vott_dir / f"{self.project_name}.vott"

    def frame_file(self, frame_id: str) -> Path:
        """Where the frame's JPEG is stored."""
        return self.frames_dir / f"{frame_id}.jpg"

    def annotation_file(self, frame_id: str) -> Path:
        """Where the frame's annotation is stored."""
        return self.annotations_dir / f"{frame_id}.json"

    def frame_ids(self) -> set[str]:
        """Ids of the frames stored in this batch."""
        return _stems(self.frames_dir, ".jpg")

    def annotation_ids(self) -> set[str]:
        """Ids of the frames whose annotation is stored in this batch."""
        return _stems(self.annotations_dir, ".json")


@dataclass(frozen=True)
class CloseResult:
    """A batch that was just closed, with what its project holds."""

    batch: Batch
    frames: int
    assets: int
    frames_without_annotation: int
    annotations_without_frame: int

    def describe(self) -> str:
        """One line for logs and the terminal."""
        return (
            f"{self.batch.device}/{self.batch.name}: {self.frames} frame(s), {self.assets} asset(s), "
            f"{self.frames_without_annotation} frame(s) without annotation, "
            f"{self.annotations_without_frame} annotation(s) without frame -> {self.batch.project_file}"
        )


def _stems(folder: Path, suffix: str) -> set[str]:
    try:
        with os.scandir(folder) as entries:
            return {
                e.name[: -len(suffix)]
                for e in entries
                if e.name.endswith(suffix) and not e.name.startswith(".") and e.is_file(follow_symlinks=False)
            }
    except FileNotFoundError:
        return set()


def _read_json(path: Path) -> Any:
    return json.loads(path.read_bytes().decode("utf-8"))


class ReviewStore:
    """The receiver's root folder: stores frames and annotations, seals and closes batches.

    Safe to use from several processes on one root (per-device ``flock``); one instance must not
    be used from several threads at once."""

    def __init__(self, settings: ReviewSettings) -> None:
        self.settings = settings
        root = settings.root_path()
        try:
            root.mkdir(parents=True, exist_ok=True)
            self.root = root.resolve(strict=True)
            self.state_dir = self.root / STATE_DIR
            (self.state_dir / "locks").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the review root {root}: {exc.strerror or exc}") from None
        # Checks reviewer_root now, so a mistake stops the receiver at start-up.
        self.mapping = PathMapping.create(self.root, settings.reviewer_root)
        self.counters: Counter[str] = Counter()
        self._lock_fds: dict[str, int] = {}
        self._closed_names: dict[str, set[str]] = {}
        self._closed_index: dict[tuple[str, str], tuple[frozenset[str], frozenset[str]]] = {}
        self._receiver_fd: int | None = None
        self._close_failures: set[str] = set()

    # ---- locks ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        fd = self._lock_fds.get(name)
        if fd is None:
            fd = os.open(self.state_dir / "locks" / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            self._lock_fds[name] = fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def hold_receiver_lock(self) -> None:
        """Mark this process as a running receiver (a shared lock, held until ``close()``)."""
        if self._receiver_fd is None:
            self._receiver_fd = os.open(self.state_dir / "receivers.lock", os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._receiver_fd, fcntl.LOCK_SH)

    def receivers_running(self) -> bool:
        """True when a receiver (this process or another) works on this root."""
        fd = os.open(self.state_dir / "receivers.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also releases the lock when we got it
        return False

    def close(self) -> None:
        """Release the locks' file descriptors."""
        for fd in self._lock_fds.values():
            os.close(fd)
        self._lock_fds.clear()
        if self._receiver_fd is not None:
            os.close(self._receiver_fd)
            self._receiver_fd = None

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

    def _device_dir(self, device: str, *, create: bool) -> Path | None:
        folder = self.root / device
        if folder.is_dir():
            return self._inside(folder)
        if not create:
            return None
        with self._locked("root"):
            if not folder.is_dir():
                count = len(self.devices())
                if count >= self.settings.max_devices:
                    raise Rejected(
                        "too_many_devices",
                        f"device {device!r} would be number {count + 1}, max_devices is {self.settings.max_devices}",
                    )
                self._inside(folder).mkdir()
                log.info("new device %s", device)
        return folder

    # ---- batches ----------------------------------------------------------------------------
    def batches(self, device: str, *, include_closed: bool = False) -> list[Batch]:
        """The device's batches, oldest first: open and sealed ones (and closed ones if asked)."""
        folder = self.root / device
        try:
            with os.scandir(folder) as entries:
                names = sorted(
                    (
                        e.name
                        for e in entries
                        if e.is_dir(follow_symlinks=False) and _BATCH_NAME.fullmatch(e.name)
                    ),
                    key=_batch_sort_key,
                )
        except FileNotFoundError:
            return []
        closed = self._closed_names.setdefault(device, set())
        out = []
        for name in names:
            path = folder / name
            if name not in closed and (path / CLOSED).exists():
                closed.add(name)
            if name in closed:
                if include_closed:
                    out.append(Batch(device, name, path, "closed"))
                continue
            out.append(Batch(device, name, path, "sealed" if (path / SEALED).exists() else "open"))
        return out

    def _closed_newest_first(self, device: str) -> list[str]:
        return sorted(self._closed_names.get(device, ()), key=_batch_sort_key, reverse=True)

    def _closed_ids(self, device: str, name: str) -> tuple[frozenset[str], frozenset[str]]:
        key = (device, name)
        if key not in self._closed_index:
            batch = Batch(device, name, self.root / device / name, "closed")
            self._closed_index[key] = (frozenset(batch.frame_ids()), frozenset(batch.annotation_ids()))
        return self._closed_index[key]

    def _new_batch(self, device: str, now: float) -> Batch:
        stem = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d-%H%M%S")
        name, n = stem, 1
        while (self.root / device / name).exists():
            n += 1
            name = f"{stem}-{n}"
        batch = Batch(device, name, self._inside(self.root / device / name), "open")
        batch.path.mkdir()
        batch.frames_dir.mkdir()
        batch.annotations_dir.mkdir()
        log.info("device %s: opened batch %s", device, name)
        return batch

    def _seal(self, batch: Batch, reason: str, now: float) -> Batch:
        atomic_write_json(
            batch.path / SEALED,
            {"sealed_at": utc_iso(now), "sealed_at_s": now, "reason": reason},
            fsync=self.settings.fsync,
        )
        with contextlib.suppress(FileNotFoundError):
            (batch.path / CLOSE_REQUEST).unlink()
        self.counters["batches_sealed"] += 1
        log.info("device %s: batch %s sealed (%s)", batch.device, batch.name, reason)
        return Batch(batch.device, batch.name, batch.path, "sealed")

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
        recent = self._closed_newest_first(device)[:DEDUPE_CLOSED_BATCHES]
        for key in [k for k in self._closed_index if k[0] == device and k[1] not in recent]:
            del self._closed_index[key]  # older batches are no longer searched
        for name in recent:
            frames, annotations = self._closed_ids(device, name)
            if frame_id in frames or frame_id in annotations:
                batch = Batch(device, name, self.root / device / name, "closed")
                return batch, frame_id in frames, frame_id in annotations
        return None, False, False

    def _check_free_space(self) -> None:
        if self.settings.min_free_mb <= 0:
            return
        stat = os.statvfs(self.root)
        free_mb = stat.f_bavail * stat.f_frsize / (1024 * 1024)
        if free_mb < self.settings.min_free_mb:
            raise Rejected("disk_full", f"{free_mb:.0f} MB free under {self.root}, min_free_mb is "
                           f"{self.settings.min_free_mb:g}")  # fmt: skip

    # ---- messages ---------------------------------------------------------------------------
    def put_frame(self, device: str, frame_id: str, jpeg: bytes, now: float | None = None) -> str:
        """Store a checked JPEG; returns ``FRAME_WRITTEN`` or ``DUPLICATE``. Raises ``Rejected``."""
        now = time.time() if now is None else now
        width, height = _size_of(jpeg)
        self._device_dir(device, create=True)  # before the device's lock file exists
        with self._locked(f"device-{device}"):
            self._check_free_space()
            batches = self.batches(device)
            found, has_frame, _ = self._locate(device, frame_id, batches)
            if has_frame:
                return DUPLICATE
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
                self.counters["annotations_discarded_size_mismatch"] += 1
                if carried is None:
                    target.annotation_file(frame_id).unlink(missing_ok=True)
                carried = None
            atomic_write_bytes(self._inside(target.frame_file(frame_id)), jpeg, fsync=self.settings.fsync)
            if carried is not None:
                self._write_annotation(target, carried)
                self.counters["late_frames_with_annotation_from_closed_batch"] += 1
            full = self.settings.batch_by == "count" and len(target.frame_ids()) >= self.settings.batch_size
            if target.state == "open" and full:
                self._seal(target, f"{self.settings.batch_size} frames", now)
            return FRAME_WRITTEN

    def put_annotation(
        self, device: str, frame_id: str, annotation: Annotation, now: float | None = None
    ) -> str:
        """Store a validated annotation; returns ``ANNOTATION_STORED``, ``ANNOTATION_UPDATED`` or
        ``DUPLICATE``. Raises ``Rejected`` (e.g. ``batch_closed``)."""
        now = time.time() if now is None else now
        self._device_dir(device, create=True)  # before the device's lock file exists
        with self._locked(f"device-{device}"):
            self._check_free_space()
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
            path = target.annotation_file(frame_id)
            if path.exists():
                old = self._read_annotation(target, frame_id)
                if old == annotation:
                    return DUPLICATE
                self._write_annotation(target, annotation)
                return ANNOTATION_UPDATED
            self._write_annotation(target, annotation)
            return ANNOTATION_STORED

    def _write_annotation(self, batch: Batch, annotation: Annotation) -> None:
        path = self._inside(batch.annotation_file(annotation.frame_id))
        atomic_write_json(path, annotation.to_json(), indent=None, fsync=self.settings.fsync)

    def _read_annotation(self, batch: Batch, frame_id: str) -> Annotation | None:
        path = batch.annotation_file(frame_id)
        try:
            return Annotation.from_json(_read_json(path))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s is damaged (%s); ignoring it", path, exc)
            return None

    def remove_temp_files(self) -> int:
        """Delete temporary files a killed receiver left in open and sealed batches (every write
        happens under the device's lock, so none is in progress); returns how many."""
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
                for batch in self.batches(dev):
                    if batch.state == "open":
                        sealed.append(self._seal(batch, "close requested", now))
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
            with self._locked(f"device-{dev}"):
                for batch in self.batches(dev):
                    try:
                        if batch.state == "open":
                            reason = self._seal_reason(batch, now)
                            if reason is None:
                                continue
                            batch = self._seal(batch, reason, now)
                        if force_close or self._ready_to_close(batch, now):
                            results.append(self._close_batch(batch, now))
                    except (UserError, OSError) as exc:
                        if str(batch.path) not in self._close_failures:  # log once, retried every tick
                            self._close_failures.add(str(batch.path))
                            self.counters["close_failed"] += 1
                            log.error("device %s: cannot close batch %s: %s", dev, batch.name, exc)
        return results

    def _ready_to_close(self, batch: Batch, now: float) -> bool:
        try:
            sealed_at = float(_read_json(batch.path / SEALED)["sealed_at_s"])
        except (OSError, ValueError, KeyError, TypeError):
            sealed_at = (batch.path / SEALED).stat().st_mtime
        if now - sealed_at >= self.settings.close_grace_s:
            return True
        return batch.frame_ids() == batch.annotation_ids()

    def _previous_tags(self, batch: Batch) -> list[str]:
        """Tag order of the device's newest closed project before ``batch`` (the reviewer's hot keys)."""
        for name in self._closed_newest_first(batch.device):
            if _batch_sort_key(name) >= _batch_sort_key(batch.name):
                continue
            previous = Batch(batch.device, name, self.root / batch.device / name, "closed")
            with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
                tags = _read_json(previous.project_file).get("tags") or []
                return [
                    str(t["name"]) for t in tags if isinstance(t, dict) and isinstance(t.get("name"), str)
                ]
            return []
        return []

    def _close_batch(self, batch: Batch, now: float) -> CloseResult:
        """Write the batch's VoTT project (assets for frames whose annotation has boxes), then ``CLOSED``."""
        frames = sorted(batch.frame_ids())
        annotation_ids = batch.annotation_ids()
        annotations = {
            fid: a for fid in frames if fid in annotation_ids and (a := self._read_annotation(batch, fid))
        }
        labels = [label for fid in frames if fid in annotations for label in annotations[fid].labels]
        tags = list(dict.fromkeys([*self._previous_tags(batch), *labels]))[:_MAX_TAGS]
        try:
            project = VottProject(
                batch.vott_dir,
                batch.frames_dir,
                name=batch.project_name,
                local_root=self.root,
                reviewer_root=self.settings.reviewer_root,
                tags=tags,
                security_token=self.settings.security_token,
                flush_every=0,
                fsync=self.settings.fsync,
            )
        except ConfigError as exc:
            raise UserError(
                f"batch {batch.path} was partly written for another reviewer root ({exc}); delete its "
                f"'{VOTT_DIR}' folder and the receiver writes it again"
            ) from None
        assets = 0
        for fid in frames:
            annotation = annotations.get(fid)
            if annotation is None or not annotation.labels:
                continue
            image = batch.frame_file(fid)
            try:
                width, height = _size_of(image.read_bytes())
            except Rejected as exc:  # it was checked on arrival: the file was damaged since
                log.warning("%s: %s; leaving it out of the project", image, exc.detail)
                continue
            if (width, height) != (annotation.width, annotation.height):
                continue  # checked when the pair met; only a damaged file ends up here
            index = {label: i for i, label in enumerate(dict.fromkeys(annotation.labels))}
            known = all(s is not None for s in annotation.scores)
            detections = Detections.create(
                np.asarray(annotation.boxes, np.float32).reshape(-1, 4),
                [s if s is not None else 1.0 for s in annotation.scores],
                [index[label] for label in annotation.labels],
                list(index),
            )
            if project.add_frame(
                image, width, height, detections, model=annotation.model, record_scores=known
            ):
                assets += 1
        project.save()
        result = CloseResult(
            batch=Batch(batch.device, batch.name, batch.path, "closed"),
            frames=len(frames),
            assets=assets,
            frames_without_annotation=sum(1 for fid in frames if fid not in annotation_ids),
            annotations_without_frame=len(annotation_ids - set(frames)),
        )
        atomic_write_json(
            batch.path / CLOSED,
            {
                "closed_at": utc_iso(now),
                "project": str(batch.project_file.relative_to(batch.path)),
                "frames": result.frames,
                "assets": result.assets,
                "frames_without_annotation": result.frames_without_annotation,
                "annotations_without_frame": result.annotations_without_frame,
            },
            fsync=self.settings.fsync,
        )
        self._closed_names.setdefault(batch.device, set()).add(batch.name)
        self.counters["batches_closed"] += 1
        self.counters["assets_written"] += assets
        log.info("closed %s", result.describe())
        return result


def _batch_sort_key(name: str) -> tuple[str, int]:
    """Opening time, then the number a second batch in the same second got (``-2``, ...)."""
    suffix = name[16:]
    return name[:15], int(suffix) if suffix.isdigit() else 1


def _size_of(jpeg: bytes) -> tuple[int, int]:
    info = jpeg_info(jpeg)
    return info.width, info.height
