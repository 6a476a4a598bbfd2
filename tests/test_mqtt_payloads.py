"""MQTT settings validation and the payloads the agent publishes (no broker needed)."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from agent.config.mqtt import MqttSettings, default_device_id
from agent.detections import Detections
from agent.encode import published_jpeg
from agent.errors import ConfigError
from agent.frames import Frame, FrameResult
from agent.mqtt.connection import build_tls_context
from agent.mqtt.homeassistant import discovery_messages
from agent.mqtt.messages import MessageClass
from agent.mqtt.publish_properties import PackedPublishProperties
from agent.mqtt.schema import SCHEMA_ID
from agent.mqtt.topics import (
    Topics,
    annotated_jpeg,
    annotation_message,
    detections_payload,
    frame_message,
)
from agent.naming import safe_name


def make_result(width: int = 200, height: int = 100, encoded: bytes | None = None, fmt: str = "jpg"):
    image = np.full((height, width, 3), 128, np.uint8)
    frame = Frame(image, "cam 0", 7, 1_700_000_000.25, "20231114T221320.250Z-000007", encoded, fmt)
    dets = Detections.create([[20, 10, 120, 60], [0, 0, 50, 50]], [0.9, 0.4], [0, 1], ["person", "dog"])
    return FrameResult(frame, dets, "ssd", "litert", 12.345)


def test_settings_defaults_work_without_a_broker():
    s = MqttSettings()
    assert s.enabled is False and s.protocol == "5" and s.effective_port == 1883
    assert s.device_id == default_device_id() == safe_name(s.device_id)
    assert s.effective_client_id == f"edge-agent-{s.device_id}"
    assert s.outbox.max_mb > 0 and s.outbox.inflight_max >= 1
    assert MqttSettings(ca_file="ca.pem").effective_port == 8883


@pytest.mark.parametrize(("given", "expected"), [(5, "5"), ("5", "5"), ("3.1.1", "3.1.1")])
def test_protocol_accepts_what_yaml_produces(given, expected):
    assert MqttSettings.model_validate({"protocol": given}).protocol == expected


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"protocol": 4}, "protocol"),
        ({"device_id": "my cam"}, "'my_cam'"),
        ({"topic_prefix": "a/#"}, "wildcards"),
        ({"password": "secret"}, "Extra inputs are not permitted"),
        ({"password_env": "A", "password_file": "b"}, "only one of password_env and password_file"),
        ({"key_file": "k.pem"}, "key_file needs cert_file"),
        ({"reconnect_min_s": 10, "reconnect_max_s": 1}, "reconnect_min_s"),
        ({"outbox": {"max_mb": 0}}, "greater than 0"),
    ],
)
def test_bad_settings_are_refused_with_a_reason(values, message):
    with pytest.raises(ValidationError, match=message):
        MqttSettings.model_validate(values)


def test_passwords_come_from_the_environment_or_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MQTT_PW_TEST", "s3cret")
    assert MqttSettings(password_env="MQTT_PW_TEST").read_password() == "s3cret"
    (tmp_path / "pw").write_text("from-file\nignored\n")
    assert MqttSettings(password_file=str(tmp_path / "pw")).read_password() == "from-file"
    assert MqttSettings().read_password() is None
    with pytest.raises(ConfigError, match="MQTT_PW_UNSET"):
        MqttSettings(password_env="MQTT_PW_UNSET").read_password()
    with pytest.raises(ConfigError, match="password_file"):
        MqttSettings(password_file=str(tmp_path / "missing")).read_password()


def test_missing_tls_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"mqtt\.ca_file .* does not exist"):
        build_tls_context(MqttSettings(ca_file=str(tmp_path / "nope.pem")))
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        build_tls_context(MqttSettings(ca_file=str(tmp_path / "bad.pem")))


def test_detections_payload_has_pixels_and_normalised_boxes():
    result = make_result()
    body = detections_payload(result, "dev1", kept=True)
    assert body["schema"] == SCHEMA_ID == "edge-agent.detections/1" and body["device_id"] == "dev1"
    assert body["frame_id"] == "cam_0_20231114T221320.250Z-000007"
    assert body["timestamp"] == "2023-11-14T22:13:20.250Z"
    assert body["source"] == "cam 0" and body["sequence"] == 7
    assert (body["model"], body["runtime"], body["inference_ms"]) == ("ssd", "litert", 12.35)
    assert (body["width"], body["height"], body["top_score"]) == (200, 100, 0.9)
    first, second = body["detections"]
    assert first == {
        "label": "person",
        "class_id": 0,
        "score": 0.9,
        "box_xyxy": [20.0, 10.0, 120.0, 60.0],
        "box_xyxy_norm": [0.1, 0.1, 0.6, 0.6],
    }
    assert second["label"] == "dog"
    json.dumps(body)  # plain JSON types only


def test_source_jpeg_passes_through_unless_it_must_shrink():
    raw = cv2.imencode(".jpg", np.full((100, 200, 3), 90, np.uint8))[1].tobytes()
    result = make_result(encoded=raw)
    same = published_jpeg(result.frame, None, 200, 50)
    assert same.data is raw and same.scale == 1.0
    assert published_jpeg(result.frame, None, 0, 50).data is raw

    small = published_jpeg(result.frame, None, 100, 80)
    assert (small.width, small.height, small.scale) == (100, 50, 0.5)
    assert cv2.imdecode(np.frombuffer(small.data, np.uint8), cv2.IMREAD_COLOR).shape == (50, 100, 3)

    png = cv2.imencode(".png", result.frame.image)[1].tobytes()
    from_png = published_jpeg(make_result(encoded=png, fmt="png").frame, None, 0, 80)
    assert from_png.data[:2] == b"\xff\xd8", "PNG sources are re-encoded as JPEG"


def test_frame_message_carries_metadata_and_expiry():
    result = make_result()
    topics = Topics("edge-agent", "dev1")
    encoded = published_jpeg(result.frame, None, 100, 80)
    message = frame_message(topics, result.frame, encoded, expiry_s=600)
    assert message.topic == "edge-agent/dev1/frames/cam_0_20231114T221320.250Z-000007"
    assert message.klass == MessageClass.FRAME and message.qos == 1 and message.expiry_s == 600
    props = dict(message.user_properties)
    assert props["width"] == "100" and props["original_width"] == "200" and props["source"] == "cam 0"
    assert frame_message(topics, result.frame, encoded, expiry_s=0).expiry_s is None


def test_annotation_is_the_detections_record_for_the_published_jpeg():
    """Same record as ``detections``; when the frame is published smaller, size and boxes follow it."""
    result = make_result()
    topics = Topics("edge-agent", "dev1")
    full = published_jpeg(result.frame, None, 0, 80)
    message = annotation_message(topics, result, full)
    assert message.topic == "edge-agent/dev1/annotations/cam_0_20231114T221320.250Z-000007"
    assert message.klass == MessageClass.ANNOTATION and message.content_type == "application/json"
    assert json.loads(message.payload) == detections_payload(result, "dev1", kept=True)

    half = json.loads(annotation_message(topics, result, published_jpeg(result.frame, None, 100, 80)).payload)
    assert (half["width"], half["height"]) == (100, 50)
    person, dog = half["detections"]
    assert person["box_xyxy"] == [10.0, 5.0, 60.0, 30.0] and dog["box_xyxy"] == [0.0, 0.0, 25.0, 25.0]
    assert person["box_xyxy_norm"] == [0.1, 0.1, 0.6, 0.6], "normalised boxes do not change"
    assert {k: v for k, v in half.items() if k not in ("width", "height", "detections")} == {
        k: v
        for k, v in detections_payload(result, "dev1", kept=True).items()
        if k not in ("width", "height", "detections")
    }


def test_boxes_are_clipped_to_the_image_and_empty_ones_left_out():
    boxes = Detections.create(
        [[-5, 10, 250, 60], [199.999, 0, 210, 50], [10, 10, 30, 30]], [0.9, 0.8, 0.3], [0, 1, 0], ["a", "b"]
    )
    result = dataclasses.replace(make_result(), detections=boxes)
    body = detections_payload(result, "dev1", kept=True)
    assert [d["box_xyxy"] for d in body["detections"]] == [[0.0, 10.0, 200.0, 60.0], [10.0, 10.0, 30.0, 30.0]]


def test_annotated_image_has_the_boxes_drawn():
    result = make_result()
    jpeg = annotated_jpeg(result, max_width_px=0, quality=95)
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (100, 200, 3)
    b, g, r = (int(v) for v in image[35, 20])  # on the left edge of the person box (red, blurred by JPEG)
    assert r > b + 20 and r > g + 20
    b, g, r = (int(v) for v in image[35, 160])  # outside every box: still grey
    assert abs(r - b) < 8
    assert (result.frame.image == 128).all(), "the frame itself is untouched"


def test_home_assistant_discovery_describes_one_device():
    settings = MqttSettings(device_id="pi.cam-1", home_assistant={"enabled": True})
    messages = dict(discovery_messages(settings, Topics("edge-agent", "pi.cam-1")))
    assert set(messages) == {
        "homeassistant/binary_sensor/pi_cam-1/failure/config",
        "homeassistant/binary_sensor/pi_cam-1/camera_view/config",
        "homeassistant/sensor/pi_cam-1/top_score/config",
        "homeassistant/sensor/pi_cam-1/fps/config",
        "homeassistant/sensor/pi_cam-1/inference_ms/config",
        "homeassistant/sensor/pi_cam-1/outbox_messages/config",
        "homeassistant/image/pi_cam-1/latest_frame/config",
    }
    configs = [json.loads(p) for p in messages.values()]
    assert len({c["device"]["identifiers"][0] for c in configs}) == 1
    assert all(c["availability"][0]["topic"] == "edge-agent/pi.cam-1/status" for c in configs)
    assert all("value == 'online'" in c["availability"][0]["value_template"] for c in configs)
    score = json.loads(messages["homeassistant/sensor/pi_cam-1/top_score/config"])
    assert score["state_topic"] == "edge-agent/pi.cam-1/detections"
    assert score["value_template"] == "{{ value_json.top_score }}"
    view = json.loads(messages["homeassistant/binary_sensor/pi_cam-1/camera_view/config"])
    assert view["state_topic"] == view["json_attributes_topic"] == "edge-agent/pi.cam-1/view"
    assert view["device_class"] == "problem"


def test_a_frame_decoded_reduced_is_published_sharp_and_agrees_with_its_annotation():
    from agent.sources.decode import DecodeHint, decode_for_detector

    rng = np.random.default_rng(5)
    picture = cv2.resize(rng.integers(0, 255, (180, 320, 3), dtype=np.uint8), (1281, 721))
    data = cv2.imencode(".jpg", picture)[1].tobytes()
    decoded = decode_for_detector(data, DecodeHint(96, 96, either=True))  # 1/8: 161 x 91
    assert decoded is not None and decoded[0].shape == (91, 161, 3)
    frame = Frame(decoded[0], "cam", 1, 1_700_000_000.0, "f1", data, "jpg", full_size=decoded[1])
    encoded = published_jpeg(frame, None, 1000, 90)
    jpeg = cv2.imdecode(np.frombuffer(encoded.data, np.uint8), cv2.IMREAD_COLOR)
    assert (encoded.width, encoded.height) == (jpeg.shape[1], jpeg.shape[0]) == (1000, 563)
    # decoded again from the original bytes, not blown up from the detector's 161 px
    expected = cv2.resize(picture, (1000, 563), interpolation=cv2.INTER_AREA)
    assert np.abs(jpeg.astype(int) - expected.astype(int)).mean() < 20  # blown up: ~37
    dets = Detections.create([[128.1, 72.1, 1281, 721]], [0.9], [0], ["person"])
    result = FrameResult(frame, dets, "ssd", "litert", 5.0)
    record = json.loads(annotation_message(Topics("edge-agent", "d"), result, encoded).payload)
    assert (record["width"], record["height"]) == (1000, 563)
    assert record["detections"][0]["box_xyxy"] == [100.0, 56.3, 1000.0, 563.0]
    assert published_jpeg(frame, None, 0, 90).data == data  # fits: the original bytes


@pytest.mark.parametrize(
    ("content_type", "utf8", "user_properties", "expiry_s"),
    [
        ("application/json", True, (), None),
        ("image/jpeg", False, (("frame_id", "cam-000042"), ("name", "Ünïcødé ✓"), ("k", "")), 86_400),
        (None, False, (), 0),
        (None, False, tuple((f"k{i}", "v" * 200) for i in range(40)), 2**32 - 1),  # length over 127
    ],
)
def test_our_packed_publish_properties_are_byte_for_byte_what_paho_packs(
    content_type, utf8, user_properties, expiry_s
):
    """paho's own Properties is the reference encoder for the MQTT 5 wire format."""
    reference = Properties(PacketTypes.PUBLISH)
    if utf8:
        reference.PayloadFormatIndicator = 1
    if expiry_s is not None:
        reference.MessageExpiryInterval = expiry_s
    if content_type:
        reference.ContentType = content_type
    for pair in user_properties:
        reference.UserProperty = pair
    ours = PackedPublishProperties(
        content_type=content_type, utf8_payload=utf8, user_properties=user_properties, expiry_s=expiry_s
    )
    assert ours.pack() == reference.pack()
    assert ours.isEmpty() == reference.isEmpty()


def test_packed_publish_properties_refuse_what_mqtt_cannot_carry():
    with pytest.raises(ValueError, match="65535"):
        PackedPublishProperties(user_properties=(("k", "x" * 70_000),))
    with pytest.raises(ValueError, match="expiry"):
        PackedPublishProperties(expiry_s=2**32)
