"""JPEG decoding: simplejpeg gives OpenCV's pixels bit for bit, and OpenCV keeps what it alone
handles (EXIF orientation, odd headers). Real JPEG files: the bundled sample timelapse."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.jpeg import jpeg_info
from agent.sources import decode
from agent.sources.decode import DecodeHint, decode_for_detector, decode_image

SAMPLE = Path(__file__).resolve().parents[1] / "agent" / "data" / "sample_timelapse" / "frame_000050.jpg"

ENCODINGS = {
    "baseline 4:2:0": [],
    "4:4:4": [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444],
    "4:2:2": [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422],
    "progressive": [cv2.IMWRITE_JPEG_PROGRESSIVE, 1],
    "restart intervals": [cv2.IMWRITE_JPEG_RST_INTERVAL, 4],
}


def _frame(width: int = 1280, height: int = 720) -> np.ndarray:
    image = cv2.imread(str(SAMPLE), cv2.IMREAD_COLOR)
    assert image is not None
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)


def _jpeg(image: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, data = cv2.imencode(".jpg", image, params or [])
    assert ok
    return data.tobytes()


def _with_exif_orientation(data: bytes, orientation: int) -> bytes:
    """``data`` with an EXIF block (little-endian TIFF, one IFD entry) right after the SOI marker."""
    entry = (0x0112).to_bytes(2, "little") + (3).to_bytes(2, "little") + (1).to_bytes(4, "little")
    entry += orientation.to_bytes(2, "little") + b"\x00\x00"
    tiff = b"II*\x00" + (8).to_bytes(4, "little") + (1).to_bytes(2, "little") + entry + bytes(4)
    body = b"Exif\x00\x00" + tiff
    return data[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + data[2:]


@pytest.fixture(params=["simplejpeg", "opencv only"])
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both decode paths: simplejpeg (installed with the agent on x86_64 and aarch64) and the
    OpenCV fallback a platform without a simplejpeg wheel uses."""
    if request.param == "simplejpeg":
        assert decode.simplejpeg is not None, "simplejpeg is a dependency on this platform"
    else:
        monkeypatch.setattr(decode, "simplejpeg", None)
    return str(request.param)


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_jpeg_decodes_are_opencvs_pixels(decoder: str, encoding: str) -> None:
    data = _jpeg(_frame(), ENCODINGS[encoding])
    array = np.frombuffer(data, np.uint8)
    assert np.array_equal(decode_image(data), cv2.imdecode(array, cv2.IMREAD_COLOR))
    for hint, flag, shape in (
        (DecodeHint(320, 320), cv2.IMREAD_REDUCED_COLOR_2, (360, 640, 3)),
        (DecodeHint(300, 160, either=True), cv2.IMREAD_REDUCED_COLOR_4, (180, 320, 3)),
        (DecodeHint(96, 96, either=True), cv2.IMREAD_REDUCED_COLOR_8, (90, 160, 3)),
    ):
        decoded = decode_for_detector(data, hint)
        assert decoded is not None
        image, full = decoded
        assert image.shape == shape and full == (1280, 720)
        assert np.array_equal(image, cv2.imdecode(array, flag))


def test_a_grey_jpeg_decodes_to_three_equal_channels(decoder: str) -> None:
    grey = _jpeg(cv2.cvtColor(_frame(640, 480), cv2.COLOR_BGR2GRAY))
    assert jpeg_info(grey).components == 1
    image = decode_image(grey)
    assert image is not None and image.shape == (480, 640, 3)
    assert np.array_equal(image[..., 0], image[..., 2])
    assert np.array_equal(image, cv2.imdecode(np.frombuffer(grey, np.uint8), cv2.IMREAD_COLOR))


def test_exif_orientation_turns_the_picture_as_opencv_does(decoder: str) -> None:
    frame = _frame(1280, 720)
    turned = _with_exif_orientation(_jpeg(frame), 6)  # "rotate 90 degrees clockwise to view"
    assert jpeg_info(turned).orientation == 6
    image = decode_image(turned)
    assert image is not None and image.shape == (1280, 720, 3)
    assert np.array_equal(image, cv2.imdecode(np.frombuffer(turned, np.uint8), cv2.IMREAD_COLOR))
    decoded = decode_for_detector(turned, DecodeHint(320, 320))
    assert decoded is not None
    reduced, full = decoded
    assert reduced.shape == (640, 360, 3) and full == (720, 1280)  # boxes scale to the turned frame

    upright = _with_exif_orientation(_jpeg(frame), 1)
    assert jpeg_info(upright).orientation == 1
    assert np.array_equal(
        decode_image(upright), cv2.imdecode(np.frombuffer(upright, np.uint8), cv2.IMREAD_COLOR)
    )


def test_jpeg_info_reads_components_precision_and_orientation() -> None:
    plain = _jpeg(_frame(64, 48))
    info = jpeg_info(plain)
    assert (info.width, info.height, info.components, info.precision, info.orientation) == (64, 48, 3, 8, 1)
    assert jpeg_info(_with_exif_orientation(plain, 8)).orientation == 8
    assert jpeg_info(_with_exif_orientation(plain, 9)).orientation is None  # not an orientation
    broken = plain[:2] + b"\xff\xe1\x00\x0cExif\x00\x00XX\x00\x00" + plain[2:]  # no TIFF byte order
    assert jpeg_info(broken).orientation is None


def test_damaged_scan_data_is_decoded_as_leniently_as_opencv(decoder: str) -> None:
    # Cheap USB cameras send frames libjpeg warns about ("corrupt JPEG data"); OpenCV shows them,
    # and so must the agent, or such a camera would have every frame skipped.
    data = bytearray(_jpeg(_frame(640, 480)))
    start = jpeg_info(bytes(data)).scan_offset
    data[start + 2000 : start + 2040] = bytes(40)
    image = decode_image(bytes(data))
    assert image is not None and image.shape == (480, 640, 3)
    assert decode_image(b"\xff\xd8\xff\xe0 not a jpeg at all \xff\xd9") is None
