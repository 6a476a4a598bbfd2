"""``edge-agent run``: the whole pipeline from a folder to VoTT and the outbox; shutdown; systemd."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import pytest
import yaml

from agent.config import AgentConfig
from agent.config.detector import DetectorSettings
from agent.config.pipeline import PipelineSettings
from agent.config.source import SourceSettings
from agent.detect.detector import Detector
from agent.pipeline import Pipeline
from agent.sources import open_source
from tests.helpers import REPO, outbox_topics, run_cli, validate_vott

FIXTURE_MODELS = Path(__file__).parent / "fixtures" / "models"
MODEL = str(FIXTURE_MODELS / "yolov5_layout_uint8.tflite")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_frames(folder: Path, count: int, *, corrupt: tuple[int, ...] = ()) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    image = cv2.imread(str(FIXTURE_MODELS / "yolov5_layout_uint8.png"))
    for i in range(count):
        path = folder / f"frame_{i:04d}.jpg"
        if i in corrupt:
            path.write_bytes(b"\xff\xd8\xff\xe0 truncated")
        else:
            shifted = cv2.copyMakeBorder(image, i % 7, 0, 0, i % 5, cv2.BORDER_CONSTANT)
            cv2.imwrite(str(path), shifted)


def write_config(tmp_path: Path, frames: Path, **sections: Any) -> Path:
    config: dict[str, Any] = {
        "source": {"url": str(frames), "id": "cam"},
        "detector": {"model": MODEL},
        "output": {"dir": str(tmp_path / "data")},
        "alerts": {"enabled": True, "failure_labels": {"red": 1.0}},
        "mqtt": {"enabled": True, "host": "127.0.0.1", "port": free_port(), "device_id": "testdev"},
    }
    for key, value in sections.items():
        config.setdefault(key, {}).update(value)
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_run_writes_prelabels_and_queues_every_message_without_a_broker(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    make_frames(frames, 12, corrupt=(5,))
    config = write_config(tmp_path, frames)
    result = run_cli("run", "--config", str(config))
    assert result.code == 0, result.err
    assert "processed 11 frames, kept 11" in result.err
    data = tmp_path / "data"
    project = json.loads((data / "vott" / "edge-agent-cam.vott").read_text())
    assert len(project["assets"]) == 11
    assert len(list((data / "frames").glob("*.jpg"))) == 11
    topics = outbox_topics(data / "mqtt-outbox.sqlite3")
    assert sum(t == "edge-agent/testdev/detections" for t in topics) == 11
    assert sum(t.startswith("edge-agent/testdev/frames/") for t in topics) == 11
    assert sum(t.startswith("edge-agent/testdev/annotations/") for t in topics) == 11
    assert "frame_0005.jpg" in result.err  # the corrupt frame is named in the log
    assert "mqtt: not connected" in result.err
    assert "outbox 33 messages" in result.err  # the log tells the outbox is growing


def test_run_validates_with_the_vott_checker(shared_dir: Path, tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    make_frames(frames, 5)
    config = write_config(tmp_path, frames, mqtt={"enabled": False})
    assert run_cli("run", "--config", str(config)).code == 0
    data = tmp_path / "data"
    check = validate_vott(shared_dir, data / "vott", data / "frames")
    assert check.returncode == 0, check.stdout


def test_sigterm_finishes_cleanly_with_the_project_saved(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    make_frames(frames, 3)
    config = write_config(
        tmp_path, frames, source={"watch": True, "watch_poll_s": 0.1, "watch_settle_s": 0.1}
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    project_file = tmp_path / "data" / "vott" / "edge-agent-cam.vott"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if project_file.exists() and len(list((tmp_path / "data" / "frames").glob("*.jpg"))) == 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err  # 128 + SIGTERM: stopped, everything saved
    assert "received SIGTERM" in err
    project = json.loads(project_file.read_text())
    assert len(project["assets"]) == 3
    assert not list((tmp_path / "data").rglob("*.tmp"))


@pytest.mark.parametrize(
    ("section", "message", "code"),
    [
        ({"source": {"url": "/nonexistent/frames"}}, "is not an existing folder or file", 2),
        ({"source": {"url": "/dev/video97"}}, "/dev/video97", 1),
        ({"detector": {"model": "/nonexistent.tflite"}}, "does not exist", 2),
        ({"alerts": {"enabled": True, "failure_labels": {"spaghetti": 1.0}}}, "spaghetti", 2),
    ],
)
def test_run_start_up_errors_are_clear(
    tmp_path: Path, section: dict[str, Any], message: str, code: int
) -> None:
    frames = tmp_path / "frames"
    make_frames(frames, 1)
    config = write_config(tmp_path, frames)
    data = yaml.safe_load(config.read_text())
    for key, value in section.items():
        data[key].update(value)
    if "alerts" in section:
        data["alerts"] = section["alerts"]
    config.write_text(yaml.safe_dump(data))
    result = run_cli("run", "--config", str(config))
    assert result.code == code, result.err
    assert message in result.err
    assert "Traceback" not in result.err


class NotifyListener:
    """Stands in for systemd: receives what the agent sends to $NOTIFY_SOCKET."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")
        self.path = os.path.join(self.folder, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.5)
        self.messages: list[dict[str, str]] = []
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.messages.append(dict(line.split("=", 1) for line in data.splitlines() if "=" in line))
            self.times.append(time.monotonic())

    def watchdog_times(self) -> list[float]:
        return [t for m, t in zip(self.messages, self.times, strict=True) if m.get("WATCHDOG") == "1"]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.folder)


@pytest.fixture
def notify_listener() -> Iterator[NotifyListener]:
    listener = NotifyListener()
    yield listener
    listener.close()


def test_agent_tells_systemd_ready_and_pings_the_watchdog(
    tmp_path: Path, notify_listener: NotifyListener
) -> None:
    frames = tmp_path / "frames"
    make_frames(frames, 2)
    config = write_config(
        tmp_path, frames, source={"watch": True, "watch_poll_s": 0.1, "watch_settle_s": 0.1}
    )
    env = {**os.environ, "NOTIFY_SOCKET": notify_listener.path, "WATCHDOG_USEC": "1000000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(notify_listener.watchdog_times()) < 4:
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert any(m.get("READY") == "1" for m in notify_listener.messages)
    assert len(notify_listener.watchdog_times()) >= 4
    assert any("fps" in m.get("STATUS", "") for m in notify_listener.messages)
    assert any(m.get("STOPPING") == "1" for m in notify_listener.messages)


class HangingDetector:
    """The real detector, made to hang on its Nth frame (fault injection: a stuck Coral or
    driver cannot be produced on purpose on this machine)."""

    def __init__(self, hang_on: int) -> None:
        self.real = Detector(DetectorSettings(model=MODEL))
        self.hang_on = hang_on
        self.calls = 0
        self.release = threading.Event()
        self.runtime = self.real.runtime
        self.labels = self.real.labels

    @property
    def name(self) -> str:
        return self.real.name

    def detect(self, image: Any, timings: dict[str, float] | None = None) -> Any:
        self.calls += 1
        if self.calls == self.hang_on:
            self.release.wait(60)
        return self.real.detect(image, timings)


def run_pipeline_in_thread(pipeline: Pipeline) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["stats"] = pipeline.run()
        except BaseException as exc:  # surfaced to the test
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


@pytest.mark.parametrize("interpreters", [1, 2])
def test_a_hung_detector_is_replaced_and_the_other_frames_flow_in_order(
    tmp_path: Path, interpreters: int
) -> None:
    frames = tmp_path / "frames"
    make_frames(frames, 10)
    seen: list[str] = []
    hanging = HangingDetector(hang_on=2)
    others = [Detector(DetectorSettings(model=MODEL)) for _ in range(interpreters - 1)]
    pipeline = Pipeline(
        open_source(SourceSettings(url=str(frames))),
        [hanging, *others],
        [],
        PipelineSettings(inference_timeout_s=1.0, max_detector_restarts=1),
        live=False,
        on_result=lambda handled: seen.append(handled.result.frame.name),
        detector_factory=lambda: Detector(DetectorSettings(model=MODEL)),
    )
    thread, out = run_pipeline_in_thread(pipeline)
    thread.join(60)
    hanging.release.set()
    assert "error" not in out, out.get("error")
    stats = out["stats"]["frames"]
    assert stats["detector_restarts"] == 1
    assert stats["dropped"] == 1  # the frame the hung detector held
    assert stats["processed"] == 9 and len(seen) == 9
    assert seen == sorted(seen)


def test_default_config_is_the_bundled_demo() -> None:
    config = AgentConfig.model_validate({})
    assert config.detector.model is None
    text = (REPO / "configs" / "default.yaml").read_text()
    assert "{bundled}/sample_timelapse" in text


def test_source_url_printer_takes_the_printer_hosts_webcam() -> None:
    from agent.app import printer_webcam
    from agent.errors import ConfigError

    config = AgentConfig.model_validate(
        {"source": {"url": "printer"}, "printer": {"kind": "octoprint", "url": "http://octopi.local"}}
    )
    assert printer_webcam(config).url == "http://octopi.local/webcam/?action=snapshot"
    stream = config.model_copy(update={"source": config.source.model_copy(update={"url": "printer:stream"})})
    assert printer_webcam(stream).url == "http://octopi.local/webcam/?action=stream"
    with pytest.raises(ConfigError, match="needs a printer"):
        printer_webcam(AgentConfig.model_validate({"source": {"url": "printer"}}))


def test_a_missing_edge_tpu_falls_back_to_the_cpu_model(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    make_frames(frames, 3)
    config = write_config(
        tmp_path,
        frames,
        detector={
            "model": str(FIXTURE_MODELS / "fake_edgetpu_edgetpu.tflite"),
            "edgetpu": "usb",
            "fallback_model": MODEL,
        },
        pipeline={"stats_interval_s": 3600},
        mqtt={"enabled": False},
    )
    result = run_cli("run", "--config", str(config))
    assert result.code == 0, result.err
    assert "Edge TPU usb unusable, running the CPU fallback model" in result.err
    assert "processed 3 frames" in result.err
    summary = json.loads((tmp_path / "data" / "harvest.json").read_text())
    assert summary  # the run completed on the fallback and wrote its summary


def test_without_a_fallback_the_missing_edge_tpu_stops_the_agent(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    make_frames(frames, 1)
    config = write_config(
        tmp_path,
        frames,
        detector={"model": str(FIXTURE_MODELS / "fake_edgetpu_edgetpu.tflite"), "edgetpu": "usb"},
    )
    result = run_cli("run", "--config", str(config))
    assert result.code == 1
    assert "cannot open the Edge TPU (usb)" in result.err


class FailingDetector(HangingDetector):
    """The real detector, made to raise from its Nth frame on (fault injection: an unplugged
    Coral cannot be produced on purpose on this machine)."""

    def detect(self, image: Any, timings: dict[str, float] | None = None) -> Any:
        self.calls += 1
        if self.calls >= self.hang_on:
            raise RuntimeError("USB device disconnected")
        return self.real.detect(image, timings)


def test_a_failing_detector_is_opened_again(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    make_frames(frames, 8)
    source = open_source(SourceSettings(url=str(frames)))
    settings = PipelineSettings(max_consecutive_errors=2, max_detector_restarts=1)
    pipeline = Pipeline(
        source,
        FailingDetector(hang_on=3),
        [],
        settings,
        live=False,
        detector_factory=lambda: Detector(DetectorSettings(model=MODEL)),
    )
    stats = pipeline.run()
    assert stats["frames"]["detector_restarts"] == 1
    assert stats["frames"]["detector_errors"] == 2
    assert stats["frames"]["processed"] == 6
    assert stats["detector"]["runtime"]


class SlowOnEvenFrames(HangingDetector):
    """The real detector, delayed on every other call, so that a second interpreter finishes
    later frames first (a timing fault, injected: the order must still come out right)."""

    def detect(self, image: Any, timings: dict[str, float] | None = None) -> Any:
        self.calls += 1
        if self.calls % 2 == 0:
            time.sleep(0.05)
        return self.real.detect(image, timings)


def test_parallel_interpreters_deliver_every_frame_in_capture_order(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    make_frames(frames, 24)
    seen: list[str] = []
    pipeline = Pipeline(
        open_source(SourceSettings(url=str(frames))),
        [SlowOnEvenFrames(hang_on=0), Detector(DetectorSettings(model=MODEL))],
        [],
        PipelineSettings(),
        live=False,
        on_result=lambda handled: seen.append(handled.result.frame.name),
    )
    stats = pipeline.run()
    assert seen == [f"frame_{i:04d}" for i in range(24)]
    assert stats["frames"]["processed"] == 24


def test_a_failing_interpreter_among_two_loses_only_its_frames(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    make_frames(frames, 12)
    seen: list[str] = []
    failing = FailingDetector(hang_on=2)  # fails from its 2nd frame on
    pipeline = Pipeline(
        open_source(SourceSettings(url=str(frames))),
        [failing, Detector(DetectorSettings(model=MODEL))],
        [],
        PipelineSettings(max_consecutive_errors=100),
        live=False,
        on_result=lambda handled: seen.append(handled.result.frame.name),
    )
    stats = pipeline.run()
    assert stats["frames"]["detector_errors"] == failing.calls - 1
    assert stats["frames"]["processed"] == 12 - stats["frames"]["detector_errors"]
    assert seen == sorted(seen) and len(seen) == stats["frames"]["processed"]


def test_parallelism_defaults() -> None:
    assert DetectorSettings().parallelism(cores=2) == (2, 1)
    assert DetectorSettings().parallelism(cores=4) == (2, 2)
    assert DetectorSettings().parallelism(cores=1) == (1, 1)
    assert DetectorSettings(edgetpu="usb").parallelism(cores=4) == (1, 4)
    assert DetectorSettings(interpreters=1, num_threads=3).parallelism(cores=4) == (1, 3)
    assert DetectorSettings(num_threads=4).parallelism(cores=4) == (1, 4)  # tuned for one interpreter
    assert DetectorSettings(interpreters=2, num_threads=2).parallelism(cores=4) == (2, 2)


def test_two_interpreters_on_one_edge_tpu_are_refused_with_the_key_and_line(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("detector:\n  edgetpu: usb\n  interpreters: 2\n")
    result = run_cli("run", "--config", str(config), "--check")
    assert result.code == 2
    assert "agent.yaml:3: detector.interpreters: an Edge TPU runs one interpreter" in result.err


def _assets_by_image(data: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for path in (data / "vott").glob("*-asset.json"):
        meta = json.loads(path.read_text())
        out[meta["asset"]["name"]] = meta
    return out


def test_reduced_decode_gives_full_frame_boxes_like_a_full_decode(shared_dir: Path, tmp_path: Path) -> None:
    """1280x720 camera frames, the print3d SSD (320x320): decoded at half size, detected, and the
    boxes written in full-frame pixels, agreeing with a full-size decode."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for path in sorted((shared_dir / "models" / "print3d" / "images").glob("*.jpg")):
        image = cv2.resize(cv2.imread(str(path)), (1280, 720), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(frames / path.name), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    model = str(shared_dir / "models" / "print3d" / "print3d_2020-10-23_ssd_uint8.tflite")
    results = {}
    for reduced in (True, False):
        out = tmp_path / f"out-{reduced}"
        out.mkdir()
        config = write_config(
            out,
            frames,
            source={"reduced_decode": reduced},
            detector={"model": model, "score_threshold": 0.3},
            alerts={"enabled": False},
            mqtt={"enabled": False},
        )
        result = run_cli("run", "--config", str(config))
        assert result.code == 0, result.err
        results[reduced] = _assets_by_image(out / "data")
        validate_vott(shared_dir, out / "data" / "vott", out / "data" / "frames")
    assert results[True].keys() == results[False].keys() and results[True]
    matched = total = 0
    for name, meta in results[True].items():
        full = results[False][name]
        assert meta["asset"]["size"] == full["asset"]["size"] == {"width": 1280, "height": 720}
        for mine, theirs in ((meta, full), (full, meta)):
            for region in mine["regions"]:
                box = region["boundingBox"]
                # a box of the same label in the other run, within 2 % of the frame on every side
                total += 1
                matched += any(
                    max(abs(box[k] - other["boundingBox"][k]) for k in ("left", "top", "width", "height"))
                    <= 0.02 * 1280
                    for other in theirs["regions"]
                    if other["tags"] == region["tags"]
                )
    # borderline detections may cross the score threshold in one run only; scaled boxes must agree
    assert total >= 8 and matched >= 0.8 * total, (matched, total)
