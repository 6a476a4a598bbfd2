"""Encoded image bytes (JPEG, PNG, BMP) to a BGR frame, refusing incomplete files.

libjpeg happily "decodes" a truncated JPEG into an image with a grey bottom; a file that is still
being written, or a stream part cut short, must not pass as a frame. So the bytes are checked
for their end marker before OpenCV decodes them.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xae\x42\x60\x82"


def sniff_format(data: bytes) -> str | None:
    """``"jpg"``, ``"png"`` or ``"bmp"`` from the leading magic bytes, else None."""
    if data.startswith(_JPEG_SOI):
        return "jpg"
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(b"BM") and len(data) >= 26:
        return "bmp"
    return None


def is_complete(data: bytes, fmt: str) -> bool:
    """True when ``data`` ends where an image of format ``fmt`` must end."""
    if fmt == "jpg":
        # Streams and some cameras pad after the end marker with CR/LF or zero bytes.
        return data.rstrip(b"\r\n\x00 ").endswith(_JPEG_EOI)
    if fmt == "png":
        return _PNG_IEND in data[-64:]
    if fmt == "bmp":
        return int.from_bytes(data[2:6], "little") <= len(data)
    return False


def decode_image(data: bytes) -> NDArray[np.uint8] | None:
    """``H x W x 3`` BGR uint8 image from JPEG/PNG/BMP bytes; None when the bytes are not one
    complete image (garbage, truncated, unsupported format)."""
    fmt = sniff_format(data)
    if fmt is None or not is_complete(data, fmt):
        return None
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        return None
    return np.asarray(image, dtype=np.uint8)
