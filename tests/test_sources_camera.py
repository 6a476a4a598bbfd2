"""Cameras: V4L2 devices and RTSP through OpenCV (this machine has neither, so the tests check the
errors a user sees), and picamera2 against a fake module standing in for the absent Pi camera."""

from __future__ import annotations

import itertools
import socket
import sys
import types
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest

from agent.errors import ConfigError, UserError
from agent.sources import SourceSettings, open_source
from agent.sources.opencv_camera import present_cameras

pytestmark = pytest.mark.timeout(120)


# --- V4L2 and RTSP ------------------------------------------------------------------------------


def missing_device() -> str:
    taken = set(present_cameras())
    return next(f"/dev/video{n}" for n in range(40, 100) if f"/dev/video{n}" not in taken)


def test_camera_device_that_does_not_exist():
    device = missing_device()
    with pytest.raises(UserError) as info:
        open_source(SourceSettings(url=device))
    message = str(info.value)
    assert f"camera {device} does not exist" in message
    if present_cameras():
        assert "devices present: " + present_cameras()[0] in message
    else:
        assert "no /dev/video* devices" in message
    assert info.value.exit_code == 1


def test_camera_index_names_its_device():
    index = missing_device().removeprefix("/dev/video")
    with pytest.raises(UserError) as info:
        open_source(SourceSettings(url=index))
    assert f"/dev/video{index} does not exist" in str(info.value)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_rtsp_refused_at_start_gives_up_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("CAM_PASSWORD", "hunter2")
    url = f"rtsp://127.0.0.1:{free_port()}/stream1"
    settings = SourceSettings(
        url=url,
        username="admin",
        password_env="CAM_PASSWORD",
        startup_attempts=2,
        reconnect_initial_s=0.01,
        reconnect_max_s=0.02,
        connect_timeout_s=3,
    )
    with pytest.raises(UserError) as info:
        open_source(settings)
    message = str(info.value)
    assert url in message
    assert "after 2 attempts" in message
    assert "ffprobe" in message
    assert "hunter2" not in message
    assert "admin" not in message


# --- picamera2 (fake: no Pi camera and no picamera2 on this machine) --------------------------

# What the fake camera sees: one colour, R=200 G=100 B=50, so the expected BGR frame is (50, 100, 200).
SCENE_RGB = (200, 100, 50)


class FakePicamera2:
    """Stands in for picamera2.Picamera2 (absent hardware). It mimics the API surface the source
    uses: global_camera_info, load_tuning_file, the constructor, create_*_configuration,
    align_configuration, configure, start, capture_array, stop, close; and it returns arrays laid
    out the way picamera2 documents each pixel format."""

    cameras: ClassVar[list[dict[str, Any]]] = [{"Model": "imx708_wide", "Num": 0, "Id": "/base/imx708"}]
    instances: ClassVar[list[FakePicamera2]] = []
    fail_captures: ClassVar[int] = 0  # how many capture_array calls raise, over all instances

    def __init__(self, camera_num: int = 0, verbose_console: Any = None, tuning: Any = None) -> None:
        self.camera_num = camera_num
        self.tuning = tuning
        self.calls: list[str] = []
        self.config: dict[str, Any] | None = None
        self.started = False
        self.closed = False
        FakePicamera2.instances.append(self)

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return list(FakePicamera2.cameras)

    @staticmethod
    def load_tuning_file(tuning_file: str, dir: str | None = None) -> dict[str, Any]:
        if tuning_file != "imx708_noir.json":
            raise RuntimeError("Tuning file not found")
        return {"version": 2.0, "algorithms": [], "name": tuning_file}

    def _config(self, use_case, main, controls, buffer_count, default_size) -> dict[str, Any]:
        stream = {"format": "XBGR8888", "size": default_size, "preserve_ar": True, **(main or {})}
        return {
            "use_case": use_case,
            "main": stream,
            "controls": dict(controls or {}),
            "buffer_count": buffer_count,
            "queue": True,
        }

    def create_video_configuration(
        self, main=None, lores=None, raw=None, buffer_count=6, controls=None, **kw
    ):
        self.calls.append("create_video_configuration")
        return self._config("video", main, controls, buffer_count, (1280, 720))

    def create_still_configuration(
        self, main=None, lores=None, raw=None, buffer_count=1, controls=None, **kw
    ):
        self.calls.append("create_still_configuration")
        return self._config("still", main, controls, buffer_count, (4608, 2592))

    def align_configuration(self, config: dict[str, Any]) -> None:
        self.calls.append("align_configuration")

    def configure(self, config: dict[str, Any]) -> None:
        self.calls.append("configure")
        self.config = config

    def start(self) -> None:
        self.calls.append("start")
        self.started = True

    def stop(self) -> None:
        self.calls.append("stop")
        self.started = False

    def close(self) -> None:
        self.calls.append("close")
        self.closed = True

    def capture_array(self, name: str = "main", wait: Any = None) -> np.ndarray:
        assert self.started and self.config is not None and name == "main"
        if FakePicamera2.fail_captures > 0:
            FakePicamera2.fail_captures -= 1
            raise RuntimeError("Camera frontend has timed out!")
        width, height = self.config["main"]["size"]
        r, g, b = SCENE_RGB
        fmt = self.config["main"]["format"]
        if fmt == "RGB888":
            return np.full((height, width, 3), (b, g, r), np.uint8)  # stored B, G, R
        if fmt == "BGR888":
            return np.full((height, width, 3), (r, g, b), np.uint8)  # stored R, G, B
        if fmt == "XRGB8888":
            return np.full((height, width, 4), (b, g, r, 255), np.uint8)
        if fmt == "XBGR8888":
            return np.full((height, width, 4), (r, g, b, 255), np.uint8)
        if fmt == "YUV420":
            bgr = np.full((height, width, 3), (b, g, r), np.uint8)
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)  # (height * 3 / 2, width)
        raise ValueError(fmt)


@pytest.fixture
def fake_picamera2(monkeypatch):
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    monkeypatch.setattr(FakePicamera2, "instances", [])
    monkeypatch.setattr(FakePicamera2, "fail_captures", 0)
    return FakePicamera2


@pytest.mark.parametrize("pixel_format", ["RGB888", "BGR888", "XRGB8888", "XBGR8888", "YUV420"])
def test_picamera2_configures_the_camera_and_yields_bgr(fake_picamera2, pixel_format):
    settings = SourceSettings(
        url="picamera2",
        picamera2={
            "width_px": 640,
            "height_px": 480,
            "format": pixel_format,
            "fps": 10,
            "controls": {
                "AfMode": "Continuous",
                "LensPosition": 2.5,
                "ExposureTime": 10000,
                "ScalerCrop": [0, 0, 64, 48],
            },
        },
    )
    with open_source(settings) as source:
        assert source.kind == "picamera2"
        assert source.live is True
        frames = list(itertools.islice(source, 3))
    (camera,) = fake_picamera2.instances
    assert camera.camera_num == 0
    assert camera.calls[:4] == ["create_video_configuration", "align_configuration", "configure", "start"]
    assert camera.config["main"]["size"] == (640, 480)
    assert camera.config["main"]["format"] == pixel_format
    assert camera.config["controls"] == {
        "AfMode": 2,  # libcamera's AfModeContinuous
        "LensPosition": 2.5,
        "ExposureTime": 10000,
        "ScalerCrop": (0, 0, 64, 48),
        "FrameDurationLimits": (100000, 100000),  # 10 fps in microseconds
    }
    assert camera.calls[-2:] == ["stop", "close"]
    assert [f.sequence for f in frames] == [0, 1, 2]
    tolerance = 3 if pixel_format == "YUV420" else 0
    for frame in frames:
        assert frame.source_id == "picamera2"
        assert frame.image.shape == (480, 640, 3)
        assert frame.image.dtype == np.uint8
        assert frame.image.flags.c_contiguous
        assert np.abs(frame.image.reshape(-1, 3).astype(int) - (50, 100, 200)).max() <= tolerance
        assert frame.encoded is None


def test_picamera2_still_mode_and_tuning_file(fake_picamera2, tmp_path):
    tuning = tmp_path / "my_tuning.json"
    tuning.write_text("{}")
    settings = SourceSettings(url="picamera2", picamera2={"mode": "still", "tuning_file": str(tuning)})
    with open_source(settings) as source:
        frame = next(iter(source))
    (camera,) = fake_picamera2.instances
    assert camera.tuning == str(tuning)
    assert "create_still_configuration" in camera.calls
    assert frame.image.shape == (2592, 4608, 3)

    with open_source(
        SourceSettings(url="picamera2", picamera2={"tuning_file": "imx708_noir.json"})
    ) as source:
        pass
    assert fake_picamera2.instances[-1].tuning["name"] == "imx708_noir.json"

    with pytest.raises(ConfigError) as info:
        open_source(SourceSettings(url="picamera2", picamera2={"tuning_file": "nope.json"}))
    assert "nope.json" in str(info.value)


def test_picamera2_restarts_the_camera_after_a_failed_capture(fake_picamera2):
    fake_picamera2.fail_captures = 1
    settings = SourceSettings(url="picamera2", reconnect_initial_s=0.01, reconnect_max_s=0.02)
    with open_source(settings) as source:
        frames = list(itertools.islice(source, 2))
        stats = source.stats()
    assert len(frames) == 2
    assert stats["errors"] == 1
    assert stats["reconnects"] == 1
    first, second = fake_picamera2.instances
    assert first.closed
    assert second.closed


def test_picamera2_without_a_camera(fake_picamera2, monkeypatch):
    monkeypatch.setattr(FakePicamera2, "cameras", [])
    with pytest.raises(UserError) as info:
        open_source(SourceSettings(url="picamera2", startup_attempts=2, reconnect_initial_s=0.01))
    assert "finds no camera" in str(info.value)
    assert "rpicam-hello --list-cameras" in str(info.value)
    assert "after 2 attempts" in str(info.value)


def test_picamera2_camera_num_out_of_range(fake_picamera2):
    with pytest.raises(UserError) as info:
        open_source(SourceSettings(url="picamera2", picamera2={"camera_num": 1}, startup_attempts=5))
    assert "camera_num is 1" in str(info.value)
    assert "0: imx708_wide" in str(info.value)
    assert fake_picamera2.instances == []


def test_picamera2_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes `import picamera2` fail
    with pytest.raises(UserError) as info:
        open_source(SourceSettings(url="picamera2"))
    message = str(info.value)
    assert "python3-picamera2" in message
    assert "--system-site-packages" in message
    assert info.value.exit_code == 1
