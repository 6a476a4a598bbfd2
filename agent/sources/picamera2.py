"""Raspberry Pi cameras through picamera2 (libcamera), e.g. Camera Module 3.

picamera2 is imported only when this source is opened: it exists only on Raspberry Pi OS, comes
from apt (``python3-picamera2``), and a venv sees it only when made with
``--system-site-packages``. The camera is configured with ``create_video_configuration`` (or
``create_still_configuration``) using the main stream's size and format and the libcamera
controls from the settings, then started; each frame is ``capture_array("main")`` converted to
BGR. A failed capture restarts the camera with capped exponential backoff.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from agent.config.source import PICAMERA2_ENUM_CONTROLS, Picamera2Options, SourceSettings
from agent.errors import ConfigError, UserError
from agent.frames import Frame
from agent.sources.base import FrameSource, Reconnector, SourceUnavailable

log = logging.getLogger(__name__)

MISSING_PICAMERA2 = (
    "picamera2 is not importable in this Python. On Raspberry Pi OS install it with "
    "`sudo apt install python3-picamera2` and make the agent's venv with "
    "`python3 -m venv --system-site-packages` so it sees the system package "
    "(pip cannot install libcamera's bindings); scripts/install-pi.sh does both"
)
_HINT = (
    "Check the ribbon cable and that `rpicam-hello --list-cameras` lists the camera, and that no "
    "other program (rpicam-*, motion, another agent) holds it."
)


def to_bgr(array: NDArray[np.uint8], pixel_format: str) -> NDArray[np.uint8]:
    """A picamera2 ``capture_array`` result in ``pixel_format`` as ``H x W x 3`` BGR uint8.

    picamera2 names formats by libcamera's (little-endian word) convention: ``RGB888`` is stored
    B,G,R per pixel and ``XRGB8888`` B,G,R,255; ``BGR888`` is R,G,B and ``XBGR8888`` R,G,B,255;
    ``YUV420`` is planar I420 of shape ``(H * 3 / 2, W)``.
    """
    if pixel_format in ("RGB888", "XRGB8888"):
        return np.ascontiguousarray(array[:, :, :3], dtype=np.uint8)
    if pixel_format == "BGR888":
        return np.asarray(cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGB2BGR), dtype=np.uint8)
    if pixel_format == "XBGR8888":
        return np.asarray(cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGBA2BGR), dtype=np.uint8)
    if pixel_format == "YUV420":
        return np.asarray(cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_YUV2BGR_I420), dtype=np.uint8)
    raise ValueError(f"unsupported picamera2 format {pixel_format!r}")


def libcamera_controls(options: Picamera2Options) -> dict[str, Any]:
    """The settings' controls as picamera2 takes them: enum names as numbers, lists as tuples,
    ``fps`` as ``FrameDurationLimits`` in microseconds (unless given explicitly)."""
    controls: dict[str, Any] = {}
    for name, value in options.controls.items():
        if isinstance(value, str):
            controls[name] = PICAMERA2_ENUM_CONTROLS[name][value]
        elif isinstance(value, list):
            controls[name] = tuple(value)
        else:
            controls[name] = value
    if options.fps and "FrameDurationLimits" not in controls:
        frame_us = round(1_000_000 / options.fps)
        controls["FrameDurationLimits"] = (frame_us, frame_us)
    return controls


class Picamera2Source(FrameSource):
    """Frames from a libcamera camera; ``timestamp`` is the wall clock at capture."""

    kind = "picamera2"
    live = True

    def __init__(self, settings: SourceSettings) -> None:
        super().__init__(settings)
        self.options = settings.picamera2
        self.description = f"picamera2 camera {self.options.camera_num}"
        self._picamera2_class: Any = None
        self._camera: Any = None

    def open(self) -> None:
        """Import picamera2, find the camera, configure and start it."""
        try:
            module = importlib.import_module("picamera2")
        except ImportError as exc:
            raise UserError(f"{MISSING_PICAMERA2} ({exc})") from None
        self._picamera2_class = module.Picamera2
        self._camera = self._connect_at_start(self._start_camera, _HINT)

    def _tuning(self) -> Any:
        name = self.options.tuning_file
        if not name:
            return None
        path = Path(name).expanduser()
        if path.is_file():
            return str(path)
        try:
            return self._picamera2_class.load_tuning_file(name)
        except RuntimeError:
            raise ConfigError(
                f"source.picamera2.tuning_file {name!r} is neither a file nor in libcamera's tuning "
                "folders (/usr/share/libcamera/ipa/rpi/pisp for a Pi 5, .../vc4 for older Pis)"
            ) from None

    def _start_camera(self) -> Any:
        picamera2_class = self._picamera2_class
        options = self.options
        try:
            cameras = list(picamera2_class.global_camera_info())
        except Exception as exc:  # libcamera raises a variety of errors
            raise SourceUnavailable(f"libcamera could not list cameras ({exc})") from None
        if not cameras:
            raise SourceUnavailable("libcamera finds no camera")
        if options.camera_num >= len(cameras):
            models = ", ".join(f"{i}: {info.get('Model', '?')}" for i, info in enumerate(cameras))
            raise SourceUnavailable(
                f"source.picamera2.camera_num is {options.camera_num} but the cameras are {models}",
                permanent=True,
            )
        tuning = self._tuning()
        try:
            camera = picamera2_class(options.camera_num, tuning=tuning)
        except Exception as exc:  # RuntimeError when busy or failing
            raise SourceUnavailable(f"cannot open camera {options.camera_num} ({exc})") from None
        try:
            camera.configure(self._configuration(camera))
            camera.start()
        except Exception as exc:  # ValueError/RuntimeError for a configuration it rejects
            _close_quietly(camera)
            raise SourceUnavailable(
                f"the camera rejected the configuration ({exc}); check source.picamera2 "
                "(width_px/height_px, format, controls)",
                permanent=True,
            ) from None
        log.info(
            "%s (%s): %s mode, main %s %s, controls %s",
            self.description,
            cameras[options.camera_num].get("Model", "?"),
            options.mode,
            "x".join(str(v) for v in (options.width_px, options.height_px))
            if options.width_px
            else "default size",
            options.format,
            libcamera_controls(options) or "default",
        )
        return camera

    def _configuration(self, camera: Any) -> Any:
        options = self.options
        main: dict[str, Any] = {"format": options.format}
        if options.width_px and options.height_px:
            main["size"] = (options.width_px, options.height_px)
        kwargs: dict[str, Any] = {"main": main, "controls": libcamera_controls(options)}
        if options.buffer_count:
            kwargs["buffer_count"] = options.buffer_count
        if options.mode == "still":
            config = camera.create_still_configuration(**kwargs)
        else:
            config = camera.create_video_configuration(**kwargs)
        if hasattr(camera, "align_configuration"):
            camera.align_configuration(config)  # sizes the ISP can produce without padding
        return config

    def _frames(self) -> Iterator[Frame]:
        settings = self.settings
        retry = Reconnector(self)
        while not self._stop.is_set():
            if self._camera is None:
                self._camera = retry.reconnect(self._start_camera, "restarted")
                if self._camera is None:
                    continue
            if not self._limiter.wait(self._stop):
                return
            try:
                array = self._camera.capture_array("main", wait=settings.read_timeout_s)
            except Exception as exc:  # a camera error or a timeout; restart the camera
                if self._stop.is_set():
                    return
                _close_quietly(self._camera)
                self._camera = None
                if retry.failed(f"capture failed ({type(exc).__name__}: {exc})"):
                    return
                continue
            retry.succeeded()
            yield self._frame(to_bgr(np.asarray(array), self.options.format), timestamp=time.time())

    def _release(self) -> None:
        if self._camera is not None:
            _close_quietly(self._camera)
            self._camera = None


def _close_quietly(camera: Any) -> None:
    for method in ("stop", "close"):
        try:
            getattr(camera, method)()
        except Exception:  # closing a failed camera may fail too; nothing to do about it
            log.debug("picamera2 %s failed", method, exc_info=True)
