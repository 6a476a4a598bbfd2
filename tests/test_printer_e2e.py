"""3D-printer monitoring end to end: the real print3d model watches a webcam stream and pauses a print.

``edge-agent run`` runs as a subprocess, as on a Pi beside a printer. Around it, on 127.0.0.1:

- ``MjpegWebcam`` serves ``/webcam/?action=stream`` like mjpg-streamer behind OctoPi: one JPEG
  part every ``PART_INTERVAL_S``, cycling through the frames the test puts on show. Healthy
  frames are real printer-camera frames from ../shared/models/print3d/images cropped to leave
  the failure out (the fixture checks with the detector that they score 0); failure frames are
  those images whole.
- ``FakeOctoPrint`` (tests/printer_hosts.py) stands in for OctoPrint's REST API (no OctoPrint runs
  here): ``GET /api/job`` reports the job state and name, ``POST /api/job`` pauses, every call needs
  the API key and is recorded.
- MQTT is on but points at a closed port, so every message waits in the on-disk outbox, where
  the test reads the alerts a broker would have received.

The story: a healthy stretch (no alert), then spaghetti (``warn`` within ``WARN_WITHIN_SAMPLES``
samples, then ``act``: one pause call), the agent is killed and restarted while the print is
paused (it restores its alert state and does not alert again), the user resumes with a little
mess still in view (the alert clears, no second pause), and only when the score rises again
does it warn and pause a second time.

Alert settings are Obico's defaults except what makes a print take seconds instead of hours:
a 5-sample startup grace, a 2 s cooldown and frames 0.25 s apart instead of 10 s.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from agent.mqtt.messages import MessageClass
from agent.mqtt.outbox import Outbox
from tests.helpers import REPO, serve_on_loopback
from tests.printer_hosts import FakeOctoPrint

MODEL_NAME = "print3d_2020-10-23_ssd_uint8.tflite"
API_KEY = "E2E0123456789ABCDEF0123456789ABC"
KEY_ENV = "E2E_OCTOPRINT_API_KEY"
DEVICE = "printer-e2e"
JOB = "benchy_0.2mm_PLA.gcode"
PART_INTERVAL_S = 0.25  # the webcam sends a new frame this often; the agent samples every 0.2 s
GRACE_SAMPLES = 5
HEALTHY_SAMPLES = 40  # judged healthy samples after the grace: the print's normal level
WARN_WITHIN_SAMPLES = 6  # a warn comes within this many samples of the failure's first frame
ACT_WITHIN_SAMPLES = 14  # and act within this many
RESUME_GRACE_SAMPLES = 3
QUIET_SAMPLES_AFTER_RESUME = 15
STEP_TIMEOUT_S = 30.0

# Regions of the real frames that show the printer without the failure (x1, y1, x2, y2).
HEALTHY_CROPS = (
    ("frame_3.jpg", (0, 0, 1920, 540)),  # the hotend above the bed, spaghetti cut off below
    ("frame_5.jpg", (900, 0, 1280, 720)),  # the right of the bed with a raft
    ("frame_0.jpg", (320, 0, 640, 240)),  # a part on the bed, away from the tangle
    ("frame_2.jpg", (0, 0, 640, 250)),  # the printer above the lifted corner
)
FAILURE_CYCLE = ("frame_0.jpg", "frame_5.jpg", "frame_3.jpg", "frame_2.jpg")  # spaghetti, adhesion
MESS_AFTER_RESUME = "frame_2.jpg"  # spaghetti cleared, the lifted corner still in view
RISE = "frame_0.jpg"  # spaghetti again


@dataclass(frozen=True)
class PrinterFrames:
    """JPEG bytes of the frames the webcam serves."""

    healthy: list[bytes]
    failure: list[bytes]
    mess: bytes
    rise: bytes


def _jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def load_printer_frames(shared_dir: Path) -> PrinterFrames:
    """Healthy crops and failure frames from ../shared/models/print3d/images, as JPEG bytes."""
    images = shared_dir / "models" / "print3d" / "images"

    def read(name: str) -> np.ndarray:
        image = cv2.imread(str(images / name))
        assert image is not None, f"cannot read {images / name}"
        return image

    healthy = []
    for name, (x1, y1, x2, y2) in HEALTHY_CROPS:
        healthy.append(_jpeg(np.ascontiguousarray(read(name)[y1:y2, x1:x2])))
    whole = {name: _jpeg(read(name)) for name in {*FAILURE_CYCLE, MESS_AFTER_RESUME, RISE}}
    return PrinterFrames(
        healthy=healthy,
        failure=[whole[name] for name in FAILURE_CYCLE],
        mess=whole[MESS_AFTER_RESUME],
        rise=whole[RISE],
    )


def detector_settings_yaml(model: Path) -> dict[str, Any]:
    """The detector section: failure labels kept down to Obico's 0.08 so faint evidence counts."""
    return {"model": str(model), "class_thresholds": {"spaghetti": 0.08, "adhesion": 0.08}}


@pytest.fixture(scope="module")
def frames(shared_dir: Path) -> PrinterFrames:
    """The served frames, checked with the real model: healthy ones score 0, failures clearly more."""
    from agent.alerts import failure_score
    from agent.config.alerts import AlertSettings
    from agent.config.detector import DetectorSettings
    from agent.detect.detector import Detector

    loaded = load_printer_frames(shared_dir)
    detector = Detector(
        DetectorSettings.model_validate(
            detector_settings_yaml(shared_dir / "models" / "print3d" / MODEL_NAME)
        )
    )
    settings = AlertSettings()

    def score(jpeg: bytes) -> float:
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        return failure_score(detector.detect(image), settings)

    healthy_scores = [score(j) for j in loaded.healthy]
    failure_scores = [score(j) for j in loaded.failure]
    assert max(healthy_scores) < 0.05, f"a healthy crop shows a failure to the model: {healthy_scores}"
    assert min(failure_scores) > 0.3, f"a failure frame scores too low: {failure_scores}"
    assert score(loaded.rise) > score(loaded.mess) + 1.2
    return loaded


# -- the webcam ------------------------------------------------------------------------------------


class MjpegWebcam:
    """An MJPEG webcam (``multipart/x-mixed-replace``) at ``/webcam/?action=stream``: one part every
    ``PART_INTERVAL_S``, cycling through the frames on show."""

    def __init__(self, frames: list[bytes]) -> None:
        self._lock = threading.Lock()
        self._playlist = list(frames)
        self._next = 0
        self._closed = threading.Event()
        self.connections = 0
        webcam = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if not self.path.startswith("/webcam/") or "action=stream" not in self.path:
                    self.send_error(404)
                    return
                webcam.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=boundarydonotcross")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                try:
                    while not webcam._closed.is_set():
                        jpeg = webcam._take()
                        self.wfile.write(
                            b"--boundarydonotcross\r\nContent-Type: image/jpeg\r\n"
                            + f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                            + jpeg
                            + b"\r\n"
                        )
                        self.wfile.flush()
                        webcam._closed.wait(PART_INTERVAL_S)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the agent went away (killed or stopped)

            def log_message(self, *args: Any) -> None:
                pass

        self.server, base = serve_on_loopback(Handler)
        self.url = f"{base}/webcam/?action=stream"

    def _take(self) -> bytes:
        with self._lock:
            jpeg = self._playlist[self._next % len(self._playlist)]
            self._next += 1
            return jpeg

    def show(self, frames: list[bytes]) -> None:
        """Serve these frames from the next part on, in a cycle."""
        with self._lock:
            self._playlist = list(frames)
            self._next = 0

    def close(self) -> None:
        self._closed.set()
        self.server.shutdown()
        self.server.server_close()


# -- the agent -------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Agent:
    """``edge-agent run --config CONFIG`` as a subprocess, logging into ``log_path``."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.log_path = log_path
        env = {**os.environ, KEY_ENV: API_KEY, "PYTHONPATH": str(REPO)}
        env.pop("NOTIFY_SOCKET", None)
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=config.parent,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alert_lines(self) -> list[str]:
        return [line for line in self.log.splitlines() if "ALERT " in line]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def read_state(path: Path) -> dict[str, Any]:
    for _ in range(20):
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(0.05)
    return {}


def wait_for(
    condition: Callable[[], bool], what: str, agent: Agent, timeout_s: float = STEP_TIMEOUT_S
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        if agent.proc.poll() is not None:
            pytest.fail(
                f"the agent exited ({agent.proc.returncode}) while waiting for {what}:\n{agent.log[-4000:]}"
            )
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}; agent log:\n{agent.log[-4000:]}")


def write_config(tmp_path: Path, model: Path, webcam: MjpegWebcam, octoprint: FakeOctoPrint) -> Path:
    config = {
        "source": {"url": webcam.url, "id": "octopi", "interval_s": 0.2},
        "detector": detector_settings_yaml(model),
        "output": {"dir": str(tmp_path / "data"), "fsync": False},
        "harvest": {"policies": ["detection"], "detection": {"labels": ["spaghetti", "adhesion"]}},
        "alerts": {
            "enabled": True,
            "action": "pause",
            "startup_grace_samples": GRACE_SAMPLES,
            "resume_grace_samples": RESUME_GRACE_SAMPLES,
            "min_sample_interval_s": 0.1,
            "cooldown_s": 2,
            "state_file": str(tmp_path / "data" / "alert-state.json"),
            "state_save_interval_s": 0,  # the test follows the samples in the state file
            # The webcam cycles crops of four different photos, not one camera's view of one print:
            # the scene check would rightly leave them out (tests/test_scene_check.py tests it).
            "scene": {"enabled": False},
        },
        "printer": {
            "kind": "octoprint",
            "url": octoprint.url,
            "api_key_env": KEY_ENV,
            "poll_interval_s": 0.2,
            "timeout_s": 2,
        },
        "mqtt": {
            "enabled": True,
            "host": "127.0.0.1",
            "port": closed_port(),
            "device_id": DEVICE,
            "reconnect_min_s": 5,
            "reconnect_max_s": 5,
            "close_timeout_s": 0.5,
            "frame_max_width_px": 320,
            "outbox": {"path": str(tmp_path / "data" / "outbox.sqlite3")},
        },
    }
    path = tmp_path / "printer.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def outbox_messages(path: Path) -> list[tuple[MessageClass, str, bytes, str | None]]:
    box = Outbox(path, max_bytes=10**12, max_age_s=10**9)
    try:
        return [
            (m.message.klass, m.message.topic, m.message.payload, m.message.frame_id)
            for m in box.take(100000)
        ]
    finally:
        box.close()


def failure_run_length(history: list[dict[str, Any]]) -> int:
    """Samples at the end of an alert's history since the score left 0 (the failure's first frame)."""
    count = 0
    for item in reversed(history):
        if item["score"] <= 0.1:
            break
        count += 1
    return count


@pytest.fixture
def webcam(frames: PrinterFrames) -> Iterator[MjpegWebcam]:
    server = MjpegWebcam(frames.healthy)
    yield server
    server.close()


@pytest.fixture
def octoprint() -> Iterator[FakeOctoPrint]:
    server = FakeOctoPrint(API_KEY, file_name=JOB, print_time=None)
    yield server
    server.close()


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_a_failure_warns_then_pauses_once_and_survives_a_restart(
    shared_dir: Path,
    tmp_path: Path,
    frames: PrinterFrames,
    webcam: MjpegWebcam,
    octoprint: FakeOctoPrint,
) -> None:
    config = write_config(tmp_path, shared_dir / "models" / "print3d" / MODEL_NAME, webcam, octoprint)
    state_file = tmp_path / "data" / "alert-state.json"

    def samples() -> int:
        return int(read_state(state_file).get("samples_this_print", 0))

    # 1. A healthy print: no alert, no pause.
    first = Agent(config, tmp_path / "agent-1.log")
    try:
        wait_for(lambda: samples() >= GRACE_SAMPLES + HEALTHY_SAMPLES, "the healthy stretch", first)
        assert first.alert_lines() == []
        assert octoprint.pauses == []
        state = read_state(state_file)
        assert state["print_name"] == JOB and state["notified"] == "ok" and state["alerts_this_print"] == 0

        # 2. Spaghetti: warn, then act, which pauses the print once.
        webcam.show(frames.failure)
        wait_for(lambda: len(octoprint.pauses) == 1, "the pause call", first)
        wait_for(
            lambda: read_state(state_file).get("print_status") == "paused",
            "the agent to see the pause",
            first,
        )
        alerts = first.alert_lines()
        assert len(alerts) == 2 and "ALERT warn" in alerts[0] and "ALERT act" in alerts[1], alerts
        assert f"for print {JOB!r}" in alerts[1] and "action: pause" in alerts[1]
        assert "is paused: OctoPrint reports Paused after 1 pause request" in first.log

        # 3. The agent dies while the print is paused, and comes back with its alert state.
        first.kill()
    finally:
        if first.proc.poll() is None:
            first.kill()
    state = read_state(state_file)
    assert (
        state["notified"] == "act" and state["alerts_this_print"] == 2 and state["print_status"] == "paused"
    )
    polls_before = octoprint.polls
    second = Agent(config, tmp_path / "agent-2.log")
    try:
        wait_for(
            lambda: octoprint.polls >= polls_before + 5, "the restarted agent to watch the printer", second
        )
        assert f"restored alert state for print {JOB!r}" in second.log
        assert "new print" not in second.log

        # 4. The user clears the spaghetti and resumes, the lifted corner still in view.
        webcam.show([frames.mess])
        time.sleep(3 * PART_INTERVAL_S)
        resumed_at = samples()
        octoprint.state = "Printing"
        wait_for(lambda: "alert cleared" in second.log, "the alert to clear on resume", second)
        wait_for(
            lambda: samples() >= resumed_at + RESUME_GRACE_SAMPLES + QUIET_SAMPLES_AFTER_RESUME,
            "samples after the resume",
            second,
        )
        assert second.alert_lines() == [], "re-alerted after the resume without a rising score"
        assert len(octoprint.pauses) == 1

        # 5. The score rises again: a new warning and a second pause.
        webcam.show([frames.rise])
        wait_for(lambda: len(octoprint.pauses) == 2, "the second pause", second)
        wait_for(
            lambda: read_state(state_file).get("print_status") == "paused", "the second pause seen", second
        )
        alerts = second.alert_lines()
        assert len(alerts) == 2 and "ALERT warn" in alerts[0] and "ALERT act" in alerts[1], alerts
        assert second.stop() == 143, second.log[-3000:]
    finally:
        if second.proc.poll() is None:
            second.kill()

    # What the printer saw: state polls and exactly two pauses, all with the API key.
    assert all(c.headers.get("X-Api-Key") == API_KEY for c in octoprint.calls)
    assert [c.json() for c in octoprint.pauses] == [{"command": "pause", "action": "pause"}] * 2

    # What a broker would have received: the alerts, in order, each with the snapshot it points at.
    messages = outbox_messages(tmp_path / "data" / "outbox.sqlite3")
    alerts_payloads = [
        json.loads(payload) for klass, topic, payload, _ in messages if topic == f"edge-agent/{DEVICE}/alerts"
    ]
    assert all(klass == MessageClass.ALERT for klass, topic, _, _ in messages if topic.endswith("/alerts"))
    assert [a["level"] for a in alerts_payloads] == ["warn", "act", "clear", "warn", "act"]
    assert [a["active"] for a in alerts_payloads] == [True, True, False, True, True]
    assert [a["action"] for a in alerts_payloads] == ["none", "pause", "none", "none", "pause"]
    assert {a["print"] for a in alerts_payloads} == {JOB}
    assert {a["device_id"] for a in alerts_payloads} == {DEVICE}
    frame_ids = {frame_id for klass, _, _, frame_id in messages if klass == MessageClass.FRAME}
    for alert in alerts_payloads:
        if alert["level"] != "clear":
            assert alert["frame_id"] in frame_ids, f"the {alert['level']} snapshot was not queued"
    warn, act = alerts_payloads[0], alerts_payloads[1]
    run = failure_run_length(warn["history"])
    assert 1 <= run <= WARN_WITHIN_SAMPLES
    assert warn["history"][-run - 1]["score"] == 0, "the sample before the failure was a healthy one"
    assert failure_run_length(warn["history"]) < failure_run_length(act["history"]) <= ACT_WITHIN_SAMPLES

    # The state file after the clean stop: the print is paused a second time, the alert on.
    state = read_state(state_file)
    assert (
        state["print_status"] == "paused" and state["notified"] == "act" and state["alerts_this_print"] == 4
    )


# -- example configs -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["printer-octoprint.yaml", "printer-moonraker.yaml"])
def test_example_printer_configs_name_the_print3d_failure_labels(name: str, shared_dir: Path) -> None:
    from agent.alerts import validate_failure_labels
    from agent.config import load_config
    from agent.detect.detector import Detector

    config = load_config(REPO / "configs" / name)
    assert config.printer.kind == name.removeprefix("printer-").removesuffix(".yaml")
    assert config.alerts.enabled and config.alerts.action == "pause"
    model = shared_dir / "models" / "print3d" / MODEL_NAME
    detector = Detector(config.detector.model_copy(update={"model": str(model)}))
    validate_failure_labels(config.alerts, detector.labels)
