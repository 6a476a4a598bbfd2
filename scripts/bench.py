#!/usr/bin/env python3
"""Performance bench: how close ``edge-agent run`` comes to the model's bare ``invoke()`` rate.

In one run, on the same frames and models, it measures:

- the limit: back-to-back ``interpreter.invoke()`` calls per second, for every installed runtime
  (ai_edge_litert, tflite_runtime) and thread count (1..cpu_count), and the best of them;
- the end-to-end rate of the agent (``build_agent`` in a child process, so its RSS is its own)
  from a folder of JPEGs through detection, the VoTT writer and the MQTT outbox to a local
  Mosquitto that the bench starts (outbox only when Mosquitto is missing), in ``--rounds`` (3)
  interleaved rounds per frame size, each run followed by the best limit once more;
- per-stage medians and p95: decode (the same files decoded as the folder source decodes them),
  preprocess, invoke, postprocess (decode + NMS), write (VoTT), publish (outbox);
- decode + NMS of a real YOLOv8n ``[1,84,8400]`` output alone;
- the child's peak RSS (``VmHWM`` from /proc);
- the ratio end-to-end / limit per model and frame size (target >= 0.85): each run against the
  higher of the limits measured just before and after it (the shared machine's speed drifts), each
  size reported by its median round.

With ``--detect-only`` each size is also run with no output stages (capture and detection only),
which shows what the VoTT writer, harvest, alerts and MQTT cost end to end. The tables also give
the CPU each thread used per frame and how busy the inference thread was (near 1: the detector
is the bottleneck; then a slow ``invoke`` inside the run means other threads take its cores).

Prints a table and, with ``--json out.json``, writes everything as JSON.

    .venv/bin/python scripts/bench.py                       # print3d SSD, YOLOv8n, bundled model
    .venv/bin/python scripts/bench.py --frames 100 --sizes 640x480 --models yolov8n --json b.json
    .venv/bin/python scripts/bench.py --models my.tflite --agent-threads 1 --set output.fsync=false

Frames are made from ``../shared/models/images`` and ``../shared/models/print3d/images`` (each
frame a different crop of one of them, resized and saved as JPEG quality 90) and cached in the
work folder; without ``../shared`` a synthetic pattern is used.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import getpass
import json
import logging
import math
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EDGE_AGENT_SHARED", REPO.parent / "shared"))
SCHEMA = "edge-agent-bench/1"
TARGET_RATIO = 0.85
TARGET_DECODE_NMS_MS = 1.0
TARGET_PEAK_RSS_MB = 200.0
E2E_HEADERS = (
    "size",
    "frames",
    "runtime/interp x thr",
    "e2e fps",
    "limit fps",
    "ratio",
    f">={TARGET_RATIO}",
    "ratio by round",
    "peak RSS MB",
    "infer busy",
    "capq empty",
    "resq full",
    "acked/left",
)
STAGES = ("decode", "preprocess", "invoke", "postprocess", "write", "publish")
DETECTOR_STAGES = ("preprocess", "invoke", "postprocess")

# name -> (path relative to the shared folder, or None for a path in the repo)
KNOWN_MODELS: dict[str, tuple[str, bool]] = {
    "print3d": ("models/print3d/print3d_2020-10-23_ssd_uint8.tflite", True),
    "yolov8n": ("models/yolov8n_full_integer_quant_u8.3.172.tflite", True),
    "ssd_mobilenet": ("models/ssd_mobilenet_v1_coco_quant_detect.tflite", True),
    "bundled": ("agent/data/print3d_guidance.tflite", False),
}
DEFAULT_MODELS = "print3d,yolov8n,bundled"
# the models the issue's end-to-end target names; the others' ratios are shown for information
ISSUE_TARGET_MODELS = ("print3d", "yolov8n")
YOLO_NMS_MODEL = "yolov8n"
YOLO_NMS_IMAGE = "models/images/kite_and_cold.jpg"

log = logging.getLogger("bench")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------------------- statistics


def summarize_ms(values: Sequence[float]) -> dict[str, Any]:
    """``n``, ``median_ms``, ``p95_ms``, ``mean_ms``, ``min_ms``, ``max_ms`` of durations in ms
    (None figures when there are no values)."""
    if not values:
        return {"n": 0, "median_ms": None, "p95_ms": None, "mean_ms": None, "min_ms": None, "max_ms": None}
    a = np.asarray(values, dtype=np.float64)
    return {
        "n": int(a.size),
        "median_ms": round(float(np.median(a)), 3),
        "p95_ms": round(float(np.percentile(a, 95)), 3),
        "mean_ms": round(float(a.mean()), 3),
        "min_ms": round(float(a.min()), 3),
        "max_ms": round(float(a.max()), 3),
    }


def proc_status_kb(pid: int | str = "self") -> dict[str, int]:
    """``VmRSS``, ``VmHWM`` (peak RSS) and friends of a process from /proc, in kB (empty off Linux)."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key.startswith(("Vm", "Rss")):
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[key] = int(parts[0])
    return out


# ----------------------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, memory, versions, load."""
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_mb": round(mem_kb / 1024),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        # which build (a distribution's, pyenv's): the Python-side stages depend on how it was compiled
        "python_base": sys.base_prefix,
        "python_compiler": platform.python_compiler(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "ai_edge_litert": _version("ai-edge-litert"),
        "tflite_runtime": _version("tflite-runtime"),
        "paho_mqtt": _version("paho-mqtt"),
        "simplejpeg": _version("simplejpeg"),
        "git_commit": _git_commit(),
        "load_avg_1m_start": round(os.getloadavg()[0], 2),
    }


# ----------------------------------------------------------------------------------------- models


@dataclass
class ModelEntry:
    """A model to bench, or why it is skipped."""

    name: str
    path: Path | None
    skipped: str | None = None


def resolve_models(spec: str, shared: Path) -> list[ModelEntry]:
    """Known names (print3d, yolov8n, ssd_mobilenet, bundled) or paths to ``.tflite`` files."""
    entries = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        if item in KNOWN_MODELS:
            rel, in_shared = KNOWN_MODELS[item]
            path = (shared / rel) if in_shared else (REPO / rel)
            if path.is_file():
                entries.append(ModelEntry(item, path))
            else:
                why = (
                    f"{path} is absent (../shared not here)"
                    if in_shared
                    else f"{path} does not exist yet (the bundled model is built by scripts/train_guidance_model.py)"
                )
                entries.append(ModelEntry(item, None, why))
        else:
            path = Path(item).expanduser()
            if path.is_file():
                entries.append(ModelEntry(path.stem, path.resolve()))
            else:
                entries.append(ModelEntry(item, None, f"{path} does not exist"))
    return entries


# ----------------------------------------------------------------------------------------- frames


def source_images(shared: Path) -> list[NDArray[np.uint8]]:
    """The pictures frames are cut from: the shared photos and printer frames, else a pattern."""
    paths = sorted((shared / "models" / "images").glob("*")) + sorted(
        (shared / "models" / "print3d" / "images").glob("*.jpg")
    )
    images = [img for img in (read_bgr(p) for p in paths) if img is not None]
    if images:
        return images
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (45, 80, 3), dtype=np.uint8), (1280, 720))
    return [np.asarray(cv2.GaussianBlur(base, (0, 0), 3), dtype=np.uint8)]


def read_bgr(path: Path) -> NDArray[np.uint8] | None:
    """An image file as BGR uint8, or None when OpenCV cannot read it."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if image is None else np.asarray(image, dtype=np.uint8)


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> ``(640, 480)``."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"bench: size {text!r} must look like 640x480") from None
    if w < 32 or h < 32:
        raise SystemExit(f"bench: size {text!r} is too small")
    return w, h


def make_frames(
    folder: Path, images: Sequence[NDArray[np.uint8]], width: int, height: int, count: int, quality: int = 90
) -> list[Path]:
    """``count`` different JPEG frames of ``width`` x ``height`` in ``folder`` (reused when already
    there): frame i is a crop (85-100 % of the area, position varying) of image ``i % len(images)``."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / ".complete"
    wanted = [folder / f"frame_{i:05d}.jpg" for i in range(count)]
    if stamp.exists() and stamp.read_text() == f"{count} {quality}" and all(p.exists() for p in wanted):
        return wanted
    for old in folder.glob("frame_*.jpg"):
        old.unlink()
    rng = np.random.default_rng(count * 7919 + width)
    for i, path in enumerate(wanted):
        img = images[i % len(images)]
        h, w = img.shape[:2]
        # crop to the target aspect ratio, 85-100 % of the largest such crop, at a random place
        aspect = width / height
        cw, ch = (w, round(w / aspect)) if w / h < aspect else (round(h * aspect), h)
        f = float(rng.uniform(0.85, 1.0))
        cw, ch = max(8, int(cw * f)), max(8, int(ch * f))
        x = int(rng.integers(0, w - cw + 1))
        y = int(rng.integers(0, h - ch + 1))
        frame = cv2.resize(img[y : y + ch, x : x + cw], (width, height), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError("OpenCV cannot encode JPEG")
        path.write_bytes(buf.tobytes())
    stamp.write_text(f"{count} {quality}")
    return wanted


# ----------------------------------------------------------------------------------------- broker


def mosquitto_binary() -> str | None:
    """Path of the Mosquitto broker, or None when it is not installed."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Broker:
    """A throw-away Mosquitto on 127.0.0.1 (no persistence, anonymous), for the duration of a bench."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary = binary
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            f"log_dest file {self.folder / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "max_queued_messages 100000",
        ]
        if os.geteuid() == 0:
            lines.append(f"user {getpass.getuser()}")
        self.config = self.folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def version(self) -> str:
        """``mosquitto version 2.0.11`` or similar."""
        out = subprocess.run([self.binary, "-h"], capture_output=True, text=True, check=False)
        first = (out.stdout or out.stderr).splitlines()
        return first[0].strip() if first else "mosquitto"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start and wait until the port accepts connections."""
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.folder,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}; see {self.folder}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout_s} s")

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the broker has used so far (0 when unknown)."""
        if self.proc is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@contextlib.contextmanager
def maybe_broker(enabled: bool, folder: Path) -> Iterator[Broker | None]:
    """A started broker when ``enabled`` and Mosquitto is installed, else None (said on stderr)."""
    if not enabled:
        yield None
        return
    binary = mosquitto_binary()
    if binary is None:
        print(
            "bench: Mosquitto is not installed (apt-get install mosquitto); benching with the outbox only "
            "(messages wait on disk, none is sent)",
            file=sys.stderr,
        )
        yield None
        return
    broker = Broker(binary, folder)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# ----------------------------------------------------------------------------------------- the limit


def measure_invoke(
    model: Path,
    runtime: str,
    threads: int,
    frame: NDArray[np.uint8],
    seconds: float,
    max_invokes: int = 1000,
    interpreters: int = 1,
) -> dict[str, Any]:
    """Back-to-back ``invoke()`` on the model's input for ``frame`` (preprocessed once): median and
    p95 ms per call, and calls per second over the whole loop (``rate_fps``). With ``interpreters``
    > 1, that many interpreters invoke at once, each on its own thread (the agent's parallel mode),
    and the rate is their sum."""
    from agent.config.detector import DetectorSettings
    from agent.detect.detector import Detector

    detectors = [
        Detector(DetectorSettings(model=str(model), runtime=runtime, num_threads=threads))
        for _ in range(interpreters)
    ]
    for detector in detectors:
        tensor, _ = detector.preprocess(frame)
        detector.interpreter.set_tensor(detector._input["index"], tensor.copy())
        detector.interpreter.invoke()  # one more warm-up beyond the detector's own
    times: list[list[float]] = [[] for _ in detectors]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    deadline = start + seconds
    per_interpreter = max(5, max_invokes // interpreters)

    def loop(i: int) -> None:
        interpreter, mine = detectors[i].interpreter, times[i]
        while len(mine) < per_interpreter and (len(mine) < 5 or time.perf_counter() < deadline):
            t0 = time.perf_counter()
            interpreter.invoke()
            mine.append((time.perf_counter() - t0) * 1000.0)

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(interpreters)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    total_s = time.perf_counter() - start
    usage_end = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = usage_end.ru_utime + usage_end.ru_stime - usage.ru_utime - usage.ru_stime
    labels = list(detectors[0].labels)
    detectors.clear()
    gc.collect()
    all_times = [t for mine in times for t in mine]
    summary = summarize_ms(all_times)
    return {
        "runtime": runtime,
        "threads": threads,
        "interpreters": interpreters,
        "invokes": len(all_times),
        "median_ms": summary["median_ms"],
        "p95_ms": summary["p95_ms"],
        "rate_fps": round(len(all_times) / total_s, 2),
        "cpu_ms_per_invoke": round(cpu_s * 1000.0 / len(all_times), 2),
        "labels": labels,
    }


def installed_runtimes(wanted: Sequence[str]) -> tuple[list[str], list[str]]:
    """(installed, missing) among ``wanted``."""
    from agent.detect.runtime import installed_runtimes as found

    have = set(found())
    return [r for r in wanted if r in have], [r for r in wanted if r not in have]


# ----------------------------------------------------------------------------------------- decode + NMS


def measure_decode(files: Sequence[Path], model: Path, limit: int = 200) -> dict[str, Any]:
    """JPEG decode as the folder source does it for ``model`` (at reduced size when the model's
    input allows, ``agent.sources.decode.decode_for_detector``), per file."""
    from agent.config.detector import DetectorSettings
    from agent.detect.detector import Detector
    from agent.sources.decode import DecodeHint, decode_for_detector

    detector = Detector(DetectorSettings(model=str(model), num_threads=1), warm_up=False)
    hint = DecodeHint(detector.input_width, detector.input_height, either=detector.preprocess.letterbox)
    datas = [p.read_bytes() for p in files[:limit]]
    times = []
    reduced = 0
    for data in datas:
        t0 = time.perf_counter()
        decoded = decode_for_detector(data, hint)
        times.append((time.perf_counter() - t0) * 1000.0)
        reduced += decoded is not None and decoded[1] is not None
    return {**summarize_ms(times), "reduced": reduced == len(datas)}


def measure_yolo_decode_nms(model: Path, image: Path, repeats: int = 300) -> dict[str, Any]:
    """Decode + NMS of a real YOLOv8n output (captured once from ``image``): ``decode_yolo`` + ``nms``
    alone, and the detector's whole postprocess (filter, NMS, box mapping, ``Detections``)."""
    from agent.config.detector import DetectorSettings
    from agent.detect.detector import Detector
    from agent.detect.layouts import decode_yolo
    from agent.detect.nms import nms

    detector = Detector(DetectorSettings(model=str(model)))
    frame = read_bgr(image)
    if frame is None:
        raise RuntimeError(f"cannot read {image}")
    tensor, transform = detector.preprocess(frame)
    raw = [r.copy() for r in detector.invoke(tensor)]
    p = detector.params
    output = detector.outputs[0]

    def decode_and_nms() -> int:
        cand = decode_yolo(raw[0], output, detector.layout, p.score_threshold)
        keep = nms(
            cand.xyxy,
            cand.score,
            cand.class_id,
            iou_threshold=p.iou_threshold,
            class_agnostic=p.class_agnostic,
        )
        return len(keep[: p.max_detections])

    def timed(fn: Callable[[], Any]) -> list[float]:
        for _ in range(10):
            fn()
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1000.0)
        return out

    candidates = len(decode_yolo(raw[0], output, detector.layout, p.score_threshold).score)
    kept = decode_and_nms()
    alone = summarize_ms(timed(decode_and_nms))
    whole = summarize_ms(timed(lambda: detector.decode(raw, transform)))
    return {
        "model": model.name,
        "image": image.name,
        "output_shape": list(output.shape),
        "output_dtype": str(output.dtype),
        "score_threshold": p.score_threshold,
        "iou_threshold": p.iou_threshold,
        "candidates": candidates,
        "kept": kept,
        "decode_nms": alone,
        "postprocess_total": whole,
        "target_median_ms": TARGET_DECODE_NMS_MS,
        "ok": bool(alone["median_ms"] is not None and alone["median_ms"] < TARGET_DECODE_NMS_MS),
    }


# ----------------------------------------------------------------------------------------- end to end


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """``data["a"]["b"] = value`` for ``"a.b"``, creating mappings on the way."""
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def parse_overrides(items: Sequence[str]) -> list[tuple[str, Any]]:
    """``["output.fsync=false", ...]`` -> ``[("output.fsync", False), ...]`` (values parsed as YAML)."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"bench: --set {item!r} must look like section.key=value")
        out.append((key.strip(), yaml.safe_load(value)))
    return out


def agent_config(
    frames_dir: Path,
    model: Path,
    out_dir: Path,
    *,
    broker_port: int | None,
    runtime: str,
    threads: int | None,
    overrides: Sequence[tuple[str, Any]] = (),
) -> dict[str, Any]:
    """The agent config (as data) of one end-to-end run: defaults everywhere except where the bench
    must say something (source, model, output, broker), then ``overrides``."""
    config: dict[str, Any] = {
        "source": {"url": str(frames_dir), "kind": "folder", "id": "bench"},
        "detector": {"model": str(model), "runtime": runtime, "num_threads": threads},
        "output": {"dir": str(out_dir)},
        "pipeline": {"stats_interval_s": 3600},
        "mqtt": {
            "enabled": broker_port is not None,
            "host": "127.0.0.1",
            "port": broker_port or 1883,
            "device_id": "bench",
            "outbox": {"path": str(out_dir / "mqtt-outbox.sqlite3")},
        },
    }
    for key, value in overrides:
        set_dotted(config, key, value)
    return config


UNIT_FILE = Path(__file__).resolve().parents[1] / "systemd" / "edge-agent@.service"


def unit_environment(unit: Path = UNIT_FILE) -> dict[str, str]:
    """The ``Environment=`` variables of the systemd unit (quoted words and continued lines as
    systemd reads them), so the measured agent runs as the deployed one does (glibc malloc settings
    change its CPU and RSS)."""
    env: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in unit.read_text().replace("\\\n", " ").splitlines():
            if line.startswith("Environment="):
                for word in shlex.split(line.removeprefix("Environment=")):
                    key, _, value = word.partition("=")
                    env[key] = value
    return env


def child_environment() -> dict[str, str]:
    """The variables ``run_child`` adds or that tune glibc's allocator: the unit's, unless set here."""
    env = {**unit_environment(), **{k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}}
    return {k: os.environ.get(k, v) for k, v in env.items()}


def run_child(spec: dict[str, Any], work: Path, timeout_s: float = 3600.0) -> dict[str, Any]:
    """Run one agent in a fresh Python process (``--child``) with the systemd unit's environment
    (variables already set in ours win, for experiments); returns what it measured."""
    work.mkdir(parents=True, exist_ok=True)
    spec_path = work / "child-spec.json"
    result_path = work / "child-result.json"
    result_path.unlink(missing_ok=True)
    spec = {**spec, "result": str(result_path)}
    spec_path.write_text(json.dumps(spec, indent=2))
    log_path = work / "child.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
            check=False,
            cwd=work,
            env={**os.environ, **child_environment()},
        )
    if proc.returncode != 0 or not result_path.exists():
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the agent run failed (exit {proc.returncode}); its log ends with:\n{tail}")
    result: dict[str, Any] = json.loads(result_path.read_text())
    return result


def thread_cpu_s() -> dict[int, float]:
    """CPU seconds (user + system) of each live thread of this process, by native thread id."""
    out: dict[int, float] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return out


class ThreadCpuSampler:
    """Samples per-thread CPU time every ``interval_s`` and groups it by the Python thread's name;
    threads Python does not know (the interpreter's worker pool) are grouped as ``native``. A thread
    that ends loses what it used after its last sample (at most ``interval_s``): fine for runs of
    seconds, rough for a run shorter than a few intervals."""

    def __init__(self, interval_s: float = 0.25, queues: Callable[[], tuple[int, int]] | None = None) -> None:
        self.interval_s = interval_s
        self.queues = queues
        self.queue_samples: list[tuple[int, int]] = []
        self.cpu: dict[int, float] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-cpu-sampler", daemon=True)

    def _run(self) -> None:
        import threading

        # queue depths at 20 Hz, thread CPU times every interval_s
        every = max(1, round(self.interval_s / 0.05))
        tick = 0
        while not self._stop.wait(0.05):
            if self.queues is not None:
                with contextlib.suppress(Exception):
                    self.queue_samples.append(self.queues())
            tick += 1
            if tick % every == 0:
                self.sample(threading.enumerate())

    def sample(self, threads: Sequence[Any]) -> None:
        """Record the CPU time of every live thread (and the names of the Python ones)."""
        for t in threads:
            if t.native_id is not None:
                self.names[t.native_id] = t.name
        self.cpu.update(thread_cpu_s())

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def stop(self) -> dict[str, float]:
        """Stop; CPU seconds per thread group."""
        import threading

        self._stop.set()
        self._thread.join()
        self.sample(threading.enumerate())
        groups: dict[str, float] = {}
        for tid, seconds in self.cpu.items():
            group = _thread_group(self.names.get(tid))
            groups[group] = groups.get(group, 0.0) + seconds
        return groups


def _thread_group(name: str | None) -> str:
    if name is None:
        return "native"  # interpreter worker threads, OpenCV's pool
    if name.startswith("paho"):
        return "paho"
    if name in ("capture", "output", "mqtt-sender", "MainThread", "bench-cpu-sampler"):
        return name
    if name.startswith("inference"):
        return "inference"
    return "other:" + name.rstrip("0123456789-")


def child_main(spec_path: Path) -> int:
    """In the child: build the agent from the spec's config, run it, record per-frame timings,
    completion times and RSS, write the result JSON."""
    spec = json.loads(spec_path.read_text())
    logging.basicConfig(level=spec.get("log_level", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    import threading

    from agent.app import build_agent
    from agent.config import AgentConfig
    from agent.harvest.decision import KeepDecision
    from agent.pipeline import HandledFrame

    config = AgentConfig.model_validate(spec["config"])
    every = int(spec.get("sample_rss_every") or 0)
    expected = int(spec.get("frames") or 0)
    sampler: ThreadCpuSampler | None = None
    # compact arrays (8 bytes a value), so a long soak's own bookkeeping does not show as RSS growth
    done = array("d")
    timings: dict[str, array[float]] = {}
    rss: list[tuple[int, int]] = []
    kept = 0

    def on_result(handled: HandledFrame) -> None:
        nonlocal kept
        done.append(time.monotonic())
        for key, value in handled.result.timings_ms.items():
            timings.setdefault(key, array("d")).append(float(value))
        for stage, key in (("vott", "write"), ("mqtt", "publish")):
            if stage in handled.stage_ms:
                timings.setdefault(key, array("d")).append(handled.stage_ms[stage])
        decision = handled.outputs.find(KeepDecision)
        kept += bool(decision is not None and decision.keep)
        if len(done) == expected and sampler is not None:
            sampler.sample(threading.enumerate())  # the last frame: before the threads end
        if every and len(done) % every == 0:
            rss.append((len(done), proc_status_kb().get("VmRSS", 0)))

    rss_before_build = proc_status_kb().get("VmRSS", 0)
    t_build = time.monotonic()
    agent = build_agent(config, on_result=on_result)
    if spec.get("no_stages"):
        # experiment: capture and inference only (what the pipeline costs without any output)
        agent.pipeline.stages = []
    pipeline: Any = agent.pipeline
    sampler = ThreadCpuSampler(
        queues=lambda: (pipeline._capture_q.qsize(), pipeline._result_q.qsize())  # private: bench only
    )
    cpu_at_start = thread_cpu_s()
    usage_start = resource.getrusage(resource.RUSAGE_SELF)
    sampler.start()
    t_run = time.monotonic()
    stats = agent.run()
    t_end = time.monotonic()
    usage_end = resource.getrusage(resource.RUSAGE_SELF)
    cpu_groups = sampler.stop()
    # CPU spent before the run (start-up) by the threads that also ran during it
    for tid, seconds in cpu_at_start.items():
        group = _thread_group(sampler.names.get(tid))
        if group in cpu_groups:
            cpu_groups[group] -= seconds
    status = proc_status_kb()
    interpreters, threads = config.detector.parallelism()
    left = outbox_messages(Path(config.mqtt.outbox.path)) if config.mqtt.enabled else None
    # the report needs only the timings and these figures; per-frame times go out relative to run start
    out = {
        "runtime": agent.detector.runtime,
        "threads": threads,
        "interpreters": interpreters,
        "model": agent.detector.name,
        "build_s": round(t_run - t_build, 3),
        "run_s": round(t_end - t_run, 3),
        "done_s": [round(t - t_run, 5) for t in done],
        "timings_ms": {k: v.tolist() for k, v in timings.items()},
        "kept": kept,
        "stats": stats,
        "vm_hwm_kb": status.get("VmHWM", 0),
        "vm_rss_end_kb": status.get("VmRSS", 0),
        "vm_rss_before_build_kb": rss_before_build,
        "rss_samples": rss,
        "outbox_left": left,
        "opencv_threads": cv2.getNumThreads(),
        "cpu_s": {k: round(v, 3) for k, v in sorted(cpu_groups.items())},
        "queue_samples": sampler.queue_samples,
        "queue_sizes": [config.pipeline.capture_queue, config.pipeline.result_queue],
        "cpu_s_total": round(
            usage_end.ru_utime + usage_end.ru_stime - usage_start.ru_utime - usage_start.ru_stime, 3
        ),
        "environment": {k: os.environ.get(k) for k in child_environment()},  # what it was given
        "cpu_s_system": round(usage_end.ru_stime - usage_start.ru_stime, 3),
        "minor_page_faults": usage_end.ru_minflt - usage_start.ru_minflt,
        "context_switches": {
            "voluntary": usage_end.ru_nvcsw - usage_start.ru_nvcsw,
            "involuntary": usage_end.ru_nivcsw - usage_start.ru_nivcsw,
        },
    }
    Path(spec["result"]).write_text(json.dumps(out, default=str))
    return 0


def outbox_messages(path: Path) -> int | None:
    """Messages still waiting in an outbox file (not acknowledged by the broker), None without one."""
    if not path.exists():
        return None
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])


def e2e_rate(done_s: Sequence[float]) -> float:
    """Frames per second between the first and the last completed frame (steady state: the first
    frame's latency and the shutdown are left out)."""
    if len(done_s) < 2 or done_s[-1] <= done_s[0]:
        return 0.0
    return (len(done_s) - 1) / (done_s[-1] - done_s[0])


def _queue_figures(samples: Sequence[Sequence[int]], sizes: Sequence[int]) -> dict[str, Any]:
    """Mean depth and share of samples empty/full, per queue: an empty capture queue means the
    detector waits for frames (decode-bound), a full result queue that the output stages are slow."""
    out: dict[str, Any] = {}
    for i, name in enumerate(("capture", "results")):
        depths = [s[i] for s in samples]
        if not depths:
            continue
        size = sizes[i] if i < len(sizes) else 0
        out[name] = {
            "mean": round(sum(depths) / len(depths), 2),
            "empty": round(sum(d == 0 for d in depths) / len(depths), 3),
            "full": round(sum(d >= size for d in depths) / len(depths), 3) if size else None,
            "size": size,
        }
    return out


def summarize_run(
    child: dict[str, Any], size: str, frames: int, limit_fps: float, decode: dict[str, Any]
) -> dict[str, Any]:
    """One end-to-end run for the report: rate, ratio, stage medians/p95, RSS, MQTT counters."""
    done = child["done_s"]
    rate = e2e_rate(done)
    stages: dict[str, Any] = {"decode": decode}
    for name in STAGES[1:]:
        stages[name] = summarize_ms(child["timings_ms"].get(name, []))
    per_frame = [
        sum(vals) for vals in zip(*(child["timings_ms"].get(k, []) for k in DETECTOR_STAGES), strict=False)
    ]
    stages["detect_total"] = summarize_ms(per_frame)
    span = done[-1] - done[0] if len(done) > 1 else 0.0
    # share of the run the inference threads spent in detect(): near 1 = the detector is the bottleneck
    busy = sum(per_frame[1:]) / 1000.0 / span / child.get("interpreters", 1) if span > 0 else None
    queues = _queue_figures(child.get("queue_samples") or [], child.get("queue_sizes") or [0, 0])
    stats = child.get("stats") or {}
    mqtt = stats.get("mqtt") or {}
    n = max(1, len(done))
    cpu = {k: round(v * 1000.0 / n, 2) for k, v in child.get("cpu_s", {}).items()}
    return {
        "size": size,
        "frames": frames,
        "processed": len(done),
        "kept": child.get("kept", 0),
        "runtime": child["runtime"],
        "threads": child["threads"],
        "interpreters": child.get("interpreters", 1),
        "e2e_fps": round(rate, 2),
        "wall_s": child["run_s"],
        "build_s": child["build_s"],
        "limit_fps": round(limit_fps, 2),
        # rounded down, so a ratio shown as 0.850 has met 0.85 (0.8496 is shown as 0.849)
        "ratio": math.floor(rate / limit_fps * 1000) / 1000 if limit_fps else None,
        "target_ratio": TARGET_RATIO,
        "meets_target": bool(limit_fps and rate / limit_fps >= TARGET_RATIO),
        "peak_rss_mb": round(child["vm_hwm_kb"] / 1024, 1),
        "stages": stages,
        "mqtt": {
            "sent": mqtt.get("sent"),
            "acked": mqtt.get("acked"),
            "left_in_outbox": child.get("outbox_left"),
        }
        if mqtt
        else None,
        "inference_thread_busy": round(busy, 3) if busy is not None else None,
        "queues": queues,
        "cpu_ms_per_frame": cpu,
        "cpu_ms_per_frame_total": round(child.get("cpu_s_total", 0.0) * 1000.0 / n, 2),
        "cpu_ms_per_frame_system": round(child.get("cpu_s_system", 0.0) * 1000.0 / n, 2),
        "minor_page_faults_per_frame": round(child.get("minor_page_faults", 0) / n, 1),
        "context_switches_per_frame": {
            k: round(v / n, 1) for k, v in child.get("context_switches", {}).items()
        },
        "stage_errors": stats.get("stage_errors", {}),
        "opencv_threads_in_agent": child.get("opencv_threads"),
        "agent_env": child.get("environment", {}),
    }


# ----------------------------------------------------------------------------------------- report


def _fmt(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def format_report(report: dict[str, Any]) -> str:
    """The human-readable tables of a bench report."""
    m = report["machine"]
    s = report["settings"]
    out = [
        f"edge-agent bench  {report['created']}  commit {m.get('git_commit') or '?'}",
        f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_mb']} MB, {m['os']}, Python {m['python']} "
        f"({m.get('python_base', '?')}), "
        f"load {m['load_avg_1m_start']} -> {m.get('load_avg_1m_end', '?')} (1 min avg)",
        f"runtimes: ai_edge_litert {m['ai_edge_litert']}, tflite_runtime {m['tflite_runtime']}; "
        f"OpenCV {m['opencv']} ({m['opencv_threads']} threads); JPEG decoder "
        + (f"simplejpeg {m['simplejpeg']}" if m.get("simplejpeg") else "OpenCV"),
        f"frames: {s['frames']} per size and round, {s.get('rounds', 1)} round(s), sizes {', '.join(s['sizes'])}; broker: {s['broker'] or 'none (outbox only)'}; "
        f"agent runtime {s['agent_runtime']}, threads {s['agent_threads']}"
        + (f"; overrides {', '.join(s['overrides'])}" if s["overrides"] else ""),
        "agent environment (the systemd unit's unless set): "
        + " ".join(f"{k}={v}" for k, v in s.get("agent_env", {}).items()),
        "",
    ]
    for model in report["models"]:
        if model.get("skipped"):
            out += [f"== {model['name']}: skipped: {model['skipped']}", ""]
            continue
        out.append(f"== {model['name']}  ({model['path']}; alerts {'on' if model['alerts'] else 'off'})")
        rows = []
        best = model["limit"]["best"]
        for r in model["limit"]["runs"]:
            mark = (
                " *"
                if r is best or (r["runtime"], r["threads"]) == (best["runtime"], best["threads"])
                else ""
            )
            rows.append(
                [
                    r["runtime"],
                    str(r["threads"]),
                    str(r["invokes"]),
                    _fmt(r["median_ms"], ".2f"),
                    _fmt(r["p95_ms"], ".2f"),
                    _fmt(r["cpu_ms_per_invoke"], ".1f"),
                    _fmt(r["rate_fps"]) + mark,
                ]
            )
        out += [
            "limit: bare invoke() (* = best)",
            _table(["runtime", "threads", "invokes", "median ms", "p95 ms", "CPU ms", "rate fps"], rows),
            "",
        ]
        rechecks = model["limit"].get("rechecks") or []
        if rechecks:
            rc = rechecks[-1]
            out.append(
                f"limit re-measured after each run ({rc['runtime']}, {rc['threads']} threads): "
                + ", ".join(f"{r['rate_fps']:.1f}" for r in rechecks)
                + " fps; each run's ratio uses the higher of the limits measured just before and after it"
            )
            out.append("")
        par = model["limit"].get("parallel_interpreters")
        if par:
            out.append(
                f"for reference, not the limit: {par['interpreters']} interpreters x {par['threads']} thread(s) "
                f"invoking at once: {par['rate_fps']:.1f} fps bare "
                f"({par['rate_fps'] / model['limit']['limit_fps']:.2f} x the limit; median {par['median_ms']:.1f} ms, "
                f"CPU {par['cpu_ms_per_invoke']:.1f} ms per invoke)"
            )
            out.append("")
        rows = []
        for run in model["runs"]:
            mq = run.get("mqtt") or {}
            rows.append(
                [
                    run["size"],
                    f"{run['processed']}/{run['frames']}",
                    f"{run['runtime']}/{run.get('interpreters', 1)}x{run['threads']}",
                    _fmt(run["e2e_fps"]),
                    _fmt(run["limit_fps"]),
                    _fmt(run["ratio"], ".3f"),
                    "yes" if run["meets_target"] else "NO",
                    " ".join(_fmt(r["ratio"], ".3f") for r in run.get("rounds", [])) or "-",
                    _fmt(run["peak_rss_mb"]),
                    _fmt(run["inference_thread_busy"], ".2f"),
                    _fmt((run["queues"].get("capture") or {}).get("empty"), ".2f"),
                    _fmt((run["queues"].get("results") or {}).get("full"), ".2f"),
                    f"{_fmt(mq.get('acked'), 'd')}/{_fmt(mq.get('left_in_outbox'), 'd')}" if mq else "-",
                ]
            )
        out += [
            "end to end: folder -> detect -> VoTT -> outbox -> MQTT (each size: the round with the median ratio)",
            _table(E2E_HEADERS, rows),
            "",
        ]
        rows = []
        for run in model["runs"]:
            st = run["stages"]
            cells = [run["size"]]
            for name in (*STAGES, "detect_total"):
                cells.append(f"{_fmt(st[name]['median_ms'], '.2f')} / {_fmt(st[name]['p95_ms'], '.2f')}")
            rows.append(cells)
        out += ["per stage, ms (median / p95)", _table(["size", *STAGES, "pre+inv+post"], rows), ""]
        groups = sorted({g for run in model["runs"] for g in run["cpu_ms_per_frame"]})
        rows = [
            [
                run["size"],
                _fmt(run["cpu_ms_per_frame_total"], ".1f"),
                *(_fmt(run["cpu_ms_per_frame"].get(g), ".1f") for g in groups),
            ]
            for run in model["runs"]
        ]
        out += [
            "CPU ms per frame by thread (agent process total, then each thread; native = interpreter workers)",
            _table(["size", "total", *groups], rows),
            "",
        ]
    dn = report.get("decode_nms")
    if dn:
        if dn.get("skipped"):
            out.append(f"YOLOv8n decode+NMS: skipped: {dn['skipped']}")
        else:
            a, w = dn["decode_nms"], dn["postprocess_total"]
            out.append(
                f"YOLOv8n {dn['output_shape']} {dn['output_dtype']} decode+NMS ({dn['image']}, {dn['candidates']} "
                f"candidates > {dn['score_threshold']}, {dn['kept']} kept): median {a['median_ms']:.3f} ms, "
                f"p95 {a['p95_ms']:.3f} ms (target < {TARGET_DECODE_NMS_MS} ms: {'yes' if dn['ok'] else 'NO'}); "
                f"whole postprocess median {w['median_ms']:.3f} ms"
            )
    out.append("")
    out.append("checks:")
    for check in report["checks"]:
        verdict = "ok" if check["ok"] else "FAIL" if check.get("issue_target", True) else "below"
        scope = (
            ""
            if check.get("issue_target", True)
            else f"; the issue's target is for {', '.join(ISSUE_TARGET_MODELS)}"
        )
        out.append(f"  [{verdict}] {check['name']}: {check['value']} (target {check['target']}{scope})")
    return "\n".join(out)


def build_checks(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's done-when criteria, each with its measured value; ``issue_target`` is false for
    the ratio of a model the target does not name (our own, or one given with ``--models``)."""
    checks = []
    for model in report["models"]:
        for run in [r for r in model.get("runs", []) if not r.get("detect_only")]:
            checks.append(
                {
                    "name": f"{model['name']} {run['size']} end-to-end / limit",
                    "value": run["ratio"],
                    "target": f">= {TARGET_RATIO}",
                    "ok": run["meets_target"],
                    "issue_target": model["name"] in ISSUE_TARGET_MODELS,
                }
            )
        if model["name"] == "yolov8n" and model.get("runs"):
            peak = max(r["peak_rss_mb"] for r in model["runs"])
            checks.append(
                {
                    "name": "yolov8n peak RSS MB",
                    "value": peak,
                    "target": f"< {TARGET_PEAK_RSS_MB}",
                    "ok": peak < TARGET_PEAK_RSS_MB,
                    "issue_target": True,
                }
            )
    dn = report.get("decode_nms")
    if dn and not dn.get("skipped"):
        checks.append(
            {
                "name": "YOLOv8n decode+NMS median ms",
                "value": dn["decode_nms"]["median_ms"],
                "target": f"< {TARGET_DECODE_NMS_MS}",
                "ok": dn["ok"],
                "issue_target": True,
            }
        )
    return checks


# ----------------------------------------------------------------------------------------- main


def median_run(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median ratio (the lower middle one of an even count) standing for all of
    them, with every round's ratio and fps beside it and the highest peak RSS of any round."""
    ordered = sorted(rounds, key=lambda r: r["ratio"] or 0.0)
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["rounds"] = [
        {"ratio": r["ratio"], "e2e_fps": r["e2e_fps"], "limit_fps": r["limit_fps"]} for r in rounds
    ]
    chosen["peak_rss_mb"] = max(r["peak_rss_mb"] for r in rounds)
    return chosen


def bench_model(
    entry: ModelEntry,
    args: argparse.Namespace,
    runtimes: Sequence[str],
    threads: Sequence[int],
    frame_sets: dict[str, list[Path]],
    broker: Broker | None,
    work: Path,
    overrides: Sequence[tuple[str, Any]],
) -> dict[str, Any]:
    """Limit sweep, then ``--rounds`` rounds of one end-to-end run per frame size, each run followed
    by the best limit once more: a run's ratio uses the higher of the limits measured just before
    and just after it; each size reports its median round."""
    assert entry.path is not None
    first_size = next(iter(frame_sets))
    sample = read_bgr(frame_sets[first_size][0])
    if sample is None:
        raise RuntimeError(f"cannot read {frame_sets[first_size][0]}")
    limit_runs = []
    for runtime in runtimes:
        for n in threads:
            print(f"bench: {entry.name}: invoke() with {runtime}, {n} thread(s)", file=sys.stderr)
            limit_runs.append(measure_invoke(entry.path, runtime, n, sample, args.limit_seconds))
    labels = limit_runs[0].pop("labels")
    for r in limit_runs[1:]:
        r.pop("labels")
    best = max(limit_runs, key=lambda r: r["rate_fps"])
    from agent.config.alerts import AlertSettings
    from agent.config.detector import DetectorSettings

    # for reference (not the limit, which is one interpreter as the issue defines it): the agent's
    # default of several interpreters on successive frames, bare
    plan = DetectorSettings(runtime=args.agent_runtime).parallelism()
    parallel = None
    if plan[0] > 1:
        print(
            f"bench: {entry.name}: invoke() on {plan[0]} interpreters x {plan[1]} thread(s)", file=sys.stderr
        )
        parallel = measure_invoke(
            entry.path, best["runtime"], plan[1], sample, args.limit_seconds, interpreters=plan[0]
        )
        parallel.pop("labels")

    alert_labels = AlertSettings().failure_labels
    alerts_on = bool(set(alert_labels) & set(labels))
    if alerts_on:
        # a printer model (it knows the default failure labels): alerts on, as a printer agent runs
        overrides = [("alerts.enabled", True), *overrides]
    agent_runtime = args.agent_runtime
    agent_threads: int | None
    if args.agent_threads == "best":
        agent_threads, agent_runtime = int(best["threads"]), str(best["runtime"])
        overrides = [("detector.interpreters", 1), *overrides]  # exactly what the limit measured
    elif args.agent_threads in ("auto", "", None):
        agent_threads = None
    else:
        agent_threads = int(args.agent_threads)
    # The machine is shared and its speed drifts within a minute: each run is compared with the
    # limit measured right around it (the higher of the two, so noise can only lower the ratio),
    # and each size runs in several interleaved rounds, of which the median ratio is reported.
    runs_raw = []
    rechecks: list[dict[str, Any]] = []
    variants = [(size, files, False) for size, files in frame_sets.items()]
    if args.detect_only:
        variants += [(size, files, True) for size, files in frame_sets.items()]
    for round_no in range(1, args.rounds + 1):
        for size, files, detect_only in variants:
            what = "capture + detect only" if detect_only else "end-to-end"
            print(
                f"bench: {entry.name}: {what} run on {len(files)} frames of {size} "
                f"(round {round_no} of {args.rounds})",
                file=sys.stderr,
            )
            label = size + (" detect-only" if detect_only else "")
            out_dir = work / "runs" / f"{entry.name}-{label.replace(' ', '-')}-{round_no}"
            shutil.rmtree(out_dir, ignore_errors=True)
            config = agent_config(
                files[0].parent,
                entry.path,
                out_dir,
                broker_port=broker.port if broker else None,
                runtime=agent_runtime,
                threads=agent_threads,
                overrides=overrides,
            )
            broker_cpu = broker.cpu_s() if broker else 0.0
            spec = {"config": config, "frames": len(files), "no_stages": detect_only}
            child = run_child(spec, out_dir / "bench")
            if broker:
                child["cpu_s"]["broker (mosquitto process)"] = round(broker.cpu_s() - broker_cpu, 3)
            runs_raw.append((label, len(files), child))
            recheck = measure_invoke(entry.path, best["runtime"], best["threads"], sample, args.limit_seconds)
            recheck.pop("labels")
            rechecks.append(recheck)
    measured = [best["rate_fps"], *(r["rate_fps"] for r in rechecks)]
    limit_fps = max(measured)
    decode_stats = {size: measure_decode(files, entry.path) for size, files in frame_sets.items()}
    by_label: dict[str, list[dict[str, Any]]] = {}
    for i, (label, n, child) in enumerate(runs_raw):
        around = measured[i : i + 2]
        run = summarize_run(child, label, n, max(around), decode_stats[label.split()[0]])
        run["limit_around_fps"] = around
        run["detect_only"] = label.endswith("detect-only")
        by_label.setdefault(label, []).append(run)
    runs = [median_run(rounds) for rounds in by_label.values()]
    if not args.keep:
        shutil.rmtree(work / "runs", ignore_errors=True)
    return {
        "name": entry.name,
        "path": str(entry.path),
        "alerts": alerts_on,
        "limit": {
            "runs": limit_runs,
            "best": best,
            "rechecks": rechecks,  # after each run, in run order
            "limit_fps": limit_fps,  # the highest measurement; each run has its own limit_fps
            "parallel_interpreters": parallel,
        },
        "runs": runs,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        description="Measure the bare invoke() limit and the end-to-end rate of edge-agent run, side by side."
    )
    p.add_argument("--frames", type=int, default=300, help="frames per size (default 300)")
    p.add_argument("--sizes", default="640x480,1280x720", help="frame sizes WxH, comma separated")
    p.add_argument(
        "--models", default=DEFAULT_MODELS, help=f"names ({', '.join(KNOWN_MODELS)}) or .tflite paths"
    )
    p.add_argument("--runtimes", default="ai_edge_litert,tflite_runtime", help="runtimes for the limit sweep")
    p.add_argument("--threads", default="", help="thread counts for the limit sweep (default 1..cpu_count)")
    p.add_argument("--limit-seconds", type=float, default=3.0, help="time per runtime/thread combination")
    p.add_argument(
        "--agent-runtime", default="auto", help="detector.runtime of the agent runs (default auto)"
    )
    p.add_argument(
        "--agent-threads",
        default="auto",
        help="detector.num_threads of the agent runs: auto (the agent's default: 2 interpreters on 2+ "
        "cores), a number, or best (one interpreter with the runtime and threads of the best limit)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="agent config override, e.g. output.fsync=false",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="end-to-end runs per size, interleaved; the median ratio is reported (default 3)",
    )
    p.add_argument("--no-mqtt", action="store_true", help="no broker, MQTT off")
    p.add_argument(
        "--detect-only",
        action="store_true",
        help="also run each size with no output stages (capture + detect only): shows what the "
        "VoTT writer, harvest, alerts and MQTT cost end to end",
    )
    p.add_argument("--no-decode-nms", action="store_true", help="skip the YOLOv8n decode+NMS measurement")
    p.add_argument("--json", type=Path, help="write the report as JSON here")
    p.add_argument(
        "--work-dir", type=Path, help="frames and run outputs (default: a temp folder; frames cached)"
    )
    p.add_argument("--keep", action="store_true", help="keep the run outputs (VoTT projects, outboxes, logs)")
    p.add_argument(
        "--shared", type=Path, default=SHARED, help="the shared reference folder (default ../shared)"
    )
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; prints the tables, writes ``--json``; exit 0 (1 when no model could run)."""
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)
    logging.basicConfig(level=logging.WARNING)
    if args.frames < 2:
        raise SystemExit("bench: --frames must be at least 2")
    if args.rounds < 1:
        raise SystemExit("bench: --rounds must be at least 1")
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    threads = (
        [int(t) for t in args.threads.split(",") if t.strip()]
        if args.threads
        else list(range(1, (os.cpu_count() or 1) + 1))
    )
    runtimes, missing = installed_runtimes([r.strip() for r in args.runtimes.split(",") if r.strip()])
    for name in missing:
        print(f"bench: runtime {name} is not installed; left out of the limit sweep", file=sys.stderr)
    if not runtimes:
        raise SystemExit("bench: none of the requested runtimes is installed (pip install ai-edge-litert)")
    overrides = parse_overrides(args.set)
    work = args.work_dir or Path(tempfile.gettempdir()) / "edge-agent-bench"
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    models = resolve_models(args.models, args.shared)
    for entry in models:
        if entry.skipped:
            print(f"bench: skipping {entry.name}: {entry.skipped}", file=sys.stderr)

    print(f"bench: making {args.frames} frames per size in {work}", file=sys.stderr)
    images = source_images(args.shared)
    frame_sets: dict[str, list[Path]] = {}
    for size in sizes:
        w, h = parse_size(size)
        frame_sets[size] = make_frames(work / f"frames-{size}-{args.frames}", images, w, h, args.frames)

    report: dict[str, Any] = {"schema": SCHEMA, "models": []}
    with maybe_broker(not args.no_mqtt, work / "broker") as broker:
        report["settings"] = {
            "frames": args.frames,
            "rounds": args.rounds,
            "sizes": sizes,
            "runtimes": runtimes,
            "threads": threads,
            "limit_seconds": args.limit_seconds,
            "agent_runtime": args.agent_runtime,
            "agent_threads": args.agent_threads,
            "overrides": list(args.set),
            "agent_env": child_environment(),
            "broker": broker.version() if broker else None,
            "mqtt": broker is not None,
        }
        for entry in models:
            if entry.skipped:
                report["models"].append({"name": entry.name, "path": None, "skipped": entry.skipped})
                continue
            report["models"].append(
                bench_model(entry, args, runtimes, threads, frame_sets, broker, work, overrides)
            )
    if not args.no_decode_nms:
        yolo = args.shared / KNOWN_MODELS[YOLO_NMS_MODEL][0]
        image = args.shared / YOLO_NMS_IMAGE
        if yolo.is_file() and image.is_file():
            print("bench: YOLOv8n decode+NMS", file=sys.stderr)
            report["decode_nms"] = measure_yolo_decode_nms(yolo, image)
        else:
            report["decode_nms"] = {"skipped": f"{yolo} or {image} is absent"}
    machine["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    report["machine"] = machine
    report["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report["command"] = ["scripts/bench.py", *(argv if argv is not None else sys.argv[1:])]
    report["checks"] = build_checks(report)
    # key order for readers of the JSON
    ordered: dict[str, Any] = {
        k: report[k]
        for k in ("schema", "created", "command", "machine", "settings", "models", "decode_nms", "checks")
        if k in report
    }
    print(format_report(ordered))
    if args.json:
        args.json.write_text(json.dumps(ordered, indent=2, default=str) + "\n")
        print(f"\nbench: JSON in {args.json}", file=sys.stderr)
    return 0 if any(not m.get("skipped") for m in report["models"]) else 1


if __name__ == "__main__":
    sys.exit(main())
