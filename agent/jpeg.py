"""JPEG headers read without decoding: the frame size, checked before anything is allocated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# SOF0-SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class JpegError(ValueError):
    """Headers that are not a JPEG's: ``reason`` is ``not_jpeg``, ``jpeg_malformed`` or
    ``jpeg_truncated``; ``detail`` says where."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class JpegInfo:
    """What a JPEG's headers declare: size in pixels, where the first scan's data starts, the
    number of colour components (1 grey, 3 colour, 4 CMYK), the sample precision in bits and the
    EXIF orientation as OpenCV reads it (1 upright or no EXIF, 2-8 turned or mirrored, None when
    the first APP1 segment is not EXIF that can be read, e.g. XMP)."""

    width: int
    height: int
    scan_offset: int
    components: int
    precision: int
    orientation: int | None


def jpeg_info(data: bytes) -> JpegInfo:
    """Read the frame size from the SOF marker by walking the marker segments (no decoding).

    Raises ``JpegError`` with ``not_jpeg``, ``jpeg_malformed`` or ``jpeg_truncated``."""
    if data[:3] != b"\xff\xd8\xff":
        raise JpegError("not_jpeg", "payload does not start with a JPEG start-of-image marker")
    size: tuple[int, int] | None = None
    components, precision = 3, 8
    orientation: int | None = 1
    seen_app1 = False
    i = 2
    while True:
        marker, i, length = _next_segment(data, i)
        if length == 0:  # standalone markers carry no length
            continue
        if marker in _SOF_MARKERS:
            if length < 8:
                raise JpegError("jpeg_malformed", "start-of-frame segment is too short")
            precision = data[i + 2]
            height = int.from_bytes(data[i + 3 : i + 5], "big")
            width = int.from_bytes(data[i + 5 : i + 7], "big")
            components = data[i + 7]
            size = (width, height)
        if marker == 0xE1 and not seen_app1:
            # As OpenCV reads it: the first APP1 only, its TIFF block after 6 bytes ("Exif\0\0",
            # not checked); an orientation OpenCV might read differently comes out as None.
            seen_app1 = True
            orientation = _exif_orientation(bytes(data[i + 8 : i + length]))
        if marker == 0xDA:  # start of scan: the headers are over
            if size is None:
                raise JpegError("jpeg_malformed", "no start-of-frame marker before the image data")
            return JpegInfo(size[0], size[1], i + length, components, precision, orientation)
        i += length


def _next_segment(data: bytes, i: int) -> tuple[int, int, int]:
    """The marker at byte ``i`` (after any fill bytes), where its segment starts and its length
    (0 for a standalone marker). Raises ``JpegError`` for a truncated or malformed header."""
    n = len(data)
    if i >= n:
        raise JpegError("jpeg_truncated", "data ends inside the JPEG headers")
    if data[i] != 0xFF:
        raise JpegError("jpeg_malformed", f"no marker at byte {i}")
    while i < n and data[i] == 0xFF:  # fill bytes
        i += 1
    if i >= n:
        raise JpegError("jpeg_truncated", "data ends inside the JPEG headers")
    marker = data[i]
    i += 1
    if 0xD0 <= marker <= 0xD7 or marker == 0x01:
        return marker, i, 0
    if marker in (0x00, 0xD8, 0xD9):
        raise JpegError("jpeg_malformed", f"unexpected marker 0xFF{marker:02X} before the image data")
    if i + 2 > n:
        raise JpegError("jpeg_truncated", "data ends inside a JPEG segment length")
    length = int.from_bytes(data[i : i + 2], "big")
    if length < 2:
        raise JpegError("jpeg_malformed", f"segment 0xFF{marker:02X} has length {length}")
    if i + length > n:
        raise JpegError("jpeg_truncated", f"data ends inside segment 0xFF{marker:02X}")
    return marker, i, length


_ORIENTATION_TAG = 0x0112
_TIFF_BYTE_ORDERS: dict[bytes, Literal["little", "big"]] = {b"II": "little", b"MM": "big"}


def _exif_orientation(tiff: bytes) -> int | None:
    """The Orientation tag of a TIFF block's first IFD (1 when it has none); None when the block
    cannot be read (not TIFF, cut short, an orientation outside 1-8)."""
    order = _TIFF_BYTE_ORDERS.get(tiff[:2])
    if order is None or len(tiff) < 8 or int.from_bytes(tiff[2:4], order) != 42:
        return None
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return None
    for k in range(int.from_bytes(tiff[ifd : ifd + 2], order)):
        entry = ifd + 2 + 12 * k
        if entry + 12 > len(tiff):
            return None
        if int.from_bytes(tiff[entry : entry + 2], order) == _ORIENTATION_TAG:
            value = int.from_bytes(tiff[entry + 8 : entry + 10], order)
            return value if 1 <= value <= 8 else None
    return 1
