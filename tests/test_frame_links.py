"""With ``output.link_source_frames``, a kept frame from an image folder is a hard link to its
source file, when that file is still what the source read and others may read it; otherwise
(changed, private, another file system), and by default, the bytes are written as a copy."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.detections import Detections
from agent.flow import Outputs
from agent.frames import Frame, FrameResult
from agent.harvest.decision import KeepDecision
from agent.sources.resume import FileMark, ResumePoint
from agent.vott import VottProject
from agent.vott.stage import VottStage


def _jpeg(path: Path, seed: int = 0) -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    path.write_bytes(data.tobytes())
    os.chmod(path, 0o644)
    return data.tobytes()


def _folder_frame(path: Path, data: bytes) -> Frame:
    """A frame as the folder source makes it: the file's bytes and its mark when read."""
    return Frame(
        image=np.zeros((48, 64, 3), np.uint8),
        source_id="cam",
        sequence=0,
        timestamp=path.stat().st_mtime,
        name=path.stem,
        encoded=data,
        origin=str(path),
        resume_point=ResumePoint(FileMark.of(path)),
    )


def _store(tmp_path: Path, frame: Frame, *, link: bool = True) -> Path:
    project = VottProject(tmp_path / "vott", tmp_path / "frames", name="p", tags=["kite"], link_frames=link)
    stage = VottStage(project)
    outputs = Outputs()
    outputs.add(KeepDecision(keep=True, reasons=("all",)))
    boxes = Detections.create([[4, 4, 30, 30]], [0.9], [0], ["kite"])
    stored = stage.handle(FrameResult(frame, boxes, "m", "cpu", 1.0), outputs)
    stage.close()
    assert stored.image_path is not None
    return stored.image_path


def test_by_default_a_kept_folder_frame_is_a_copy(tmp_path: Path) -> None:
    """The user's images and the kept frames stay two files unless the config asks for links: an
    editor that rewrites a photo in place must not change a frame a reviewer labelled."""
    source = tmp_path / "photos" / "img_001.jpg"
    source.parent.mkdir()
    data = _jpeg(source)
    kept = _store(tmp_path, _folder_frame(source, data), link=False)
    assert kept.read_bytes() == data and not os.path.samefile(kept, source)
    assert source.stat().st_nlink == 1


def test_a_kept_folder_frame_is_a_link_to_its_file(tmp_path: Path) -> None:
    source = tmp_path / "in" / "frame1.jpg"
    source.parent.mkdir()
    data = _jpeg(source)
    kept = _store(tmp_path, _folder_frame(source, data))
    assert kept.read_bytes() == data
    assert os.path.samefile(kept, source)
    kept.unlink()  # evicted: the user's file stays
    assert source.read_bytes() == data
    assert not [p for p in kept.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_frame_kept_again_stays_one_link_and_leaves_no_temp_link(tmp_path: Path) -> None:
    """A second run over the same folder keeps the same frame at the same path: renaming a link over
    a link to the same file does nothing, so the temp link must not be left behind."""
    source = tmp_path / "in" / "frame1.jpg"
    source.parent.mkdir()
    data = _jpeg(source)
    kept = _store(tmp_path, _folder_frame(source, data))
    assert _store(tmp_path, _folder_frame(source, data)) == kept
    assert os.path.samefile(kept, source) and source.stat().st_nlink == 2
    assert [p.name for p in kept.parent.iterdir()] == [kept.name]


def test_a_linked_frame_written_again_is_a_new_file_and_the_users_file_stays(tmp_path: Path) -> None:
    """Writing a kept frame that is a link to the user's file replaces the link (a new file renamed
    into place), never writes into the user's file."""
    source = tmp_path / "in" / "frame1.jpg"
    source.parent.mkdir()
    data = _jpeg(source)
    kept = _store(tmp_path, _folder_frame(source, data))
    assert os.path.samefile(kept, source)
    other = _jpeg(tmp_path / "other.jpg", seed=2)
    again = Frame(
        np.zeros((48, 64, 3), np.uint8), "cam", 1, 0.0, source.stem, encoded=other, origin=str(source)
    )
    assert _store(tmp_path, again) == kept  # same frame id, bytes that are not the file's: written
    assert kept.read_bytes() == other
    assert source.read_bytes() == data and source.stat().st_nlink == 1


def test_a_file_changed_since_it_was_read_is_copied_as_read(tmp_path: Path) -> None:
    source = tmp_path / "in" / "frame1.jpg"
    source.parent.mkdir()
    data = _jpeg(source)
    frame = _folder_frame(source, data)
    _jpeg(source, seed=1)  # rewritten in place after the source read it
    os.utime(source, ns=(1, 1))
    kept = _store(tmp_path, frame)
    assert kept.read_bytes() == data
    assert not os.path.samefile(kept, source)


def test_a_private_file_is_copied_with_an_ordinary_files_permissions(tmp_path: Path) -> None:
    source = tmp_path / "in" / "frame1.jpg"
    source.parent.mkdir()
    data = _jpeg(source)
    os.chmod(source, 0o600)
    kept = _store(tmp_path, _folder_frame(source, data))
    assert not os.path.samefile(kept, source)
    assert kept.stat().st_mode & 0o044 == 0o044 & ~_umask()


def test_another_file_system_falls_back_to_copies_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system (/dev/shm) to link across")
    with tempfile.TemporaryDirectory(dir=shm) as other:
        source = Path(other) / "frame1.jpg"
        data = _jpeg(source)
        with caplog.at_level(logging.INFO, logger="agent.vott.writer"):
            kept = _store(tmp_path, _folder_frame(source, data))
        assert kept.read_bytes() == data
        assert "copied, not linked" in caplog.text


def test_frames_without_a_source_file_are_written(tmp_path: Path) -> None:
    data = _jpeg(tmp_path / "x.jpg")
    frame = Frame(np.zeros((48, 64, 3), np.uint8), "cam", 0, 0.0, "live-0", encoded=data, origin="rtsp://cam")
    kept = _store(tmp_path, frame)
    assert kept.read_bytes() == data and kept.stat().st_nlink == 1


def _umask() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    return 0o022
