"""Change gate: skip the detector on frames where nothing changed.

The idea follows Frigate's motion detector, written for our needs: each frame is shrunk
to a small grayscale picture, blurred to suppress sensor noise, and compared with a
running-average background of the same source. A pixel has changed when it differs from
the background by more than ``pixel_threshold`` grey levels; the frame goes to the
detector when more than ``min_changed_fraction`` of the pixels changed, and in any case
at least every ``max_skip_interval_s`` seconds, so a scene that fails without moving
(a stalled print, a fallen object that then lies still) is still looked at.

The background absorbs every frame with weight ``background_alpha``: lighting that drifts
slowly never counts as change, and an object that arrives and stays becomes background
after roughly ``ln(contrast / pixel_threshold) / background_alpha`` frames (about 30
frames for a strong contrast at the defaults). After it leaves, the "ghost" it left in
the background counts as change for a few frames, which is the right answer: something
left. The first ``warmup_frames`` frames of a source (or after its resolution changes)
are always inferred and averaged into the first background.

The gate is off by default: when on, it decides which frames the detector never sees,
and thresholds that suit one camera (noise, object size, lighting) can miss small
objects on another. An agent left in the field turns it on (``gate: {enabled: true}``);
the defaults are conservative (a change in 0.2 % of the picture is enough to infer).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, NamedTuple

import cv2
import numpy as np
from numpy.typing import NDArray

from agent.config.gate import GateSettings
from agent.frames import Frame

log = logging.getLogger(__name__)

# Decision reasons, as counted in stats.
REASON_DISABLED = "disabled"
REASON_WARMUP = "warmup"
REASON_CHANGE = "change"
REASON_MAX_SKIP = "max_skip_interval"
REASON_NO_CHANGE = "no_change"


class GateDecision(NamedTuple):
    """``infer``: run the detector on this frame; ``reason``: one of the ``REASON_*`` names."""

    infer: bool
    reason: str


@dataclass(slots=True)
class _SourceState:
    """What the gate remembers about one source."""

    image_shape: tuple[int, ...]
    background: NDArray[np.float32] | None = None
    frames: int = 0
    last_inferred: float | None = None
    last_changed_fraction: float = 0.0


class ChangeGate:
    """Decides per frame whether the detector needs to run; one background per source.

    Not thread-safe for ``should_infer`` (call it from one thread, the one that feeds the
    detector); ``stats`` may be read from any thread.
    """

    def __init__(self, settings: GateSettings | None = None) -> None:
        self.settings = settings or GateSettings()
        self._sources: dict[str, _SourceState] = {}
        self._reasons: Counter[str] = Counter()
        self._lock = threading.Lock()

    def should_infer(self, frame: Frame, now: float) -> GateDecision:
        """Whether ``frame`` must go to the detector, and why.

        ``now`` is ``time.monotonic()`` seconds (any clock that only moves forward); it
        drives ``max_skip_interval_s``. The frame's background is updated either way.
        """
        settings = self.settings
        if not settings.enabled:
            return self._count(GateDecision(True, REASON_DISABLED))

        small = self._prepare(frame.image)
        state = self._sources.get(frame.source_id)
        if state is None or state.image_shape != frame.image.shape:
            if state is not None:
                log.info("gate: %s changed resolution, learning a new background", frame.source_id)
            state = _SourceState(image_shape=frame.image.shape)
            self._sources[frame.source_id] = state

        if state.background is None:
            state.background = small.astype(np.float32)
        if state.frames < settings.warmup_frames:
            # A true mean of the warm-up frames: weight 1/(k+1) for the k-th frame.
            cv2.accumulateWeighted(small, state.background, 1.0 / (state.frames + 1))
            state.frames += 1
            state.last_inferred = now
            return self._count(GateDecision(True, REASON_WARMUP))

        fraction = self._changed_fraction(small, state.background)
        cv2.accumulateWeighted(small, state.background, settings.background_alpha)
        state.frames += 1
        state.last_changed_fraction = fraction

        if fraction > settings.min_changed_fraction:
            decision = GateDecision(True, REASON_CHANGE)
        elif state.last_inferred is None or now - state.last_inferred >= settings.max_skip_interval_s:
            decision = GateDecision(True, REASON_MAX_SKIP)
        else:
            decision = GateDecision(False, REASON_NO_CHANGE)
        if decision.infer:
            state.last_inferred = now
        return self._count(decision)

    def changed_fraction(self, source_id: str) -> float:
        """Share of changed pixels in the last compared frame of ``source_id`` (0 when unknown)."""
        state = self._sources.get(source_id)
        return state.last_changed_fraction if state else 0.0

    def reset(self, source_id: str | None = None) -> None:
        """Forget the background of one source (or all): the next frames warm up again."""
        if source_id is None:
            self._sources.clear()
        else:
            self._sources.pop(source_id, None)

    def stats(self) -> dict[str, Any]:
        """Counts since start: frames seen, inferred, skipped, the share skipped, and per reason."""
        with self._lock:
            reasons = dict(self._reasons)
        seen = sum(reasons.values())
        skipped = reasons.get(REASON_NO_CHANGE, 0)
        return {
            "enabled": self.settings.enabled,
            "frames": seen,
            "inferred": seen - skipped,
            "skipped": skipped,
            "skipped_share": round(skipped / seen, 4) if seen else 0.0,
            "reasons": reasons,
        }

    def _prepare(self, image: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """Downscale (area average, which also averages out noise), grayscale, blur."""
        height, width = image.shape[:2]
        target_w = min(self.settings.downscale_width_px, width)
        target_h = max(1, round(height * target_w / width))
        small = cv2.resize(image, (target_w, target_h), interpolation=cv2.INTER_AREA)
        if small.ndim == 3:
            code = cv2.COLOR_BGRA2GRAY if small.shape[2] == 4 else cv2.COLOR_BGR2GRAY
            small = cv2.cvtColor(small, code)
        kernel = self.settings.blur_kernel_px
        if kernel > 1:
            small = cv2.GaussianBlur(small, (kernel, kernel), 0)
        return np.asarray(small, dtype=np.uint8)

    def _changed_fraction(self, small: NDArray[np.uint8], background: NDArray[np.float32]) -> float:
        """Share of pixels differing from the background by more than ``pixel_threshold``."""
        delta = cv2.absdiff(small, cv2.convertScaleAbs(background))
        _, mask = cv2.threshold(delta, self.settings.pixel_threshold, 255, cv2.THRESH_BINARY)
        return cv2.countNonZero(mask) / mask.size

    def _count(self, decision: GateDecision) -> GateDecision:
        with self._lock:
            self._reasons[decision.reason] += 1
        return decision
