"""The wire format of detections: one neutral, versioned JSON record per frame.

The same record is the payload of ``<prefix>/<device>/detections`` (every processed frame, sizes
of the frame as captured) and of ``<prefix>/<device>/annotations/<frame_id>`` (each kept frame,
sizes of the JPEG published on ``frames/<frame_id>``, boxes scaled to it when the publisher
resized the frame). Only the review receiver turns it into VoTT.

``schema`` names the format and its major version. Adding a key keeps the version (consumers
ignore keys they do not know); removing or renaming a key, or changing its meaning or unit,
makes a new major version. The JSON Schema is ``docs/schema/detections.schema.json`` and
``docs/mqtt.md`` describes every key.
"""

from __future__ import annotations

from typing import Any

from agent.frames import FrameResult
from agent.utc import utc_iso

SCHEMA_ID = "edge-agent.detections/1"


def detections_record(
    result: FrameResult, device_id: str, kept: bool, size: tuple[int, int] | None = None
) -> dict[str, Any]:
    """The record of one processed frame; ``kept``: the frame is kept for labelling. ``size`` is ``(width, height)`` in pixels of the image the
    boxes must refer to (the published JPEG); default: the frame's own size. Boxes are scaled to
    that size, clipped to it, and boxes left without area are left out."""
    frame = result.frame
    width, height = size if size is not None else (frame.width, frame.height)
    dets = result.detections
    if (width, height) != (frame.width, frame.height):
        dets = dets.scaled(width / frame.width, height / frame.height)
    records = [
        r
        for r in dets.clipped(width, height).to_records(width, height)
        if r["box_xyxy"][2] > r["box_xyxy"][0] and r["box_xyxy"][3] > r["box_xyxy"][1]
    ]
    return {
        "schema": SCHEMA_ID,
        "frame_id": frame.frame_id,
        "device_id": device_id,
        "timestamp": utc_iso(frame.timestamp),
        "source": frame.source_id,
        "sequence": frame.sequence,
        "model": result.model,
        "runtime": result.runtime,
        "inference_ms": round(float(result.inference_ms), 2),
        "width": width,
        "height": height,
        "skipped_inference": result.skipped_inference,
        "kept": kept,
        "top_score": round(dets.top_score, 5),
        "detections": records,
    }
