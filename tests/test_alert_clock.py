"""Which clock alert times and cooldowns follow: the files' arrival for a watched folder, a simulated
step of ``source.interval_s`` (10 s by default) for a recorded timelapse. Through ``edge-agent run``.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REPO, run_cli

SAMPLE = REPO / "agent" / "data" / "sample_timelapse"
FILES = 12


def write_config(tmp_path: Path, folder: Path) -> Path:
    config = {
        "source": {"url": str(folder), "id": "cam", "watch_poll_s": 0.1, "watch_settle_s": 0.1},
        "detector": {"model": str(REPO / "agent" / "data" / "print3d_guidance.tflite")},
        "output": {"dir": str(tmp_path / "data"), "fsync": False},
        # every frame a sample, every sample saved: the test reads the times in the state file
        "alerts": {"enabled": True, "min_sample_interval_s": 0, "state_save_interval_s": 0},
        "mqtt": {"enabled": False},
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def state(tmp_path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((tmp_path / "data" / "alert-state.json").read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


@pytest.mark.timeout(120)
def test_a_watched_folder_counts_frames_when_their_files_arrive(tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    started = time.time()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "run",
            "--watch",
            "--config",
            str(write_config(tmp_path, folder)),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        for index in range(1, FILES + 1):
            shutil.copy(SAMPLE / f"frame_{index:06d}.jpg", folder / f"frame_{index:06d}.jpg")
            deadline = time.monotonic() + 30
            while state(tmp_path).get("samples_this_print", 0) < index:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, f"file {index} was not counted"
                time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=60)[1]
    ended = time.time()
    assert proc.returncode == 143, err
    times = [sample[0] for sample in state(tmp_path)["history"]]
    assert len(times) == FILES
    assert started <= times[0] and times[-1] <= ended, "sample times are the files' arrival"
    assert times == sorted(times)
    assert times[-1] - times[0] < 10 * (FILES - 1), "not one simulated step of 10 s per file"


def test_a_recorded_timelapse_keeps_its_simulated_step(tmp_path: Path) -> None:
    folder = tmp_path / "recorded"
    folder.mkdir()
    for index in range(1, FILES + 1):
        shutil.copy(SAMPLE / f"frame_{index:06d}.jpg", folder / f"frame_{index:06d}.jpg")
    result = run_cli("run", "--config", str(write_config(tmp_path, folder)))
    assert result.code == 0, result.err
    times = [sample[0] for sample in state(tmp_path)["history"]]
    assert [round(b - a, 6) for a, b in itertools.pairwise(times)] == [10.0] * (FILES - 1)
