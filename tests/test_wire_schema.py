"""The wire schema (docs/schema/detections.schema.json) against what the real agent publishes.

``edge-agent run`` detects with the print3d model on real frames (640x480 to 1920x1080, the two
large ones published resized to 1000 px) and publishes into a real Mosquitto; every
``detections`` and ``annotations/<frame_id>`` payload a subscriber receives must validate, the
annotation must describe the JPEG published beside it, and the receiver must accept it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest
import yaml

from agent.mqtt.schema import SCHEMA_ID
from agent.review.annotation import parse_annotation
from tests.mosquitto import MessageCollector, mosquitto  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parent.parent
SCHEMA_FILE = REPO / "docs" / "schema" / "detections.schema.json"
MAX_WIDTH = 1000


def load_schema() -> dict:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def test_the_schema_file_names_this_version_and_every_key_the_agent_writes():
    schema = load_schema()
    assert schema["properties"]["schema"]["const"] == SCHEMA_ID == schema["title"]
    assert set(schema["required"]) == set(schema["properties"])
    item = schema["properties"]["detections"]["items"]
    assert set(item["required"]) == set(item["properties"])
    doc = (REPO / "docs" / "mqtt.md").read_text()
    for key in [*schema["properties"], *item["properties"]]:
        assert f"`{key}`" in doc, f"docs/mqtt.md does not describe {key}"


def test_hostile_records_fail_the_schema_as_they_fail_the_receiver():
    validator = jsonschema.Draft202012Validator(load_schema())
    good = {
        "schema": SCHEMA_ID, "frame_id": "cam_f1", "device_id": "dev", "timestamp": "2026-11-22T02:06:31.123Z",
        "source": "cam", "sequence": 1, "model": "m", "runtime": "r", "inference_ms": 3.5, "width": 64,
        "height": 48, "skipped_inference": False, "kept": True, "top_score": 0.5,
        "detections": [{"label": "a", "class_id": 0, "score": 0.5, "box_xyxy": [1, 2, 3, 4],
                        "box_xyxy_norm": [0.1, 0.1, 0.2, 0.2]}],
    }  # fmt: skip
    assert list(validator.iter_errors(good)) == []
    for change in (
        {"schema": "edge-agent.detections/2"},
        {"frame_id": "-rf"},
        {"frame_id": "../x"},
        {"device_id": ".hidden"},
        {"width": 0},
        {"width": 64.5},
        {"timestamp": "2026-11-22 02:06:31"},
        {"detections": [{"label": "", "class_id": 0, "score": 0.5, "box_xyxy": [1, 2, 3, 4],
                         "box_xyxy_norm": [0.1, 0.1, 0.2, 0.2]}]},
        {"detections": [{"label": "a", "class_id": 0, "score": 1.5, "box_xyxy": [1, 2, 3, 4],
                         "box_xyxy_norm": [0.1, 0.1, 0.2, 0.2]}]},
        {"detections": [{"label": "a", "class_id": 0, "score": 0.5, "box_xyxy": [1, 2, 3],
                         "box_xyxy_norm": [0.1, 0.1, 0.2, 0.2]}]},
    ):  # fmt: skip
        assert list(validator.iter_errors({**good, **change})), change


@pytest.mark.timeout(240)
def test_real_agent_payloads_validate_and_annotations_match_their_jpeg(mosquitto, tmp_path, shared_dir):  # noqa: F811
    validator = jsonschema.Draft202012Validator(load_schema())
    broker = mosquitto()
    print3d = shared_dir / "models" / "print3d"
    frames = tmp_path / "frames"
    frames.mkdir()
    for image in sorted((print3d / "images").glob("*.jpg")):
        shutil.copy(image, frames / image.name)
    config = {
        "source": {"url": str(frames), "id": "cam"},
        "detector": {"model": str(print3d / "print3d_2020-10-23_ssd_uint8.tflite"), "score_threshold": 0.1},
        "output": {"dir": str(tmp_path / "data")},
        "mqtt": {"enabled": True, "host": broker.host, "port": broker.port, "device_id": "printer-1",
                 "frame_max_width_px": MAX_WIDTH},
    }  # fmt: skip
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(config))
    count = len(list(frames.glob("*.jpg")))
    with MessageCollector(broker.host, broker.port, ["edge-agent/printer-1/#"]) as collector:
        proc = subprocess.run(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(tmp_path / "agent.yaml")],
            capture_output=True, text=True, timeout=180, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
            check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert collector.wait_for(
            lambda _: len(collector.on_topic("edge-agent/printer-1/annotations/+")) >= count, 60
        )
    detections = {json.loads(m.payload)["frame_id"]: json.loads(m.payload) for m in collector.on_topic(
        "edge-agent/printer-1/detections")}  # fmt: skip
    annotations = {
        m.topic.rsplit("/", 1)[1]: m for m in collector.on_topic("edge-agent/printer-1/annotations/+")
    }
    jpegs = {
        m.topic.rsplit("/", 1)[1]: m.payload for m in collector.on_topic("edge-agent/printer-1/frames/+")
    }
    assert len(detections) == len(annotations) == len(jpegs) == count
    resized = boxes = 0
    for frame_id, message in annotations.items():
        record = json.loads(message.payload)
        for payload in (record, detections[frame_id]):
            errors = [e.message for e in validator.iter_errors(payload)]
            assert errors == [], (frame_id, errors)
        image = cv2.imdecode(np.frombuffer(jpegs[frame_id], np.uint8), cv2.IMREAD_COLOR)
        assert (record["width"], record["height"]) == (image.shape[1], image.shape[0]), frame_id
        full = detections[frame_id]
        assert record["width"] <= MAX_WIDTH and record["frame_id"] == frame_id
        assert [d["label"] for d in record["detections"]] == [d["label"] for d in full["detections"]]
        scale = np.array([record["width"] / full["width"], record["height"] / full["height"]] * 2)
        for ours, theirs in zip(record["detections"], full["detections"], strict=True):
            np.testing.assert_allclose(ours["box_xyxy"], np.array(theirs["box_xyxy"]) * scale, atol=0.02)
            assert ours["box_xyxy_norm"] == pytest.approx(theirs["box_xyxy_norm"], abs=2e-5)
        resized += record["width"] < full["width"]
        boxes += len(record["detections"])
        note = parse_annotation(
            message.payload, "printer-1", frame_id, max_side_px=8192, max_regions=1000, max_label_chars=100
        )
        assert len(note.labels) == len(record["detections"])
    assert resized == 2 and boxes > 0, (resized, boxes)


def test_the_review_doc_lists_every_drop_reason():
    from agent.review.checks import REASONS

    doc = (REPO / "docs" / "review.md").read_text()
    assert [r for r in REASONS if f"`{r}`" not in doc] == []
