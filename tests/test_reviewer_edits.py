"""A reviewer's work is never lost: edits made in VoTT 2.2.0 (moved and retagged boxes, a deleted
box, a box added, an asset emptied, the project saved with encrypted options) survive a ``label``
re-run with a new image, a ``label --redo``, a ``run`` of the same recording again, and an
interrupted ``label`` leaves a valid project that a re-run finishes."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.bundled import BUNDLED_DATA
from agent.vott import asset_id, load_project
from agent.vott.records import STATE_DIR
from tests.helpers import run_cli
from tests.vott_reviewer import KEY, Reviewer

SAMPLE = BUNDLED_DATA / "sample_timelapse"
MODEL = BUNDLED_DATA / "print3d_guidance.tflite"
REPO = Path(__file__).resolve().parent.parent


def _copy_frames(folder: Path, numbers: range) -> None:
    folder.mkdir(exist_ok=True)
    for n in numbers:
        shutil.copy(SAMPLE / f"frame_{n:06d}.jpg", folder / f"frame_{n:06d}.jpg")


def _validate(shared: Path, target: Path, frames: Path) -> str:
    check = subprocess.run(
        [sys.executable, str(shared / "vott" / "validate_vott.py"), str(target), "--source-folder", str(frames),
         "--security-key", KEY],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    return check.stdout


def _review(target: Path, frames: Path, shared: Path, prefix: str = "") -> tuple[Reviewer, dict[int, str]]:
    """Four edits of frames 1-4 (named ``<prefix>frame_00000N.jpg`` in ``frames``), one per asset, as
    VoTT makes them; returns the reviewer and the asset ids."""
    reviewer = Reviewer(target, shared)
    ids = {n: asset_id(str(frames / f"{prefix}frame_{n:06d}.jpg")) for n in (1, 2, 3, 4)}
    reviewer.move_and_retag(ids[1], dx=7.5, new_tag="spaghetti")
    reviewer.delete_box(ids[2])
    reviewer.add_box(ids[3], (10, 20, 40, 30), "adhesion")
    reviewer.empty(ids[4])
    return reviewer, ids


def _assert_edits_kept(reviewer: Reviewer, before: dict[str, bytes | None], ids: dict[int, str]) -> None:
    after = reviewer.snapshot()
    for n in (1, 2, 3):
        name = f"{ids[n]}-asset.json"
        assert after[name] == before[name], f"the reviewer's edit of frame {n} was changed"
    assert f"{ids[4]}-asset.json" not in after, "the emptied asset came back"
    project = json.loads(reviewer.project_file.read_text())
    assert project["assets"][ids[4]]["state"] == 1, "the emptied asset is no longer Visited"
    for key in ("sourceConnection", "targetConnection"):
        assert "encrypted" in project[key]["providerOptions"], "VoTT's encrypted options were rewritten"


def test_label_rerun_with_a_new_image_and_redo_keep_every_vott_edit(shared_dir: Path, tmp_path: Path) -> None:
    frames, target = tmp_path / "frames", tmp_path / "project"
    _copy_frames(frames, range(1, 7))
    first = run_cli("label", "--model", str(MODEL), "--out", str(target), str(frames))
    assert first.code == 0, first.err
    reviewer, ids = _review(target, frames, shared_dir)
    before = reviewer.snapshot()

    _copy_frames(frames, range(7, 8))  # one new image
    again = run_cli("label", "--model", str(MODEL), "--out", str(target), str(frames))
    assert again.code == 0, again.err
    assert "labelled 1 frames" in again.err, again.err  # the six done before are skipped
    _assert_edits_kept(reviewer, before, ids)
    new_id = asset_id(str(frames / "frame_000007.jpg"))
    assert (target / f"{new_id}-asset.json").is_file()
    assert new_id in json.loads(reviewer.project_file.read_text())["assets"]
    _validate(shared_dir, target, frames)

    redo = run_cli("label", "--redo", "--model", str(MODEL), "--out", str(target), str(frames))
    assert redo.code == 0, redo.err
    assert "labelled 7 frames" in redo.err and "6 reviewed in VoTT left as they were" in redo.err, redo.err
    _assert_edits_kept(reviewer, before, ids)
    _validate(shared_dir, target, frames)


def test_an_asset_file_edited_without_a_project_save_is_the_reviewers(
    shared_dir: Path, tmp_path: Path
) -> None:
    """VoTT writes the asset file before the project: an asset file that differs from what the agent
    wrote is the reviewer's even when the project was not saved after it; untouched ones update."""
    frames, target = tmp_path / "frames", tmp_path / "project"
    _copy_frames(frames, range(1, 4))
    assert run_cli("label", "--model", str(MODEL), "--out", str(target), str(frames)).code == 0
    reviewer = Reviewer(target, shared_dir)
    aid = asset_id(str(frames / "frame_000001.jpg"))
    project_bytes = reviewer.project_file.read_bytes()
    meta = reviewer.metadata(aid)
    meta["regions"][0]["tags"] = ["print"]
    reviewer.asset_file(aid).write_bytes(json.dumps(meta, indent=4).encode())
    edited = reviewer.asset_file(aid).read_bytes()
    reviewer.project_file.write_bytes(project_bytes)  # VoTT was closed before saving the project

    redo = run_cli("label", "--redo", "--model", str(MODEL), "--out", str(target), str(frames))
    assert redo.code == 0, redo.err
    assert "1 reviewed in VoTT left as they were" in redo.err, redo.err
    assert reviewer.asset_file(aid).read_bytes() == edited
    loaded = {a.id: a for a in load_project(target).assets}
    assert loaded[aid].labels[0] == "print"
    _validate(shared_dir, target, frames)


def test_run_again_on_the_same_recording_keeps_every_vott_edit(shared_dir: Path, tmp_path: Path) -> None:
    frames, data = tmp_path / "frames", tmp_path / "data"
    _copy_frames(frames, range(1, 9))
    common = ["run", "--source", str(frames), "--output-dir", str(data), "--no-mqtt"]
    assert run_cli(*common).code == 0
    target, kept_frames = data / "vott", data / "frames"
    reviewer, ids = _review(target, kept_frames, shared_dir, prefix="frames_")
    before = reviewer.snapshot()

    resumed = run_cli(*common)  # a restart: nothing left to do in this recording
    assert resumed.code == 0 and "processed 0 frames" in resumed.err, resumed.err
    again = run_cli(*common, "--from-start")
    assert again.code == 0 and "processed 8 frames" in again.err, again.err
    _assert_edits_kept(reviewer, before, ids)
    _validate(shared_dir, target, kept_frames)
    # VoTT saved the project, so every asset it lists is the reviewer's now (agent/vott/writer.py)
    counts = json.loads((data / "harvest.json").read_text())["frames"]
    assert (counts["selected"], counts["kept"], counts["kept_reviewed"]) == (8, 0, 8), counts


@pytest.mark.timeout(300)
def test_sigint_during_label_keeps_a_valid_project_and_a_rerun_finishes_the_rest(
    shared_dir: Path, tmp_path: Path
) -> None:
    frames, target = tmp_path / "frames", tmp_path / "project"
    frames.mkdir()
    for i in range(300):  # 300 real frames: the sample timelapse's, under new names
        shutil.copy(SAMPLE / f"frame_{i % 90 + 1:06d}.jpg", frames / f"shot_{i:04d}.jpg")
    stop_after = random.randint(20, 250)
    command = [
        sys.executable,
        "-m",
        "agent.cli",
        "label",
        "--model",
        str(MODEL),
        "--out",
        str(target),
        str(frames),
    ]
    proc = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(target.glob("*-asset.json"))) >= stop_after:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT" in err and "run the same command again" in err, err
    first = len(json.loads(next(target.glob("*.vott")).read_text())["assets"])
    assert first >= stop_after
    _validate(shared_dir, target, frames)
    assert not list(frames.glob(".*.tmp")) and not list(target.glob(".*.tmp"))

    rest = run_cli("label", "--model", str(MODEL), "--out", str(target), str(frames))
    assert rest.code == 0, rest.err
    done = int(rest.err.split("labelled ", 1)[1].split(" frames", 1)[0])
    assert done == 300 - first, (first, rest.err)
    assert len(json.loads(next(target.glob("*.vott")).read_text())["assets"]) == 300
    _validate(shared_dir, target, frames)
    progress = json.loads((target / STATE_DIR / "label-progress.json").read_text())
    assert sum(len(v) for v in progress["files"].values()) == 300


def test_temp_files_of_killed_writes_are_removed_at_start(tmp_path: Path) -> None:
    from agent.vott import VottProject

    frames, target = tmp_path / "frames", tmp_path / "vott"
    frames.mkdir()
    target.mkdir()
    dead = 2**22 + 12345  # above Linux's default pid_max: no process has it
    stale = [frames / f".a.jpg.{dead}-3.tmp", target / f".x-asset.json.{dead}-0.tmp"]
    live = frames / f".b.jpg.{os.getpid()}-9.tmp"
    for path in [*stale, live]:
        path.write_bytes(b"half")
    VottProject(target, frames).close()
    assert not any(p.exists() for p in stale)
    assert live.exists(), "a live process's temp file is left alone"


def test_run_removes_the_temp_files_a_kill_left_beside_its_state_files(tmp_path: Path) -> None:
    frames, data = tmp_path / "frames", tmp_path / "data"
    _copy_frames(frames, range(1, 3))
    data.mkdir()
    dead = 2**22 + 12345  # above Linux's default pid_max: no process has it
    stale = [data / f".resume.json.{dead}-0.tmp", data / f".alert-state.json.{dead}-4.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    result = run_cli("run", "--source", str(frames), "--output-dir", str(data), "--no-mqtt")
    assert result.code == 0, result.err
    assert not any(p.exists() for p in stale)
