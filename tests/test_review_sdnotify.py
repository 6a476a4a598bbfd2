"""``edge-agent review`` under a real notify socket, as systemd runs it (Type=notify, WatchdogSec):
READY=1 once subscribed, STATUS, watchdog pings while the worker makes progress and none while
it hangs (here: on a device lock another receiver holds and keeps alive), more start-up time
while the broker is unreachable, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.review.locks import LeaseLocks
from tests.mosquitto import free_port, mosquitto  # noqa: F401 (fixture)
from tests.test_sdnotify import Listener

REPO = Path(__file__).resolve().parent.parent
WATCHDOG_S = 3.0  # WatchdogSec for the test: a tick (STATUS, maybe WATCHDOG=1) every 1.5 s


@pytest.fixture
def listener() -> Iterator[tuple[Listener, str]]:
    folder = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")
    path = os.path.join(folder, "notify")
    lst = Listener(path)
    yield lst, path
    lst.sock.close()
    os.unlink(path)
    os.rmdir(folder)


def spawn(tmp_path: Path, host: str, port: int, notify_path: str) -> subprocess.Popen[bytes]:
    config = {
        "mqtt": {"host": host, "port": port, "client_id": "sd", "reconnect_min_s": 0.2, "reconnect_max_s": 1},
        "root": str(tmp_path / "root"), "batch_by": "manual", "fsync": False, "min_free_mb": 0,
        "stats_interval_s": 0.5, "lock_wait_s": 600,
    }  # fmt: skip
    (tmp_path / "review.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": notify_path,
           "WATCHDOG_USEC": str(int(WATCHDOG_S * 1e6))}  # fmt: skip
    env.pop("WATCHDOG_PID", None)
    with open(tmp_path / "receiver.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "review", "--config", str(tmp_path / "review.yaml")],
            stdout=log, stderr=log, env=env,
        )  # fmt: skip


def stats(tmp_path: Path) -> dict:
    try:
        return json.loads((tmp_path / "root" / ".edge-agent-review" / "stats-sd.json").read_text())
    except (OSError, ValueError):
        return {}


@pytest.mark.timeout(180)
def test_ready_when_subscribed_and_pings_only_while_the_worker_progresses(mosquitto, tmp_path, listener):  # noqa: F811
    lst, notify_path = listener
    broker = mosquitto()
    proc = spawn(tmp_path, broker.host, broker.port, notify_path)
    try:
        before_ready = []
        while (message := lst.receive()).get("READY") != "1":
            before_ready.append(message)
        assert "subscribed" in message["STATUS"]
        assert not any(m.get("READY") for m in before_ready)

        pings = 0
        while pings < 2:  # the idle worker counts as progress
            message = lst.receive()
            assert "STATUS" in message
            pings += message.get("WATCHDOG") == "1"

        # Another receiver holds the device's lock and keeps it alive: our worker waits in put_frame.
        holder = LeaseLocks(tmp_path / "root" / ".edge-agent-review" / "locks", "other-receiver", lease_s=30)
        holder.acquire("device-cam", wait_s=10)
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        client.connect(broker.host, broker.port)
        client.loop_start()
        frame = cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8))[1].tobytes()
        client.publish("edge-agent/cam/frames/f1", frame, qos=1).wait_for_publish(10)
        # At most the ticks that saw the worker's last beats still ping; then none for longer than
        # WatchdogSec: systemd would restart the receiver.
        while lst.receive().get("WATCHDOG") == "1":
            pass
        silent = [lst.receive() for _ in range(3)]  # 3 ticks of 1.5 s: 4.5 s > WatchdogSec
        assert all("WATCHDOG" not in m and "STATUS" in m for m in silent), silent
        assert stats(tmp_path).get("frames_written", 0) == 0

        holder.release("device-cam")  # the worker gets the lock, stores the frame, pings resume
        while lst.receive().get("WATCHDOG") != "1":
            pass
        holder.close()
        client.loop_stop()
        client.disconnect()
        assert (next((tmp_path / "root" / "cam").glob("*/frames")) / "f1.jpg").read_bytes() == frame

        proc.send_signal(signal.SIGTERM)
        while lst.receive().get("STOPPING") != "1":
            pass
        assert proc.wait(30) == 143
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.timeout(120)
def test_while_the_broker_is_unreachable_it_asks_for_more_start_time(tmp_path, listener):
    lst, notify_path = listener
    proc = spawn(tmp_path, "127.0.0.1", free_port(), notify_path)
    try:
        messages = []
        while not any("EXTEND_TIMEOUT_USEC" in m for m in messages):
            messages.append(lst.receive())
        extend = next(m for m in messages if "EXTEND_TIMEOUT_USEC" in m)
        assert int(extend["EXTEND_TIMEOUT_USEC"]) >= 10_000_000
        assert "waiting for the broker 127.0.0.1:" in extend["STATUS"]
        assert not any(m.get("READY") for m in messages)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
