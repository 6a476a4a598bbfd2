"""Intruder recordings: real non-printer photos put into the healthy part of the bundled sample print.

The photos are real pictures made by other people, never generated: the three of
``../shared/models/images`` (two dogs, a person with a tie, people with kites) and scikit-image's
bundled ``skimage.data`` photos (an astronaut, a cat, a cup of coffee, a cameraman, a rocket). Each
intruder frame is a healthy sample frame with a photo over it: the whole frame (someone right in
front of the lens), over the print, from the bottom edge, in a corner, or from the side. The photo
moves a few pixels from one frame to the next, as a person or a pet would.

Used by tests/test_scene_check.py (through ``edge-agent replay --json``) and by
scripts/scene_check_table.py (the whole grid of photos x placements x lengths).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from agent.config.loading import BUNDLED_DATA

SAMPLE = BUNDLED_DATA / "sample_timelapse"
FAILURE_FRAME = 48  # the sample's first failed frame (1-based); 1..47 are healthy
WARN_FRAME, ACT_FRAME = 50, 54  # where the bundled model warns and acts on the sample
SHARED_PHOTOS = {"pets": "pets.jpg", "grace_hopper": "grace_hopper.bmp", "kite": "kite_and_cold.jpg"}
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "camera", "rocket")
# (left, top, width, height) of the photo as fractions of the frame
PLACEMENTS: dict[str, tuple[float, float, float, float] | None] = {
    "whole": None,
    "over_print": (0.25, 0.25, 0.5, 0.5),
    "bottom": (0.275, 0.55, 0.45, 0.45),
    "corner": (0.6, 0.6, 0.4, 0.4),
    "side": (0.0, 0.275, 0.45, 0.45),
    "top_corner": (0.0, 0.0, 0.4, 0.4),
}

Image = NDArray[np.uint8]


def sample_frame(index: int) -> Path:
    """The bundled sample's frame ``index`` (1-based)."""
    return SAMPLE / f"frame_{index:06d}.jpg"


def load_photos(shared_dir: Path | None, names: Iterable[str] | None = None) -> dict[str, Image]:
    """The intruder photos as BGR images, by name (those of ``../shared`` only when ``shared_dir``
    is given; scikit-image's only when it is installed)."""
    photos: dict[str, Image] = {}
    if shared_dir is not None:
        for name, file in SHARED_PHOTOS.items():
            image = cv2.imread(str(shared_dir / "models" / "images" / file), cv2.IMREAD_COLOR)
            assert image is not None, f"cannot read {file}"
            photos[name] = np.asarray(image, dtype=np.uint8)
    try:
        from skimage import data
    except ImportError:
        pass
    else:
        for name in SKIMAGE_PHOTOS:
            rgb = np.asarray(getattr(data, name)(), dtype=np.uint8)
            bgr = cv2.cvtColor(rgb, cv2.COLOR_GRAY2BGR if rgb.ndim == 2 else cv2.COLOR_RGB2BGR)
            photos[name] = np.asarray(bgr, dtype=np.uint8)
    if names is not None:
        photos = {name: photos[name] for name in names}
    return photos


def intruder_frame(base: Image, photo: Image, placement: str, step: int) -> Image:
    """``base`` with ``photo`` over it at ``placement``; ``step`` moves it a few pixels."""
    height, width = base.shape[:2]
    where = PLACEMENTS[placement]
    if where is None:
        return np.asarray(cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA), dtype=np.uint8)
    left, top, w_share, h_share = where
    w, h = round(width * w_share), round(height * h_share)
    dx, dy = ((step % 5) - 2) * 4, ((step % 3) - 1) * 3
    x = min(max(round(width * left) + dx, 0), width - w)
    y = min(max(round(height * top) + dy, 0), height - h)
    out = base.copy()
    out[y : y + h, x : x + w] = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
    return out


@dataclass(frozen=True)
class Intrusion:
    """``frames`` intruder frames with ``photo`` at ``placement`` after sample frame ``after``."""

    photo: str
    placement: str
    frames: int
    after: int


def write_recording(
    folder: Path, photos: dict[str, Image], intrusions: Sequence[Intrusion], *, last: int = 90
) -> dict[str, str]:
    """Write the sample's frames 1..``last`` into ``folder`` (numbered JPEGs, name order = time order)
    with the ``intrusions`` inserted; returns the file stem of every frame -> what it shows
    (``sample_000036`` or ``pets/whole/3``)."""
    folder.mkdir(parents=True, exist_ok=True)
    by_after: dict[int, list[Intrusion]] = {}
    for intrusion in intrusions:
        by_after.setdefault(intrusion.after, []).append(intrusion)
    shows: dict[str, str] = {}
    number = 0

    def put(image_bytes: bytes, what: str) -> None:
        nonlocal number
        number += 1
        stem = f"frame_{number:06d}"
        (folder / f"{stem}.jpg").write_bytes(image_bytes)
        shows[stem] = what

    for index in range(1, last + 1):
        put(sample_frame(index).read_bytes(), f"sample_{index:06d}")
        for intrusion in by_after.get(index, []):
            base = np.asarray(cv2.imread(str(sample_frame(index)), cv2.IMREAD_COLOR), dtype=np.uint8)
            for step in range(intrusion.frames):
                image = intruder_frame(base, photos[intrusion.photo], intrusion.placement, step)
                ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
                assert ok
                put(jpeg.tobytes(), f"{intrusion.photo}/{intrusion.placement}/{step + 1}")
    return shows
