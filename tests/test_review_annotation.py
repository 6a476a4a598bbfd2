"""The receiver's check of ``annotations/<frame_id>`` payloads (``edge-agent.detections/1``): the
agent's own records pass, hostile ones are refused with a reason, nothing non-finite gets through."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from agent.detections import Detections
from agent.frames import Frame, FrameResult
from agent.mqtt.schema import detections_record
from agent.review.annotation import parse_annotation
from agent.review.checks import REASONS, Rejected

LIMITS = {"max_side_px": 4096, "max_regions": 50, "max_label_chars": 40}


def agent_record(
    frame_id: str = "f1", boxes=((10, 10, 50, 40),), labels=("spaghetti",), size=(96, 64)
) -> dict:
    """What the agent publishes for a kept frame, built by the agent's own code."""
    frame = Frame(np.zeros((size[1], size[0], 3), np.uint8), "cam", 3, 1_790_000_000.0, frame_id)
    dets = Detections.create(
        list(boxes) or np.zeros((0, 4)), [0.8] * len(boxes), list(range(len(boxes))), list(labels)
    )
    record = detections_record(FrameResult(frame, dets, "print3d.tflite", "litert", 4.2), "dev", True)
    record["frame_id"] = frame_id  # the frame's id is <source>_<name>; tests name it directly
    return record


def parse(payload: dict | bytes, frame_id: str = "f1", device: str = "dev"):
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_annotation(raw, device, frame_id, **LIMITS)


def reason_of(payload, **kw) -> str:
    with pytest.raises(Rejected) as exc:
        parse(payload, **kw)
    assert exc.value.reason in REASONS
    return exc.value.reason


def test_the_agents_record_is_accepted_with_its_scores():
    note = parse(agent_record(boxes=((10, 10, 50, 40), (0, 0, 96, 64)), labels=("a", "b")))
    assert (note.width, note.height, note.model) == (96, 64, "print3d.tflite")
    assert note.labels == ("a", "b")
    assert note.boxes == ((10, 10, 50, 40), (0, 0, 96, 64))
    assert note.scores == pytest.approx((0.8, 0.8))
    empty = parse(agent_record(boxes=(), labels=()))
    assert empty.labels == () and empty.boxes == ()


def test_a_record_without_device_id_or_model_is_accepted():
    """Only the keys the receiver uses are required; other producers may leave the rest out."""
    record = {
        k: v
        for k, v in agent_record().items()
        if k in ("schema", "frame_id", "width", "height", "detections")
    }
    record["detections"] = [{k: d[k] for k in ("label", "score", "box_xyxy")} for d in record["detections"]]
    note = parse(record)
    assert note.model is None and note.labels == ("spaghetti",)


def test_a_box_a_rounding_step_outside_is_clipped():
    record = agent_record()
    record["detections"][0]["box_xyxy"] = [-0.2, 0, 96.3, 64.01]
    assert parse(record).boxes == ((0, 0, 96, 64),)


def mutated(change) -> dict:
    payload = agent_record()
    change(payload)
    return payload


def det(payload: dict) -> dict:
    return payload["detections"][0]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe{}", "annotation_not_json"),
        (b"{not json", "annotation_not_json"),
        (b"[" * 5000 + b"]" * 5000, "annotation_not_json"),
        (b'{"schema": "edge-agent.detections/1", "width": NaN}', "annotation_not_finite"),
        (b'{"schema": "edge-agent.detections/1", "x": -Infinity}', "annotation_not_finite"),
        (b'{"width": 1e999}', "annotation_not_finite"),
        (b'{"width": 1' + b"0" * 400 + b"}", "annotation_not_finite"),
        (b"[]", "annotation_invalid"),
        (b'"text"', "annotation_invalid"),
        (mutated(lambda p: p.pop("schema")), "annotation_unknown_schema"),
        (mutated(lambda p: p.update(schema="edge-agent.detections/2")), "annotation_unknown_schema"),
        (mutated(lambda p: p.update(schema=1)), "annotation_unknown_schema"),
        (mutated(lambda p: p.pop("frame_id")), "annotation_frame_id_mismatch"),
        (mutated(lambda p: p.update(frame_id="/etc/passwd")), "annotation_frame_id_mismatch"),
        (mutated(lambda p: p.update(frame_id=["f1"])), "annotation_frame_id_mismatch"),
        (mutated(lambda p: p.update(device_id="other-device")), "annotation_device_id_mismatch"),
        (mutated(lambda p: p.update(model={"name": "x"})), "annotation_invalid"),
        (mutated(lambda p: p.update(model="m\x00")), "annotation_invalid"),
        (mutated(lambda p: p.pop("width")), "annotation_bad_size"),
        (mutated(lambda p: p.update(width="96")), "annotation_bad_size"),
        (mutated(lambda p: p.update(width=96.5)), "annotation_bad_size"),
        (mutated(lambda p: p.update(width=True)), "annotation_bad_size"),
        (mutated(lambda p: p.update(width=0)), "annotation_bad_size"),
        (mutated(lambda p: p.update(width=60000, height=60000)), "annotation_bad_size"),
        (mutated(lambda p: p.pop("detections")), "annotation_invalid"),
        (mutated(lambda p: p.update(detections={"0": {}})), "annotation_invalid"),
        (mutated(lambda p: p.update(detections=["x"])), "annotation_invalid"),
        (mutated(lambda p: p.update(detections=p["detections"] * 51)), "annotation_too_many_regions"),
        (mutated(lambda p: det(p).update(label=3)), "annotation_bad_label"),
        (mutated(lambda p: det(p).update(label="")), "annotation_bad_label"),
        (mutated(lambda p: det(p).update(label="x" * 41)), "annotation_bad_label"),
        (mutated(lambda p: det(p).update(label="bad\nlabel")), "annotation_bad_label"),
        (mutated(lambda p: det(p).update(label="\u202eevil")), "annotation_bad_label"),
        (mutated(lambda p: det(p).update(label="   ")), "annotation_bad_label"),
        (mutated(lambda p: det(p).update(score=1.5)), "annotation_bad_score"),
        (mutated(lambda p: det(p).update(score="0.5")), "annotation_bad_score"),
        (mutated(lambda p: det(p).update(score=None)), "annotation_bad_score"),
        (mutated(lambda p: det(p).update(score=False)), "annotation_bad_score"),
        (mutated(lambda p: det(p).update(box_xyxy=[1, 2, 3])), "annotation_invalid"),
        (mutated(lambda p: det(p).update(box_xyxy={"x1": 1})), "annotation_invalid"),
        (mutated(lambda p: det(p).update(box_xyxy=[1, 2, "3", 4])), "annotation_invalid"),
        (mutated(lambda p: det(p).update(box_xyxy=[1, 2, True, 4])), "annotation_invalid"),
        (mutated(lambda p: det(p).update(box_xyxy=[90, 10, 200, 40])), "annotation_box_outside"),
        (mutated(lambda p: det(p).update(box_xyxy=[10, -20, 50, 40])), "annotation_box_outside"),
        (mutated(lambda p: det(p).update(box_xyxy=[50, 10, 10, 40])), "annotation_box_outside"),
        (mutated(lambda p: det(p).update(box_xyxy=[10, 10, 10, 40])), "annotation_box_outside"),
        (mutated(lambda p: det(p).update(box_xyxy=[96.2, 10, 96.4, 40])), "annotation_box_outside"),
        (mutated(lambda p: det(p).update(box_xyxy=[1e6, 10, 2e6, 40])), "annotation_box_outside"),
    ],
)
def test_malformed_annotations_are_refused_with_a_reason(payload, reason):
    assert reason_of(payload) == reason


def test_paths_and_unknown_keys_inside_a_record_are_ignored():
    """The receiver names files after the topic's frame id; nothing else in the payload reaches
    a path, and keys a newer agent might add do not matter."""
    payload = agent_record()
    payload.update(path="../../etc/passwd", image="/etc/shadow", extra={"nested": [1, 2]})
    note = parse(payload)
    assert note.frame_id == "f1" and note.to_json()["frame_id"] == "f1"


def test_numbers_stay_finite_and_stored_form_reads_back():
    note = parse(agent_record(boxes=((1e-9, 0, 96, 64),)))
    assert all(math.isfinite(v) for v in note.boxes[0])
    assert type(note).from_json(json.loads(json.dumps(note.to_json()))) == note
