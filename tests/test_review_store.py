"""The review receiver's store: idempotent, order-independent, resumable, and a closed batch is
never touched again. Real files in a temporary root; messages are checked with the same
functions the receiver uses (``check_jpeg``, ``parse_annotation``)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.config.review import ReviewSettings
from agent.detections import Detections
from agent.frames import Frame, FrameResult
from agent.mqtt.schema import detections_record
from agent.review.annotation import Annotation, parse_annotation
from agent.review.checks import Rejected, check_jpeg
from agent.review.store import (
    ANNOTATION_STORED,
    ANNOTATION_UPDATED,
    DUPLICATE,
    FRAME_WRITTEN,
    ReviewStore,
)
from agent.vott import asset_id, load_project
from tests.conftest import SHARED

VALIDATOR = SHARED / "vott" / "validate_vott.py"
T0 = 1_790_000_000.0  # 2026-09-21 14:13:20 UTC


def jpeg(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    """A small real JPEG."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def annotation(frame_id: str, boxes: list[list[float]], labels: list[str], size=(64, 48)) -> Annotation:
    """An annotation as the agent publishes it (its detections record), checked like the receiver does."""
    frame = Frame(np.zeros((size[1], size[0], 3), np.uint8), "cam", 1, T0, frame_id)
    dets = Detections.create(boxes or np.zeros((0, 4)), [0.5 + i / 100 for i in range(len(boxes))],
                             list(range(len(boxes))), labels)  # fmt: skip
    payload = detections_record(FrameResult(frame, dets, "test.tflite", "litert", 1.0), "cam", True)
    payload["frame_id"] = frame_id
    return parse_annotation(
        json.dumps(payload).encode(), "cam", frame_id, max_side_px=8192, max_regions=100, max_label_chars=100
    )


def settings(root: Path, **kw) -> ReviewSettings:
    return ReviewSettings(root=str(root), fsync=False, min_free_mb=0, **kw)


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a hash of its content (locks and stats left out)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and ".edge-agent-review" not in path.parts:
            out[str(path.relative_to(root))] = hashlib.md5(path.read_bytes()).hexdigest()
    return out


def batch_dirs(root: Path, device: str) -> list[Path]:
    return sorted(p for p in (root / device).iterdir() if p.is_dir())


def validate(batch: Path) -> None:
    """VoTT's validator on a closed batch, when ../shared is here (an extra check, not the test's point)."""
    if not VALIDATOR.is_file():
        return
    proc = subprocess.run(
        [sys.executable, str(VALIDATOR), str(batch / "vott"), "--source-folder", str(batch / "frames")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_same_messages_twice_give_one_asset_in_any_order(tmp_path):
    store = ReviewStore(settings(tmp_path / "root", batch_by="manual"))
    a1 = annotation("f1", [[5, 6, 30, 40]], ["cat"])
    a2 = annotation("f2", [[1, 1, 10, 10], [20, 20, 60, 47]], ["cat", "dog"])
    # annotation before its frame, frame before its annotation, each twice
    assert store.put_annotation("cam", "f1", a1, now=T0) == ANNOTATION_STORED
    assert store.put_annotation("cam", "f1", a1, now=T0) == DUPLICATE
    assert store.put_frame("cam", "f1", jpeg(seed=1), now=T0) == FRAME_WRITTEN
    assert store.put_frame("cam", "f1", jpeg(seed=1), now=T0) == DUPLICATE
    assert store.put_frame("cam", "f2", jpeg(seed=2), now=T0) == FRAME_WRITTEN
    assert store.put_annotation("cam", "f2", a2, now=T0) == ANNOTATION_STORED
    assert store.put_annotation("cam", "f2", a2, now=T0) == DUPLICATE
    assert store.put_frame("cam", "f3", jpeg(seed=3), now=T0) == FRAME_WRITTEN  # never annotated
    assert store.put_annotation("cam", "f4", annotation("f4", [], []), now=T0) == ANNOTATION_STORED

    [batch] = batch_dirs(tmp_path / "root", "cam")
    assert not (batch / "vott").exists()  # the project is written when the batch closes
    store.request_close("cam", now=T0 + 1)
    [result] = store.housekeeping(now=T0 + 1, force_close=True)
    assert (result.frames, result.assets) == (3, 2)
    assert (result.frames_without_annotation, result.annotations_without_frame) == (1, 1)

    project = load_project(batch / "vott")
    assert project.name == f"cam-{batch.name}"
    assert sorted(a.file_name for a in project.assets) == ["f1.jpg", "f2.jpg"]
    f2 = next(a for a in project.assets if a.file_name == "f2.jpg")
    np.testing.assert_allclose(f2.xyxy, [[1, 1, 10, 10], [20, 20, 60, 47]])
    assert f2.labels == ["cat", "dog"] and f2.scores is not None
    np.testing.assert_allclose(f2.scores, [0.5, 0.51], atol=1e-5)
    assert project.tags == ["cat", "dog"]
    assert f2.id == asset_id(str(batch / "frames" / "f2.jpg"))  # the reviewer's own path (same here)
    validate(batch)


def test_a_changed_annotation_replaces_the_stored_one_while_the_batch_is_open(tmp_path):
    store = ReviewStore(settings(tmp_path / "root", batch_by="manual"))
    store.put_frame("cam", "f1", jpeg(), now=T0)
    assert (
        store.put_annotation("cam", "f1", annotation("f1", [[1, 1, 9, 9]], ["a"]), now=T0)
        == ANNOTATION_STORED
    )
    newer = annotation("f1", [[2, 2, 20, 20]], ["b"])
    assert store.put_annotation("cam", "f1", newer, now=T0) == ANNOTATION_UPDATED
    store.request_close(now=T0)
    [result] = store.housekeeping(now=T0, force_close=True)
    [asset] = load_project(result.batch.path / "vott").assets
    assert asset.labels == ["b"]


def test_state_is_rebuilt_from_disk_after_a_restart(tmp_path):
    root = tmp_path / "root"
    first = ReviewStore(settings(root, batch_by="count", batch_size=3))
    first.put_annotation("cam", "f1", annotation("f1", [[1, 1, 9, 9]], ["a"]), now=T0)
    first.put_frame("cam", "f2", jpeg(), now=T0)
    first.close()  # the process ends; nothing but the files is left

    second = ReviewStore(settings(root, batch_by="count", batch_size=3))
    assert second.put_frame("cam", "f2", jpeg(), now=T0 + 5) == DUPLICATE
    assert second.put_frame("cam", "f1", jpeg(), now=T0 + 5) == FRAME_WRITTEN  # meets its annotation
    assert second.put_annotation("cam", "f2", annotation("f2", [], []), now=T0 + 5) == ANNOTATION_STORED
    assert len(batch_dirs(root, "cam")) == 1
    assert second.put_frame("cam", "f3", jpeg(), now=T0 + 5) == FRAME_WRITTEN  # third frame: sealed
    assert (batch_dirs(root, "cam")[0] / "SEALED").exists()
    second.close()

    third = ReviewStore(settings(root, batch_by="count", batch_size=3))
    # f3's annotation still goes to the sealed batch, which then is complete and closes
    third.put_annotation("cam", "f3", annotation("f3", [[3, 3, 9, 9]], ["a"]), now=T0 + 6)
    [result] = third.housekeeping(now=T0 + 6)
    assert (result.frames, result.assets, result.frames_without_annotation) == (3, 2, 0)
    validate(result.batch.path)


def test_a_closed_batch_is_never_modified(tmp_path):
    root = tmp_path / "root"
    store = ReviewStore(settings(root, batch_by="manual", close_grace_s=60))
    store.put_frame("cam", "f1", jpeg(seed=1), now=T0)  # frame whose annotation comes too late
    store.put_annotation("cam", "f2", annotation("f2", [[1, 1, 9, 9]], ["a"]), now=T0)  # frame comes late
    store.put_frame("cam", "f3", jpeg(seed=3), now=T0)
    store.put_annotation("cam", "f3", annotation("f3", [[2, 2, 8, 8]], ["a"]), now=T0)
    store.request_close(now=T0)
    assert store.housekeeping(now=T0 + 30) == []  # incomplete and within close_grace_s: waits
    [closed] = store.housekeeping(now=T0 + 61)
    closed_dir = closed.batch.path
    (closed_dir / "CLOSE").touch()  # a close request in a closed batch is ignored (and left alone)
    before = {k: v for k, v in tree(root).items() if k.startswith(f"cam/{closed_dir.name}/")}
    mtimes = {p: p.stat().st_mtime_ns for p in closed_dir.rglob("*")}

    # A reviewer may now have it open; nothing that arrives later changes it.
    with pytest.raises(Rejected) as late:
        store.put_annotation("cam", "f1", annotation("f1", [[1, 1, 5, 5]], ["a"]), now=T0 + 70)
    assert late.value.reason == "batch_closed"
    assert store.put_frame("cam", "f2", jpeg(seed=2), now=T0 + 70) == FRAME_WRITTEN
    assert store.put_frame("cam", "f3", jpeg(seed=3), now=T0 + 70) == DUPLICATE
    store.request_close(now=T0 + 80)
    store.housekeeping(now=T0 + 80, force_close=True)

    after = {k: v for k, v in tree(root).items() if k.startswith(f"cam/{closed_dir.name}/")}
    assert after == before
    assert {p: p.stat().st_mtime_ns for p in closed_dir.rglob("*")} == mtimes
    # The late frame went to the next batch, with the annotation that waited in the closed one.
    newer = batch_dirs(root, "cam")[-1]
    assert newer != closed_dir and (newer / "frames" / "f2.jpg").exists()
    [asset] = load_project(newer / "vott").assets
    assert asset.file_name == "f2.jpg" and asset.labels == ["a"]
    validate(closed_dir)
    validate(newer)


def test_day_batches_close_when_the_utc_day_changes(tmp_path):
    root = tmp_path / "root"
    store = ReviewStore(settings(root, batch_by="day", close_grace_s=100))
    day = 86400.0
    midnight = (T0 // day + 1) * day
    store.put_frame("cam", "late-evening", jpeg(), now=midnight - 10)
    store.put_annotation(
        "cam", "late-evening", annotation("late-evening", [[1, 1, 9, 9]], ["a"]), now=midnight - 9
    )
    assert store.housekeeping(now=midnight - 1) == []
    [result] = store.housekeeping(now=midnight + 1)  # sealed by the new day, complete: closed
    assert result.batch.name.startswith("20260921")
    store.put_frame("cam", "morning", jpeg(), now=midnight + 5)
    assert [p.name[:8] for p in batch_dirs(root, "cam")] == ["20260921", "20260922"]


def test_a_close_file_in_the_batch_folder_closes_it(tmp_path):
    root = tmp_path / "root"
    store = ReviewStore(settings(root, batch_by="manual"))
    store.put_frame("cam", "f1", jpeg(), now=T0)
    store.put_annotation("cam", "f1", annotation("f1", [[1, 1, 9, 9]], ["a"]), now=T0)
    [batch] = batch_dirs(root, "cam")
    assert store.housekeeping(now=T0 + 1000) == []  # manual: open until asked
    (batch / "CLOSE").touch()
    [result] = store.housekeeping(now=T0 + 1001)
    assert result.batch.path == batch and (batch / "CLOSED").exists() and not (batch / "CLOSE").exists()


def test_two_stores_on_one_root_share_state(tmp_path):
    """Receivers in one shared-subscription group write to one root: a frame and its annotation
    that reached different receivers still meet."""
    root = tmp_path / "root"
    a = ReviewStore(settings(root, batch_by="count", batch_size=4))
    b = ReviewStore(settings(root, batch_by="count", batch_size=4))
    for i in range(8):
        first, second = (a, b) if i % 2 else (b, a)
        assert first.put_frame("cam", f"f{i}", jpeg(seed=i), now=T0 + i) == FRAME_WRITTEN
        note = annotation(f"f{i}", [[1, 1, 9 + i, 9]], ["a"])
        assert second.put_annotation("cam", f"f{i}", note, now=T0 + i) == ANNOTATION_STORED
        assert second.put_frame("cam", f"f{i}", jpeg(seed=i), now=T0 + i) == DUPLICATE
    results = a.housekeeping(now=T0 + 10) + b.housekeeping(now=T0 + 10)
    assert sorted(r.assets for r in results) == [4, 4]
    frames = [p.name for batch in batch_dirs(root, "cam") for p in (batch / "frames").iterdir()]
    assert sorted(frames) == sorted(f"f{i}.jpg" for i in range(8))


def test_the_project_uses_the_reviewers_windows_paths(tmp_path):
    root = tmp_path / "root"
    store = ReviewStore(settings(root, batch_by="manual", reviewer_root="Z:\\review"))
    store.put_frame("printer-1", "f1", jpeg(), now=T0)
    store.put_annotation("printer-1", "f1", annotation("f1", [[1, 1, 9, 9]], ["a"]), now=T0)
    store.request_close(now=T0)
    [result] = store.housekeeping(now=T0, force_close=True)
    data = json.loads(result.batch.project_file.read_text())
    name = result.batch.name
    frames = f"Z:\\review\\printer-1\\{name}\\frames"
    assert data["sourceConnection"]["providerOptions"]["folderPath"] == frames
    assert data["targetConnection"]["providerOptions"]["folderPath"] == f"Z:\\review\\printer-1\\{name}\\vott"
    assert data["securityToken"] == "edge-agent Token"
    [aid] = data["assets"]
    assert aid == asset_id(frames + "\\f1.jpg")
    assert data["assets"][aid]["path"] == f"file:Z:/review/printer-1/{name}/frames/f1.jpg"


def test_a_size_mismatch_between_frame_and_annotation_is_refused(tmp_path):
    store = ReviewStore(settings(tmp_path / "root", batch_by="manual"))
    store.put_frame("cam", "f1", jpeg(64, 48), now=T0)
    with pytest.raises(Rejected) as exc:
        store.put_annotation("cam", "f1", annotation("f1", [[1, 1, 9, 9]], ["a"], size=(128, 96)), now=T0)
    assert exc.value.reason == "annotation_size_mismatch"
    # annotation first, mismatching frame second: the frame is kept, the annotation discarded
    store.put_annotation("cam", "f2", annotation("f2", [[1, 1, 9, 9]], ["a"], size=(128, 96)), now=T0)
    assert store.put_frame("cam", "f2", jpeg(64, 48), now=T0) == FRAME_WRITTEN
    assert store.counters["annotations_discarded_size_mismatch"] == 1
    [batch] = batch_dirs(tmp_path / "root", "cam")
    assert not (batch / "annotations" / "f2.json").exists()


def test_devices_over_the_cap_and_paths_leaving_root_are_refused(tmp_path):
    root = tmp_path / "root"
    store = ReviewStore(settings(root, max_devices=2))
    store.put_frame("d1", "f", jpeg(), now=T0)
    store.put_frame("d2", "f", jpeg(), now=T0)
    with pytest.raises(Rejected) as exc:
        store.put_frame("d3", "f", jpeg(), now=T0)
    assert exc.value.reason == "too_many_devices"
    assert store.put_frame("d1", "g", jpeg(), now=T0) == FRAME_WRITTEN  # known devices go on

    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "d2-link")
    store2 = ReviewStore(settings(root, max_devices=10))
    with pytest.raises(Rejected) as exc:
        store2.put_frame("d2-link", "f", jpeg(), now=T0)
    assert exc.value.reason == "path_outside_root"
    assert list(outside.iterdir()) == []


def test_temporary_files_of_a_killed_receiver_are_removed_but_never_in_closed_batches(tmp_path):
    root = tmp_path / "root"
    store = ReviewStore(settings(root, batch_by="manual"))
    store.put_frame("cam", "f1", jpeg(), now=T0)
    store.request_close(now=T0)
    [closed] = store.housekeeping(now=T0, force_close=True)
    store.put_frame("cam", "f2", jpeg(), now=T0 + 1)
    open_batch = batch_dirs(root, "cam")[-1]
    left_over = [open_batch / "frames" / ".f3.jpg.x1y2.tmp", open_batch / "annotations" / ".f3.json.a.tmp"]
    for path in left_over:
        path.write_bytes(b"half")
    in_closed = closed.batch.frames_dir / ".f9.jpg.zz.tmp"
    in_closed.write_bytes(b"someone else's")
    assert store.remove_temp_files() == 2
    assert not any(p.exists() for p in left_over) and in_closed.exists()
    assert check_jpeg((open_batch / "frames" / "f2.jpg").read_bytes(), 8192).width == 64


def test_frames_resent_after_a_device_restart_are_counted_not_stored_twice(tmp_path):
    """An agent restarted before the broker acknowledged sends the same frames again (same id,
    same bytes): recognised in the open batch, in a sealed one and in a closed one; other bytes
    under a stored id are refused, and the stored frame stays."""
    root = tmp_path / "root"
    store = ReviewStore(settings(root, batch_by="count", batch_size=2))
    frames = {f"f{i}": jpeg(seed=i) for i in range(5)}
    for fid in ("f0", "f1", "f2"):  # f0 and f1 fill the first batch (sealed), f2 opens the next
        assert store.put_frame("cam", fid, frames[fid], now=T0) == FRAME_WRITTEN
    [first, second] = batch_dirs(root, "cam")
    assert (first / "SEALED").exists() and not (second / "SEALED").exists()
    assert store.put_frame("cam", "f2", frames["f2"], now=T0) == DUPLICATE  # open batch
    assert store.put_frame("cam", "f0", frames["f0"], now=T0) == DUPLICATE  # sealed batch
    store.housekeeping(now=T0, force_close=True, device="cam")
    assert (first / "CLOSED").exists()
    assert store.put_frame("cam", "f1", frames["f1"], now=T0) == DUPLICATE  # closed batch
    with pytest.raises(Rejected) as other_bytes:
        store.put_frame("cam", "f2", frames["f4"], now=T0)
    assert other_bytes.value.reason == "frame_id_reused"
    assert (second / "frames" / "f2.jpg").read_bytes() == frames["f2"]
    assert store.counters["frames_resent"] == 3
    stored = sorted(p.name for p in root.glob("cam/*/frames/*.jpg"))
    assert stored == ["f0.jpg", "f1.jpg", "f2.jpg"]


def test_a_reviewers_edits_in_a_closed_batch_survive_new_frames_and_resends(shared_dir, tmp_path):
    """Edits made as VoTT 2.2.0 makes them (moved and retagged box, deleted box, added box, an asset
    emptied, the project saved with encrypted options) in a closed batch: new frames for the device,
    a re-sent frame and annotation of that batch, and closing the next batch leave every file of it
    byte for byte as the reviewer saved it."""
    from tests.vott_reviewer import Reviewer

    root = tmp_path / "root"
    store = ReviewStore(settings(root, batch_by="manual"))
    for i in range(4):
        fid = f"f{i}"
        store.put_frame("cam", fid, jpeg(seed=i), now=T0)
        store.put_annotation(
            "cam", fid, annotation(fid, [[5, 6, 30, 40], [34, 8, 60, 44]], ["cat", "dog"]), now=T0
        )
    store.request_close("cam", now=T0 + 1)
    [closed] = store.housekeeping(now=T0 + 1, force_close=True)
    batch = closed.batch.path
    reviewer = Reviewer(batch / "vott", shared_dir)
    ids = [asset_id(str(batch / "frames" / f"f{i}.jpg")) for i in range(4)]
    reviewer.move_and_retag(ids[0], dx=3, new_tag="spaghetti")
    reviewer.delete_box(ids[1])
    reviewer.add_box(ids[2], (2, 2, 20, 20), "adhesion")
    reviewer.empty(ids[3])
    before = tree(batch)

    assert store.put_frame("cam", "f1", jpeg(seed=1), now=T0 + 5) == DUPLICATE  # a device restart re-sends
    with pytest.raises(Rejected, match="batch_closed"):  # counted and dropped by the receiver
        store.put_annotation("cam", "f1", annotation("f1", [[1, 1, 9, 9]], ["cat"]), now=T0 + 5)
    store.put_frame("cam", "f9", jpeg(seed=9), now=T0 + 5)  # a new frame: the next batch
    store.put_annotation("cam", "f9", annotation("f9", [[5, 6, 30, 40]], ["cat"]), now=T0 + 5)
    store.request_close("cam", now=T0 + 6)
    store.housekeeping(now=T0 + 6, force_close=True)

    assert tree(batch) == before, "a closed batch the reviewer worked on was written again"
    assert len(batch_dirs(root, "cam")) == 2
