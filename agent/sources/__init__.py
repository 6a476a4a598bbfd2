"""Frame sources: image folders, video files, V4L2/USB cameras, RTSP, HTTP MJPEG streams,
snapshot URLs and Raspberry Pi cameras, all behind one small interface.

    with open_source(SourceSettings(url="http://octopi.local/webcam/?action=stream", interval_s=10)) as source:
        for frame in source:          # agent.frames.Frame, BGR uint8
            ...
        source.stats()                # {"frames": ..., "corrupt_skipped": ..., "reconnects": ..., ...}

``open_source`` raises ``ConfigError`` (exit 2) for a setting that cannot work (a folder that does
not exist, a malformed URL) and ``UserError`` (exit 1) for a source that does not answer (a camera
that does not open, a refused connection after ``startup_attempts``), each saying how to fix it.
"""

from __future__ import annotations

from agent.config.source import (
    Picamera2Options,
    SourceKind,
    SourceSettings,
    V4l2Options,
    guess_kind,
)
from agent.errors import ConfigError
from agent.sources.base import STAT_KEYS, FrameSource, SourceUnavailable

__all__ = [
    "STAT_KEYS",
    "FrameSource",
    "Picamera2Options",
    "SourceKind",
    "SourceSettings",
    "SourceUnavailable",
    "V4l2Options",
    "open_source",
    "resolve_kind",
]


def resolve_kind(settings: SourceSettings) -> str:
    """The concrete kind for ``settings``: ``settings.kind`` unless ``auto``, else from the URL,
    probing an HTTP URL that does not say (one GET, retried like a start)."""
    if settings.kind != "auto":
        return settings.kind
    try:
        kind = guess_kind(settings.url)
    except FileNotFoundError:
        raise ConfigError(
            f"source.url {settings.url!r} is not an existing folder or file, nor a camera "
            "(/dev/videoN, a camera index, picamera2) or an rtsp:// or http(s):// URL"
        ) from None
    if kind is None:
        from agent.sources.http_get import probe_http_kind

        return probe_http_kind(settings)
    return kind


def _source_class(kind: str) -> type[FrameSource]:
    # Imported on demand: each kind pulls in only what it needs (picamera2 only on a Pi).
    if kind == "folder":
        from agent.sources.folder import FolderSource

        return FolderSource
    if kind == "video":
        from agent.sources.video import VideoFileSource

        return VideoFileSource
    if kind == "v4l2":
        from agent.sources.opencv_camera import V4l2Source

        return V4l2Source
    if kind == "rtsp":
        from agent.sources.opencv_camera import RtspSource

        return RtspSource
    if kind == "mjpeg":
        from agent.sources.mjpeg import MjpegSource

        return MjpegSource
    if kind == "snapshot":
        from agent.sources.snapshot import SnapshotSource

        return SnapshotSource
    if kind == "picamera2":
        from agent.sources.picamera2 import Picamera2Source

        return Picamera2Source
    raise ConfigError(f"unknown source kind {kind!r}")


def open_source(settings: SourceSettings | str) -> FrameSource:
    """Open the source ``settings`` describe (a bare string is taken as ``url``) and return it
    ready to iterate. Raises ``ConfigError``/``UserError`` with the fix when it cannot open."""
    if isinstance(settings, str):
        settings = SourceSettings(url=settings)
    source = _source_class(resolve_kind(settings))(settings)
    try:
        source.open()
    except BaseException:
        source.close()
        raise
    return source
