#!/usr/bin/env python3
"""Receiver bench: how fast ``edge-agent review`` stores what a fleet publishes, next to a plain sink.

In one run, through one local Mosquitto that the bench starts:

- simulated devices (``--devices`` 200 x ``--frames`` 20) publish real JPEGs (made from
  ``../shared/models/images`` and ``../shared/models/print3d/images``, 640x480 to 1280x720) and
  real annotations (the print3d detector's detections on those images, as the agent's
  ``edge-agent.detections/1`` records), QoS 1, from ``--publishers`` processes, as fast as they can;
- a plain paho subscriber that only counts (same shared-subscription filters, QoS 1) takes them:
  the sink's rate, before and after the receivers (the higher is the baseline);
- 1 and 3 (``--receivers``) ``edge-agent review`` processes in one shared group on one root take
  them: frames/s stored (first publish to the last frame file written), the ratio to the sink,
  p95 frame latency (publish to the frame file's mtime), peak RSS (VmHWM) of each receiver, CPU
  seconds of receivers, broker and publishers, duplicates (a frame stored twice), losses (a
  frame not stored), and every batch closed and checked with ``../shared/vott/validate_vott.py``.

Prints the machine, a table and, with ``--json out.json``, everything as JSON.

    .venv/bin/python scripts/bench_review.py
    .venv/bin/python scripts/bench_review.py --devices 50 --frames 10 --receivers 1,3 --json r.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import yaml
from numpy.typing import NDArray
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import machine_info
from benchlib.workload import Broker, mosquitto_binary

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
PREFIX = "edge-agent"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------- payloads
def make_frames(count: int) -> list[tuple[bytes, dict[str, Any]]]:
    """``count`` (JPEG, detections record) pairs from the real images and the real print3d model."""
    from agent.config.detector import DetectorSettings
    from agent.detect.detector import Detector
    from agent.frames import Frame, FrameResult
    from agent.mqtt.schema import detections_record

    images = sorted((SHARED / "models" / "print3d" / "images").glob("*.jpg"))
    images += sorted((SHARED / "models" / "images").glob("*.jpg"))
    if not images:
        raise SystemExit(f"bench_review: needs the real images under {SHARED / 'models'} (../shared)")
    model = SHARED / "models" / "print3d" / "print3d_2020-10-23_ssd_uint8.tflite"
    detector = Detector(DetectorSettings(model=str(model), score_threshold=0.1))
    out = []
    for i in range(count):
        picture = cv2.imread(str(images[i % len(images)]))
        h, w = picture.shape[:2]
        crop = picture[(i // len(images)) % 7 * h // 40 :, (i // len(images)) % 5 * w // 30 :]  # a variant
        width = (640, 960, 1280)[i % 3]
        frame = cv2.resize(
            crop, (width, width * 9 // 16 if i % 2 else width * 3 // 4), interpolation=cv2.INTER_AREA
        )
        frame = cast("NDArray[np.uint8]", frame)
        jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
        result = FrameResult(Frame(frame, "cam", i, time.time(), f"{i:04d}"), detector.detect(frame), detector.name,
                             detector.runtime, 0.0)  # fmt: skip
        out.append((jpeg, detections_record(result, "device", True)))
    return out


def device_ids(count: int) -> list[str]:
    return [f"dev{i:04d}" for i in range(count)]


# ------------------------------------------------------------------------------------- publishing
def publish_share(port: int, devices: list[str], frames: int, payloads: list[tuple[bytes, dict[str, Any]]],
                  go_at: float, results: Any) -> None:  # fmt: skip
    """One publisher process: frame and annotation of frame 0 of every device, then frame 1, ..."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    notes = {}
    for n in range(frames):
        for device in devices:
            record = dict(
                payloads[(int(device[3:]) + n) % len(payloads)][1], frame_id=f"f{n:04d}", device_id=device
            )
            notes[(device, n)] = json.dumps(record, separators=(",", ":")).encode()
    time.sleep(max(0.0, go_at - time.time()))
    sent: list[tuple[str, str, float]] = []
    infos = []
    for n in range(frames):
        for device in devices:
            jpeg = payloads[(int(device[3:]) + n) % len(payloads)][0]
            sent.append((device, f"f{n:04d}", time.time()))
            infos.append(client.publish(f"{PREFIX}/{device}/frames/f{n:04d}", jpeg, qos=1))
            infos.append(client.publish(f"{PREFIX}/{device}/annotations/f{n:04d}", notes[(device, n)], qos=1))
    for info in infos:
        info.wait_for_publish(600)
    client.loop_stop()
    client.disconnect()
    results.put((os.getpid(), sent, _cpu_s(os.getpid())))


def publish_all(port: int, devices: list[str], frames: int, payloads: list[tuple[bytes, dict[str, Any]]],
                publishers: int) -> tuple[dict[tuple[str, str], float], float, float]:  # fmt: skip
    """Publish everything from ``publishers`` processes; returns publish times by (device, frame id),
    the first publish time and the publishers' CPU seconds."""
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    go_at = time.time() + 2.0
    procs = [
        ctx.Process(
            target=publish_share, args=(port, devices[i::publishers], frames, payloads, go_at, results)
        )
        for i in range(publishers)
    ]
    for proc in procs:
        proc.start()
    sent: dict[tuple[str, str], float] = {}
    cpu = 0.0
    for _ in procs:
        _, times, cpu_s = results.get(timeout=1800)
        sent.update({(d, f): t for d, f, t in times})
        cpu += cpu_s
    for proc in procs:
        proc.join(60)
    return sent, min(sent.values()), cpu


# ------------------------------------------------------------------------------------------- sink
def run_sink(port: int, total_frames: int, ready: Any, done: Any) -> None:
    """A plain paho subscriber that only counts (QoS 1, paho acknowledges), in its own process."""
    arrivals: dict[str, float] = {}
    annotations = [0]

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if "/frames/" in message.topic:
            arrivals[message.topic] = time.time()
        else:
            annotations[0] += 1

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-sink", protocol=MQTTProtocolVersion.MQTTv5
    )
    client.on_message = on_message
    client.on_subscribe = lambda *a: ready.set()
    client.on_connect = lambda c, *a: c.subscribe(
        [(f"$share/bench-sink/{PREFIX}/+/frames/+", 1), (f"$share/bench-sink/{PREFIX}/+/annotations/+", 1)]
    )
    client.connect("127.0.0.1", port)
    client.loop_start()
    deadline = time.time() + 1800
    while (len(arrivals) < total_frames or annotations[0] < total_frames) and time.time() < deadline:
        time.sleep(0.05)
    client.loop_stop()
    client.disconnect()
    done.put((arrivals, annotations[0], _cpu_s(os.getpid())))


def sink_round(broker: Broker, devices: list[str], frames: int, payloads: list[tuple[bytes, dict[str, Any]]],
               publishers: int) -> dict[str, Any]:  # fmt: skip
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Queue()
    total = len(devices) * frames
    sink = ctx.Process(target=run_sink, args=(broker.port, total, ready, done))
    sink.start()
    if not ready.wait(30):
        raise RuntimeError("the sink did not subscribe")
    broker_cpu = broker.cpu_s()
    sent, first, publisher_cpu = publish_all(broker.port, devices, frames, payloads, publishers)
    arrivals, annotations, sink_cpu = done.get(timeout=1800)
    sink.join(30)
    elapsed = max(arrivals.values()) - first
    latencies = [t - sent[(topic.split("/")[1], topic.rsplit("/", 1)[1])] for topic, t in arrivals.items()]
    return {
        "frames": len(arrivals),
        "annotations": annotations,
        "seconds": round(elapsed, 2),
        "frames_per_s": round(len(arrivals) / elapsed, 1),
        "p95_latency_s": round(float(np.percentile(latencies, 95)), 3),
        "cpu_s": {"sink": round(sink_cpu, 2), "broker": round(broker.cpu_s() - broker_cpu, 2),
                  "publishers": round(publisher_cpu, 2)},
    }  # fmt: skip


# -------------------------------------------------------------------------------------- receivers
def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _stats(root: Path, client: str) -> dict[str, Any]:
    try:
        return dict(json.loads((root / ".edge-agent-review" / f"stats-{client}.json").read_text()))
    except (OSError, ValueError):
        return {}


def _wait(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def receiver_round(broker: Broker, work: Path, count: int, devices: list[str], frames: int,
                   payloads: list[tuple[bytes, dict[str, Any]]], publishers: int, fsync: bool) -> dict[str, Any]:  # fmt: skip
    root = work / f"root-{count}"
    clients = [f"bench-r{i}" for i in range(count)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs, configs = [], []
    for client in clients:
        config = {
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "client_id": client, "shared_group": "bench",
                     "session_expiry_s": 0},
            "root": str(root), "batch_by": "count", "batch_size": max(1, frames // 2), "close_grace_s": 5,
            "stats_interval_s": 1, "fsync": fsync, "min_free_mb": 0, "max_devices": len(devices) + 10,
        }  # fmt: skip
        path = work / f"{client}-{count}.yaml"
        path.write_text(yaml.safe_dump(config))
        configs.append(path)
        log = open(work / f"{client}-{count}.log", "wb")  # noqa: SIM115 (closed with the process)
        procs.append(subprocess.Popen([sys.executable, "-m", "agent.cli", "review", "--config", str(path)],
                                      stdout=log, stderr=log, env=env))  # fmt: skip
        log.close()
    try:
        _wait(lambda: all(_stats(root, c).get("subscribed") for c in clients), 60, "receivers subscribed")
        broker_cpu = broker.cpu_s()
        sent, first, publisher_cpu = publish_all(broker.port, devices, frames, payloads, publishers)
        total = len(devices) * frames
        _wait(lambda: sum(_stats(root, c).get("frames_written", 0) for c in clients) >= total
              and sum(_stats(root, c).get("annotations_stored", 0) for c in clients) >= total, 1800, "every frame")  # fmt: skip
        rss = [_peak_rss_mb(p.pid) for p in procs]
        cpu = [_cpu_s(p.pid) for p in procs]
        broker_cpu = broker.cpu_s() - broker_cpu
        stored = [(p.parts[-4], p.stem, p.stat().st_mtime) for p in root.glob("*/*/frames/*.jpg")]
        subprocess.run([sys.executable, "-m", "agent.cli", "review", "--config", str(configs[0]), "--close-batch"],
                       env=env, capture_output=True, check=True, timeout=600)  # fmt: skip
        stats = [_stats(root, c) for c in clients]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(60)
    return summarise_round(count, root, sent, first, stored, stats, rss,
                           {"receivers": round(sum(cpu), 2), "broker": round(broker_cpu, 2),
                            "publishers": round(publisher_cpu, 2)})  # fmt: skip


def summarise_round(count: int, root: Path, sent: dict[tuple[str, str], float], first: float,
                    stored: list[tuple[str, str, float]], stats: list[dict[str, Any]], rss: list[float],
                    cpu: dict[str, float]) -> dict[str, Any]:  # fmt: skip
    copies = Counter((device, frame_id) for device, frame_id, _ in stored)
    last = max(t for _, _, t in stored)
    latencies = [t - sent[(d, f)] for d, f, t in stored if (d, f) in sent]
    batches = sorted(p for p in root.glob("*/*") if p.is_dir() and not p.parent.name.startswith("."))
    with ThreadPoolExecutor(max_workers=4) as pool:
        invalid = [str(b) for b, ok in zip(batches, pool.map(validate, batches), strict=True) if not ok]
    return {
        "receivers": count,
        "frames": len(copies),
        "seconds": round(last - first, 2),
        "frames_per_s": round(len(copies) / (last - first), 1),
        "p95_latency_s": round(float(np.percentile(latencies, 95)), 3),
        "peak_rss_mb": [round(r, 1) for r in rss],
        "duplicates_stored": sum(n - 1 for n in copies.values()),
        "duplicates_counted": sum(s.get("duplicates", 0) for s in stats),
        "lost": len(set(sent) - set(copies)),
        "dropped": sum(s.get("dropped_total", 0) for s in stats),
        "batches": len(batches),
        "batches_closed": sum(1 for b in batches if (b / "CLOSED").exists()),
        "batches_invalid": invalid,
        "per_receiver_frames": [s.get("frames_written", 0) for s in stats],
        "queue_peak_messages": [s.get("queue", {}).get("peak_messages") for s in stats],
        "cpu_s": cpu,
    }


def validate(batch: Path) -> bool:
    """VoTT's own rules (../shared/vott/validate_vott.py) on a closed batch and its frames."""
    validator = SHARED / "vott" / "validate_vott.py"
    if not (batch / "CLOSED").exists():
        return False
    proc = subprocess.run([sys.executable, str(validator), str(batch / "vott"), "--source-folder",
                           str(batch / "frames")], capture_output=True, text=True, check=False)  # fmt: skip
    return proc.returncode == 0


# ---------------------------------------------------------------------------------------- report
def print_table(machine: dict[str, Any], sinks: list[dict[str, Any]], rounds: list[dict[str, Any]]) -> None:
    baseline = max(s["frames_per_s"] for s in sinks)
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_mb']} MB, {machine['os']}, "
          f"Python {machine['python']}, {machine.get('broker')}; load {machine['load_avg_1m_start']} at start, "
          f"{machine['load_avg_1m_end']} at end (1 min)")  # fmt: skip
    print(f"{'run':<13} {'frames':>6} {'frames/s':>9} {'ratio':>6} {'p95 s':>7} {'peak RSS MB':>14} "
          f"{'dup':>4} {'lost':>5} {'batches ok':>11} {'CPU s (recv/broker/pub)':>24}")  # fmt: skip
    for i, sink in enumerate(sinks):
        print(f"{'paho sink ' + str(i + 1):<13} {sink['frames']:>6} {sink['frames_per_s']:>9.1f} {'':>6} "
              f"{sink['p95_latency_s']:>7.2f} {'':>14} {'':>4} {'':>5} {'':>11} "
              f"{sink['cpu_s']['sink']:>8.1f}/{sink['cpu_s']['broker']:.1f}/{sink['cpu_s']['publishers']:.1f}")  # fmt: skip
    for r in rounds:
        ok = f"{r['batches_closed'] - len(r['batches_invalid'])}/{r['batches']}"
        print(f"{str(r['receivers']) + ' receiver(s)':<13} {r['frames']:>6} {r['frames_per_s']:>9.1f} "
              f"{r['frames_per_s'] / baseline:>6.2f} {r['p95_latency_s']:>7.2f} {max(r['peak_rss_mb']):>14.1f} "
              f"{r['duplicates_stored']:>4} {r['lost']:>5} {ok:>11} "
              f"{r['cpu_s']['receivers']:>8.1f}/{r['cpu_s']['broker']:.1f}/{r['cpu_s']['publishers']:.1f}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--frames", type=int, default=20, help="frames per device")
    parser.add_argument("--receivers", default="1,3", help="receiver counts to run, e.g. 1,3")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    parser.add_argument("--no-fsync", action="store_true", help="receivers with fsync: false")
    parser.add_argument("--work", help="work folder (default: a temporary one, deleted)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    binary = mosquitto_binary()
    if binary is None:
        raise SystemExit("bench_review: needs Mosquitto (apt-get install mosquitto)")
    with tempfile.TemporaryDirectory(prefix="bench-review-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        machine = machine_info()
        payloads = make_frames(24)
        devices = device_ids(args.devices)
        broker = Broker(binary, work / "broker")
        machine["broker"] = broker.version()
        broker.start()
        try:
            sinks = [sink_round(broker, devices, args.frames, payloads, args.publishers)]
            rounds = [
                receiver_round(
                    broker, work, int(n), devices, args.frames, payloads, args.publishers, not args.no_fsync
                )
                for n in args.receivers.split(",")
            ]
            sinks.append(sink_round(broker, devices, args.frames, payloads, args.publishers))
        finally:
            broker.stop()
        machine["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    print_table(machine, sinks, rounds)
    baseline = max(s["frames_per_s"] for s in sinks)
    report = {
        "machine": machine,
        "settings": {"devices": args.devices, "frames_per_device": args.frames, "publishers": args.publishers,
                     "fsync": not args.no_fsync, "jpeg_kb_mean": round(float(np.mean([len(j) for j, _ in payloads])) / 1024, 1)},
        "sink": sinks,
        "receivers": [{**r, "ratio_to_sink": round(r["frames_per_s"] / baseline, 3)} for r in rounds],
    }  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    bad = [r for r in rounds if r["lost"] or r["duplicates_stored"] or r["batches_invalid"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
