"""The one interface every frame source has, and the start-up retry rule live sources share.

A source is opened by ``open_source`` (which calls ``open()``: errors the user must fix surface
there, before any thread starts), iterated once from one thread, and closed from any thread.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from agent.config.source import SourceSettings
from agent.errors import UserError
from agent.frames import Frame, live_frame_name
from agent.liveness import Heartbeats, StopEvent
from agent.pixel_cap import ImageTooLarge
from agent.sources.decode import (
    DecodeHint,
    decode_for_detector,
    decode_image,
    sniff_format,
)
from agent.sources.pacing import Backoff, RateLimiter
from agent.sources.resume import ResumePoint

log = logging.getLogger(__name__)

T = TypeVar("T")

STAT_KEYS = ("frames", "corrupt_skipped", "reconnects", "errors", "dropped")


class SourceUnavailable(Exception):
    """The source cannot be reached or read right now. ``permanent`` when retrying cannot help
    (wrong credentials, 404); the message says what happened, without secrets."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class FrameSource(ABC):
    """Frames from one source: ``for frame in source: ...``; ``close()`` from any thread.

    A source is iterated once: when the iteration ends (exhausted, broken off, closed) the
    source is finished and its resources are freed.

    Every frame is an ``agent.frames.Frame`` (BGR uint8) with this source's ``source_id`` and an
    increasing ``sequence`` starting at 0. ``live`` is True for cameras and streams (a consumer
    that falls behind should drop frames) and False for files (every frame matters).
    ``stats()`` returns counters: ``frames`` yielded, ``corrupt_skipped`` images that did not
    decode, ``reconnects`` after a failure, ``errors`` (failed reads/connects), ``dropped`` live
    frames received but not passed on because a newer one arrived first (with ``interval_s`` set
    this includes the frames the interval passes over). Set ``decode_hint`` before iterating to
    decode large JPEGs at reduced size (``agent.sources.decode``).
    """

    kind: str = "source"
    live: bool = False
    #: Interval (s) used when the settings set no limit; snapshot polling overrides it.
    default_interval_s: float = 0.0

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings
        self.source_id = settings.source_id
        self.description = f"{self.kind} source {settings.redacted_url}"
        self.heartbeats = Heartbeats()  # the reading threads beat here (agent.liveness)
        self._stop: threading.Event = StopEvent(self.heartbeats)
        self._limiter = RateLimiter(settings.frame_interval_s or self.default_interval_s)
        self._counters = dict.fromkeys(STAT_KEYS, 0)
        self._counter_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._iterating = False
        self._released = False
        self._next_sequence = 0
        self.decode_hint: DecodeHint | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def open(self) -> None:  # noqa: B027 - optional hook
        """Check the source and connect; raises ``UserError``/``ConfigError`` with the fix."""

    @abstractmethod
    def _frames(self) -> Iterator[Frame]:
        """Yield frames until the source ends or ``self._stop`` is set."""

    def _interrupt(self) -> None:  # noqa: B027 - optional hook
        """Unblock a read in progress (called from ``close`` on any thread); must be thread-safe."""

    def _release(self) -> None:  # noqa: B027 - optional hook
        """Free devices, files and connections; runs once, on the thread that used them."""

    def __iter__(self) -> Iterator[Frame]:
        with self._state_lock:
            if self._iterating:
                raise RuntimeError(f"{self.description} is already being iterated")
            if self._released:
                return
            self._iterating = True
        try:
            with self.heartbeats.alive():
                for frame in self._frames():
                    if self._stop.is_set():
                        break
                    self._count("frames")
                    yield frame
                    self.heartbeats.beat()
        finally:
            # Iteration is over (exhausted, broken off, or closed): the source is finished.
            self._stop.set()
            self._interrupt_quietly()
            with self._state_lock:
                self._iterating = False
            self._release_once()

    def close(self) -> None:
        """Stop: iteration ends promptly (within one read timeout at worst) and resources are
        freed. Safe to call from any thread and more than once."""
        self._stop.set()
        self._interrupt_quietly()
        with self._state_lock:
            if self._iterating:
                return  # the iterating thread releases when it notices the stop
        self._release_once()

    def _interrupt_quietly(self) -> None:
        try:
            self._interrupt()
        except Exception:  # closing must not fail
            log.debug("%s: interrupt failed", self.description, exc_info=True)

    def _release_once(self) -> None:
        with self._state_lock:
            if self._released:
                return
            self._released = True
        try:
            self._release()
        except Exception:  # closing must not fail
            log.debug("%s: release failed", self.description, exc_info=True)

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called or the iteration ended."""
        return self._stop.is_set()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- helpers for subclasses --------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """A copy of the counters (see the class docstring)."""
        with self._counter_lock:
            return dict(self._counters)

    def _count(self, key: str, n: int = 1) -> None:
        with self._counter_lock:
            self._counters[key] += n

    def _set_count(self, key: str, value: int) -> None:
        with self._counter_lock:
            self._counters[key] = value

    def _frame(
        self,
        image: NDArray[np.uint8],
        *,
        timestamp: float,
        name: str | None = None,
        encoded: bytes | None = None,
        encoded_format: str = "jpg",
        origin: str | None = None,
        full_size: tuple[int, int] | None = None,
        resume_point: ResumePoint | None = None,
    ) -> Frame:
        """A Frame with the next sequence number; ``name`` defaults to the live-frame name and
        ``origin`` (where it came from) to the source's URL without credentials."""
        sequence = self._next_sequence
        self._next_sequence += 1
        return Frame(
            image=image,
            source_id=self.source_id,
            sequence=sequence,
            timestamp=timestamp,
            name=name if name is not None else live_frame_name(timestamp, sequence),
            encoded=encoded,
            encoded_format=encoded_format,
            origin=origin if origin is not None else self.settings.redacted_url,
            full_size=full_size,
            resume_point=resume_point,
        )

    def _decode(self, data: bytes) -> tuple[NDArray[np.uint8], tuple[int, int] | None] | None:
        """The image in ``data`` (reduced per ``decode_hint``) and its full size when reduced."""
        if self.decode_hint is not None:
            return decode_for_detector(data, self.decode_hint)
        image = decode_image(data)
        return None if image is None else (image, None)

    def _decoded_frame(self, data: bytes, *, timestamp: float, what: str) -> Frame | None:
        """A Frame of the image in ``data`` (kept as ``encoded``), or None when it does not decode
        (counted and logged as a corrupt ``what``, e.g. "part")."""
        try:
            decoded = self._decode(data)
        except ImageTooLarge as exc:
            self._skip_corrupt(f"a {len(data)}-byte {what}: {exc}")
            return None
        if decoded is None:
            self._skip_corrupt(f"a {len(data)}-byte {what}")
            return None
        image, full_size = decoded
        return self._frame(
            image,
            timestamp=timestamp,
            encoded=data,
            encoded_format=sniff_format(data) or "jpg",
            full_size=full_size,
        )

    def _connect_at_start(self, connect: Callable[[], T], hint: str) -> T:
        """``connect_at_start`` for this source (stops early when the source is closed)."""
        return connect_at_start(connect, self.settings, self.description, hint, self._stop)

    def _skip_corrupt(self, detail: str) -> None:
        """Count an image that did not decode; log the first one, then every hundredth."""
        self._count("corrupt_skipped")
        count = self.stats()["corrupt_skipped"]
        if count == 1 or count % 100 == 0:
            log.warning("%s: skipped a corrupt image (%s); %d so far", self.description, detail, count)
        else:
            log.debug("%s: skipped a corrupt image (%s)", self.description, detail)


class Reconnector:
    """The bookkeeping of a live source's read-and-reconnect loop: failures in a row, the
    ``errors`` counter, capped exponential backoff (``reconnect_initial_s`` .. ``reconnect_max_s``),
    the retry log line and the wait. Used by the one thread that reads the source."""

    def __init__(self, source: FrameSource) -> None:
        self._source = source
        self._backoff = Backoff(source.settings.reconnect_initial_s, source.settings.reconnect_max_s)
        self.failures = 0
        """Failed reads or connects since the last good read."""

    def failed(self, message: str) -> bool:
        """Count a failed read or (re)connect, log ``message`` and wait the next backoff delay (s).

        Returns True when the source was closed during the wait. Logs the first three failures
        in a row, then every tenth (an outage may last hours).
        """
        source = self._source
        self.failures += 1
        source._count("errors")
        delay = self._backoff.next_delay_s()
        level = logging.WARNING if self.failures <= 3 or self.failures % 10 == 0 else logging.DEBUG
        log.log(
            level, "%s: %s; reconnect attempt %d in %.1f s", source.description, message, self.failures, delay
        )
        return source._stop.wait(delay)

    def reconnect(self, connect: Callable[[], T], done: str = "reconnected") -> T | None:
        """``connect()``'s result, counted as a reconnect and logged as ``done``; None after a
        ``SourceUnavailable`` (handled by ``failed``: the caller just loops)."""
        try:
            result = connect()
        except SourceUnavailable as exc:
            self.failed(str(exc))
            return None
        self._source._count("reconnects")
        log.info("%s: %s", self._source.description, done)
        return result

    def succeeded(self) -> int:
        """A good read: returns the failures in a row before it (0 when none) and starts the
        backoff over."""
        failures, self.failures = self.failures, 0
        if failures:
            self._backoff.reset()
        return failures


def connect_at_start(
    connect: Callable[[], T],
    settings: SourceSettings,
    description: str,
    hint: str,
    stop: threading.Event | None = None,
) -> T:
    """``connect()`` with up to ``settings.startup_attempts`` tries and backoff between them.

    Raises ``UserError`` naming the source, the last failure and ``hint`` when every try failed,
    or at once when a failure is permanent (``SourceUnavailable.permanent``).
    """
    stop = stop or threading.Event()
    backoff = Backoff(settings.reconnect_initial_s, settings.reconnect_max_s)
    attempt = 0
    while True:
        attempt += 1
        try:
            return connect()
        except SourceUnavailable as exc:
            if exc.permanent or attempt >= settings.startup_attempts or stop.is_set():
                tries = f"after {attempt} attempts" if attempt > 1 else "on the first attempt"
                raise UserError(f"cannot open {description}: {exc} ({tries}). {hint}") from None
            delay = backoff.next_delay_s()
            log.warning(
                "%s: %s (attempt %d of %d); retrying in %.1f s",
                description,
                exc,
                attempt,
                settings.startup_attempts,
                delay,
            )
            if stop.wait(delay):
                raise UserError(f"cannot open {description}: closed while connecting") from None
