"""Frames from a video file through OpenCV (FFmpeg).

The file is sampled by its own clock: with ``interval_s: 10`` one frame per 10 s of video is
decoded (the others are only grabbed, which is cheap), however fast or slow the machine is, so
the same file always gives the same frames. ``timestamp`` is the file's mtime plus the frame's
position in seconds; ``name`` is ``<video stem>-f<frame index, 6 digits>``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from agent.config.source import SourceSettings
from agent.errors import ConfigError, UserError
from agent.frames import Frame
from agent.naming import safe_name
from agent.pixel_cap import ImageTooLarge, check_size
from agent.sources.base import FrameSource
from agent.sources.resume import FileMark, ResumePoint

log = logging.getLogger(__name__)


class VideoFileSource(FrameSource):
    """Every frame (or every ``interval_s`` of video) of one file; ``loop`` replays it."""

    kind = "video"
    live = False

    def __init__(self, settings: SourceSettings) -> None:
        super().__init__(settings)
        self.path = Path(settings.url).expanduser()
        self._capture: cv2.VideoCapture | None = None
        self.fps = 0.0
        self.frame_count = 0
        self.resume_after: ResumePoint | None = None

    def open(self) -> None:
        """Open the file and check it has a readable frame."""
        if not self.path.is_file():
            raise ConfigError(f"video file {self.path} does not exist; check source.url")
        self._capture = self._open_capture()
        self.fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.frame_count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        log.info(
            "%s: %d frames at %.2f fps%s",
            self.description,
            self.frame_count,
            self.fps,
            f", one frame per {self._limiter.interval_s:g} s of video" if self._limiter.interval_s else "",
        )

    def _open_capture(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not capture.isOpened():
            capture.release()
            raise UserError(
                f"cannot open video {self.path}: OpenCV/FFmpeg cannot read it (corrupt file or "
                "unsupported codec); check it plays, or convert it: "
                f"ffmpeg -i {self.path.name} -c:v libx264 fixed.mp4"
            )
        try:  # before the first frame is decoded
            check_size(
                int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
            )
        except ImageTooLarge as exc:
            capture.release()
            raise UserError(f"video {self.path}: {exc}") from None
        if not capture.grab():
            capture.release()
            raise UserError(f"video {self.path} has no readable frames (empty or corrupt)")
        # Rewind after the probe; reopen when the container cannot seek.
        if not capture.set(cv2.CAP_PROP_POS_FRAMES, 0) or capture.get(cv2.CAP_PROP_POS_FRAMES) != 0:
            capture.release()
            capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        return capture

    def _release(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def remaining(self) -> int | None:
        """How many frames are left to read (the container's frame count; None when it has none)."""
        if not self.frame_count:
            return None
        point = self.resume_after
        start = point.frame_index + 1 if point is not None and point.file == FileMark.of(self.path) else 0
        every = self._limiter.interval_s * self.fps if self._limiter.interval_s and self.fps else 1.0
        return max(0, int((self.frame_count - start) / max(every, 1.0)))

    def _first_index(self, mark: FileMark) -> int:
        """The index to start at: after the frame an earlier run finished, when it was this file."""
        point = self.resume_after
        if point is None:
            return 0
        if point.file != mark:
            log.warning("%s changed since the last run; starting from its first frame", self.description)
            return 0
        start = point.frame_index + 1
        if self._capture is not None and start and not self._capture.set(cv2.CAP_PROP_POS_FRAMES, start):
            log.warning("%s cannot seek; starting from its first frame", self.description)
            return 0
        log.info(
            "%s: resuming after frame %d (--from-start processes it all again)",
            self.description,
            point.frame_index,
        )
        return start

    def _frames(self) -> Iterator[Frame]:
        stat = self.path.stat()
        mtime = stat.st_mtime
        mark = FileMark.of(self.path, stat)
        stem = safe_name(self.path.stem, max_len=100)
        origin = str(self.path)
        index = self._first_index(mark)
        while not self._stop.is_set():
            capture = self._capture
            if capture is None:
                return
            while not self._stop.is_set():
                self.heartbeats.beat()  # frames the interval passes over yield nothing
                if not capture.grab():
                    break
                media_s = index / self.fps if self.fps > 0 else capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                if self._limiter.admit(media_s):
                    ok, decoded = capture.retrieve()
                    if ok and decoded is not None:
                        image: NDArray[np.uint8] = np.asarray(decoded, dtype=np.uint8)
                        yield self._frame(
                            image,
                            timestamp=mtime + media_s,
                            name=f"{stem}-f{index:06d}",
                            origin=origin,
                            resume_point=ResumePoint(mark, index),
                        )
                    else:
                        self._count("corrupt_skipped")
                        log.warning("%s: frame %d does not decode; skipped", self.description, index)
                index += 1
            if index + max(2, self.frame_count // 20) < self.frame_count and not self._stop.is_set():
                log.warning(
                    "%s: ended at frame %d of %d (truncated file?)", self.description, index, self.frame_count
                )
            if not self.settings.loop or self._stop.is_set() or index == 0:
                return
            capture.release()
            self._capture = self._open_capture()
            index = 0
            self._limiter.reset()
