"""Frame: one image from a source, with where and when it came from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from agent.detections import Detections
from agent.naming import safe_name
from agent.utc import utc_compact

if TYPE_CHECKING:
    from agent.sources.resume import ResumePoint


@dataclass(slots=True)
class Frame:
    """One decoded image and its provenance.

    ``image`` is ``H x W x 3`` uint8 in OpenCV's BGR order. ``timestamp`` is the capture
    time in seconds since the epoch (UTC); for files it is the file's modification time,
    so re-reading the same file gives the same frame id. ``name`` is a file-safe stem
    unique within the source (the file name for folders, a time stamp and sequence
    number for live sources). ``encoded`` holds the source's own JPEG/PNG bytes when it
    had them, so they can be stored or published without re-encoding. ``full_size`` is set
    when ``image`` was decoded at reduced size (see ``agent.sources.decode``): ``width`` and
    ``height`` are then the full image's, which is what ``encoded`` holds.
    """

    image: NDArray[np.uint8]
    source_id: str
    sequence: int
    timestamp: float
    name: str
    encoded: bytes | None = field(default=None, repr=False)
    encoded_format: str = "jpg"
    origin: str | None = None  # the file path, or the redacted URL, the frame came from
    full_size: tuple[int, int] | None = None  # (width, height) when ``image`` is reduced
    resume_point: ResumePoint | None = None  # file sources: where a restart continues after this frame
    _frame_id: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def width(self) -> int:
        """Width of the full frame in pixels."""
        return self.full_size[0] if self.full_size else int(self.image.shape[1])

    @property
    def height(self) -> int:
        """Height of the full frame in pixels."""
        return self.full_size[1] if self.full_size else int(self.image.shape[0])

    @property
    def frame_id(self) -> str:
        """Identifier unique per device and stable for the same input: ``<source>_<name>``."""
        if self._frame_id is None:  # asked for several times a frame by the output stages
            self._frame_id = safe_name(f"{self.source_id}_{self.name}", max_len=160)
        return self._frame_id


def live_frame_name(timestamp: float, sequence: int) -> str:
    """Frame name for a live source: UTC stamp plus sequence, e.g. ``20261122T020631.123Z-000042``."""
    return f"{utc_compact(timestamp)}-{sequence:06d}"


@dataclass(frozen=True, slots=True)
class FrameResult:
    """What the detector made of one frame: the immutable input of every output stage.

    ``inference_ms`` is the ``invoke()`` time; ``timings_ms`` the detector's steps in milliseconds
    (``preprocess``, ``invoke``, ``postprocess``). ``skipped_inference`` is True for a frame the
    change gate let through without running the detector (then ``detections`` is empty). What the
    stages make of the result are their typed outputs (``agent.flow``), never changes to it.
    """

    frame: Frame
    detections: Detections
    model: str
    runtime: str
    inference_ms: float
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    skipped_inference: bool = False
