#!/usr/bin/env python3
"""Performance bench: how close ``edge-agent run`` comes to the model's bare ``invoke()`` rate.

In one run, on the same frames and models, it measures:

- the limit: back-to-back ``interpreter.invoke()`` calls per second, for every installed runtime
  (ai_edge_litert, tflite_runtime) and thread count (1..cpu_count), and the best of them;
- the end-to-end rate of the agent (``build_agent`` in a child process, so its RSS is its own)
  from a folder of JPEGs through detection, the VoTT writer and the MQTT outbox to a local
  Mosquitto that the bench starts (outbox only when Mosquitto is missing), in ``--rounds`` (3)
  interleaved rounds per frame size, each run followed by the best limit and the agent's own
  interpreters x threads, bare, once more; a run during which the limit moved by more than
  ``--limit-threshold`` is run again (``--repeats``), then flagged;
- the overhead per frame: CPU ms per frame of the whole agent process over the steady state less
  the CPU of a bare ``invoke()`` with the agent's plan, and where it goes, part by part
  (``benchlib.overhead``);
- per-stage medians and p95 (wall time, as the agent records them): decode (the same files
  decoded as the folder source decodes them), preprocess, invoke, postprocess (decode + NMS),
  write (VoTT), publish (outbox);
- decode + NMS of a real YOLOv8n ``[1,84,8400]`` output alone;
- the child's start-up time and peak RSS (``VmHWM`` from /proc);
- the ratio end-to-end / limit per model and frame size: each run against the higher of the
  limits measured just before and after it (the shared machine's speed drifts), each size
  reported by its median round;
- with ``--peer-python``, Ultralytics' own predict on the same YOLOv8n model and frames in the
  same rounds (``benchlib.peer``): throughput ratio, start-up, peak RSS, detections matched;
- the checks of issue 24 (``benchlib.checks``), with the machine named above every table.

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
import json
import logging
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from benchlib import agent_seam
from benchlib.agent_child import child_main
from benchlib.bare import (
    installed_runtimes,
    measure_decode,
    measure_invoke,
    measure_yolo_decode_nms,
    summarize_ms,
)
from benchlib.checks import OLD_RATIO_TARGET, build_checks, load_baseline
from benchlib.overhead import overhead_per_frame
from benchlib.peer import (
    PEER_MODEL,
    agreement,
    check_peer,
    every_frame_kept_and_published,
    peer_ratio,
    run_peer,
    summarize_peer,
)
from benchlib.report import STAGES, format_report, table
from benchlib.stability import (
    DEFAULT_REPEATS,
    DEFAULT_THRESHOLD,
    Around,
    StableRun,
    load_avg_1m,
    run_stable,
)
from benchlib.workload import (
    Broker,
    make_frames,
    maybe_broker,
    parse_size,
    read_bgr,
    source_images,
)
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EDGE_AGENT_SHARED", REPO.parent / "shared"))
SCHEMA = "edge-agent-bench/1"
DETECTOR_STAGES = ("preprocess", "invoke", "postprocess")

# name -> (path relative to the shared folder, or None for a path in the repo)
KNOWN_MODELS: dict[str, tuple[str, bool]] = {
    "print3d": ("models/print3d/print3d_2020-10-23_ssd_uint8.tflite", True),
    "yolov8n": ("models/yolov8n_full_integer_quant_u8.3.172.tflite", True),
    "ssd_mobilenet": ("models/ssd_mobilenet_v1_coco_quant_detect.tflite", True),
    "bundled": ("agent/data/print3d_guidance.tflite", False),
}
DEFAULT_MODELS = "print3d,yolov8n,bundled"
YOLO_NMS_MODEL = "yolov8n"
YOLO_NMS_IMAGE = "models/images/kite_and_cold.jpg"

log = logging.getLogger("bench")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# what scripts/soak.py and the tests use of the bench, wherever it lives
__all__ = [
    "agent_config",
    "child_environment",
    "child_main",
    "e2e_rate",
    "machine_info",
    "make_frames",
    "maybe_broker",
    "measure_yolo_decode_nms",
    "median_run",
    "parse_overrides",
    "parse_size",
    "resolve_models",
    "run_child",
    "source_images",
    "table",
    "unit_environment",
]


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
    environment = child_environment()
    spec = {**spec, "result": str(result_path), "environment_keys": sorted(environment)}
    log_path = work / "child.log"
    spec["launched_s"] = time.monotonic()  # start-up times count from here
    spec_path.write_text(json.dumps(spec, indent=2))
    with open(log_path, "wb") as log_file:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
            check=False,
            cwd=work,
            env={**os.environ, **environment},
        )
    if proc.returncode != 0 or not result_path.exists():
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the agent run failed (exit {proc.returncode}); its log ends with:\n{tail}")
    result: dict[str, Any] = json.loads(result_path.read_text())
    return result


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
    child: dict[str, Any],
    size: str,
    frames: int,
    limit_fps: float,
    decode: dict[str, Any],
    bare_invoke_cpu_ms: float | None = None,
) -> dict[str, Any]:
    """One end-to-end run for the report: rate, ratio, stage medians/p95 (wall), the overhead per
    frame (CPU), start-up, RSS, MQTT counters."""
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
        "startup_s": child.get("first_result_s"),  # process start to the first frame out of the stages
        "ready_s": child.get("ready_s"),  # process start to the agent built
        "limit_fps": round(limit_fps, 2),
        # rounded down, so a ratio shown as 0.850 has met 0.85 (0.8496 is shown as 0.849)
        "ratio": math.floor(rate / limit_fps * 1000) / 1000 if limit_fps else None,
        "target_ratio": OLD_RATIO_TARGET,
        "meets_target": bool(limit_fps and rate / limit_fps >= OLD_RATIO_TARGET),
        "peak_rss_mb": round(child["vm_hwm_kb"] / 1024, 1),
        "overhead": overhead_per_frame(child.get("steady") or {}, bare_invoke_cpu_ms),
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


# ----------------------------------------------------------------------------------------- rounds


def _lower_median(items: Sequence[dict[str, Any]], key: Callable[[dict[str, Any]], float]) -> dict[str, Any]:
    return sorted(items, key=key)[(len(items) - 1) // 2]


def median_run(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median ratio (the lower middle one of an even count) standing for all of
    them, with every round's figures beside it and the highest peak RSS of any round; the overhead
    and the peer comparison each come from their own median round (which the JSON names)."""
    chosen = dict(_lower_median(rounds, lambda r: r["ratio"] or 0.0))
    chosen["rounds"] = [
        {
            "round": r.get("round"),
            "ratio": r["ratio"],
            "e2e_fps": r["e2e_fps"],
            "limit_fps": r["limit_fps"],
            "limit_moved": r.get("limit_moved"),
            "limit_moved_flag": r.get("limit_moved_flag", False),
            "attempts": r.get("attempts", 1),
            "overhead_cpu_ms": (r.get("overhead") or {}).get("overhead_cpu_ms"),
            "peer_ratio": (r.get("peer") or {}).get("ratio"),
        }
        for r in rounds
    ]
    chosen["peak_rss_mb"] = max(r["peak_rss_mb"] for r in rounds)
    with_overhead = [r for r in rounds if (r.get("overhead") or {}).get("overhead_cpu_ms") is not None]
    if with_overhead:
        pick = _lower_median(with_overhead, lambda r: r["overhead"]["overhead_cpu_ms"])
        chosen["overhead"] = {**pick["overhead"], "round": pick.get("round")}
    with_peer = [r for r in rounds if (r.get("peer") or {}).get("ratio") is not None]
    if with_peer:
        pick = _lower_median(with_peer, lambda r: r["peer"]["ratio"])
        chosen["peer"] = {
            **pick["peer"],
            "round": pick.get("round"),
            "ratio_by_round": [r["peer"]["ratio"] for r in with_peer],
        }
    return chosen


@dataclass
class ModelPlan:
    """How one model is benched: the agent's runtime, threads and overrides, and the bare plans."""

    entry: ModelEntry
    sample: NDArray[np.uint8]
    best: dict[str, Any]
    agent_runtime: str
    agent_threads: int | None
    overrides: list[tuple[str, Any]]
    plan: tuple[str, int, int]  # the agent's runtime setting, interpreters, threads
    same_as_limit: bool  # the agent's plan is the limit's: one measurement serves both


def _bare(
    plan: ModelPlan, runtime: str, threads: int, seconds: float, interpreters: int = 1
) -> dict[str, Any]:
    assert plan.entry.path is not None
    result = measure_invoke(
        plan.entry.path, runtime, threads, plan.sample, seconds, interpreters=interpreters
    )
    result.pop("labels")
    return result


def _remeasure(plan: ModelPlan, seconds: float, rechecks: list[dict[str, Any]]) -> Around:
    """The limit and the agent's plan, bare, once more (after a run)."""
    limit = _bare(plan, plan.best["runtime"], plan.best["threads"], seconds)
    rechecks.append(limit)
    if plan.same_as_limit:
        return Around(limit, limit)
    runtime, interpreters, threads = plan.plan
    return Around(limit, _bare(plan, runtime, threads, seconds, interpreters))


def _bare_cpu(stable: StableRun) -> float:
    """CPU ms a bare invoke() costs with the agent's plan, around a run (the mean of both sides)."""
    return (stable.before.agent_plan["cpu_ms_per_invoke"] + stable.after.agent_plan["cpu_ms_per_invoke"]) / 2


def _plan_model(
    entry: ModelEntry,
    args: argparse.Namespace,
    limit_runs: list[dict[str, Any]],
    sample: NDArray[np.uint8],
    frames_dir: Path,
    overrides: Sequence[tuple[str, Any]],
) -> tuple[ModelPlan, bool]:
    """The agent's settings for this model and (True) whether alerts are on."""
    best = max(limit_runs, key=lambda r: r["rate_fps"])
    alerts_on = bool(set(agent_seam.default_failure_labels()) & set(limit_runs[0]["labels"]))
    extra: list[tuple[str, Any]] = []
    if alerts_on:
        # a printer model (it knows the default failure labels): alerts on, as a printer agent runs
        extra.append(("alerts.enabled", True))
    agent_runtime = args.agent_runtime
    agent_threads: int | None
    if args.agent_threads == "best":
        agent_threads, agent_runtime = int(best["threads"]), str(best["runtime"])
        extra.append(("detector.interpreters", 1))  # exactly what the limit measured
    elif args.agent_threads in ("auto", "", None):
        agent_threads = None
    else:
        agent_threads = int(args.agent_threads)
    all_overrides = [*extra, *overrides]
    assert entry.path is not None
    config = agent_config(
        frames_dir,
        entry.path,
        frames_dir,
        broker_port=None,
        runtime=agent_runtime,
        threads=agent_threads,
        overrides=all_overrides,
    )
    runtime, interpreters, threads = agent_seam.agent_plan(config)
    plan = ModelPlan(
        entry,
        sample,
        best,
        agent_runtime,
        agent_threads,
        all_overrides,
        (runtime, interpreters, threads),
        False,
    )
    return plan, alerts_on


@dataclass
class RoundsState:
    """What the rounds of one model collect: the kept runs, the limit after every run, and the
    bare measurement the next run starts from."""

    before: Around
    rechecks: list[dict[str, Any]]
    agent_runs: list[tuple[str, int, int, StableRun]]  # label, frames, round, run
    peer_runs: dict[tuple[str, int], StableRun]  # (size, round) -> peer run


def _stable(
    what: str,
    run: Callable[[], dict[str, Any]],
    plan: ModelPlan,
    state: RoundsState,
    args: argparse.Namespace,
) -> StableRun:
    def on_repeat(moved: float) -> None:
        print(f"bench: the limit moved by {moved:.1%} during the {what}: running it again", file=sys.stderr)

    stable, state.before = run_stable(
        run,
        lambda: _remeasure(plan, args.limit_seconds, state.rechecks),
        state.before,
        threshold=args.limit_threshold,
        repeats=args.repeats,
        on_repeat=on_repeat,
    )
    return stable


def _one_size(
    plan: ModelPlan,
    args: argparse.Namespace,
    state: RoundsState,
    variant: tuple[str, list[Path], bool],
    round_no: int,
    broker: Broker | None,
    work: Path,
) -> None:
    """One end-to-end run of one size (and the peer's on the same frames, when it is on)."""
    size, files, detect_only = variant
    entry = plan.entry
    assert entry.path is not None
    label = size + (" detect-only" if detect_only else "")
    out_dir = work / "runs" / f"{entry.name}-{label.replace(' ', '-')}-{round_no}"
    with_peer = args.peer_python_ok and entry.name == PEER_MODEL and not detect_only
    what = "capture + detect only" if detect_only else "end-to-end"
    print(
        f"bench: {entry.name}: {what} run on {len(files)} frames of {size} (round {round_no} of {args.rounds})",
        file=sys.stderr,
    )

    def run_agent() -> dict[str, Any]:
        shutil.rmtree(out_dir, ignore_errors=True)
        config = agent_config(
            files[0].parent,
            entry.path,  # type: ignore[arg-type]
            out_dir,
            broker_port=broker.port if broker else None,
            runtime=plan.agent_runtime,
            threads=plan.agent_threads,
            overrides=plan.overrides,
        )
        broker_cpu = broker.cpu_s() if broker else 0.0
        spec = {
            "config": config,
            "frames": len(files),
            "no_stages": detect_only,
            "record_detections": with_peer,
        }
        child = run_child(spec, out_dir / "bench")
        if broker:
            child["cpu_s"]["broker (mosquitto process)"] = round(broker.cpu_s() - broker_cpu, 3)
        return child

    stable = _stable(f"{entry.name} {label} run", run_agent, plan, state, args)
    state.agent_runs.append((label, len(files), round_no, stable))
    if with_peer:
        print(f"bench: {entry.name}: Ultralytics predict on the same {len(files)} frames", file=sys.stderr)
        params = stable.result["detector_params"]
        state.peer_runs[(size, round_no)] = _stable(
            f"peer run ({size})",
            lambda: run_peer(args.peer_python, entry.path, files[0].parent, params, out_dir / "peer"),  # type: ignore[arg-type]
            plan,
            state,
            args,
        )


def _peer_summary(run: dict[str, Any], agent: StableRun, peer: StableRun) -> dict[str, Any]:
    rate = e2e_rate(peer.result["done_s"])
    return {
        **summarize_peer(peer.result, run["frames"], rate),
        **peer.report(),
        "ratio": peer_ratio(run["e2e_fps"], rate),
        "every_frame_kept_and_published": every_frame_kept_and_published(run),
        "agreement": agreement(agent.result.get("detections") or {}, peer.result["detections"]),
    }


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
    """Limit sweep, the agent's own plan bare, then ``--rounds`` rounds of one end-to-end run per
    frame size (and the peer's run beside it), each run between two bare measurements: a run's
    ratio uses the higher limit around it, its overhead the mean CPU of the agent's plan around
    it, and a run during which the limit moved too much is run again or flagged."""
    assert entry.path is not None
    first_files = next(iter(frame_sets.values()))
    sample = read_bgr(first_files[0])
    if sample is None:
        raise RuntimeError(f"cannot read {first_files[0]}")
    limit_runs = []
    for runtime in runtimes:
        for n in threads:
            print(f"bench: {entry.name}: invoke() with {runtime}, {n} thread(s)", file=sys.stderr)
            limit_runs.append(measure_invoke(entry.path, runtime, n, sample, args.limit_seconds))
    plan, alerts_on = _plan_model(entry, args, limit_runs, sample, first_files[0].parent, overrides)
    for r in limit_runs:
        r.pop("labels")
    runtime, interpreters, plan_threads = plan.plan
    print(
        f"bench: {entry.name}: invoke() as the agent runs it: {interpreters} interpreter(s) x {plan_threads} thread(s)",
        file=sys.stderr,
    )
    plan0 = _bare(plan, runtime, plan_threads, args.limit_seconds, interpreters)
    plan.same_as_limit = (plan0["runtime"], interpreters, plan_threads) == (
        plan.best["runtime"],
        1,
        plan.best["threads"],
    )
    state = RoundsState(Around(plan.best, plan.best if plan.same_as_limit else plan0), [], [], {})
    variants = [(size, files, False) for size, files in frame_sets.items()]
    if args.detect_only:
        variants += [(size, files, True) for size, files in frame_sets.items()]
    for round_no in range(1, args.rounds + 1):
        for variant in variants:
            _one_size(plan, args, state, variant, round_no, broker, work)
    limit_fps = max([plan.best["rate_fps"], *(r["rate_fps"] for r in state.rechecks)])
    decode_stats = {size: measure_decode(files, entry.path) for size, files in frame_sets.items()}
    by_label: dict[str, list[dict[str, Any]]] = {}
    for label, n, round_no, stable in state.agent_runs:
        size = label.split()[0]
        run = summarize_run(
            stable.result,
            label,
            n,
            max(stable.report()["limit_around_fps"]),
            decode_stats[size],
            _bare_cpu(stable),
        )
        run.update(stable.report(), round=round_no, detect_only=label.endswith("detect-only"))
        peer = state.peer_runs.get((size, round_no))
        if peer is not None and not run["detect_only"]:
            run["peer"] = _peer_summary(run, stable, peer)
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
            "best": plan.best,
            "rechecks": state.rechecks,  # after each run (repeated ones too), in run order
            "limit_fps": limit_fps,  # the highest measurement; each run has its own limit_fps
            "agent_plan": plan0,
            # for reference, not the limit (one interpreter): the agent's several interpreters, bare
            "parallel_interpreters": plan0 if interpreters > 1 else None,
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
    p.add_argument(
        "--limit-threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="a run during which the bare limit moved by more than this share is run again "
        f"(default {DEFAULT_THRESHOLD})",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=DEFAULT_REPEATS,
        help=f"at most this many repetitions of such a run, then it is flagged (default {DEFAULT_REPEATS})",
    )
    p.add_argument(
        "--peer-python",
        type=Path,
        help="the Python of a virtualenv with ultralytics: YOLOv8n is also run with Ultralytics' own "
        "predict, in the same rounds (docs/performance.md has the recipe)",
    )
    p.add_argument(
        "--overhead-baseline",
        type=Path,
        help="a bench JSON measured before a change: its overhead at 1280x720 is the baseline of the "
        "overhead checks (default: the baseline recorded in docs/performance.md)",
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


def _check_args(args: argparse.Namespace) -> None:
    if args.frames < 2:
        raise SystemExit("bench: --frames must be at least 2")
    if args.rounds < 1:
        raise SystemExit("bench: --rounds must be at least 1")
    if args.repeats < 0 or not 0 < args.limit_threshold < 1:
        raise SystemExit("bench: --repeats must be >= 0 and --limit-threshold between 0 and 1")
    if args.overhead_baseline is not None and not args.overhead_baseline.is_file():
        raise SystemExit(f"bench: --overhead-baseline {args.overhead_baseline} does not exist")


def _peer_settings(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Whether the peer runs (``args.peer_python_ok``), and what the report says of it."""
    version, skipped = check_peer(args.peer_python, work)
    args.peer_python_ok = version is not None
    if skipped:
        print(f"bench: the Ultralytics peer is skipped: {skipped}", file=sys.stderr)
        return {"skipped": skipped}
    return {"ultralytics": version, "python": str(args.peer_python), "model": PEER_MODEL}


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _runtimes_and_threads(args: argparse.Namespace) -> tuple[list[str], list[int]]:
    """The limit sweep's runtimes (those installed; the others said on stderr) and thread counts."""
    threads = [int(t) for t in _csv(args.threads)] or list(range(1, (os.cpu_count() or 1) + 1))
    runtimes, missing = installed_runtimes(_csv(args.runtimes))
    for name in missing:
        print(f"bench: runtime {name} is not installed; left out of the limit sweep", file=sys.stderr)
    if not runtimes:
        raise SystemExit("bench: none of the requested runtimes is installed (pip install ai-edge-litert)")
    return runtimes, threads


def _frame_sets(args: argparse.Namespace, sizes: Sequence[str], work: Path) -> dict[str, list[Path]]:
    print(f"bench: making {args.frames} frames per size in {work}", file=sys.stderr)
    images = source_images(args.shared)
    frame_sets: dict[str, list[Path]] = {}
    for size in sizes:
        w, h = parse_size(size)
        frame_sets[size] = make_frames(work / f"frames-{size}-{args.frames}", images, w, h, args.frames)
    return frame_sets


def _settings(
    args: argparse.Namespace, sizes: list[str], runtimes: list[str], threads: list[int], broker: Broker | None
) -> dict[str, Any]:
    return {
        "frames": args.frames,
        "rounds": args.rounds,
        "sizes": sizes,
        "runtimes": runtimes,
        "threads": threads,
        "limit_seconds": args.limit_seconds,
        "limit_threshold": args.limit_threshold,
        "repeats": args.repeats,
        "agent_runtime": args.agent_runtime,
        "agent_threads": args.agent_threads,
        "overrides": list(args.set),
        "agent_env": child_environment(),
        "broker": broker.version() if broker else None,
        "mqtt": broker is not None,
    }


def _decode_nms(args: argparse.Namespace) -> dict[str, Any]:
    yolo = args.shared / KNOWN_MODELS[YOLO_NMS_MODEL][0]
    image = args.shared / YOLO_NMS_IMAGE
    if not (yolo.is_file() and image.is_file()):
        return {"skipped": f"{yolo} or {image} is absent"}
    print("bench: YOLOv8n decode+NMS", file=sys.stderr)
    return measure_yolo_decode_nms(yolo, image)


def _finish(report: dict[str, Any], args: argparse.Namespace, argv: Sequence[str] | None) -> dict[str, Any]:
    """The report with its time, command and checks, its keys in the order a reader wants them."""
    report["machine"]["load_avg_1m_end"] = load_avg_1m()
    report["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report["command"] = ["scripts/bench.py", *(argv if argv is not None else sys.argv[1:])]
    baseline = load_baseline(args.overhead_baseline) if args.overhead_baseline else None
    source = str(args.overhead_baseline) if baseline is not None else None
    report["checks"] = build_checks(report, baseline, source)
    order = ("schema", "created", "command", "machine", "settings", "peer", "models", "decode_nms", "checks")
    return {k: report[k] for k in order if k in report}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; prints the tables, writes ``--json``; exit 0 (1 when no model could run)."""
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)
    logging.basicConfig(level=logging.WARNING)
    _check_args(args)
    sizes = _csv(args.sizes)
    runtimes, threads = _runtimes_and_threads(args)
    overrides = parse_overrides(args.set)
    work = (args.work_dir or Path(tempfile.gettempdir()) / "edge-agent-bench").resolve()
    work.mkdir(parents=True, exist_ok=True)
    models = resolve_models(args.models, args.shared)
    for entry in models:
        if entry.skipped:
            print(f"bench: skipping {entry.name}: {entry.skipped}", file=sys.stderr)
    report: dict[str, Any] = {"schema": SCHEMA, "machine": machine_info(), "models": []}
    report["peer"] = _peer_settings(args, work)
    frame_sets = _frame_sets(args, sizes, work)
    with maybe_broker(not args.no_mqtt, work / "broker") as broker:
        report["settings"] = _settings(args, sizes, runtimes, threads, broker)
        for entry in models:
            if entry.skipped:
                report["models"].append({"name": entry.name, "path": None, "skipped": entry.skipped})
                continue
            report["models"].append(
                bench_model(entry, args, runtimes, threads, frame_sets, broker, work, overrides)
            )
    if not args.no_decode_nms:
        report["decode_nms"] = _decode_nms(args)
    ordered = _finish(report, args, argv)
    print(format_report(ordered))
    if args.json:
        args.json.write_text(json.dumps(ordered, indent=2, default=str) + "\n")
        print(f"\nbench: JSON in {args.json}", file=sys.stderr)
    return 0 if any(not m.get("skipped") for m in report["models"]) else 1


if __name__ == "__main__":
    sys.exit(main())
