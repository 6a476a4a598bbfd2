"""End to end: nothing is lost through broker outages and an agent killed with SIGKILL.

The real agent (``edge-agent run``) reads 1,000 frames from a folder, detects with a real
(tiny) TFLite model, writes its VoTT project and publishes every frame's detections and every
kept frame's JPEG and annotation through its outbox into a real Mosquitto. Meanwhile the test
stops and restarts the broker three times and SIGKILLs the agent once, restarting it (it resumes
after the last frame it finished). A persistent subscriber must receive every one of the 1,000
detection messages and every kept frame and annotation; duplicates (messages in flight at an
outage or a kill) are allowed only as identical copies with the same frame id.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from tests.mosquitto import MessageCollector, mosquitto  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "tests" / "fixtures" / "models" / "yolov5_layout_uint8.tflite"
TOTAL = 1000
DEVICE = "e2e-dev"


def _make_frames(folder: Path) -> None:
    folder.mkdir()
    base = cv2.imread(str(MODEL.with_suffix(".png")))
    for i in range(TOTAL):
        image = base.copy()
        image[-4:, :] = i % 256  # every frame differs a little
        cv2.imwrite(str(folder / f"frame{i:04d}.jpg"), image)


def _spawn(config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
            stderr=log,
            stdout=log,
            cwd=REPO,
        )


def _frames_written(frames_dir: Path) -> int:
    """How far the agent got: the kept frames in its VoTT frames folder (a restarted agent
    rewrites the first ones, so the count only grows)."""
    return len(list(frames_dir.glob("*.jpg"))) if frames_dir.is_dir() else 0


def _wait_progress(frames_dir: Path, at_least: int, child: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _frames_written(frames_dir) >= at_least:
            return
        if child.poll() is not None:
            pytest.fail(f"child exited ({child.returncode}):\n{log_path.read_text()[-3000:]}")
        time.sleep(0.01)
    pytest.fail(f"child did not reach frame {at_least}:\n{log_path.read_text()[-3000:]}")


def _config(tmp_path: Path, frames: Path, broker: object, **source: object) -> Path:
    config = tmp_path / "agent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "source": {"url": str(frames), "id": "cam0", **source},
                "detector": {"model": str(MODEL)},
                "output": {"dir": str(tmp_path / "data"), "fsync": False},
                "mqtt": {
                    "enabled": True,
                    "host": broker.host,  # type: ignore[attr-defined]
                    "port": broker.port,  # type: ignore[attr-defined]
                    "device_id": DEVICE,
                    "reconnect_min_s": 0.2,
                    "reconnect_max_s": 1.0,
                    "keepalive_s": 10,
                },
            }
        )
    )
    return config


def _statuses(collector: MessageCollector) -> list[str]:
    return [m.payload.decode() for m in collector.on_topic(f"edge-agent/{DEVICE}/status")]


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_nothing_lost_through_outages_and_sigkill(mosquitto, tmp_path, capsys):  # noqa: F811
    broker = mosquitto()
    frames = tmp_path / "frames"
    _make_frames(frames)
    data = tmp_path / "data"
    # watch: the folder never ends, so the agent stops only on our SIGTERM
    config = _config(tmp_path, frames, broker, max_fps=120, watch=True, watch_poll_s=0.2, watch_settle_s=0.2)
    progress = data / "frames"
    log_path = tmp_path / "agent.log"
    collector = MessageCollector(
        broker.host, broker.port, [f"edge-agent/{DEVICE}/#"], client_id="e2e-reviewer", persistent=True
    ).start()
    child = _spawn(config, log_path)
    try:
        assert collector.wait_for(lambda _: "online" in _statuses(collector), 15), "agent never came online"

        # Outage 1, then SIGKILL the agent mid-stream and restart it.
        _wait_progress(progress, 100, child, log_path)
        broker.stop()
        _wait_progress(progress, 200, child, log_path)
        broker.start()
        _wait_progress(progress, 300, child, log_path)
        assert collector.wait_for(lambda _: _statuses(collector)[-1:] == ["online"], 15)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        assert collector.wait_for(lambda _: _statuses(collector)[-1:] == ["offline"], 15), (
            f"no last will after SIGKILL: {_statuses(collector)}"
        )
        child = _spawn(config, log_path)
        assert collector.wait_for(lambda _: _statuses(collector)[-1:] == ["online"], 15)

        # Outages 2 and 3 while the restarted agent keeps producing.
        for stop_at, start_at in ((450, 550), (700, 800)):
            _wait_progress(progress, stop_at, child, log_path)
            broker.stop()
            _wait_progress(progress, start_at, child, log_path)
            broker.start()
        _wait_progress(progress, TOTAL, child, log_path)

        kept = {f"cam0_frame{i:04d}" for i in range(TOTAL)}

        def everything_arrived(_: object) -> bool:
            ids = {
                json.loads(m.payload)["frame_id"]
                for m in collector.on_topic(f"edge-agent/{DEVICE}/detections")
            }
            frames = {m.topic.rsplit("/", 1)[1] for m in collector.on_topic(f"edge-agent/{DEVICE}/frames/+")}
            notes = {
                m.topic.rsplit("/", 1)[1] for m in collector.on_topic(f"edge-agent/{DEVICE}/annotations/+")
            }
            return len(ids) == TOTAL and kept <= frames and kept <= notes

        arrived = collector.wait_for(everything_arrived, 60)

        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == 143, log_path.read_text()[-3000:]  # 128 + SIGTERM: stopped cleanly
        assert collector.wait_for(lambda _: _statuses(collector)[-1:] == ["stopped"], 15), _statuses(
            collector
        )
    finally:
        if child.poll() is None:
            child.kill()
        collector.stop()

    detections = collector.on_topic(f"edge-agent/{DEVICE}/detections")
    # A resent message is byte-identical; a frame processed again after the restart carries the
    # same frame id and detections (only timings differ).
    first: dict[str, list[object]] = {}
    for message in detections:
        payload = json.loads(message.payload)
        seen = first.setdefault(payload["frame_id"], payload["detections"])
        assert seen == payload["detections"], f"{payload['frame_id']} changed on resend"
    counts = Counter(json.loads(m.payload)["frame_id"] for m in detections)
    missing = [f"cam0_frame{i:04d}" for i in range(TOTAL) if f"cam0_frame{i:04d}" not in counts]
    assert arrived and not missing, f"{len(missing)} detection messages never arrived, e.g. {missing[:5]}"
    assert set(counts) == {f"cam0_frame{i:04d}" for i in range(TOTAL)}

    frames = collector.on_topic(f"edge-agent/{DEVICE}/frames/+")
    for message in frames:
        image = cv2.imdecode(np.frombuffer(message.payload, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == (96, 96, 3)
        assert message.properties["UserProperty"]["frame_id"] == message.topic.rsplit("/", 1)[1]
    annotations = collector.on_topic(f"edge-agent/{DEVICE}/annotations/+")
    ids = {json.loads(m.payload)["frame_id"] for m in annotations}
    assert ids == {f"cam0_frame{i:04d}" for i in range(TOTAL)}
    assert all(m.topic.endswith("/" + json.loads(m.payload)["frame_id"]) for m in annotations)

    statuses = _statuses(collector)
    assert statuses[0] == "online" and statuses[-1] == "stopped"
    assert "offline" in statuses
    duplicates = len(detections) - len(counts)
    with capsys.disabled():
        print(
            f"\n[mqtt e2e] {len(detections)} detection messages for {len(counts)} frames: "
            f"{duplicates} duplicate(s) "
            f"(same frame id); frames {len(frames)} for {len(kept)} kept, annotations {len(annotations)}; "
            f"status sequence {statuses}"
        )


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_a_restart_after_sigkill_resumes_and_publishes_few_frames_twice(mosquitto, tmp_path, capsys):  # noqa: F811
    """SIGKILL at a random moment of a 1,000-frame folder run, then a restart: every frame is
    published, and only the frames in flight at the kill are published twice (fewer than 10)."""
    broker = mosquitto()
    frames = tmp_path / "frames"
    _make_frames(frames)
    config = _config(tmp_path, frames, broker, max_fps=200)
    log_path = tmp_path / "agent.log"
    collector = MessageCollector(
        broker.host, broker.port, [f"edge-agent/{DEVICE}/detections"], client_id="e2e-resume", persistent=True
    ).start()
    kill_at = int(np.random.default_rng().integers(150, 850))
    child = _spawn(config, log_path)
    try:
        _wait_progress(tmp_path / "data" / "frames", kill_at, child, log_path)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child = _spawn(config, log_path)
        assert child.wait(120) == 0, log_path.read_text()[-3000:]

        def counts() -> Counter[str]:
            return Counter(
                json.loads(m.payload)["frame_id"]
                for m in collector.on_topic(f"edge-agent/{DEVICE}/detections")
            )

        assert collector.wait_for(lambda _: len(counts()) == TOTAL, 30), f"{len(counts())} of {TOTAL} arrived"
    finally:
        if child.poll() is None:
            child.kill()
        collector.stop()
    twice = sorted(frame_id for frame_id, n in counts().items() if n > 1)
    with capsys.disabled():
        print(f"\n[resume] killed near frame {kill_at}: {len(twice)} frame(s) published twice {twice}")
    assert len(twice) < 10, twice
    assert "resuming after" in log_path.read_text()
