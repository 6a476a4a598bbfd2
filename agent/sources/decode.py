"""Encoded image bytes (JPEG, PNG, BMP) to a BGR frame, refusing incomplete files.

libjpeg happily "decodes" a truncated JPEG into an image with a grey bottom; a file that is still
being written, or a stream part cut short, must not pass as a frame. So the bytes are checked
for their end marker before OpenCV decodes them.

A JPEG much larger than the detector's input can be decoded at 1/2, 1/4 or 1/8 of its size
(libjpeg scales in the DCT: 2-3x faster, 4-64x less memory) as long as the result still covers
the model input (``DecodeHint``); the frame then remembers its full size, and boxes are scaled
back to it.

JPEGs are decoded by simplejpeg (libjpeg-turbo's TurboJPEG API) when it is installed: the same
pixels as ``cv2.imdecode``, bit for bit, in about half the CPU time at 640x480 (OpenCV's wheel
spends the difference around the same library). What it does not cover goes to OpenCV: EXIF
orientations other than upright (OpenCV turns the picture), CMYK, 12-bit samples, and any file
libjpeg warns about (damaged data: OpenCV shows what it can, or refuses it).

One pixel cap (``agent.pixel_cap``) guards every decode: a JPEG, PNG or BMP whose header declares
more pixels is refused with ``ImageTooLarge`` before anything is allocated.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from agent.jpeg import JpegError, JpegInfo, jpeg_info
from agent.pixel_cap import check_size

try:
    import simplejpeg
except ImportError:  # no wheel for this platform (e.g. 32-bit ARM without piwheels): OpenCV decodes
    simplejpeg = None

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
    complete image (garbage, truncated, unsupported format). Raises ``ImageTooLarge`` past the cap."""
    fmt = sniff_format(data)
    if fmt is None or not is_complete(data, fmt):
        return None
    check_pixels(data)
    if fmt == "jpg":
        return _decode_jpeg(data, _header(data), 1)
    return _imdecode(data, cv2.IMREAD_COLOR)


def _header(data: bytes) -> JpegInfo | None:
    try:
        return jpeg_info(data)
    except JpegError:
        return None  # let OpenCV have its say on odd headers


def declared_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` a JPEG, PNG or BMP header declares, without decoding; None when it
    cannot be read (OpenCV then decides, under its own limit)."""
    fmt = sniff_format(data)
    if fmt == "jpg":
        info = _header(data)
        return None if info is None else (info.width, info.height)
    if fmt == "png" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if fmt == "bmp" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])  # a negative height: stored top-down
        return abs(int(width)), abs(int(height))
    return None


def check_pixels(data: bytes) -> None:
    """Raise ``ImageTooLarge`` when ``data``'s header declares more pixels than ``max_pixels()``."""
    size = declared_size(data)
    if size is not None:
        check_size(*size)


def _imdecode(data: bytes, flags: int) -> NDArray[np.uint8] | None:
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except (cv2.error, MemoryError):  # a header past OpenCV's limits, or no memory for the pixels
        return None
    if image is None or image.size == 0:
        return None
    return np.asarray(image, dtype=np.uint8)


def _decode_jpeg(data: bytes, info: JpegInfo | None, factor: int) -> NDArray[np.uint8] | None:
    """A complete JPEG decoded at ``1 / factor`` of its size (factor 1, 2, 4 or 8)."""
    if (
        simplejpeg is not None
        and info is not None
        and info.components in (1, 3)
        and info.precision == 8
        and info.orientation == 1
    ):
        try:
            # the scale libjpeg picks is the smallest of its M/8 factors reaching these sizes
            image = simplejpeg.decode_jpeg(
                data,
                "BGR",
                min_width=-(-info.width // factor),
                min_height=-(-info.height // factor),
                # Strict: after a warning, libjpeg-turbo reports even a fatal error as a warning
                # and the lenient mode returns a buffer it never wrote. Damaged frames that decode
                # with warnings (cheap USB cameras) go to OpenCV below, which shows them as before.
                strict=True,
            )
            return np.asarray(image, dtype=np.uint8)
        except ValueError:
            pass  # libjpeg warned or failed: OpenCV decides, as it did before simplejpeg
        except MemoryError:
            return None
    return _imdecode(data, cv2.IMREAD_COLOR if factor == 1 else _REDUCED_FLAGS[factor])


@dataclass(frozen=True, slots=True)
class DecodeHint:
    """The smallest image a detector can use without upscaling: ``width`` x ``height`` pixels on
    both sides (a stretched input), or on either side (``either``: a letterboxed input keeps the
    aspect ratio, so one side reaching the input size is enough)."""

    width: int
    height: int
    either: bool = False

    def covered_by(self, width: int, height: int) -> bool:
        """True when an image of ``width`` x ``height`` pixels is large enough."""
        if self.either:
            return width >= self.width or height >= self.height
        return width >= self.width and height >= self.height

    def reduction(self, width: int, height: int) -> int:
        """The largest JPEG scale-down (8, 4, 2 or 1) of a ``width`` x ``height`` image that is
        still large enough."""
        for factor in (8, 4, 2):
            if self.covered_by(-(-width // factor), -(-height // factor)):
                return factor
        return 1


_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def decode_for_detector(
    data: bytes, hint: DecodeHint
) -> tuple[NDArray[np.uint8], tuple[int, int] | None] | None:
    """``decode_image``, at reduced size when ``data`` is a JPEG larger than ``hint`` needs.

    Returns the image and, when it was reduced, the full ``(width, height)`` in pixels (after
    EXIF rotation, as OpenCV applies it); None when the bytes are not one complete image.
    Raises ``ImageTooLarge`` past the cap."""
    if sniff_format(data) != "jpg":
        whole = decode_image(data)
        return None if whole is None else (whole, None)
    if not is_complete(data, "jpg"):
        return None
    check_pixels(data)
    info = _header(data)
    factor = 1
    if info is not None and info.width and info.height:  # either way round: EXIF may turn the picture
        factor = min(hint.reduction(info.width, info.height), hint.reduction(info.height, info.width))
    image = _decode_jpeg(data, info, factor)
    if image is None or info is None or factor == 1:
        return None if image is None else (image, None)
    reduced = (-(-info.width // factor), -(-info.height // factor))
    shape = (int(image.shape[1]), int(image.shape[0]))
    if shape == reduced:
        full = (info.width, info.height)
    elif shape == reduced[::-1]:  # EXIF orientation turned it by 90 degrees
        full = (info.height, info.width)
    else:  # not what the header promised: decode it whole rather than guess the scale
        whole = _decode_jpeg(data, info, 1)
        return None if whole is None else (whole, None)
    return image, full
