"""The receiver's spool (agent/review/spool.py) on real files: order per device, a restart picks up
what was left, the byte bound, and a file cut short by a crash is skipped and counted."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agent.errors import UserError
from agent.review.inbox import FairInbox
from agent.review.spool import Spool, open_spool, spool_stats


def noop() -> None:
    pass


def drain(spool: Spool, device: str) -> list[bytes]:
    payloads = []
    while (message := spool.take(device)) is not None:
        payloads.append(message.payload)
        spool.remove(device, message.seq)
    return payloads


def test_messages_come_back_in_order_per_device_and_the_spool_empties(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 10_000_000, fsync=True)
    for i in range(12):
        assert spool.put("cam-a", f"edge-agent/cam-a/frames/f{i}", b"a%d" % i, block=False, then=noop)
    assert spool.put("cam-b", "edge-agent/cam-b/annotations/x", b"\n{json}\n", block=False, then=noop)
    assert spool.holds("cam-a") and not spool.holds("cam-c")
    assert spool.pending() == {"cam-a": 12, "cam-b": 1}
    first = spool.take("cam-a")
    assert first is not None and first.topic == "edge-agent/cam-a/frames/f0" and first.payload == b"a0"
    assert spool.holds("cam-a") and spool.stats().messages == 13  # taken, not yet removed
    spool.remove("cam-a", first.seq)
    assert drain(spool, "cam-a") == [b"a%d" % i for i in range(1, 12)]
    assert drain(spool, "cam-b") == [b"\n{json}\n"]
    stats = spool.stats()
    assert (stats.messages, stats.bytes, stats.devices, stats.spooled_total) == (0, 0, 0, 13)
    assert not spool.holds("cam-a") and list((tmp_path / "spool").rglob("*.msg")) == []


def test_a_restarted_spool_serves_what_was_left_including_taken_but_not_removed(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 10_000_000, fsync=False)
    for i in range(5):
        spool.put("cam-a", f"t/cam-a/frames/f{i}", b"p%d" % i, block=False, then=noop)
    taken = spool.take("cam-a")  # a worker had it when the receiver was killed
    done = spool.take("cam-a")
    assert taken is not None and done is not None
    spool.remove("cam-a", done.seq)  # stored before the kill
    (tmp_path / "spool" / "cam-a" / ".000000000009.msg.99999999-0.tmp").write_bytes(b"half")

    again = Spool(tmp_path / "spool", 10_000_000, fsync=False)
    assert again.pending() == {"cam-a": 4}
    assert drain(again, "cam-a") == [b"p0", b"p2", b"p3", b"p4"]  # the gap of p1 skipped
    assert list((tmp_path / "spool").rglob("*")) == [tmp_path / "spool" / "cam-a"]
    again.put("cam-a", "t/cam-a/frames/g", b"new", block=False, then=noop)
    assert drain(again, "cam-a") == [b"new"]


def test_the_byte_bound_refuses_or_waits_for_room(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 300, fsync=False)
    assert spool.put("cam-a", "t/cam-a/frames/f0", bytes(200), block=False, then=noop)
    assert not spool.put("cam-a", "t/cam-a/frames/f1", bytes(200), block=False, then=noop)
    assert spool.stats().messages == 1 and spool.stats().bytes <= 300

    result: list[bool] = []
    waiter = threading.Thread(
        target=lambda: result.append(
            spool.put("cam-a", "t/cam-a/frames/f1", bytes(200), block=True, then=noop)
        )
    )
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive(), "a blocking put waits while the spool is full"
    assert drain(spool, "cam-a")[:1] == [bytes(200)]
    waiter.join(10)
    assert result == [True] and drain(spool, "cam-a") == [bytes(200)]

    spool.put("cam-a", "t/cam-a/frames/f2", bytes(200), block=False, then=noop)
    closing = threading.Thread(
        target=lambda: result.append(
            spool.put("cam-a", "t/cam-a/frames/f3", bytes(200), block=True, then=noop)
        )
    )
    closing.start()
    spool.close()
    closing.join(10)
    assert result == [True, False], "close() wakes a waiting put, which refuses"


def test_with_fsync_a_message_is_acknowledged_after_a_flush_by_the_spools_thread(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 10_000_000, fsync=True)
    acked = threading.Event()
    threads: list[str] = []

    def ack() -> None:
        threads.append(threading.current_thread().name)
        acked.set()

    assert spool.put("cam-a", "t/cam-a/frames/f0", b"x", block=False, then=ack)
    assert acked.wait(10) and threads == ["review-spool-sync"] and spool.syncs >= 1
    spool.close()


@pytest.mark.parametrize("cut", [0, 5, 20, -1])
def test_a_file_cut_short_is_skipped_and_counted(tmp_path: Path, cut: int) -> None:
    spool = Spool(tmp_path / "spool", 10_000_000, fsync=False)
    for i in range(3):
        spool.put("cam-a", f"t/cam-a/frames/f{i}", b"payload-%d" % i, block=False, then=noop)
    path = tmp_path / "spool" / "cam-a" / "000000000001.msg"
    path.write_bytes(path.read_bytes()[:cut])

    again = Spool(tmp_path / "spool", 10_000_000, fsync=False)
    got = []
    while again.pending():
        message = again.take("cam-a")
        if message is not None:
            got.append(message.payload)
            again.remove("cam-a", message.seq)
    assert got == [b"payload-0", b"payload-2"]
    assert again.stats().corrupt == 1 and again.stats().messages == 0 and again.stats().bytes == 0
    assert not path.exists()


def test_open_spool_names_the_folder_per_client_and_zero_disables_it(tmp_path: Path) -> None:
    assert open_spool(tmp_path, "rx", 0, fsync=False) is None
    assert spool_stats(None) == {"messages": 0, "bytes": 0, "devices": 0, "spooled_total": 0, "corrupt": 0}
    spool = open_spool(tmp_path, "edge agent/../x", 1000, fsync=False)
    assert spool is not None and spool.folder.parent == tmp_path / "spool"
    assert spool.folder.name not in ("..", ".") and "/" not in spool.folder.name
    (tmp_path / "blocked").write_text("a file where the spool folder would go")
    with pytest.raises(UserError, match="cannot open the spool"):
        open_spool(tmp_path / "blocked", "rx", 1000, fsync=False)


def test_the_inbox_serves_spooled_turns_after_queued_messages_round_robin() -> None:
    inbox: FairInbox[str] = FairInbox(4, 10_000)
    inbox.put("a", "a0", 1)
    inbox.put("a", "a1", 1)
    inbox.add_spooled("a", 2)
    inbox.put("b", "b0", 1)
    inbox.add_spooled("c")
    assert inbox.holds_fair_share("a") and not inbox.holds_fair_share("b")
    by_bytes: FairInbox[str] = FairInbox(100, 1000)
    by_bytes.put("a", "big", 600)
    by_bytes.put("b", "small", 10)
    assert by_bytes.holds_fair_share("a") and not by_bytes.holds_fair_share("b"), "a share of bytes too"
    alone: FairInbox[str] = FairInbox(100, 1000)
    alone.put("a", "a0", 400)
    assert alone.get(timeout_s=0) == ("a", "a0")  # a worker holds it: its bytes still count
    alone.put("a", "a1", 400)
    assert not alone.put("a", "a2", 400, block=False) and alone.holds_fair_share("a")
    turns = []
    while (got := inbox.get(timeout_s=0)) is not None:
        turns.append(got)
        inbox.done(got[0])
    assert turns == [("a", "a0"), ("b", "b0"), ("c", None), ("a", "a1"), ("a", None), ("a", None)]


def test_take_spooled_gives_a_worker_more_of_its_devices_spooled_turns() -> None:
    inbox: FairInbox[str] = FairInbox(4, 10_000)
    inbox.add_spooled("a", 3)
    inbox.add_spooled("b", 1)
    assert inbox.get(timeout_s=0) == ("a", None)
    assert not inbox.take_spooled("b"), "only the device the worker has"
    assert inbox.take_spooled("a") and inbox.take_spooled("a") and not inbox.take_spooled("a")
    inbox.done("a")
    assert inbox.get(timeout_s=0) == ("b", None)
    inbox.done("b")
    assert inbox.get(timeout_s=0) is None and inbox.stats().devices == 0


def test_a_message_that_cannot_be_read_now_stays_the_next_one(tmp_path: Path) -> None:
    """A spooled message was acknowledged when it was written: a read that fails now (here: its
    path is a folder, as an EIO or EMFILE would fail) must leave it for a later turn, not delete it."""
    spool = Spool(tmp_path / "spool", 10_000_000, fsync=False)
    for i in range(2):
        spool.put("cam-a", f"t/cam-a/frames/f{i}", b"p%d" % i, block=False, then=noop)
    path = tmp_path / "spool" / "cam-a" / "000000000000.msg"
    saved = path.read_bytes()
    path.unlink()
    path.mkdir()
    with pytest.raises(OSError):
        spool.take("cam-a")
    assert spool.pending() == {"cam-a": 2} and spool.stats().corrupt == 0
    path.rmdir()
    path.write_bytes(saved)
    assert drain(spool, "cam-a") == [b"p0", b"p1"]


def test_a_message_larger_than_the_whole_spool_is_refused_at_once_even_when_blocking(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 1000, fsync=False)
    assert spool.put("cam-a", "t/cam-a/frames/small", b"x" * 100, block=False, then=noop)
    assert not spool.put("cam-a", "t/cam-a/frames/big", b"x" * 2000, block=True, then=noop)
    assert drain(spool, "cam-a") == [b"x" * 100]


def test_an_acknowledgement_that_fails_does_not_stop_the_others(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 10_000_000, fsync=True)
    acked: list[int] = []
    done = threading.Event()

    def failing() -> None:
        raise RuntimeError("paho said no")

    def ack(n: int) -> None:
        acked.append(n)
        if len(acked) == 2:
            done.set()

    spool.put("cam-a", "t/cam-a/frames/f0", b"0", block=False, then=failing)
    spool.put("cam-a", "t/cam-a/frames/f1", b"1", block=False, then=lambda: ack(1))
    spool.put("cam-a", "t/cam-a/frames/f2", b"2", block=False, then=lambda: ack(2))
    assert done.wait(10.0), acked
    assert sorted(acked) == [1, 2]
    spool.close()


def test_a_spool_smaller_than_two_frames_is_a_config_error() -> None:
    from pydantic import ValidationError

    from agent.config.review import ReviewSettings

    with pytest.raises(ValidationError, match="spool_max_mb"):
        ReviewSettings(spool_max_mb=5, max_jpeg_mb=8)
    assert ReviewSettings(spool_max_mb=0, max_jpeg_mb=8).spool_max_bytes == 0
