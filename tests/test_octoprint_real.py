"""The agent against a real OctoPrint from PyPI and its virtual printer (tests/octoprint_server.py).

The virtual printer prints a gcode of dwells (``G4``) for ten minutes; ``edge-agent run`` watches
the bundled sample timelapse of a print turning to spaghetti, acts at frame 54 and pauses the print
through OctoPrint's REST API; OctoPrint then reports Paused. ``run --check`` says what OctoPrint says
about the key. Skipped, with the reason, when OctoPrint is not installed (scripts/test.sh installs
it into .venv-octoprint; EDGE_AGENT_OCTOPRINT names its ``octoprint`` command).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.octoprint_server import RealOctoPrint, octoprint_executable
from tests.test_printer_run import write_config as write_printer_config

KEY_ENV = "REAL_OCTOPRINT_KEY"
JOB = "benchy_real.gcode"


@pytest.fixture(scope="module")
def octoprint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealOctoPrint]:
    executable = octoprint_executable()
    if executable is None:
        pytest.skip(
            "no OctoPrint here: ./scripts/test.sh installs it into .venv-octoprint "
            "(or set EDGE_AGENT_OCTOPRINT to an `octoprint` command)"
        )
    server = RealOctoPrint(executable, tmp_path_factory.mktemp("octoprint"))
    try:
        yield server.start()
    finally:
        server.stop()


def write_config(tmp_path: Path, url: str) -> Path:
    """The printer tests' demo config, with the real OctoPrint at ``url`` and its key from the
    environment."""
    printer = {"kind": "octoprint", "url": url, "api_key_env": KEY_ENV, "poll_interval_s": 0.5}
    return write_printer_config(tmp_path, printer)


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_the_agent_pauses_a_real_octoprint_print(octoprint: RealOctoPrint, tmp_path: Path) -> None:
    octoprint.print_gcode(JOB, ["G28", *["G4 P500"] * 1200])
    try:
        config = write_config(tmp_path, octoprint.url)
        check = run_cli("run", "--config", str(config), "--check", env={KEY_ENV: octoprint.api_key})
        assert check.code == 0, check.out + check.err
        printer_line = next(line for line in check.out.splitlines() if line.startswith("printer:"))
        assert printer_line.startswith("printer: OctoPrint 1.11"), check.out
        assert printer_line.endswith("accepts the API key; the printer is Printing"), check.out

        result = run_cli("run", "--config", str(config), env={KEY_ENV: octoprint.api_key})
        assert result.code == 0, result.err
        assert f"ALERT act for print {JOB!r} (frame sample_frame_000054" in result.err
        deadline = time.monotonic() + 60
        while octoprint.job_state() != "Paused":
            assert octoprint.job_state() in ("Printing", "Pausing"), octoprint.job_state()
            assert time.monotonic() < deadline, f"OctoPrint did not pause:\n{octoprint.log_tail()}"
            time.sleep(0.2)
        state = json.loads((tmp_path / "data" / "alert-state.json").read_text())
        assert state["print_name"] == JOB
        assert state["pause_outcome"] == "landed" and state["pause_requests"] == 1
    finally:
        octoprint.request("POST", "/api/job", {"command": "cancel"})


@pytest.mark.e2e
def test_run_check_says_what_a_real_octoprint_says_about_a_wrong_key(
    octoprint: RealOctoPrint, tmp_path: Path
) -> None:
    result = run_cli(
        "run", "--config", str(write_config(tmp_path, octoprint.url)), "--check", env={KEY_ENV: "WRONG"}
    )
    assert result.code == 2
    line = result.error_line()
    assert line.startswith("printer: the API key is rejected"), line
    assert "Application Keys" in line
