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

import pytest
from pydantic import ValidationError

from agent.errors import ConfigError
from agent.printer import (
    MoonrakerClient,
    NoPrinter,
    PrinterSettings,
    PrintStatus,
    make_printer,
    resolve_api_key,
    webcam_urls,
)
from agent.printer.watcher import next_poll_delay
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
        ("Starting", PrintStatus.PRINTING),
        ("Starting print from SD", PrintStatus.PRINTING),
        ("Resuming", PrintStatus.PRINTING),
        ("Finishing", PrintStatus.PRINTING),
        ("Pausing", PrintStatus.PAUSED),
        ("Paused", PrintStatus.PAUSED),
        # streaming a file to the printer's SD card moves no axis: not printing
        ("Starting to send file to SD", PrintStatus.IDLE),
        ("Sending file to SD", PrintStatus.IDLE),
        ("Transferring file to SD", PrintStatus.IDLE),
        ("Operational", PrintStatus.IDLE),
        ("Cancelling", PrintStatus.IDLE),
        ("Offline", PrintStatus.IDLE),
        ("Offline after error", PrintStatus.IDLE),
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


def test_octoprint_pause_sends_the_documented_command(octoprint: FakeOctoPrint, key_env: str) -> None:
    client = make_printer(octo_settings(octoprint.url, key_env))
    assert client.request_pause().accepted
    call = octoprint.calls[-1]
    assert (call.method, call.path) == ("POST", "/api/job")
    assert call.json() == {"command": "pause", "action": "pause"}
    assert call.headers["X-Api-Key"] == API_KEY
    assert call.headers["Content-Type"] == "application/json"
    assert client.get_state().status == PrintStatus.PAUSED


def test_a_refused_pause_says_why_in_one_line(octoprint: FakeOctoPrint, key_env: str) -> None:
    octoprint.state = "Operational"
    answer = make_printer(octo_settings(octoprint.url, key_env)).request_pause()
    assert not answer.accepted and answer.status == 409
    assert answer.detail == "HTTP 409 Conflict: Printer is not operational or not printing"


def test_a_pause_to_a_host_that_is_down_is_not_accepted(key_env: str) -> None:
    answer = make_printer(octo_settings(closed_port_url(), key_env)).request_pause()
    assert not answer.accepted and answer.status is None
    assert answer.detail == "connection refused"


def test_a_wrong_api_key_gives_unknown_and_says_so(
    octoprint: FakeOctoPrint, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WRONG_KEY", "nope")
    client = make_printer(octo_settings(octoprint.url, "WRONG_KEY"))
    with caplog.at_level(logging.WARNING):
        state = client.get_state()
    assert state.status == PrintStatus.UNKNOWN
    assert "403" in state.raw_state
    assert "Application Keys" in caplog.text and "printer.api_key_env" in caplog.text
    assert "nope" not in caplog.text, "the key is never logged"


def test_a_host_that_is_down_gives_unknown_and_is_logged_once(
    key_env: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_printer(octo_settings(closed_port_url(), key_env))
    with caplog.at_level(logging.INFO, logger="agent.printer"):
        states = [client.get_state() for _ in range(4)]
    assert {s.status for s in states} == {PrintStatus.UNKNOWN}
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "OctoPrint" in warnings[0].getMessage() and "connection refused" in warnings[0].getMessage()


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
    assert client.request_pause().accepted
    call = moonraker.calls[-1]
    assert (call.method, call.path) == ("POST", "/printer/print/pause")
    assert call.headers["X-Api-Key"] == API_KEY
    assert client.get_state().status == PrintStatus.PAUSED


def test_moonraker_without_klippy_gives_unknown(moonraker: FakeMoonraker) -> None:
    moonraker.klippy_ready = False
    client = MoonrakerClient(PrinterSettings(kind="moonraker", url=moonraker.url), None)
    state = client.get_state()
    assert state.status == PrintStatus.UNKNOWN
    assert state.raw_state == "HTTP 503 Service Unavailable: Klippy Host not connected"


def test_moonraker_refusal_is_one_line_without_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    host = FakeMoonraker(api_key=API_KEY)
    try:
        client = MoonrakerClient(PrinterSettings(kind="moonraker", url=host.url), None)
        with caplog.at_level(logging.WARNING):
            state = client.get_state()
        answer = client.request_pause()
    finally:
        host.close()
    assert state.raw_state == "HTTP 401 Unauthorized: Unauthorized"
    assert answer.detail == "HTTP 401 Unauthorized: Unauthorized"
    assert "Traceback" not in caplog.text and "app.py" not in caplog.text
    assert "trusted_clients" in caplog.text, "the log says how to fix it"


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
        assert not client.request_pause().accepted
    assert "no printer configured" in caplog.text


def test_polls_back_off_while_the_host_does_not_answer() -> None:
    assert [next_poll_delay(n, 5.0) for n in range(7)] == [5.0, 5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    assert next_poll_delay(3, 90.0) == 90.0, "never sooner than the poll interval"
