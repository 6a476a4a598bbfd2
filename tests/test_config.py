"""Configuration files: every mistake is refused with its key path and line; --check validates."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.bundled import BUNDLED_DATA
from agent.config import AgentConfig, load_config
from agent.errors import ConfigError
from tests.helpers import REPO, run_cli


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def test_bundled_default_and_every_example_config_are_valid() -> None:
    assert isinstance(load_config(), AgentConfig)
    for example in sorted((REPO / "configs").glob("*.yaml")):
        if example.name.startswith("review"):
            continue
        load_config(example)


def test_unknown_key_names_the_path_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "source:\n  url: /tmp\ndetector:\n  score_treshold: 0.4\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}:4: detector.score_treshold: unknown key" in str(err.value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "url: rtsp://cam.local/live\n  watch: true",
            "for a folder, an image or a video file, not for rtsp://cam.local/live",
        ),
        (
            "url: /tmp/frames\n  rtsp_transport: udp",
            "for an RTSP stream, not for /tmp/frames",
        ),
        (
            "url: 0\n  headers: {X-Camera: a}",
            "for an HTTP MJPEG stream or snapshot URL, not for 0 (a V4L2/USB camera)",
        ),
        (
            "url: http://octopi.local/webcam/?action=stream\n  v4l2: {fourcc: MJPG}",
            "for a V4L2/USB camera",
        ),
        (
            "url: picamera2\n  username: me",
            "for an RTSP stream or an HTTP MJPEG stream or snapshot URL",
        ),
    ],
)
def test_a_key_for_another_kind_of_source_is_named(tmp_path: Path, source: str, message: str) -> None:
    path = write(tmp_path, f"source:\n  {source}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    key = source.split("\n")[1].split(":")[0].strip()
    assert f"{path}:3: source.{key}: " in str(err.value) and message in str(err.value)


def test_keys_of_every_kind_at_their_defaults_are_no_mistake(tmp_path: Path) -> None:
    path = write(tmp_path, "source:\n  url: rtsp://cam.local/live\n  watch: false\n  rtsp_transport: udp\n")
    assert load_config(path).source.rtsp_transport == "udp"


def test_wrong_type_and_out_of_range_are_all_listed(tmp_path: Path) -> None:
    path = write(
        tmp_path, "detector:\n  num_threads: many\n  iou_threshold: 1.5\npipeline:\n  capture_queue: 0\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert f"{path}:2: detector.num_threads:" in text and "'many'" in text
    assert f"{path}:3: detector.iou_threshold: Input should be less than or equal to 1" in text
    assert f"{path}:5: pipeline.capture_queue: Input should be greater than or equal to 1" in text


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "output:\n  dir: a\n  dir: b\n")
    with pytest.raises(ConfigError, match=r":3: output.dir: duplicate key"):
        load_config(path)


def test_broken_yaml_says_where(tmp_path: Path) -> None:
    path = write(tmp_path, "source:\n  url: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"{path}:\d+: not valid YAML"):
        load_config(path)


def test_check_flag_validates_and_exits(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copy(next((BUNDLED_DATA / "sample_timelapse").glob("*.jpg")), frames)
    good = write(tmp_path, f"source:\n  url: {frames}\n")
    assert run_cli("run", "--config", str(good), "--check").code == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("mqtt:\n  port: 70000\n")
    result = run_cli("run", "--config", str(bad), "--check")
    assert result.code == 2
    assert f"{bad}:2: mqtt.port" in result.err
    assert "Traceback" not in result.err


def test_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("run", "--config", str(tmp_path / "nope.yaml"), "--check")
    assert result.code == 2
    assert "does not exist" in result.err


def test_secrets_in_urls_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "source:\n  url: http://user:hunter2@octopi.local/webcam/?action=stream\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "password_env" in str(err.value)
    assert "hunter2" not in str(err.value)
