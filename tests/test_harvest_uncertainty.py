"""Uncertainty judged on every detection, per-class bands, what each kept frame was kept for (in the
decision and in harvest.json), frames an alert points at, and counters that add up."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agent.config.harvest import HarvestSettings
from agent.detections import Detections
from agent.frames import Frame, FrameResult
from agent.harvest import Harvester, Trigger

LABELS = ("nozzle", "raft", "spaghetti", "person")
WALL = 1.7e9


def _result(index: int, detections: Sequence[tuple[str, float]]) -> FrameResult:
    rng = np.random.default_rng(index)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    frame = Frame(image=image, source_id="cam", sequence=index, timestamp=WALL + index, name=f"{index:06d}")
    boxes = np.tile(np.array([[10.0, 10.0, 60.0, 60.0]], dtype=np.float32), (len(detections), 1))
    dets = Detections.create(
        boxes, [s for _, s in detections], [LABELS.index(label) for label, _ in detections], LABELS
    )
    return FrameResult(frame, dets, "m", "cpu", 1.0)


def _harvester(tmp_path: Path, **settings: object) -> Harvester:
    return Harvester(HarvestSettings.model_validate({"min_free_mb": 0, **settings}), tmp_path)


def _keep(harvester: Harvester, folder: Path, result: FrameResult, now: float) -> bool:
    """Decide; when kept, write and record the frame's file as the writer would."""
    decision = harvester.decide(result, now)
    if decision.keep:
        image = folder / f"{result.frame.frame_id}.jpg"
        image.write_bytes(bytes(2000))
        harvester.confirm_evicted(harvester.record_kept(result.frame.frame_id, [image], now=WALL + now))
    return decision.keep


def test_every_detection_is_judged_not_only_the_best_one(tmp_path: Path) -> None:
    harvester = _harvester(tmp_path, policies=["uncertainty"], uncertainty={"max_score": 0.45})
    near = harvester.decide(_result(0, [("nozzle", 0.91), ("raft", 0.37)]), 0.0)
    assert near.keep and near.reasons == ("uncertainty",)
    assert [(t.label, round(t.score, 2)) for t in near.triggers] == [("raft", 0.37)]
    sure = harvester.decide(_result(1, [("nozzle", 0.91), ("raft", 0.86)]), 1.0)
    assert (sure.keep, sure.reasons, sure.triggers) == (False, ("no_reason",), ())
    assert not harvester.decide(_result(2, []), 2.0).keep
    # the band's ends count; just outside them does not
    assert harvester.decide(_result(3, [("raft", 0.45)]), 3.0).keep
    assert not harvester.decide(_result(4, [("raft", 0.46), ("nozzle", 0.29)]), 4.0).keep


def test_per_class_bands(tmp_path: Path) -> None:
    harvester = _harvester(
        tmp_path,
        policies=["uncertainty"],
        uncertainty={"min_score": 0.3, "max_score": 0.45, "classes": {"spaghetti": [0.2, 0.5]}},
    )
    cases = {
        ("spaghetti", 0.25): True,  # inside spaghetti's own band, below the default one
        ("spaghetti", 0.48): True,
        ("spaghetti", 0.55): False,
        ("person", 0.25): False,  # the default band for every other class
        ("person", 0.40): True,
    }
    for index, (detection, expected) in enumerate(cases.items()):
        assert harvester.decide(_result(index, [detection]), float(index)).keep is expected, detection


def test_a_cap_on_the_detections_reported_per_frame(tmp_path: Path) -> None:
    harvester = _harvester(
        tmp_path,
        policies=["uncertainty", "detection"],
        uncertainty={"max_reported": 2},
        detection={"labels": ["raft", "nozzle"], "min_score": 0.4, "max_reported": 1},
    )
    detections = [("raft", 0.55), ("raft", 0.31), ("nozzle", 0.95), ("person", 0.42), ("raft", 0.5)]
    decision = harvester.decide(_result(0, detections), 0.0)
    assert decision.reasons == ("uncertainty", "detection")  # in the order listed
    # uncertainty: the lowest scores first (nearest the detector's threshold); detection: the highest
    uncertain = [(t.label, round(t.score, 2)) for t in decision.triggers if t.policy == "uncertainty"]
    assert uncertain == [("raft", 0.31), ("person", 0.42)]
    detected = [t for t in decision.triggers if t.policy == "detection"]
    assert [(t.label, round(t.score, 2)) for t in detected] == [("nozzle", 0.95)]
    assert all(isinstance(t, Trigger) for t in decision.triggers)


def test_harvest_json_says_why_the_newest_kept_frames_were_kept(tmp_path: Path) -> None:
    harvester = _harvester(tmp_path, policies=["uncertainty", "detection"], report_frames=3,
                           detection={"labels": ["spaghetti"], "min_score": 0.7})  # fmt: skip
    frames = [
        [("nozzle", 0.9), ("raft", 0.35)],
        [("nozzle", 0.9), ("spaghetti", 0.8)],
        [("nozzle", 0.9)],
        [("spaghetti", 0.4)],
        [("raft", 0.33), ("spaghetti", 0.75)],
    ]
    for index, detections in enumerate(frames):
        _keep(harvester, tmp_path, _result(index, detections), float(index))
    harvester.write_summary(tmp_path / "harvest.json")
    summary = json.loads((tmp_path / "harvest.json").read_text())
    why = {f["frame_id"]: (f["reasons"], f["triggers"]) for f in summary["kept_frames"]}
    assert list(why) == ["cam_000004", "cam_000003", "cam_000001"], "the newest 3, newest first"
    assert why["cam_000004"] == (
        ["uncertainty", "detection"],
        [
            {"policy": "uncertainty", "label": "raft", "score": 0.33},
            {"policy": "detection", "label": "spaghetti", "score": 0.75},
        ],
    )
    assert why["cam_000003"] == (
        ["uncertainty"],
        [{"policy": "uncertainty", "label": "spaghetti", "score": 0.4}],
    )
    assert summary["kept_frames"][0]["kept_at"].endswith("Z")
    assert summary["frames"]["kept"] == 4
    harvester.close()
    # the reasons are stored with the frame: a restart still knows them
    again = _harvester(tmp_path, policies=["uncertainty"], report_frames=10)
    again.write_summary(tmp_path / "harvest.json")
    reopened = json.loads((tmp_path / "harvest.json").read_text())["kept_frames"]
    assert [f["frame_id"] for f in reopened] == ["cam_000004", "cam_000003", "cam_000001", "cam_000000"]
    assert reopened[-1]["triggers"] == [{"policy": "uncertainty", "label": "raft", "score": 0.35}]
    again.close()


def test_a_frame_an_alert_points_at_is_kept_and_counted_as_such(tmp_path: Path) -> None:
    harvester = _harvester(tmp_path, policies=["uncertainty", "interval"], interval={"interval_s": 60})
    assert _keep(harvester, tmp_path, _result(0, [("raft", 0.4)]), 0.0)
    vetoed = _result(1, [("spaghetti", 0.45)])  # the interval veto would drop it; an alert points at it
    decision = harvester.decide(vetoed, 1.0, alerted=True)
    assert (decision.keep, decision.reasons) == (True, ("alert",))
    image = tmp_path / "alert.jpg"
    image.write_bytes(bytes(100))
    harvester.record_kept(vetoed.frame.frame_id, [image])
    no_reason = _result(2, [("nozzle", 0.95)])
    assert harvester.decide(no_reason, 2.0, alerted=True).reasons == ("alert",)
    stats = harvester.stats()
    assert stats["policy_counts"]["alert"] == {"kept": 2}
    assert "interval" not in stats["policy_counts"], "the veto dropped nothing: the alert kept the frame"
    assert stats["policy_counts"]["uncertainty"] == {"fired": 2, "kept": 1}
    assert stats["labels"]["spaghetti"]["kept"] == 1, "the alert frame's labels, not (none)"
    assert "(none)" not in stats["labels"]
    frames = stats["frames"]
    assert (frames["seen"], frames["selected"], frames["kept"], frames["no_reason"], frames["vetoed"]) == (
        3,
        3,
        2,
        0,
        0,
    )


def test_frame_counts_add_up_with_the_gate_counts(tmp_path: Path) -> None:
    harvester = _harvester(
        tmp_path, policies=["uncertainty", "interval"], interval={"interval_s": 2}, min_free_mb=0
    )
    rng = np.random.default_rng(3)
    for index in range(60):
        detections = [("nozzle", 0.9)] + ([("raft", float(rng.uniform(0.3, 0.6)))] if index % 3 else [])
        _keep(harvester, tmp_path, _result(index, detections), float(index))
    harvester.count_gate({"enabled": True, "frames": 500, "inferred": 60, "skipped": 440,
                          "skipped_share": 0.88, "reasons": {"no_change": 440, "change": 60}})  # fmt: skip
    frames = harvester.stats()["frames"]
    assert frames["skipped_inference"] == 440
    assert frames["seen"] == 500
    parts = ("skipped_inference", "no_reason", "vetoed", "low_disk", "selected")
    assert sum(frames[p] for p in parts) == frames["seen"]
    assert frames["selected"] == frames["kept"] == len(harvester.store)
    assert "gate-skipped 440" in harvester.summary_line()
