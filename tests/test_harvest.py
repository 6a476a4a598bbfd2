"""Harvest policies, disk quota, eviction order, free-space floor and restart, with real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from agent.config.harvest import HarvestSettings
from agent.detections import Detections
from agent.frames import Frame, FrameResult
from agent.harvest import Eviction, Harvester, KeepDecision, dhash64, hamming_distances

LABELS = ("person", "dog", "cat")
WALL = 1.7e9  # epoch seconds of the first frame


def _scene(seed: int = 3, width: int = 320, height: int = 240) -> np.ndarray:
    """A view: a lit gradient in a random direction and eight coloured boxes."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = xx * np.cos(angle) + yy * np.sin(angle)
    ramp = (ramp - ramp.min()) / np.ptp(ramp) * 160 + rng.uniform(20, 70)
    image = np.repeat(ramp[:, :, None], 3, axis=2).astype(np.uint8)
    for _ in range(8):
        x1, y1 = int(rng.integers(0, width - 60)), int(rng.integers(0, height - 60))
        x2, y2 = x1 + int(rng.integers(25, 90)), y1 + int(rng.integers(25, 90))
        cv2.rectangle(image, (x1, y1), (x2, y2), tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
    return image


def _noisy(image: np.ndarray, rng: np.random.Generator, sigma: float = 6.0) -> np.ndarray:
    return np.clip(
        image.astype(np.int16) + rng.normal(0, sigma, image.shape).astype(np.int16), 0, 255
    ).astype(np.uint8)


def _result(
    image: np.ndarray,
    index: int,
    detections: Sequence[tuple[str, float]] = (),
    source: str = "cam",
    skipped: bool = False,
) -> FrameResult:
    frame = Frame(image=image, source_id=source, sequence=index, timestamp=WALL + index, name=f"{index:06d}")
    class_ids = [LABELS.index(label) for label, _ in detections]
    boxes = [[10 + 5 * k, 10, 60 + 5 * k, 80] for k in range(len(detections))]
    dets = Detections.create(
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4), [s for _, s in detections], class_ids, LABELS
    )
    return FrameResult(frame, dets, "test-model", "test", 1.0, skipped_inference=skipped)


def _write_frame(folder: Path, frame_id: str, image: np.ndarray, labels: Sequence[str]) -> list[Path]:
    """What the VoTT writer does for a kept frame: an image and an asset JSON."""
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    image_path = folder / f"{frame_id}.jpg"
    asset_path = folder / f"{frame_id}-asset.json"
    image_path.write_bytes(jpeg.tobytes())
    asset_path.write_text(json.dumps({"asset": {"name": image_path.name}, "regions": list(labels)}))
    return [image_path, asset_path]


def _settings(**kwargs: object) -> HarvestSettings:
    kwargs.setdefault("min_free_mb", 0)
    return HarvestSettings.model_validate(kwargs)


def _said(decision: KeepDecision) -> tuple[bool, list[str]]:
    return decision.keep, list(decision.reasons)


def _carry_out(harvester: Harvester, evictions: list[Eviction], removed: list[str] | None = None) -> None:
    """The VoTT writer's part of an eviction: take the frame out of its project (here: note it),
    then let the store delete the files."""
    if removed is not None:
        removed.extend(e.frame_id for e in evictions)
    harvester.confirm_evicted(evictions)


# --------------------------------------------------------------------------- quota and eviction


def test_quota_holds_over_10000_frames_and_synced_frames_go_first(tmp_path: Path) -> None:
    frames_dir = tmp_path / "project"
    quota_bytes = int(0.25 * 1024 * 1024)
    on_disk: dict[str, int] = {}  # path -> bytes, measured with os.stat
    synced_on_disk: set[str] = set()  # frames the broker acknowledged that are still kept
    evicted: list[tuple[str, bool]] = []  # (frame id, was it synced)

    def on_evict(eviction: Eviction) -> None:
        # The VoTT writer's part: take the frame out of the project (files stay until confirmed).
        was_synced = eviction.frame_id in synced_on_disk
        if not was_synced:
            assert not synced_on_disk, f"unsynced {eviction.frame_id} evicted while synced frames remain"
        assert eviction.synced is was_synced
        synced_on_disk.discard(eviction.frame_id)
        evicted.append((eviction.frame_id, was_synced))
        assert all(Path(p).exists() for p in eviction.paths), "files go only after confirmation"
        for path in eviction.paths:
            on_disk.pop(str(path), None)

    rng = np.random.default_rng(11)
    harvester = Harvester(_settings(quota_mb=0.25), frames_dir)
    acks: list[tuple[int, str]] = []  # (frame index when the broker acknowledges, frame id)
    outages = [(2000, 3500), (6000, 8000)]  # broker away: acknowledgements wait
    largest_frame = 0
    for index in range(10_000):
        side = int(rng.integers(24, 97))
        image = rng.integers(0, 256, (side, side * 4 // 3, 3), dtype=np.uint8)
        labels = [LABELS[int(rng.integers(0, 3))]]
        result = _result(image, index, [(labels[0], 0.8)])
        assert _said(harvester.decide(result, index * 0.1)) == (True, ["all"])
        frame_id = result.frame.frame_id
        paths = _write_frame(frames_dir, frame_id, image, labels)
        frame_bytes = sum(os.stat(p).st_size for p in paths)
        largest_frame = max(largest_frame, frame_bytes)
        on_disk.update({str(p): os.stat(p).st_size for p in paths})
        # While the new frame is written and not yet accounted: at most one frame over.
        assert sum(on_disk.values()) <= quota_bytes + frame_bytes
        evictions = harvester.record_kept(frame_id, paths, labels, now=WALL + index * 0.1)
        for eviction in evictions:
            on_evict(eviction)
        harvester.confirm_evicted(evictions)
        assert not any(Path(p).exists() for e in evictions for p in e.paths)
        assert sum(on_disk.values()) <= quota_bytes
        assert all(p.exists() for p in paths)

        acks.append((index + 10, frame_id))
        if not any(start <= index < end for start, end in outages):
            while acks and acks[0][0] <= index:
                _, acked = acks.pop(0)
                if harvester.mark_synced(acked):
                    synced_on_disk.add(acked)

        if index % 1000 == 999:  # the real folder agrees with the bookkeeping
            real = sum(f.stat().st_size for f in os.scandir(frames_dir) if not f.name.startswith("harvest-"))
            assert real == sum(on_disk.values()) == harvester.store.total_bytes

    unsynced_evictions = sum(1 for _, was_synced in evicted if not was_synced)
    assert unsynced_evictions > 100, "the outages should have forced unsynced evictions"
    assert len(evicted) - unsynced_evictions > 5000
    stats = harvester.stats()
    assert stats["frames"]["seen"] == stats["frames"]["kept"] == 10_000
    assert stats["frames"]["evicted"] == len(evicted)
    assert stats["disk"]["frames_on_disk"] == 10_000 - len(evicted)
    assert stats["disk"]["bytes_on_disk"] <= quota_bytes
    assert sum(v["kept"] for v in stats["labels"].values()) == 10_000
    assert stats["disk"]["evicted_by"] == {"quota": len(evicted)}
    assert largest_frame < quota_bytes / 20
    harvester.close()


def test_retention_by_age(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    harvester = Harvester(_settings(max_age_days=1, quota_mb=0), tmp_path)
    day = 86400.0
    for index in range(4):
        image = _noisy(_scene(seed=index), rng)
        result = _result(image, index)
        assert harvester.decide(result, float(index)).keep
        evictions = harvester.record_kept(
            result.frame.frame_id,
            _write_frame(tmp_path, result.frame.frame_id, image, []),
            now=WALL + index * day / 2,
        )
        _carry_out(harvester, evictions)
    # Recording the 4th frame (1.5 days in) evicted the 1st (older than a day).
    assert [e.frame_id for e in harvester.store.frames()] == ["cam_000001", "cam_000002", "cam_000003"]
    evictions = harvester.maintain(now=WALL + 2.2 * day)
    assert [e.frame_id for e in evictions] == ["cam_000001", "cam_000002"]
    assert {e.cause for e in evictions} == {"age"}
    assert (tmp_path / "cam_000001.jpg").exists(), "the files stay until the caller confirms"
    _carry_out(harvester, evictions)
    assert not (tmp_path / "cam_000001.jpg").exists()
    assert harvester.stats()["disk"]["evicted_by"] == {"age": 3}


def test_free_space_floor_stops_keeping_but_not_deciding(tmp_path: Path) -> None:
    free_mb = shutil.disk_usage(tmp_path).free / (1024 * 1024)
    image = _scene()
    starved = Harvester(_settings(min_free_mb=free_mb + 1000), tmp_path / "a")
    decisions = [_said(starved.decide(_result(image, i, [("person", 0.9)]), float(i))) for i in range(5)]
    assert decisions == [(False, ["low_disk"])] * 5
    stats = starved.stats()
    assert stats["disk"]["low_disk"] is True
    assert stats["frames"]["low_disk"] == 5
    assert stats["labels"]["person"]["seen"] == 5
    assert "LOW DISK" in starved.summary_line()

    roomy = Harvester(_settings(min_free_mb=1), tmp_path / "b")
    assert _said(roomy.decide(_result(image, 0, [("person", 0.9)]), 0.0)) == (True, ["all"])


def test_restart_rebuilds_the_index_and_keeps_eviction_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    settings = _settings(policies=["duplicate"], quota_mb=0)
    first = Harvester(settings, tmp_path)
    ids = []
    for index in range(10):
        image = _noisy(_scene(seed=100 + index), rng)
        result = _result(image, index, [("dog", 0.7)])
        assert first.decide(result, float(index)).keep
        first.record_kept(
            result.frame.frame_id,
            _write_frame(tmp_path, result.frame.frame_id, image, ["dog"]),
            now=WALL + index,
        )
        ids.append(result.frame.frame_id)
    assert first.mark_synced(ids[3]) and first.mark_synced(ids[5])
    assert not first.mark_synced(ids[3])  # already synced
    first.close()
    # While stopped: a frame deleted by hand, and another's image replaced by a bigger one.
    for path in tmp_path.glob(f"{ids[7]}*"):
        path.unlink()
    with open(tmp_path / f"{ids[8]}.jpg", "ab") as image_file:
        image_file.write(bytes(5000))

    real_bytes = sum(p.stat().st_size for p in tmp_path.iterdir() if not p.name.startswith("harvest-"))
    quota = _settings(policies=["duplicate"], quota_mb=(real_bytes - 1) / (1024 * 1024))
    evicted: list[str] = []
    second = Harvester(quota, tmp_path)
    assert len(second.store) == 9
    assert ids[7] not in second.store
    assert second.store.total_bytes == real_bytes
    assert [e.frame_id for e in second.store.frames() if e.synced] == [ids[3], ids[5]]
    # The first eviction after the restart is the oldest synced frame.
    _carry_out(second, second.maintain(now=WALL + 20), evicted)
    assert evicted == [ids[3]]
    second.store.quota_bytes = real_bytes // 2
    _carry_out(second, second.maintain(now=WALL + 21), evicted)
    assert evicted[:3] == [ids[3], ids[5], ids[0]]
    assert second.store.total_bytes == sum(
        p.stat().st_size for p in tmp_path.iterdir() if not p.name.startswith("harvest-")
    )
    # The duplicate window came back too: the scene of a kept frame is not kept again.
    again = _result(_noisy(_scene(seed=109), rng), 50, [("dog", 0.7)])
    assert _said(second.decide(again, 100.0)) == (False, ["duplicate"])
    second.close()


# --------------------------------------------------------------------------- policies


def test_near_duplicates_are_dropped_and_uncertain_frames_kept(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    harvester = Harvester(_settings(policies=["uncertainty", "duplicate"]), tmp_path)
    room = _scene(seed=21)

    first = _result(_noisy(room, rng), 0, [("person", 0.45)])
    assert _said(harvester.decide(first, 0.0)) == (True, ["uncertainty"])
    for index in range(1, 30):  # the same view, new sensor noise, the same unsure person
        again = _result(_noisy(room, rng), index, [("person", 0.47)])
        assert _said(harvester.decide(again, float(index))) == (False, ["duplicate"])

    # The same view, but the detector now also (unsurely) sees a dog: not a duplicate.
    dog = _result(_noisy(room, rng), 30, [("person", 0.46), ("dog", 0.4)])
    assert _said(harvester.decide(dog, 30.0)) == (True, ["uncertainty"])
    # A different view with an unsure detection is kept; a confident one has no reason to be.
    moved = room.copy()
    cv2.rectangle(moved, (100, 40), (260, 200), (250, 250, 250), -1)
    assert harvester.decide(_result(_noisy(moved, rng), 31, [("cat", 0.55)]), 31.0).keep
    sure = _result(_noisy(_scene(seed=22), rng), 32, [("cat", 0.95)])
    assert _said(harvester.decide(sure, 32.0)) == (False, ["no_reason"])

    counts = harvester.stats()["policy_counts"]
    assert counts["duplicate"] == {"dropped": 29}
    assert counts["uncertainty"] == {"fired": 32, "kept": 3}


def test_hash_distances() -> None:
    rng = np.random.default_rng(2)
    room = _scene(seed=4)
    base = dhash64(room)
    noisy = [dhash64(_noisy(room, rng)) for _ in range(20)]
    others = [dhash64(_scene(seed=s)) for s in range(100, 140)]
    # 64 bits are coarse: noise flips a few, other views differ in more than the default 6.
    assert hamming_distances(base, noisy).max() <= 3
    assert hamming_distances(base, others).min() > 6
    assert hamming_distances(base, []).size == 0


def test_default_keeps_every_inferred_frame_but_not_gate_skipped_ones(tmp_path: Path) -> None:
    harvester = Harvester(None, tmp_path)
    image = _scene()
    assert _said(harvester.decide(_result(image, 0), 0.0)) == (True, ["all"])
    assert _said(harvester.decide(_result(image, 1), 0.1)) == (True, ["all"])
    assert _said(harvester.decide(_result(image, 2, skipped=True), 0.2)) == (False, ["gate_skipped"])
    frames = harvester.stats()["frames"]
    assert frames["seen"] == 3 and frames["skipped_inference"] == 1 and frames["selected"] == 2


def test_interval_is_per_source_and_alone_means_one_frame_every_interval(tmp_path: Path) -> None:
    harvester = Harvester(_settings(policies=["interval"], interval={"interval_s": 10}), tmp_path)
    image = _scene()
    kept = {
        source: [t for t in range(60) if harvester.decide(_result(image, t, source=source), float(t)).keep]
        for source in ("door", "yard")
    }
    assert kept == {"door": [0, 10, 20, 30, 40, 50], "yard": [0, 10, 20, 30, 40, 50]}
    assert harvester.stats()["policy_counts"]["interval"] == {"dropped": 108}


def test_detection_policy_filters_labels_and_scores(tmp_path: Path) -> None:
    settings = _settings(policies=["detection"], detection={"labels": ["dog"], "min_score": 0.5})
    harvester = Harvester(settings, tmp_path)
    image = _scene()
    cases = {
        (): False,
        (("person", 0.9),): False,
        (("dog", 0.4),): False,
        (("person", 0.9), ("dog", 0.6)): True,
    }
    for index, (dets, expected) in enumerate(cases.items()):
        assert harvester.decide(_result(image, index, dets), float(index)).keep is expected


def test_change_policy_fires_when_counts_or_classes_change(tmp_path: Path) -> None:
    harvester = Harvester(_settings(policies=["change"]), tmp_path)
    image = _scene()
    sequence = [
        [("person", 0.8)],  # first frame of the source: a change
        [("person", 0.7)],
        [("person", 0.8), ("person", 0.6)],  # count changed
        [("person", 0.8), ("person", 0.6)],
        [("dog", 0.8), ("person", 0.6)],  # classes changed
        [],
        [],
    ]
    kept = [harvester.decide(_result(image, i, d), float(i)).keep for i, d in enumerate(sequence)]
    assert kept == [True, False, True, False, True, True, False]


def test_class_balance_caps_common_labels_but_keeps_rare_ones(tmp_path: Path) -> None:
    harvester = Harvester(
        _settings(policies=["class_balance"], class_balance={"max_per_label_per_hour": 2}), tmp_path
    )
    image = _scene()
    person = [harvester.decide(_result(image, i, [("person", 0.9)]), float(i)) for i in range(4)]
    assert [d.keep for d in person] == [True, True, False, False]
    assert person[2].reasons == ("class_balance",)
    # A frame that also has a dog is kept for the dog; an hour later people are welcome again.
    assert harvester.decide(_result(image, 4, [("person", 0.9), ("dog", 0.6)]), 4.0).keep
    assert not harvester.decide(_result(image, 5, [("person", 0.9)]), 5.0).keep
    assert harvester.decide(_result(image, 6, [("person", 0.9)]), 3601.5).keep


def test_summary_file_has_counts_per_label_and_policy(tmp_path: Path) -> None:
    harvester = Harvester(_settings(policies=["uncertainty", "interval"], quota_mb=10), tmp_path)
    rng = np.random.default_rng(0)
    for index in range(20):
        image = _noisy(_scene(seed=index), rng)
        result = _result(image, index, [("cat", 0.5 if index % 2 else 0.9)])
        if harvester.decide(result, index * 3.0).keep:
            harvester.record_kept(
                result.frame.frame_id, _write_frame(tmp_path, result.frame.frame_id, image, ["cat"]), ["cat"]
            )
            harvester.mark_synced(result.frame.frame_id)
    harvester.write_summary(tmp_path / "harvest.json")
    summary = json.loads((tmp_path / "harvest.json").read_text())
    assert summary["generated_at"].endswith("Z")
    assert summary["frames"]["seen"] == 20
    assert summary["policy_counts"]["uncertainty"]["fired"] == 10
    kept = summary["frames"]["kept"]
    assert 0 < kept < 10
    assert summary["policy_counts"]["interval"]["dropped"] == 10 - kept
    assert summary["labels"]["cat"] == {
        "seen": 20,
        "kept": kept,
        "evicted": 0,
        "synced": kept,
        "on_disk": kept,
    }
    assert summary["settings"]["policies"] == ["uncertainty", "interval"]


def test_settings_explain_mistakes() -> None:
    with pytest.raises(ValidationError, match="'all' already keeps every frame"):
        HarvestSettings(policies=["all", "uncertainty"])
    with pytest.raises(ValidationError, match="more than once"):
        HarvestSettings(policies=["interval", "interval"])
    with pytest.raises(ValidationError, match="swap them"):
        HarvestSettings.model_validate({"uncertainty": {"min_score": 0.7, "max_score": 0.4}})
    with pytest.raises(ValidationError, match=r"classes\.spaghetti: min_score 0\.6 is above max_score 0\.5"):
        HarvestSettings.model_validate({"uncertainty": {"classes": {"spaghetti": [0.6, 0.5]}}})
    with pytest.raises(ValidationError, match="scores are between 0 and 1"):
        HarvestSettings.model_validate({"uncertainty": {"classes": {"spaghetti": [0.2, 1.5]}}})
    with pytest.raises(ValidationError):
        HarvestSettings.model_validate({"policies": ["random"]})
    with pytest.raises(ValidationError):
        HarvestSettings.model_validate({"quota": 100})
    defaults = HarvestSettings()
    assert defaults.reason_policies == ["all"] and defaults.veto_policies == []
    assert HarvestSettings(policies=["duplicate", "interval"]).reason_policies == ["all"]


def test_vott_project_stays_valid_after_evictions(tmp_path: Path, shared_dir: Path) -> None:
    """Kept frames go into a real VoTT project; quota evictions remove them through
    ``VottProject.remove_frame``; the shared validator accepts the project afterwards."""
    from agent.vott import VottProject

    target, frames_dir = tmp_path / "target", tmp_path / "frames"
    rng = np.random.default_rng(4)
    with VottProject(target, frames_dir, tags=LABELS) as project:
        harvester = Harvester(_settings(quota_mb=0.05), frames_dir)
        for index in range(120):
            image = _noisy(_scene(seed=index % 9, width=160, height=120), rng)
            result = _result(image, index, [(LABELS[index % 3], 0.8)])
            assert harvester.decide(result, float(index)).keep
            image_path = frames_dir / f"{result.frame.frame_id}.jpg"
            assert cv2.imwrite(str(image_path), image)
            aid = project.add_frame(
                image_path, 160, 120, result.detections, model="test", timestamp=WALL + index
            ).asset_id
            assert aid is not None
            paths = [image_path, project.asset_file(aid), project.scores_file(aid)]
            evictions = harvester.record_kept(result.frame.frame_id, paths, now=WALL + index)
            for eviction in evictions:
                assert project.remove_frame(eviction.paths[0])
            harvester.confirm_evicted(evictions)
        harvester.close()
        assert 0 < len(project) == len(harvester.store) < 120
    assert len(list(target.glob("*-asset.json"))) == len(harvester.store)
    assert len(list(frames_dir.glob("*.jpg"))) == len(harvester.store)

    validator = shared_dir / "vott" / "validate_vott.py"
    run = subprocess.run(
        [sys.executable, str(validator), str(target), "--source-folder", str(frames_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
