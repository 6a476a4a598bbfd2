"""The arm64 proof (scripts/arm64/check.py) end to end: a Debian 12 arm64 root under qemu-user-static.

Slow (about 15 minutes with the cached root of a previous run, 25 from scratch) and needs root, apt
and PyPI: it runs only with ``-m slow``. What it proves and what needs a real Pi: docs/arm64.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

RUNTIMES = ("ai_edge_litert", "tflite_runtime")


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_the_agent_installs_runs_and_refuses_broken_inference_on_arm64(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("debootstrap, chroot and mount need root")
    if shutil.which("apt-get") is None:
        pytest.skip("needs a Debian host (apt-get) for qemu-user-static, binfmt-support and debootstrap")
    report_file = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "arm64" / "check.py"), "--json", str(report_file)],
        capture_output=True,
        text=True,
        timeout=7000,
        check=False,
    )
    print(result.stdout)  # the wall time of every step, shown with -s
    report = json.loads(report_file.read_text())
    assert result.returncode == 0 and report["ok"], result.stdout[-6000:] + result.stderr[-2000:]

    checks = report["checks"]
    assert checks["README install"] and checks["install-pi.sh --root"]
    assert checks["QEMU_CPU=max: the agent refuses to start"]
    assert checks["reference and known-answer tests pass under emulation"]
    for runtime in RUNTIMES:
        assert checks[f"known answer {runtime} at start-up"] and checks[f"doctor known answer {runtime}"]
        job = report["main_job"][runtime]
        assert job["same_within_limits"] and job["detections"] > 200 and job["frames"] == 90
        assert job["largest_box_difference_px"] <= 1.0 and job["largest_score_difference"] <= 0.02
    refused = next(s for s in report["steps"] if "QEMU_CPU=max" in s["step"])
    assert refused["exit"] == 1 and "known-answer check failed" in refused["error"]
    assert all(step["seconds"] >= 0 for step in report["steps"])
