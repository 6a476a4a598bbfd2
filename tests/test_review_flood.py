"""A device publishing valid frames faster than the receiver stores them (issue 21), with the
receiver as its own process on a real Mosquitto: its backlog goes to the spool on disk, the other
devices' frames are stored while it drains, memory stays under the documented bound
(docs/review.md), a receiver killed with a full spool stores it all after a restart, and one
started on a damaged spool stores the rest."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from agent.review.spool import Spool
from tests.mosquitto import mosquitto  # noqa: F401 (fixture)
from tests.test_review_fuzz import RSS_BOUND_MB
from tests.test_review_load import Receiver, publisher, real_jpeg

FLOODER = "flooder"


def frame_files(root: Path, device: str | None = None) -> list[str]:
    """``device/frame_id`` of every stored frame file (a list: a frame stored twice shows twice)."""
    pattern = f"{device}/*/frames/*.jpg" if device else "*/*/frames/*.jpg"
    return [f"{p.parts[-4]}/{p.stem}" for p in root.glob(pattern)]


def spool_files(root: Path) -> list[Path]:
    return list((root / ".edge-agent-review" / "spool").rglob("*.msg"))


def flood(broker, total: int, jpegs: list[bytes]) -> threading.Thread:
    """A thread publishing ``total`` QoS 1 frames of one device as fast as the broker takes them."""

    def run() -> None:
        client = publisher(broker, FLOODER)
        try:
            infos = [
                client.publish(f"edge-agent/{FLOODER}/frames/f{i:05d}", jpegs[i % len(jpegs)], qos=1)
                for i in range(total)
            ]
            for info in infos:
                info.wait_for_publish(120)
        finally:
            client.loop_stop()
            client.disconnect()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(600)
def test_a_device_flooding_valid_frames_does_not_hold_up_the_others(mosquitto, tmp_path, capsys):  # noqa: F811
    broker = mosquitto()
    receiver = Receiver(
        tmp_path, broker, fsync=True
    ).start()  # the default: spooled files flushed before acks
    root = receiver.root
    jpegs = [real_jpeg(i) for i in range(30)]
    total = 3000
    flooding = flood(broker, total, jpegs)
    others = publisher(broker, "others")
    published: dict[str, float] = {}
    landed: dict[str, float] = {}
    try:
        receiver.wait(lambda s: s.get("spool", {}).get("spooled_total", 0) > 0, 120, "the flood to spool")
        for i in range(20):
            for d in range(5):
                published[f"cam-{d}/g{i:02d}"] = time.monotonic()
                others.publish(f"edge-agent/cam-{d}/frames/g{i:02d}", jpegs[(i + d) % 30], qos=1)
        deadline = time.monotonic() + 300
        while len(landed) < len(published) and time.monotonic() < deadline:
            now = time.monotonic()
            for name in set(frame_files(root)) & published.keys() - landed.keys():
                landed[name] = now
            time.sleep(0.05)
        assert len(landed) == len(published), f"stored {len(landed)} of the others' {len(published)} frames"
        flooder_stored_then = len(frame_files(root, FLOODER))
        spooled_then = receiver.stats().get("spool", {}).get("messages", 0)
        flooding.join(300)
        receiver.wait(
            lambda s: s.get("frames_written", 0) >= total + 100 and s["spool"]["messages"] == 0,
            480,
            "the flood to be stored and the spool to empty",
        )
        stats = receiver.stats()
        peak = receiver.peak_rss_mb()
    finally:
        others.loop_stop()
        others.disconnect()
        receiver.stop()
    files = frame_files(root)
    assert len(files) == len(set(files)) == total + 100, "every frame stored exactly once"
    assert stats["frames_written"] == total + 100 and stats["dropped_total"] == 0
    assert stats["spool"]["spooled_total"] > 0 and stats["spool"]["bytes"] == 0 and spool_files(root) == []
    assert flooder_stored_then < total, "the others' frames were all stored before the flooder's last one"
    assert peak < RSS_BOUND_MB, f"peak RSS {peak:.0f} MB"
    latencies = sorted(landed[name] - published[name] for name in published)
    with capsys.disabled():
        print(
            f"\n[review flood] {total} frames of one device ({stats['spool']['spooled_total']} through the spool); "
            f"5 devices x 20 frames landed {latencies[0]:.1f}-{latencies[-1]:.1f} s after publishing "
            f"(median {latencies[len(latencies) // 2]:.1f} s), when {flooder_stored_then} of the flood "
            f"were stored and {spooled_then} still spooled; queue peak {stats['queue']['peak_messages']} "
            f"messages, reading paused {stats['queue']['reading_paused_s']:.1f} s; peak RSS {peak:.0f} MB"
        )


@pytest.mark.timeout(600)
def test_a_receiver_killed_with_a_spool_stores_it_all_after_a_restart(mosquitto, tmp_path):  # noqa: F811
    broker = mosquitto()
    receiver = Receiver(tmp_path, broker).start()
    total = 800
    flooding = flood(broker, total, [real_jpeg(i) for i in range(10)])
    try:
        receiver.wait(lambda s: s.get("spool", {}).get("messages", 0) >= 100, 120, "100 spooled messages")
        assert receiver.proc is not None
        receiver.proc.kill()
        receiver.proc.wait(30)
        left = len(spool_files(receiver.root))
        flooding.join(300)
        assert left > 0 and len(frame_files(receiver.root, FLOODER)) < total
        receiver.start()
        receiver.wait(
            lambda s: len(frame_files(receiver.root)) >= total and s.get("spool", {}).get("messages") == 0,
            480,
            "every frame stored and the spool empty after the restart",
        )
        stats = receiver.stats()
    finally:
        receiver.stop()
    files = frame_files(receiver.root)
    assert len(files) == len(set(files)) == total, "every frame stored exactly once"
    assert stats["dropped_total"] == 0 and spool_files(receiver.root) == []


@pytest.mark.timeout(120)
def test_a_receiver_started_on_a_damaged_spool_stores_the_rest_and_counts_the_damage(mosquitto, tmp_path):  # noqa: F811
    broker = mosquitto()
    receiver = Receiver(tmp_path, broker)
    spool = Spool(receiver.root / ".edge-agent-review" / "spool" / "load", 10**9, fsync=False)
    frame = real_jpeg(1)
    for i in range(3):
        spool.put("cam-a", f"edge-agent/cam-a/frames/f{i}", frame, block=False, then=lambda: None)
    spool.put("cam-b", "edge-agent/cam-c/frames/x", frame, block=False, then=lambda: None)  # by hand
    cut = spool.folder / "cam-a" / "000000000001.msg"
    cut.write_bytes(cut.read_bytes()[:1000])  # a power cut before the flush
    receiver.start()
    try:
        receiver.wait(lambda s: s.get("received", 0) >= 3 and s["spool"]["messages"] == 0, 60, "the spool")
        stats = receiver.stats()
    finally:
        receiver.stop()
    assert sorted(frame_files(receiver.root)) == ["cam-a/f0", "cam-a/f2"]
    assert stats["spool"]["corrupt"] == 1 and stats["dropped"] == {"bad_topic": 1}
    assert spool_files(receiver.root) == []
    assert "Traceback" not in receiver.log.read_text()
