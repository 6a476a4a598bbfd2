"""Image folders: natural order, corrupt files skipped and counted, watch mode with files that
appear (and are written slowly) while iterating. Real files on disk."""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.errors import ConfigError, UserError
from agent.frames import Frame
from agent.sources import SourceSettings, open_source

WAIT_S = 30.0  # generous upper bound for anything to happen; never a timing assertion


def write_image(path: Path, bgr: tuple[int, int, int], size: tuple[int, int] = (48, 64)) -> bytes:
    image = np.full((*size, 3), bgr, np.uint8)
    assert cv2.imwrite(str(path), image)
    return path.read_bytes()


def gradient_jpeg(size: tuple[int, int] = (240, 320)) -> bytes:
    y, x = np.mgrid[0 : size[0], 0 : size[1]]
    image = np.dstack([x % 256, y % 256, (x + y) % 256]).astype(np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def test_folder_in_natural_order_skips_corrupt_files(tmp_path, caplog):
    folder = tmp_path / "timelapse"
    folder.mkdir()
    blue = write_image(folder / "frame_1.jpg", (255, 0, 0))
    write_image(folder / "frame_2.jpg", (0, 255, 0))
    write_image(folder / "frame_10.jpeg", (0, 0, 255))
    png = write_image(folder / "frame_3.png", (10, 20, 30))
    write_image(folder / "frame_4.bmp", (40, 50, 60))
    full = gradient_jpeg()
    (folder / "frame_5.jpg").write_bytes(full[: len(full) // 2])  # truncated
    (folder / "frame_6.jpg").write_bytes(b"this is not an image" * 50)  # garbage
    (folder / "notes.txt").write_text("not an image")
    (folder / ".frame_7.jpg").write_bytes(blue)  # hidden: an atomic writer's temp file
    for i, name in enumerate(sorted(p.name for p in folder.iterdir())):
        os.utime(folder / name, (1_700_000_000 + i, 1_700_000_000 + i))

    caplog.set_level(logging.WARNING)
    with open_source(SourceSettings(url=str(folder))) as source:
        assert source.kind == "folder"
        assert source.live is False
        frames = list(source)
        stats = source.stats()

    assert [f.name for f in frames] == ["frame_1", "frame_2", "frame_3", "frame_4", "frame_10"]
    assert [f.sequence for f in frames] == [0, 1, 2, 3, 4]
    assert {f.source_id for f in frames} == {"timelapse"}
    for frame in frames:
        assert frame.image.dtype == np.uint8
        assert frame.image.shape == (48, 64, 3)
        path = next(folder.glob(frame.name + ".*"))
        assert frame.origin == str(path)
        assert frame.timestamp == pytest.approx(path.stat().st_mtime)
    assert frames[0].encoded == blue
    assert frames[0].encoded_format == "jpg"
    assert np.abs(frames[0].image.astype(int) - (255, 0, 0)).max() <= 3  # BGR order
    assert frames[2].encoded == png
    assert frames[2].encoded_format == "png"
    assert frames[3].encoded is None  # BMP: no JPEG/PNG bytes to pass on
    assert stats["frames"] == 5
    assert stats["corrupt_skipped"] == 2

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("frame_5.jpg" in m for m in warnings) == 1
    assert sum("frame_6.jpg" in m for m in warnings) == 1
    assert "Traceback" not in caplog.text


def test_loop_replays_the_folder(tmp_path):
    write_image(tmp_path / "a.jpg", (0, 0, 0))
    write_image(tmp_path / "b.jpg", (9, 9, 9))
    with open_source(SourceSettings(url=str(tmp_path), loop=True)) as source:
        frames = list(itertools.islice(source, 5))
    assert [f.name for f in frames] == ["a", "b", "a", "b", "a"]
    assert [f.sequence for f in frames] == [0, 1, 2, 3, 4]


def test_single_image_file(tmp_path):
    data = write_image(tmp_path / "bed.png", (1, 2, 3))
    with open_source(str(tmp_path / "bed.png")) as source:
        frames = list(source)
    assert len(frames) == 1
    assert frames[0].name == "bed"
    assert frames[0].encoded == data
    assert frames[0].source_id == "bed"


def test_missing_folder_is_a_config_error(tmp_path):
    missing = tmp_path / "does-not-exist"
    with pytest.raises(ConfigError) as info:
        open_source(SourceSettings(url=str(missing), kind="folder"))
    assert str(missing) in str(info.value)
    assert "does not exist" in str(info.value)
    assert info.value.exit_code == 2


def test_folder_without_images_says_so(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(UserError) as info:
        open_source(SourceSettings(url=str(tmp_path)))
    assert "no images" in str(info.value)
    assert "watch" in str(info.value)
    assert info.value.exit_code == 1


class Collector:
    """Iterates a source on its own thread, handing frames over through a queue."""

    def __init__(self, source) -> None:
        self.source = source
        self.frames: queue.Queue[Frame] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for frame in self.source:
            self.frames.put(frame)

    def next(self) -> Frame:
        return self.frames.get(timeout=WAIT_S)


def test_watch_yields_new_files_and_waits_for_slow_writers(tmp_path):
    write_image(tmp_path / "img_001.jpg", (0, 0, 0))
    settings = SourceSettings(url=str(tmp_path), watch=True, watch_poll_s=0.05, watch_settle_s=0.2)
    source = open_source(settings)
    collector = Collector(source)
    try:
        assert collector.next().name == "img_001"

        # A file that appears while iterating.
        write_image(tmp_path / "img_002.jpg", (50, 50, 50))
        assert collector.next().name == "img_002"

        # A file written slowly: half of it first...
        data = gradient_jpeg()
        slow = tmp_path / "img_003.jpg"
        with open(slow, "wb") as handle:
            for start in range(0, len(data) // 2, 2048):
                handle.write(data[start : min(start + 2048, len(data) // 2)])
                handle.flush()
                time.sleep(0.02)
            time.sleep(1.0)  # several polls pass with the file incomplete
            assert collector.frames.empty(), "an incomplete file was yielded"
            # ...then the rest.
            for start in range(len(data) // 2, len(data), 2048):
                handle.write(data[start : start + 2048])
                handle.flush()
                time.sleep(0.02)
        frame = collector.next()
        assert frame.name == "img_003"
        assert frame.encoded == data
        assert np.array_equal(frame.image, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
    finally:
        source.close()
    collector.thread.join(WAIT_S)
    assert not collector.thread.is_alive()
    assert collector.frames.empty()  # each file once
    assert source.stats()["frames"] == 3


def test_close_from_another_thread_ends_a_waiting_watch(tmp_path):
    source = open_source(SourceSettings(url=str(tmp_path), watch=True, watch_poll_s=0.05))
    collector = Collector(source)
    time.sleep(0.2)
    source.close()
    collector.thread.join(WAIT_S)
    assert not collector.thread.is_alive()
    assert source.closed
