"""One measured agent run, in its own process (``scripts/bench.py --child spec.json``).

Builds the agent from the spec's config (``build_agent``, as ``edge-agent run`` does), wraps its
parts in CPU probes (``benchlib.probes``), runs it to the end of the folder and writes what it
measured as JSON: when each frame completed, the per-stage timings the agent records itself (wall
time), the steady-state CPU snapshots, per-thread CPU over the whole run, queue depths, RSS,
start-up times and, when asked, each frame's detections (for the comparison with the peer).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import sqlite3
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2

from benchlib import agent_seam
from benchlib.probes import BENCH_PART, Probes, SteadyState, thread_cpu_s, thread_group


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


def outbox_messages(path: Path) -> int | None:
    """Messages still waiting in an outbox file (not acknowledged by the broker), None without one."""
    if not path.exists():
        return None
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])


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
        self._stop.set()
        self._thread.join()
        self.sample(threading.enumerate())
        groups: dict[str, float] = {}
        for tid, seconds in self.cpu.items():
            group = thread_group(self.names.get(tid))
            groups[group] = groups.get(group, 0.0) + seconds
        return groups


class _Recorder:
    """The per-result callback: completion times, the agent's own timings, kept frames, RSS
    samples, detections when asked, and the steady-state snapshots. Its own CPU is tallied so
    the overhead leaves it out."""

    def __init__(self, spec: dict[str, Any], probes: Probes) -> None:
        self.expected = int(spec.get("frames") or 0)
        self.rss_every = int(spec.get("sample_rss_every") or 0)
        self.record_detections = bool(spec.get("record_detections"))
        # compact arrays (8 bytes a value), so a long soak's own bookkeeping does not show as RSS growth
        self.done = array("d")
        self.timings: dict[str, array[float]] = {}
        self.rss: list[tuple[int, int]] = []
        self.detections: dict[str, list[list[float]]] = {}
        self.kept = 0
        self.steady = SteadyState(probes, self.expected)
        self.sampler: ThreadCpuSampler | None = None
        self._tally = probes.tallies[BENCH_PART]

    def __call__(self, handled: Any) -> None:
        t0 = time.thread_time()
        self.done.append(time.monotonic())
        count = len(self.done)
        result = handled.result
        for key, value in result.timings_ms.items():
            self.timings.setdefault(key, array("d")).append(float(value))
        for stage, key in (("vott", "write"), ("mqtt", "publish")):  # the stages' own wall times
            if stage in handled.stage_ms:
                self.timings.setdefault(key, array("d")).append(float(handled.stage_ms[stage]))
        self.kept += agent_seam.kept(handled)
        if self.record_detections:
            self.detections[result.frame.name] = _rows(result.detections)
        if count == self.expected and self.sampler is not None:
            self.sampler.sample(threading.enumerate())  # the last frame: before the threads end
        if self.rss_every and count % self.rss_every == 0:
            self.rss.append((count, proc_status_kb().get("VmRSS", 0)))
        self._tally.add(time.thread_time() - t0)  # before the snapshot: it reads the tallies
        self.steady.frame_done(count)


def _rows(detections: Any) -> list[list[float]]:
    """``[x1, y1, x2, y2, class_id, score]`` per detection, in full-frame pixels."""
    return [
        [*(round(float(v), 2) for v in box), int(c), round(float(s), 4)]
        for box, c, s in zip(detections.xyxy, detections.class_id, detections.score, strict=True)
    ]


def _detector_params(agent: Any) -> dict[str, Any]:
    p = agent.detector.params
    return {
        "score_threshold": p.score_threshold,
        "iou_threshold": p.iou_threshold,
        "max_detections": p.max_detections,
        "class_agnostic": p.class_agnostic,
    }


def child_main(spec_path: Path) -> int:
    """In the child: build the agent from the spec's config, probe it, run it, write the result JSON."""
    spec = json.loads(spec_path.read_text())
    logging.basicConfig(level=spec.get("log_level", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    config = agent_seam.validate_config(spec["config"])
    probes = Probes()
    recorder = _Recorder(spec, probes)
    rss_before_build = proc_status_kb().get("VmRSS", 0)
    t_build = time.monotonic()
    agent = agent_seam.build_agent(config, on_result=recorder)
    if spec.get("no_stages"):
        # experiment: capture and inference only (what the pipeline costs without any output)
        agent.pipeline.stages = []
    probes.install(agent)
    pipeline: Any = agent.pipeline
    sampler = recorder.sampler = ThreadCpuSampler(
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
        group = thread_group(sampler.names.get(tid))
        if group in cpu_groups:
            cpu_groups[group] -= seconds
    status = proc_status_kb()
    interpreters, threads = config.detector.parallelism()
    left = outbox_messages(Path(config.mqtt.outbox.path)) if config.mqtt.enabled else None
    done = recorder.done
    launched = float(spec.get("launched_s") or t_build)
    out = {
        "runtime": agent.detector.runtime,
        "threads": threads,
        "interpreters": interpreters,
        "model": agent.detector.name,
        "detector_params": _detector_params(agent),
        "build_s": round(t_run - t_build, 3),
        "ready_s": round(t_run - launched, 3),
        "first_result_s": round(done[0] - launched, 3) if done else None,
        "run_s": round(t_end - t_run, 3),
        "done_s": [round(t - t_run, 5) for t in done],
        "timings_ms": {k: v.tolist() for k, v in recorder.timings.items()},
        "kept": recorder.kept,
        "stats": stats,
        "steady": recorder.steady.finish(len(done)),
        "detections": recorder.detections if recorder.record_detections else None,
        "vm_hwm_kb": status.get("VmHWM", 0),
        "vm_rss_end_kb": status.get("VmRSS", 0),
        "vm_rss_before_build_kb": rss_before_build,
        "rss_samples": recorder.rss,
        "outbox_left": left,
        "opencv_threads": cv2.getNumThreads(),
        "cpu_s": {k: round(v, 3) for k, v in sorted(cpu_groups.items())},
        "queue_samples": sampler.queue_samples,
        "queue_sizes": [config.pipeline.capture_queue, config.pipeline.result_queue],
        "cpu_s_total": round(
            usage_end.ru_utime + usage_end.ru_stime - usage_start.ru_utime - usage_start.ru_stime, 3
        ),
        "environment": {k: os.environ.get(k) for k in spec.get("environment_keys", [])},  # what it was given
        "cpu_s_system": round(usage_end.ru_stime - usage_start.ru_stime, 3),
        "minor_page_faults": usage_end.ru_minflt - usage_start.ru_minflt,
        "context_switches": {
            "voluntary": usage_end.ru_nvcsw - usage_start.ru_nvcsw,
            "involuntary": usage_end.ru_nivcsw - usage_start.ru_nivcsw,
        },
    }
    Path(spec["result"]).write_text(json.dumps(out, default=str))
    return 0
