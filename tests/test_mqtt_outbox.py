"""The on-disk outbox: order, durability (including SIGKILL), bounds and their counters.

Real SQLite files in tmp; the clock is injected so age and expiry need no sleeping.
The publisher-level tests point at a loopback port where nothing listens (no broker at all).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from agent.config.mqtt import MqttSettings
from agent.detections import Detections
from agent.frames import Frame, FrameResult
from agent.mqtt.messages import Message, MessageClass
from agent.mqtt.outbox import Outbox
from agent.mqtt.publisher import MqttPublisher
from tests.helpers import wait_until
from tests.mosquitto import free_port

REPO = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def msg(klass: MessageClass, n: int, size: int = 100, expiry_s: int | None = None) -> Message:
    return Message(
        topic=f"t/{klass.label}/{n}", payload=bytes(size), klass=klass, expiry_s=expiry_s, frame_id=f"f{n}"
    )


def test_sends_alerts_first_then_in_stored_order_and_deletes_only_on_ack(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", max_bytes=10**9, max_age_s=3600)
    seqs = [box.put(msg(MessageClass.DETECTION, i)) for i in range(5)]
    alert = box.put(msg(MessageClass.ALERT, 99))
    first = box.take(3)
    assert [m.seq for m in first] == [alert, seqs[0], seqs[1]]
    second = box.take(10)
    assert [m.seq for m in second] == seqs[2:], "in-flight messages are not taken twice"
    box.ack([alert, seqs[0]])
    assert len(box) == 4 and box.inflight_count == 4
    box.close()

    reopened = Outbox(tmp_path / "o.sqlite3", max_bytes=10**9, max_age_s=3600)
    assert [m.seq for m in reopened.take(10)] == seqs[1:], "unacknowledged messages survive a restart"
    assert reopened.take(10) == []
    reopened.close()


def test_size_bound_drops_frames_then_annotations_then_detections_and_alerts_last(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", max_bytes=10_000, max_age_s=3600)
    alerts = [box.put(msg(MessageClass.ALERT, i, 1000)) for i in range(2)]
    dets = [box.put(msg(MessageClass.DETECTION, i, 1000)) for i in range(3)]
    notes = [box.put(msg(MessageClass.ANNOTATION, i, 1000)) for i in range(2)]
    frames = [box.put(msg(MessageClass.FRAME, i, 1000)) for i in range(2)]
    assert box.stats()["dropped_total"] == 0

    box.put(msg(MessageClass.DETECTION, 10, 1000))  # 10 messages of ~1 kB: over the bound
    stats = box.stats()
    assert stats["dropped"]["size"] == {"alert": 0, "detection": 0, "annotation": 0, "frame": 1}
    assert box.total_bytes <= 10_000
    remaining = {m.seq for m in box.take(100)}
    assert frames[0] not in remaining and frames[1] in remaining, "the oldest frame goes first"

    box.release()
    for i in range(4):
        box.put(msg(MessageClass.DETECTION, 20 + i, 1000))
    stats = box.stats()
    assert stats["dropped"]["size"]["frame"] == 2
    assert stats["dropped"]["size"]["annotation"] == 2
    assert stats["dropped"]["size"]["detection"] == 1
    assert stats["dropped"]["size"]["alert"] == 0
    remaining = {m.seq for m in box.take(100)}
    assert set(alerts) <= remaining and dets[0] not in remaining and set(dets[1:]) <= remaining
    assert not set(notes) & remaining
    box.close()


def test_in_flight_messages_are_never_dropped_by_the_bounds(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", max_bytes=3_000, max_age_s=3600)
    first = box.put(msg(MessageClass.FRAME, 0, 1000))
    assert [m.seq for m in box.take(1)] == [first]
    for i in range(1, 5):
        box.put(msg(MessageClass.FRAME, i, 1000))
    assert box.ack([first])[0].message.frame_id == "f0", "its PUBACK still finds it"
    box.close()


def test_age_and_expiry_drop_stale_messages_with_their_own_counters(tmp_path):
    clock = Clock()
    box = Outbox(tmp_path / "o.sqlite3", max_bytes=10**9, max_age_s=3600, clock=clock)
    box.put(msg(MessageClass.ALERT, 0))
    box.put(msg(MessageClass.FRAME, 1, expiry_s=60))
    clock.now += 61
    assert [m.message.klass for m in box.take(10)] == [MessageClass.ALERT], "an expired frame is never sent"
    box.release()
    box.enforce_bounds()
    assert box.stats()["dropped"]["expired"]["frame"] == 1

    fresh = box.put(msg(MessageClass.FRAME, 2, expiry_s=10_000))
    clock.now += 3600
    box.enforce_bounds()
    stats = box.stats()
    assert stats["dropped"]["age"]["alert"] == 1, "max age applies to every class"
    assert stats["messages"] == 1 and stats["oldest_age_s"] == 3600.0
    (item,) = box.take(1)
    assert item.seq == fresh
    assert item.remaining_expiry_s(clock.now) == 6400, "MQTT 5 expiry counts down while waiting"
    box.close()


def test_refused_messages_are_dropped_and_counted(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", max_bytes=10**9, max_age_s=3600)
    seq = box.put(msg(MessageClass.DETECTION, 0))
    box.take(1)
    assert box.refuse(seq) is not None
    assert len(box) == 0 and box.stats()["dropped"]["refused"]["detection"] == 1
    box.close()


def test_an_unreadable_outbox_file_is_set_aside_and_a_new_one_started(tmp_path, caplog):
    path = tmp_path / "o.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    (tmp_path / "o.sqlite3.files").mkdir()
    (tmp_path / "o.sqlite3.files" / "a-frame").write_bytes(b"jpeg")  # a frame its rows linked to
    box = Outbox(path, max_bytes=10**9, max_age_s=3600)
    box.put(msg(MessageClass.DETECTION, 0))
    assert len(box) == 1
    box.close()
    (aside,) = tmp_path.glob("o.sqlite3.corrupt-*[0-9]")
    assert (Path(f"{aside}.files") / "a-frame").read_bytes() == b"jpeg", "its frames are kept with it"
    assert list(box.files_dir.iterdir()) == []
    assert "unreadable" in caplog.text


WRITER = r"""
import sys
from agent.mqtt.messages import Message, MessageClass
from agent.mqtt.outbox import Outbox
box = Outbox(sys.argv[1], max_bytes=10**9, max_age_s=3600)
i = 0
while True:
    box.put(Message(topic=f"t/{i}", payload=bytes(2000), klass=MessageClass.DETECTION, frame_id=str(i)))
    print(i, flush=True)
    i += 1
"""


def test_every_stored_message_survives_sigkill(tmp_path):
    path = tmp_path / "o.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    confirmed = -1
    for line in proc.stdout:
        confirmed = int(line)
        if confirmed >= 300:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    box = Outbox(path, max_bytes=10**9, max_age_s=3600)
    ids = {int(m.message.frame_id or -1) for m in box.take(100_000)}
    assert set(range(confirmed + 1)) <= ids, "a message reported stored was lost"
    box.close()


def _result(i: int, width: int = 320) -> FrameResult:
    frame = Frame(np.full((240, width, 3), 80, np.uint8), "cam", i, time.time(), f"f{i:03d}")
    dets = Detections.create([[10, 10, 60, 60]], [0.8], [0], ["spaghetti"])
    return FrameResult(frame, dets, "m", "litert", 4.0)


def _unreachable(tmp_path: Path, **kw) -> MqttSettings:
    return MqttSettings(
        enabled=True,
        host="127.0.0.1",
        port=free_port(),
        device_id="lonely",
        reconnect_min_s=0.2,
        reconnect_max_s=0.5,
        close_timeout_s=0.5,
        outbox={"path": str(tmp_path / "outbox.sqlite3"), **kw},
    )


def test_with_no_broker_at_all_the_outbox_grows_and_stats_say_so(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="agent.mqtt.sender")  # retries repeat the problem at debug

    def attempts() -> int:
        return sum("not reachable" in r.getMessage() for r in caplog.records)

    publisher = MqttPublisher(_unreachable(tmp_path))
    publisher.start()
    for i in range(20):
        publisher.publish_detections(_result(i))
        publisher.publish_frame(_result(i))
    assert wait_until(lambda: attempts() >= 3 and publisher.stats()["outbox"]["messages"] == 60, timeout_s=30)
    stats = publisher.stats()
    publisher.close()
    assert stats["connected"] is False
    assert stats["outbox"]["messages"] == 60 and stats["outbox"]["by_class"]["frame"] == 20
    assert stats["outbox"]["bytes"] > 0 and stats["sent"] == 0
    assert "not reachable" in stats["last_error"] and "Connection refused" in stats["last_error"]
    warnings = [r for r in caplog.records if "not reachable" in r.getMessage() and r.levelname == "WARNING"]
    assert len(warnings) == 1, "the same connection problem is logged once"


def test_publisher_size_bound_drops_frames_before_detections_and_alerts(tmp_path):
    publisher = MqttPublisher(_unreachable(tmp_path, max_mb=0.2))
    for i in range(40):
        result = _result(i, width=640)
        result.frame.image[:] = np.random.default_rng(i).integers(0, 255, result.frame.image.shape, np.uint8)
        publisher.publish_detections(result)
        publisher.publish_frame(result)
    publisher.publish_alert({"level": "warn", "score": 0.9})
    stats = publisher.stats()
    publisher.close()
    dropped = stats["outbox"]["dropped"]["size"]
    assert dropped["frame"] > 0
    assert dropped["detection"] == 0 and dropped["alert"] == 0
    assert stats["outbox"]["by_class"] == {
        "alert": 1,
        "detection": 40,
        "annotation": 40 - dropped["annotation"],
        "frame": 40 - dropped["frame"],
    }
    assert stats["outbox"]["bytes"] <= 0.2 * 1024 * 1024


def _frame_file(folder: Path, n: int, size: int = 5000) -> tuple[Path, Message]:
    """A frame JPEG on disk and the frame message naming it as its payload file."""
    data = np.random.default_rng(n).integers(0, 255, size, np.uint8).tobytes()
    path = folder / f"frame{n}.jpg"
    path.write_bytes(data)
    message = Message(topic=f"t/frame/{n}", payload=data, klass=MessageClass.FRAME, payload_file=path)
    return path, message


def test_a_frame_already_on_disk_is_kept_as_a_hard_link_not_copied_into_the_database(tmp_path):
    path, message = _frame_file(tmp_path, 0, size=200_000)
    box = Outbox(tmp_path / "o.sqlite3", max_bytes=10**9, max_age_s=3600)
    seq = box.put(message)
    assert path.stat().st_nlink == 2, "the outbox holds a link to the VoTT frame file"
    box.close()
    assert (tmp_path / "o.sqlite3").stat().st_size < 100_000, "the 200 kB payload is not in SQLite"

    path.unlink()  # e.g. the harvest quota removed the frame from the project: the link still holds it
    box = Outbox(tmp_path / "o.sqlite3", max_bytes=10**9, max_age_s=3600)
    (item,) = box.take(10)
    assert item.seq == seq and item.message.payload == message.payload
    assert box.stats()["bytes"] == message.size
    box.ack([seq])
    assert list(box.files_dir.iterdir()) == [], "the link goes with the acknowledgement"
    box.close()


def test_linked_frames_leave_with_every_kind_of_drop(tmp_path):
    clock = Clock()
    box = Outbox(tmp_path / "o.sqlite3", max_bytes=12_000, max_age_s=3600, clock=clock)
    paths = []
    for i in range(3):  # 15 kB of frames against a 12 kB bound: the oldest goes
        path, message = _frame_file(tmp_path, i)
        box.put(message)
        paths.append(path)
    assert [p.stat().st_nlink for p in paths] == [1, 2, 2]
    assert box.stats()["dropped"]["size"]["frame"] == 1

    (taken, _) = box.take(2)
    assert box.refuse(taken.seq) is not None
    assert [p.stat().st_nlink for p in paths] == [1, 1, 2]
    box.release()
    clock.now += 3601
    box.enforce_bounds()
    assert box.stats()["dropped"]["age"]["frame"] == 1
    assert [p.stat().st_nlink for p in paths] == [1, 1, 1]
    assert list(box.files_dir.iterdir()) == [] and len(box) == 0
    box.close()


def test_a_linked_frame_whose_file_is_gone_or_damaged_after_a_restart_is_dropped_and_counted(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", max_bytes=10**9, max_age_s=3600)
    _, gone = _frame_file(tmp_path, 0)
    short_path, short = _frame_file(tmp_path, 1)
    zeros_path, zeros = _frame_file(tmp_path, 2)
    _, kept = _frame_file(tmp_path, 3)
    box.put_many([gone, short, zeros, kept])
    box.close()
    inode = (tmp_path / "frame0.jpg").stat().st_ino
    (link,) = [p for p in box.files_dir.iterdir() if p.stat().st_ino == inode]
    link.unlink()  # removed by hand
    # what a power cut before the data reached the disk can leave: an empty file, or one of the
    # right length full of zeros (file systems that log the size before the data)
    short_path.write_bytes(b"")
    with open(zeros_path, "r+b") as handle:
        handle.write(bytes(len(zeros.payload)))
    box = Outbox(tmp_path / "o.sqlite3", max_bytes=10**9, max_age_s=3600)
    items = box.take(10)
    assert [i.message.topic for i in items] == ["t/frame/3"], "the intact frame is still sent"
    stats = box.stats()
    assert stats["dropped"]["missing"]["frame"] == 3 and stats["messages"] == 1
    assert stats["bytes"] == kept.size
    box.close()


def test_frames_linked_by_this_process_are_sent_from_memory_up_to_a_bound(tmp_path):
    """The frames stored most recently are sent without reading their links back; beyond the
    bound the oldest are read from disk (and checked) as after a restart."""
    box = Outbox(tmp_path / "o.sqlite3", max_bytes=10**9, max_age_s=3600)
    frames = [_frame_file(tmp_path, i, size=250_000) for i in range(30)]  # 7.5 MB in all
    for _, message in frames:
        box.put(message)
    for link in box.files_dir.iterdir():  # damage every link in place: only memory has the bytes now
        with open(link, "r+b") as handle:
            handle.write(bytes(250_000))
    items = box.take(100)
    sent = [int(i.message.topic.rsplit("/", 1)[1]) for i in items]
    assert sent == list(range(30 - len(sent), 30)), "the newest frames come from memory, in order"
    assert 10 <= len(sent) < 30, "a bounded number of megabytes is held"
    assert all(i.message.payload == frames[int(i.message.topic.rsplit("/", 1)[1])][1].payload for i in items)
    assert box.stats()["dropped"]["missing"]["frame"] == 30 - len(sent), "the older ones were read and failed"
    box.close()


def test_links_left_by_a_crash_before_the_row_was_committed_are_removed_at_start(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", max_bytes=10**9, max_age_s=3600)
    path, message = _frame_file(tmp_path, 0)
    box.put(message)
    box.close()
    orphan = box.files_dir / "0123456789abcdef"
    os.link(path, orphan)
    box = Outbox(tmp_path / "o.sqlite3", max_bytes=10**9, max_age_s=3600)
    assert not orphan.exists() and len(list(box.files_dir.iterdir())) == 1
    assert box.take(1)[0].message.payload == message.payload
    box.close()


def test_a_frame_on_another_file_system_is_copied_into_the_database(tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on a file system other than the test's temporary folder")
    folder = Path(tempfile.mkdtemp(dir=shm))
    try:
        path, message = _frame_file(folder, 0)
        box = Outbox(tmp_path / "o.sqlite3", max_bytes=10**9, max_age_s=3600)
        box.put(message)
        path.unlink()
        assert list(box.files_dir.iterdir()) == []
        assert box.take(1)[0].message.payload == message.payload, "the bytes were stored instead"
        box.close()
    finally:
        shutil.rmtree(folder)


@pytest.mark.parametrize("half_done", [False, True], ids=["schema-1", "upgrade-cut-short"])
def test_an_outbox_written_before_frames_were_linked_is_upgraded_with_its_messages(tmp_path, half_done):
    path = tmp_path / "o.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE messages (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL,
            qos INTEGER NOT NULL, retain INTEGER NOT NULL, klass INTEGER NOT NULL, content_type TEXT,
            user_properties TEXT, expiry_s INTEGER, frame_id TEXT, created REAL NOT NULL, expires REAL,
            size INTEGER NOT NULL);
        INSERT INTO messages VALUES (7, 't/d', x'7b7d', 1, 0, 1, NULL, NULL, NULL, 'f7', 1.0, NULL, 5);
        PRAGMA user_version = 1;
        """
    )
    if half_done:  # a version without the frame checksums, or a crash between the two columns
        db.execute("ALTER TABLE messages ADD COLUMN payload_file TEXT")
    db.commit()
    db.close()
    box = Outbox(path, max_bytes=10**9, max_age_s=10**12)
    (item,) = box.take(10)
    assert (item.seq, item.message.payload, item.message.frame_id) == (7, b"{}", "f7")
    _, frame = _frame_file(tmp_path, 1)
    box.put(frame)
    assert len(list(box.files_dir.iterdir())) == 1, "the upgraded outbox links frames too"
    box.close()


def test_a_frames_messages_are_stored_together_or_not_at_all(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", max_bytes=10**9, max_age_s=3600)
    path, frame = _frame_file(tmp_path, 0)
    broken = Message(topic="t/a", payload=b"{}", klass=MessageClass.ANNOTATION, qos=None)  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):
        box.put_many([msg(MessageClass.DETECTION, 0), frame, broken])
    assert len(box) == 0 and box.take(10) == []
    assert path.stat().st_nlink == 1 and list(box.files_dir.iterdir()) == [], "no link is left behind"
    seqs = box.put_many([msg(MessageClass.DETECTION, 1), frame])
    assert [m.seq for m in box.take(10)] == seqs
    box.close()
