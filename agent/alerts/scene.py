"""Scene check: does the camera still see the print it watches?

A failure score means something only while the camera sees the print. A hand, a person or a pet in
front of it, or a camera that was knocked aside, shows the detector pictures it was never meant to
judge, and a model that finds "spaghetti" in a cat must not pause a healthy print. So each sampled
frame is compared with the scene learnt at the start of the print, cheaply:

- **the picture**: a small blurred grey copy (``width_px`` wide, as the change gate makes) against a
  running reference, with how much each pixel normally moves (the head, the bed, the growing print)
  learnt from the frames judged fine. A frame differs when more than ``view_changed_share`` of it
  changed (``view_changed``: the camera moved or something is right in front of the lens), or when
  more than ``obstructed_share`` of it changed *where the scene is normally still* (``obstructed``:
  something came in; a failure happens where the print and the head already move);
- **the context the model should see**: the printer's parts (``context_labels``: nozzle, print,
  raft). When the model no longer finds them where they were and most of the print's area changed,
  the print is hidden (``obstructed``). Failure detections count only near where those parts were
  seen (the print's area widened by ``zone_margin``), not in a corner of the picture.

A change in a still part that has the filament's colour (a print knocked off the bed, spaghetti)
is not something in the way: the colours inside the print's boxes (``filament_labels``) are learnt
as the filament's palette, and such pixels do not count as foreign.

Frames judged ``view_changed`` or ``obstructed`` do not feed the smoothing and teach the reference
nothing. Something that came in slowly through the moving part of the scene may be partly learnt
before it is judged in the way, so a blocked frame is also compared with copies of the scene kept
every few samples: when it matches one, the check goes back to that copy (the pet has left). A view that stays different for ``relearn_after_samples`` while the model sees the
printer's parts in it is learnt as the new scene (a camera moved on purpose). The check is pure: no
threads, no I/O; ``reset()`` at a new print and after a resume.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from agent.boxes import iou_matrix
from agent.config.scene import SceneSettings
from agent.detections import Detections

View = Literal["learning", "ok", "obstructed", "view_changed"]

REFERENCE_ALPHA = 0.2  # weight of an accepted frame in the running reference picture
ACTIVITY_DECAY = 0.97  # per accepted sample: how fast a once-moving pixel counts as still again
CONTEXT_IOU = 0.3  # a context detection is "where it was" at this IoU with a recent one
CONTEXT_MEMORY = 5  # accepted samples whose context boxes are remembered
HIDDEN_ANYWAY = 0.2  # the print's area this much above hidden_share changed: hidden even with context
NEAR_SHARE = 0.5  # a failure box counts when this share of it lies near the print
MIN_MARGIN = 0.15  # the print's area is widened by at least this share of the frame (a nozzle alone is small)
PALETTE_BIN = 16  # Lab levels per palette bin: 16 x 16 x 16 bins
PALETTE_MIN_SHARE = 0.02  # a colour joins the filament palette at this share of a print box's pixels
SNAPSHOT_EVERY = 5  # accepted samples between two kept copies of the learnt scene
SNAPSHOTS = 8  # copies kept: the scene as it was up to 40 accepted samples ago
_KERNEL = np.ones((3, 3), np.uint8)


@dataclass(frozen=True, slots=True)
class SceneVerdict:
    """What the scene check made of one frame. Shares are fractions of the picture (``hidden_share``:
    of the print's area); ``context`` is True when the model sees the printer's parts where they
    were, False when not, None when there is nothing to compare (no context labels or none seen)."""

    view: View
    changed_share: float = 0.0
    foreign_share: float = 0.0
    hidden_share: float = 0.0
    context: bool | None = None
    reason: str = ""

    @property
    def counts(self) -> bool:
        """True when the frame's failure score may feed the smoothing."""
        return self.view in ("learning", "ok")


def small_picture(image: NDArray[np.uint8], width_px: int) -> NDArray[np.float32]:
    """``image`` (BGR or grey) as a ``width_px`` wide, blurred CIE Lab float picture (``H x W x 3``):
    colour tells a blue shirt from a grey wall that a grey picture finds alike."""
    height, width = image.shape[:2]
    target_w = min(width_px, width)
    target_h = max(1, round(height * target_w / width))
    small = cv2.resize(image, (target_w, target_h), interpolation=cv2.INTER_AREA)
    if small.ndim == 2:
        small = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
    small = cv2.GaussianBlur(small, (5, 5), 0)
    return np.asarray(cv2.cvtColor(small, cv2.COLOR_BGR2LAB), dtype=np.float32)


def colour_distance(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float32]:
    """Per-pixel distance of two Lab pictures (OpenCV's 8-bit Lab: about 1 per grey level)."""
    return np.asarray(np.sqrt(np.square(a - b).sum(axis=2)), dtype=np.float32)


def _overlap_share(boxes: NDArray[np.float32], zone: NDArray[np.float32]) -> NDArray[np.float64]:
    """For each box, the share of its area inside ``zone`` (x1, y1, x2, y2); 0 when apart."""
    ix = np.clip(np.minimum(boxes[:, 2], zone[2]) - np.maximum(boxes[:, 0], zone[0]), 0, None)
    iy = np.clip(np.minimum(boxes[:, 3], zone[3]) - np.maximum(boxes[:, 1], zone[1]), 0, None)
    area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-6)
    return np.asarray(ix * iy / area, dtype=np.float64)


def _crop(picture: NDArray[Any], box: NDArray[np.float32], frame_size: tuple[int, int]) -> NDArray[Any]:
    """The part of a small ``picture`` under ``box`` (x1, y1, x2, y2 in pixels of the ``frame_size``
    = (width, height) frame), at least one pixel."""
    height, width = picture.shape[:2]
    sx, sy = width / frame_size[0], height / frame_size[1]
    x1, y1 = max(int(box[0] * sx), 0), max(int(box[1] * sy), 0)
    x2, y2 = max(x1 + 1, int(np.ceil(box[2] * sx))), max(y1 + 1, int(np.ceil(box[3] * sy)))
    return picture[y1:y2, x1:x2]


def _grown(bins: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """``bins`` grown by one bin along each Lab axis: a colour a little lighter, redder or yellower."""
    grown = bins.copy()
    grown[1:] |= bins[:-1]
    grown[:-1] |= bins[1:]
    grown[:, 1:] |= bins[:, :-1]
    grown[:, :-1] |= bins[:, 1:]
    grown[:, :, 1:] |= bins[:, :, :-1]
    grown[:, :, :-1] |= bins[:, :, 1:]
    return grown


class SceneCheck:
    """Judges each sampled frame of a print against the scene learnt at its start."""

    def __init__(self, settings: SceneSettings, labels: Sequence[str]) -> None:
        self.settings = settings
        wanted = set(settings.context_labels)
        self._context_ids = np.array([i for i, name in enumerate(labels) if name in wanted], dtype=np.int32)
        filament = set(settings.filament_labels)
        self._filament_ids = np.array(
            [i for i, name in enumerate(labels) if name in filament], dtype=np.int32
        )
        self.reset()

    def reset(self) -> None:
        """Forget the scene: the next frames learn it again (a new print, a resume)."""
        self._reference: NDArray[np.float32] | None = None
        self._activity: NDArray[np.float32] | None = None
        self._learnt = 0
        self._blocked = 0  # samples in a row judged view_changed or obstructed
        self._recent: deque[Detections] = deque(maxlen=CONTEXT_MEMORY)
        self._zone: NDArray[np.float32] | None = None  # x1, y1, x2, y2 in frame pixels
        self._palette = np.zeros((256 // PALETTE_BIN,) * 3, dtype=bool)  # Lab bins of the filament
        # Earlier copies of (reference, activity): something that came in slowly through the moving
        # part of the scene (a pet settling by the print) is partly learnt before it is judged in the
        # way; when it leaves, the view matches an earlier copy again, not the learnt one.
        self._snapshots: deque[tuple[NDArray[np.float32], NDArray[np.float32]]] = deque(maxlen=SNAPSHOTS)

    @property
    def zone(self) -> tuple[float, float, float, float] | None:
        """Where the model has seen the printer's parts in this print (frame pixels), if anywhere."""
        if self._zone is None:
            return None
        x1, y1, x2, y2 = (float(v) for v in self._zone)
        return x1, y1, x2, y2

    def judge(
        self, image: NDArray[np.uint8], detections: Detections, frame_size: tuple[int, int]
    ) -> SceneVerdict:
        """Compare one frame (``image`` may be a reduced decode of a ``frame_size`` = (width, height)
        frame; ``detections`` are in frame pixels) with the learnt scene, and learn from it when fine."""
        s = self.settings
        picture = small_picture(image, s.width_px)
        context = self._context_of(detections)
        if self._reference is None or self._reference.shape != picture.shape:
            self.reset()
            self._learn(picture, np.zeros(picture.shape[:2], np.float32), context, frame_size)
            return SceneVerdict("learning", reason="learning the scene")
        diff = colour_distance(self._brightness_matched(picture), self._reference)
        changed = diff > s.pixel_threshold
        if self._learnt < s.learn_samples:
            self._learn(picture, diff, context, frame_size)
            return SceneVerdict("learning", float(changed.mean()), reason="learning the scene")
        verdict, suspect = self._verdict(changed, picture, context, frame_size)
        if not verdict.counts:
            restored = self._earlier_scene_matching(picture, context, frame_size)
            if restored is not None:
                verdict, diff, suspect = restored
        if verdict.counts:
            # what may be something in the way teaches nothing: neither its pixels nor its "parts"
            self._blocked = 0
            near = (
                self.near_print(context, frame_size)
                if verdict.context is not False
                else context.select(slice(0, 0))
            )
            self._learn(picture, diff, near, frame_size, ~suspect)
            return verdict
        self._blocked += 1
        if self._blocked >= s.relearn_after_samples and len(context):
            blocked = self._blocked
            self.reset()
            self._learn(picture, np.zeros(picture.shape[:2], np.float32), context, frame_size)
            why = (
                f"the view stayed different for {blocked} samples and the model sees the printer's parts in "
                "it: learning it as the print's scene (the camera was moved?)"
            )
            return SceneVerdict("learning", verdict.changed_share, reason=why)
        return verdict

    def near_print(self, detections: Detections, frame_size: tuple[int, int]) -> Detections:
        """The detections with at least half their area near the print: in the area where the model
        saw the printer's parts, widened by ``zone_margin`` of its larger side and at least
        ``MIN_MARGIN`` of the frame's (``frame_size`` = (width, height)) on each axis. All of them
        while no part was seen."""
        if self._zone is None or len(detections) == 0:
            return detections
        x1, y1, x2, y2 = self._zone
        margin = self.settings.zone_margin * max(x2 - x1, y2 - y1)
        mx, my = max(margin, MIN_MARGIN * frame_size[0]), max(margin, MIN_MARGIN * frame_size[1])
        widened = np.array([x1 - mx, y1 - my, x2 + mx, y2 + my], dtype=np.float32)
        return detections.select(_overlap_share(detections.xyxy, widened) >= NEAR_SHARE)

    # -- inside --------------------------------------------------------------------------------

    def _earlier_scene_matching(
        self, picture: NDArray[np.float32], context: Detections, frame_size: tuple[int, int]
    ) -> tuple[SceneVerdict, NDArray[np.float32], NDArray[np.bool_]] | None:
        """When ``picture`` counts against a kept earlier copy of the scene (newest first), go back to
        that copy; its verdict, the picture's difference and the suspect pixels. None otherwise."""
        current = (self._reference, self._activity)
        for index in range(len(self._snapshots) - 1, -1, -1):
            self._reference, self._activity = (a.copy() for a in self._snapshots[index])
            diff = colour_distance(self._brightness_matched(picture), self._reference)
            verdict, suspect = self._verdict(
                diff > self.settings.pixel_threshold, picture, context, frame_size
            )
            if verdict.counts:
                for _ in range(len(self._snapshots) - index - 1):
                    self._snapshots.pop()
                why = "the view matches the scene as it was before something came in"
                return replace(verdict, reason=why), diff, suspect
        self._reference, self._activity = current
        return None

    def _context_of(self, detections: Detections) -> Detections:
        keep = np.isin(detections.class_id, self._context_ids) & (
            detections.score >= self.settings.context_min_score
        )
        return detections.select(keep)

    def _brightness_matched(self, picture: NDArray[np.float32]) -> NDArray[np.float32]:
        """``picture`` with its lightness scaled by the median of the per-pixel ratios to the reference
        (a camera's auto exposure, a lamp dimming: every pixel moves; something in the way moves only
        its own pixels and not the median), at most by a factor of 1.5 either way."""
        assert self._reference is not None
        lit = (picture[..., 0] > 10) & (self._reference[..., 0] > 10)
        ratios = self._reference[..., 0][lit] / picture[..., 0][lit]
        gain = float(np.median(ratios)) if ratios.size else 1.0
        matched = picture.copy()
        matched[..., 0] *= np.float32(min(max(gain, 0.67), 1.5))
        return matched

    def _learn(
        self,
        picture: NDArray[np.float32],
        diff: NDArray[np.float32],
        context: Detections,
        frame_size: tuple[int, int],
        where: NDArray[np.bool_] | None = None,
    ) -> None:
        """Learn a frame into the scene; ``where`` (the pixels to learn from) defaults to all."""
        if self._reference is None or self._activity is None:
            self._reference, self._activity = picture.copy(), np.zeros(picture.shape[:2], np.float32)
        elif self._learnt < self.settings.learn_samples:
            self._reference += (picture - self._reference) / (self._learnt + 1)
            np.maximum(self._activity, diff, out=self._activity)
        else:
            mask = np.ones(diff.shape, bool) if where is None else where
            self._reference[mask] += REFERENCE_ALPHA * (picture[mask] - self._reference[mask])
            self._activity[mask] = np.maximum(self._activity[mask] * ACTIVITY_DECAY, diff[mask])
        self._learnt += 1
        if self._learnt >= self.settings.learn_samples and self._learnt % SNAPSHOT_EVERY == 0:
            self._snapshots.append((self._reference.copy(), self._activity.copy()))
        self._learn_palette(picture, context, frame_size)
        if len(context):
            self._recent.append(context)
            boxes = context.xyxy
            seen = np.array([*boxes[:, :2].min(axis=0), *boxes[:, 2:].max(axis=0)], dtype=np.float32)
            if self._zone is None:
                self._zone = seen
            else:
                self._zone = np.concatenate(
                    [np.minimum(self._zone[:2], seen[:2]), np.maximum(self._zone[2:], seen[2:])]
                )

    def _learn_palette(
        self, picture: NDArray[np.float32], context: Detections, frame_size: tuple[int, int]
    ) -> None:
        """Add the colours inside the print's boxes (the filament) to the palette."""
        boxes = context.xyxy[np.isin(context.class_id, self._filament_ids)]
        if len(boxes) == 0:
            return
        bins = []
        for box in boxes:
            inside = _crop(picture, box, frame_size).reshape(-1, 3)
            if len(inside):
                bins.append((inside // PALETTE_BIN).astype(np.int32))
        if not bins:
            return
        seen, counts = np.unique(np.concatenate(bins), axis=0, return_counts=True)
        common = seen[counts >= PALETTE_MIN_SHARE * counts.sum()]
        fresh = np.zeros_like(self._palette)
        fresh[common[:, 0], common[:, 1], common[:, 2]] = True
        self._palette |= _grown(fresh)

    def _filament_coloured(self, picture: NDArray[np.float32]) -> NDArray[np.bool_]:
        """Pixels whose colour is (next to) one seen in the print: fallen parts and spaghetti look so."""
        # one flat index a pixel, not three index arrays: 0.02 ms instead of 0.2 ms a sample (80 x 45)
        side = self._palette.shape[0]
        bins = np.clip(picture, 0, 255).astype(np.intp) // PALETTE_BIN  # 8-bit Lab: floor of >= 0
        flat = (bins[..., 0] * side + bins[..., 1]) * side + bins[..., 2]
        return np.asarray(self._palette.reshape(-1)[flat], dtype=bool)

    def _context_seen(self, context: Detections) -> bool | None:
        """True when a context detection is where one of the same label was lately."""
        if not self._recent:
            return None
        for earlier in self._recent:
            if len(context) == 0:
                return False
            iou = iou_matrix(context.xyxy, earlier.xyxy)
            same = context.class_id[:, None] == earlier.class_id[None, :]
            if bool(np.any((iou >= CONTEXT_IOU) & same)):
                return True
        return False

    def _hidden_share(self, changed: NDArray[np.bool_], frame_size: tuple[int, int]) -> float:
        """Share of the print's area (where context was seen) that changed."""
        if self._zone is None:
            return 0.0
        area = _crop(changed, self._zone, frame_size)
        return float(area.mean()) if area.size else 0.0

    def _verdict(
        self,
        changed: NDArray[np.bool_],
        picture: NDArray[np.float32],
        context: Detections,
        frame_size: tuple[int, int],
    ) -> tuple[SceneVerdict, NDArray[np.bool_]]:
        """The verdict, and the pixels that may show something in the way (not to be learnt)."""
        s = self.settings
        assert self._activity is not None
        still = cv2.erode((self._activity < s.pixel_threshold / 2).astype(np.uint8), _KERNEL) > 0
        new = changed & still & ~self._filament_coloured(picture)
        foreign = cv2.morphologyEx(new.astype(np.uint8), cv2.MORPH_OPEN, _KERNEL)
        suspect = cv2.dilate(new.astype(np.uint8), _KERNEL) > 0
        seen = self._context_seen(context)
        verdict = SceneVerdict(
            "ok",
            changed_share=float(changed.mean()),
            foreign_share=float(foreign.mean()),
            hidden_share=self._hidden_share(changed, frame_size),
            context=seen,
        )
        if verdict.changed_share >= s.view_changed_share:
            why = f"{verdict.changed_share:.0%} of the picture differs from the scene learnt at the start of the print"
            return replace(verdict, view="view_changed", reason=why), suspect
        if verdict.foreign_share >= s.obstructed_share:
            why = f"something covers {verdict.foreign_share:.0%} of the picture where the scene is normally still"
            return replace(verdict, view="obstructed", reason=why), suspect
        hidden = verdict.hidden_share
        if (seen is False and hidden >= s.hidden_share) or hidden >= s.hidden_share + HIDDEN_ANYWAY:
            parts = "the printer's parts are not where they were and " if seen is False else ""
            why = f"{parts}{hidden:.0%} of the print's area changed at once"
            return replace(verdict, view="obstructed", reason=why), suspect
        return verdict, suspect
