"""The receiver's packet guard and fair queue, on real sockets and threads (no broker needed)."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.review.guard import PacketGuard, encode_varint
from agent.review.inbox import FairInbox

LIMIT = 1000


def publish(
    topic: str, payload: bytes, *, qos: int = 1, packet_id: int = 7, v5: bool = True, props: bytes = b""
) -> bytes:
    """A PUBLISH packet as a broker sends it."""
    body = len(topic).to_bytes(2, "big") + topic.encode()
    if qos:
        body += packet_id.to_bytes(2, "big")
    if v5:
        body += encode_varint(len(props)) + props
    body += payload
    return bytes([0x30 | (qos << 1)]) + encode_varint(len(body)) + body


def _props_body(props: Properties) -> bytes:
    packed = props.pack()  # varint length + properties
    i = 0
    while packed[i] & 0x80:
        i += 1
    return packed[i + 1 :]


def run_through(stream: bytes, *, v5: bool, chunks: list[int]) -> tuple[bytes, PacketGuard]:
    """Send ``stream`` in ``chunks``-sized writes through a socketpair; read it back via the guard."""
    ours, theirs = socket.socketpair()
    guard = PacketGuard(ours, LIMIT, mqtt5=v5)

    def write() -> None:
        at = 0
        for size in chunks:
            theirs.sendall(stream[at : at + size])
            at += size
        theirs.sendall(stream[at:])
        theirs.shutdown(socket.SHUT_WR)

    writer = threading.Thread(target=write)
    writer.start()
    out = bytearray()
    while data := guard.recv(4096):
        out += data
    writer.join()
    ours.close()
    theirs.close()
    return bytes(out), guard


@pytest.mark.parametrize("v5", [True, False])
@pytest.mark.parametrize("chunking", ["whole", "bytes", "random"])
def test_small_packets_pass_and_oversized_ones_are_cut_in_any_chunking(v5, chunking):
    big = bytes(range(256)) * 40  # 10,240 bytes, over the limit
    props = _props_body(_user_property_props()) if v5 else b""
    packets = [
        publish("edge-agent/a/frames/f1", b"\xff\xd8small", v5=v5),
        publish("edge-agent/b/frames/f2", big, v5=v5, props=props, packet_id=513),
        b"\xd0\x00",  # PINGRESP passes through
        publish("edge-agent/c/annotations/f3", b"{}", qos=0, v5=v5),
        publish("edge-agent/d/frames/f4", big * 2, qos=0, v5=v5),
        publish("edge-agent/e/frames/f5", b"x" * LIMIT, v5=v5),  # remaining length just over: cut too
    ]
    stream = b"".join(packets)
    rng = np.random.default_rng(3)
    chunks = {"whole": [], "bytes": [1] * len(stream), "random": list(rng.integers(1, 300, 200))}[chunking]
    out, guard = run_through(stream, v5=v5, chunks=chunks)
    marker = guard.marker_prefix
    expected = b"".join([
        packets[0],
        publish("edge-agent/b/frames/f2", marker + str(len(big)).encode(), v5=v5, packet_id=513),
        packets[2],
        packets[3],
        publish("edge-agent/d/frames/f4", marker + str(2 * len(big)).encode(), qos=0, v5=v5),
        publish("edge-agent/e/frames/f5", marker + str(LIMIT).encode(), v5=v5),
    ])  # fmt: skip
    assert out == expected
    assert guard.oversized == 3
    assert guard.discarded_bytes >= 3 * len(big) + LIMIT


def _user_property_props() -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = ("frame_id", "f2")
    props.ContentType = "image/jpeg"
    return props


def test_the_guard_tells_paho_what_it_holds():
    ours, theirs = socket.socketpair()
    guard = PacketGuard(ours, LIMIT, mqtt5=True)
    theirs.sendall(publish("t/a/frames/x", b"y" * 10) * 3)
    assert guard.recv(5) and guard.pending() > 0, "bytes wait in the guard although the socket is drained"
    assert guard.fileno() == ours.fileno()
    ours.close()
    theirs.close()


# ---- the fair inbox ---------------------------------------------------------------------------
def test_devices_take_turns_whatever_one_device_queued():
    inbox: FairInbox[str] = FairInbox(100, 10_000)
    for i in range(20):
        assert inbox.put("flood", f"flood-{i}", 10)
    inbox.put("quiet", "quiet-0", 10)
    inbox.put("other", "other-0", 10)
    taken = []
    for _ in range(5):
        got = inbox.get(0.1)
        assert got is not None
        taken.append(got[1])
        inbox.done(got[0])
    assert taken == ["flood-0", "quiet-0", "other-0", "flood-1", "flood-2"]


def test_a_device_goes_to_one_worker_at_a_time():
    inbox: FairInbox[str] = FairInbox(100, 10_000)
    for name in ("a-0", "a-1", "b-0"):
        inbox.put(name[0], name, 10)
    assert inbox.get(0.1) == ("a", "a-0")
    assert inbox.get(0.1) == ("b", "b-0"), "a is busy with the first worker"
    assert inbox.get(0.1) is None, "a-1 waits until a-0 is done: stored in order"
    inbox.done("a")
    assert inbox.get(0.1) == ("a", "a-1")


def test_a_full_inbox_blocks_the_reader_until_the_worker_takes_one():
    inbox: FairInbox[int] = FairInbox(3, 1_000_000)
    for i in range(3):
        inbox.put("d", i, 100)
    assert inbox.put("d", 99, 100, block=False) is False
    done = threading.Event()

    def reader() -> None:
        inbox.put("d", 3, 100)  # blocks: the reader stops reading the socket here
        done.set()

    thread = threading.Thread(target=reader)
    thread.start()
    assert not done.wait(0.3)
    assert inbox.get(1.0) == ("d", 0)
    inbox.done("d")
    assert done.wait(10)
    thread.join()
    assert inbox.stats().messages == 3 and inbox.stats().peak_messages == 3 and inbox.stats().blocked_s > 0


def test_the_byte_bound_holds_and_one_large_message_still_gets_in():
    inbox: FairInbox[int] = FairInbox(100, 1000)
    assert inbox.put("a", 1, 600)
    assert inbox.put("a", 2, 500, block=False) is False, "over the byte bound"
    assert inbox.get(0.1) == ("a", 1)
    assert inbox.put("a", 2, 500, block=False) is False, "a worker still holds the first one's bytes"
    inbox.done("a")
    assert inbox.put("a", 3, 5000, block=False), "alone, a message over the bound is let in"
    assert inbox.stats().bytes == 5000


def test_closing_releases_a_blocked_reader():
    inbox: FairInbox[int] = FairInbox(1, 100)
    inbox.put("d", 1, 10)
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(inbox.put("d", 2, 10)))
    thread.start()
    inbox.close()  # before or after the reader blocks: it gets False either way
    thread.join(10)
    assert results == [False]
    assert inbox.get(0.1) == ("d", 1) and inbox.get(0.1) is None


def test_a_worker_takes_the_rest_of_its_devices_queue_and_its_bytes_count_until_done():
    inbox: FairInbox[str] = FairInbox(100, 1000)
    for name in ("a-0", "a-1", "a-2", "b-0"):
        inbox.put(name[0], name, 100)
    device, first = inbox.get(0.1) or ("", "")
    assert (device, first) == ("a", "a-0")
    assert inbox.take_more("a", 5) == ["a-1", "a-2"]
    assert inbox.take_more("b", 5) == [], "only the device the worker got"
    assert inbox.stats().messages == 1 and inbox.stats().bytes == 400
    inbox.done("a")
    assert inbox.stats().bytes == 100
