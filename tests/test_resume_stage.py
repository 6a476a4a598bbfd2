"""The resume point of a folder or video run: written every few frames, when idle and at the end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from agent.detections import Detections
from agent.flow import Outputs
from agent.frames import Frame, FrameResult
from agent.sources.resume import RECORD_EVERY_FRAMES, FileMark, ResumeFile, ResumePoint, ResumeStage

KEY = "cam0 /frames"


def _result(index: int) -> FrameResult:
    frame = Frame(
        image=np.zeros((4, 4, 3), np.uint8),
        source_id="cam0",
        sequence=index,
        timestamp=1_700_000_000.0 + index,
        name=f"frame{index:04d}",
        resume_point=ResumePoint(FileMark(f"frame{index:04d}.jpg", 1000 + index, index)),
    )
    return FrameResult(frame, Detections.empty(), "m", "cpu", 1.0)


def _recorded(path: Path) -> str | None:
    """The file name recorded for the source, as a restart reads it (None: nothing recorded)."""
    point = ResumeFile(path).point(KEY)
    return point.file.name if point is not None else None


def test_the_point_is_written_every_few_frames_then_when_idle_and_at_close(tmp_path: Path) -> None:
    path = tmp_path / "resume.json"
    stage = ResumeStage(ResumeFile(path), KEY)
    for i in range(1, RECORD_EVERY_FRAMES):
        stage.handle(_result(i), Outputs())
    assert _recorded(path) is None, "written before the batch was full"
    stage.handle(_result(RECORD_EVERY_FRAMES), Outputs())
    assert _recorded(path) == f"frame{RECORD_EVERY_FRAMES:04d}.jpg"

    stage.handle(_result(RECORD_EVERY_FRAMES + 1), Outputs())
    assert _recorded(path) == f"frame{RECORD_EVERY_FRAMES:04d}.jpg"  # a SIGKILL now redoes one frame
    stage.tick()  # the output thread had nothing to do for a while
    assert _recorded(path) == f"frame{RECORD_EVERY_FRAMES + 1:04d}.jpg"

    stage.handle(_result(RECORD_EVERY_FRAMES + 2), Outputs())
    stage.close()
    assert _recorded(path) == f"frame{RECORD_EVERY_FRAMES + 2:04d}.jpg"
    stage.close()  # nothing new: no second write, the record stays
    assert json.loads(path.read_text())[KEY]["file"]["name"] == f"frame{RECORD_EVERY_FRAMES + 2:04d}.jpg"


def test_a_kill_between_writes_redoes_fewer_than_ten_frames(tmp_path: Path) -> None:
    """What a SIGKILL leaves: the file as last written; the frames after it are done again."""
    path = tmp_path / "resume.json"
    stage = ResumeStage(ResumeFile(path), KEY)
    worst = 0
    for i in range(1, 40):
        stage.handle(_result(i), Outputs())
        recorded = _recorded(path)
        done = int(recorded[5:9]) if recorded else 0
        worst = max(worst, i - done)  # frames finished but not recorded, were the process killed now
    assert 0 < worst < 10
    assert worst == RECORD_EVERY_FRAMES - 1


def test_frames_without_a_resume_point_write_nothing(tmp_path: Path) -> None:
    path = tmp_path / "resume.json"
    stage = ResumeStage(ResumeFile(path), KEY, every_frames=1)
    result = _result(1)
    result.frame.resume_point = None
    stage.handle(result, Outputs())
    stage.tick()
    stage.close()
    assert not path.exists()
