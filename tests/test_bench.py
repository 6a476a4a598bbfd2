"""The bench and soak scripts run end to end on a tiny real model and report what they promise.

``scripts/bench.py`` and ``scripts/soak.py`` run in a subprocess, as a user runs them, on the
project's tiny SSD fixture model and a few synthetic frames (``--shared`` points at an empty
folder, so nothing from ../shared is needed), with a real Mosquitto when it is installed (the
bench falls back to the outbox alone, and says so, when it is not). Only the shape of the JSON
and the sanity of its figures are checked: no timing assertions (the machine is shared).
The YOLOv8n decode + NMS measurement needs ../shared and skips without it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "tests" / "fixtures" / "models" / "ssd_tf1_order_uint8in.tflite"
STAGES = ("decode", "preprocess", "invoke", "postprocess", "write", "publish")


def _load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"edge_agent_{name}", REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def _is_ms_summary(summary: dict) -> bool:
    return summary["n"] > 0 and 0 <= summary["median_ms"] <= summary["p95_ms"] <= summary["max_ms"]


def test_bench_reports_limit_end_to_end_stages_and_checks_as_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    empty_shared = tmp_path / "no-shared"
    empty_shared.mkdir()
    proc = _run(
        [
            str(REPO / "scripts" / "bench.py"),
            *("--models", str(MODEL), "--frames", "8", "--sizes", "160x120,320x240"),
            *("--runtimes", "ai_edge_litert,tflite_runtime", "--threads", "1", "--limit-seconds", "0.2"),
            "--detect-only",
            *("--rounds", "2"),
            *("--shared", str(empty_shared), "--work-dir", str(tmp_path / "work"), "--json", str(out)),
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "end to end" in proc.stdout and "limit: bare invoke()" in proc.stdout

    report = json.loads(out.read_text())
    assert report["schema"] == "edge-agent-bench/1"
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]
    assert report["settings"]["frames"] == 8
    assert report["settings"]["sizes"] == ["160x120", "320x240"]
    (model,) = report["models"]
    assert model["name"] == MODEL.stem and not model.get("skipped")

    limit = model["limit"]
    assert {r["runtime"] for r in limit["runs"]} <= {"ai_edge_litert", "tflite_runtime"}
    for run in limit["runs"]:
        assert run["threads"] == 1 and run["invokes"] >= 5
        assert run["rate_fps"] > 0 and run["median_ms"] > 0 and run["cpu_ms_per_invoke"] >= 0
    assert limit["limit_fps"] >= limit["best"]["rate_fps"] > 0
    # a re-measured limit after every run: 4 variants x 2 rounds
    assert len(limit["rechecks"]) == 2 * len(model["runs"])
    assert "limit re-measured after each run" in proc.stdout
    parallel = limit["parallel_interpreters"]  # the agent's default on 2+ cores, shown beside the limit
    if (os.cpu_count() or 1) >= 2:
        assert parallel["interpreters"] == 2 and parallel["rate_fps"] > 0 and parallel["invokes"] >= 10
        assert "interpreters x" in proc.stdout
    else:
        assert parallel is None

    # the measured agent runs with the systemd unit's environment (glibc malloc settings), as deployed
    unit_env = _load_script("bench").unit_environment()
    assert "MALLOC_ARENA_MAX" in unit_env
    assert set(unit_env) <= set(report["settings"]["agent_env"])
    assert all(run["agent_env"] == report["settings"]["agent_env"] for run in model["runs"])

    sizes = ["160x120", "320x240", "160x120 detect-only", "320x240 detect-only"]
    assert [r["size"] for r in model["runs"]] == sizes
    assert [r["detect_only"] for r in model["runs"]] == [False, False, True, True]
    for run in model["runs"]:
        assert run["processed"] == run["frames"] == 8
        assert run["interpreters"] == (2 if (os.cpu_count() or 1) >= 2 else 1)
        # each run against the limit measured right before and right after it, the higher one
        assert len(run["limit_around_fps"]) == 2 and run["e2e_fps"] > 0
        assert run["limit_fps"] == round(max(run["limit_around_fps"]), 2) <= limit["limit_fps"]
        # two rounds; the lower one stands for the size (the median of two, rounded down)
        assert len(run["rounds"]) == 2 and run["ratio"] == min(r["ratio"] for r in run["rounds"])
        # rounded down to 3 decimals (the fps figures in the JSON are rounded to 0.01)
        assert -0.0005 < run["e2e_fps"] / run["limit_fps"] - run["ratio"] < 0.0015
        assert run["meets_target"] == (run["ratio"] >= 0.85)
        assert run["peak_rss_mb"] > 10
        stages = ("decode", "preprocess", "invoke", "postprocess") if run["detect_only"] else STAGES
        for stage in stages:
            assert _is_ms_summary(run["stages"][stage]), (stage, run["stages"][stage])
        if run["detect_only"]:
            assert run["stages"]["write"]["n"] == 0  # no output stages ran
            continue
        assert run["cpu_ms_per_frame_total"] > 0  # per thread: sampled, too rough for 8 frames
        if report["settings"]["mqtt"]:
            # every frame's detections, JPEG and annotation reached the broker
            assert run["mqtt"]["acked"] >= 3 * run["frames"] and run["mqtt"]["left_in_outbox"] == 0

    names = [c["name"] for c in report["checks"]]
    assert f"{MODEL.stem} 160x120 end-to-end / limit" in names
    assert not any("detect-only" in name for name in names)
    assert all({"name", "value", "target", "ok", "issue_target"} <= set(c) for c in report["checks"])
    # a model the target does not name is measured against it for information only
    assert not any(c["issue_target"] for c in report["checks"] if c["name"].startswith(MODEL.stem))
    assert "[FAIL]" not in proc.stdout and "the issue's target is for print3d, yolov8n" in proc.stdout
    assert report["decode_nms"]["skipped"]  # no ../shared here: no YOLOv8n


def test_yolov8n_decode_and_nms_are_measured_on_a_real_output(shared_dir: Path) -> None:
    bench = _load_script("bench")
    result = bench.measure_yolo_decode_nms(
        shared_dir / "models" / "yolov8n_full_integer_quant_u8.3.172.tflite",
        shared_dir / "models" / "images" / "kite_and_cold.jpg",
        repeats=20,
    )
    assert result["output_shape"] == [1, 84, 8400]
    assert result["candidates"] >= result["kept"] > 0  # people and kites
    assert _is_ms_summary(result["decode_nms"]) and _is_ms_summary(result["postprocess_total"])
    assert result["ok"] == (result["decode_nms"]["median_ms"] < 1.0)


def test_soak_samples_rss_and_reports_growth(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = _run(
        [
            str(REPO / "scripts" / "soak.py"),
            *("--model", str(MODEL), "--frames", "40", "--sample-every", "5", "--size", "160x120"),
            *(
                "--shared",
                str(tmp_path / "no-shared"),
                "--work-dir",
                str(tmp_path / "work"),
                "--json",
                str(out),
            ),
        ],
        cwd=tmp_path,
    )
    # exit 1 only means the growth target was missed, which 40 frames cannot judge
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["schema"] == "edge-agent-soak/1"
    assert report["result"]["processed"] == 40
    assert [f for f, _ in report["samples"]] == list(range(5, 41, 5))
    assert all(kb > 10_000 for _, kb in report["samples"])
    rss = report["rss"]
    assert rss["samples"] == 8
    # recomputed from the raw kB samples: median of the first two vs the last two of eight
    kb = [k for _, k in report["samples"]]
    first_mb, last_mb = (kb[0] + kb[1]) / 2 / 1024, (kb[-2] + kb[-1]) / 2 / 1024
    assert rss["first_quarter_median_mb"] == pytest.approx(first_mb, abs=0.006)
    assert rss["growth_mb"] == pytest.approx(last_mb - first_mb, abs=0.006)
    assert rss["min_mb"] <= rss["first_quarter_median_mb"] <= rss["max_mb"]
    assert "RSS: first quarter median" in proc.stdout


def test_the_units_environment_is_read_as_systemd_reads_it(tmp_path: Path) -> None:
    unit = tmp_path / "agent.service"
    unit.write_text(
        "[Service]\n"
        'Environment="MALLOC_ARENA_MAX=2" "GREETING=hello world"\n'
        "Environment=A=1 \\\n  B=2\n"
        "ExecStart=/bin/true\n"
    )
    env = _load_script("bench").unit_environment(unit)
    assert env == {"MALLOC_ARENA_MAX": "2", "GREETING": "hello world", "A": "1", "B": "2"}


def test_a_size_reports_its_median_round_and_the_highest_peak_rss() -> None:
    bench = _load_script("bench")
    rounds = [
        {"ratio": 0.9, "e2e_fps": 90.0, "limit_fps": 100.0, "peak_rss_mb": 150.0, "size": "a"},
        {"ratio": 0.8, "e2e_fps": 80.0, "limit_fps": 100.0, "peak_rss_mb": 170.0, "size": "b"},
        {"ratio": 0.85, "e2e_fps": 84.0, "limit_fps": 98.8, "peak_rss_mb": 160.0, "size": "c"},
    ]
    chosen = bench.median_run(rounds)
    assert chosen["size"] == "c" and chosen["ratio"] == 0.85 and chosen["peak_rss_mb"] == 170.0
    assert [r["ratio"] for r in chosen["rounds"]] == [0.9, 0.8, 0.85]  # in the order they ran
    assert bench.median_run(rounds[:2])["ratio"] == 0.8  # even count: the lower middle
