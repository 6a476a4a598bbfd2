"""The hard-negative generator behind the bundled model's retraining (scripts/make_hard_negatives.py,
scripts/distractors.py, scripts/training_photos.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest

from agent.bundled import BUNDLED_DATA
from tests.test_training import load_script

LABELS = ["nozzle", "raft", "print", "adhesion", "spaghetti"]


@pytest.fixture(scope="module")
def hard() -> ModuleType:
    return load_script("make_hard_negatives")


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A photo folder as training_photos.py writes it: two pictures and a logo, with the manifest."""
    folder = tmp_path / "photos"
    folder.mkdir()
    frames = sorted((BUNDLED_DATA / "sample_timelapse").glob("*.jpg"))
    for name, source in (("a.jpg", frames[0]), ("b.jpg", frames[-1]), ("logo.jpg", frames[10])):
        (folder / name).write_bytes(source.read_bytes())
    records = [{"file": "a.jpg", "kind": "photo"}, {"file": "b.jpg", "kind": "photo"},
               {"file": "logo.jpg", "kind": "logo"}]  # fmt: skip
    (folder / "photos.json").write_text(json.dumps({"photos": records}), encoding="utf-8")
    return folder


def test_generator_writes_frames_with_distractors_and_the_visible_boxes(
    hard: ModuleType, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "hard"
    assert hard.main([str(out), "--photos", str(photos), "--count", "24", "--seed", "5"]) == 0
    truth = json.loads((out / "ground_truth.json").read_text(encoding="utf-8"))
    assert truth["labels"] == LABELS and truth["mode"] == "hard_negatives" and len(truth["frames"]) == 24
    kinds = set()
    for frame in truth["frames"]:
        image = cv2.imread(str(out / frame["image"]))
        assert image.shape[:2] == (frame["height"], frame["width"])
        kinds |= set(frame["phase"].split("+"))
        if frame["phase"].startswith(("full_photo", "blocked")):
            assert frame["boxes"] == [], frame  # nothing of the printer is visible
        for box in frame["boxes"]:
            x1, y1, x2, y2 = box["xyxy"]
            assert (
                box["label"] in LABELS and 0 <= x1 < x2 <= frame["width"] and 0 <= y1 < y2 <= frame["height"]
            )
    assert len(kinds) >= 6, kinds  # 24 frames draw most kinds of distractor
    assert sum(len(f["boxes"]) for f in truth["frames"]) > 24  # most frames still show a printer


def test_generator_is_deterministic(hard: ModuleType, photos: Path) -> None:
    hard._photos[:], hard._logos[:] = hard.load_photos(photos)
    a, boxes_a, quality_a, names_a = hard.hard_frame(3, 7, 640, 480)
    b, boxes_b, quality_b, names_b = hard.hard_frame(3, 7, 640, 480)
    assert np.array_equal(a, b) and boxes_a == boxes_b and (quality_a, names_a) == (quality_b, names_b)


def test_boxes_a_distractor_mostly_hides_are_dropped(hard: ModuleType) -> None:
    box = load_script("make_sample_data").Box
    covered = np.zeros((100, 100), np.float32)
    covered[:, :60] = 1.0  # the left 60 % of the frame is behind a photo
    boxes = [box("print", (0.0, 0.0, 50.0, 50.0)), box("nozzle", (40.0, 0.0, 100.0, 50.0)),
             box("raft", (70.0, 60.0, 90.0, 90.0))]  # fmt: skip
    assert [b.label for b in hard.visible_boxes(boxes, covered)] == ["nozzle", "raft"]


def test_a_jigzo_puzzle_gives_its_whole_photo() -> None:
    """A .pzl file: a header naming the picture's rectangle in the texture, then named,
    length-prefixed images; the last is the texture the picture is cut from."""
    photos = load_script("training_photos")
    texture = np.zeros((64, 96, 3), np.uint8)
    texture[8:40, 4:52] = (30, 160, 220)  # the photo: 48 x 32 at (4, 8)
    thumb = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    big = cv2.imencode(".png", texture)[1].tobytes()
    puzzle = (b"PzlF\n0.1\ntest\nurl\ntest.map\n10\n#texture map data\ncrop000 1 2 3 4 5 6 0 0 0 0\n"
              b"image 4 8 48 32 1 1    \n" + b"t.jpg\n%d\n" % len(thumb) + thumb
              + b"\ntex.png\n%d\n" % len(big) + big + b"\n")  # fmt: skip
    photo = photos.jigzo_photo(puzzle)
    assert photo is not None and photo.shape == (32, 48, 3)
    assert np.all(photo == (30, 160, 220))
    assert photos.jigzo_photo(b"not a puzzle") is None
