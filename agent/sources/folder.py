"""Images from a folder (or one image file), in natural name order: frame_2 before frame_10.

With ``watch`` the folder is polled every ``watch_poll_s`` for new files, as a timelapse writes
them. A new file is read only once its size and modification time have not changed for
``watch_settle_s`` and it decodes as a complete image; a file that is still incomplete is tried
again when it changes. Corrupt or truncated images are skipped, counted and logged once each.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.config.source import IMAGE_SUFFIXES, SourceSettings
from agent.errors import ConfigError, UserError
from agent.frames import Frame
from agent.pixel_cap import ImageTooLarge
from agent.sources.base import FrameSource
from agent.sources.decode import check_pixels, sniff_format
from agent.sources.resume import FileMark, ResumePoint

log = logging.getLogger(__name__)

_DIGITS = re.compile(r"(\d+)")
_ENCODED_FORMATS = ("jpg", "png")  # bytes kept on the frame so nobody re-encodes


def natural_key(name: str) -> tuple[list[str | int], str]:
    """Sort key that orders digit runs by value: ``img2.jpg`` < ``img10.jpg``."""
    parts: list[str | int] = [
        int(part) if i % 2 else part.lower() for i, part in enumerate(_DIGITS.split(name))
    ]
    return parts, name


def list_images(folder: Path) -> list[Path]:
    """Image files (jpg, jpeg, png, bmp; any case) directly in ``folder``, in natural order.
    Hidden files (``.name``, e.g. temp files of atomic writers) are left out."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    paths = [
        Path(entry.path)
        for entry in entries
        if not entry.name.startswith(".")
        and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES
        and entry.is_file()
    ]
    return sorted(paths, key=lambda path: natural_key(path.name))


@dataclass
class _Pending:
    """A watched file not yet read: its last (size, mtime) and when that was first seen."""

    signature: tuple[int, int]
    since: float
    failed: bool = False


class FolderSource(FrameSource):
    """Frames from image files; ``timestamp`` is the file's mtime, ``name`` its stem,
    ``encoded`` the file's own JPEG/PNG bytes, ``resume_point`` the file's mark.

    Set ``resume_after`` (where an earlier run stopped) to skip the files up to and including
    it, and ``skip_file`` to leave out files a caller has already done (``edge-agent label``)."""

    kind = "folder"
    live = False

    def __init__(self, settings: SourceSettings) -> None:
        super().__init__(settings)
        self.path = Path(settings.url).expanduser()
        self._warned_corrupt: set[str] = set()
        self.resume_after: ResumePoint | None = None
        self.skip_file: Callable[[Path], bool] | None = None

    def open(self) -> None:
        """Check the folder or file exists (``ConfigError``) and holds images (``UserError``)."""
        path = self.path
        if not path.exists():
            raise ConfigError(
                f"image folder {path} does not exist; check source.url (a folder of .jpg/.png "
                "files, a video file, /dev/videoN, or an rtsp:// or http:// URL)"
            )
        if path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise ConfigError(
                    f"{path} is not an image (.jpg, .jpeg, .png, .bmp); for a video use kind: video"
                )
            if self.settings.watch:
                raise ConfigError(f"source.watch needs a folder, but {path} is a file")
            try:  # one image asked for by name: refused at once, not skipped
                check_pixels(path.read_bytes())
            except ImageTooLarge as exc:
                raise UserError(f"{path}: {exc}") from None
            return
        if not os.access(path, os.R_OK | os.X_OK):
            raise UserError(f"cannot read folder {path}: permission denied; check its owner and mode")
        if not self.settings.watch and not list_images(path):
            raise UserError(
                f"no images (.jpg, .jpeg, .png, .bmp) in {path}; check source.url, or set "
                "source.watch: true to wait for files to appear"
            )

    def _frames(self) -> Iterator[Frame]:
        if self.settings.watch:
            yield from self._watch()
            return
        first_pass = True
        while not self._stop.is_set():
            paths = [self.path] if self.path.is_file() else list_images(self.path)
            if first_pass:
                paths = self._not_done(paths)
                first_pass = False
            yielded = 0
            for path in paths:
                if self._stop.is_set() or not self._limiter.wait(self._stop):
                    return
                frame = self._read(path)
                if frame is not None:
                    yielded += 1
                    yield frame
            if not self.settings.loop:
                return
            if yielded == 0:
                log.warning("%s: no readable images left; stopping the loop", self.description)
                return

    def remaining(self) -> int | None:
        """How many files the iteration will read (None when watching: unknown)."""
        if self.settings.watch:
            return None
        if self.path.is_file():
            return len(self._not_done([self.path]))
        return len(self._not_done(list_images(self.path), quiet=True))

    def _not_done(self, paths: list[Path], *, quiet: bool = False) -> list[Path]:
        """``paths`` without the files an earlier run finished (``resume_after``) or the caller
        has done (``skip_file``)."""
        left = paths
        point = self.resume_after
        if point is not None:
            finished = self.path if self.path.is_file() else self.path / point.file.name
            if finished.exists() and not point.file.matches(finished):
                log.log(
                    logging.DEBUG if quiet else logging.WARNING,
                    "%s: %s changed since the last run stopped after it; starting from the first file",
                    self.description,
                    point.file.name,
                )
            else:
                last = natural_key(point.file.name)
                left = [p for p in paths if natural_key(p.name) > last]
                log.log(
                    logging.DEBUG if quiet else logging.INFO,
                    "%s: resuming after %s (%d file(s) done, %d left; --from-start processes them all again)",
                    self.description,
                    point.file.name,
                    len(paths) - len(left),
                    len(left),
                )
        if self.skip_file is not None:
            left = [p for p in left if not self.skip_file(p)]
        return left

    def _watch(self) -> Iterator[Frame]:
        settings = self.settings
        everything = list_images(self.path)
        not_done = set(self._not_done(everything))
        done: set[str] = {p.name for p in everything if p not in not_done}
        pending: dict[str, _Pending] = {}
        while not self._stop.is_set():
            now = time.monotonic()
            wall_now = time.time()
            ready: list[Path] = []
            for path in list_images(self.path):
                if path.name in done:
                    continue
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    pending.pop(path.name, None)
                    continue
                signature = (stat.st_size, stat.st_mtime_ns)
                entry = pending.get(path.name)
                if entry is None or entry.signature != signature:
                    # New or changed. Files untouched for settle_s by the wall clock may go now.
                    pending[path.name] = entry = _Pending(signature, now)
                    if wall_now - stat.st_mtime >= settings.watch_settle_s and stat.st_size > 0:
                        ready.append(path)
                    continue
                if entry.failed:
                    continue  # tried this exact content already; wait for it to change
                if now - entry.since >= settings.watch_settle_s:
                    ready.append(path)
            for path in ready:
                if self._stop.is_set() or not self._limiter.wait(self._stop):
                    return
                frame = self._read(path)
                if frame is None:
                    entry = pending.get(path.name)
                    if entry is not None:
                        entry.failed = True
                    continue
                done.add(path.name)
                pending.pop(path.name, None)
                yield frame
            if self._stop.wait(settings.watch_poll_s):
                return

    def _read(self, path: Path) -> Frame | None:
        """The frame in ``path``, or None (counted, logged once) when it is not a complete image."""
        try:
            data = path.read_bytes()
            stat = path.stat()
        except FileNotFoundError:
            log.debug("%s: %s vanished before it was read", self.description, path)
            return None
        except OSError as exc:
            self._count("errors")
            log.warning("%s: cannot read %s: %s", self.description, path, exc.strerror or exc)
            return None
        still = " (or still being written; tried again if it changes)" if self.settings.watch else ""
        why = f"not a complete JPEG/PNG/BMP image{still}"
        try:
            decoded = self._decode(data)
        except ImageTooLarge as exc:
            decoded, why = None, str(exc)
        if decoded is None:
            key = str(path)
            if key not in self._warned_corrupt:
                self._warned_corrupt.add(key)
                self._count("corrupt_skipped")
                log.warning("%s: skipping %s: %s", self.description, path.name, why)
            return None
        image, full_size = decoded
        fmt = sniff_format(data)
        keep = fmt in _ENCODED_FORMATS
        return self._frame(
            image,
            timestamp=stat.st_mtime,
            name=path.stem,
            encoded=data if keep else None,
            encoded_format=fmt if keep and fmt else "jpg",
            origin=str(path),
            full_size=full_size,
            resume_point=ResumePoint(FileMark.of(path, stat)),
        )
