"""The README's first command: ``edge-agent run`` with no arguments runs the embedded default,
the bundled guidance model on the bundled timelapse of a print that fails into spaghetti."""

from __future__ import annotations

import json
from pathlib import Path

from agent.bundled import BUNDLED_DATA
from tests.helpers import CliResult, outbox_topics, run_cli, validate_vott

TRUTH = json.loads((BUNDLED_DATA / "sample_timelapse_truth.json").read_text())
FRAMES = len(list((BUNDLED_DATA / "sample_timelapse").glob("*.jpg")))


def alert_frames(result: CliResult) -> list[int]:
    """The timelapse frame index of every ALERT line in the log."""
    lines = [line for line in result.err.splitlines() if "ALERT" in line]
    return [int(line.split("frame sample_frame_")[1].split(",")[0]) for line in lines]


def test_run_without_arguments_alerts_on_the_failure_only_and_fills_the_outbox(tmp_path: Path) -> None:
    result = run_cli("run", cwd=tmp_path)
    assert result.code == 0, result.err
    out = tmp_path / "edge-agent-data"  # the default config's output folder, under the working directory
    alerts = alert_frames(result)
    assert alerts, result.err
    assert min(alerts) >= int(TRUTH["failure_index"]), f"alert on the healthy part: {alerts}"
    assert f"processed {FRAMES} frames" in result.err

    project = json.loads(next((out / "vott").glob("*.vott")).read_text())
    assert {t["name"] for t in project["tags"]} >= {"nozzle", "print", "spaghetti"}
    assert len(project["assets"]) >= FRAMES * 0.9  # the nozzle and the print are in every frame

    topics = outbox_topics(out / "mqtt-outbox.sqlite3")
    assert sum(t.endswith("/detections") for t in topics) == FRAMES
    assert sum(t.endswith("/alerts") for t in topics) == len(alerts)
    # each kept frame waits in the outbox as a hard link to the frame the VoTT project holds
    frame_files = {p.stat().st_ino for p in (out / "frames").iterdir()}
    links = list((out / "mqtt-outbox.sqlite3.files").iterdir())
    assert len(links) == sum("/frames/" in t for t in topics) > 0
    assert {p.stat().st_ino for p in links} <= frame_files


def test_the_demo_project_passes_the_vott_validator(shared_dir: Path, tmp_path: Path) -> None:
    assert run_cli("run", cwd=tmp_path).code == 0
    out = tmp_path / "edge-agent-data"
    check = validate_vott(shared_dir, out / "vott", out / "frames")
    assert check.returncode == 0, check.stdout


def test_print_nannys_model_on_the_sample_timelapse_alerts_on_the_failure_only(
    shared_dir: Path, tmp_path: Path
) -> None:
    """A third-party model through the same default config: the alert logic does not depend on ours."""
    model = shared_dir / "models" / "print3d" / "print3d_2020-10-23_ssd_uint8.tflite"
    result = run_cli("run", "--model", str(model), "--output-dir", str(tmp_path / "out"))
    assert result.code == 0, result.err
    alerts = alert_frames(result)
    assert alerts and min(alerts) >= int(TRUTH["failure_index"]), alerts
