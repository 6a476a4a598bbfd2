"""Polling a snapshot URL: one JPEG per request, every ``interval_s`` (default 1 s).

OctoPrint: ``http://octopi.local/webcam/?action=snapshot`` (API key via ``api_key_env`` when the
webcam is behind OctoPrint's access control); Moonraker/crowsnest:
``http://mainsailos.local/webcam/?action=snapshot``. Snapshots cost the camera server nothing
between polls, which suits a printer sampled every 10 s. Failed polls are retried with capped
exponential backoff and the iteration carries on.
"""

from __future__ import annotations

import http.client
import logging
import time
from collections.abc import Iterator

from agent.config.source import SourceSettings
from agent.frames import Frame
from agent.sources.base import FrameSource, Reconnector, SourceUnavailable
from agent.sources.http_get import HTTP_HINT, ConnectionHolder, HttpEndpoint

log = logging.getLogger(__name__)


class SnapshotSource(FrameSource):
    """Frames fetched one GET at a time; ``encoded`` holds the image bytes as served."""

    kind = "snapshot"
    live = True
    default_interval_s = 1.0

    def __init__(self, settings: SourceSettings) -> None:
        super().__init__(settings)
        self._endpoint = HttpEndpoint(settings)
        self._holder = ConnectionHolder()
        self._max_bytes = int(settings.max_frame_mb * 1024 * 1024)
        self._first: tuple[bytes, float] | None = None

    def fetch(self) -> bytes:
        """One snapshot's bytes; raises ``SourceUnavailable`` saying what failed."""
        opened = self._endpoint.get()
        response = opened.response
        self._holder.set(opened)
        try:
            content_type = response.headers.get_content_type()
            if content_type.startswith("multipart/"):
                raise SourceUnavailable(
                    "this URL is an MJPEG stream, not a snapshot; use kind: mjpeg "
                    "(or the ?action=snapshot URL)",
                    permanent=True,
                )
            length = response.getheader("Content-Length")
            if length and length.isdigit() and int(length) > self._max_bytes:
                raise SourceUnavailable(f"snapshot of {length} bytes exceeds source.max_frame_mb")
            data = response.read(self._max_bytes + 1)
            if len(data) > self._max_bytes:
                raise SourceUnavailable("snapshot exceeds source.max_frame_mb")
            return data
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, TimeoutError):
                raise SourceUnavailable(
                    f"no snapshot within read_timeout_s ({self.settings.read_timeout_s:g} s)"
                ) from None
            raise SourceUnavailable(f"reading the snapshot failed ({type(exc).__name__}: {exc})") from None
        finally:
            self._holder.set(None)
            opened.close()

    def open(self) -> None:
        """Fetch the first snapshot (with ``startup_attempts`` tries); it becomes the first frame."""
        data = self._connect_at_start(self.fetch, HTTP_HINT)
        self._first = (data, time.time())

    def _frames(self) -> Iterator[Frame]:
        retry = Reconnector(self)
        while not self._stop.is_set():
            if not self._limiter.wait(self._stop):
                return
            if self._first is not None:
                (data, timestamp), self._first = self._first, None
            else:
                try:
                    data = self.fetch()
                except SourceUnavailable as exc:
                    if self._stop.is_set() or retry.failed(str(exc)):
                        return
                    continue
                timestamp = time.time()
                failures = retry.succeeded()
                if failures:
                    self._count("reconnects")
                    log.info("%s: snapshots are back after %d failed attempts", self.description, failures)
            frame = self._decoded_frame(data, timestamp=timestamp, what="snapshot")
            if frame is not None:
                yield frame

    def _interrupt(self) -> None:
        self._holder.interrupt()
