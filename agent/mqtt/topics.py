"""Topic names and message payloads: what the agent publishes, byte for byte.

All topics live under ``<prefix>/<device_id>/`` so a broker ACL (``pattern write <prefix>/%u/#``)
or the TLS certificate's CN keeps devices apart:

- ``status``: ``online`` / ``offline`` (last will) / ``stopped``, retained.
- ``detections``: JSON per processed frame, QoS 1, through the outbox.
- ``frames/<frame_id>``: JPEG bytes, QoS 1, outbox, MQTT 5 content type, user properties and expiry.
- ``annotations/<frame_id>``: the same record as ``detections`` for the published JPEG, QoS 1, outbox.
- ``alerts``: JSON, QoS 1, outbox (sent before anything else waiting).
- ``stats``: JSON, retained, latest value only. ``failure``: ``ON``/``OFF``, retained.
- ``view``: JSON, retained: the latest view event (the camera sees the print or not).
- ``image``: the latest kept frame with its boxes drawn (JPEG), retained, for Home Assistant.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from agent.encode import EncodedImage, encode_jpeg, fit_width
from agent.frames import Frame, FrameResult
from agent.mqtt.messages import Message, MessageClass
from agent.mqtt.schema import detections_record
from agent.utc import utc_iso

ONLINE = "online"
OFFLINE = "offline"
STOPPED = "stopped"
JSON_TYPE = "application/json"
JPEG_TYPE = "image/jpeg"


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic names of one device."""

    prefix: str
    device_id: str

    @property
    def base(self) -> str:
        """``<prefix>/<device_id>``."""
        return f"{self.prefix}/{self.device_id}"

    @property
    def status(self) -> str:
        """Availability: ``online`` / ``offline`` / ``stopped`` (retained)."""
        return f"{self.base}/status"

    @property
    def detections(self) -> str:
        """One JSON message per processed frame."""
        return f"{self.base}/detections"

    @property
    def alerts(self) -> str:
        """Alert events (JSON)."""
        return f"{self.base}/alerts"

    @property
    def stats(self) -> str:
        """Latest pipeline and MQTT statistics (retained JSON)."""
        return f"{self.base}/stats"

    @property
    def failure(self) -> str:
        """Latest failure state ``ON`` / ``OFF`` (retained), the Home Assistant binary sensor."""
        return f"{self.base}/failure"

    @property
    def view(self) -> str:
        """Whether the camera sees the print (retained JSON: ``blocked``, ``level``, ``reason``)."""
        return f"{self.base}/view"

    @property
    def image(self) -> str:
        """Latest kept frame with boxes drawn (retained JPEG), the Home Assistant image."""
        return f"{self.base}/image"

    def frame(self, frame_id: str) -> str:
        """The JPEG of one kept frame."""
        return f"{self.base}/frames/{frame_id}"

    def annotation(self, frame_id: str) -> str:
        """The detections record of one kept frame, for its published JPEG."""
        return f"{self.base}/annotations/{frame_id}"


def json_bytes(obj: Any) -> bytes:
    """Compact UTF-8 JSON; numpy scalars and arrays become plain numbers and lists."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=_json_default).encode("utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def detections_payload(result: FrameResult, device_id: str, kept: bool) -> dict[str, Any]:
    """The ``detections`` JSON for one processed frame: the wire record (``agent.mqtt.schema``) with
    the frame's own size (boxes in pixels and normalised to [0, 1]); ``kept``: its picture is
    published too."""
    return detections_record(result, device_id, kept)


def detections_message(topics: Topics, result: FrameResult, kept: bool) -> Message:
    """The outbox message carrying ``detections_payload``."""
    frame_id = result.frame.frame_id
    return Message(
        topic=topics.detections,
        payload=json_bytes(detections_payload(result, topics.device_id, kept)),
        klass=MessageClass.DETECTION,
        content_type=JSON_TYPE,
        user_properties=(("frame_id", frame_id),),
        frame_id=frame_id,
    )


def frame_message(
    topics: Topics, frame: Frame, encoded: EncodedImage, expiry_s: int, payload_file: str | None = None
) -> Message:
    """The outbox message carrying one frame's JPEG; metadata in MQTT 5 user properties.
    ``payload_file``: a file holding exactly ``encoded.jpeg`` (the outbox may link to it)."""
    frame_id = frame.frame_id
    return Message(
        topic=topics.frame(frame_id),
        payload=encoded.data,
        klass=MessageClass.FRAME,
        content_type=JPEG_TYPE,
        user_properties=(
            ("frame_id", frame_id),
            ("device_id", topics.device_id),
            ("source", frame.source_id),
            ("name", frame.name),
            ("timestamp", utc_iso(frame.timestamp)),
            ("width", str(encoded.width)),
            ("height", str(encoded.height)),
            ("original_width", str(frame.width)),
            ("original_height", str(frame.height)),
        ),
        expiry_s=expiry_s or None,
        frame_id=frame_id,
        payload_file=payload_file,
    )


def annotation_message(topics: Topics, result: FrameResult, encoded: EncodedImage) -> Message:
    """The outbox message carrying a kept frame's annotation: the wire record for the published
    JPEG (``encoded``), its boxes scaled when the frame was resized."""
    frame_id = result.frame.frame_id
    record = detections_record(result, topics.device_id, True, (encoded.width, encoded.height))
    return Message(
        topic=topics.annotation(frame_id),
        payload=json_bytes(record),
        klass=MessageClass.ANNOTATION,
        content_type=JSON_TYPE,
        user_properties=(("frame_id", frame_id),),
        frame_id=frame_id,
    )


def alert_message(topics: Topics, payload: Mapping[str, Any], now: float | None = None) -> Message:
    """The outbox message carrying an alert; ``device_id`` and ``timestamp`` are added when absent."""
    body = dict(payload)
    body.setdefault("device_id", topics.device_id)
    body.setdefault("timestamp", utc_iso(time.time() if now is None else now))
    frame_id = body.get("frame_id")
    return Message(
        topic=topics.alerts,
        payload=json_bytes(body),
        klass=MessageClass.ALERT,
        content_type=JSON_TYPE,
        frame_id=frame_id if isinstance(frame_id, str) else None,
    )


def stats_payload(device_id: str, stats: Mapping[str, Any], mqtt_stats: Mapping[str, Any]) -> bytes:
    """The retained ``stats`` JSON: the pipeline's figures plus ``mqtt`` (outbox and connection)."""
    body = dict(stats)
    body.setdefault("device_id", device_id)
    body.setdefault("timestamp", utc_iso(time.time()))
    body["mqtt"] = dict(mqtt_stats)
    return json_bytes(body)


def annotated_jpeg(result: FrameResult, max_width_px: int, quality: int) -> bytes:
    """The frame with its detections drawn (box, label, score), as JPEG no wider than ``max_width_px``."""
    frame = result.frame
    dets = result.detections
    image, scale = fit_width(frame, max_width_px)
    if image is frame.image:
        image = image.copy()
    thickness = max(1, round(image.shape[1] / 400))
    boxes = np.round(dets.xyxy * scale).astype(np.int32).tolist()
    names = dets.label_names()
    scores = dets.score.tolist()
    # One rectangle per detection: drawing is inherently per box, and this runs once per kept frame.
    for (x1, y1, x2, y2), name, score in zip(boxes, names, scores, strict=True):
        cv2.rectangle(image, (x1, y1), (x2, y2), (0, 0, 255), thickness)
        cv2.putText(
            image,
            f"{name} {score:.2f}",
            (x1, max(12, y1 - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thickness,
            (0, 0, 255),
            thickness,
            cv2.LINE_AA,
        )
    return encode_jpeg(image, quality, f"frame {frame.frame_id} with its boxes")
