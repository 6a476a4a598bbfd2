"""The systemd units and the Coral udev rule: systemd's own checker, hardening score, key settings.

`systemd-analyze verify` checks that ExecStart's binary exists, so the units are verified inside a
scratch root (``--root``) holding this machine's stock units, our units and a stand-in for
/opt/edge-agent/venv/bin/edge-agent. systemd need not be running (it is not, in a container).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SYSTEMD_DIR = REPO / "systemd"
AGENT_UNIT = "edge-agent@.service"
REVIEW_UNIT = "edge-agent-review.service"
UDEV_RULE = SYSTEMD_DIR / "65-edge-agent-coral.rules"
EXPOSURE_LIMIT = 3.0  # systemd-analyze rates <= 3.9 "OK"; we aim lower
STOCK_UNIT_DIRS = [Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")]


def read_unit(name: str) -> dict[str, list[str]]:
    """``Section.Key`` -> every value assigned (units repeat keys such as DeviceAllow)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in (SYSTEMD_DIR / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


@pytest.fixture(scope="module")
def analyze_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch root with the stock units, ours, and an executable at the ExecStart path."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is missing: apt-get install systemd")
    stock = next((d for d in STOCK_UNIT_DIRS if (d / "sysinit.target").exists()), None)
    if stock is None:
        pytest.skip("no stock systemd units (sysinit.target) on this machine: apt-get install systemd")
    root = tmp_path_factory.mktemp("analyze-root")
    shutil.copytree(stock, root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for name in (AGENT_UNIT, REVIEW_UNIT):
        shutil.copy(SYSTEMD_DIR / name, units / name)
    binary = root / "opt/edge-agent/venv/bin/edge-agent"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    return root


def analyze(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", f"--root={root}", "--no-pager", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("unit", ["edge-agent@cam1.service", REVIEW_UNIT])
def test_systemd_analyze_verify_is_clean(analyze_root: Path, unit: str) -> None:
    """No error and no warning (unknown keys and bad values are only warnings, so both count)."""
    result = analyze(analyze_root, "verify", "--man=no", "--recursive-errors=no", unit)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


def test_verify_catches_a_broken_unit(analyze_root: Path) -> None:
    """The check above really checks: a misspelt key and a bad value are reported."""
    broken = (SYSTEMD_DIR / AGENT_UNIT).read_text().replace("Restart=on-failure", "Restart=sometimes")
    (analyze_root / "etc/systemd/system/broken@.service").write_text(broken + "\nRestrat=always\n")
    result = analyze(analyze_root, "verify", "--man=no", "--recursive-errors=no", "broken@x.service")
    assert "sometimes" in result.stderr
    assert "Restrat" in result.stderr


@pytest.mark.parametrize("unit", ["edge-agent@cam1.service", REVIEW_UNIT])
def test_security_exposure_is_ok(analyze_root: Path, unit: str) -> None:
    result = analyze(analyze_root, "security", "--offline=yes", unit)
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert match, result.stdout[-2000:]
    score, rating = float(match.group(1)), match.group(2)
    print(f"systemd-analyze security --offline=yes {unit}: exposure {score} {rating}")
    assert score <= EXPOSURE_LIMIT, result.stdout
    assert rating == "OK"


def test_agent_unit_is_a_watchdogged_notify_service() -> None:
    unit = read_unit(AGENT_UNIT)
    assert unit["Service.Type"] == ["notify"]
    assert unit["Service.NotifyAccess"] == ["main"]
    assert unit["Service.WatchdogSec"] == ["60s"]
    assert unit["Service.Restart"] == ["on-failure"]
    assert unit["Service.RestartPreventExitStatus"] == ["2"]  # config errors: no restart loop
    assert unit["Unit.StartLimitBurst"] == ["5"]
    assert unit["Service.ExecStart"] == [
        "/opt/edge-agent/venv/bin/edge-agent run --config /etc/edge-agent/%i.yaml"
    ]
    assert unit["Install.WantedBy"] == ["multi-user.target"]


def test_agent_unit_allows_only_camera_and_coral_devices() -> None:
    unit = read_unit(AGENT_UNIT)
    assert unit["Service.User"] == ["edge-agent"]
    assert unit["Service.SupplementaryGroups"] == ["video plugdev"]
    assert unit["Service.DevicePolicy"] == ["closed"]
    assert sorted(unit["Service.DeviceAllow"]) == [
        "char-apex rw",  # /dev/apex_N, PCIe Coral
        "char-dma_heap rw",  # /dev/dma_heap/*, libcamera buffers
        "char-media rw",  # /dev/media*
        "char-usb_device rw",  # /dev/bus/usb/*, USB Coral
        "char-video4linux rw",  # /dev/video*, /dev/v4l-subdev*
    ]
    for key in ("ProtectSystem", "ProtectHome", "PrivateTmp", "NoNewPrivileges"):
        assert unit[f"Service.{key}"] in (["strict"], ["yes"]), key
    assert unit["Service.StateDirectory"] == ["edge-agent"]
    assert unit["Service.ReadWritePaths"] == ["/var/lib/edge-agent"]


def test_review_unit_has_no_devices() -> None:
    unit = read_unit(REVIEW_UNIT)
    assert unit["Service.PrivateDevices"] == ["yes"]
    assert unit["Service.DevicePolicy"] == ["closed"]
    assert "Service.DeviceAllow" not in unit
    assert "Service.SupplementaryGroups" not in unit
    assert unit["Service.ExecStart"] == [
        "/opt/edge-agent/venv/bin/edge-agent review --config /etc/edge-agent/review.yaml"
    ]


def test_udev_rule_gives_plugdev_both_usb_coral_ids_and_apex() -> None:
    rules = [line for line in UDEV_RULE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    ids = set()
    for rule in rules:
        assert 'GROUP="plugdev"' in rule
        found = re.search(r'ATTRS\{idVendor\}=="(\w+)", ATTRS\{idProduct\}=="(\w+)"', rule)
        if found:
            assert 'SUBSYSTEM=="usb"' in rule
            ids.add(found.groups())
    assert ids == {("1a6e", "089a"), ("18d1", "9302")}  # before and after the firmware upload
    assert any('SUBSYSTEM=="apex"' in rule for rule in rules)
