"""sd_notify client and watchdog, against a real AF_UNIX datagram listener as systemd would run one."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import sdnotify

WAIT_S = 20.0  # generous: the machine is noisy; no assertion depends on timing


class Listener:
    """A NOTIFY_SOCKET listener: collects the datagrams a service sends to systemd."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(WAIT_S)

    def receive(self) -> dict[str, str]:
        """The next datagram as KEY -> VALUE; fails the test when none comes within WAIT_S."""
        data = self.sock.recv(4096).decode("utf-8")
        assert data.endswith("\n")
        return dict(line.split("=", 1) for line in data.splitlines())

    def nothing_pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096)
        except BlockingIOError:
            return True
        finally:
            self.sock.settimeout(WAIT_S)
        return False


@pytest.fixture
def listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    """A listener on a socket path (short: sun_path holds 108 bytes), exported as NOTIFY_SOCKET."""
    folder = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")
    path = os.path.join(folder, "notify")
    lst = Listener(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield lst
    lst.sock.close()
    os.unlink(path)
    os.rmdir(folder)


def test_notify_is_a_no_op_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify(ready=True, status="x") is False
    watchdog = sdnotify.Watchdog(lambda: "idle", interval_s=0.01).start()
    assert watchdog._thread is None  # nothing to talk to: no thread
    watchdog.stop()


def test_ready_status_and_stopping_arrive_as_one_datagram_each(listener: Listener) -> None:
    assert sdnotify.notify(ready=True, status="running: 3.2 fps\noutbox 0")
    assert listener.receive() == {"READY": "1", "STATUS": "running: 3.2 fps outbox 0"}
    assert sdnotify.notify(stopping=True, status="stopping")
    assert listener.receive() == {"STOPPING": "1", "STATUS": "stopping"}
    assert sdnotify.notify() is False  # nothing to say: nothing sent
    assert listener.nothing_pending()


def test_abstract_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"edge-agent-test-{uuid.uuid4().hex}"
    lst = Listener("\0" + name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify(watchdog=True)
        assert lst.receive() == {"WATCHDOG": "1"}
    finally:
        lst.sock.close()


def test_send_failure_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    with caplog.at_level(logging.WARNING, logger="agent.sdnotify"):
        assert sdnotify.notify(ready=True) is False
    assert "could not notify systemd" in caplog.text
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path")
    assert sdnotify.notify(ready=True) is False


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sdnotify.watchdog_interval_s() is None
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    assert sdnotify.watchdog_timeout_s() == 60.0
    assert sdnotify.watchdog_interval_s() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval_s() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert sdnotify.watchdog_interval_s() is None
    monkeypatch.delenv("WATCHDOG_PID")
    monkeypatch.setenv("WATCHDOG_USEC", "garbage")
    assert sdnotify.watchdog_interval_s() is None


def _beat_until(watchdog: sdnotify.Watchdog, stop: threading.Event) -> None:
    while not stop.is_set():
        watchdog.beat()
        time.sleep(0.01)


def test_watchdog_pings_only_while_the_pipeline_advances(
    listener: Listener, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """READY, then regular WATCHDOG=1 while frames complete; a hang stops them; progress resumes them."""
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # WatchdogSec=0.2s: a tick every 0.1 s

    def status() -> str:
        return "running: 4.0 fps, outbox 0"

    sdnotify.notify(ready=True, status="starting")
    assert listener.receive()["READY"] == "1"

    watchdog = sdnotify.Watchdog(status)
    stop_beats = threading.Event()
    beater = threading.Thread(target=_beat_until, args=(watchdog, stop_beats))
    with caplog.at_level(logging.INFO, logger="agent.sdnotify"), watchdog:
        beater.start()
        pings = 0
        while pings < 3:  # regular pings while frames complete, each with the status line
            message = listener.receive()
            assert message["STATUS"] == "running: 4.0 fps, outbox 0"
            pings += message.get("WATCHDOG") == "1"

        stop_beats.set()  # the "detector" hangs: no more beats
        beater.join()
        while listener.receive().get("WATCHDOG") == "1":
            pass  # at most the tick that saw the last beats still pings
        for _ in range(5):  # from then on every tick sends STATUS without WATCHDOG
            message = listener.receive()
            assert "WATCHDOG" not in message
            assert message["STATUS"] == "running: 4.0 fps, outbox 0"
        assert watchdog.pings_withheld >= 6

        watchdog.beat()  # progress again: the next tick pings
        while "WATCHDOG" not in listener.receive():
            pass
    assert "withholding the watchdog ping" in caplog.text
    assert "pings resumed" in caplog.text
    assert watchdog._thread is None


def test_status_callback_error_does_not_stop_pings(
    listener: Listener, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> str:
        raise RuntimeError("boom")

    watchdog = sdnotify.Watchdog(broken)
    watchdog.beat()
    with caplog.at_level(logging.ERROR, logger="agent.sdnotify"):
        assert watchdog.tick() is True
    assert listener.receive() == {"WATCHDOG": "1"}
    assert "status callback for systemd failed" in caplog.text
    assert watchdog.tick() is False  # no beat since: no ping, and no status: nothing sent
    assert listener.nothing_pending()


def test_status_only_without_watchdog_usec(listener: Listener) -> None:
    """Type=notify without WatchdogSec: the thread still keeps STATUS fresh but never pings."""
    with sdnotify.Watchdog(lambda: "3.0 fps, outbox 2", status_interval_s=0.05) as watchdog:
        watchdog.beat()
        assert listener.receive() == {"STATUS": "3.0 fps, outbox 2"}
        assert listener.receive() == {"STATUS": "3.0 fps, outbox 2"}
    assert watchdog.pings_sent == 0
