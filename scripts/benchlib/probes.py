"""CPU probes the bench puts around the agent's parts, inside the measured agent's own process.

Each probe wraps one part at an interface the pipeline already calls (the source's iterator, the
gate's ``should_infer``, each output stage's ``handle``, the VoTT writer's ``handle``, each
detector's ``preprocess`` / ``invoke`` / ``decode``) and adds up the CPU time of the calling
thread (``time.thread_time``: CPU time, not wall time) and the calls. ``SteadyState`` snapshots
those sums, every thread's CPU time from /proc and the process's CPU time when the output stages
complete the first and the last frame of the steady-state window (10 % to 90 % of the frames:
start-up, the queues filling and the shutdown are left out); the bench's parent turns the
differences into CPU ms per frame (``benchlib.overhead``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WINDOW_SHARE = 0.1  # left out at each end of the run


class CpuTally:
    """CPU seconds of the calling threads and calls, summed over every call of one part."""

    def __init__(self) -> None:
        self.cpu_s = 0.0
        self.calls = 0
        self._lock = threading.Lock()  # several inference threads add to one tally

    def add(self, seconds: float) -> None:
        """Count one call that used ``seconds`` of CPU."""
        with self._lock:
            self.cpu_s += seconds
            self.calls += 1

    def read(self) -> tuple[float, int]:
        """``(CPU seconds, calls)`` so far."""
        with self._lock:
            return self.cpu_s, self.calls


class _Timed:
    """A callable that adds its thread's CPU time per call to a tally; other attributes pass through."""

    def __init__(self, wrapped: Callable[..., Any], tally: CpuTally) -> None:
        self._wrapped = wrapped
        self._tally = tally

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.thread_time()
        try:
            return self._wrapped(*args, **kwargs)
        finally:
            self._tally.add(time.thread_time() - t0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


class _ProbedSource:
    """A frame source whose every ``next()`` (file read + JPEG decode) is timed."""

    def __init__(self, source: Any, tally: CpuTally) -> None:
        self._source = source
        self._tally = tally

    def __iter__(self) -> Iterator[Any]:
        frames = iter(self._source)
        while True:
            t0 = time.thread_time()
            try:
                frame = next(frames)
            except StopIteration:
                return
            finally:
                self._tally.add(time.thread_time() - t0)
            yield frame

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)


class _ProbedGate:
    """The change gate, its ``should_infer`` timed."""

    def __init__(self, gate: Any, tally: CpuTally) -> None:
        self._gate = gate
        self.should_infer = _Timed(gate.should_infer, tally)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gate, name)


class _ProbedStage:
    """An output stage, its ``handle`` timed; ``name``, ``close``, ``stats`` and the rest pass through."""

    def __init__(self, stage: Any, tally: CpuTally) -> None:
        self._stage = stage
        self.name = stage.name
        self.handle = _Timed(stage.handle, tally)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stage, name)


# the parts, in the order of a frame's way through the agent
PARTS = ("decode", "gate", "preprocess", "invoke", "postprocess", "alerts", "harvest", "vott", "outbox")
BENCH_PART = "bench_bookkeeping"


class Probes:
    """The tallies of one agent, and the wrapping of its parts."""

    def __init__(self) -> None:
        # every part, and the bench's own bookkeeping on the output thread (left out of the agent's CPU)
        self.tallies: dict[str, CpuTally] = {name: CpuTally() for name in (*PARTS, BENCH_PART)}
        self.installed: list[str] = []

    def install(self, agent: Any) -> None:
        """Wrap the parts of a built (not yet running) agent. A part the agent does not have (no
        gate, no alerts, no MQTT) keeps a tally of zero calls."""
        pipeline = agent.pipeline
        t = self.tallies
        pipeline.source = _ProbedSource(pipeline.source, t["decode"])
        self.installed.append("decode")
        if getattr(pipeline, "gate", None) is not None:
            pipeline.gate = _ProbedGate(pipeline.gate, t["gate"])
            self.installed.append("gate")
        for detector in _detectors(agent):
            # instance attributes shadow the methods Detector.detect calls
            detector.preprocess = _Timed(detector.preprocess, t["preprocess"])
            detector.invoke = _Timed(detector.invoke, t["invoke"])
            detector.decode = _Timed(detector.decode, t["postprocess"])
        self.installed += ["preprocess", "invoke", "postprocess"]
        # the harvest decision and the disk quota are one part: harvest
        stage_tally = {
            "alerts": "alerts",
            "harvest": "harvest",
            "quota": "harvest",
            "vott": "vott",
            "mqtt": "outbox",
        }
        wrapped = []
        for stage in pipeline.stages:
            part = stage_tally.get(stage.name)
            if part is None:
                wrapped.append(stage)
                continue
            wrapped.append(_ProbedStage(stage, t[part]))
            self.installed.append(part)
        self.installed = list(dict.fromkeys(self.installed))
        pipeline.stages = wrapped

    def read(self) -> dict[str, tuple[float, int]]:
        """Every tally's ``(CPU seconds, calls)`` now."""
        return {name: tally.read() for name, tally in self.tallies.items()}


def probe_cost_us(calls: int = 2000) -> float:
    """CPU microseconds one probed call adds (the wrapper and its two CPU-clock reads), measured
    on a call that does nothing: the share of the overhead that is the probes' own."""
    timed = _Timed(lambda: None, CpuTally())
    t0 = time.thread_time()
    for _ in range(calls):
        timed()
    return (time.thread_time() - t0) / calls * 1e6


def _detectors(agent: Any) -> list[Any]:
    """Every interpreter's detector (the pipeline keeps them per worker; private, bench only)."""
    workers = getattr(agent.pipeline, "_workers", None)
    if workers:
        return [w.detector for w in workers]
    return [agent.detector]


def thread_cpu_s() -> dict[int, float]:
    """CPU seconds of each live thread of this process, by native thread id, from /proc: the
    scheduler's nanosecond run time (``schedstat``), else user + system clock ticks (``stat``)."""
    out: dict[int, float] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            out[int(tid)] = _task_cpu_s(tid)
    return out


def _task_cpu_s(tid: str) -> float:
    try:
        return int(Path(f"/proc/self/task/{tid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def snapshot(probes: Probes, frames_done: int) -> dict[str, Any]:
    """The process's CPU time (all threads, dead ones too), each live thread's CPU time from /proc
    with its Python name (None: a thread Python did not start, e.g. an interpreter worker), and
    every probe's tally, at this moment."""
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    return {
        "frames_done": frames_done,
        "t_s": time.monotonic(),
        "process_cpu_s": time.process_time(),
        "threads": [[tid, names.get(tid), cpu] for tid, cpu in thread_cpu_s().items()],
        "parts": {name: list(value) for name, value in probes.read().items()},
    }


def window(frames: int) -> tuple[int, int]:
    """``(first, last)`` completed-frame counts bounding the steady state of a run of ``frames``
    frames: 10 % left out at each end (all frames for a run too short to leave any out)."""
    skip = int(frames * WINDOW_SHARE)
    first, last = max(1, skip), frames - skip
    return (first, last) if last > first else (1, frames)


class SteadyState:
    """Takes the two snapshots of a run, as frames complete (called on the output thread)."""

    def __init__(self, probes: Probes, frames: int) -> None:
        self.probes = probes
        self.first, self.last = window(frames)
        self.snapshots: list[dict[str, Any]] = []

    def frame_done(self, count: int) -> None:
        """Frame number ``count`` (1-based) has left the output stages."""
        if count in (self.first, self.last):
            self.snapshots.append(snapshot(self.probes, count))

    def finish(self, count: int) -> dict[str, Any]:
        """The window for the report; when the run ended before its last snapshot (a failed
        frame), the run's end closes it."""
        if len(self.snapshots) == 1:
            with contextlib.suppress(Exception):
                self.snapshots.append(snapshot(self.probes, count))
        return {
            "first": self.first,
            "last": self.last,
            "snapshots": self.snapshots,
            "probed": self.probes.installed,
            "probe_cost_us": round(probe_cost_us(), 3),
        }


def thread_group(name: str | None) -> str:
    """The report's group of a thread, by its Python name: ``native`` for threads Python did not
    start (the interpreter's worker pool), ``paho`` for paho's network loop, ``inference`` for
    every interpreter's thread."""
    if name is None:
        return "native"
    if name.startswith("paho"):
        return "paho"
    if name in ("capture", "output", "mqtt-sender", "MainThread", "bench-cpu-sampler"):
        return name
    if name.startswith("inference"):
        return "inference"
    return "other:" + name.rstrip("0123456789-")
