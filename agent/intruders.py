"""Intruder replays: real non-printer photos inserted into the healthy part of a recorded print.

A person, a pet or a hand in front of the camera, or a camera that was moved, is not a print
failure; the alerts must stay silent. An intruder replay is a folder of frames: the bundled sample
timelapse's frames 1..``last`` with, after a healthy frame, a run of intruder frames: that frame
with a real photo over it at a named placement (``PLACEMENTS``), moving a little from one frame to
the next, as real intruders do. ``write_replay`` writes one and says what each frame is (healthy,
intruder or failure); ``outcome`` sorts what the alerts did on it.

The photos are real photographs made by other people and are never copied into this
repository: they are read at run time from ``../shared/models/images`` and from the ones
scikit-image bundles in its wheel (``skimage.data``; none it would download). None of them is
used to train the bundled model (its hard negatives come from other photos; see
``docs/guidance-model.md``).

``scripts/intruder_replay.py`` runs the matrix (models x alert configs x photos x placements x
durations) through ``edge-agent replay``'s own functions; ``tests/test_intruders.py`` and
``tests/test_scene_check.py`` run some through the CLI.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from agent.bundled import SAMPLE_TIMELAPSE, SAMPLE_TRUTH
from agent.errors import ConfigError, UserError
from agent.fsutil import atomic_write_bytes

Image = NDArray[np.uint8]

DEFAULT_AFTER = (
    36  # past the printer config's 30 samples of startup grace, 11 healthy frames before the failure
)
DRIFT_PX = 6  # how far a ``whole`` or ``part`` intruder moves between frames


# -- photos ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntruderPhoto:
    """A real photo to put in front of the camera: a file of ``../shared/models/images`` or, with
    ``in_skimage``, the ``skimage.data`` function of that name."""

    name: str
    shows: str
    source: str
    in_skimage: bool = False


PHOTOS: dict[str, IntruderPhoto] = {
    p.name: p
    for p in (
        IntruderPhoto("pets", "two dogs (google-coral/test_data, Apache-2.0)", "pets.jpg"),
        IntruderPhoto("grace_hopper", "a person (google-coral/test_data, Apache-2.0)", "grace_hopper.bmp"),
        IntruderPhoto("kite_and_cold", "people and kites (google-coral/test_data, Apache-2.0)", "kite_and_cold.jpg"),
        IntruderPhoto("astronaut", "a person (skimage.data, public domain)", "astronaut", True),
        IntruderPhoto("chelsea", "a cat (skimage.data, CC0)", "chelsea", True),
        IntruderPhoto("coffee", "a cup of coffee (skimage.data, CC0)", "coffee", True),
        IntruderPhoto("camera", "a person with a camera, greyscale (skimage.data, CC0)", "camera", True),
        IntruderPhoto("rocket", "a rocket on its launch pad (skimage.data, public domain)", "rocket", True),
    )
}  # fmt: skip
SHARED_IMAGES = Path("models") / "images"  # where the first three are, under ../shared


def _skimage_available() -> bool:
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        return False
    return True


def missing_photos(shared: Path | None, names: Iterable[str] | None = None) -> str | None:
    """Why some of the photos ``names`` (default: all) cannot be loaded here, None when they all can:
    the reason a test skips or a script stops with."""
    wanted = [PHOTOS[name] for name in (PHOTOS if names is None else names)]
    absent = [p.name for p in wanted if not p.in_skimage and (shared is None or not _shared_file(shared, p))]
    if absent:
        where = "no ../shared folder was given" if shared is None else f"not in {shared / SHARED_IMAGES}"
        return f"the photos {', '.join(absent)} are missing: {where} (see ../shared/models/README.md)"
    bundled = [p.name for p in wanted if p.in_skimage]
    if bundled and not _skimage_available():
        return f"scikit-image (the test extra) is not installed: it bundles the photos {', '.join(bundled)}"
    return None


def _shared_file(shared: Path, photo: IntruderPhoto) -> Path | None:
    path = shared / SHARED_IMAGES / photo.source
    return path if path.is_file() else None


def _load(shared: Path | None, photo: IntruderPhoto) -> Image:
    """``photo`` as BGR uint8."""
    if photo.in_skimage:
        from skimage import data

        rgb = np.asarray(getattr(data, photo.source)(), dtype=np.uint8)
        return np.asarray(cv2.cvtColor(rgb, cv2.COLOR_GRAY2BGR if rgb.ndim == 2 else cv2.COLOR_RGB2BGR))
    path = None if shared is None else _shared_file(shared, photo)
    image = None if path is None else cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"cannot read the photo {photo.name} ({shared}/{SHARED_IMAGES}/{photo.source})")
    return np.asarray(image, dtype=np.uint8)


def load_photos(shared: Path | None, names: Iterable[str] | None = None) -> dict[str, Image]:
    """The photos ``names`` as BGR uint8 images, by name; without ``names``, every photo that is here
    (``shared``'s when it is given, scikit-image's when it is installed). Raises ``UserError`` for a
    name that is not a photo (``ConfigError``) or cannot be loaded here."""
    if names is None:
        names = [n for n in PHOTOS if missing_photos(shared, [n]) is None]
    names = list(names)
    unknown = [n for n in names if n not in PHOTOS]
    if unknown:
        raise ConfigError(f"no intruder photo {', '.join(unknown)}; the photos are {', '.join(PHOTOS)}")
    reason = missing_photos(shared, names)
    if reason:
        raise UserError(reason)
    return {name: _load(shared, PHOTOS[name]) for name in names}


# -- placements ------------------------------------------------------------------------------

# (left, top, width, height) of the photo as fractions of the frame; it jitters a few px per frame
BOXES = {
    "over_print": (0.25, 0.25, 0.5, 0.5),
    "bottom": (0.275, 0.55, 0.45, 0.45),
    "corner": (0.6, 0.6, 0.4, 0.4),
    "side": (0.0, 0.275, 0.45, 0.45),
    "top_corner": (0.0, 0.0, 0.4, 0.4),
}
PLACEMENTS = {
    "whole": "fills the view, cropped to the frame's shape, drifting 6 px a frame (the camera blocked or turned)",
    "part": "covers the lower right 55 % x 70 %, entering from the right edge (someone partly in view)",
    "whole_stretched": "stretched to the whole frame, still (someone right in front of the lens)",
    "over_print": "a centred half of the frame",
    "bottom": "45 % of the frame from the bottom edge, over the print's base",
    "corner": "40 % of the frame, bottom right",
    "side": "45 % of the frame from the left edge, over part of the print",
    "top_corner": "40 % of the frame, top left",
}  # fmt: skip


def _cover(photo: Image, width: int, height: int, shift: int) -> Image:
    """``photo`` scaled to cover ``width`` x ``height``, the crop moved ``shift`` px to the right."""
    ph, pw = photo.shape[:2]
    zoom = max(width / pw, height / ph) * 1.1
    big = cv2.resize(photo, (round(pw * zoom), round(ph * zoom)), interpolation=cv2.INTER_AREA)
    x0 = min(max(0, (big.shape[1] - width) // 2 - shift), big.shape[1] - width)
    y0 = (big.shape[0] - height) // 2
    return np.ascontiguousarray(big[y0 : y0 + height, x0 : x0 + width])


def _part(background: Image, photo: Image, step: int) -> Image:
    """``photo`` over the lower right of ``background``, entering from the right edge, moving left."""
    height, width = background.shape[:2]
    ph = int(height * 0.7)
    pw = min(int(width * 0.55), round(photo.shape[1] * ph / photo.shape[0]))
    patch = _cover(photo, pw, ph, 0)
    out = background.copy()
    x = max(0, width - pw + int(pw * 0.1) - step * DRIFT_PX)
    visible = min(pw, width - x)
    out[height - ph :, x : x + visible] = patch[:, :visible]
    return out


def _in_box(background: Image, photo: Image, box: tuple[float, float, float, float], step: int) -> Image:
    """``photo`` resized into ``box`` of ``background``, jittered by ``step``."""
    height, width = background.shape[:2]
    left, top, w_share, h_share = box
    w, h = round(width * w_share), round(height * h_share)
    dx, dy = ((step % 5) - 2) * 4, ((step % 3) - 1) * 3
    x = min(max(round(width * left) + dx, 0), width - w)
    y = min(max(round(height * top) + dy, 0), height - h)
    out = background.copy()
    out[y : y + h, x : x + w] = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
    return out


def intruder_frame(background: Image, photo: Image, placement: str, step: int) -> Image:
    """The ``step``-th (0-based) frame of ``photo`` intruding at ``placement`` (``PLACEMENTS``) into
    the view of ``background``, both BGR uint8."""
    height, width = background.shape[:2]
    if placement == "whole":
        return _cover(photo, width, height, step * DRIFT_PX)
    if placement == "part":
        return _part(background, photo, step)
    if placement == "whole_stretched":
        return np.asarray(cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA), dtype=np.uint8)
    if placement not in BOXES:
        raise ValueError(f"no placement {placement!r}; the placements are {', '.join(PLACEMENTS)}")
    return _in_box(background, photo, BOXES[placement], step)


# -- replay folders --------------------------------------------------------------------------


@functools.cache
def sample_frames() -> tuple[tuple[Path, ...], int]:
    """The bundled sample timelapse's frames in order and the 1-based number of its first failed frame."""
    truth = json.loads(SAMPLE_TRUTH.read_text(encoding="utf-8"))
    frames = tuple(SAMPLE_TIMELAPSE / f["image"] for f in truth["frames"])
    return frames, int(truth["failure_index"]) + 1


@dataclass(frozen=True)
class Intrusion:
    """``frames`` intruder frames of ``photo`` at ``placement``, drawn over sample frame ``after``
    (1-based) and inserted after it."""

    photo: str
    placement: str
    frames: int
    after: int = DEFAULT_AFTER


@dataclass(frozen=True)
class ReplayFrame:
    """One frame of a replay folder: its file name without ``.jpg``; ``healthy``, ``intruder`` or
    ``failure``; what it shows (``sample_000036``, or ``pets/whole/3``: the third frame of that
    intrusion)."""

    stem: str
    kind: str
    shows: str


@dataclass
class ReplayLayout:
    """One written replay folder and what each of its frames is, in order."""

    folder: Path
    frames: list[ReplayFrame]

    @property
    def kinds(self) -> list[str]:
        """Per frame: ``healthy``, ``intruder`` or ``failure``."""
        return [f.kind for f in self.frames]

    @property
    def shows(self) -> dict[str, str]:
        """File stem (a replay record's ``frame``) -> what that frame shows."""
        return {f.stem: f.shows for f in self.frames}

    @property
    def first_intruder(self) -> int:
        """The 0-based position of the first intruder frame (-1: none)."""
        kinds = self.kinds
        return kinds.index("intruder") if "intruder" in kinds else -1


def write_replay(
    folder: Path, photos: Mapping[str, Image], intrusions: Sequence[Intrusion] = (), *, last: int = 0
) -> ReplayLayout:
    """Write a replay into ``folder`` (created; must not exist): the bundled sample's frames
    1..``last`` (default: its last healthy frame, 47) with ``intrusions`` (photos from ``photos``, by
    name) inserted, as JPEGs whose name order is the time order. No intrusions: the control."""
    samples, failure = sample_frames()
    last = last or failure - 1
    if not 1 <= last <= len(samples):
        raise ValueError(f"last must be a sample frame 1..{len(samples)}, got {last}")
    for i in intrusions:
        if not 1 <= i.after < failure or i.after > last:
            raise ValueError(
                f"after must be within the healthy frames 1..{min(failure - 1, last)}, got {i.after}"
            )
        if i.placement not in PLACEMENTS or i.photo not in photos:
            raise ValueError(f"no placement {i.placement!r} or no photo {i.photo!r} given")
    folder.mkdir(parents=True)
    frames: list[ReplayFrame] = []

    def put(data: bytes, kind: str, shows: str, label: str) -> None:
        stem = f"{len(frames) + 1:04d}_{label}"
        atomic_write_bytes(folder / f"{stem}.jpg", data, fsync=False)
        frames.append(ReplayFrame(stem, kind, shows))

    for number, path in enumerate(samples[:last], start=1):
        kind = "failure" if number >= failure else "healthy"
        put(path.read_bytes(), kind, f"sample_{number:06d}", path.stem)
        for i in (i for i in intrusions if i.after == number):
            background = np.asarray(cv2.imread(str(path), cv2.IMREAD_COLOR), dtype=np.uint8)
            for step in range(i.frames):
                image = intruder_frame(background, photos[i.photo], i.placement, step)
                label = f"{i.photo}-{i.placement}-{step + 1:02d}"
                put(_jpeg(image), "intruder", f"{i.photo}/{i.placement}/{step + 1}", label)
    return ReplayLayout(folder, frames)


def _jpeg(image: Image) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise OSError("cannot encode an intruder frame as JPEG")
    return bytes(data.tobytes())


# -- outcomes --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What the alerts did on one replay: false events (before the failure), the scene check's view
    events and the frames it left out, and, when the replay goes through the failure, the sample
    frames (1-based) of its first warn and act. Frames of false events are 1-based intruder frames
    (``i3``: the third intruder frame) or healthy frames after it (``h+2``)."""

    warn: int
    act: int
    first_warn: str | None
    first_act: str | None
    peak_signal: float | None  # highest (smoothed - baseline) over the intruder and later healthy frames
    warn_level: float | None  # the warn level at that peak
    peak_score: float | None  # the highest failure score of one intruder frame
    views: list[str]  # every view_changed / obstructed event, in order
    left_out: int  # frames the scene check kept out of the smoothing
    failure_warn: int | None = None
    failure_act: int | None = None

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
    kinds = layout.kinds
    if kinds[index] == "intruder":
        return f"i{index - start + 1}"
    if start >= 0 and index > start:
        return f"h+{index - (start + kinds.count('intruder')) + 1}"
    return f"h{index + 1}"


def _sorted_events(
    layout: ReplayLayout, records: Sequence[dict[str, Any]]
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Warn and act events: before the failure (false, by position) and on it (the first sample
    frame of each)."""
    false: dict[str, list[str]] = {"warn": [], "act": []}
    on_failure: dict[str, int] = {}
    for i, (frame, record) in enumerate(zip(layout.frames, records, strict=True)):
        for kind in (e["kind"] for e in record["events"]):
            if frame.kind != "failure" and kind in false:
                false[kind].append(_position(layout, i))
            elif frame.kind == "failure" and kind in ("warn", "act"):
                on_failure.setdefault(kind, int(frame.shows.removeprefix("sample_")))
    return false, on_failure


def _peak_signal(layout: ReplayLayout, records: Sequence[dict[str, Any]]) -> tuple[float, float] | None:
    """(signal, warn level) of the judged frame from the intrusion on, before the failure, whose
    signal came closest to (or furthest over) its warn level."""
    start = max(layout.first_intruder, 0)
    peak: tuple[float, float] | None = None
    for i, (frame, record) in enumerate(zip(layout.frames, records, strict=True)):
        if i < start or frame.kind == "failure" or not record.get("counted") or record.get("in_grace"):
            continue
        if peak is None or record["signal"] - record["warn_level"] > peak[0] - peak[1]:
            peak = (record["signal"], record["warn_level"])
    return peak


def outcome(layout: ReplayLayout, records: Sequence[dict[str, Any]]) -> Outcome:
    """Sort the per-frame records of ``edge-agent replay --json`` (or ``point_record``) of
    ``layout``'s folder into false events and events on the failure."""
    if len(records) != len(layout.frames):
        raise ValueError(f"{len(records)} frames replayed, {len(layout.frames)} written in {layout.folder}")
    false, on_failure = _sorted_events(layout, records)
    peak = _peak_signal(layout, records)
    scores = [
        r["score"]
        for f, r in zip(layout.frames, records, strict=True)
        if f.kind == "intruder" and r.get("counted")
    ]
    views = [
        kind
        for kind in (e["kind"] for r in records for e in r["events"])
        if kind in ("view_changed", "obstructed")
    ]
    return Outcome(
        len(false["warn"]), len(false["act"]), next(iter(false["warn"]), None), next(iter(false["act"]), None),
        None if peak is None else round(peak[0], 4), None if peak is None else round(peak[1], 4),
        round(max(scores), 4) if scores else None, views,
        sum(r.get("view") not in ("ok", "learning", None) for r in records),
        on_failure.get("warn"), on_failure.get("act"),
    )  # fmt: skip
