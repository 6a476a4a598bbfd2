"""The bench's tables: what a person reads of a bench report (the JSON holds the same and more).

Every table's title line names the machine (CPU, cores, the load at the start and end of what the
table shows) and says whether its figures are CPU time or wall time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchlib.checks import OLD_RATIO_TARGET, TARGET_DECODE_NMS_MS, format_checks
from benchlib.overhead import overhead_rows
from benchlib.peer import PEER_MODEL
from benchlib.stability import machine_line

E2E_HEADERS = (
    "size",
    "frames",
    "runtime/interp x thr",
    "e2e fps",
    "limit fps",
    "ratio",
    f">={OLD_RATIO_TARGET}",
    "ratio by round",
    "limit moved",
    "start-up s",
    "peak RSS MB",
    "infer busy",
    "capq empty",
    "resq full",
    "acked/left",
)
STAGES = ("decode", "preprocess", "invoke", "postprocess", "write", "publish")


def fmt(value: Any, spec: str = ".1f") -> str:
    """A figure for a table cell (``-`` for None)."""
    if value is None:
        return "-"
    if isinstance(value, float | int) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with a header rule."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _runs_load(runs: Sequence[dict[str, Any]]) -> tuple[float, float] | None:
    loads = [r["load_avg_1m"] for r in runs if r.get("load_avg_1m")]
    return (loads[0][0], loads[-1][1]) if loads else None


def _header(report: dict[str, Any]) -> list[str]:
    m = report["machine"]
    s = report["settings"]
    peer = report.get("peer") or {}
    return [
        f"edge-agent bench  {report['created']}  commit {m.get('git_commit') or '?'}",
        f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_mb']} MB, {m['os']}, Python {m['python']} "
        f"({m.get('python_base', '?')}), "
        f"load {m['load_avg_1m_start']} -> {m.get('load_avg_1m_end', '?')} (1 min avg)",
        f"runtimes: ai_edge_litert {m['ai_edge_litert']}, tflite_runtime {m['tflite_runtime']}; "
        f"OpenCV {m['opencv']} ({m['opencv_threads']} threads); JPEG decoder "
        + (f"simplejpeg {m['simplejpeg']}" if m.get("simplejpeg") else "OpenCV"),
        f"frames: {s['frames']} per size and round, {s.get('rounds', 1)} round(s), sizes {', '.join(s['sizes'])}; "
        f"broker: {s['broker'] or 'none (outbox only)'}; "
        f"agent runtime {s['agent_runtime']}, threads {s['agent_threads']}"
        + (f"; overrides {', '.join(s['overrides'])}" if s["overrides"] else ""),
        f"rounds: a run whose limit moved by more than {s['limit_threshold']:.0%} is run again "
        f"(up to {s['repeats']} times), then flagged",
        "agent environment (the systemd unit's unless set): "
        + " ".join(f"{k}={v}" for k, v in s.get("agent_env", {}).items()),
        "peer: "
        + (
            f"skipped: {peer['skipped']}"
            if peer.get("skipped")
            else f"Ultralytics {peer.get('ultralytics')} ({peer.get('python')})"
        ),
        "",
    ]


def _limit_lines(model: dict[str, Any]) -> list[str]:
    rows = []
    best = model["limit"]["best"]
    for r in model["limit"]["runs"]:
        mark = " *" if (r["runtime"], r["threads"]) == (best["runtime"], best["threads"]) else ""
        rows.append(
            [
                r["runtime"],
                str(r["threads"]),
                str(r["invokes"]),
                fmt(r["median_ms"], ".2f"),
                fmt(r["p95_ms"], ".2f"),
                fmt(r["cpu_ms_per_invoke"], ".1f"),
                fmt(r["rate_fps"]) + mark,
            ]
        )
    out = [
        "limit: bare invoke() (* = best; median/p95 wall ms, CPU ms per invoke)",
        table(["runtime", "threads", "invokes", "median ms", "p95 ms", "CPU ms", "rate fps"], rows),
        "",
    ]
    rechecks = model["limit"].get("rechecks") or []
    if rechecks:
        rc = rechecks[-1]
        out += [
            f"limit re-measured after each run ({rc['runtime']}, {rc['threads']} threads): "
            + ", ".join(f"{r['rate_fps']:.1f}" for r in rechecks)
            + " fps; each run's ratio uses the higher of the limits measured just before and after it",
            "",
        ]
    plan = model["limit"].get("agent_plan")
    if plan:
        out += [
            f"the agent's own plan bare ({plan['runtime']}, {plan['interpreters']} interpreter(s) x "
            f"{plan['threads']} thread(s) invoking at once): {plan['rate_fps']:.1f} fps "
            f"({plan['rate_fps'] / model['limit']['limit_fps']:.2f} x the limit; median {plan['median_ms']:.1f} ms, "
            f"CPU {plan['cpu_ms_per_invoke']:.1f} ms per invoke; re-measured around every run for the overhead)",
            "",
        ]
    return out


def _e2e_row(run: dict[str, Any]) -> list[str]:
    mq = run.get("mqtt") or {}
    flagged = sum(bool(r.get("limit_moved_flag")) for r in run.get("rounds", []))
    return [
        run["size"],
        f"{run['processed']}/{run['frames']}",
        f"{run['runtime']}/{run.get('interpreters', 1)}x{run['threads']}",
        fmt(run["e2e_fps"]),
        fmt(run["limit_fps"]),
        fmt(run["ratio"], ".3f"),
        "yes" if run["meets_target"] else "NO",
        " ".join(
            fmt(r["ratio"], ".3f") + ("!" if r.get("limit_moved_flag") else "") for r in run.get("rounds", [])
        )
        or "-",
        f"{run.get('limit_moved', 0):.1%}" + (f" ({flagged} flagged)" if flagged else ""),
        fmt(run.get("startup_s"), ".2f"),
        fmt(run["peak_rss_mb"]),
        fmt(run["inference_thread_busy"], ".2f"),
        fmt((run["queues"].get("capture") or {}).get("empty"), ".2f"),
        fmt((run["queues"].get("results") or {}).get("full"), ".2f"),
        f"{fmt(mq.get('acked'), 'd')}/{fmt(mq.get('left_in_outbox'), 'd')}" if mq else "-",
    ]


def _peer_lines(model: dict[str, Any], machine: dict[str, Any]) -> list[str]:
    rows = []
    for run in model["runs"]:
        peer = run.get("peer")
        if not peer:
            continue
        a = peer["agreement"]
        rows.append(
            [
                run["size"],
                fmt(run["e2e_fps"]),
                fmt(peer["fps"]),
                fmt(peer["ratio"], ".2f"),
                " ".join(fmt(r, ".2f") for r in peer.get("ratio_by_round", [])),
                "yes" if peer["every_frame_kept_and_published"] else "NO",
                f"{fmt(run.get('startup_s'), '.2f')} / {fmt(peer['startup_s'], '.2f')}",
                f"{fmt(run['peak_rss_mb'])} / {fmt(peer['peak_rss_mb'])}",
                f"{a['matched']}/{a['agent_boxes']}/{a['peer_boxes']} ({a['share']:.1%}, IoU {fmt(a['median_iou'], '.2f')})",
                str(peer["interpreter_threads"]),
            ]
        )
    if not rows:
        return []
    headers = [
        "size",
        "agent fps",
        "peer fps",
        "agent/peer",
        "by round",
        "all kept+published",
        "start-up s agent/peer",
        "peak RSS MB agent/peer",
        "matched/agent/peer boxes",
        "peer threads",
    ]
    return [
        f"{PEER_MODEL} against Ultralytics' own predict (same model and frames, interleaved; wall-clock rates; "
        f"start-up = process start to first result); {machine_line(machine, _runs_load(model['runs']))}",
        table(headers, rows),
        "",
    ]


def _model_lines(model: dict[str, Any], machine: dict[str, Any]) -> list[str]:
    out = [f"== {model['name']}  ({model['path']}; alerts {'on' if model['alerts'] else 'off'})"]
    out += _limit_lines(model)
    runs = model["runs"]
    where = machine_line(machine, _runs_load(runs))
    out += [
        "end to end: folder -> detect -> VoTT -> outbox -> MQTT (each size: the round with the median ratio; "
        f"wall-clock rates; ! = limit moved beyond the threshold); {where}",
        table(E2E_HEADERS, [_e2e_row(run) for run in runs]),
        "",
    ]
    headers, rows = overhead_rows(runs)
    out += [
        "overhead per frame, CPU ms (steady state, all threads of the agent): e2e - bare invoke (the agent's "
        f"interpreters x threads, measured around the run) = the parts, each CPU time; {where}",
        table(headers, rows),
        "",
    ]
    rows = []
    for run in runs:
        st = run["stages"]
        cells = [run["size"]]
        for name in (*STAGES, "detect_total"):
            cells.append(f"{fmt(st[name]['median_ms'], '.2f')} / {fmt(st[name]['p95_ms'], '.2f')}")
        rows.append(cells)
    out += [
        f"per stage as the agent times it, wall ms (median / p95); {where}",
        table(["size", *STAGES, "pre+inv+post"], rows),
        "",
    ]
    groups = sorted({g for run in runs for g in run["cpu_ms_per_frame"]})
    rows = [
        [
            run["size"],
            fmt(run["cpu_ms_per_frame_total"], ".1f"),
            *(fmt(run["cpu_ms_per_frame"].get(g), ".1f") for g in groups),
        ]
        for run in runs
    ]
    out += [
        "CPU ms per frame by thread over the whole run (agent process total, then each thread; "
        f"native = interpreter workers); {where}",
        table(["size", "total", *groups], rows),
        "",
    ]
    out += _peer_lines(model, machine)
    return out


def format_report(report: dict[str, Any]) -> str:
    """The human-readable tables of a bench report."""
    machine = report["machine"]
    out = _header(report)
    for model in report["models"]:
        if model.get("skipped"):
            out += [f"== {model['name']}: skipped: {model['skipped']}", ""]
            continue
        out += _model_lines(model, machine)
    dn = report.get("decode_nms")
    if dn:
        if dn.get("skipped"):
            out.append(f"YOLOv8n decode+NMS: skipped: {dn['skipped']}")
        else:
            a, w = dn["decode_nms"], dn["postprocess_total"]
            out.append(
                f"YOLOv8n {dn['output_shape']} {dn['output_dtype']} decode+NMS ({dn['image']}, {dn['candidates']} "
                f"candidates > {dn['score_threshold']}, {dn['kept']} kept): median {a['median_ms']:.3f} ms, "
                f"p95 {a['p95_ms']:.3f} ms wall (target < {TARGET_DECODE_NMS_MS} ms: {'yes' if dn['ok'] else 'NO'}); "
                f"whole postprocess median {w['median_ms']:.3f} ms"
            )
    out += ["", f"checks ({machine_line(machine)}):", *format_checks(report["checks"])]
    return "\n".join(out)
