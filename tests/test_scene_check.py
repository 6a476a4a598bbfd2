"""Scene-aware alerts through the CLI: people, pets and things in front of the camera never warn or
act, and say ``view_changed`` / ``obstructed``; the real failure still alerts where it did.

Intruder replays (agent/intruders.py) are the bundled sample print (healthy frames 1-47, then
spaghetti) with real photos (../shared/models/images and scikit-image's bundled photos) inserted
into its healthy part, replayed with ``edge-agent replay --json`` and run with ``edge-agent run``,
with the bundled model and with Print Nanny's print3d model from ../shared, under the bundled
default config and the OctoPrint example config's thresholds. The whole grid of photos, placements
and lengths is measured by scripts/intruder_replay.py (docs/printer-alerts.md has the table).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import load_config
from agent.intruders import Image, Intrusion, load_photos, missing_photos, sample_frames, write_replay
from tests.helpers import REPO, run_cli
from tests.mosquitto import MessageCollector, mosquitto  # noqa: F401 (fixture)

BUNDLED = REPO / "agent" / "data" / "print3d_guidance.tflite"
PRINT3D = "models/print3d/print3d_2020-10-23_ssd_uint8.tflite"
FAILURE_FRAME = sample_frames()[1]  # the sample's first failed frame (48)
# Seven photos, 1 to 30 frames, in the healthy part after both configs' startup grace (the printer
# config waits 30 samples). An event is expected for every intrusion of 3 frames or more.
INTRUSIONS = (
    Intrusion("pets", "whole_stretched", 30, 31),
    Intrusion("grace_hopper", "over_print", 10, 33),
    Intrusion("astronaut", "bottom", 3, 35),
    Intrusion("kite_and_cold", "corner", 5, 38),
    Intrusion("chelsea", "side", 2, 40),
    Intrusion("coffee", "whole_stretched", 1, 42),
    Intrusion("rocket", "over_print", 30, 44),
)


@pytest.fixture(scope="module")
def photos(shared_dir: Path) -> dict[str, Image]:
    reason = missing_photos(shared_dir)
    if reason:
        pytest.skip(reason)
    return load_photos(shared_dir)


def replay_config(tmp_path: Path, model: Path, config: str) -> Path:
    """``default``: the bundled config; ``printer``: configs/printer-octoprint.yaml's detector and
    alerts (the printer and its webcam are not used by a replay); both with ``model``."""
    source = None if config == "default" else REPO / "configs" / "printer-octoprint.yaml"
    loaded = load_config(source).model_dump(mode="json")
    data = {"detector": {**loaded["detector"], "model": str(model)}, "alerts": loaded["alerts"]}
    path = tmp_path / f"{config}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def replay(config: Path, recording: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    result = run_cli("replay", "--config", str(config), str(recording), "--json")
    assert result.code == 0, result.err
    records = result.json_lines()
    return records[:-1], records[-1]["summary"]


def events_by_frame(records: list[dict[str, Any]], shows: dict[str, str]) -> list[tuple[str, str]]:
    return [(shows[r["frame"]], e["kind"]) for r in records for e in r["events"]]


@pytest.mark.parametrize("config", ["default", "printer"])
@pytest.mark.parametrize("model_name", ["bundled", "print3d"])
def test_intruders_never_warn_or_act_and_the_failure_still_does(
    tmp_path: Path, shared_dir: Path, photos: dict[str, Image], model_name: str, config: str
) -> None:
    model = BUNDLED if model_name == "bundled" else shared_dir / PRINT3D
    settings = replay_config(tmp_path, model, config)
    plain = write_replay(tmp_path / "plain", photos, last=60).shows
    baseline = [e for e in events_by_frame(replay(settings, tmp_path / "plain")[0], plain) if e[1] != "clear"]
    shows = write_replay(tmp_path / "intruders", photos, INTRUSIONS, last=60).shows
    records, summary = replay(settings, tmp_path / "intruders")

    events = events_by_frame(records, shows)
    alerts = [e for e in events if e[1] in ("warn", "act")]
    first_failure = f"sample_{FAILURE_FRAME:06d}"
    assert all(what >= first_failure and what.startswith("sample_") for what, _ in alerts), alerts
    assert alerts == [e for e in baseline if e[1] in ("warn", "act")], "the failure alerts where it did"
    if (model_name, config) == ("bundled", "default"):
        assert alerts == [("sample_000050", "warn"), ("sample_000054", "act")]

    # every intrusion of 3+ frames is reported once, as it began, and is over when the print is back
    for intrusion in INTRUSIONS:
        prefix = f"{intrusion.photo}/{intrusion.placement}/"
        reported = [(what, kind) for what, kind in events if what.startswith(prefix)]
        if intrusion.frames >= 3:
            assert reported == [
                (f"{prefix}3", "view_changed" if intrusion.placement == "whole_stretched" else "obstructed")
            ]
        else:
            assert reported == []
        left_out = [
            r for r in records if shows[r["frame"]].startswith(prefix) and r.get("view") not in ("ok", None)
        ]
        assert len(left_out) == intrusion.frames, f"{prefix}: every intruder frame is left out"
    restored = [what for what, kind in events if kind == "view_restored"]
    assert len(restored) == sum(i.frames >= 3 for i in INTRUSIONS)
    assert all(what.startswith("sample_") for what in restored)
    assert summary["events"]["warn"] == summary["events"]["act"] == 1


@pytest.mark.parametrize("name", ["frame_0.jpg", "frame_2.jpg", "frame_3.jpg", "frame_5.jpg"])
def test_the_real_print3d_frames_alert_as_without_the_check(
    tmp_path: Path, shared_dir: Path, name: str
) -> None:
    """A camera that watches one of the real failed prints for 45 samples alerts exactly as it does
    with the scene check off: the check finds nothing in the way."""
    recording = tmp_path / "print"
    recording.mkdir()
    jpeg = (shared_dir / "models" / "print3d" / "images" / name).read_bytes()
    for i in range(45):
        (recording / f"frame_{i:04d}.jpg").write_bytes(jpeg)
    on = replay_config(tmp_path, shared_dir / PRINT3D, "default")
    off = tmp_path / "off.yaml"
    data = yaml.safe_load(on.read_text())
    data["alerts"]["scene"] = {"enabled": False}
    off.write_text(yaml.safe_dump(data))
    with_check, summary = replay(on, recording)
    without, _ = replay(off, recording)
    assert [r["events"] for r in with_check] == [r["events"] for r in without]
    assert summary["left_out"] == 0
    if name in ("frame_0.jpg", "frame_3.jpg"):  # spaghetti: 0.9 and more a frame
        assert summary["first_warn"] is not None


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_view_events_reach_the_broker_and_home_assistant(
    mosquitto,  # noqa: F811
    tmp_path: Path,
    photos: dict[str, Image],
) -> None:
    broker = mosquitto()
    device = "scene-dev"
    intrusion = Intrusion("pets", "whole_stretched", 4, 20)
    shows = write_replay(tmp_path / "frames", photos, [intrusion], last=55).shows
    config = tmp_path / "agent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "source": {"url": str(tmp_path / "frames"), "id": "cam"},
                "detector": {"model": str(BUNDLED), "score_threshold": 0.3},
                "output": {"dir": str(tmp_path / "data"), "fsync": False},
                "alerts": {"enabled": True, "startup_grace_samples": 5},
                "mqtt": {
                    "enabled": True,
                    "host": broker.host,
                    "port": broker.port,
                    "device_id": device,
                    "home_assistant": {"enabled": True},
                },
            }
        )
    )
    with MessageCollector(
        broker.host, broker.port, [f"edge-agent/{device}/#", "homeassistant/#"]
    ) as collector:
        result = run_cli("run", "--config", str(config))
        assert result.code == 0, result.err
        assert collector.wait_for(
            lambda msgs: sum(m.topic.endswith("/alerts") for m in msgs) >= 4, timeout_s=30
        ), [m.topic for m in collector.messages]
    alerts = [json.loads(m.payload) for m in collector.on_topic(f"edge-agent/{device}/alerts")]
    assert [a["level"] for a in alerts] == ["view_changed", "view_restored", "warn", "act"]
    changed, restored = alerts[0], alerts[1]
    assert shows[changed["frame_id"].removeprefix("cam_")] == "pets/whole_stretched/3"
    assert changed["blocked"] is True and changed["samples"] == 3 and changed["action"] == "none"
    assert "active" not in changed, "a view event leaves the failure sensor alone"
    assert restored["blocked"] is False and restored["samples"] == 4
    views = [json.loads(m.payload) for m in collector.on_topic(f"edge-agent/{device}/view")]
    # a latest-value topic: the blocked state may be replaced by the next before it is sent
    assert views and views[-1]["level"] == "view_restored" and views[-1]["blocked"] is False
    assert [m.payload for m in collector.on_topic(f"edge-agent/{device}/failure")][-1] == b"ON"  # the warn
    discovery = [
        json.loads(m.payload) for m in collector.on_topic("homeassistant/binary_sensor/+/camera_view/config")
    ]
    assert discovery and discovery[0]["state_topic"] == f"edge-agent/{device}/view"
