"""scripts/install-pi.sh --uninstall, --model and --edgetpu: the exact dry-run steps and argument errors.

The uninstall runs against a made-up installed tree under a temporary --root (the files the installer
leaves: unit files, their wants links, the venv, the command link, the udev rule, /etc and /var/lib
folders); a dry run must print each removal and change nothing. The real install and uninstall of a
debootstrapped Debian root are in tests/test_installer.py (marked slow).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.test_installer import PAIRS, REPO, install, steps


def installed_tree(root: Path, instances: tuple[str, ...] = ("cam1", "garage")) -> Path:
    """What an install leaves under ROOT (files only: nothing here runs)."""
    units = root / "etc/systemd/system"
    wants = units / "multi-user.target.wants"
    wants.mkdir(parents=True)
    for unit in ("edge-agent@.service", "edge-agent-review.service"):
        (units / unit).write_text("[Unit]\n")
    for name in instances:
        (wants / f"edge-agent@{name}.service").symlink_to("/etc/systemd/system/edge-agent@.service")
    (root / "opt/edge-agent/venv/bin").mkdir(parents=True)
    (root / "opt/edge-agent/src").mkdir()
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/edge-agent").symlink_to("/opt/edge-agent/venv/bin/edge-agent")
    (root / "etc/udev/rules.d").mkdir(parents=True)
    (root / "etc/udev/rules.d/65-edge-agent-coral.rules").write_text("# rule\n")
    (root / "etc/edge-agent").mkdir()
    (root / "etc/edge-agent/cam1.yaml").write_text("# the user's config\n")
    (root / "var/lib/edge-agent/models").mkdir(parents=True)
    return root


def snapshot(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


# ---------------------------------------------------------------------------- --uninstall


def test_uninstall_dry_run_names_every_removal_keeps_data_and_changes_nothing(tmp_path: Path) -> None:
    root = installed_tree(tmp_path / "root")
    before = snapshot(root)
    result = install("--uninstall", "--dry-run", "--root", str(root))
    assert result.returncode == 0, result.stderr
    r = str(root)
    assert steps(result.stdout) == [
        f"systemctl --root={r} disable edge-agent@cam1.service",
        f"systemctl --root={r} disable edge-agent@garage.service",
        f"rm -rf {r}/etc/systemd/system/edge-agent@.service",
        f"rm -rf {r}/etc/systemd/system/edge-agent-review.service",
        f"rm -f {r}/usr/local/bin/edge-agent",
        f"rm -rf {r}/opt/edge-agent",
        f"rm -f {r}/etc/udev/rules.d/65-edge-agent-coral.rules",
    ]
    assert "kept: /etc/edge-agent /var/lib/edge-agent and the user edge-agent" in result.stdout
    assert snapshot(root) == before


def test_uninstall_purge_also_removes_configs_and_data(tmp_path: Path) -> None:
    root = installed_tree(tmp_path / "root")
    result = install("--uninstall", "--purge", "--dry-run", "--root", str(root))
    assert result.returncode == 0, result.stderr
    printed = steps(result.stdout)
    assert printed[-2:] == [f"rm -rf {root}/etc/edge-agent", f"rm -rf {root}/var/lib/edge-agent"]
    assert "kept:" not in result.stdout


def test_uninstall_removes_links_whose_unit_file_is_gone_and_leaves_a_foreign_command(tmp_path: Path) -> None:
    """A half-removed install (unit file deleted by hand, links left) and a user's own edge-agent."""
    root = installed_tree(tmp_path / "root", instances=("cam1",))
    (root / "etc/systemd/system/edge-agent@.service").unlink()
    (root / "usr/local/bin/edge-agent").unlink()
    (root / "usr/local/bin/edge-agent").write_text("#!/bin/sh\n# the user's own script\n")
    result = install("--uninstall", "--dry-run", "--root", str(root))
    assert result.returncode == 0, result.stderr
    printed = steps(result.stdout)
    assert printed[0] == f"rm -f {root}/etc/systemd/system/multi-user.target.wants/edge-agent@cam1.service"
    assert not any("usr/local/bin" in step for step in printed)


def test_uninstall_of_nothing_does_nothing(tmp_path: Path) -> None:
    """Idempotent: a second uninstall (or one on a clean system) finds nothing to remove."""
    root = tmp_path / "root"
    root.mkdir()
    result = install("--uninstall", "--root", str(root), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert steps(result.stdout) == []
    assert "kept: nothing to keep" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--uninstall", "--edgetpu", "--model", "x"),
            "--uninstall takes only --purge, --root and --dry-run",
        ),
        (("--uninstall", "--config", "garage"), "not --config"),
        (("--purge",), "--purge goes with --uninstall"),
    ],
)
def test_uninstall_argument_errors(args: tuple[str, ...], message: str) -> None:
    result = install(*args, "--dry-run")
    assert result.returncode == 2
    assert message in result.stderr and "see --help" in result.stderr


# ---------------------------------------------------------------------------- --model


@pytest.mark.parametrize("accept", [False, True])
def test_model_is_fetched_as_the_service_user_before_the_service_starts(tmp_path: Path, accept: bool) -> None:
    root = tmp_path / "root"
    root.mkdir()
    args = ["--dry-run", "--root", str(root), "--no-start", "--model", "yolov8n-coco"]
    result = install(*args, *(["--accept-license"] if accept else []))
    assert result.returncode == 0, result.stderr
    printed = steps(result.stdout)
    fetch = (
        f"chroot {root} runuser -u edge-agent -- /opt/edge-agent/venv/bin/edge-agent models fetch yolov8n-coco "
        "--dir /var/lib/edge-agent/models" + (" --accept-license" if accept else "")
    )
    assert fetch in printed
    assert printed.index(fetch) < printed.index(f"systemctl --root={root} enable edge-agent@default.service")
    assert list(root.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model",), "--model needs a model NAME"),
        (("--model", "../etc/passwd"), "model name '../etc/passwd' may hold only"),
        (("--accept-license",), "--accept-license goes with --model NAME"),
    ],
)
def test_model_argument_errors(args: tuple[str, ...], message: str) -> None:
    result = install("--dry-run", *args)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr


# ---------------------------------------------------------------------------- --edgetpu


def test_edgetpu_pins_the_runtime_with_every_wheel_hash(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    result = install("--dry-run", "--root", str(root), "--no-start", "--edgetpu")
    assert result.returncode == 0, result.stderr
    runtime = json.loads(PAIRS.read_text())["pinned"]["runtime"]
    hashes = " ".join(f"--hash=sha256:{wheel['sha256']}" for wheel in runtime["wheels"].values())
    assert (
        f"/opt/edge-agent/edgetpu-runtime.txt: tflite-runtime=={runtime['version']} {hashes}" in result.stdout
    )
    assert "Edge TPU pair: tflite-runtime==2.14.0 + libedgetpu1-std 16.0tf2.19.1-1" in result.stdout


def checkout_copy(tmp_path: Path) -> Path:
    """The parts of the checkout the installer reads, to edit the pairs file without touching the repo."""
    source = tmp_path / "checkout"
    for item in ("configs", "systemd"):
        shutil.copytree(REPO / item, source / item)
    shutil.copy(REPO / "pyproject.toml", source / "pyproject.toml")
    (source / "agent/data").mkdir(parents=True)
    shutil.copy(PAIRS, source / "agent/data/edgetpu-pairs.json")
    return source


def test_edgetpu_refuses_a_library_without_a_pinned_checksum(tmp_path: Path) -> None:
    source = checkout_copy(tmp_path)
    pairs_file = source / "agent/data/edgetpu-pairs.json"
    pairs = json.loads(pairs_file.read_text())
    for deb in pairs["pinned"]["library"]["debs"].values():
        deb["sha256"] = None
    pairs_file.write_text(json.dumps(pairs))
    root = tmp_path / "root"
    root.mkdir()
    result = install("--dry-run", "--root", str(root), "--source", str(source), "--edgetpu")
    assert result.returncode == 1
    assert "has no sha256" in result.stderr and "refusing to install an unchecked binary" in result.stderr
    assert not any("curl -fsSL" in step for step in steps(result.stdout))
