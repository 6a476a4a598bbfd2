"""The agent's overhead per frame: what it spends around ``invoke()``, in CPU ms, over the steady state.

From the two snapshots the measured agent took (``benchlib.probes``):

- ``e2e_cpu_ms``: CPU time of all the agent process's threads per frame (the process's CPU
  clock: the kernel's per-thread accounting, also read per thread from /proc), less the bench's
  own sampler thread and bookkeeping;
- ``bare_invoke_cpu_ms``: CPU time per bare ``invoke()`` with the agent's own interpreter count
  and threads, measured by the bench's parent just before and just after the run (the mean);
- ``overhead_cpu_ms`` = ``e2e_cpu_ms`` - ``bare_invoke_cpu_ms``, and where it goes: CPU time per
  frame of each probed part (decode = file read + JPEG decode on the capture thread, gate,
  preprocess, postprocess = decode + NMS, alerts, harvest, VoTT writer, outbox = the MQTT stage
  storing the messages) and of the MQTT threads (sender + paho, from /proc); ``invoke_excess``
  is what ``invoke()`` cost inside the agent beyond its bare cost (calling threads + the
  interpreter's worker threads); ``other`` is the rest (queues, reordering, thread hand-offs,
  the main thread), so that the parts add up to the overhead exactly. ``probes_cpu_ms`` estimates
what the probes themselves add (a few microseconds a call, 8 calls a frame), left in the figures.

Every figure here is CPU time. The per-stage medians the agent records itself
(``FrameResult.timings_ms``) are wall time and are reported beside it, not mixed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchlib.probes import BENCH_PART, thread_group

STAGE_COLUMNS = (
    "decode",
    "gate",
    "preprocess",
    "postprocess",
    "alerts",
    "harvest",
    "vott",
    "outbox",
    "sender_paho",
)
BENCH_THREADS = ("bench-cpu-sampler",)


def _thread_deltas(first: Sequence[Sequence[Any]], last: Sequence[Sequence[Any]]) -> dict[str, float]:
    """CPU seconds per thread group between two snapshots (a thread that started in between
    counts from zero; one that ended is in the process's total only)."""
    before = {int(tid): float(cpu) for tid, _name, cpu in first}
    groups: dict[str, float] = {}
    for tid, name, cpu in last:
        group = thread_group(name)
        groups[group] = groups.get(group, 0.0) + float(cpu) - before.get(int(tid), 0.0)
    return groups


def overhead_per_frame(steady: dict[str, Any], bare_invoke_cpu_ms: float | None) -> dict[str, Any] | None:
    """The overhead figures of one run (None when the run has no steady-state window)."""
    snaps = steady.get("snapshots") or []
    if len(snaps) < 2:
        return None
    s1, s2 = snaps[0], snaps[-1]
    frames = int(s2["frames_done"]) - int(s1["frames_done"])
    if frames <= 0:
        return None
    per_frame = 1000.0 / frames
    threads = _thread_deltas(s1["threads"], s2["threads"])
    parts = {name: float(s2["parts"][name][0]) - float(s1["parts"][name][0]) for name in s2["parts"]}
    bench_s = parts.pop(BENCH_PART, 0.0) + sum(threads.get(name, 0.0) for name in BENCH_THREADS)
    e2e = (float(s2["process_cpu_s"]) - float(s1["process_cpu_s"]) - bench_s) * per_frame
    stages = {name: parts.get(name, 0.0) * per_frame for name in STAGE_COLUMNS}
    stages["sender_paho"] = (threads.get("mqtt-sender", 0.0) + threads.get("paho", 0.0)) * per_frame
    invoke_in_agent = (parts.get("invoke", 0.0) + threads.get("native", 0.0)) * per_frame
    calls = sum(int(s2["parts"][name][1]) - int(s1["parts"][name][1]) for name in parts)
    out: dict[str, Any] = {
        "cpu_time": True,
        "window_frames": [int(s1["frames_done"]), int(s2["frames_done"])],
        "window_s": round(float(s2["t_s"]) - float(s1["t_s"]), 3),
        "e2e_cpu_ms": round(e2e, 3),
        "threads_cpu_ms": {
            k: round(v * per_frame, 3) for k, v in sorted(threads.items()) if k not in BENCH_THREADS
        },
        "invoke_in_agent_cpu_ms": round(invoke_in_agent, 3),
        "bare_invoke_cpu_ms": None,
        "overhead_cpu_ms": None,
        "stages_cpu_ms": {k: round(v, 3) for k, v in stages.items()},
        "probed": list(steady.get("probed", [])),
        # the probes' own cost, inside the figures above (not taken out): calls a frame x cost a call
        "probes_cpu_ms": round(calls / frames * float(steady.get("probe_cost_us", 0.0)) / 1000.0, 4),
    }
    if bare_invoke_cpu_ms is None:
        return out
    overhead = e2e - bare_invoke_cpu_ms
    excess = invoke_in_agent - bare_invoke_cpu_ms
    out.update(
        bare_invoke_cpu_ms=round(bare_invoke_cpu_ms, 3),
        overhead_cpu_ms=round(overhead, 3),
        invoke_excess_cpu_ms=round(excess, 3),
        other_cpu_ms=round(overhead - sum(stages.values()) - excess, 3),
    )
    return out


def overhead_rows(runs: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the overhead table (CPU ms per frame)."""
    headers = ["size", "e2e", "bare invoke", "overhead", *STAGE_COLUMNS, "invoke excess", "other"]
    headers[headers.index("sender_paho")] = "sender+paho"
    rows = []
    for run in runs:
        o = run.get("overhead")
        if not o:
            rows.append([run["size"], *(["-"] * (len(headers) - 1))])
            continue
        st = o["stages_cpu_ms"]
        rows.append(
            [
                run["size"],
                _ms(o["e2e_cpu_ms"]),
                _ms(o["bare_invoke_cpu_ms"]),
                _ms(o["overhead_cpu_ms"]),
                *(
                    _ms(st.get(name)) if name in o["probed"] or name == "sender_paho" else "-"
                    for name in STAGE_COLUMNS
                ),
                _ms(o.get("invoke_excess_cpu_ms")),
                _ms(o.get("other_cpu_ms")),
            ]
        )
    return headers, rows


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
