#!/usr/bin/env python3
"""Soak: many frames through the agent with MQTT on; does its memory stay flat?

Runs ``build_agent`` in a child process (the bench's ``--child`` mode) on a folder of distinct
JPEG frames, with the VoTT writer, the harvest quota (20 MB: full after a few hundred frames, so
the VoTT project, the harvest index and eviction are in their steady state for most of the run)
and the outbox to a local Mosquitto started here. The child reads its own ``VmRSS`` from /proc
every ``--sample-every`` frames. Reported: RSS of the first and last quarter of the samples
(medians) and their difference (the growth), the maximum, the slope of a straight-line fit
(MB per 1,000 frames), the peak (``VmHWM``) and the rate; as a table and with ``--json``.

    .venv/bin/python scripts/soak.py                      # 10,000 frames of 640x480, print3d SSD
    .venv/bin/python scripts/soak.py --frames 2000 --model yolov8n --json soak.json

The default model is the print3d SSD from ../shared (about 20-40 frames/s here, so 10,000 frames
take 5-10 minutes); without ../shared the bundled model, then the project's tiny SSD test fixture.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # scripts/bench.py: frames, broker, child runner

TARGET_GROWTH_MB = 5.0
SCHEMA = "edge-agent-soak/1"
FIXTURE_MODEL = bench.REPO / "tests" / "fixtures" / "models" / "ssd_tf1_order_uint8in.tflite"


def choose_model(spec: str, shared: Path) -> tuple[str, Path]:
    """The model to soak: a name or path; ``auto`` tries print3d, the bundled model, the fixture."""
    names = ["print3d", "bundled"] if spec == "auto" else [spec]
    for entry in bench.resolve_models(",".join(names), shared):
        if entry.path is not None:
            return entry.name, entry.path
        print(f"soak: {entry.name} unavailable: {entry.skipped}", file=sys.stderr)
    if spec == "auto" and FIXTURE_MODEL.is_file():
        return FIXTURE_MODEL.stem, FIXTURE_MODEL
    raise SystemExit(f"soak: no model to run ({spec})")


def printer_model(model: Path) -> bool:
    """True when the model knows the default failure labels (then alerts run, as on a printer)."""
    from agent.config.alerts import AlertSettings
    from agent.config.detector import DetectorSettings
    from agent.detect.detector import Detector

    labels = Detector(DetectorSettings(model=str(model)), warm_up=False).labels
    return bool(set(AlertSettings().failure_labels) & set(labels))


def rss_growth(samples: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """Growth figures from ``(frame number, VmRSS kB)`` samples: first/last quarter medians (MB),
    their difference, min/max, and the least-squares slope in MB per 1,000 frames."""
    if len(samples) < 4:
        return {"samples": len(samples), "growth_mb": None}
    frames = np.array([s[0] for s in samples], dtype=np.float64)
    mb = np.array([s[1] for s in samples], dtype=np.float64) / 1024.0
    q = max(1, len(mb) // 4)
    first, last = float(np.median(mb[:q])), float(np.median(mb[-q:]))
    slope = float(np.polyfit(frames, mb, 1)[0]) * 1000.0
    return {
        "samples": len(samples),
        "first_quarter_median_mb": round(first, 2),
        "last_quarter_median_mb": round(last, 2),
        "growth_mb": round(last - first, 2),
        "min_mb": round(float(mb.min()), 2),
        "max_mb": round(float(mb.max()), 2),
        "slope_mb_per_1000_frames": round(slope, 3),
        "target_growth_mb": TARGET_GROWTH_MB,
        "ok": bool(last - first < TARGET_GROWTH_MB),
    }


def format_report(report: dict[str, Any]) -> str:
    """The soak result as a few lines of text and one table of RSS samples (every tenth)."""
    r = report["result"]
    g = report["rss"]
    m = report["machine"]
    s = report["settings"]
    lines = [
        f"edge-agent soak  {report['created']}  commit {m.get('git_commit') or '?'}",
        f"machine: {m['cpu']}, {m['cores']} cores, load {m['load_avg_1m_start']} -> {m.get('load_avg_1m_end', '?')}",
        f"model {s['model']} ({r['runtime']}, {r['interpreters']} interpreters x {r['threads']} threads), {s['frames']} frames of {s['size']}, "
        f"MQTT {'on (' + s['broker'] + ')' if s['broker'] else 'off (outbox only)'}, alerts {'on' if s['alerts'] else 'off'}, "
        f"harvest quota {s['quota_mb']} MB, "
        f"RSS sampled every {s['sample_every']} frames",
        "agent environment (the systemd unit's unless set): "
        + " ".join(f"{k}={v}" for k, v in s.get("agent_env", {}).items()),
        f"processed {r['processed']} frames in {r['wall_s']:.0f} s ({r['fps']:.1f} fps); kept {r['kept']}; "
        f"evicted {r.get('evicted')}; MQTT acked {r.get('acked')}, left in outbox {r.get('outbox_left')}; "
        f"stage errors {r['stage_errors'] or 'none'}",
        "",
    ]
    rows = [
        [str(f), f"{kb / 1024:.1f}"] for f, kb in report["samples"][:: max(1, len(report["samples"]) // 10)]
    ]
    if report["samples"]:
        f, kb = report["samples"][-1]
        if not rows or rows[-1][0] != str(f):
            rows.append([str(f), f"{kb / 1024:.1f}"])
    lines += [bench.table(["frame", "VmRSS MB"], rows), ""]
    if g.get("growth_mb") is None:
        lines.append("RSS: too few samples for a growth figure")
    else:
        lines.append(
            f"RSS: first quarter median {g['first_quarter_median_mb']} MB, last quarter median "
            f"{g['last_quarter_median_mb']} MB, growth {g['growth_mb']:+.2f} MB (target < {TARGET_GROWTH_MB} MB: "
            f"{'ok' if g['ok'] else 'FAIL'}); min {g['min_mb']}, max {g['max_mb']} MB; slope "
            f"{g['slope_mb_per_1000_frames']:+.3f} MB per 1,000 frames; peak (VmHWM) {r['peak_rss_mb']} MB"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak; prints the report, writes ``--json``; exit 0 when RSS growth is under target."""
    p = argparse.ArgumentParser(description="Many frames through edge-agent run with MQTT on; RSS growth.")
    p.add_argument("--frames", type=int, default=10000, help="frames (all different files; default 10000)")
    p.add_argument("--size", default="640x480", help="frame size WxH (default 640x480)")
    p.add_argument(
        "--model", default="auto", help="print3d, yolov8n, bundled or a .tflite path (default auto)"
    )
    p.add_argument("--sample-every", type=int, default=100, help="read VmRSS every N frames (default 100)")
    p.add_argument(
        "--quota-mb",
        type=float,
        default=20.0,
        help="harvest.quota_mb (default 20: full after a few hundred frames, so the soak measures "
        "the steady state, eviction included)",
    )
    p.add_argument("--agent-threads", default="auto", help="detector.num_threads (auto or a number)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="agent config override")
    p.add_argument("--no-mqtt", action="store_true", help="no broker, MQTT off")
    p.add_argument("--json", type=Path, help="write the report as JSON here")
    p.add_argument("--work-dir", type=Path, help="frames and output (default: a temp folder; frames cached)")
    p.add_argument("--keep", action="store_true", help="keep the output folder")
    p.add_argument("--shared", type=Path, default=bench.SHARED, help="the shared reference folder")
    args = p.parse_args(argv)
    if args.frames < 8 or args.sample_every < 1:
        raise SystemExit("soak: --frames must be at least 8 and --sample-every at least 1")
    name, model = choose_model(args.model, args.shared)
    w, h = bench.parse_size(args.size)
    work = (args.work_dir or Path(tempfile.gettempdir()) / "edge-agent-soak").resolve()
    machine = bench.machine_info()
    print(f"soak: making {args.frames} frames of {args.size} in {work} (cached)", file=sys.stderr)
    files = bench.make_frames(
        work / f"frames-{args.size}-{args.frames}", bench.source_images(args.shared), w, h, args.frames
    )
    overrides = [("harvest.quota_mb", args.quota_mb), *bench.parse_overrides(args.set)]
    alerts = printer_model(model)
    if alerts:
        overrides.insert(0, ("alerts.enabled", True))
    threads = None if args.agent_threads == "auto" else int(args.agent_threads)
    out_dir = work / "run"
    shutil.rmtree(out_dir, ignore_errors=True)
    with bench.maybe_broker(not args.no_mqtt, work / "broker") as broker:
        config = bench.agent_config(
            files[0].parent,
            model,
            out_dir,
            broker_port=broker.port if broker else None,
            runtime="auto",
            threads=threads,
            overrides=overrides,
        )
        print(f"soak: running {args.frames} frames through {name}", file=sys.stderr)
        child = bench.run_child(
            {"config": config, "sample_rss_every": args.sample_every, "frames": len(files)},
            out_dir / "soak",
            timeout_s=6 * 3600,
        )
        broker_version = broker.version() if broker else None
    stats = child.get("stats") or {}
    harvest = stats.get("harvest") or {}
    mqtt = stats.get("mqtt") or {}
    machine["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    samples = [(int(f), int(kb)) for f, kb in child["rss_samples"]]
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": ["scripts/soak.py", *(argv if argv is not None else sys.argv[1:])],
        "machine": machine,
        "settings": {
            "model": name,
            "model_path": str(model),
            "frames": args.frames,
            "size": args.size,
            "sample_every": args.sample_every,
            "quota_mb": args.quota_mb,
            "alerts": alerts,
            "overrides": list(args.set),
            "agent_env": bench.child_environment(),
            "broker": broker_version,
        },
        "result": {
            "processed": len(child["done_s"]),
            "kept": child.get("kept"),
            "runtime": child["runtime"],
            "threads": child["threads"],
            "interpreters": child.get("interpreters", 1),
            "wall_s": child["run_s"],
            "fps": round(bench.e2e_rate(child["done_s"]), 2),
            "peak_rss_mb": round(child["vm_hwm_kb"] / 1024, 1),
            "rss_end_mb": round(child["vm_rss_end_kb"] / 1024, 1),
            "evicted": (harvest.get("frames") or {}).get("evicted"),
            "frames_on_disk": (harvest.get("disk") or {}).get("frames_on_disk"),
            "acked": mqtt.get("acked"),
            "outbox_left": child.get("outbox_left"),
            "stage_errors": stats.get("stage_errors", {}),
        },
        "rss": rss_growth(samples),
        "samples": samples,
    }
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"\nsoak: JSON in {args.json}", file=sys.stderr)
    if not args.keep:
        shutil.rmtree(out_dir, ignore_errors=True)
    return 0 if report["rss"].get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
