"""The README's first command: the sample timelapse through ``edge-agent run``.

Until the bundled guidance model ships, the demo runs Print Nanny's print3d model from
``../shared`` on the bundled synthetic timelapse of a print that fails into spaghetti.
"""

from __future__ import annotations

import json
from pathlib import Path

from agent.config import BUNDLED_DATA
from tests.helpers import outbox_topics, run_cli, validate_vott


def test_the_sample_timelapse_prelabels_alerts_on_the_failure_only_and_fills_the_outbox(
    shared_dir: Path, tmp_path: Path
) -> None:
    model = shared_dir / "models" / "print3d" / "print3d_2020-10-23_ssd_uint8.tflite"
    out = tmp_path / "edge-agent-data"
    result = run_cli("run", "--model", str(model), "--output-dir", str(out))
    assert result.code == 0, result.err

    truth = json.loads((BUNDLED_DATA / "sample_timelapse_truth.json").read_text())
    failure_starts = int(truth["failure_index"])
    alerts = [line for line in result.err.splitlines() if "ALERT" in line]
    assert alerts, result.err
    for line in alerts:
        frame = int(line.split("frame sample_frame_")[1].split(",")[0])
        assert frame >= failure_starts, f"alert on the healthy part: {line}"

    check = validate_vott(shared_dir, out / "vott", out / "frames")
    assert check.returncode == 0, check.stdout

    topics = outbox_topics(out / "mqtt-outbox.sqlite3")
    frames = len(list((BUNDLED_DATA / "sample_timelapse").glob("*.jpg")))
    assert sum(t.endswith("/detections") for t in topics) == frames
    assert sum(t.endswith("/alerts") for t in topics) == len(alerts)
