"""Fuzz: 10,000 malformed or hostile messages to a running receiver (``edge-agent review`` as its
own process, a real Mosquitto).

The messages mix random bytes, oversized payloads, ``..``/``%2e%2e``/absolute paths and Windows
names in device ids, frame ids and JSON fields, wrong JSON types, NaN/Infinity/overflowing
numbers, JPEG headers declaring 60000x60000 px, truncated JPEGs, boxes outside the image,
annotations for frames that never come, devices over ``max_devices``, and some valid frames
and annotations (with duplicates) in between. Every message is built so its fate is known in
advance. The receiver must stay up, write nothing outside its root, count every dropped
message under the expected reason (the counts add up to 10,000 minus the accepted ones), and
name each reason in its log. Only topics matching the receiver's subscriptions are used: the
broker delivers nothing else to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.detections import Detections
from agent.frames import Frame, FrameResult
from agent.mqtt.schema import detections_record
from tests.mosquitto import mosquitto  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parent.parent
TOTAL = 10_000
PREFIX = "edge-agent"
MAX_JPEG_BYTES = 256 * 1024  # max_jpeg_mb 0.25
MAX_ANNOTATION_BYTES = 64 * 1024  # max_annotation_kb 64
MAX_PX = 2048
MAX_DEVICES = 5
GOOD_DEVICES = ["cam-a", "cam_b", "printer.3"]
RSS_BOUND_MB = 150  # docs/review.md
ACCEPTED = ("frames_written", "annotations_stored", "annotations_updated", "duplicates")

BAD_DEVICE_IDS = [
    "..", ".", "%2e%2e", "%2e%2e%2f", ".ssh", "-rf", "--help", "a b", "CON", "nul", "lpt1.x", "dev.", "", "x" * 161, "é",
    "$HOME", "~root", "C:", "..\\..\\windows", "dev*", "dev?", "'; rm -rf ~", "a|b", "\u202edev",
]  # fmt: skip
BAD_FRAME_IDS = [
    "..", ".", ".bashrc", "%2e%2e%2fetc%2fpasswd", "..%2F..%2Fetc", "", "a:b", "C:", "nul", "COM1.jpg",
    "y" * 161, "-rf", "--x", "frame\\..\\x", "f*?", "frame.jpg%00", " lead", "LPT9",
]  # fmt: skip


def jpeg(seed: int, width: int = 64, height: int = 48) -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()


def declared(data: bytes, width: int, height: int) -> bytes:
    at = data.index(b"\xff\xc0")
    out = bytearray(data)
    out[at + 5 : at + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(out)


def scan_start(data: bytes) -> int:
    at = data.index(b"\xff\xda")
    return at + 2 + int.from_bytes(data[at + 2 : at + 4], "big")


def annotation(frame_id: str, boxes=((5, 6, 30, 40),), labels=("spaghetti",), size=(64, 48)) -> dict:
    """The agent's detections record for a frame (built by the agent's code)."""
    frame = Frame(np.zeros((size[1], size[0], 3), np.uint8), "cam", 1, 1_790_000_000.0, frame_id)
    dets = Detections.create(list(boxes) or np.zeros((0, 4)), [0.7] * len(boxes), list(range(len(boxes))),
                             list(labels))  # fmt: skip
    payload = detections_record(FrameResult(frame, dets, "fuzz.tflite", "litert", 1.0), "fuzz", True)
    payload["frame_id"] = frame_id
    payload.pop("device_id")  # the receiver checks it against the topic's device when present
    return payload


def det(payload: dict) -> dict:
    return payload["detections"][0]


def dumps(obj) -> bytes:
    return json.dumps(obj).encode()


def build_messages(rng: np.random.Generator) -> list[tuple[str, bytes, str]]:
    """``(topic, payload, expected)``: ``expected`` is a drop reason or ``accepted``."""
    base = [jpeg(i) for i in range(8)]
    out: list[tuple[str, bytes, str]] = []
    seq = iter(range(10**9))

    def fid() -> str:
        return f"f{next(seq):06d}"

    def add(kind: str, payload: bytes, expected: str, device: str | None = None, frame_id: str | None = None):
        device = device if device is not None else GOOD_DEVICES[int(rng.integers(len(GOOD_DEVICES)))]
        out.append(
            (f"{PREFIX}/{device}/{kind}/{frame_id if frame_id is not None else fid()}", payload, expected)
        )

    def junk(n: int) -> bytes:
        return b"\x00" + rng.bytes(n)

    # --- hostile topic levels (payload irrelevant: the topic is checked first)
    for i in range(700):
        kind = ("frames", "annotations")[i % 2]
        add(
            kind,
            base[i % 8] if i % 3 else junk(50),
            "bad_device_id",
            device=BAD_DEVICE_IDS[i % len(BAD_DEVICE_IDS)],
        )
    for i in range(700):
        kind = ("frames", "annotations")[i % 2]
        add(kind, dumps(annotation("x")) if i % 3 else junk(50), "bad_frame_id",
            frame_id=BAD_FRAME_IDS[i % len(BAD_FRAME_IDS)])  # fmt: skip

    # --- frames
    for _ in range(600):
        add("frames", junk(int(rng.integers(0, 3000))), "not_jpeg")
    for _ in range(50):
        add("frames", b"", "not_jpeg")
    png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    for _ in range(50):
        add("frames", png, "not_jpeg")
    for _ in range(60):
        big = b"\xff\xd8\xff" + rng.bytes(int(rng.integers(MAX_JPEG_BYTES - 2, MAX_JPEG_BYTES + 50_000)))
        add("frames", big, "frame_too_large")
    for i in range(400):
        add("frames", declared(base[i % 8], 60000, 60000), "image_too_large")
    for i in range(200):
        add("frames", declared(base[i % 8], 3000, 40), "image_too_large")
    for i in range(500):
        data = base[i % 8]
        add("frames", data[: int(rng.integers(scan_start(data) + 1, len(data) - 2))], "jpeg_truncated")
    for i in range(300):
        data = base[i % 8]
        add("frames", data[: int(rng.integers(3, scan_start(data) - 1))], "jpeg_truncated")
    for i in range(300):
        malformed = [
            b"\xff\xd8\xff\xe0\x00\x01" + rng.bytes(30),
            b"\xff\xd8\xff\xd9",
            declared(base[i % 8], 64, 0),
        ]
        add("frames", malformed[i % 3], "jpeg_malformed")

    # --- annotations
    for _ in range(600):
        add("annotations", b"\xff" + rng.bytes(int(rng.integers(0, 2000))), "annotation_not_json")
    for _ in range(100):
        add(
            "annotations",
            b'{"schema": "edge-agent.detections/1", "width": x' + rng.bytes(20).hex().encode(),
            "annotation_not_json",
        )
    for _ in range(50):
        add("annotations", b"[" * 50_000 + b"]" * 10_000, "annotation_not_json")
    for _ in range(60):
        add("annotations", dumps({**annotation("x"), "pad": "A" * int(rng.integers(MAX_ANNOTATION_BYTES, 250_000))}),
            "annotation_too_large")  # fmt: skip
    not_finite = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400", b"1" + b"0" * 30]
    for i in range(400):
        frame_id = fid()
        text = dumps(annotation(frame_id)).replace(
            b'"width": 64', b'"width": ' + not_finite[i % len(not_finite)]
        )
        add("annotations", text, "annotation_not_finite", frame_id=frame_id)

    def mutate(change) -> tuple[str, bytes]:
        frame_id = fid()
        payload = annotation(frame_id)
        change(payload)
        return frame_id, dumps(payload)

    mutations = [
        (lambda p: p.pop("schema"), "annotation_unknown_schema"),
        (lambda p: p.update(schema="vott-asset"), "annotation_unknown_schema"),
        (lambda p: p.pop("detections"), "annotation_invalid"),
        (lambda p: p.update(detections={"0": {}}), "annotation_invalid"),
        (lambda p: p.update(detections="../../etc/passwd"), "annotation_invalid"),
        (lambda p: p.update(detections=[7]), "annotation_invalid"),
        (lambda p: det(p).update(box_xyxy=[5, 6, 25]), "annotation_invalid"),
        (lambda p: det(p).update(box_xyxy=[5, 6, "25", 34]), "annotation_invalid"),
        (lambda p: det(p).update(box_xyxy=[True, 6, 25, 34]), "annotation_invalid"),
        (lambda p: p.update(model=["x"] * 3), "annotation_invalid"),
        (lambda p: p.update(width=-64), "annotation_bad_size"),
        (lambda p: p.update(width=60000, height=60000), "annotation_bad_size"),
        (lambda p: p.update(width=64.5), "annotation_bad_size"),
        (lambda p: p.update(detections=p["detections"] * 51), "annotation_too_many_regions"),
        (lambda p: det(p).update(label="\x00evil"), "annotation_bad_label"),
        (lambda p: det(p).update(label="L" * 101), "annotation_bad_label"),
        (lambda p: det(p).update(label="\n"), "annotation_bad_label"),
        (lambda p: det(p).update(box_xyxy=[1e6, 6, 2e6, 40]), "annotation_box_outside"),
        (lambda p: det(p).update(box_xyxy=[-50, 6, 30, 40]), "annotation_box_outside"),
        (lambda p: det(p).update(box_xyxy=[5, 6, 5, 40]), "annotation_box_outside"),
        (lambda p: det(p).update(box_xyxy=[5, 6, 30, 100]), "annotation_box_outside"),
        (lambda p: det(p).update(score=-0.1), "annotation_bad_score"),
        (lambda p: det(p).update(score=None), "annotation_bad_score"),
        (lambda p: p.update(frame_id="../../etc/passwd"), "annotation_frame_id_mismatch"),
        (lambda p: p.update(frame_id="/etc/passwd"), "annotation_frame_id_mismatch"),
        (lambda p: p.update(frame_id=12), "annotation_frame_id_mismatch"),
        (lambda p: p.update(device_id="another-device"), "annotation_device_id_mismatch"),
    ]
    for i in range(2080):
        change, reason = mutations[i % len(mutations)]
        frame_id, payload = mutate(change)
        add("annotations", payload, reason, frame_id=frame_id)
    for top in (b"[]", b'"x"', b"3", b"null", b"true"):
        for _ in range(20):
            add("annotations", top, "annotation_invalid")

    # --- accepted: valid frames and annotations (either order), duplicates, and annotations
    # for frames that never come with hostile paths inside (the receiver ignores those fields)
    for i in range(300):
        device = GOOD_DEVICES[i % 3]
        frame_id = fid()
        frame = ("frames", base[i % 8])
        note = ("annotations", dumps(annotation(frame_id, boxes=((1, 2, 10 + i % 50, 40),))))
        for kind, payload in (frame, note) if i % 2 else (note, frame):
            add(kind, payload, "accepted", device=device, frame_id=frame_id)
        if i % 3 == 0:
            add("frames", base[i % 8], "accepted", device=device, frame_id=frame_id)  # duplicate
    for _ in range(100):
        frame_id = fid()
        payload = annotation(frame_id)
        payload.update(path="file:/etc/passwd", name="../../../etc/cron.d/x", image="../../x")
        add("annotations", dumps(payload), "accepted", frame_id=frame_id)
    # one valid frame from each of 20 new devices: 2 fit under max_devices, 18 do not
    for i in range(20):
        add("frames", base[i % 8], "new_device", device=f"new-{i:02d}")

    # A frame from each good device goes first, so that new devices cannot take their places
    # under max_devices; everything else comes shuffled.
    head = [(f"{PREFIX}/{device}/frames/{fid()}", base[0], "accepted") for device in GOOD_DEVICES]
    assert len(out) + len(head) <= TOTAL, len(out)
    while len(out) + len(head) < TOTAL:
        add("frames", junk(int(rng.integers(0, 500))), "not_jpeg")
    return head + [out[i] for i in rng.permutation(len(out))]


def peak_rss(pid: int) -> float:
    """A running process's peak resident memory (VmHWM), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def snapshot(folder: Path, skip: set[Path]) -> dict[str, str]:
    out = {}
    for path in sorted(folder.rglob("*")):
        if any(path == s or s in path.parents for s in skip):
            continue
        out[str(path.relative_to(folder))] = (
            hashlib.md5(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        )
    return out


def read_stats(root: Path) -> dict:
    try:
        return json.loads((root / ".edge-agent-review" / "stats-fuzz.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_for(condition, timeout_s: float, what: str, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}:\n{log_path.read_text(errors='replace')[-4000:]}")


ALLOWED_IN_ROOT = re.compile(
    r"^(\.edge-agent-review(/locks(/[a-z]+-?[A-Za-z0-9._-]*\.lock)?|/receivers(/[A-Za-z0-9._-]+\.json)?"
    r"|/[A-Za-z0-9._-]+\.json|/spool(/[A-Za-z0-9._-]+(/[A-Za-z0-9_][A-Za-z0-9._-]*(/\d{12}\.msg)?)?)?)?"
    r"|[A-Za-z0-9_][A-Za-z0-9._-]*(/\d{8}-\d{6}(-\d+)?(/(SEALED|CLOSED|frames|annotations)"
    r"(/[A-Za-z0-9_][A-Za-z0-9._-]*\.(jpg|json))?)?)?)$"
)


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_ten_thousand_hostile_messages(mosquitto, tmp_path, capsys):  # noqa: F811
    started = time.monotonic()
    broker = mosquitto()
    root = tmp_path / "root"
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    config = {
        "mqtt": {"host": broker.host, "port": broker.port, "client_id": "fuzz", "inflight_max": 100},
        "root": str(root),
        "batch_by": "manual",
        "max_jpeg_mb": MAX_JPEG_BYTES / 1024 / 1024,
        "max_annotation_kb": MAX_ANNOTATION_BYTES / 1024,
        "max_image_px": MAX_PX,
        "max_devices": MAX_DEVICES,
        "max_regions": 50,
        "stats_interval_s": 1,
        "fsync": False,
        "min_free_mb": 0,
    }
    config_path = tmp_path / "review.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / "receiver.log"
    messages = build_messages(np.random.default_rng(20261122))
    assert len(messages) == TOTAL
    expected = Counter(e for _, _, e in messages)

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log_path, "wb") as log:
        receiver = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "review", "--config", str(config_path)],
            stdout=log, stderr=log, env=env, cwd=workdir,
        )  # fmt: skip
    publisher = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="fuzzer", protocol=MQTTProtocolVersion.MQTTv5
    )
    publisher.max_inflight_messages_set(200)
    publisher.max_queued_messages_set(0)
    try:
        wait_for(lambda: read_stats(root).get("subscribed"), 30, "the receiver to subscribe", log_path)
        before = snapshot(tmp_path, skip={root, log_path})
        publisher.connect(broker.host, broker.port)
        publisher.loop_start()
        infos = [publisher.publish(topic, payload, qos=1) for topic, payload, _ in messages]
        for info in infos:
            info.wait_for_publish(60)
        published_s = time.monotonic() - started
        # A packet over the larger cap + 64 KiB is cut on the way in (its bytes are read and thrown
        # away), counted as too large and acknowledged; then one valid frame shows the receiver works.
        publisher.publish(
            f"{PREFIX}/cam-a/frames/oversized", b"\xff\xd8\xff" + b"\0" * 3_000_000, qos=1
        ).wait_for_publish(30)
        publisher.publish(f"{PREFIX}/cam-a/frames/after-the-storm", jpeg(99), qos=1).wait_for_publish(30)

        wait_for(
            lambda: read_stats(root).get("received", 0) >= TOTAL + 2 and read_stats(root).get("waiting") == 0,
            120,
            "all messages processed",
            log_path,
        )
        assert receiver.poll() is None, "the receiver died"
        peak_rss_mb = peak_rss(receiver.pid)
        receiver.send_signal(signal.SIGTERM)
        assert receiver.wait(30) == 143
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        if receiver.poll() is None:
            receiver.kill()

    stats = read_stats(root)
    log_text = log_path.read_text(errors="replace")
    # Every message is accounted for, under the reason it was built for.
    assert stats["received"] == TOTAL + 2
    assert stats["oversized_cut"] == 1, "the 3 MB packet was cut on the way in, not read into memory"
    accepted = sum(stats[k] for k in ACCEPTED)
    assert stats["dropped_total"] + accepted == stats["received"]
    drops = {k: v for k, v in expected.items() if k not in ("accepted", "new_device")}
    new_device_drops = expected["new_device"] - (MAX_DEVICES - len(GOOD_DEVICES))
    drops["too_many_devices"] = new_device_drops
    drops["frame_too_large"] += 1  # the oversized packet
    assert stats["dropped"] == drops
    assert accepted == expected["accepted"] + (MAX_DEVICES - len(GOOD_DEVICES)) + 1
    assert peak_rss_mb < RSS_BOUND_MB, f"peak RSS {peak_rss_mb:.0f} MB"
    assert stats["duplicates"] == 100
    assert stats["frames_written"] == len(GOOD_DEVICES) + 300 + 2 + 1
    assert stats["annotations_stored"] == 300 + 100
    # ...and the log names every reason (the first few of each are logged one by one).
    for reason in stats["dropped"]:
        assert f": {reason}: " in log_text, reason
    assert "Traceback" not in log_text

    # Nothing outside root changed; inside root only the expected layout exists.
    assert snapshot(tmp_path, skip={root, log_path}) == before
    assert list(workdir.iterdir()) == []
    real_root = root.resolve()
    for path in root.rglob("*"):
        rel = str(path.relative_to(root))
        assert ALLOWED_IN_ROOT.match(rel), rel
        assert not path.is_symlink() and path.resolve().is_relative_to(real_root)
    devices = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(devices) == MAX_DEVICES and set(GOOD_DEVICES) <= set(devices)
    assert (next(root.glob("cam-a/*/frames")) / "after-the-storm.jpg").exists()
    with capsys.disabled():
        print(
            f"\n[review fuzz] {TOTAL} messages published in {published_s:.1f} s, all processed in "
            f"{time.monotonic() - started:.1f} s; accepted {accepted}, dropped {stats['dropped_total']} "
            f"for {len(stats['dropped'])} reasons; peak RSS {peak_rss_mb:.0f} MB, queue peak "
            f"{stats['queue']['peak_messages']} messages"
        )
