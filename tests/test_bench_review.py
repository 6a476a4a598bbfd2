"""The receiver bench end to end at a small scale: 3 receivers take 30 devices x 4 frames with every
frame stored exactly once and every batch closed and valid for VoTT, and the report says so."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO
from tests.mosquitto import require_mosquitto


@pytest.mark.timeout(600)
def test_bench_review_small(tmp_path, shared_dir):
    require_mosquitto()
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_review.py"), "--devices", "30", "--frames", "4",
         "--receivers", "3", "--no-fsync", "--json", str(out)],
        capture_output=True, text=True, timeout=580, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    [three] = report["receivers"]
    assert three["receivers"] == 3 and three["frames"] == 120
    assert three["lost"] == 0 and three["duplicates_stored"] == 0 and three["dropped"] == 0
    assert three["batches"] == three["batches_closed"] >= 30 and three["batches_invalid"] == []
    assert all(n > 0 for n in three["per_receiver_frames"]), "every receiver took part"
    assert len(report["sink"]) == 2 and all(s["frames"] == 120 for s in report["sink"])
    assert report["machine"]["cores"] and "ratio_to_sink" in three
    assert "3 receiver(s)" in proc.stdout and "paho sink" in proc.stdout
