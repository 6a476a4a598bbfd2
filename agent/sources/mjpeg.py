"""HTTP MJPEG streams (``multipart/x-mixed-replace``): OctoPrint/mjpg-streamer, crowsnest/ustreamer,
ESP32-CAM, IP cameras.

A reader thread parses the stream as it arrives and keeps only the newest JPEG: when inference is
slower than the camera, stale frames are dropped (counted), never queued. Only the frames the
consumer takes are decoded. A dropped connection is retried with capped exponential backoff and
the iteration carries on.

The multipart parser follows RFC 2046 and the common deviations of webcam servers: the boundary
comes from the Content-Type (with or without a leading ``--``, or learnt from the first delimiter
line when missing); a part's size comes from its Content-Length header when present, otherwise
the body runs to the next delimiter line.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Iterator
from typing import Protocol

from agent.config.source import SourceSettings
from agent.frames import Frame
from agent.sources.base import FrameSource, Reconnector, SourceUnavailable
from agent.sources.http_get import HTTP_HINT, ConnectionHolder, HttpEndpoint, OpenResponse
from agent.sources.latest import LatestSlot

log = logging.getLogger(__name__)

_MAX_LINE_BYTES = 8192
_MAX_HEADER_LINES = 64


class StreamError(Exception):
    """The byte stream broke the multipart format or a size limit, or ended inside a part."""


class _Readable(Protocol):
    def readline(self, limit: int = -1, /) -> bytes: ...

    def read(self, amt: int | None = None, /) -> bytes: ...


class MultipartReader:
    """Splits a ``multipart/x-mixed-replace`` body into its parts' bytes, one at a time."""

    def __init__(self, stream: _Readable, boundary: str | None, max_part_bytes: int) -> None:
        self._stream = stream
        self._max_part_bytes = max_part_bytes
        self._delimiters: set[bytes] = set()
        if boundary:
            token = boundary.encode("latin-1")
            self._delimiters.add(b"--" + token)
            if token.startswith(b"--"):
                self._delimiters.add(token)  # servers that put the dashes into the parameter
        self._pending_delimiter = False

    def _readline(self) -> bytes:
        line = self._stream.readline(_MAX_LINE_BYTES)
        if not line:
            raise EOFError("the server closed the stream")
        return line

    def _delimiter_kind(self, line: bytes) -> str | None:
        """``"part"`` for a delimiter line, ``"end"`` for the closing one, else None."""
        text = line.rstrip()
        if not text.startswith(b"--"):
            return None
        if not self._delimiters:
            self._delimiters.add(text[:-2] if text.endswith(b"--") and len(text) > 4 else text)
        if text in self._delimiters:
            return "part"
        if text.endswith(b"--") and text[:-2] in self._delimiters:
            return "end"
        return None

    def next_part(self) -> bytes:
        """The next part's body. Raises ``EOFError`` when the stream ends between parts and
        ``StreamError`` when it is malformed, too big or cut inside a part."""
        if not self._pending_delimiter:
            skipped = 0
            while True:
                line = self._readline()
                kind = self._delimiter_kind(line)
                if kind == "end":
                    raise EOFError("the server ended the stream")
                if kind == "part":
                    break
                skipped += len(line)
                if skipped > self._max_part_bytes:
                    raise StreamError(f"no multipart boundary within {skipped} bytes")
        self._pending_delimiter = False
        length = self._read_headers()
        try:
            if length is not None:
                return self._read_exact(length)
            return self._read_to_delimiter()
        except EOFError:
            raise StreamError("the stream ended inside a part") from None

    def _read_headers(self) -> int | None:
        length: int | None = None
        for _ in range(_MAX_HEADER_LINES):
            line = self._readline()
            if line in (b"\r\n", b"\n"):
                return length
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    raise StreamError(f"bad part Content-Length {value.strip()!r}") from None
                if length < 0 or length > self._max_part_bytes:
                    raise StreamError(f"part of {length} bytes is larger than source.max_frame_mb allows")
        raise StreamError("part headers do not end")

    def _read_exact(self, length: int) -> bytes:
        chunks: list[bytes] = []
        remaining = length
        while remaining > 0:
            chunk = self._stream.read(remaining)
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def _read_to_delimiter(self) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            line = self._readline()
            if self._delimiter_kind(line) is not None:
                # The CRLF before a delimiter belongs to the delimiter (RFC 2046).
                self._pending_delimiter = self._delimiter_kind(line) == "part"
                body = b"".join(chunks)
                if body.endswith(b"\r\n"):
                    return body[:-2]
                return body[:-1] if body.endswith(b"\n") else body
            chunks.append(line)
            size += len(line)
            if size > self._max_part_bytes:
                raise StreamError(f"part larger than source.max_frame_mb ({size} bytes and no boundary)")


def _describe_read_error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no data within read_timeout_s"
    if isinstance(exc, EOFError | StreamError):
        return str(exc) or "the stream ended"
    if isinstance(exc, OSError):
        return f"connection lost ({exc.strerror or exc})"
    return f"{type(exc).__name__}: {exc}"


class MjpegSource(FrameSource):
    """Frames from an HTTP MJPEG stream; ``encoded`` holds each part's JPEG bytes as received."""

    kind = "mjpeg"
    live = True

    def __init__(self, settings: SourceSettings) -> None:
        super().__init__(settings)
        self._endpoint = HttpEndpoint(settings)
        self._slot: LatestSlot[tuple[bytes, float]] = LatestSlot()
        self._holder = ConnectionHolder()
        self._thread: threading.Thread | None = None
        self._max_part_bytes = int(settings.max_frame_mb * 1024 * 1024)

    def _connect(self) -> tuple[OpenResponse, MultipartReader]:
        opened = self._endpoint.get()
        response = opened.response
        content_type = response.headers.get_content_type()
        if not content_type.startswith("multipart/"):
            opened.close()
            raise SourceUnavailable(
                f"answered with Content-Type {content_type}, not an MJPEG stream "
                "(multipart/x-mixed-replace); for a single image use kind: snapshot",
                permanent=True,
            )
        boundary = response.headers.get_param("boundary")
        self._holder.set(opened)
        return opened, MultipartReader(
            response, boundary if isinstance(boundary, str) else None, self._max_part_bytes
        )

    def open(self) -> None:
        """Connect (with ``startup_attempts`` tries) and start the reader thread."""
        first = self._connect_at_start(self._connect, HTTP_HINT)
        self._thread = threading.Thread(
            target=self._read_loop, args=(first,), name=f"mjpeg-{self.source_id}", daemon=True
        )
        self._thread.start()

    def _read_loop(self, first: tuple[OpenResponse, MultipartReader]) -> None:
        with self.heartbeats.alive():  # this thread reads: it must keep beating (agent.liveness)
            self._read_parts(first)

    def _read_parts(self, first: tuple[OpenResponse, MultipartReader]) -> None:
        retry = Reconnector(self)
        current: tuple[OpenResponse, MultipartReader] | None = first
        try:
            while not self._stop.is_set():
                if current is None:
                    current = retry.reconnect(self._connect)
                    if current is None:
                        continue
                opened, reader = current
                try:
                    while not self._stop.is_set():
                        self.heartbeats.beat()  # each part: a read that never returns stops the beats
                        part = reader.next_part()
                        if self._slot.put((part, time.time())):
                            self._count("dropped")
                        retry.succeeded()
                except (OSError, http.client.HTTPException, EOFError, StreamError) as exc:
                    if self._stop.is_set():
                        break
                    self._holder.set(None)
                    opened.close()
                    current = None
                    retry.failed(_describe_read_error(exc))
        finally:
            self._holder.set(None)
            if current is not None:
                current[0].close()

    def _frames(self) -> Iterator[Frame]:
        while not self._stop.is_set():
            if not self._limiter.wait(self._stop):
                return
            while True:
                item = self._slot.take(self._stop, on_poll=self.heartbeats.beat)
                if item is None:
                    return
                data, timestamp = item
                frame = self._decoded_frame(data, timestamp=timestamp, what="part")
                if frame is not None:
                    yield frame
                    break

    def _interrupt(self) -> None:
        self._holder.interrupt()
        self._slot.wake()

    def _release(self) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
