"""Checks on untrusted input: topic levels, ids and JPEG frames (annotations: ``annotation.py``).

Every check raises ``Rejected(reason, detail)``: ``reason`` is one of the short names in
``REASONS`` (counted in the receiver's stats), ``detail`` says what exactly was wrong (logged).
Sizes are checked by the caller before anything here parses a payload; a JPEG's declared
width and height are read from its SOF marker and capped before OpenCV decodes it.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import cv2
import numpy as np

from agent.config.review import ReviewSettings
from agent.jpeg import JpegError, JpegInfo, jpeg_info

MAX_DEVICE_ID_CHARS = 64  # the agent's mqtt.device_id allows as many
MAX_FRAME_ID_CHARS = 160  # the agent's frame ids are at most this long

# Why a message was dropped; the receiver's stats count each of these.
REASONS: dict[str, str] = {
    "bad_topic": "topic is not <prefix>/<device>/frames|annotations/<frame_id>",
    "bad_device_id": f"device id is not 1-{MAX_DEVICE_ID_CHARS} of A-Z a-z 0-9 . _ - (no leading . or -)",
    "bad_frame_id": f"frame id is not 1-{MAX_FRAME_ID_CHARS} of A-Z a-z 0-9 . _ - (no leading . or -)",
    "too_many_devices": "a new device over max_devices",
    "frame_too_large": "frame payload over max_jpeg_mb",
    "not_jpeg": "frame payload does not start like a JPEG",
    "jpeg_malformed": "JPEG markers are malformed or declare no size",
    "jpeg_truncated": "JPEG data ends before its end-of-image marker",
    "image_too_large": "JPEG declares a side over max_image_px or more than max_image_mpx",
    "jpeg_undecodable": "OpenCV cannot decode the JPEG",
    "frame_id_reused": "a frame id already stored with other bytes (the first frame is kept)",
    "annotation_too_large": "annotation payload over max_annotation_kb",
    "annotation_not_json": "annotation is not UTF-8 JSON",
    "annotation_not_finite": "annotation holds NaN, Infinity or an out-of-range number",
    "annotation_unknown_schema": "annotation's schema is not edge-agent.detections/1",
    "annotation_invalid": "annotation lacks a key of the schema or has a wrong type",
    "annotation_frame_id_mismatch": "annotation's frame_id differs from its topic",
    "annotation_device_id_mismatch": "annotation's device_id differs from its topic",
    "annotation_bad_size": "annotation's image size is not 1..max_image_px",
    "annotation_too_many_regions": "annotation has more than max_regions detections",
    "annotation_bad_label": "a label is empty, too long or has control characters",
    "annotation_box_outside": "a box is empty or outside the image",
    "annotation_bad_score": "a score is not a number in [0, 1]",
    "annotation_size_mismatch": "annotation's image size differs from its frame's JPEG",
    "batch_closed": "the frame is in a closed batch, which is never modified",
    "disk_full": "less than min_free_mb free on the disk of root",
    "path_outside_root": "a path would leave root",
    "write_failed": "writing to disk failed",
    "overloaded": "a QoS 0 message while the queue is full",
    "internal_error": "an unexpected error (a bug; see the traceback in the log)",
}

_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_DECODING = threading.Lock()
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"COM{i}" for i in range(1, 10)} | {f"LPT{i}" for i in range(1, 10)}
)


class Rejected(Exception):
    """A message that must be dropped: ``reason`` (a key of ``REASONS``) and a human ``detail``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------------------------
# Topics and ids
# --------------------------------------------------------------------------------------------
def id_problem(value: str, *, folder: bool = False) -> str | None:
    """Why ``value`` cannot be a frame id (a file name stem) or, with ``folder``, a device id (a
    folder name), on the receiver and on the reviewer's machine (possibly Windows); None when it
    can. Ids are ASCII letters, digits, ``.``, ``_`` and ``-``, not starting with ``.`` (hidden
    files, ``..``) or ``-`` (read as an option by shell commands), at most 64 characters for a
    device and 160 for a frame."""
    cap = MAX_DEVICE_ID_CHARS if folder else MAX_FRAME_ID_CHARS
    if not 0 < len(value) <= cap:
        return f"must be 1-{cap} characters"
    if value[0] in ".-":
        return f"must not start with {value[0]!r}"
    if not _ID.fullmatch(value):
        return "must be characters from A-Z a-z 0-9 . _ -"
    if folder and value.endswith("."):
        return "must not end with a dot (Windows drops it from folder names)"
    if value.split(".")[0].upper() in _WINDOWS_RESERVED:
        return "is a reserved device name on Windows"
    return None


def check_free_space(root: Path, min_free_mb: float) -> None:
    """``Rejected("disk_full")`` when the file system of ``root`` has less than ``min_free_mb`` free."""
    if min_free_mb <= 0:
        return
    stat = os.statvfs(root)
    free_mb = stat.f_bavail * stat.f_frsize / (1024 * 1024)
    if free_mb < min_free_mb:
        raise Rejected("disk_full", f"{free_mb:.0f} MB free under {root}, min_free_mb is {min_free_mb:g}")


def parse_topic(topic: str, prefix: str) -> tuple[str, str, str]:
    """``(device_id, kind, frame_id)`` of ``<prefix>/<device_id>/<kind>/<frame_id>`` with ``kind``
    ``frames`` or ``annotations``; ids are checked with ``id_problem``."""
    head = prefix + "/"
    rest = topic[len(head) :].split("/") if topic.startswith(head) else []
    if len(rest) != 3 or rest[1] not in ("frames", "annotations"):
        raise Rejected("bad_topic", f"unexpected topic {shown(topic)}")
    device, kind, frame_id = rest
    problem = id_problem(device, folder=True)
    if problem:
        raise Rejected("bad_device_id", f"device id {shown(device)} {problem}")
    problem = id_problem(frame_id)
    if problem:
        raise Rejected("bad_frame_id", f"frame id {shown(frame_id)} {problem}")
    return device, kind, frame_id


def check_size(
    kind: str, payload: bytes | bytearray, oversized_prefix: bytes | None, settings: ReviewSettings
) -> None:
    """Refuse a ``frames`` payload over ``max_jpeg_mb`` or an ``annotations`` one over
    ``max_annotation_kb``; ``oversized_prefix`` marks a payload the socket guard cut (its size
    follows the prefix)."""
    s = settings
    oversized = oversized_prefix is not None and payload.startswith(oversized_prefix)
    size = (
        int(payload[len(oversized_prefix) :]) if oversized and oversized_prefix is not None else len(payload)
    )
    if kind == "frames" and (oversized or size > s.max_jpeg_bytes):
        raise Rejected("frame_too_large", f"{size} bytes, max_jpeg_mb is {s.max_jpeg_mb:g}")
    if kind == "annotations" and (oversized or size > s.max_annotation_bytes):
        raise Rejected("annotation_too_large", f"{size} bytes, max_annotation_kb is {s.max_annotation_kb:g}")


def shown(text: str, limit: int = 80) -> str:
    """``text`` safe to log: repr (no raw control characters), cut to ``limit`` characters."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


# --------------------------------------------------------------------------------------------
# JPEG
# --------------------------------------------------------------------------------------------
def untrusted_jpeg_info(data: bytes) -> JpegInfo:
    """``agent.jpeg.jpeg_info`` for an untrusted payload: a bad header is ``Rejected``."""
    try:
        return jpeg_info(data)
    except JpegError as exc:
        raise Rejected(exc.reason, exc.detail) from None


def check_jpeg(data: bytes, max_side_px: int, max_pixels: int | None = None) -> JpegInfo:
    """Check an untrusted JPEG: headers (``untrusted_jpeg_info``), declared size within ``max_side_px``
    per side and ``max_pixels`` in all BEFORE decoding, an end-of-image marker after the scan
    data, and a decode by OpenCV at 1/8 scale (every entropy-coded block is still read, for a
    64th of the pixels' memory and about a third of the time) giving the declared size.
    Returns the size."""
    info = untrusted_jpeg_info(data)
    if info.width == 0 or info.height == 0:
        raise Rejected("jpeg_malformed", f"JPEG declares a {info.width}x{info.height} image")
    if info.width > max_side_px or info.height > max_side_px:
        raise Rejected(
            "image_too_large",
            f"JPEG declares {info.width}x{info.height} px, over max_image_px {max_side_px}",
        )
    if max_pixels is not None and info.width * info.height > max_pixels:
        raise Rejected(
            "image_too_large",
            f"JPEG declares {info.width}x{info.height} px, over max_image_mpx {max_pixels / 1e6:g}",
        )
    # Inside entropy-coded data 0xFF is always followed by 0x00 or a restart marker, so an
    # end-of-image marker after the first scan means the data was not cut short.
    if data.find(b"\xff\xd9", info.scan_offset) < 0:
        raise Rejected("jpeg_truncated", "no end-of-image marker after the image data")
    flags = cv2.IMREAD_REDUCED_GRAYSCALE_8 | cv2.IMREAD_IGNORE_ORIENTATION
    with _DECODING:  # a progressive JPEG needs ~3 bytes a pixel while it decodes: one at a time
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise Rejected("jpeg_undecodable", "OpenCV could not decode the JPEG")
    expected = (-(-info.height // 8), -(-info.width // 8))
    if image.shape[:2] != expected:
        raise Rejected(
            "jpeg_undecodable",
            f"decoded {image.shape[1] * 8}x{image.shape[0] * 8} px, headers declare {info.width}x{info.height}",
        )
    return info
