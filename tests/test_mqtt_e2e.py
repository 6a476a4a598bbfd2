"""End to end: nothing is lost through broker outages and an agent killed with SIGKILL.

A child process (the program below, run with the project's Python) publishes 1,000 frames'
detections, and the JPEG and annotation of every tenth frame, through ``MqttPublisher`` into a
real Mosquitto. Meanwhile the test stops and restarts the broker three times and SIGKILLs the
child once, restarting it where it left off (frames whose progress mark was not yet written
are produced again: same frame ids, as a folder source would re-read them). A persistent
subscriber must receive every one of the 1,000 detection messages and every kept frame and
annotation; duplicates are allowed only as identical copies with the same frame id.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.mosquitto import MessageCollector, mosquitto  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parent.parent
TOTAL = 1000
KEEP_EVERY = 10
DEVICE = "e2e-dev"

CHILD = r"""
import json, logging, signal, sys, time
from pathlib import Path

import numpy as np

from agent.detections import Detections
from agent.frames import Frame, FrameResult
from agent.fsutil import atomic_write_text
from agent.mqtt.client import MqttPublisher
from agent.mqtt.settings import MqttSettings

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
cfg = json.loads(sys.argv[1])
progress = Path(cfg["progress"])
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
publisher = MqttPublisher(MqttSettings.model_validate(cfg["settings"]))
publisher.start()
start = int(progress.read_text()) if progress.exists() else 0
for i in range(start, cfg["total"]):
    image = np.full((96, 128, 3), i % 256, np.uint8)
    frame = Frame(image, "cam0", i, 1_700_000_000 + i / 10, f"frame{i:04d}")
    dets = Detections.create([[10, 20, 50, 60 + i % 30]], [0.5 + (i % 40) / 100], [0], ["spaghetti"])
    result = FrameResult(frame, dets, "print3d", "litert", 5.0 + i % 7, keep=i % cfg["keep_every"] == 0)
    publisher.publish_detections(result)
    if result.keep:
        annotation = {"asset": {"name": frame.name + ".jpg", "size": {"width": 128, "height": 96}},
                      "regions": [{"tags": ["spaghetti"], "boundingBox": {"left": 10, "top": 20,
                                   "width": 40, "height": 40 + i % 30}}], "scores": [float(dets.score[0])]}
        publisher.publish_frame(result, annotation)
    atomic_write_text(progress, str(i + 1), fsync=False)
    time.sleep(cfg["delay_s"])
while not stop:
    time.sleep(0.05)
publisher.close(clean=True)
"""


def _spawn(script: Path, cfg: dict, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, str(script), json.dumps(cfg)], stderr=log, stdout=log, env=env
        )


def _wait_progress(path: Path, at_least: int, child: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.exists() and int(path.read_text() or 0) >= at_least:
            return
        if child.poll() is not None:
            pytest.fail(f"child exited ({child.returncode}):\n{log_path.read_text()[-3000:]}")
        time.sleep(0.01)
    pytest.fail(f"child did not reach frame {at_least}:\n{log_path.read_text()[-3000:]}")


def _statuses(collector: MessageCollector) -> list[str]:
    return [m.payload.decode() for m in collector.on_topic(f"edge-agent/{DEVICE}/status")]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_nothing_lost_through_outages_and_sigkill(mosquitto, tmp_path, capsys):  # noqa: F811
    broker = mosquitto()
    script = tmp_path / "child_agent.py"
    script.write_text(CHILD)
    progress = tmp_path / "progress.txt"
    log_path = tmp_path / "child.log"
    settings = {
        "enabled": True,
        "host": broker.host,
        "port": broker.port,
        "device_id": DEVICE,
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 1.0,
        "keepalive_s": 10,
        "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
    }
    cfg = {"settings": settings, "progress": str(progress), "total": TOTAL, "keep_every": KEEP_EVERY}
    cfg["delay_s"] = 0.004
    collector = MessageCollector(
        broker.host, broker.port, [f"edge-agent/{DEVICE}/#"], client_id="e2e-reviewer", persistent=True
    ).start()
    child = _spawn(script, cfg, log_path)
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
        child = _spawn(script, cfg, log_path)
        assert collector.wait_for(lambda _: _statuses(collector)[-1:] == ["online"], 15)

        # Outages 2 and 3 while the restarted agent keeps producing.
        for stop_at, start_at in ((450, 550), (700, 800)):
            _wait_progress(progress, stop_at, child, log_path)
            broker.stop()
            _wait_progress(progress, start_at, child, log_path)
            broker.start()
        _wait_progress(progress, TOTAL, child, log_path)

        kept = {f"cam0_frame{i:04d}" for i in range(0, TOTAL, KEEP_EVERY)}

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
        assert child.wait(30) == 0, log_path.read_text()[-3000:]
        assert collector.wait_for(lambda _: _statuses(collector)[-1:] == ["stopped"], 15), _statuses(
            collector
        )
    finally:
        if child.poll() is None:
            child.kill()
        collector.stop()

    detections = collector.on_topic(f"edge-agent/{DEVICE}/detections")
    first: dict[str, bytes] = {}
    for message in detections:
        frame_id = json.loads(message.payload)["frame_id"]
        assert first.setdefault(frame_id, message.payload) == message.payload, f"{frame_id} changed on resend"
    counts = Counter(json.loads(m.payload)["frame_id"] for m in detections)
    missing = [f"cam0_frame{i:04d}" for i in range(TOTAL) if f"cam0_frame{i:04d}" not in counts]
    assert arrived and not missing, f"{len(missing)} detection messages never arrived, e.g. {missing[:5]}"
    assert set(counts) == {f"cam0_frame{i:04d}" for i in range(TOTAL)}

    frames = collector.on_topic(f"edge-agent/{DEVICE}/frames/+")
    for message in frames:
        image = cv2.imdecode(np.frombuffer(message.payload, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == (96, 128, 3)
        assert message.properties["UserProperty"]["frame_id"] == message.topic.rsplit("/", 1)[1]
    annotations = collector.on_topic(f"edge-agent/{DEVICE}/annotations/+")
    assert all(json.loads(m.payload)["asset"]["name"].startswith("frame") for m in annotations)

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
