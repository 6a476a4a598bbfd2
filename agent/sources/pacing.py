"""When the next frame may go and when the next reconnect may be tried.

``RateLimiter`` is the one frame-interval limit every source uses (``interval_s`` / ``max_fps``);
``Backoff`` is the one capped exponential retry delay with jitter. Both work in seconds on the
monotonic clock unless told otherwise (a video file passes its own media time to ``admit``).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

# A frame exactly due (e.g. video frame 10 at 1.0 s with a 0.5 s interval) must not miss its slot
# because of float rounding in the sums.
_SLACK_S = 1e-6


class RateLimiter:
    """Lets at most one frame through per ``interval_s`` seconds; 0 means no limit.

    Admitted frames stay on a fixed grid (``t0, t0 + interval, ...``) so a 30 fps stream limited to
    10 fps really gives 10 fps; after a pause longer than one interval the grid restarts, so a
    stall never causes a burst.
    """

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s}")
        self.interval_s = float(interval_s)
        self._clock = clock
        self._next_due: float | None = None

    def reset(self) -> None:
        """Forget the last admitted frame: the next one goes at once."""
        self._next_due = None

    def delay_s(self, now: float | None = None) -> float:
        """Seconds until the next frame may go (0 when it may go now)."""
        if self.interval_s <= 0 or self._next_due is None:
            return 0.0
        now = self._clock() if now is None else now
        return max(0.0, self._next_due - now)

    def admit(self, now: float | None = None) -> bool:
        """True (and the frame is counted) when a frame at time ``now`` (s) may go; never waits."""
        if self.interval_s <= 0:
            return True
        now = self._clock() if now is None else now
        if self._next_due is not None and now < self._next_due - _SLACK_S:
            return False
        if self._next_due is None or now - self._next_due >= self.interval_s:
            self._next_due = now + self.interval_s
        else:
            self._next_due += self.interval_s
        return True

    def wait(self, stop: threading.Event) -> bool:
        """Sleep until the next frame may go and count it; False when ``stop`` was set meanwhile."""
        while not stop.is_set():
            delay = self.delay_s()
            if delay <= 0 and self.admit():
                return True
            if stop.wait(delay):
                return False
        return False


class Backoff:
    """Capped exponential delay with jitter: ``initial_s, 2*initial_s, ... <= max_s``, each
    shortened by a random fraction up to ``jitter`` so many agents do not retry in step."""

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        *,
        jitter: float = 0.25,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if initial_s <= 0 or max_s < initial_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {initial_s}, {max_s}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter = jitter
        self._rng = rng
        self.failures = 0

    def reset(self) -> None:
        """Start again from ``initial_s`` (after a success)."""
        self.failures = 0

    def next_delay_s(self) -> float:
        """The delay (s) before the next attempt; each call doubles the base up to ``max_s``."""
        base = min(self.max_s, self.initial_s * 2.0 ** min(self.failures, 60))
        self.failures += 1
        return base * (1.0 - self.jitter * self._rng())

    def sleep(self, stop: threading.Event) -> bool:
        """Wait out the next delay; False when ``stop`` was set meanwhile."""
        return not stop.wait(self.next_delay_s())
