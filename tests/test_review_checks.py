"""Checks on untrusted input (topics, ids, JPEGs, annotation JSON) and the review config."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.config.loading import load_yaml_model
from agent.config.review import ReviewSettings
from agent.detections import Detections
from agent.errors import ConfigError
from agent.mqtt.topics import scale_vott_asset
from agent.review.checks import REASONS, Rejected, check_jpeg, jpeg_info, parse_annotation, parse_topic
from agent.vott import annotation_json

REPO = Path(__file__).resolve().parent.parent
LIMITS = {"max_side_px": 4096, "max_regions": 50, "max_label_chars": 40}


def real_jpeg(width: int = 96, height: int = 64, **params: int) -> bytes:
    image = np.random.default_rng(1).integers(0, 255, (height, width, 3), dtype=np.uint8)
    flags = [k for kv in params.items() for k in (getattr(cv2, kv[0]), kv[1])]
    return cv2.imencode(".jpg", image, flags)[1].tobytes()


def with_declared_size(data: bytes, width: int, height: int) -> bytes:
    """The JPEG with its SOF0 marker claiming another size (the pixels are unchanged)."""
    at = data.index(b"\xff\xc0")
    out = bytearray(data)
    out[at + 5 : at + 7] = height.to_bytes(2, "big")
    out[at + 7 : at + 9] = width.to_bytes(2, "big")
    return bytes(out)


def reason_of(call, *args, **kwargs) -> str:
    with pytest.raises(Rejected) as exc:
        call(*args, **kwargs)
    assert exc.value.reason in REASONS
    return exc.value.reason


# ---- topics and ids ---------------------------------------------------------------------------
def test_topics_give_device_kind_and_frame_id():
    assert parse_topic("edge-agent/printer-1/frames/cam_0001", "edge-agent") == (
        "printer-1",
        "frames",
        "cam_0001",
    )
    assert parse_topic("site/a/edge/d.1/annotations/f_x.jpg", "site/a/edge") == (
        "d.1",
        "annotations",
        "f_x.jpg",
    )


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("edge-agent/dev/frames", "bad_topic"),
        ("edge-agent/dev/stats/x", "bad_topic"),
        ("other/dev/frames/x", "bad_topic"),
        ("edge-agent/dev/frames/x/y", "bad_topic"),
        ("edge-agent/../frames/x", "bad_device_id"),
        ("edge-agent/%2e%2e/frames/x", "bad_device_id"),
        ("edge-agent/.hidden/frames/x", "bad_device_id"),
        ("edge-agent//frames/x", "bad_device_id"),
        ("edge-agent/CON/frames/x", "bad_device_id"),
        ("edge-agent/dev./frames/x", "bad_device_id"),
        ("edge-agent/dév/frames/x", "bad_device_id"),
        ("edge-agent/" + "d" * 161 + "/frames/x", "bad_device_id"),
        ("edge-agent/dev/frames/..", "bad_frame_id"),
        ("edge-agent/dev/frames/%2e%2e%2fetc%2fpasswd", "bad_frame_id"),
        ("edge-agent/dev/frames/", "bad_frame_id"),
        ("edge-agent/dev/annotations/a b", "bad_frame_id"),
        ("edge-agent/dev/annotations/nul.jpg", "bad_frame_id"),
        ("edge-agent/dev/annotations/C:\\x", "bad_frame_id"),
    ],
)
def test_hostile_topics_are_refused(topic, reason):
    assert reason_of(parse_topic, topic, "edge-agent") == reason


# ---- JPEG -------------------------------------------------------------------------------------
def test_real_jpegs_pass_baseline_progressive_and_grey():
    assert check_jpeg(real_jpeg(), 4096).width == 96
    progressive = real_jpeg(IMWRITE_JPEG_PROGRESSIVE=1)
    info = check_jpeg(progressive, 4096)
    assert (info.width, info.height) == (96, 64)
    grey = cv2.imencode(".jpg", np.full((30, 40), 128, np.uint8))[1].tobytes()
    assert (check_jpeg(grey, 4096).width, check_jpeg(grey, 4096).height) == (40, 30)


def test_a_header_declaring_60000_px_is_refused_before_decoding():
    bomb = with_declared_size(real_jpeg(), 60000, 60000)
    assert jpeg_info(bomb).width == 60000
    assert reason_of(check_jpeg, bomb, 8192) == "image_too_large"
    assert reason_of(check_jpeg, with_declared_size(real_jpeg(), 96, 0), 8192) == "jpeg_malformed"


def test_truncated_and_foreign_payloads_are_refused():
    data = real_jpeg()
    assert reason_of(check_jpeg, data[: len(data) // 2], 4096) == "jpeg_truncated"
    assert reason_of(check_jpeg, data[:-2], 4096) == "jpeg_truncated"
    assert reason_of(check_jpeg, data[:40], 4096) == "jpeg_truncated"
    assert reason_of(check_jpeg, b"", 4096) == "not_jpeg"
    assert reason_of(check_jpeg, b"\x89PNG\r\n\x1a\n" + data, 4096) == "not_jpeg"
    assert reason_of(check_jpeg, b"\xff\xd8\xff\xd9", 4096) == "jpeg_malformed"
    assert reason_of(check_jpeg, b"\xff\xd8\xff\xe0\x00\x01", 4096) == "jpeg_malformed"
    assert reason_of(check_jpeg, b"\xff\xd8\xffA" + b"x" * 100, 4096) in ("jpeg_malformed", "jpeg_truncated")
    # A smaller declared size decodes (libjpeg only warns about the extra data): the frame is
    # stored as the size its header says, which is what VoTT will show.
    smaller = check_jpeg(with_declared_size(data, 48, 32), 4096)
    assert (smaller.width, smaller.height) == (48, 32)


def test_random_bytes_after_a_jpeg_start_never_crash():
    rng = np.random.default_rng(7)
    data = real_jpeg()
    for _ in range(300):
        cut = bytearray(data)
        for at in rng.integers(2, len(cut), 5):
            cut[at] = int(rng.integers(0, 256))
        try:
            check_jpeg(bytes(cut), 4096)
        except Rejected as exc:
            assert exc.reason in REASONS


# ---- annotations ------------------------------------------------------------------------------
def agent_annotation(frame_id: str = "f1", boxes=((10, 10, 50, 40),), labels=("spaghetti",)) -> dict:
    dets = Detections.create(list(boxes), [0.8] * len(boxes), list(range(len(boxes))), list(labels))
    payload = annotation_json(f"{frame_id}.jpg", 96, 64, dets)
    payload["frame_id"] = frame_id
    payload["model"] = "print3d.tflite"
    return payload


def parse(payload: dict | bytes, frame_id: str = "f1"):
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_annotation(raw, frame_id, **LIMITS)


def test_the_agents_annotation_is_accepted_with_its_scores():
    note = parse(agent_annotation(boxes=((10, 10, 50, 40), (0, 0, 96, 64)), labels=("a", "b")))
    assert (note.width, note.height, note.model) == (96, 64, "print3d.tflite")
    assert note.labels == ("a", "b")
    assert note.boxes == ((10, 10, 50, 40), (0, 0, 96, 64))
    assert note.scores == pytest.approx((0.8, 0.8))
    empty = parse(agent_annotation(boxes=np.zeros((0, 4)), labels=()))
    assert empty.labels == () and empty.boxes == ()


def test_an_annotation_scaled_with_a_resized_frame_is_accepted():
    """The agent rounds the scaled size and boxes separately; a box may stick out by a fraction."""
    payload = agent_annotation(boxes=((0.4, 0.4, 95.6, 63.6),), labels=("a",))
    scaled = scale_vott_asset(payload, 1 / 3)
    note = parse(scaled)
    assert (note.width, note.height) == (32, 21)
    assert all(0 <= v <= 32 for v in note.boxes[0])


def mutated(change) -> dict:
    payload = agent_annotation()
    change(payload)
    return payload


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe{}", "annotation_not_json"),
        (b"{not json", "annotation_not_json"),
        (b"[" * 5000 + b"]" * 5000, "annotation_not_json"),
        (b'{"asset": {"size": {"width": NaN, "height": 64}}, "regions": []}', "annotation_not_finite"),
        (
            b'{"asset": {"size": {"width": 96, "height": 64}}, "regions": [], "x": -Infinity}',
            "annotation_not_finite",
        ),
        (b'{"asset": {"size": {"width": 1e999, "height": 64}}, "regions": []}', "annotation_not_finite"),
        (
            b'{"asset": {"size": {"width": 1' + b"0" * 400 + b', "height": 64}}, "regions": []}',
            "annotation_not_finite",
        ),
        (b"[]", "annotation_invalid"),
        (b'"text"', "annotation_invalid"),
        (mutated(lambda p: p.pop("asset")), "annotation_invalid"),
        (mutated(lambda p: p["asset"].update(size=[96, 64])), "annotation_invalid"),
        (mutated(lambda p: p["asset"].update(size={"width": "96", "height": 64})), "annotation_bad_size"),
        (mutated(lambda p: p["asset"].update(size={"width": 0, "height": 64})), "annotation_bad_size"),
        (mutated(lambda p: p["asset"].update(size={"width": True, "height": 64})), "annotation_bad_size"),
        (mutated(lambda p: p["asset"].update(size={"width": 60000, "height": 60000})), "annotation_bad_size"),
        (mutated(lambda p: p.update(regions={"0": {}})), "annotation_invalid"),
        (mutated(lambda p: p["regions"][0].update(tags=[3])), "annotation_invalid"),
        (mutated(lambda p: p["regions"][0].update(tags="spaghetti")), "annotation_invalid"),
        (mutated(lambda p: p["regions"][0]["boundingBox"].update(left="10")), "annotation_invalid"),
        (mutated(lambda p: p["regions"][0]["boundingBox"].update(left=None)), "annotation_invalid"),
        (mutated(lambda p: p.update(regions=p["regions"] * 51)), "annotation_too_many_regions"),
        (mutated(lambda p: p["regions"][0].update(tags=["x" * 41])), "annotation_bad_label"),
        (mutated(lambda p: p["regions"][0].update(tags=["bad\nlabel"])), "annotation_bad_label"),
        (mutated(lambda p: p["regions"][0].update(tags=["   "])), "annotation_bad_label"),
        (mutated(lambda p: p["regions"][0]["boundingBox"].update(left=90)), "annotation_box_outside"),
        (mutated(lambda p: p["regions"][0]["boundingBox"].update(width=-5)), "annotation_box_outside"),
        (mutated(lambda p: p["regions"][0]["boundingBox"].update(top=-20)), "annotation_box_outside"),
        (mutated(lambda p: p["regions"][0]["boundingBox"].update(height=0)), "annotation_box_outside"),
        (mutated(lambda p: p["scores"][0].update(score=1.5)), "annotation_bad_score"),
        (mutated(lambda p: p["scores"][0].update(score="0.5")), "annotation_bad_score"),
        (mutated(lambda p: p.update(scores={"a": 1})), "annotation_invalid"),
        (mutated(lambda p: p.update(frame_id="/etc/passwd")), "annotation_frame_id_mismatch"),
        (mutated(lambda p: p.update(frame_id=["f1"])), "annotation_frame_id_mismatch"),
        (mutated(lambda p: p.update(model={"name": "x"})), "annotation_invalid"),
    ],
)
def test_malformed_annotations_are_refused_with_a_reason(payload, reason):
    assert reason_of(parse, payload) == reason


def test_paths_inside_an_annotation_are_ignored():
    """The receiver names files after the topic's frame id; asset paths and names in the payload
    never reach the disk."""
    payload = agent_annotation()
    payload["asset"].update(path="file:/etc/passwd", name="../../etc/passwd", id="../x")
    note = parse(payload)
    assert note.frame_id == "f1" and not hasattr(note, "path")


def test_numbers_stay_finite():
    note = parse(agent_annotation(boxes=((1e-9, 0, 96, 64),)))
    assert all(math.isfinite(v) for v in note.boxes[0])


# ---- config -----------------------------------------------------------------------------------
def test_the_example_config_loads_and_defaults_work(tmp_path):
    example = load_yaml_model(REPO / "configs" / "review.yaml", ReviewSettings)
    defaults = ReviewSettings()
    assert example.security_token == defaults.security_token == "edge-agent Token"
    assert example.mqtt.topic_filters() == ["edge-agent/+/frames/+", "edge-agent/+/annotations/+"]
    shared = ReviewSettings.model_validate({"mqtt": {"shared_group": "reviewers"}})
    assert shared.mqtt.topic_filters()[0] == "$share/reviewers/edge-agent/+/frames/+"
    assert defaults.mqtt.client_id.startswith("edge-agent-review-")


def test_config_mistakes_name_the_key_and_line(tmp_path):
    path = tmp_path / "review.yaml"
    path.write_text(
        "mqtt:\n  host: broker\n  shared_group: reviewers\n  protocol: 3.1.1\nbatch_by: week\nmax_jpg_mb: 3\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_yaml_model(path, ReviewSettings)
    text = str(exc.value)
    assert f"{path}:1: mqtt: " in text and "shared_group needs protocol '5'" in text
    assert f"{path}:5: batch_by:" in text
    assert f"{path}:6: max_jpg_mb: unknown key" in text
