"""Intruder replays: real non-printer photos inserted into the healthy part of a recorded print.

A person, a pet or a hand in front of the camera, or a camera that was moved, is not a print
failure; the alerts must stay silent. An intruder replay is a folder of frames: the healthy
frames of a recording up to frame ``after``, then ``count`` intruder frames, then the rest of
the healthy frames (and optionally the failure after them). An intruder frame is either
``whole`` (the photo fills the view: the camera blocked or turned) or ``part`` (the photo covers
the lower right of the last healthy frame, entering from the right edge, as a person or a
pet partly in view); it drifts a few pixels per frame, as real intruders do.

The photos are real photographs made by other people and are never copied into this
repository: they are read at run time from ``../shared/models/images`` and from the ones
scikit-image bundles in its wheel (``skimage.data``; none it would download). None of them is
used to train the bundled model (its hard negatives come from other photos; see
``docs/guidance-model.md``).

``scripts/intruder_replay.py`` runs the matrix (models x alert configs x photos x modes x
durations) through ``edge-agent replay``'s own functions; ``tests/test_intruders.py`` runs a few
through the CLI.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from agent.bundled import SAMPLE_TIMELAPSE, SAMPLE_TRUTH

log = logging.getLogger(__name__)

Mode = Literal["whole", "part"]
MODES: tuple[Mode, ...] = ("whole", "part")
DURATIONS = (1, 2, 4, 8, 12, 30)  # intruder frames per replay
DEFAULT_AFTER = (
    36  # past the printer config's 30 samples of startup grace, 11 healthy frames before the failure
)
DRIFT_PX = 6  # how far an intruder moves between frames
SAMPLE = SAMPLE_TIMELAPSE
SHARED_PHOTOS = {
    "pets": ("models/images/pets.jpg", "two dogs (google-coral/test_data, Apache-2.0)"),
    "grace_hopper": ("models/images/grace_hopper.bmp", "a person (google-coral/test_data, Apache-2.0)"),
    "kite_and_cold": (
        "models/images/kite_and_cold.jpg",
        "people and kites (google-coral/test_data, Apache-2.0)",
    ),
}
# bundled in scikit-image's wheel (skimage/data/*): name -> what it shows
SKIMAGE_PHOTOS = {
    "astronaut": "a person (skimage.data, public domain)",
    "chelsea": "a cat (skimage.data, CC0)",
    "coffee": "a cup of coffee (skimage.data, CC0)",
    "rocket": "a rocket on its launch pad (skimage.data, public domain)",
    "camera": "a person with a camera, greyscale (skimage.data, CC0)",
}


@dataclass(frozen=True)
class IntruderPhoto:
    """A real photo to put in front of the camera; ``load`` gives it as BGR uint8."""

    name: str
    shows: str
    load: Callable[[], NDArray[np.uint8]]


def _read(path: Path) -> Callable[[], NDArray[np.uint8]]:
    def load() -> NDArray[np.uint8]:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"cannot read {path}")
        return np.asarray(image, dtype=np.uint8)

    return load


def _skimage(name: str) -> Callable[[], NDArray[np.uint8]]:
    def load() -> NDArray[np.uint8]:
        from skimage import data

        image = np.asarray(getattr(data, name)(), dtype=np.uint8)
        if image.ndim == 2:
            return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
        return np.asarray(cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2BGR), dtype=np.uint8)

    return load


def skimage_available() -> bool:
    """Whether scikit-image (its bundled photos) can be imported."""
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        return False
    return True


def find_photos(shared: Path | None) -> list[IntruderPhoto]:
    """The replay photos available here: ``shared``'s three (when given and present) and
    scikit-image's (when installed)."""
    photos = []
    if shared is not None:
        for name, (rel, shows) in SHARED_PHOTOS.items():
            if (shared / rel).is_file():
                photos.append(IntruderPhoto(name, shows, _read(shared / rel)))
    if skimage_available():
        photos += [IntruderPhoto(name, shows, _skimage(name)) for name, shows in SKIMAGE_PHOTOS.items()]
    return photos


# -- frames ----------------------------------------------------------------------------------


def _cover(photo: NDArray[np.uint8], width: int, height: int, shift: int) -> NDArray[np.uint8]:
    """``photo`` scaled to cover ``width`` x ``height``, the crop moved ``shift`` px to the right."""
    ph, pw = photo.shape[:2]
    zoom = max(width / pw, height / ph) * 1.1
    big = cv2.resize(photo, (round(pw * zoom), round(ph * zoom)), interpolation=cv2.INTER_AREA)
    x0 = min(max(0, (big.shape[1] - width) // 2 - shift), big.shape[1] - width)
    y0 = (big.shape[0] - height) // 2
    return np.ascontiguousarray(big[y0 : y0 + height, x0 : x0 + width])


def intruder_frame(
    background: NDArray[np.uint8], photo: NDArray[np.uint8], mode: Mode, step: int
) -> NDArray[np.uint8]:
    """The ``step``-th (0-based) frame of an intrusion over ``background``."""
    height, width = background.shape[:2]
    if mode == "whole":
        return _cover(photo, width, height, step * DRIFT_PX)
    ph = int(height * 0.7)
    pw = min(int(width * 0.55), round(photo.shape[1] * ph / photo.shape[0]))
    patch = _cover(photo, pw, ph, 0)
    out = background.copy()
    x = width - pw + int(pw * 0.1) - step * DRIFT_PX  # enters from the right edge, moving left
    x = max(0, x)
    visible = min(pw, width - x)
    out[height - ph :, x : x + visible] = patch[:, :visible]
    return out


@dataclass
class ReplayLayout:
    """One built replay folder and what each of its frames is, in order."""

    folder: Path
    kinds: list[str]  # per frame: "healthy", "intruder" or "failure"

    @property
    def first_intruder(self) -> int:
        """The 0-based position of the first intruder frame (-1: none)."""
        return self.kinds.index("intruder") if "intruder" in self.kinds else -1


def sample_frames() -> tuple[list[Path], int]:
    """The bundled sample timelapse's frames in order and the 0-based index where it fails."""
    truth = json.loads(SAMPLE_TRUTH.read_text(encoding="utf-8"))
    return [SAMPLE / f["image"] for f in truth["frames"]], int(truth["failure_index"])


def _link(src: Path, dst: Path) -> None:
    try:
        os.symlink(src.resolve(), dst)
    except OSError:
        shutil.copyfile(src, dst)


def build_replay(
    folder: Path,
    photo: NDArray[np.uint8] | None,
    mode: Mode,
    count: int,
    *,
    after: int = DEFAULT_AFTER,
    through_failure: bool = False,
) -> ReplayLayout:
    """Write a replay into ``folder`` (created; must be empty): the sample's healthy frames
    1..``after``, ``count`` intruder frames of ``photo`` (none when ``photo`` is None: the control),
    the remaining healthy frames and, with ``through_failure``, the failing part."""
    frames, failure = sample_frames()
    if not 1 <= after < failure:
        raise ValueError(f"after must be within the healthy frames 1..{failure - 1}, got {after}")
    folder.mkdir(parents=True, exist_ok=False)
    kinds: list[str] = []

    def put(kind: str, write: Callable[[Path], None], label: str) -> None:
        write(folder / f"{len(kinds):04d}_{label}.jpg")
        kinds.append(kind)

    for path in frames[:after]:
        put("healthy", lambda dst, p=path: _link(p, dst), path.stem)  # type: ignore[misc]
    if photo is not None:
        background = np.asarray(cv2.imread(str(frames[after - 1]), cv2.IMREAD_COLOR), dtype=np.uint8)
        for step in range(count):
            image = intruder_frame(background, photo, mode, step)
            put("intruder", lambda dst, im=image: _write_jpeg(dst, im), f"intruder_{step + 1:02d}")  # type: ignore[misc]
    end = len(frames) if through_failure else failure
    for i in range(after, end):
        kind = "failure" if i >= failure else "healthy"
        put(kind, lambda dst, p=frames[i]: _link(p, dst), frames[i].stem)  # type: ignore[misc]
    return ReplayLayout(folder, kinds)


def _write_jpeg(path: Path, image: NDArray[np.uint8]) -> None:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise OSError(f"cannot encode {path.name}")
    path.write_bytes(data.tobytes())


# -- outcomes --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What the alerts did on one replay: false events (before the failure) and, when the replay
    goes through it, the first events on the failure. Frames are 1-based intruder frames
    (``i3``: the third intruder frame) or healthy frames after it (``h+2``)."""

    warn: int
    act: int
    first_warn: str | None
    first_act: str | None
    peak_signal: float | None  # highest (smoothed - baseline) over the intruder and later healthy frames
    warn_level: float | None  # the warn level at that peak
    peak_score: float | None  # the highest failure score of one intruder frame
    failure_warn: str | None = None
    failure_act: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def cell(self) -> str:
        """A table cell: ``W/A`` counts and the first warn and act frames."""
        text = f"{self.warn}/{self.act}"
        if self.first_warn:
            text += f" w@{self.first_warn}"
        if self.first_act:
            text += f" a@{self.first_act}"
        return text


def _position(layout: ReplayLayout, index: int) -> str:
    start = layout.first_intruder
    kind = layout.kinds[index]
    if kind == "intruder":
        return f"i{index - start + 1}"
    if kind == "failure":
        return f"f{index - layout.kinds.index('failure') + 1}"
    if start >= 0 and index > start:
        return f"h+{index - (start + layout.kinds.count('intruder')) + 1}"
    return f"h{index + 1}"


def outcome(layout: ReplayLayout, records: Sequence[dict[str, Any]]) -> Outcome:
    """Sort the per-frame records of ``edge-agent replay --json`` (or ``point_record``) of
    ``layout``'s folder into false events and events on the failure."""
    if len(records) != len(layout.kinds):
        raise ValueError(f"{len(records)} frames replayed, {len(layout.kinds)} built in {layout.folder}")
    warn = act = 0
    first: dict[str, str | None] = {"warn": None, "act": None, "fwarn": None, "fact": None}
    peak: tuple[float, float] | None = None
    scores = [
        r["score"] for k, r in zip(layout.kinds, records, strict=True) if k == "intruder" and r.get("counted")
    ]
    start = max(layout.first_intruder, 0)
    for i, (kind, record) in enumerate(zip(layout.kinds, records, strict=True)):
        for event in record["events"]:
            key = event["kind"]
            if key not in ("warn", "act"):
                continue
            if kind == "failure":
                first["f" + key] = first["f" + key] or _position(layout, i)
                continue
            warn, act = warn + (key == "warn"), act + (key == "act")
            first[key] = first[key] or _position(layout, i)
        judged = i >= start and kind != "failure" and record.get("counted") and not record.get("in_grace")
        if judged and (peak is None or record["signal"] - record["warn_level"] > peak[0] - peak[1]):
            peak = (record["signal"], record["warn_level"])
    return Outcome(
        warn, act, first["warn"], first["act"],
        None if peak is None else round(peak[0], 4), None if peak is None else round(peak[1], 4),
        round(max(scores), 4) if scores else None, first["fwarn"], first["fact"],
    )  # fmt: skip
