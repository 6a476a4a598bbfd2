"""Where a recording was left: so that a restart continues instead of starting over.

Folder and video sources mark each frame with its ``ResumePoint``: the file it came from (name,
size, modification time) and, for a video, the frame's index. After the output stages finish a
frame, ``ResumeStage`` records its point in the data folder (``resume.json``, one entry per
source, written atomically every ``RECORD_EVERY_FRAMES`` finished frames and whenever the output
thread is idle or closes: a SIGKILL makes a restart do again at most the frames finished since the
last write, fewer than ``RECORD_EVERY_FRAMES``, plus those in flight).
At the next start the source skips what was finished: a folder the files up to and including
that name (in natural order), a video the frames up to that index. A recording that changed
since (the file has another size or time) starts again from the beginning, with a warning.
``edge-agent run --from-start`` ignores the record.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.flow import Outputs, Stage
from agent.frames import FrameResult
from agent.fsutil import atomic_write_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FileMark:
    """A file as it was: name, size in bytes and modification time in nanoseconds."""

    name: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path, stat: os.stat_result | None = None) -> FileMark:
        """The mark of ``path`` now (``stat``: its ``os.stat`` when already taken)."""
        st = stat if stat is not None else path.stat()
        return cls(path.name, st.st_size, st.st_mtime_ns)

    def matches(self, path: Path) -> bool:
        """True when ``path`` is still this file (same size and modification time)."""
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        return st.st_size == self.size and st.st_mtime_ns == self.mtime_ns


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """The last frame finished of a file source: its file and, for a video, its frame index."""

    file: FileMark
    frame_index: int = 0

    def to_json(self) -> dict[str, Any]:
        """The form kept in ``resume.json``."""
        return {"file": asdict(self.file), "frame_index": self.frame_index}

    @classmethod
    def from_json(cls, data: Any) -> ResumePoint | None:
        """Read back ``to_json``'s form; None when it is damaged."""
        try:
            mark = data["file"]
            return cls(
                FileMark(str(mark["name"]), int(mark["size"]), int(mark["mtime_ns"])),
                int(data["frame_index"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


class ResumeFile:
    """``resume.json``: the resume point of each file source, keyed by source (id and URL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._points: dict[str, dict[str, Any]] = {}
        try:
            data = json.loads(path.read_bytes())
            if isinstance(data, dict):
                self._points = {k: v for k, v in data.items() if isinstance(v, dict)}
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.warning("%s is unreadable (%s); recordings start from the beginning", path, exc)

    def point(self, key: str) -> ResumePoint | None:
        """Where the source ``key`` was left, or None."""
        entry = self._points.get(key)
        return ResumePoint.from_json(entry) if entry is not None else None

    def record(self, key: str, point: ResumePoint) -> None:
        """Note ``point`` as the last frame finished by source ``key`` (written at once, no fsync:
        a killed process loses nothing, a power cut at most what the kernel had not written)."""
        self._points[key] = point.to_json()
        atomic_write_bytes(self.path, json.dumps(self._points).encode("utf-8"), fsync=False)

    def forget(self, key: str) -> None:
        """Drop the record of source ``key`` (``--from-start``)."""
        if self._points.pop(key, None) is not None:
            atomic_write_bytes(self.path, json.dumps(self._points).encode("utf-8"), fsync=False)


def source_key(source_id: str, url: str) -> str:
    """The key of a source in ``resume.json``: its id and what it reads."""
    return f"{source_id} {url}"


# A write of resume.json (JSON, a temp file and a rename over the old file, which makes ext4 start
# writing it out at once) cost the output thread ~0.1-0.2 ms of CPU a frame; every few frames it
# costs a fraction of that. Fewer than 10 frames may be done twice after a SIGKILL (the promise).
RECORD_EVERY_FRAMES = 4


class ResumeStage(Stage):
    """The last output stage of ``run`` on a folder or video: records the finished frames'
    ``ResumePoint`` so that a restart continues after the last one recorded. The point is written
    every ``every_frames`` frames, and when the output thread is idle (``tick``) or closes."""

    name = "resume"

    def __init__(self, resume_file: ResumeFile, key: str, *, every_frames: int = RECORD_EVERY_FRAMES) -> None:
        self.resume_file = resume_file
        self.key = key
        self.every_frames = max(1, every_frames)
        self.failed = False
        self._point: ResumePoint | None = None  # the newest finished frame not yet written
        self._unwritten = 0

    def handle(self, result: FrameResult, outputs: Outputs) -> None:
        """Note where the source is now; write it every ``every_frames`` frames."""
        point = result.frame.resume_point
        if point is None:
            return None
        self._point = point
        self._unwritten += 1
        if self._unwritten >= self.every_frames:
            self._write()
        return None

    def tick(self) -> None:
        """No frame for a while: write what is noted."""
        self._write()

    def close(self) -> None:
        """Write the last frame's point."""
        self._write()

    def _write(self) -> None:
        point, self._point, self._unwritten = self._point, None, 0
        if point is None:
            return
        try:
            self.resume_file.record(self.key, point)
        except OSError as exc:
            if not self.failed:  # a full disk must not stop the pipeline
                log.error("cannot record the resume point in %s: %s", self.resume_file.path, exc)
                self.failed = True


class DoneFiles:
    """What ``edge-agent label`` has finished, per source: every image file of a folder (by name,
    size and time, so an image added later or changed since is labelled), and for a video the last
    frame. Kept in the VoTT target folder; saved every ``save_interval_s`` and on ``save()``."""

    def __init__(self, path: Path, save_interval_s: float = 2.0) -> None:
        self.path = path
        self.save_interval_s = save_interval_s
        self._files: dict[str, dict[str, list[int]]] = {}
        self._videos: dict[str, dict[str, Any]] = {}
        self._saved_at = 0.0
        self._dirty = False
        try:
            data = json.loads(path.read_bytes())
            self._files = {k: v for k, v in data.get("files", {}).items() if isinstance(v, dict)}
            self._videos = {k: v for k, v in data.get("videos", {}).items() if isinstance(v, dict)}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("%s is unreadable (%s); every frame is labelled again", path, exc)

    def is_done(self, key: str, path: Path) -> bool:
        """True when the image ``path`` of source ``key`` was labelled as it is now."""
        mark = self._files.get(key, {}).get(path.name)
        if mark is None:
            return False
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        return mark == [st.st_size, st.st_mtime_ns]

    def video_point(self, key: str) -> ResumePoint | None:
        """The last frame of the video of source ``key`` that was labelled, or None."""
        entry = self._videos.get(key)
        return ResumePoint.from_json(entry) if entry is not None else None

    def done(self, key: str, point: ResumePoint, *, video: bool) -> None:
        """Note a finished frame; saves when ``save_interval_s`` has passed since the last save."""
        if video:
            self._videos[key] = point.to_json()
        else:
            self._files.setdefault(key, {})[point.file.name] = [point.file.size, point.file.mtime_ns]
        self._dirty = True
        if time.monotonic() - self._saved_at >= self.save_interval_s:
            self.save()

    def save(self) -> None:
        """Write the record now (atomically) when anything changed."""
        if self._dirty:
            data = {"files": self._files, "videos": self._videos}
            atomic_write_bytes(self.path, json.dumps(data).encode("utf-8"), fsync=False)
            self._dirty = False
        self._saved_at = time.monotonic()
