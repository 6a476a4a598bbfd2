"""The receiver under load, as its own process on a real Mosquitto: one device flooding oversized
and malformed messages stalls nobody, and memory stays under the documented bound (docs/review.md)
through the flood and through a 3,000-frame backlog."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from tests.mosquitto import mosquitto  # noqa: F401 (fixture)
from tests.test_review_fuzz import RSS_BOUND_MB, peak_rss

REPO = Path(__file__).resolve().parent.parent


def real_jpeg(seed: int, width: int = 640, height: int = 480) -> bytes:
    """A camera-like JPEG: smooth gradients plus a little noise (~30-60 KB at 640x480)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (height // 40, width // 40, 3), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    image = cv2.add(image, rng.integers(0, 12, image.shape, dtype=np.uint8))
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


def record(frame_id: str, width: int = 640, height: int = 480) -> bytes:
    return json.dumps({
        "schema": "edge-agent.detections/1", "frame_id": frame_id, "width": width, "height": height,
        "detections": [{"label": "spaghetti", "class_id": 2, "score": 0.8, "box_xyxy": [10, 20, 200, 300]}],
    }).encode()  # fmt: skip


class Receiver:
    """``edge-agent review`` in its own process; stats from its stats file, peak RSS from /proc."""

    def __init__(self, tmp_path: Path, broker, **overrides) -> None:
        self.root = tmp_path / "root"
        config = {
            "mqtt": {"host": broker.host, "port": broker.port, "client_id": "load", "inflight_max": 16,
                     "reconnect_min_s": 0.2, "reconnect_max_s": 1},
            "root": str(self.root), "batch_by": "manual", "stats_interval_s": 0.5, "fsync": False,
            "min_free_mb": 0, **overrides,
        }  # fmt: skip
        self.config = tmp_path / "review.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = tmp_path / "receiver.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Receiver:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "review", "--config", str(self.config)],
                stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": str(REPO)},
            )  # fmt: skip
        self.wait(lambda s: s.get("subscribed"), 30, "the receiver to subscribe")
        return self

    def stats(self) -> dict:
        try:
            return json.loads((self.root / ".edge-agent-review" / "stats-load.json").read_text())
        except (OSError, ValueError):
            return {}

    def wait(self, condition, timeout_s: float, what: str) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if condition(self.stats()):
                return time.monotonic() - started
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.1)
        pytest.fail(f"timed out waiting for {what}; stats {self.stats()}\n{self.log.read_text()[-3000:]}")

    def peak_rss_mb(self) -> float:
        assert self.proc is not None
        return peak_rss(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(30) == 143, self.log.read_text()[-3000:]


def publisher(broker, client_id: str) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def stored(root: Path) -> set[str]:
    return {f"{p.parts[-4]}/{p.stem}" for p in root.glob("*/*/frames/*.jpg")}


@pytest.mark.timeout(240)
def test_a_device_flooding_oversized_and_malformed_messages_stalls_nobody(mosquitto, tmp_path, capsys):  # noqa: F811
    broker = mosquitto()
    receiver = Receiver(tmp_path, broker, max_jpeg_mb=1.0).start()
    flooder, others = publisher(broker, "flooder"), publisher(broker, "others")
    oversized = b"\xff\xd8\xff" + bytes(1024 * 1024 + 65536 + 100)
    stop_flood = threading.Event()
    flood_counts = {"oversized": 0, "malformed": 0}

    def flood() -> None:
        """The issue's case first (20 oversized frames), then a mix that goes on while others publish."""
        for i in range(20):
            flooder.publish(f"edge-agent/flooder/frames/big{i}", oversized, qos=1).wait_for_publish(30)
            flood_counts["oversized"] += 1
        i = 0
        while not stop_flood.is_set() and i < 2000:
            if i % 10 == 0:
                flooder.publish(f"edge-agent/flooder/frames/big-x{i}", oversized, qos=1).wait_for_publish(30)
                flood_counts["oversized"] += 1
            else:
                kind = ("frames", "annotations")[i % 2]
                flooder.publish(f"edge-agent/flooder/{kind}/junk{i}", b"\xff\xd8" + os.urandom(3000), qos=1)
                flood_counts["malformed"] += 1
            i += 1

    flooding = threading.Thread(target=flood)
    try:
        flooding.start()
        receiver.wait(
            lambda s: s.get("dropped", {}).get("frame_too_large", 0) >= 20, 60, "the 20 oversized frames"
        )
        wanted = set()
        jpegs = [real_jpeg(i) for i in range(4)]
        published_at = time.monotonic()
        for device in (f"cam-{d}" for d in range(5)):
            for i in range(4):
                frame_id = f"f{i}"
                others.publish(f"edge-agent/{device}/frames/{frame_id}", jpegs[i], qos=1)
                others.publish(f"edge-agent/{device}/annotations/{frame_id}", record(frame_id), qos=1)
                wanted.add(f"{device}/{frame_id}")
        receiver.wait(lambda s: wanted <= stored(receiver.root), 60, "the other devices' frames")
        landed_s = time.monotonic() - published_at
        still_flooding = flooding.is_alive()
        stop_flood.set()
        flooding.join(60)
        receiver.wait(lambda s: s.get("frames_written", 0) >= 20, 30, "the stats file to catch up")
        stats = receiver.stats()
        peak = receiver.peak_rss_mb()
    finally:
        stop_flood.set()
        for client in (flooder, others):
            client.loop_stop()
            client.disconnect()
        receiver.stop()
    assert wanted <= stored(receiver.root) and still_flooding, (
        "the valid frames landed while the flood went on"
    )
    assert stats["dropped"]["frame_too_large"] >= 20 and stats["oversized_cut"] >= 20
    assert stats["frames_written"] == 20 and stats["annotations_stored"] == 20
    assert peak < RSS_BOUND_MB, f"peak RSS {peak:.0f} MB"
    with capsys.disabled():
        print(
            f"\n[review stall] 20 frames of 5 devices landed {landed_s:.1f} s after publishing while one device "
            f"flooded {flood_counts['oversized']} oversized and {flood_counts['malformed']} malformed messages; "
            f"dropped {stats['dropped_total']}; peak RSS {peak:.0f} MB"
        )


@pytest.mark.timeout(600)
def test_a_3000_frame_backlog_drains_within_the_memory_bound(mosquitto, tmp_path, capsys):  # noqa: F811
    broker = mosquitto()
    receiver = Receiver(tmp_path, broker).start()
    receiver.stop()  # its session stays on the broker and collects the backlog
    jpegs = [real_jpeg(i) for i in range(30)]
    client = publisher(broker, "backlog")
    total = 3000
    try:
        infos = [
            client.publish(f"edge-agent/cam-{i % 10}/frames/f{i:05d}", jpegs[i % 30], qos=1)
            for i in range(total)
        ]
        for info in infos:
            info.wait_for_publish(60)
    finally:
        client.loop_stop()
        client.disconnect()
    receiver.start()
    try:
        drained_s = receiver.wait(lambda s: s.get("frames_written", 0) >= total, 480, "the backlog to drain")
        stats = receiver.stats()
        peak = receiver.peak_rss_mb()
    finally:
        receiver.stop()
    assert len(stored(receiver.root)) == total and stats["dropped_total"] == 0
    assert (
        stats["queue"]["peak_messages"] <= 256 and stats["queue"]["peak_bytes"] <= 16 * 1024 * 1024 + 1024**2
    )
    assert peak < RSS_BOUND_MB, f"peak RSS {peak:.0f} MB"
    with capsys.disabled():
        print(
            f"\n[review backlog] {total} frames ({sum(len(j) for j in jpegs) / 30 / 1024:.0f} KB each) drained in "
            f"{drained_s:.1f} s; queue peak {stats['queue']['peak_messages']} messages / "
            f"{stats['queue']['peak_bytes'] / 1e6:.1f} MB, reading paused {stats['queue']['reading_paused_s']:.1f} s; "
            f"peak RSS {peak:.0f} MB"
        )
