"""Video files: a real MJPG/AVI written with cv2.VideoWriter, read back through the source."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from agent.errors import ConfigError, UserError
from agent.sources import SourceSettings, open_source

FPS = 10
FRAMES = 30


def frame_value(index: int) -> int:
    return 4 + index * 8


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), FPS, (64, 48))
    assert writer.isOpened()
    for i in range(FRAMES):
        writer.write(np.full((48, 64, 3), frame_value(i), np.uint8))
    writer.release()
    return path


def test_every_frame_with_index_names_and_media_timestamps(clip):
    with open_source(SourceSettings(url=str(clip))) as source:
        assert source.kind == "video"
        assert source.live is False
        frames = list(source)
        stats = source.stats()
    assert len(frames) == FRAMES
    assert [f.sequence for f in frames] == list(range(FRAMES))
    assert frames[0].name == "clip-f000000"
    assert frames[-1].name == f"clip-f{FRAMES - 1:06d}"
    mtime = clip.stat().st_mtime
    for i, frame in enumerate(frames):
        assert frame.source_id == "clip"
        assert frame.origin == str(clip)
        assert frame.image.shape == (48, 64, 3)
        assert frame.image.dtype == np.uint8
        assert abs(float(frame.image.mean()) - frame_value(i)) < 3
        assert frame.timestamp == pytest.approx(mtime + i / FPS)
        assert frame.encoded is None
    assert stats["frames"] == FRAMES
    assert stats["corrupt_skipped"] == 0


def test_interval_samples_by_video_time(clip):
    # One frame per 0.5 s of video, independent of how fast this machine decodes.
    with open_source(SourceSettings(url=str(clip), interval_s=0.5)) as source:
        names = [f.name for f in source]
    assert names == [f"clip-f{i:06d}" for i in range(0, FRAMES, 5)]


def test_loop_replays_the_video(clip):
    with open_source(SourceSettings(url=str(clip), loop=True)) as source:
        frames = list(itertools.islice(source, FRAMES + 5))
    assert [f.sequence for f in frames] == list(range(FRAMES + 5))
    assert frames[FRAMES].name == "clip-f000000"
    assert abs(float(frames[FRAMES + 4].image.mean()) - frame_value(4)) < 3


def test_unreadable_video_is_a_user_error(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01 definitely not a video " * 200)
    with pytest.raises(UserError) as info:
        open_source(SourceSettings(url=str(bad)))
    message = str(info.value)
    assert "cannot open video" in message or "no readable frames" in message
    assert str(bad) in message
    assert info.value.exit_code == 1


def test_missing_video_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        open_source(SourceSettings(url=str(tmp_path / "print.mp4")))
    assert "print.mp4" in str(info.value)
    assert info.value.exit_code == 2
    with pytest.raises(ConfigError) as info:
        open_source(SourceSettings(url=str(tmp_path / "print.mp4"), kind="video"))
    assert "does not exist" in str(info.value)
