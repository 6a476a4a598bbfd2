"""The receiver over a real Mosquitto: a persistent session delivers what was published while it
was down, a SIGKILL loses nothing and stores nothing twice, TLS with a client certificate and a
password works with the agent's own publisher, and the ``edge-agent review`` command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.config.mqtt import MqttSettings
from agent.config.review import ReviewSettings
from agent.detections import Detections
from agent.frames import Frame, FrameResult
from agent.mqtt.publisher import MqttPublisher
from agent.review.receiver import ReviewReceiver
from agent.vott import load_project
from tests.helpers import run_cli
from tests.mosquitto import (
    CertificateAuthority,
    mosquitto,  # noqa: F401 (fixture)
    require_mosquitto,
    write_acl_file,
    write_password_file,
)

REPO = Path(__file__).resolve().parent.parent


def jpeg(seed: int) -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def note(frame_id: str, right: int = 30) -> bytes:
    """An ``edge-agent.detections/1`` record for a 64x48 frame with one box."""
    return json.dumps(
        {
            "schema": "edge-agent.detections/1",
            "frame_id": frame_id,
            "width": 64,
            "height": 48,
            "model": "test.tflite",
            "detections": [
                {"label": "part", "class_id": 0, "score": 0.75, "box_xyxy": [2, 3, 2 + right, 23]}
            ],
        }
    ).encode()


def publisher(broker, protocol: int = 5) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        protocol=MQTTProtocolVersion.MQTTv5 if protocol == 5 else MQTTProtocolVersion.MQTTv311,
    )
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def publish_all(client: mqtt.Client, messages: list[tuple[str, bytes]]) -> None:
    infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(30)


def settings(broker, root: Path, **mqtt_overrides) -> ReviewSettings:
    values = {"host": broker.host, "port": broker.port, "client_id": "desk", "reconnect_min_s": 0.2,
              "reconnect_max_s": 0.5, **mqtt_overrides}  # fmt: skip
    return ReviewSettings.model_validate(
        {"mqtt": values, "root": str(root), "batch_by": "manual", "fsync": False, "min_free_mb": 0}
    )


class Running:
    """A receiver on a thread of this process."""

    def __init__(self, config: ReviewSettings) -> None:
        self.receiver = ReviewReceiver(config)
        self.result: dict = {}
        self.thread = threading.Thread(target=lambda: self.result.update(self.receiver.run()), daemon=True)

    def __enter__(self) -> ReviewReceiver:
        self.thread.start()
        assert wait(lambda: self.receiver.stats_snapshot()["subscribed"]), "receiver did not subscribe"
        return self.receiver

    def __exit__(self, *exc: object) -> None:
        self.receiver.stop()
        self.thread.join(15)
        assert not self.thread.is_alive()


def wait(condition, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def files(root: Path, device: str, kind: str) -> list[str]:
    return sorted(p.stem for p in root.glob(f"{device}/*/{kind}/*") if not p.name.startswith("."))


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_what_is_published_while_the_receiver_is_down_arrives_when_it_is_back(mosquitto, tmp_path, protocol):  # noqa: F811
    broker = mosquitto()
    root = tmp_path / "root"
    config = settings(broker, root, protocol=protocol)
    with Running(config):
        pass  # first start: the broker creates our session and subscriptions
    client = publisher(broker, 5 if protocol == "5" else 4)
    try:
        publish_all(client, [(f"edge-agent/cam/frames/f{i}", jpeg(i)) for i in range(5)])
        publish_all(client, [(f"edge-agent/cam/annotations/f{i}", note(f"f{i}")) for i in range(5)])
        broker.restart()  # a broker restart in between does not lose the queued messages either
        with Running(config) as receiver:
            assert wait(lambda: receiver.stats_snapshot()["received"] == 10)
            stats = receiver.stats_snapshot()
    finally:
        client.loop_stop()
        client.disconnect()
    assert (stats["frames_written"], stats["annotations_stored"], stats["dropped_total"]) == (5, 5, 0)
    assert files(root, "cam", "frames") == [f"f{i}" for i in range(5)]


@pytest.mark.timeout(120)
def test_a_receiver_killed_mid_stream_loses_nothing_and_stores_each_frame_once(mosquitto, tmp_path):  # noqa: F811
    broker = mosquitto()
    root = tmp_path / "root"
    config_path = tmp_path / "review.yaml"
    config = settings(broker, root).model_dump()
    config.update(fsync=True, stats_interval_s=0.5)
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log_path = tmp_path / "receiver.log"

    def spawn() -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "review", "--config", str(config_path)],
                stdout=log, stderr=log, env=env,
            )  # fmt: skip

    def stats() -> dict:
        try:
            return json.loads((root / ".edge-agent-review" / "stats-desk.json").read_text())
        except (OSError, ValueError):
            return {}

    total = 300
    receiver = spawn()
    client = publisher(broker)
    try:
        assert wait(lambda: stats().get("subscribed")), log_path.read_text()
        messages = []
        for i in range(total):
            messages += [
                (f"edge-agent/cam/annotations/f{i:04d}", note(f"f{i:04d}")),
                (f"edge-agent/cam/frames/f{i:04d}", jpeg(i)),
            ]
        publish_all(client, messages)
        assert wait(lambda: len(files(root, "cam", "frames")) >= total // 4), log_path.read_text()[-2000:]
        receiver.send_signal(signal.SIGKILL)
        receiver.wait(10)
        assert len(files(root, "cam", "frames")) < total, "killed too late to prove anything"
        receiver = spawn()
        assert wait(
            lambda: (
                len(files(root, "cam", "frames")) == total and len(files(root, "cam", "annotations")) == total
            ),
            60,
        ), log_path.read_text()[-2000:]
        receiver.send_signal(signal.SIGTERM)
        assert receiver.wait(20) == 143  # 128 + SIGTERM: a clean stop (the unit says so)
    finally:
        client.loop_stop()
        client.disconnect()
        if receiver.poll() is None:
            receiver.kill()
    frames = Counter(p.name for p in root.glob("cam/*/frames/*"))
    assert sorted(frames) == [f"f{i:04d}.jpg" for i in range(total)]  # once each, no temp files left
    assert list(root.glob("cam/*/annotations/.*")) == []
    final = stats()
    assert final["dropped_total"] == 0
    run_cli("review", "--config", str(config_path), "--close-batch", env=env)
    [project] = [load_project(p.parent) for p in root.glob("cam/*/vott/*.vott")]
    assert len(project.assets) == total


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    require_mosquitto()
    folder = tmp_path_factory.mktemp("review-pki")
    ca = CertificateAuthority(folder / "ca")
    return {"ca": ca.cert, "server": ca.issue("broker", server=True), "reviewer": ca.issue("reviewer"),
            "devA": ca.issue("devA")}  # fmt: skip


def test_tls_client_certificate_and_password_with_the_agents_publisher(mosquitto, pki, tmp_path, monkeypatch):  # noqa: F811
    users = {"reviewer": "review-pw", "devA": "dev-pw"}
    acl = write_acl_file(
        tmp_path / "acl", ["user reviewer", "topic read edge-agent/#", "pattern write edge-agent/%u/#"]
    )
    broker = mosquitto(
        cafile=pki["ca"],
        certfile=pki["server"][0],
        keyfile=pki["server"][1],
        require_certificate=True,
        password_file=write_password_file(tmp_path / "passwd", users),
        acl_file=acl,
    )
    monkeypatch.setenv("EDGE_REVIEW_TEST_PW", "review-pw")
    (tmp_path / "dev-pw").write_text("dev-pw\n")
    root = tmp_path / "root"
    cert, key = pki["reviewer"]
    config = settings(
        broker, root, ca_file=str(pki["ca"]), cert_file=str(cert), key_file=str(key), username="reviewer",
        password_env="EDGE_REVIEW_TEST_PW", shared_group="desk",
    )  # fmt: skip
    agent_settings = MqttSettings(
        enabled=True, host=broker.host, port=broker.port, device_id="devA", username="devA",
        password_file=str(tmp_path / "dev-pw"), ca_file=str(pki["ca"]), cert_file=str(pki["devA"][0]),
        key_file=str(pki["devA"][1]), outbox={"path": str(tmp_path / "outbox.sqlite3")},
    )  # fmt: skip
    image = np.zeros((480, 2400, 3), np.uint8)
    image[100:300, 200:900] = 255
    frame = Frame(image, "cam", 1, 1_790_000_000.0, "frame_0001")
    dets = Detections.create([[200, 100, 900, 300]], [0.91], [0], ["spaghetti"])
    result = FrameResult(frame, dets, "print3d", "litert", 5.0)
    with Running(config) as receiver, MqttPublisher(agent_settings) as agent:
        agent.publish_frame(result)  # resized to 1920 px on the way, its annotation with it
        assert wait(lambda: receiver.stats_snapshot()["received"] == 2)
        stats = receiver.stats_snapshot()
    assert (stats["frames_written"], stats["annotations_stored"]) == (1, 1), stats
    run_cli("review", "--config", _write(tmp_path, config), "--close-batch")
    [project_file] = root.glob("devA/*/vott/*.vott")
    [asset] = load_project(project_file.parent).assets
    assert (asset.width, asset.height) == (1920, 384)
    np.testing.assert_allclose(asset.xyxy, [[160, 80, 720, 240]])
    assert asset.labels == ["spaghetti"] and asset.scores.tolist() == pytest.approx([0.91])


def _write(tmp_path: Path, config: ReviewSettings) -> str:
    path = tmp_path / "review.yaml"
    path.write_text(yaml.safe_dump(config.model_dump()))
    return str(path)


def test_the_command_line_checks_lists_and_closes(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("root: x\nbatch_by: weekly\n")
    result = run_cli("review", "--config", str(bad), "--check")
    assert result.code == 2 and f"{bad}:2: batch_by" in result.err and "Traceback" not in result.err

    root = tmp_path / "root"
    config = tmp_path / "review.yaml"
    config.write_text(
        yaml.safe_dump({"root": str(root), "reviewer_root": "C:\\Users\\ann\\review", "min_free_mb": 0})
    )
    assert run_cli("review", "--config", str(config), "--check").code == 0
    assert "no batches" in run_cli("review", "--config", str(config), "--list").out

    from agent.review.annotation import parse_annotation
    from agent.review.store import ReviewStore

    store = ReviewStore(ReviewSettings.model_validate(yaml.safe_load(config.read_text())))
    store.put_frame("cam", "f1", jpeg(1))
    store.put_annotation(
        "cam",
        "f1",
        parse_annotation(note("f1"), "cam", "f1", max_side_px=99, max_regions=9, max_label_chars=9),
    )
    store.put_frame("cam", "f2", jpeg(2))
    store.close()
    listing = run_cli("review", "--config", str(config), "--list").out
    assert "cam/" in listing and ": open (2 frames, 1 annotations)" in listing

    closed = run_cli("review", "--config", str(config), "--close-batch", "--device", "cam")
    assert closed.code == 0, closed.err
    [project_file] = root.glob("cam/*/vott/*.vott")
    assert f"open in VoTT: {project_file}" in closed.out and "2 frames, 1 pre-labelled" in closed.out
    data = json.loads(project_file.read_text())
    assert data["sourceConnection"]["providerOptions"]["folderPath"].startswith(
        "C:\\Users\\ann\\review\\cam\\"
    )
    assert ": closed (2 frames, 1 pre-labelled)" in run_cli("review", "--config", str(config), "--list").out
    assert "no open or sealed batch" in run_cli("review", "--config", str(config), "--close-batch").out
    assert run_cli("review", "--config", str(config), "--close-batch", "--device", "../x").code == 2
