"""Checks on untrusted input (topics, ids, JPEGs) and the review config (annotations:
test_review_annotation.py)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.config.loading import load_yaml_model
from agent.config.review import ReviewSettings
from agent.errors import ConfigError
from agent.review.checks import REASONS, Rejected, check_jpeg, id_problem, jpeg_info, parse_topic

REPO = Path(__file__).resolve().parent.parent


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
        ("edge-agent/" + "d" * 65 + "/frames/x", "bad_device_id"),
        ("edge-agent/-rf/frames/x", "bad_device_id"),
        ("edge-agent/dev/frames/-rf", "bad_frame_id"),
        ("edge-agent/dev/frames/" + "f" * 161, "bad_frame_id"),
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


def test_id_rules_are_those_documented():
    """Devices 1-64 characters, frames 1-160, of A-Z a-z 0-9 . _ -, not starting with . or -."""
    assert id_problem("d" * 64, folder=True) is None and id_problem("f" * 160) is None
    assert id_problem("d" * 65, folder=True) == "must be 1-64 characters"
    assert id_problem("f" * 161) == "must be 1-160 characters"
    assert id_problem("-x") == "must not start with '-'" and id_problem(".x") == "must not start with '.'"
    assert id_problem("_x.y-z") is None and id_problem("x-") is None


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
