"""Source settings, kind detection, frame pacing, backoff and image decoding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from agent.config.source import default_source_id, guess_kind, redact_url
from agent.errors import ConfigError
from agent.sources import SourceSettings, resolve_kind
from agent.sources.decode import DecodeHint, decode_for_detector, decode_image, sniff_format
from agent.sources.pacing import Backoff, RateLimiter


def _noise_jpeg(size: int = 128) -> bytes:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def test_kind_is_guessed_from_the_url(tmp_path):
    (tmp_path / "frames").mkdir()
    image = tmp_path / "one.JPG"
    image.write_bytes(_noise_jpeg(16))
    video = tmp_path / "print.mp4"
    video.write_bytes(b"not checked here")

    assert guess_kind(str(tmp_path / "frames")) == "folder"
    assert guess_kind(str(image)) == "folder"
    assert guess_kind(str(video)) == "video"
    assert guess_kind("/dev/video0") == "v4l2"
    assert guess_kind("2") == "v4l2"
    assert guess_kind("picamera2") == "picamera2"
    assert guess_kind("rtsp://cam.local:554/stream1") == "rtsp"
    assert guess_kind("http://octopi.local/webcam/?action=stream") == "mjpeg"
    assert guess_kind("http://octopi.local/webcam/?action=snapshot") == "snapshot"
    assert guess_kind("http://mainsail.local/webcam/?action=snapshot") == "snapshot"
    assert guess_kind("https://cam.local/snapshot.jpg") == "snapshot"
    assert guess_kind("http://cam.local/video") is None  # probed by open_source
    with pytest.raises(FileNotFoundError):
        guess_kind(str(tmp_path / "missing"))


def test_a_path_that_does_not_exist_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        resolve_kind(SourceSettings(url=str(tmp_path / "nowhere")))
    assert "nowhere" in str(info.value)
    assert "not an existing folder or file" in str(info.value)
    assert info.value.exit_code == 2


def test_explicit_kind_wins_over_the_url():
    assert resolve_kind(SourceSettings(url="http://cam.local/video", kind="snapshot")) == "snapshot"


def test_default_source_ids_are_file_safe_and_never_hold_credentials(tmp_path):
    assert default_source_id(str(tmp_path / "timelapse")) == "timelapse"
    assert default_source_id("/dev/video2") == "video2"
    assert default_source_id("0") == "video0"
    assert default_source_id("http://octopi.local/webcam/?action=stream") == "octopi.local_webcam"
    assert default_source_id("http://127.0.0.1:8080/") == "127.0.0.1_8080"
    assert default_source_id("rtsp://admin@cam.local:554/Streaming/101") == "cam.local_554_Streaming_101"
    assert default_source_id("picamera2") == "picamera2"
    assert SourceSettings(url="picamera2", picamera2={"camera_num": 1}).source_id == "picamera2-1"
    assert SourceSettings(url="0", id="bed-cam").source_id == "bed-cam"


def test_integer_url_means_a_camera_index():
    assert SourceSettings.model_validate({"url": 0}).url == "0"


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"url": "http://"}, "no host name"),
        ({"url": "http://cam.local:99999/"}, "invalid port"),
        ({"url": "ftp://cam.local/x"}, "unsupported URL scheme"),
        ({"url": "rtsp://admin:hunter2@cam.local/s"}, "password_env"),
        ({"url": ""}, "empty"),
        ({"headers": {"X-Api-Key": "abc"}}, "api_key_env"),
        ({"headers": {"Authorization": "Basic x"}}, "carries a secret"),
        ({"reconnect_initial_s": 10, "reconnect_max_s": 5}, "reconnect_max_s"),
        ({"password_env": "A", "password_file": "/x", "username": "u"}, "not both"),
        ({"password_env": "A"}, "need `username`"),
        ({"id": "my cam"}, "only letters"),
        ({"max_fps": 0}, "greater than 0"),
        ({"startup_attempts": 0}, "greater than or equal to 1"),
        ({"picamera2": {"controls": {"AfMode": "Sometimes"}}}, "Continuous"),
        ({"picamera2": {"controls": {"ExposureTime": "long"}}}, "give a number"),
        ({"picamera2": {"width_px": 640}}, "both width_px and height_px"),
        ({"v4l2": {"fourcc": "MJPEG"}}, "at most 4"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_settings_are_refused_with_the_reason(changes, fragment):
    with pytest.raises(ValidationError) as info:
        SourceSettings.model_validate({"url": "http://cam.local/?action=stream", **changes})
    assert fragment in str(info.value)
    assert "hunter2" not in str(info.value)


def test_frame_interval_takes_the_longer_of_interval_and_max_fps():
    assert SourceSettings().frame_interval_s == 0
    assert SourceSettings(max_fps=5).frame_interval_s == pytest.approx(0.2)
    assert SourceSettings(interval_s=10, max_fps=5).frame_interval_s == 10
    assert SourceSettings(interval_s=0.1, max_fps=2).frame_interval_s == 0.5


def test_redacted_url_hides_user_and_keys():
    redacted = redact_url("http://alice@cam.local:8080/snap?apikey=SECRET&size=2")
    assert redacted == "http://cam.local:8080/snap?apikey=***&size=2"
    assert redact_url("/data/frames") == "/data/frames"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_keeps_a_steady_grid():
    clock = FakeClock()
    limiter = RateLimiter(0.1, clock=clock)
    admitted = 0
    for i in range(90):  # 3 s of a 30 fps stream
        clock.now = i / 30
        admitted += limiter.admit()
    assert admitted == 30  # 10 fps, not 7.5 fps


def test_rate_limiter_restarts_after_a_pause_without_a_burst():
    clock = FakeClock()
    limiter = RateLimiter(1.0, clock=clock)
    assert limiter.admit()
    clock.now = 10.0
    assert limiter.admit()
    clock.now = 10.5
    assert not limiter.admit()
    assert limiter.delay_s() == pytest.approx(0.5)
    limiter.reset()
    assert limiter.admit()


def test_rate_limiter_without_interval_admits_everything():
    limiter = RateLimiter(0)
    assert all(limiter.admit(0.0) for _ in range(5))


def test_backoff_doubles_up_to_the_cap_and_resets():
    backoff = Backoff(1.0, 30.0, rng=lambda: 0.0)
    assert [backoff.next_delay_s() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    backoff.reset()
    assert backoff.next_delay_s() == 1
    jittered = Backoff(2.0, 30.0, jitter=0.25, rng=lambda: 1.0)
    assert jittered.next_delay_s() == pytest.approx(1.5)


def test_decode_refuses_truncated_and_garbage_jpeg():
    data = _noise_jpeg()
    # Some OpenCV/libjpeg builds (e.g. older distribution packages) fill the missing rows of a
    # truncated JPEG with grey and return an image; the end-marker check refuses it everywhere.
    assert decode_image(data[: int(len(data) * 0.7)]) is None
    assert decode_image(data[:-2]) is None
    assert decode_image(data) is not None
    assert decode_image(data + b"\r\n") is not None  # stream padding after the end marker
    assert decode_image(b"garbage" * 100) is None
    assert sniff_format(data) == "jpg"


def test_decode_handles_png_and_bmp_and_refuses_truncated_png():
    image = np.full((20, 30, 3), (10, 20, 30), np.uint8)
    for ext in (".png", ".bmp"):
        ok, data = cv2.imencode(ext, image)
        assert ok
        decoded = decode_image(data.tobytes())
        assert decoded is not None
        assert decoded.shape == (20, 30, 3)
        assert decoded.dtype == np.uint8
        assert np.array_equal(decoded, image)
        assert decode_image(data.tobytes()[:-20]) is None


def test_reduced_decode_keeps_the_model_input_covered() -> None:
    stretch = DecodeHint(320, 320)
    letterbox = DecodeHint(640, 640, either=True)
    assert stretch.reduction(1280, 720) == 2  # 640x360 still covers 320x320
    assert stretch.reduction(640, 480) == 1  # 320x240 would be upscaled
    assert stretch.reduction(2592, 1944) == 4
    assert letterbox.reduction(1280, 720) == 2  # 640x360: the width reaches 640
    assert letterbox.reduction(1920, 1080) == 2
    assert letterbox.reduction(640, 480) == 1
    assert DecodeHint(96, 96, either=True).reduction(1280, 720) == 8


def test_a_large_jpeg_decodes_reduced_with_its_full_size() -> None:
    rng = np.random.default_rng(3)
    image = cv2.resize(rng.integers(0, 255, (18, 32, 3), dtype=np.uint8), (1281, 721))  # smooth
    data = cv2.imencode(".jpg", image)[1].tobytes()
    decoded = decode_for_detector(data, DecodeHint(320, 320))
    assert decoded is not None
    reduced, full = decoded
    assert reduced.shape == (361, 641, 3) and full == (1281, 721)  # libjpeg rounds sizes up
    # the same picture, smaller: compare with an area resize of the full decode
    expected = cv2.resize(
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR),
        (641, 361),
        interpolation=cv2.INTER_AREA,
    )
    assert np.abs(reduced.astype(int) - expected.astype(int)).mean() < 6
    small = cv2.imencode(".jpg", image[:480, :640])[1].tobytes()
    assert decode_for_detector(small, DecodeHint(320, 320))[1] is None  # type: ignore[index]
    assert decode_for_detector(data[:-100], DecodeHint(320, 320)) is None  # truncated: refused
    png = cv2.imencode(".png", image)[1].tobytes()
    assert decode_for_detector(png, DecodeHint(320, 320))[1] is None  # type: ignore[index]
