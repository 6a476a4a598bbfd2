"""Hard negatives for the guidance model: printer scenes with things in view that are not failures.

Renders printer scenes with ``scripts/make_sample_data.py`` (a quarter of them with an empty
bed) and draws into them one to three distractors from ``scripts/distractors.py``: a real photo
over part of the frame (a person, a pet, an object), overlay text and logos (like the "created
with OctoPrint" watermark), cooling fans, heat-sink fins, cable bundles, tape and hands. Some
frames are a real photo over the whole view (the camera moved or something fills it) or a
blocked lens. Distractors get no boxes; the scene keeps its true boxes except those of objects
a distractor hides by more than half, so the model learns that all of this is background.

Writes JPEG frames and ``ground_truth.json`` (the format of ``make_sample_data.py``; each
frame's ``phase`` lists its distractors) for ``scripts/train_guidance_model.py --data``.
The photos come from ``scripts/training_photos.py`` (Debian packages; training only: the
intruder replays measure with other photos).

    python scripts/training_photos.py /tmp/photos
    python scripts/make_hard_negatives.py /tmp/hard --photos /tmp/photos --count 4000 --seed 11 --workers 2
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import distractors
import make_sample_data as msd
from training_photos import load_manifest

log = logging.getLogger("make_hard_negatives")

HIDDEN = 0.5  # a box whose area a distractor covers by more than this is dropped
FULL_PHOTO, BLOCKED, EMPTY_BED = 0.14, 0.05, 0.25  # shares of frames
# (name, chance per scene frame); each scene frame gets at least one
ON_SCENE = (("photo", 0.35), ("text", 0.35), ("mascot", 0.25), ("fan", 0.3), ("fins", 0.12),
            ("wires", 0.2), ("tape", 0.2), ("hand", 0.25))  # fmt: skip

_photos: list[np.ndarray] = []
_logos: list[np.ndarray] = []


def load_photos(folder: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The photos and the logos of a folder written by ``training_photos.py`` (BGR uint8)."""
    photos: list[np.ndarray] = []
    logos: list[np.ndarray] = []
    for record in load_manifest(folder):
        image = cv2.imread(str(folder / record["file"]), cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"cannot read {folder / record['file']}")
        (logos if record.get("kind") == "logo" else photos).append(image)
    if not photos:
        raise SystemExit(f"no photos in {folder}: run scripts/training_photos.py {folder} first")
    return photos, logos


def scene(
    rng: np.random.Generator, width: int, height: int, empty: bool
) -> tuple[np.ndarray, list[Any], int]:
    """A random printer scene (as ``make_sample_data.train_scene``): image, boxes, JPEG quality."""
    printer = msd.random_printer(rng, width, height)
    if empty:
        printer.parts = []
    state = msd.random_state(rng, printer)
    focus_z = rng.uniform(0.15, 0.85) * (state.layer_mm + 20.0)
    printer.camera = msd.aim_camera(rng, printer, np.array([state.nozzle_xy[0], state.nozzle_xy[1], focus_z]))
    image, boxes = msd.render(printer, state, seed=int(rng.integers(2**31)))
    return image, boxes, printer.look.jpeg_quality


def _distract(img: np.ndarray, name: str, rng: np.random.Generator) -> np.ndarray:
    if name == "photo":
        return distractors.add_photo(img, _photos[int(rng.integers(len(_photos)))], rng)
    if name == "mascot":
        logo = _logos[int(rng.integers(len(_logos)))] if _logos and rng.random() < 0.4 else None
        return distractors.add_mascot(img, rng, logo)
    draw = {"text": distractors.add_text, "fan": distractors.add_fan, "fins": distractors.add_fins,
            "wires": distractors.add_wires, "tape": distractors.add_tape, "hand": distractors.add_hand}[name]  # fmt: skip
    return draw(img, rng)


def visible_boxes(boxes: list[Any], covered: np.ndarray) -> list[Any]:
    """The boxes whose area the distractors hide by at most ``HIDDEN``."""
    h, w = covered.shape
    kept = []
    for box in boxes:
        x1, y1, x2, y2 = box.xyxy
        region = covered[max(0, int(y1)) : min(h, math.ceil(y2)), max(0, int(x1)) : min(w, math.ceil(x2))]
        if region.size and float(region.mean()) <= HIDDEN:
            kept.append(box)
    return kept


def hard_frame(
    seed: int, index: int, width: int, height: int
) -> tuple[np.ndarray, list[Any], int, list[str]]:
    """Frame ``index``: image, the boxes that stay visible, JPEG quality and its distractors."""
    rng = np.random.default_rng([seed, index])
    draw = rng.random()
    if draw < FULL_PHOTO:
        img = np.zeros((height, width, 3), np.float32)
        covered = distractors.add_photo(img, _photos[int(rng.integers(len(_photos)))], rng, full=True)
        boxes: list[Any] = []
        names = (
            ["full_photo"]
            + (["text"] if rng.random() < 0.3 else [])
            + (["mascot"] if rng.random() < 0.2 else [])
        )
        quality = int(rng.integers(55, 95))
    else:
        image, boxes, quality = scene(rng, width, height, empty=rng.random() < EMPTY_BED)
        img = image.astype(np.float32)
        covered = np.zeros((height, width), np.float32)
        if draw < FULL_PHOTO + BLOCKED:
            names = ["blocked"]
        else:
            names = [name for name, chance in ON_SCENE if rng.random() < chance]
            names = names or [str(rng.choice([n for n, _ in ON_SCENE]))]
    for name in names:
        if name == "blocked":
            mask = distractors.add_blocked(img, rng)
        elif name != "full_photo":
            mask = _distract(img, name, rng)
        else:
            continue
        covered = np.maximum(covered, mask)
    if rng.random() < 0.5:  # the distractors through the same lens as the scene
        img = np.asarray(cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.0)), np.float32)
    img += rng.normal(0, rng.uniform(0, 4), img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), visible_boxes(boxes, covered), quality, names


def _job(job: tuple[int, int, int, int, str]) -> msd.Frame:
    seed, index, width, height, out = job
    image, boxes, quality, names = hard_frame(seed, index, width, height)
    name = f"hard_{seed}_{index:06d}.jpg"
    Path(out, name).write_bytes(msd.encode_jpeg(image, quality))
    return msd.Frame(name, width, height, boxes, phase="+".join(names))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``make_hard_negatives.py OUT --photos DIR --count N``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the JPEG frames and ground_truth.json")
    parser.add_argument("--photos", type=Path, required=True, help="folder written by training_photos.py")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--sizes", default="640x480,640x480,640x360", help="frame sizes, picked at random")
    parser.add_argument("--workers", type=int, default=1, help="processes rendering in parallel")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    _photos[:], _logos[:] = load_photos(args.photos)
    sizes = list(msd.iter_sizes(args.sizes))
    frames = msd.generate_train(args.out, args.count, args.seed, sizes, args.workers, make=_job)
    msd.write_truth(args.out / "ground_truth.json", frames, {"mode": "hard_negatives", "seed": args.seed})
    kinds: dict[str, int] = {}
    for f in frames:
        for k in f.phase.split("+"):
            kinds[k] = kinds.get(k, 0) + 1
    boxes = sum(len(f.boxes) for f in frames)
    print(f"wrote {len(frames)} frames to {args.out}: {boxes} boxes; distractors {kinds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
