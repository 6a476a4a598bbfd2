"""The harvest index in SQLite: SIGKILL at any moment, restarts, the old JSONL journal imported once,
an unreadable file set aside, evictions handed back after a crash, the ~2 s sync bound."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.config.harvest import HarvestSettings
from agent.harvest import Harvester, HarvestStore

REPO = Path(__file__).resolve().parent.parent
WALL = 1.7e9

# A writer as the agent's output thread runs it: write a kept frame's files, record them, carry out
# the evictions; print what is done only once the harvester returned (the parent kills at random).
CHILD = r"""
import os, sys
from pathlib import Path
from agent.config.harvest import HarvestSettings
from agent.harvest import Harvester

folder, start = Path(sys.argv[1]), int(sys.argv[2])
settings = HarvestSettings(quota_mb=0.2, min_free_mb=0)
harvester = Harvester(settings, folder)
evictions = harvester.maintain(now=1.7e9 + start)  # what an earlier, killed run left half done
harvester.confirm_evicted(evictions)
for e in evictions:
    print("evicted", e.frame_id, flush=True)
i = start
while True:
    frame_id = f"cam_{i:06d}"
    image, asset = folder / f"{frame_id}.jpg", folder / f"{frame_id}-asset.json"
    image.write_bytes(os.urandom(1000 + (i * 7919) % 9000))
    asset.write_text('{"asset": {}}')
    evictions = harvester.record_kept(frame_id, [image, asset], ["dog"], now=1.7e9 + i)
    for e in evictions:
        print("evicting", e.frame_id, flush=True)
    harvester.confirm_evicted(evictions)
    for e in evictions:
        print("evicted", e.frame_id, flush=True)
    print("kept", frame_id, flush=True)
    if i % 3 == 0:
        harvester.mark_synced(f"cam_{i - 6:06d}")
    i += 1
"""


def _note(line: str, kept: set[str], leaving: set[str]) -> int:
    """Account one line of the child; 1 for a newly kept frame."""
    what, frame_id = line.split()
    if what == "kept":
        kept.add(frame_id)
        return 1
    kept.discard(frame_id)
    leaving.add(frame_id)
    return 0


def _frame_files(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.iterdir() if not p.name.startswith("harvest-")}


@pytest.mark.timeout(120)
def test_sigkill_at_random_moments_loses_nothing_and_leaks_nothing(tmp_path: Path) -> None:
    rng = random.Random(20)
    kept: set[str] = set()  # frames the child reported recorded and not chosen for eviction
    leaving: set[str] = set()  # chosen for eviction: gone or going, whatever the kill interrupted
    start = 0
    for _round in range(4):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path), str(start)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert child.stdout is not None
        stop_after = rng.randint(150, 400)
        lines = 0
        for line in child.stdout:
            lines += _note(line, kept, leaving)
            if lines >= stop_after:
                break
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        # what it printed before the kill is done too (read through the same buffered pipe; a last
        # line cut by the kill is not)
        for line in child.stdout.read().splitlines(keepends=True):
            if line.endswith("\n"):
                _note(line, kept, leaving)
        child.stdout.close()
        start = 1 + max(int(frame_id.split("_")[1]) for frame_id in kept | leaving)

        with Harvester(_settings(quota_mb=0.2), tmp_path) as reopened:
            store = reopened.store
            on_disk = {frame.frame_id for frame in store.frames()}
            # evictions selected but not confirmed at the kill come back once, files intact
            handed_back = reopened.maintain(now=WALL + start)
            assert all(Path(p).exists() for e in handed_back for p in e.paths[:1])
            lost = sorted(kept - on_disk - {e.frame_id for e in handed_back})
            assert not lost, f"round {_round}: recorded frames lost: {lost[:5]}"
            reopened.confirm_evicted(handed_back)
            kept -= {e.frame_id for e in handed_back}
            files = _frame_files(tmp_path)
            listed = {Path(p).name for frame in store.frames() for p in frame.paths}
            assert listed <= files.keys(), "the index lists files that are gone"
            # only the frame being written at the kill (image, asset) is not counted
            assert len(files.keys() - listed) <= 2, sorted(files.keys() - listed)
            assert store.total_bytes == sum(files[name] for name in listed)
            assert store.total_bytes <= 0.2 * 1024 * 1024 + 10_100, "the quota held"


def test_evictions_a_killed_run_never_confirmed_are_handed_back_at_start(tmp_path: Path) -> None:
    harvester = Harvester(_settings(quota_mb=0.01), tmp_path)
    for index in range(6):
        paths = _files(tmp_path, f"f{index}", 4000)
        evictions = harvester.record_kept(f"f{index}", paths, now=WALL + index)
        if index < 5:
            harvester.confirm_evicted(evictions)
    pending = [e.frame_id for e in evictions]
    assert pending  # the writer stopped before taking these out of its project
    harvester.close()

    again = Harvester(_settings(quota_mb=0.01), tmp_path)
    assert [e.frame_id for e in again.maintain(now=WALL + 10)] == pending
    assert all(Path(p).exists() for e in evictions for p in e.paths), "files wait for the caller"
    again.confirm_evicted(evictions)
    assert not any(Path(p).exists() for e in evictions for p in e.paths)
    assert again.maintain(now=WALL + 11) == []  # handed back once
    assert again.stats()["frames"]["evicted"] == len(pending)
    again.close()


def test_an_old_jsonl_journal_is_imported_once_and_renamed(tmp_path: Path) -> None:
    sizes = {}
    for index in range(4):
        sizes[f"cam_{index}"] = sum(p.stat().st_size for p in _files(tmp_path, f"cam_{index}", 1000 + index))
    lines = [
        {"op": "kept", "id": f"cam_{i}", "paths": [str(tmp_path / f"cam_{i}.jpg"), str(tmp_path / f"cam_{i}-asset.json")],
         "bytes": 1, "labels": ["dog"], "kept_at": WALL + i, "source": "cam", "dhash": "00ff00ff00ff00ff",
         "counts": {"dog": 1}, "synced": False}
        for i in range(4)
    ]  # fmt: skip
    journal = tmp_path / "harvest-index.jsonl"
    text = "".join(json.dumps(line) + "\n" for line in lines)
    text += '{"op":"synced","id":"cam_1"}\n{"op":"evicted","id":"cam_3"}\n{"op":"kept","id":"cam_half'
    journal.write_text(text)

    first = Harvester(_settings(), tmp_path)
    frames = {f.frame_id: f for f in first.store.frames()}
    assert list(frames) == ["cam_0", "cam_1", "cam_2"]  # cam_3 was evicted; the cut line skipped
    assert frames["cam_1"].synced and not frames["cam_0"].synced
    assert frames["cam_0"].size_bytes == sizes["cam_0"], "sizes are read from disk"
    assert frames["cam_2"].dhash == 0x00FF00FF00FF00FF and frames["cam_2"].label_counts == (("dog", 1),)
    assert not journal.exists() and (tmp_path / "harvest-index.jsonl.imported").exists()
    first.mark_synced("cam_0")
    first.close()

    # A crash between the import and the rename: the journal is back, but the import is recorded.
    (tmp_path / "harvest-index.jsonl.imported").rename(journal)
    second = Harvester(_settings(), tmp_path)
    assert [f.frame_id for f in second.store.frames() if f.synced] == ["cam_0", "cam_1"], "not imported again"
    assert not journal.exists()
    second.close()


def test_an_unreadable_index_is_set_aside_and_a_new_one_started(tmp_path: Path, caplog) -> None:
    (tmp_path / "harvest-index.sqlite3").write_bytes(b"this is not a database" * 100)
    harvester = Harvester(_settings(), tmp_path)
    harvester.record_kept("f0", _files(tmp_path, "f0", 100), now=WALL)
    assert len(harvester.store) == 1
    harvester.close()
    (aside,) = tmp_path.glob("harvest-index.sqlite3.corrupt-*[0-9]")
    assert aside.read_bytes().startswith(b"this is not a database")
    assert "unreadable" in caplog.text


def test_a_newer_schema_is_not_read_as_ours(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    store = HarvestStore(path)
    assert len(store) == 0
    store.close()
    assert list(tmp_path.glob("index.sqlite3.corrupt-*"))


def test_changes_are_synced_within_about_two_seconds_without_further_calls(tmp_path: Path) -> None:
    store = HarvestStore(tmp_path / "index.sqlite3")
    store.add("f0", _files(tmp_path, "f0", 100), ["dog"], WALL)  # the first change syncs at once
    store.add("f1", _files(tmp_path, "f1", 100), ["dog"], WALL + 1)
    assert store.sync_pending, "the second change within 2 s waits for the timer"
    deadline = time.monotonic() + 10
    while store.sync_pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not store.sync_pending, "no checkpoint came from the timer"
    store.close()


def test_a_frame_written_again_merges_its_files_and_is_not_double_counted(tmp_path: Path) -> None:
    store = HarvestStore(tmp_path / "index.sqlite3")
    image = _files(tmp_path, "f0", 300)[0]
    store.add("f0", [image], ["dog"], WALL)
    asset = tmp_path / "f0-extra.json"
    asset.write_text("{}")
    store.add("f0", [asset], ["cat"], WALL + 1)
    (frame,) = store.frames()
    assert frame.paths == (str(image), str(asset))
    assert store.total_bytes == image.stat().st_size + asset.stat().st_size
    assert len(store) == 1 and store.labels_on_disk() == {"cat": 1}
    store.close()


def _settings(**kwargs: object) -> HarvestSettings:
    return HarvestSettings.model_validate({"min_free_mb": 0, **kwargs})


def _files(folder: Path, frame_id: str, size: int) -> list[Path]:
    image, asset = folder / f"{frame_id}.jpg", folder / f"{frame_id}-asset.json"
    image.write_bytes(os.urandom(size))
    asset.write_text('{"asset": {}}')
    return [image, asset]
