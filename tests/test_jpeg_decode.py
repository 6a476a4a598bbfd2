"""JPEG decoding: simplejpeg gives OpenCV's pixels bit for bit, and OpenCV keeps what it alone
handles (EXIF orientation, odd headers). Real JPEG files: the bundled sample timelapse."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import pytest

from agent.jpeg import jpeg_info
from agent.pixel_cap import ImageTooLarge
from agent.sources import decode
from agent.sources.decode import DecodeHint, decode_for_detector, decode_image

SAMPLE = Path(__file__).resolve().parents[1] / "agent" / "data" / "sample_timelapse" / "frame_000050.jpg"
# Byte-flipped copies of SAMPLE (at 640x480) that OpenCV refuses but a lenient libjpeg-turbo decode
# "decodes" into a buffer it never writes (found by a mutation fuzz).
DAMAGED = sorted((Path(__file__).resolve().parent / "fixtures" / "jpeg").glob("damaged_*.jpg"))

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


def _app1(body: bytes) -> bytes:
    return b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body


def _exif(orientation: int | None, order: str = "II", header: bytes = b"Exif\x00\x00") -> bytes:
    """An APP1 segment: ``header``, then a TIFF block whose first IFD holds the orientation (none
    when None)."""
    end: Literal["little", "big"] = "little" if order == "II" else "big"
    entries = b""
    if orientation is not None:
        entries = (0x0112).to_bytes(2, end) + (3).to_bytes(2, end) + (1).to_bytes(4, end)
        entries += orientation.to_bytes(2, end) + b"\x00\x00"
    count = (1 if orientation is not None else 0).to_bytes(2, end)
    tiff = order.encode() + (42).to_bytes(2, end) + (8).to_bytes(4, end) + count + entries + bytes(4)
    return _app1(header + tiff)


def _with_segments(data: bytes, *segments: bytes) -> bytes:
    """``data`` with ``segments`` right after the SOI marker."""
    return data[:2] + b"".join(segments) + data[2:]


def _with_exif_orientation(data: bytes, orientation: int) -> bytes:
    return _with_segments(data, _exif(orientation))


def _same_as_opencv(ours: np.ndarray | None, data: bytes, flag: int = cv2.IMREAD_COLOR) -> bool:
    theirs = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if theirs is None or ours is None:
        return theirs is None and ours is None
    return np.array_equal(ours, theirs)


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
    assert jpeg_info(_with_segments(plain, _exif(6, "MM"))).orientation == 6
    assert jpeg_info(_with_segments(plain, _exif(None))).orientation == 1  # EXIF without the tag
    assert jpeg_info(_with_exif_orientation(plain, 9)).orientation is None  # not an orientation
    assert jpeg_info(_with_segments(plain, _app1(b"Exif\x00\x00XX\x00\x00"))).orientation is None
    assert jpeg_info(bytearray(_with_exif_orientation(plain, 3))).orientation == 3


@pytest.mark.parametrize(
    "segments",
    [
        pytest.param((_exif(6), _exif(1)), id="two EXIF blocks: OpenCV reads the first"),
        pytest.param((_exif(6), _exif(None)), id="a second EXIF block without the tag"),
        pytest.param((_exif(6, header=b"Exif\x00\xff"),), id="an odd EXIF signature"),
        pytest.param((_app1(b"http://ns.adobe.com/xap/1.0/\x00<x/>"), _exif(6)), id="XMP before EXIF"),
    ],
)
def test_the_picture_turns_exactly_when_opencv_turns_it(decoder: str, segments: tuple[bytes, ...]) -> None:
    data = _with_segments(_jpeg(_frame(160, 90)), *segments)
    image = decode_image(data)
    assert image is not None and _same_as_opencv(image, data)
    decoded = decode_for_detector(data, DecodeHint(40, 40))
    assert decoded is not None
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_2)
    assert decoded[0].shape == expected.shape


@pytest.mark.parametrize("path", DAMAGED, ids=lambda p: p.stem)
def test_jpegs_opencv_refuses_are_refused_not_decoded_into_garbage(decoder: str, path: Path) -> None:
    data = path.read_bytes()
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is None
    assert decode_image(data) is None
    assert decode_for_detector(data, DecodeHint(320, 320)) is None


def test_byte_flipped_jpegs_decode_exactly_as_opencv_decodes_them(decoder: str) -> None:
    rng = np.random.default_rng(7)
    image = _frame(640, 480)
    bases = [_jpeg(image), _jpeg(image, ENCODINGS["progressive"]), _jpeg(image, ENCODINGS["4:4:4"])]
    for k in range(150):
        data = bytearray(bases[k % len(bases)])
        for position in rng.integers(2, len(data) - 2, size=int(rng.integers(1, 8))):
            data[int(position)] = int(rng.integers(0, 256))
        mutant = bytes(data)
        assert _same_as_opencv(decode_image(mutant), mutant), k
        reduced = decode_for_detector(mutant, DecodeHint(160, 160))
        assert _same_as_opencv(None if reduced is None else reduced[0], mutant, cv2.IMREAD_REDUCED_COLOR_2), k


def test_a_jpeg_declaring_a_billion_pixels_is_refused_without_allocating_them() -> None:
    data = bytearray(_jpeg(np.full((16, 16, 3), 128, np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (40000).to_bytes(2, "big") * 2  # height, width
    assert (jpeg_info(bytes(data)).width, jpeg_info(bytes(data)).height) == (40000, 40000)
    with pytest.raises(ImageTooLarge, match="40000x40000 pixels is over the cap"):
        decode_image(bytes(data))
    with pytest.raises(ImageTooLarge):
        decode_for_detector(bytes(data), DecodeHint(320, 320))


def test_damaged_scan_data_is_decoded_as_leniently_as_opencv(decoder: str) -> None:
    # Cheap USB cameras send frames libjpeg warns about ("corrupt JPEG data"); OpenCV shows them,
    # and so must the agent, or such a camera would have every frame skipped.
    data = bytearray(_jpeg(_frame(640, 480)))
    start = jpeg_info(bytes(data)).scan_offset
    data[start + 2000 : start + 2040] = bytes(40)
    image = decode_image(bytes(data))
    assert image is not None and image.shape == (480, 640, 3)
    assert decode_image(b"\xff\xd8\xff\xe0 not a jpeg at all \xff\xd9") is None
