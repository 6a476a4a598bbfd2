"""Printer clients against small local HTTP servers on 127.0.0.1.

``FakeOctoPrint`` and ``FakeMoonraker`` (tests/printer_hosts.py) are stand-ins for OctoPrint and
Moonraker: real HTTP servers that answer the few endpoints the agent uses, with the JSON shapes
from the OctoPrint and Moonraker API documentation, and record every call (method, path, headers,
body) so the tests can check what the agent sent. No real printer host runs here.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from agent.alerts import AlertMonitor, run_action
from agent.config.alerts import AlertSettings
from agent.errors import ConfigError
from agent.printer import (
    MoonrakerClient,
    NoPrinter,
    OctoPrintClient,
    PrinterSettings,
    PrinterWatcher,
    PrintStatus,
    make_printer,
    resolve_api_key,
    webcam_urls,
)
from tests.printer_hosts import FakeMoonraker, FakeOctoPrint

API_KEY = "0123456789ABCDEF0123456789ABCDEF"
NOW = 1_760_000_000.0


@pytest.fixture
def octoprint() -> Iterator[FakeOctoPrint]:
    server = FakeOctoPrint(API_KEY)
    yield server
    server.close()


@pytest.fixture
def moonraker() -> Iterator[FakeMoonraker]:
    server = FakeMoonraker()
    yield server
    server.close()


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TEST_OCTOPRINT_KEY", API_KEY)
    return "TEST_OCTOPRINT_KEY"


def octo_settings(url: str, key_env: str, **kw: Any) -> PrinterSettings:
    return PrinterSettings(kind="octoprint", url=url, api_key_env=key_env, timeout_s=2, **kw)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- OctoPrint -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("Printing", PrintStatus.PRINTING),
        ("Printing from SD", PrintStatus.PRINTING),
        ("Pausing", PrintStatus.PAUSED),
        ("Paused", PrintStatus.PAUSED),
        ("Operational", PrintStatus.IDLE),
        ("Cancelling", PrintStatus.IDLE),
        ("Offline", PrintStatus.IDLE),
        ("Error", PrintStatus.IDLE),
    ],
)
def test_octoprint_job_state(octoprint: FakeOctoPrint, key_env: str, raw: str, status: PrintStatus) -> None:
    octoprint.state = raw
    client = make_printer(octo_settings(octoprint.url, key_env), clock=lambda: NOW)
    state = client.get_state()
    assert state.status == status
    assert state.raw_state == raw
    assert state.job_name == "benchy.gcode"
    assert state.elapsed_s == 754
    assert state.checked_at == NOW
    assert octoprint.calls[-1].headers["X-Api-Key"] == API_KEY


def test_octoprint_pause_sends_the_documented_command(
    octoprint: FakeOctoPrint, key_env: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_printer(octo_settings(octoprint.url, key_env))
    with caplog.at_level(logging.DEBUG):
        assert client.pause("spaghetti on the bed") is True
    call = octoprint.calls[-1]
    assert (call.method, call.path) == ("POST", "/api/job")
    assert call.json() == {"command": "pause", "action": "pause"}
    assert call.headers["X-Api-Key"] == API_KEY
    assert call.headers["Content-Type"] == "application/json"
    assert "spaghetti on the bed" in caplog.text, "the log says why the print was paused"
    assert API_KEY not in caplog.text, "the API key is never logged"
    assert client.get_state().status == PrintStatus.PAUSED


def test_octoprint_refusing_a_pause_is_not_retried(octoprint: FakeOctoPrint, key_env: str) -> None:
    octoprint.state = "Operational"
    client = make_printer(octo_settings(octoprint.url, key_env))
    assert client.pause("test") is False
    assert [c.method for c in octoprint.calls] == ["POST"]


def test_a_pause_is_retried_after_a_server_error(octoprint: FakeOctoPrint, key_env: str) -> None:
    octoprint.fail_next = [503, 500]
    slept: list[float] = []
    client = make_printer(octo_settings(octoprint.url, key_env, retry_delay_s=1.5), sleep=slept.append)
    assert client.pause("test") is True
    assert len(octoprint.calls) == 3
    assert slept == [1.5, 1.5]


def test_a_pause_gives_up_when_the_host_is_down(key_env: str) -> None:
    slept: list[float] = []
    client = make_printer(octo_settings(closed_port_url(), key_env, pause_attempts=2), sleep=slept.append)
    assert client.pause("test") is False
    assert slept == [2.0]


def test_a_wrong_api_key_gives_unknown(octoprint: FakeOctoPrint, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WRONG_KEY", "nope")
    client = make_printer(octo_settings(octoprint.url, "WRONG_KEY"))
    state = client.get_state()
    assert state.status == PrintStatus.UNKNOWN
    assert "403" in state.raw_state


def test_a_host_that_is_down_gives_unknown_and_is_logged_once(
    key_env: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_printer(octo_settings(closed_port_url(), key_env))
    with caplog.at_level(logging.INFO, logger="agent.printer"):
        states = [client.get_state() for _ in range(4)]
    assert {s.status for s in states} == {PrintStatus.UNKNOWN}
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "OctoPrint" in warnings[0].getMessage()


def test_recovery_after_errors_is_logged(
    octoprint: FakeOctoPrint, key_env: str, caplog: pytest.LogCaptureFixture
) -> None:
    octoprint.fail_next = [502, 502]
    client = make_printer(octo_settings(octoprint.url, key_env))
    with caplog.at_level(logging.INFO, logger="agent.printer"):
        statuses = [client.get_state().status for _ in range(3)]
    assert statuses == [PrintStatus.UNKNOWN, PrintStatus.UNKNOWN, PrintStatus.PRINTING]
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 1
    assert "answers again" in caplog.text


# -- Moonraker -----------------------------------------------------------------------------------


def test_moonraker_print_stats(moonraker: FakeMoonraker) -> None:
    client = make_printer(PrinterSettings(kind="moonraker", url=moonraker.url), clock=lambda: NOW)
    state = client.get_state()
    assert state.status == PrintStatus.PRINTING
    assert state.job_name == "bracket.gcode"
    assert state.elapsed_s == 1200.0
    assert state.started_at == NOW - 1500.0, "the start time comes from total_duration"
    assert state.print_id is not None and state.print_id.startswith("bracket.gcode@")
    assert "X-Api-Key" not in moonraker.calls[-1].headers
    for raw, status in [
        ("paused", PrintStatus.PAUSED),
        ("complete", PrintStatus.IDLE),
        ("cancelled", PrintStatus.IDLE),
        ("standby", PrintStatus.IDLE),
        ("error", PrintStatus.IDLE),
    ]:
        moonraker.print_stats["state"] = raw
        assert client.get_state().status == status


def test_moonraker_pause(moonraker: FakeMoonraker, tmp_path) -> None:
    key_file = tmp_path / "moonraker.key"
    key_file.write_text(API_KEY + "\n")
    client = make_printer(PrinterSettings(kind="moonraker", url=moonraker.url + "/", api_key_file=key_file))
    assert client.pause("layer shift") is True
    call = moonraker.calls[-1]
    assert (call.method, call.path) == ("POST", "/printer/print/pause")
    assert call.headers["X-Api-Key"] == API_KEY
    assert client.get_state().status == PrintStatus.PAUSED


def test_moonraker_without_klippy_gives_unknown(moonraker: FakeMoonraker) -> None:
    moonraker.klippy_ready = False
    client = MoonrakerClient(PrinterSettings(kind="moonraker", url=moonraker.url), None)
    assert client.get_state().status == PrintStatus.UNKNOWN


# -- settings, keys, webcams, watcher ------------------------------------------------------------


def test_api_key_from_env_or_file_and_clear_errors(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("MISSING_KEY", raising=False)
    with pytest.raises(ConfigError, match="MISSING_KEY"):
        resolve_api_key(PrinterSettings(kind="octoprint", url="http://x", api_key_env="MISSING_KEY"))
    with pytest.raises(ConfigError, match="cannot be read"):
        resolve_api_key(PrinterSettings(kind="octoprint", url="http://x", api_key_file=tmp_path / "none"))
    empty = tmp_path / "empty.key"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        resolve_api_key(PrinterSettings(kind="octoprint", url="http://x", api_key_file=empty))
    assert resolve_api_key(PrinterSettings(kind="moonraker", url="http://x")) is None


def test_printer_settings_validation() -> None:
    with pytest.raises(ValidationError, match=r"printer\.url"):
        PrinterSettings(kind="octoprint")
    with pytest.raises(ValidationError, match="only one"):
        PrinterSettings(kind="octoprint", url="http://x", api_key_env="A", api_key_file="k")
    with pytest.raises(ValidationError):
        PrinterSettings(kind="prusalink", url="http://x")
    settings = PrinterSettings(kind="octoprint", url="http://octopi.local", api_key_env="OCTO_KEY")
    assert API_KEY not in repr(settings)


def test_webcam_urls() -> None:
    octo = webcam_urls(PrinterSettings(kind="octoprint", url="http://octopi.local/"))
    assert octo is not None
    assert octo.stream == "http://octopi.local/webcam/?action=stream"
    assert octo.snapshot == "http://octopi.local/webcam/?action=snapshot"
    moon = webcam_urls(PrinterSettings(kind="moonraker", url="http://voron.local:7125"))
    assert moon is not None
    assert moon.stream == "http://voron.local/webcam/?action=stream", "crowsnest sits behind the web UI"
    assert moon.snapshot == "http://voron.local/webcam/?action=snapshot"
    custom = webcam_urls(
        PrinterSettings(
            kind="moonraker", url="http://[fd00::5]:7125", webcam_base_url="http://cam.local:8080"
        )
    )
    assert custom is not None and custom.stream == "http://cam.local:8080/webcam/?action=stream"
    v6 = webcam_urls(PrinterSettings(kind="moonraker", url="http://[fd00::5]:7125"))
    assert v6 is not None and v6.snapshot == "http://[fd00::5]/webcam/?action=snapshot"
    assert webcam_urls(PrinterSettings()) is None


def test_no_printer_is_always_one_untracked_print(caplog: pytest.LogCaptureFixture) -> None:
    client = make_printer(PrinterSettings())
    assert isinstance(client, NoPrinter)
    assert client.get_state().status == PrintStatus.PRINTING
    with caplog.at_level(logging.ERROR):
        assert client.pause("test") is False
    assert "no printer configured" in caplog.text


def test_watcher_polls_at_most_every_interval_and_backs_off_when_down(
    octoprint: FakeOctoPrint, key_env: str
) -> None:
    clock = [0.0]
    client = OctoPrintClient(octo_settings(octoprint.url, key_env), API_KEY)
    watcher = PrinterWatcher(client, poll_interval_s=5.0, monotonic=lambda: clock[0])
    for t in range(0, 20):
        clock[0] = float(t)
        assert watcher.state().status == PrintStatus.PRINTING
    assert len(octoprint.calls) == 4  # t = 0, 5, 10, 15

    down = PrinterWatcher(
        OctoPrintClient(octo_settings(closed_port_url(), key_env), API_KEY),
        poll_interval_s=5.0,
        monotonic=lambda: clock[0],
    )
    polls = []
    for t in range(0, 200):
        clock[0] = float(t)
        before = down._next_poll
        down.state()
        if down._next_poll != before:
            polls.append(t)
    assert polls == [0, 5, 15, 35, 75, 135, 195], "5, 10, 20, 40, then at most 60 s between tries"


# -- alerts acting through a printer ---------------------------------------------------------------


def test_alerts_pause_once_and_not_again_after_resume(octoprint: FakeOctoPrint, key_env: str) -> None:
    """A failure pauses the print through the OctoPrint stand-in; after the user resumes with the
    same scene in view there is no second pause, only when the score rises again."""
    client = make_printer(octo_settings(octoprint.url, key_env))
    monitor = AlertMonitor(AlertSettings(action="pause"))
    t = NOW

    def frames(scores: Any) -> list[str]:
        nonlocal t
        kinds = []
        for score in scores:
            for event in monitor.update_score(float(score), now=t, print_state=client.get_state()):
                kinds.append(event.kind)
                run_action(event, client)
            t += 10
        return kinds

    assert frames(np.random.default_rng(4).uniform(0, 0.1, 60)) == []
    assert frames(np.full(20, 1.5)) == ["warn", "act"]
    assert len(octoprint.pauses) == 1 and octoprint.state == "Paused"
    assert frames(np.full(10, 1.5)) == []  # paused: nothing counts
    octoprint.state = "Printing"  # the user resumes in OctoPrint
    assert frames(np.full(100, 1.5)) == ["clear"]
    assert len(octoprint.pauses) == 1
    assert frames(np.full(20, 3.5)) == ["warn", "act"]
    assert len(octoprint.pauses) == 2
