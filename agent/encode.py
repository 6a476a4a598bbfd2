"""Encoding a frame for storage and publishing: once per kept frame.

A frame that came with its own JPEG or PNG bytes (folders, MJPEG streams, snapshots) is stored
and published as those bytes, never re-encoded. A frame that came decoded (a camera, a video) is
encoded once, as JPEG, by the stage that stores it; publishing reuses those bytes unless the
picture must be made smaller (``mqtt.frame_max_width_px``), the only case of a second encode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
from numpy.typing import NDArray

from agent.errors import UserError
from agent.frames import Frame
from agent.sources.decode import decode_image


@dataclass(frozen=True, slots=True)
class EncodedImage:
    """A frame's picture as file bytes: ``format`` ``jpg`` or ``png``, ``width`` x ``height``
    pixels, and ``scale`` = width / the frame's full width (1.0 unless resized)."""

    data: bytes
    format: str
    width: int
    height: int
    scale: float = 1.0

    @property
    def is_jpeg(self) -> bool:
        """True for JPEG bytes."""
        return self.format in ("jpg", "jpeg")


def encode_jpeg(image: NDArray[Any], quality: int, what: str) -> bytes:
    """``image`` (BGR) as JPEG of ``quality`` (1-100); ``UserError`` naming ``what`` if OpenCV fails."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise UserError(f"cannot encode {what} as JPEG")
    return bytes(buf.tobytes())


def stored_image(frame: Frame, jpeg_quality: int) -> EncodedImage:
    """The bytes to store for a frame: the source's own when it had them, else a JPEG of
    ``jpeg_quality`` (10-100) of the full frame."""
    if frame.encoded is not None:
        return EncodedImage(frame.encoded, frame.encoded_format, frame.width, frame.height)
    data = encode_jpeg(_full_picture(frame), jpeg_quality, f"frame {frame.frame_id}")
    return EncodedImage(data, "jpg", frame.width, frame.height)


def published_jpeg(
    frame: Frame, stored: EncodedImage | None, max_width_px: int, quality: int
) -> EncodedImage:
    """The frame as a JPEG no wider than ``max_width_px`` (0: any width): the stored bytes (or the
    source's own) when they are a JPEG that fits, else the picture resized with area interpolation
    and encoded at ``quality`` (1-100)."""
    fits = max_width_px <= 0 or frame.width <= max_width_px
    if stored is None and frame.encoded is not None:
        stored = EncodedImage(frame.encoded, frame.encoded_format, frame.width, frame.height)
    if fits and stored is not None and stored.is_jpeg:
        return stored
    image, scale = fit_width(frame, max_width_px)
    data = encode_jpeg(image, quality, f"frame {frame.frame_id}")
    return EncodedImage(data, "jpg", int(image.shape[1]), int(image.shape[0]), scale)


def fit_width(frame: Frame, max_width_px: int) -> tuple[NDArray[Any], float]:
    """The frame's picture no wider than ``max_width_px`` (0: full width) and its scale relative
    to the full frame. The size is computed from the full frame, so that picture and boxes agree
    to the pixel; a frame decoded at reduced size for the detector is decoded again, whole, when
    the reduced picture is smaller than that."""
    out_w = frame.width if max_width_px <= 0 else min(frame.width, max_width_px)
    scale = out_w / frame.width
    size = (out_w, max(1, round(frame.height * scale)))
    image = _full_picture(frame) if frame.image.shape[1] < out_w else frame.image
    if (image.shape[1], image.shape[0]) != size:
        shrink = image.shape[1] > out_w
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return image, scale


def _full_picture(frame: Frame) -> NDArray[Any]:
    """The frame's picture at full size (decoded again when it was decoded reduced)."""
    if frame.full_size is not None and frame.encoded is not None:
        whole = decode_image(frame.encoded)
        if whole is not None:
            return whole
    return frame.image
