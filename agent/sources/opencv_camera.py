"""Cameras read through OpenCV: V4L2/USB devices and RTSP streams (FFmpeg).

A reader thread grabs every frame the camera delivers, so the driver's and FFmpeg's buffers never
fill with stale frames, and decodes (``retrieve``) only when the consumer is waiting for one.
Frames grabbed while the consumer is busy are counted as dropped. When reads fail (camera
unplugged, stream ended) the capture is reopened with capped exponential backoff.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import cv2
import numpy as np
from numpy.typing import NDArray

from agent.config.source import SourceSettings, is_camera_index, v4l2_device_path
from agent.errors import UserError
from agent.frames import Frame
from agent.sources.base import FrameSource, Reconnector, SourceUnavailable
from agent.sources.credentials import Credentials
from agent.sources.folder import natural_key
from agent.sources.latest import LatestSlot

log = logging.getLogger(__name__)

_FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


def present_cameras() -> list[str]:
    """The ``/dev/video*`` device nodes that exist, in natural order."""
    return sorted(glob.glob("/dev/video*"), key=natural_key)


def describe_present_cameras() -> str:
    """A sentence listing the V4L2 devices present, for error messages."""
    devices = present_cameras()
    if not devices:
        return (
            "there are no /dev/video* devices at all: check the camera is plugged in (lsusb); "
            "for a Raspberry Pi ribbon camera use url: picamera2"
        )
    return (
        f"devices present: {', '.join(devices)} (a USB camera often has two nodes; the first "
        "one delivers frames; `v4l2-ctl --list-devices` names them)"
    )


def _as_bgr(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    if image.ndim == 2:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    if image.shape[2] == 4:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGRA2BGR), dtype=np.uint8)
    return image


class OpenCvCameraSource(FrameSource):
    """Shared reader for cameras opened by ``cv2.VideoCapture``; subclasses say how to open."""

    live = True
    hint = ""

    def __init__(self, settings: SourceSettings) -> None:
        super().__init__(settings)
        self._slot: LatestSlot[tuple[NDArray[np.uint8], float]] = LatestSlot()
        self._thread: threading.Thread | None = None

    def _open_capture(self) -> cv2.VideoCapture:
        """An opened capture that has delivered one frame; raises ``SourceUnavailable``."""
        raise NotImplementedError

    def _check_first_frame(self, capture: cv2.VideoCapture) -> cv2.VideoCapture:
        if not capture.grab():
            capture.release()
            raise SourceUnavailable("it opened but delivered no frame")
        return capture

    def open(self) -> None:
        """Open the camera (``startup_attempts`` tries) and start the reader thread."""
        capture = self._connect_at_start(self._open_capture, self.hint)
        self._thread = threading.Thread(
            target=self._read_loop, args=(capture,), name=f"{self.kind}-{self.source_id}", daemon=True
        )
        self._thread.start()

    def _read_loop(self, capture: cv2.VideoCapture | None) -> None:
        with self.heartbeats.alive():  # this thread reads: it must keep beating (agent.liveness)
            self._grab_frames(capture)

    def _grab_frames(self, capture: cv2.VideoCapture | None) -> None:
        retry = Reconnector(self)
        try:
            while not self._stop.is_set():
                self.heartbeats.beat()  # each grab: one that never returns stops the beats
                if capture is None:
                    capture = retry.reconnect(self._open_capture, "reopened")
                    if capture is None:
                        continue
                if not capture.grab():
                    if self._stop.is_set():
                        break
                    capture.release()
                    capture = None
                    retry.failed("no frame (camera unplugged or stream ended)")
                    continue
                retry.succeeded()
                if not self._slot.consumer_waiting:
                    self._count("dropped")
                    continue
                ok, image = capture.retrieve()
                if ok and image is not None:
                    self._slot.put((_as_bgr(np.asarray(image, dtype=np.uint8)), time.time()))
                else:
                    self._skip_corrupt("a frame did not decode")
        finally:
            if capture is not None:
                capture.release()

    def _frames(self) -> Iterator[Frame]:
        while not self._stop.is_set():
            if not self._limiter.wait(self._stop):
                return
            item = self._slot.take(self._stop, on_poll=self.heartbeats.beat)
            if item is None:
                return
            image, timestamp = item
            yield self._frame(image, timestamp=timestamp)

    def _interrupt(self) -> None:
        self._slot.wake()

    def _release(self) -> None:
        # The reader thread releases the capture itself; a grab in progress cannot be
        # interrupted, so wait at most one read timeout for it.
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.settings.read_timeout_s + 1.0)


class V4l2Source(OpenCvCameraSource):
    """A V4L2 (USB, CSI through a V4L2 driver) camera: ``/dev/videoN`` or an index ``N``."""

    kind = "v4l2"
    hint = (
        "Check no other program holds the camera (`fuser /dev/video*`), try another /dev/video "
        "node, or unplug and replug it."
    )

    def __init__(self, settings: SourceSettings) -> None:
        super().__init__(settings)
        self.device = v4l2_device_path(settings.url)
        self.description = f"camera {self.device}"

    def open(self) -> None:
        """Check the device node exists and is accessible, then open it."""
        if sys.platform.startswith("linux"):
            if not os.path.exists(self.device):
                raise UserError(f"camera {self.device} does not exist; {describe_present_cameras()}")
            if not os.access(self.device, os.R_OK | os.W_OK):
                raise UserError(
                    f"no permission to open camera {self.device}: add the agent's user to the video "
                    "group (sudo usermod -aG video $USER, then log in again)"
                )
        super().open()

    def _open_capture(self) -> cv2.VideoCapture:
        url = self.settings.url
        if sys.platform.startswith("linux"):
            capture = cv2.VideoCapture(self.device, cv2.CAP_V4L2)
        else:
            capture = cv2.VideoCapture(int(url) if is_camera_index(url) else url)
        if not capture.isOpened():
            capture.release()
            raise SourceUnavailable("OpenCV could not open it (busy, or not a capture device)")
        self._apply_options(capture)
        return self._check_first_frame(capture)

    def _apply_options(self, capture: cv2.VideoCapture) -> None:
        options = self.settings.v4l2
        if options.fourcc:
            capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*options.fourcc))
        if options.width_px and options.height_px:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, options.width_px)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, options.height_px)
        if options.fps:
            capture.set(cv2.CAP_PROP_FPS, options.fps)
        code = int(capture.get(cv2.CAP_PROP_FOURCC))
        fourcc = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)) if code else "?"
        log.info(
            "%s: %dx%d px at %.1f fps, %s",
            self.description,
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            capture.get(cv2.CAP_PROP_FPS),
            fourcc,
        )


class RtspSource(OpenCvCameraSource):
    """An RTSP stream through OpenCV's FFmpeg backend (``rtsp_transport`` tcp by default)."""

    kind = "rtsp"
    hint = (
        "Check the stream with `ffprobe -rtsp_transport tcp URL`, the path and credentials "
        "(username, password_env); try rtsp_transport: udp."
    )

    def __init__(self, settings: SourceSettings) -> None:
        super().__init__(settings)
        self._url = self._url_with_credentials(settings)

    @staticmethod
    def _url_with_credentials(settings: SourceSettings) -> str:
        credentials = Credentials.from_settings(settings)
        if not credentials.username:
            return settings.url
        parts = urlsplit(settings.url)
        userinfo = quote(credentials.username, safe="")
        if credentials.password:
            userinfo += ":" + quote(credentials.password, safe="")
        host = parts.netloc.rpartition("@")[2]
        return parts._replace(netloc=f"{userinfo}@{host}").geturl()

    def _open_capture(self) -> cv2.VideoCapture:
        settings = self.settings
        # FFmpeg reads its options from the environment; a value the user set wins.
        os.environ.setdefault(_FFMPEG_OPTIONS_ENV, f"rtsp_transport;{settings.rtsp_transport}")
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(settings.connect_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(settings.read_timeout_s * 1000),
        ]
        capture = cv2.VideoCapture(self._url, cv2.CAP_FFMPEG, params)
        if not capture.isOpened():
            capture.release()
            raise SourceUnavailable(
                "FFmpeg could not open the stream (refused, unreachable, wrong path or credentials)"
            )
        return self._check_first_frame(capture)
