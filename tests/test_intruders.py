"""Intruder replays through ``edge-agent replay --json``: a real photo (a person, a pet, an object;
``agent/intruders.py``) inserted into the healthy part of the bundled sample print must never
warn or act.

Both Print Nanny's print3d model and the bundled guidance model must stay silent on each of them.
Without the scene check (``alerts.scene``) two did alert: the bundled model on a rocket filling
the view (warn at intruder frame 5, act at 8) and print3d on a crowd with kites filling it (warn
at 5); every model's figures without it are in docs/guidance-model.md.
The failure itself must still alert through the same replays, or a silent harness would pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.bundled import BUNDLED_MODEL
from agent.intruders import (
    DEFAULT_AFTER,
    Image,
    Intrusion,
    ReplayLayout,
    load_photos,
    missing_photos,
    outcome,
    sample_frames,
    write_replay,
)
from tests.helpers import run_cli

REPO = Path(__file__).resolve().parent.parent
PRINTER_CONFIG = REPO / "configs" / "printer-octoprint.yaml"
DEFAULT_CONFIG = REPO / "configs" / "default.yaml"

# (photo, placement, intruder frames): people, pets and an object, whole view and partly in view
CASES = [
    ("pets", "part", 12),
    ("pets", "whole", 30),
    ("grace_hopper", "whole", 4),
    ("kite_and_cold", "part", 8),
    ("astronaut", "part", 12),
    ("chelsea", "whole", 12),
    ("coffee", "part", 30),
    ("kite_and_cold", "whole", 12),
    ("rocket", "whole", 30),
]


def config_file(tmp_path: Path, model: Path, source: Path) -> Path:
    """``source``'s detector thresholds and alerts section, with ``model``."""
    doc = yaml.safe_load(source.read_text(encoding="utf-8"))
    config: dict[str, Any] = {"detector": {**doc["detector"], "model": str(model)}, "alerts": doc["alerts"]}
    path = tmp_path / f"{model.stem}-{source.stem}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def replay(tmp_path: Path, config: Path, layout: ReplayLayout) -> tuple[dict[str, Any], Any]:
    """``edge-agent replay --json`` on the layout's folder: its summary and the sorted outcome."""
    result = run_cli("replay", "--config", str(config), str(layout.folder), "--json", cwd=tmp_path)
    assert result.code == 0, result.err
    records = result.json_lines()
    summary = records.pop()["summary"]
    assert summary["frames"] == len(layout.kinds) == len(records)
    assert summary["in_grace"] <= DEFAULT_AFTER, "the intruder must come after the startup grace"
    return summary, outcome(layout, records)


def photos(shared_dir: Path, name: str) -> dict[str, Image]:
    """The photo ``name`` by name; skips, saying why, when it cannot be loaded here."""
    reason = missing_photos(shared_dir, [name])
    if reason:
        pytest.skip(reason)
    return load_photos(shared_dir, [name])


@pytest.mark.parametrize("model", ["print3d", "bundled"])
@pytest.mark.parametrize(("photo", "placement", "frames"), CASES)
def test_a_photo_in_view_never_warns_or_acts(
    shared_dir: Path, tmp_path: Path, model: str, photo: str, placement: str, frames: int
) -> None:
    path = (
        BUNDLED_MODEL
        if model == "bundled"
        else shared_dir / "models/print3d/print3d_2020-10-23_ssd_uint8.tflite"
    )
    intrusion = Intrusion(photo, placement, frames)
    layout = write_replay(tmp_path / "replay", photos(shared_dir, photo), [intrusion])
    assert layout.kinds.count("intruder") == frames and "failure" not in layout.kinds
    summary, result = replay(tmp_path, config_file(tmp_path, path, PRINTER_CONFIG), layout)
    assert (summary["events"]["warn"], summary["events"]["act"]) == (0, 0), result.cell()
    assert (result.warn, result.act) == (0, 0)


@pytest.mark.parametrize("model", ["print3d", "bundled"])
def test_the_same_replay_alerts_on_the_real_failure(shared_dir: Path, tmp_path: Path, model: str) -> None:
    """Built the same way but without a photo and on into the failure (frame 48 on), a replay warns
    and acts there and only there: a silent intruder replay is silent because of the model, not
    because the harness cannot alert."""
    path = (
        BUNDLED_MODEL
        if model == "bundled"
        else shared_dir / "models/print3d/print3d_2020-10-23_ssd_uint8.tflite"
    )
    control = write_replay(tmp_path / "control", {}, last=len(sample_frames()[0]))
    _, result = replay(tmp_path, config_file(tmp_path, path, DEFAULT_CONFIG), control)
    assert (result.warn, result.act) == (0, 0), result.cell()
    assert result.failure_warn is not None and result.failure_act is not None, result


@pytest.mark.parametrize("model", ["print3d", "bundled"])
def test_a_pet_that_stayed_in_view_does_not_delay_the_failure_alert(
    shared_dir: Path, tmp_path: Path, model: str
) -> None:
    """Two dogs settle into part of the view for 30 samples (5 minutes at 10 s) and leave 11 samples
    before the failure. Coming in slowly through the moving part of the scene, they were partly
    learnt before the scene check judged them in the way; once they leave, the view matches the
    scene as it was and the failure warns and acts at the same sample frames as without them (it
    warned 34 frames late when only the learnt scene was compared)."""
    path = (
        BUNDLED_MODEL
        if model == "bundled"
        else shared_dir / "models/print3d/print3d_2020-10-23_ssd_uint8.tflite"
    )
    config = config_file(tmp_path, path, DEFAULT_CONFIG)
    last = len(sample_frames()[0])
    control = write_replay(tmp_path / "control", {}, last=last)
    _, expected = replay(tmp_path, config, control)
    intrusion = Intrusion("pets", "part", 30)
    layout = write_replay(tmp_path / "replay", photos(shared_dir, "pets"), [intrusion], last=last)
    _, result = replay(tmp_path, config, layout)
    assert (result.warn, result.act) == (0, 0), result.cell()
    assert (result.failure_warn, result.failure_act) == (expected.failure_warn, expected.failure_act)
