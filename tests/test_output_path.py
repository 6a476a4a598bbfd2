"""The per-frame output path after its trimming: what is computed once and shared gives the same
files and messages as computing it again."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from agent.boxes import clip_xyxy
from agent.detections import Detections
from agent.frames import Frame
from agent.vott import VottProject
from agent.vott import asset as vott_asset
from agent.vott.asset import asset_json
from agent.vott.writer import WriteOutcome

LABELS = ("person", "car", "dog")


def _detections(seed: int, n: int = 6) -> Detections:
    rng = np.random.default_rng(seed)
    corners = rng.uniform(-40, 700, (n, 4)).astype(np.float32)
    xyxy = np.concatenate(
        [corners[:, :2].clip(max=600), corners[:, :2].clip(max=600) + corners[:, 2:] / 7], 1
    )
    return Detections.create(xyxy, rng.uniform(0.2, 1, n), rng.integers(0, 3, n), LABELS)


def _project(tmp_path: Path) -> VottProject:
    return VottProject(tmp_path / "vott", tmp_path / "frames", name="p", tags=LABELS)


def test_the_written_asset_equals_one_made_again_from_nothing_cached(tmp_path: Path) -> None:
    project = _project(tmp_path)
    for seed in range(5):
        path = project.frames_dir / f"frame{seed}.jpg"
        ok, data = cv2.imencode(".jpg", np.full((480, 640, 3), seed * 40, np.uint8))
        assert ok
        project.write_frame(path, data.tobytes())
        detections = _detections(seed)
        written = project.add_frame(path, 640, 480, detections)
        assert written.outcome == WriteOutcome.ADDED
        on_disk = json.loads(project.asset_file(str(written.asset_id)).read_bytes())
        vott_asset._asset_identity.cache_clear()  # made again from nothing
        again = asset_json(project.reviewer_path(path), 640, 480, detections)
        assert on_disk == again
        assert again["asset"]["id"] == written.asset_id and len(again["regions"]) > 0


def test_a_frame_written_twice_is_updated_not_added(tmp_path: Path) -> None:
    """The look at the disk saved between "reviewed?" and the write must not make a frame whose
    asset exists look new."""
    project = _project(tmp_path)
    path = project.frames_dir / "frame.jpg"
    project.write_frame(path, b"\xff\xd8 not really a jpeg \xff\xd9")
    assert not project.reviewed(path)
    assert project.add_frame(path, 640, 480, _detections(1)).outcome == WriteOutcome.ADDED
    assert not project.reviewed(path)
    assert project.add_frame(path, 640, 480, _detections(2)).outcome == WriteOutcome.UPDATED
    reopened = _project(tmp_path)
    assert not reopened.reviewed(path)
    assert reopened.add_frame(path, 640, 480, _detections(3)).outcome == WriteOutcome.UPDATED


def test_clipping_in_one_call_equals_clipping_each_coordinate() -> None:
    rng = np.random.default_rng(7)
    for width, height in ((1280, 720), (640.5, 479.25)):
        boxes = rng.normal(300, 600, (500, 4)).astype(np.float32)
        expected = boxes.copy()
        expected[:, [0, 2]] = np.clip(expected[:, [0, 2]], 0.0, width)
        expected[:, [1, 3]] = np.clip(expected[:, [1, 3]], 0.0, height)
        clipped = clip_xyxy(boxes, width, height)
        assert clipped.dtype == np.float32 and np.array_equal(clipped, expected)
    assert clip_xyxy(np.zeros((0, 4)), 10, 10).shape == (0, 4)


def test_the_frame_id_is_made_once_and_stays() -> None:
    frame = Frame(np.zeros((2, 2, 3), np.uint8), "cam 0", 1, 0.0, "a/b")
    assert frame.frame_id == "cam_0_a_b"
    assert frame.frame_id is frame.frame_id
    assert "frame_id" not in repr(frame)


def test_region_coordinates_are_written_to_a_hundredth_of_a_pixel() -> None:
    for seed in range(20):
        meta = asset_json("/r/frames/f.jpg", 640, 480, _detections(seed, 12))
        for region in meta["regions"]:
            numbers = [*region["boundingBox"].values(), *(v for p in region["points"] for v in p.values())]
            assert all(round(v, 2) == v and len(repr(v)) <= 7 for v in numbers), numbers
