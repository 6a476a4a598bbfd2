"""``edge-agent run --check`` opens what ``run`` opens at start-up, and each mistake is one line.

Through the CLI in a fresh process, as a user runs it: real config files, a real model, real
folders. The read-only output folder is made read-only for an unprivileged user (``setpriv`` to
``nobody`` when the tests run as root, whom no mode bit stops).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, CliResult, run_cli
from tests.test_run import make_frames, write_config


def error_line(result: CliResult) -> str:
    """The one line the user sees (log lines aside); fails when there is not exactly one."""
    errors = [line for line in result.err.splitlines() if line.startswith("edge-agent: error:")]
    assert len(errors) == 1 and "Traceback" not in result.err, result.err
    return errors[0].removeprefix("edge-agent: error: ")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    make_frames(tmp_path / "frames", 2)
    return tmp_path


def test_a_good_config_opens_everything_and_says_what(folder: Path) -> None:
    result = run_cli("run", "--config", str(write_config(folder, folder / "frames")), "--check")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == [
        "secrets", "TLS files", "output folders", "model", "known answer", "alerts", "printer", "source"
    ]  # fmt: skip
    assert lines[-1] == f"{folder / 'agent.yaml'}: ok"
    assert not (folder / "data").exists(), "--check creates nothing"


@pytest.mark.parametrize(
    ("sections", "code", "starts"),
    [
        ({"detector": {"model": "/nonexistent/model.tflite"}}, 2, "model file /nonexistent/model.tflite"),
        ({"source": {"url": "/nonexistent/frames"}}, 2, "source.url '/nonexistent/frames'"),
        (
            {"mqtt": {"enabled": True, "username": "a", "password_file": "/nonexistent/pw"}},
            2,
            "mqtt.password_file '/nonexistent/pw' cannot be read",
        ),
        (
            {"mqtt": {"enabled": True, "username": "a", "password_env": "EDGE_AGENT_TEST_UNSET"}},
            2,
            "mqtt.password_env names the environment variable 'EDGE_AGENT_TEST_UNSET', which is not set",
        ),
        (
            {
                "source": {
                    "url": "http://127.0.0.1:9/snapshot.jpg",
                    "password_env": "EDGE_AGENT_TEST_UNSET",
                    "username": "a",
                }
            },
            2,
            "source.password_env names the environment variable EDGE_AGENT_TEST_UNSET",
        ),
        (
            {
                "printer": {
                    "kind": "octoprint",
                    "url": "http://octopi.local",
                    "api_key_file": "/nonexistent/k",
                }
            },
            2,
            "printer.api_key_file '/nonexistent/k' cannot be read",
        ),
        (
            {"mqtt": {"enabled": True, "ca_file": "/nonexistent/ca.pem"}},
            2,
            "mqtt.ca_file '/nonexistent/ca.pem'",
        ),
    ],
)
def test_each_start_up_mistake_is_one_line_naming_the_key(
    folder: Path, sections: dict[str, Any], code: int, starts: str
) -> None:
    config = write_config(folder, folder / "frames", **sections)
    env = {k: v for k, v in os.environ.items() if k != "EDGE_AGENT_TEST_UNSET"}
    result = run_cli("run", "--config", str(config), "--check", env=env)
    assert result.code == code, result.err
    assert error_line(result).startswith(starts)


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder an unprivileged user can read (pytest's own temp folders are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="edge-agent-ro-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    for path in (folder, *folder.rglob("*")):
        if path.is_dir():
            path.chmod(0o755)
    shutil.rmtree(folder)


def run_unprivileged(*args: str) -> CliResult:
    """``edge-agent ARGS`` as a user without root's override of file modes."""
    command = [sys.executable, "-m", "agent.cli", *args]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: no way to be an unprivileged user")
        command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    if "ModuleNotFoundError" in proc.stderr or "Permission denied: '" + sys.executable in proc.stderr:
        pytest.skip(f"the unprivileged user cannot run this checkout: {proc.stderr.strip()[-200:]}")
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def test_a_read_only_output_folder_stops_check_and_run_with_one_line(shared_folder: Path) -> None:
    make_frames(shared_folder / "frames", 2)
    read_only = shared_folder / "read-only"
    read_only.mkdir()
    config = write_config(shared_folder, shared_folder / "frames", output={"dir": str(read_only / "data")})
    for path in (shared_folder, *shared_folder.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    read_only.chmod(0o555)
    expected = f"output.dir: cannot write in {read_only}: Permission denied"
    check = run_unprivileged("run", "--config", str(config), "--check")
    assert check.code == 1, check.err
    assert error_line(check).startswith(expected)
    run = run_unprivileged("run", "--config", str(config))
    assert run.code == 1, run.err
    assert error_line(run).startswith(expected)


# ---------------------------------------------------------------------------- trying your own model


def test_my_model_on_my_images_runs_with_the_default_configs_alerts_off(
    shared_dir: Path, tmp_path: Path
) -> None:
    model = shared_dir / "models" / "yolov8n_full_integer_quant_u8.3.172.tflite"
    images = shared_dir / "models" / "images"
    result = run_cli("run", "--model", str(model), "--source", str(images), "--no-mqtt", cwd=tmp_path)
    assert result.code == 0, result.err
    assert "alerts off: " in result.err
    assert f"processed {len(list(images.iterdir()))} frames" in result.err
    assert not (tmp_path / "edge-agent-data" / "alert-state.json").exists()


def test_no_alerts_turns_off_the_alerts_a_config_asks_for(folder: Path) -> None:
    mismatch = {"alerts": {"failure_labels": {"spaghetti": 1.0}}}
    config = write_config(folder, folder / "frames", **mismatch)
    refused = run_cli("run", "--config", str(config), "--check")
    assert refused.code == 2  # the user's own config asked for alerts: the mismatch is theirs to fix
    assert error_line(refused).startswith(
        "alerts.failure_labels ['spaghetti'] names none of the model's labels"
    )
    result = run_cli("run", "--config", str(config), "--check", "--no-alerts")
    assert result.code == 0, result.err
    assert "alerts: off" in result.out
