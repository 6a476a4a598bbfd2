"""The printer through the CLI: ``edge-agent run`` pauses a print that fails, ``run --check`` and
``doctor`` reach the printer before the run, and a wrong key stops the agent at start-up.

The print is the bundled sample timelapse (healthy, then spaghetti from frame 48: the bundled model
acts at frame 54). The printer host is ``FakeOctoPrint`` or ``FakeMoonraker`` (tests/printer_hosts.py),
real HTTP servers on 127.0.0.1 that can be made to answer 503 or to hang, which a real host cannot
be made to do on demand (tests/test_octoprint_real.py pauses a real OctoPrint).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REPO, CliResult, run_cli
from tests.printer_hosts import FakeMoonraker, FakeOctoPrint

API_KEY = "C0FFEE0123456789ABCDEF0123456789"
KEY_ENV = "RUN_TEST_OCTOPRINT_KEY"
ACT_FRAME = "sample_frame_000054"


@pytest.fixture
def octoprint() -> Iterator[FakeOctoPrint]:
    server = FakeOctoPrint(API_KEY, file_name="benchy.gcode")
    yield server
    server.close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def write_config(tmp_path: Path, printer: dict[str, Any]) -> Path:
    """The bundled demo config with a printer, pausing on act, MQTT off."""
    config = {
        "source": {"url": str(REPO / "agent" / "data" / "sample_timelapse"), "id": "sample"},
        "detector": {
            "model": str(REPO / "agent" / "data" / "print3d_guidance.tflite"),
            "score_threshold": 0.3,
        },
        "output": {"dir": str(tmp_path / "data"), "fsync": False},
        "alerts": {
            "enabled": True,
            "action": "pause",
            "startup_grace_samples": 5,
            "failure_labels": {"spaghetti": 1.0, "adhesion": 0.5},
        },
        "printer": {"timeout_s": 2, "poll_interval_s": 0.2, "retry_delay_s": 0.1, **printer},
        "mqtt": {"enabled": False},
    }
    path = tmp_path / "printer.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def octo(url: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "octoprint", "url": url, "api_key_env": KEY_ENV, **extra}


def run(config: Path, *args: str, key: str = API_KEY, timeout: float = 120) -> CliResult:
    return run_cli("run", "--config", str(config), *args, env={KEY_ENV: key}, timeout=timeout)


def alert_state(tmp_path: Path) -> dict[str, Any]:
    return dict(json.loads((tmp_path / "data" / "alert-state.json").read_text()))


# -- a pause that lands --------------------------------------------------------------------------


def test_a_pause_answered_503_three_times_then_204_pauses_once_and_logs_how_long(
    tmp_path: Path, octoprint: FakeOctoPrint
) -> None:
    octoprint.fail_pauses = [503, 503, 503]
    result = run(write_config(tmp_path, octo(octoprint.url)))
    assert result.code == 0, result.err
    assert f"ALERT act for print 'benchy.gcode' (frame {ACT_FRAME}" in result.err
    assert [c.status for c in octoprint.pauses] == [503, 503, 503, 204]
    assert octoprint.pauses_done == 1 and octoprint.state == "Paused"
    landed = [line for line in result.err.splitlines() if "is paused" in line]
    assert len(landed) == 1 and "after 4 pause requests" in landed[0], result.err
    state = alert_state(tmp_path)
    assert state["pause_outcome"] == "landed" and state["pause_requests"] == 4
    assert f"{state['pause_seconds']:.1f} s after the alert" in landed[0]


def test_a_pause_still_pending_at_exit_is_asked_for_once_after_the_restart(
    tmp_path: Path, octoprint: FakeOctoPrint
) -> None:
    config = write_config(tmp_path, octo(octoprint.url, timeout_s=0.5))
    octoprint.fail_pauses = [503] * 10_000  # the host refuses every pause while the first run lasts
    first = run(config)
    assert first.code == 0, first.err
    assert octoprint.pauses_done == 0 and octoprint.pauses, "the first run asked and was refused"
    assert "asked for again at the next start" in first.err
    assert alert_state(tmp_path)["pause_outcome"] == "pending"

    octoprint.fail_pauses = []
    second = run(config)  # the folder was done: no new frame, only the pending pause
    assert second.code == 0, second.err
    assert "did not see it land: asking again" in second.err
    assert octoprint.pauses_done == 1 and octoprint.state == "Paused"
    assert alert_state(tmp_path)["pause_outcome"] == "landed"
    assert "ALERT" not in second.err, "the restarted agent does not alert again for the same episode"

    asked = len(octoprint.pauses)
    third = run(config, "--from-start")  # the whole print again, same job, paused: nothing to pause
    assert third.code == 0, third.err
    assert len(octoprint.pauses) == asked, "never two pauses for one episode"


def test_a_printer_host_that_hangs_does_not_stop_the_frames(tmp_path: Path, octoprint: FakeOctoPrint) -> None:
    """Every request hangs until the test releases the host, after the agent is done: the agent can
    only finish if no frame waits for the printer (each request would wait up to 120 s)."""
    octoprint.hang_s = 600.0
    config = write_config(tmp_path, octo(octoprint.url, timeout_s=120))
    result = run(config, timeout=100)
    assert result.code == 0, result.err
    assert "processed 90 frames" in result.err
    assert all(call.status == 0 for call in octoprint.calls), "no request was answered while the agent ran"
    assert "no answer within 10 s" in result.err, "the start-up check says the host hangs"


# -- checks before the run -----------------------------------------------------------------------


def test_run_check_reaches_the_printer_with_its_key(tmp_path: Path, octoprint: FakeOctoPrint) -> None:
    config = write_config(tmp_path, octo(octoprint.url))
    good = run(config, "--check")
    assert good.code == 0, good.err
    assert (
        f"printer: OctoPrint 1.11.8 at {octoprint.url} accepts the API key; the printer is Printing"
        in good.out
    )

    wrong = run(config, "--check", key="WRONG")
    assert wrong.code == 2, wrong.err
    line = wrong.error_line()
    assert line.startswith("printer: the API key is rejected (HTTP 403 Forbidden: You don't have")
    assert "printer.api_key_env" in line and "Application Keys" in line
    assert "WRONG" not in wrong.out + wrong.err

    nobody = closed_port_url()
    down = run(write_config(tmp_path, octo(nobody)), "--check")
    assert down.code == 1
    line = down.error_line()
    assert (
        f"printer: nothing answers at {nobody} (connection refused)" in line and "check printer.url" in line
    )


def test_run_check_names_a_missing_key_and_a_wrong_url(tmp_path: Path, octoprint: FakeOctoPrint) -> None:
    missing = run_cli("run", "--config", str(write_config(tmp_path, octo(octoprint.url))), "--check")
    assert missing.code == 2
    assert (
        f"printer.api_key_env names {KEY_ENV!r} but that environment variable is not set"
        in missing.error_line()
    )

    moonraker_port = write_config(tmp_path, octo(octoprint.url + "/nothing-here"))
    wrong_url = run(moonraker_port, "--check")
    assert wrong_url.code == 2
    assert "answers, but not like OctoPrint's API (HTTP 404 Not Found" in wrong_url.error_line()


def test_moonraker_errors_are_one_readable_line(tmp_path: Path) -> None:
    host = FakeMoonraker(api_key=API_KEY)
    try:
        config = write_config(tmp_path, {"kind": "moonraker", "url": host.url})
        refused = run_cli("run", "--config", str(config), "--check")
        assert refused.code == 2
        line = refused.error_line()
        assert line.startswith("printer: Moonraker wants an API key (HTTP 401 Unauthorized: Unauthorized)")
        assert "trusted_clients" in line
        assert "Traceback" not in refused.out + refused.err

        keyed = write_config(tmp_path, {"kind": "moonraker", "url": host.url, "api_key_env": KEY_ENV})
        good = run(keyed, "--check")
        assert good.code == 0, good.err
        assert "Moonraker v0.9.3-1" in good.out and "Klipper is ready, the print is printing" in good.out
    finally:
        host.close()


def test_a_wrong_key_stops_the_agent_at_start_up(tmp_path: Path, octoprint: FakeOctoPrint) -> None:
    result = run(write_config(tmp_path, octo(octoprint.url)), key="WRONG")
    assert result.code == 2
    assert (
        result.err.strip()
        .splitlines()[-1]
        .startswith("edge-agent: error: printer: the API key is rejected (HTTP 403 Forbidden")
    ), result.err
    assert "Traceback" not in result.err
    assert "processed" not in result.err, "no frame was processed"


def test_doctor_has_a_printer_row(tmp_path: Path, octoprint: FakeOctoPrint) -> None:
    config = write_config(tmp_path, octo(octoprint.url))
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "doctor", "--config", str(config), "--json", "--invokes", "1"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, KEY_ENV: "WRONG"},
        timeout=300,
    )
    rows = {row["name"]: row for row in json.loads(proc.stdout)["checks"]}
    printer = rows["printer"]
    assert printer["status"] == "FAIL" and printer["required"]
    assert printer["detail"].startswith("the API key is rejected (HTTP 403")
    assert "Application Keys" in printer["fix"]
    assert printer["data"]["url"] == octoprint.url
