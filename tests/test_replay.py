"""``edge-agent replay``: the alert logic over a recorded print, with a simulated clock.

Recordings are made of real printer-camera frames from ../shared/models/print3d/images: crops
that leave the failure out (a healthy print), then the whole frames (the failure), as in
``tests/test_printer_e2e.py``. The real print3d model scores them.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from agent.cli import main
from agent.commands.replay_report import clock_text
from tests.helpers import run_cli
from tests.printer_hosts import FakeOctoPrint
from tests.test_printer_e2e import (
    MODEL_NAME,
    PrinterFrames,
    detector_settings_yaml,
    load_printer_frames,
)

HEALTHY = 60  # 30 in Obico's startup grace, 30 judged
FAILING = 20
WARN_WITHIN_SAMPLES = 4  # this recording warns on its 2nd failure frame and acts on its 5th


@pytest.fixture(scope="module")
def printer_frames(shared_dir: Path) -> PrinterFrames:
    return load_printer_frames(shared_dir)


@pytest.fixture(scope="module")
def recording(printer_frames: PrinterFrames, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A timelapse folder: HEALTHY healthy frames, then FAILING failure frames."""
    folder = tmp_path_factory.mktemp("timelapse")
    frames = [printer_frames.healthy[i % 4] for i in range(HEALTHY)]
    frames += [printer_frames.failure[i % 4] for i in range(FAILING)]
    for i, jpeg in enumerate(frames):
        (folder / f"frame_{i:04d}.jpg").write_bytes(jpeg)
    return folder


@pytest.fixture
def model(shared_dir: Path) -> Path:
    return shared_dir / "models" / "print3d" / MODEL_NAME


@pytest.fixture
def octoprint() -> Iterator[FakeOctoPrint]:
    server = FakeOctoPrint("replay-key")
    yield server
    server.close()


@pytest.fixture
def broker_socket() -> Iterator[socket.socket]:
    """A listening socket where the config says the MQTT broker is: replay must never connect."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        yield sock


def write_config(tmp_path: Path, model: Path, **sections: Any) -> Path:
    config: dict[str, Any] = {
        "source": {"url": "http://octopi.local/webcam/?action=snapshot"},
        "detector": detector_settings_yaml(model),
        "output": {"dir": str(tmp_path / "data")},
        "alerts": {
            "enabled": True,
            "action": "pause",
            "state_file": str(tmp_path / "state" / "alert-state.json"),
        },
    }
    config.update(sections)
    path = tmp_path / "printer.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def table_rows(out: str) -> list[list[str]]:
    """The rows of the printed table (after its header line), split into cells."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("frame "))
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append(line.split(None, 7))
    return rows


def test_replay_prints_the_score_curve_and_calls_nobody(
    tmp_path: Path,
    model: Path,
    recording: Path,
    octoprint: FakeOctoPrint,
    broker_socket: socket.socket,
) -> None:
    config = write_config(
        tmp_path,
        model,
        printer={"kind": "octoprint", "url": octoprint.url, "api_key_env": "REPLAY_TEST_KEY"},
        mqtt={"enabled": True, "host": "127.0.0.1", "port": broker_socket.getsockname()[1]},
    )
    result = run_cli(
        "replay", "--config", str(config), str(recording), env={"REPLAY_TEST_KEY": "k"}, cwd=tmp_path
    )
    assert result.code == 0, result.err
    assert "alerts.enabled is false" not in result.err
    rows = table_rows(result.out)
    assert [r[0] for r in rows] == [f"frame_{i:04d}" for i in range(HEALTHY + FAILING)]
    # one frame every 10 s (the default), from 0:00:00
    assert rows[1][1] == "0:00:10" and rows[HEALTHY][1] == "0:10:00"
    assert all(r[6] == "grace" for r in rows[:30]) and rows[30][6] == "ok"
    assert all(len(r) == 7 for r in rows[:HEALTHY]), "an event in the healthy part"
    assert all(float(r[2]) == 0 for r in rows[:HEALTHY])
    events = [(i, r[7]) for i, r in enumerate(rows) if len(r) > 7]
    assert [e for _, e in events] == ["WARN", "ACT (would pause)"]
    (warn_at, _), (act_at, _) = events
    assert HEALTHY <= warn_at < HEALTHY + WARN_WITHIN_SAMPLES
    assert warn_at < act_at < HEALTHY + FAILING
    assert float(rows[warn_at][3]) > float(rows[warn_at][4])  # smoothed above "warn at"
    assert float(rows[act_at][3]) > float(rows[act_at][5])  # and above "act at"
    assert f"WARN at frame_{warn_at:04d} ({clock_text(warn_at * 10)}): the smoothed signal" in result.out
    # No printer call, no broker connection, no state file, no output folder.
    assert octoprint.calls == []
    with pytest.raises(BlockingIOError):
        broker_socket.accept()
    assert not (tmp_path / "state").exists() and not (tmp_path / "data").exists()


def test_json_lines_follow_the_config_interval_and_skip_frames_sooner_than_a_sample(
    tmp_path: Path, model: Path, recording: Path
) -> None:
    """``source.interval_s: 4`` with Obico's 8 s minimum between samples: every other frame counts."""
    config = write_config(tmp_path, model, source={"url": str(recording), "interval_s": 4}, alerts={})
    result = run_cli("replay", "--config", str(config), "--json", "--max-frames", "10", cwd=tmp_path)
    assert result.code == 0, result.err
    assert "alerts.enabled is false" in result.err  # run would not alert; replay still shows the curve
    *frames, last = result.json_lines()
    assert [f["t_s"] for f in frames] == [4.0 * i for i in range(10)]
    assert [f["counted"] for f in frames] == [True, False] * 5
    assert frames[0]["frame"] == "frame_0000" and frames[0]["in_grace"] and frames[0]["score"] == 0
    assert {"smoothed", "warn_at", "act_at", "level"} <= frames[0].keys()
    summary = last["summary"]
    assert summary["frames"] == 10 and summary["counted"] == 5 and summary["first_warn"] is None


def test_a_timelapse_video_replays_frame_by_frame_and_the_plot(
    tmp_path: Path, model: Path, printer_frames: PrinterFrames
) -> None:
    video = tmp_path / "timelapse.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 480))
    jpegs = [printer_frames.healthy[i % 4] for i in range(35)] + [printer_frames.failure[0]] * 10
    for jpeg in jpegs:
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        writer.write(cv2.resize(image, (640, 480)))
    writer.release()
    # The video cuts between crops of different photos, not one camera's view of one print: the
    # scene check would (rightly) leave every cut out, so it is off here (tests/test_scene_check.py).
    alerts = {"enabled": True, "action": "pause", "scene": {"enabled": False}}
    config = write_config(tmp_path, model, alerts=alerts)
    plot = tmp_path / "plots" / "curve.png"
    result = run_cli(
        "replay", "--config", str(config), str(video), "--interval-s", "12", "--plot", str(plot), cwd=tmp_path
    )
    assert result.code == 0, result.err
    rows = table_rows(result.out)
    assert len(rows) == 45 and rows[0][0] == "timelapse-f000000" and rows[44][1] == "0:08:48"
    assert any("WARN" in r[-1] for r in rows[35:])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed, so no plot was written" in result.err
        assert not plot.exists()
    else:
        image = cv2.imread(str(plot))
        assert image is not None and image.shape[1] > 500, "not a readable PNG"
        assert f"plot written to {plot}" in result.err


def test_video_every_s_samples_a_real_time_recording(tmp_path: Path, model: Path) -> None:
    video = tmp_path / "realtime.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for i in range(100):  # 10 s of video
        writer.write(np.full((120, 160, 3), i, np.uint8))
    writer.release()
    config = write_config(tmp_path, model)
    result = run_cli("replay", "--config", str(config), str(video), "--video-every-s", "2", "--json")
    assert result.code == 0, result.err
    *frames, last = result.json_lines()
    assert len(frames) == 5 and [f["t_s"] for f in frames] == [0, 2, 4, 6, 8]
    assert last["summary"]["interval_s"] == 2


# -- mistakes ----------------------------------------------------------------------------------------


def run_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    try:
        code = main(["replay", *args])
    except SystemExit as exc:  # a value refused while the options are parsed
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def test_bad_inputs_are_refused_with_the_fix(
    tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path, model))
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ((str(tmp_path / "nope"),), 2, "does not exist: give a folder of frames"),
        (("http://octopi.local/webcam/?action=stream",), 2, "is a live source; replay reads recordings"),
        ((), 2, "give FOLDER_OR_VIDEO: source.url"),
        ((str(empty),), 1, "no images (.jpg, .jpeg, .png, .bmp) in"),
        ((str(empty), "--interval-s", "0"), 2, "--interval-s: must be more than 0 and at most 86400, got 0"),
        ((str(tmp_path), "--video-every-s", "5"), 2, "--video-every-s applies to video files only"),
        ((str(tmp_path), "--plot", "curve.jpg"), 2, "give a file name ending in .png"),
    ]
    (tmp_path / "one.jpg").write_bytes(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    for args, code, message in cases:
        got, err = run_in_process(capsys, "--config", config, *args)
        assert (got, message in err) == (code, True), (args, err)
        assert "Traceback" not in err


def test_a_broken_video_or_config_is_refused(
    tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "print.mp4"
    broken.write_bytes(b"not a video at all")
    code, err = run_in_process(capsys, "--config", str(write_config(tmp_path, model)), str(broken))
    assert code == 1 and "cannot open video" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("alerts:\n  treshold: 0.5\n")
    code, err = run_in_process(capsys, "--config", str(bad), str(broken))
    assert code == 2 and "alerts.treshold: unknown key" in err


def test_failure_labels_the_model_does_not_know_are_refused(
    tmp_path: Path, model: Path, recording: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, model, alerts={"failure_labels": {"failure": 1.0}})
    code, err = run_in_process(capsys, "--config", str(config), str(recording))
    assert code == 2 and "names none of the model's labels" in err


def test_help_names_the_options() -> None:
    result = run_cli("replay", "--help")
    assert result.code == 0
    for option in ("--interval-s", "--plot", "--json", "--video-every-s", "FOLDER_OR_VIDEO"):
        assert option in result.out
