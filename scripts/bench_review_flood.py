#!/usr/bin/env python3
"""Flood bench (issue 21): how long other devices' frames wait while one device publishes a backlog
of valid frames faster than the receiver stores them, with the spool and without (the baseline).

In one run, through one local Mosquitto that the bench starts, for each of ``spool_max_mb: 0``
(the baseline: such a device holds up the others) and the default spool, ``--repeat`` times:
one ``edge-agent review`` process (defaults: fsync on, 4 workers) subscribes; one device
publishes ``--flood`` frames, QoS 1, as fast as the broker takes them; once the receiver's queue
has been full, ``--devices`` other devices publish ``--frames`` frames each. Measured: the other
devices' frame latency (publish to the frame file's mtime), how many of the flood were stored
when the others' last frame was, the time to store everything, peak RSS (VmHWM) and CPU seconds
of the receiver. Frames are real JPEGs: ``../shared/models/images`` re-encoded at 640x480.

    .venv/bin/python scripts/bench_review_flood.py
    .venv/bin/python scripts/bench_review_flood.py --flood 3000 --repeat 3 --json flood.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import machine_info
from bench_review import _cpu_s, _peak_rss_mb, _stats, _wait
from benchlib.workload import Broker, mosquitto_binary

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
FLOODER = "flooder"


def make_jpegs() -> list[bytes]:
    """The shared sample images at 640x480, flipped too: real camera-like JPEGs."""
    images = [cv2.imread(str(p)) for p in sorted((SHARED / "models" / "images").glob("*.jpg"))]
    if not images:
        raise SystemExit(f"bench_review_flood: needs the sample images in {SHARED / 'models' / 'images'}")
    frames = [cv2.resize(image, (640, 480)) for image in images]
    frames += [cv2.flip(frame, 1) for frame in frames]
    return [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes() for f in frames]


def client(port: int, client_id: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def _full(stats: dict[str, Any]) -> bool:
    """The receiver's queue has been full: reading paused, or a message spooled."""
    return bool(stats.get("queue", {}).get("reading_paused_s") or stats.get("spool", {}).get("spooled_total"))


def one_round(broker: Broker, work: Path, name: str, spool_mb: int, args: argparse.Namespace,
              jpegs: list[bytes]) -> dict[str, Any]:  # fmt: skip
    root = work / name
    config = {
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "client_id": name, "session_expiry_s": 0},
        "root": str(root), "batch_by": "manual", "stats_interval_s": 0.2, "min_free_mb": 0,
        "spool_max_mb": spool_mb,
    }  # fmt: skip
    (work / f"{name}.yaml").write_text(yaml.safe_dump(config))
    with open(work / f"{name}.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "review", "--config", str(work / f"{name}.yaml")],
                                stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    flooder, others = client(broker.port, f"{name}-flooder"), client(broker.port, f"{name}-others")
    total = args.flood + args.devices * args.frames
    try:
        _wait(lambda: _stats(root, name).get("subscribed"), 60, "the receiver to subscribe")
        started = time.time()
        for i in range(args.flood):
            flooder.publish(f"edge-agent/{FLOODER}/frames/f{i:05d}", jpegs[i % len(jpegs)], qos=1)
        _wait(lambda: _full(_stats(root, name)), 120, "a full queue")
        sent = {}
        for i in range(args.frames):
            for d in range(args.devices):
                sent[f"cam-{d}/g{i:03d}"] = time.time()
                others.publish(f"edge-agent/cam-{d}/frames/g{i:03d}", jpegs[(i + d) % len(jpegs)], qos=1)
        _wait(lambda: _stats(root, name).get("frames_written", 0) >= total, 1800, "every frame")
        stats, rss, cpu = _stats(root, name), _peak_rss_mb(proc.pid), _cpu_s(proc.pid)
    finally:
        for c in (flooder, others):
            c.loop_stop()
            c.disconnect()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    stored = {f"{p.parts[-4]}/{p.stem}": p.stat().st_mtime for p in root.glob("*/*/frames/*.jpg")}
    latencies = [stored[k] - t for k, t in sent.items()]
    others_done = max(stored[k] for k in sent)
    return {
        "spool_max_mb": spool_mb,
        "frames_stored": len(stored),
        "others_latency_p50_s": round(float(np.percentile(latencies, 50)), 2),
        "others_latency_max_s": round(max(latencies), 2),
        "flood_stored_when_others_done": sum(1 for k, t in stored.items() if k.startswith(FLOODER) and t <= others_done),
        "all_stored_s": round(max(stored.values()) - started, 2),
        "spooled": stats.get("spool", {}).get("spooled_total", 0),
        "peak_rss_mb": round(rss, 1),
        "cpu_s": round(cpu, 2),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood", type=int, default=3000, help="frames of the flooding device")
    parser.add_argument("--devices", type=int, default=5, help="other devices")
    parser.add_argument("--frames", type=int, default=20, help="frames per other device")
    parser.add_argument("--repeat", type=int, default=2, help="rounds per mode (alternating)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    binary = mosquitto_binary()
    if binary is None:
        raise SystemExit("bench_review_flood: needs Mosquitto (apt-get install mosquitto)")
    jpegs = make_jpegs()
    machine = machine_info()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        broker = Broker(binary, Path(tmp) / "broker")
        machine["broker"] = broker.version()
        broker.start()
        try:
            for i in range(args.repeat):
                for spool_mb in (0, 1024):
                    rounds.append(
                        one_round(broker, Path(tmp), f"flood-{spool_mb}-{i}", spool_mb, args, jpegs)
                    )
        finally:
            broker.stop()
    machine["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_mb']} MB, {machine['os']}, "
          f"Python {machine['python']}, {machine['broker']}; load {machine['load_avg_1m_start']} at start, "
          f"{machine['load_avg_1m_end']} at end (1 min); JPEGs {np.mean([len(j) for j in jpegs]) / 1024:.0f} KB")  # fmt: skip
    print(f"flood {args.flood} frames of one device; then {args.devices} devices x {args.frames} frames")
    print(f"{'spool_max_mb':>12} {'others p50 s':>12} {'others max s':>12} {'flood stored then':>17} "
          f"{'all stored s':>12} {'spooled':>7} {'peak RSS MB':>11} {'CPU s':>6}")  # fmt: skip
    for r in rounds:
        print(f"{r['spool_max_mb']:>12} {r['others_latency_p50_s']:>12.2f} {r['others_latency_max_s']:>12.2f} "
              f"{r['flood_stored_when_others_done']:>17} {r['all_stored_s']:>12.2f} {r['spooled']:>7} "
              f"{r['peak_rss_mb']:>11.1f} {r['cpu_s']:>6.1f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": machine, "settings": vars(args), "rounds": rounds}, indent=2)
        )
    total = args.flood + args.devices * args.frames
    return 0 if all(r["frames_stored"] == total for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
