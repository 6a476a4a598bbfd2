"""Real non-printer photos for training the guidance model with hard negatives.

Downloads two Debian packages with ``apt-get download`` (nothing is installed), unpacks them
with ``dpkg-deb`` and writes the photos this project uses as training negatives into a folder,
with a ``photos.json`` manifest (file, package, version, licence, what it shows):

- ``jigzo-data`` (a photo puzzle game, GPL-2+): 11 photos (a bike, a bird, blackberries, a
  castle, clouds, a gorilla, a helicopter, a horse, a slide, a train, a windmill), read out of
  its ``.pzl`` puzzle files; its penguin (CC-BY-NC-SA) is left out;
- ``opencv-doc`` (OpenCV's samples, BSD-3-Clause): people (``messi5``, ``basketball1``, frames
  of ``vtest.avi``, pedestrians), animals, fruit, buildings, a circuit board, desk objects, a
  car, graffiti, and small logos and clip art.

These photos are for TRAINING only. The intruder replays that measure the result
(``scripts/intruder_replay.py``) use other photos (``../shared/models/images`` and the ones
scikit-image bundles), so the measurement never sees a training photo. Nothing here is
committed to the repository: run this where the model is trained.

    python scripts/training_photos.py /tmp/photos          # then
    python scripts/make_hard_negatives.py /tmp/hard --photos /tmp/photos --count 4000
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger("training_photos")

JIGZO_PUZZLES = "usr/share/games/jigzo/puzzles/00_default"
JIGZO_SKIP = {"penguin-3x2"}  # CC-BY-NC-SA: not for a model anyone may use
OPENCV_DATA = "usr/share/doc/opencv-doc/examples/data"
# name -> what it shows; "logo" entries are pasted small, as overlays, not as scenes
OPENCV_PHOTOS = {
    "messi5.jpg": "a footballer in a stadium",
    "basketball1.png": "two people in a room",
    "baboon.jpg": "a baboon's face",
    "fruits.jpg": "fruit",
    "apple.jpg": "an apple",
    "orange.jpg": "an orange",
    "butterfly.jpg": "a butterfly",
    "squirrel_cls.jpg": "a squirrel",
    "chicky_512.png": "a dog",
    "home.jpg": "a building",
    "building.jpg": "a hotel",
    "aero1.jpg": "a city from the air",
    "leuvenA.jpg": "a street",
    "board.jpg": "a circuit board",
    "aloeL.jpg": "a plant",
    "licenseplate_motion.jpg": "a car",
    "stuff.jpg": "objects on a desk",
    "box_in_scene.png": "boxes in a bag",
    "rubberwhale1.png": "toys",
    "graf1.png": "graffiti",
    "ela_original.jpg": "a notebook",
    "imageTextN.png": "printed text",
    "text_defocus.jpg": "text, out of focus",
    "HappyFish.jpg": "logo: a cartoon fish",
    "LinuxLogo.jpg": "logo: a penguin",
    "WindowsLogo.jpg": "logo: a window",
    "opencv-logo.png": "logo: rings",
}
VIDEOS = {"vtest.avi": ("people walking", 8), "tree.avi": ("a tree in the wind", 2)}


def _download(packages: Sequence[str], into: Path) -> dict[str, Path]:
    """``apt-get download`` each package into ``into``; package name -> .deb path."""
    into.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["apt-get", "download", *packages], cwd=into, capture_output=True, text=True, check=False
    )
    debs = {p: next(iter(sorted(into.glob(f"{p}_*.deb"))), None) for p in packages}
    missing = [p for p, deb in debs.items() if deb is None]
    if missing:
        raise SystemExit(
            f"apt-get download {' '.join(missing)} failed ({result.stderr.strip()[-300:]}); "
            "run `apt-get update` first, on a Debian or Ubuntu machine"
        )
    return {p: deb for p, deb in debs.items() if deb is not None}


def _unpack(deb: Path, into: Path) -> str:
    """Unpack ``deb`` into ``into``; returns the package version."""
    subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True
    ).stdout.strip()


def jigzo_photo(puzzle: bytes) -> np.ndarray | None:
    """The whole photo of one jigzo ``.pzl`` file: the header names the picture's rectangle in the
    texture (``image X Y W H``), then come named, length-prefixed images; the last is the texture."""
    start = puzzle.find(b"\nimage ")
    if start < 0:
        return None
    x, y, w, h = (int(v) for v in puzzle[start + 1 : puzzle.find(b"\n", start + 1)].split()[1:5])
    pos = puzzle.find(b"\n", start + 1) + 1
    texture = None
    while pos < len(puzzle) - 4:
        name_end = puzzle.find(b"\n", pos)
        size_end = puzzle.find(b"\n", name_end + 1)
        size = int(puzzle[name_end + 1 : size_end])
        data = puzzle[size_end + 1 : size_end + 1 + size]
        texture = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        pos = size_end + 1 + size
        while puzzle[pos : pos + 1] == b"\n":
            pos += 1
    return None if texture is None else texture[y : y + h, x : x + w]


def collect(out: Path, work: Path) -> list[dict[str, str]]:
    """Write the training photos into ``out``; their manifest records."""
    debs = _download(["jigzo-data", "opencv-doc"], work / "debs")
    records: list[dict[str, str]] = []
    root = work / "unpacked"
    version = _unpack(debs["jigzo-data"], root)
    for pzl in sorted((root / JIGZO_PUZZLES).glob("*.pzl")):
        if pzl.stem in JIGZO_SKIP:
            continue
        photo = jigzo_photo(pzl.read_bytes())
        if photo is None:
            log.warning("no photo in %s", pzl)
            continue
        name = f"jigzo_{pzl.stem.split('-')[0]}.jpg"
        cv2.imwrite(str(out / name), photo, [cv2.IMWRITE_JPEG_QUALITY, 95])
        records.append({"file": name, "package": "jigzo-data", "version": version, "license": "GPL-2+",
                        "shows": pzl.stem.split("-")[0]})  # fmt: skip
    version = _unpack(debs["opencv-doc"], root)
    for name, shows in OPENCV_PHOTOS.items():
        shutil.copyfile(root / OPENCV_DATA / name, out / f"opencv_{name}")
        kind = "logo" if shows.startswith("logo") else "photo"
        records.append({"file": f"opencv_{name}", "package": "opencv-doc", "version": version,
                        "license": "BSD-3-Clause", "shows": shows, "kind": kind})  # fmt: skip
    for name, (shows, count) in VIDEOS.items():
        capture = cv2.VideoCapture(str(root / OPENCV_DATA / name))
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        for k in range(count):
            capture.set(cv2.CAP_PROP_POS_FRAMES, (k * frames) // count)
            ok, frame = capture.read()
            if ok:
                file = f"opencv_{Path(name).stem}_{k}.jpg"
                cv2.imwrite(str(out / file), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
                records.append({"file": file, "package": "opencv-doc", "version": version,
                                "license": "BSD-3-Clause", "shows": shows})  # fmt: skip
        capture.release()
    for r in records:
        r.setdefault("kind", "photo")
    return records


def load_manifest(folder: Path) -> list[dict[str, str]]:
    """The records of ``photos.json`` in ``folder`` (written by this script); any folder of images
    without one counts as photos."""
    manifest = folder / "photos.json"
    if manifest.is_file():
        records: list[dict[str, str]] = json.loads(manifest.read_text(encoding="utf-8"))["photos"]
        return records
    suffixes = {".jpg", ".jpeg", ".png", ".bmp"}
    return [
        {"file": p.name, "kind": "photo"} for p in sorted(folder.iterdir()) if p.suffix.lower() in suffixes
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``training_photos.py OUT``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the photos and photos.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        records = collect(args.out, Path(work))
    doc = {"purpose": "training negatives only; never the intruder-replay photos", "photos": records}
    (args.out / "photos.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(records)} photos to {args.out} (manifest: {args.out / 'photos.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
