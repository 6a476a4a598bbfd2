"""scripts/install-pi.sh: shellcheck-clean, exact dry-run steps, and a real install into Debian bookworm.

The real install runs in a throwaway Debian bookworm root made with debootstrap (no Pi, no
systemd running): apt, the user, the venv and pip run inside it through chroot, exactly as the
installer does for ``--root``. Plain Debian has no python3-picamera2/python3-libcamera (Raspberry
Pi OS only), which the installer must skip with a warning.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from agent import __version__

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "install-pi.sh"
PAIRS = REPO / "agent" / "data" / "edgetpu-pairs.json"
DEBIAN_MIRROR = os.environ.get("EDGE_AGENT_DEBIAN_MIRROR", "http://deb.debian.org/debian")


def install(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def steps(output: str) -> list[str]:
    """The commands the installer printed (lines starting with '+ ')."""
    return [line[2:] for line in output.splitlines() if line.startswith("+ ")]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "cam1.yaml"
    path.write_text("# a camera config for the installer test\n")
    return path


def test_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is missing: apt-get install shellcheck")
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_help_and_usage_errors(tmp_path: Path) -> None:
    result = install("--help")
    assert result.returncode == 0
    for option in (
        "--dry-run",
        "--root DIR",
        "--no-start",
        "--config NAME|FILE",
        "--edgetpu",
        "--model NAME",
        "--accept-license",
        "--uninstall",
        "--purge",
    ):
        assert option in result.stdout
    result = install("--bogus")
    assert result.returncode == 2
    assert "unknown option: --bogus" in result.stderr
    result = install("--dry-run", "--config", "no-such-config")
    assert result.returncode == 2
    assert "no config" in result.stderr and "--config" in result.stderr
    result = install("--dry-run", "--config", "bad/na me.yaml")
    assert result.returncode == 2


def edgetpu_pair_steps(root: str, chroot: str) -> list[str]:
    """What --edgetpu runs for this machine's architecture (an empty --root cannot say its own)."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}[platform.machine()]
    pinned = json.loads(PAIRS.read_text())["pinned"]
    deb = pinned["library"]["debs"][arch]
    cached = f"/var/cache/edge-agent/{deb['url'].rsplit('/', 1)[1]}"
    return [
        f"install -d -m 0755 {root}/var/cache/edge-agent",
        f"{chroot} curl -fsSL --retry 3 -o {cached} {deb['url']}",
        f'{chroot} sh -c \'printf "%s  %s\\n" "$1" "$2" | sha256sum --check --strict --quiet -\' sh '
        f"{deb['sha256']} {cached}",
        f"{chroot} env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {cached}",
        f"{chroot} /opt/edge-agent/venv/bin/pip install --no-deps --require-hashes -r "
        "/opt/edge-agent/edgetpu-runtime.txt",
    ]


def test_dry_run_prints_the_exact_steps_and_changes_nothing(tmp_path: Path, config_file: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    result = install(
        "--dry-run",
        "--root",
        str(root),
        "--config",
        str(config_file),
        "--no-start",
        "--with-mosquitto",
        "--edgetpu",
        "--tflite-runtime",
    )
    assert result.returncode == 0, result.stderr
    r, c, src = str(root), f"chroot {root}", REPO
    expected = [
        f"{c} env DEBIAN_FRONTEND=noninteractive apt-get update",
        f"{c} env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
        "ca-certificates python3 python3-venv python3-picamera2 python3-libcamera mosquitto curl",
        f"{c} groupadd --system video",
        f"{c} groupadd --system plugdev",
        f"{c} useradd --system --user-group --home-dir /var/lib/edge-agent --no-create-home "
        "--shell /usr/sbin/nologin --comment 'edge-agent service' edge-agent",
        f"{c} usermod --append --groups video,plugdev edge-agent",
        f"install -d -m 0755 {r}/opt/edge-agent",
        f"install -d -m 0750 {r}/etc/edge-agent",
        f"{c} chown root:edge-agent /etc/edge-agent",
        f"install -d -m 0750 {r}/var/lib/edge-agent",
        f"{c} chown edge-agent:edge-agent /var/lib/edge-agent",
        f"rm -rf {r}/opt/edge-agent/src",
        f"install -d -m 0755 {r}/opt/edge-agent/src",
        *(
            f"cp -R {src}/{item} {r}/opt/edge-agent/src/"
            for item in (
                "pyproject.toml",
                "README.md",
                "LICENSE",
                "agent",
                "export",
                "configs",
                "systemd",
                "scripts",
            )
            if (src / item).exists()
        ),
        f"{c} python3 -m venv --system-site-packages /opt/edge-agent/venv",
        f"{c} /opt/edge-agent/venv/bin/pip install --upgrade '/opt/edge-agent/src[tflite-runtime]'",
        f"{c} /opt/edge-agent/venv/bin/edge-agent --version",
        *edgetpu_pair_steps(r, c),
        f"install -d -m 0755 {r}/usr/local/bin",
        f"ln -sfn /opt/edge-agent/venv/bin/edge-agent {r}/usr/local/bin/edge-agent",
        f"install -D -m 0644 {src}/systemd/65-edge-agent-coral.rules {r}/etc/udev/rules.d/65-edge-agent-coral.rules",
        f"install -m 0640 {config_file} {r}/etc/edge-agent/cam1.yaml",
        f"{c} chown root:edge-agent /etc/edge-agent/cam1.yaml",
        f"install -D -m 0644 {src}/systemd/edge-agent@.service {r}/etc/systemd/system/edge-agent@.service",
        f"install -D -m 0644 {src}/systemd/edge-agent-review.service "
        f"{r}/etc/systemd/system/edge-agent-review.service",
        f"systemctl --root={r} enable edge-agent@cam1.service",
    ]
    assert steps(result.stdout) == expected
    assert "dry run" in result.stdout
    assert "not starting edge-agent@cam1.service" in result.stdout
    assert list(root.iterdir()) == []  # nothing changed


def test_dry_run_on_this_machine_changes_nothing(config_file: Path) -> None:
    before = Path("/etc/edge-agent").exists(), Path("/opt/edge-agent").exists()
    result = install("--dry-run", "--config", str(config_file))
    assert result.returncode == 0, result.stderr
    printed = steps(result.stdout)
    assert not any(step.startswith("chroot") for step in printed)
    assert (
        "python3 -m venv --system-site-packages /opt/edge-agent/venv" in printed
        or Path("/opt/edge-agent/venv/bin/python").exists()
    )
    assert any(step.endswith("enable edge-agent@cam1.service") for step in printed)
    assert (Path("/etc/edge-agent").exists(), Path("/opt/edge-agent").exists()) == before


def _installer_env(root: Path) -> dict[str, str]:
    """pip inside the chroot trusts what this machine trusts (its CA bundle may hold a proxy's CA)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if bundle.exists():
        shutil.copy(bundle, root / "etc/edge-agent-test-ca.crt")
        env["SSL_CERT_FILE"] = env["REQUESTS_CA_BUNDLE"] = "/etc/edge-agent-test-ca.crt"
    return env


@pytest.mark.slow
def test_real_install_into_a_debootstrapped_bookworm(tmp_path: Path, config_file: Path) -> None:
    """debootstrap bookworm, install for real with --root, then check unit, udev rule, venv, user, config;
    install again (idempotent), then uninstall, uninstall again and purge."""
    if os.geteuid() != 0:
        pytest.skip("debootstrap and chroot need root")
    for tool in ("debootstrap", "chroot", "systemctl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is missing: apt-get install debootstrap systemd")
    started = time.monotonic()
    root = tmp_path / "bookworm"
    try:
        _install_and_check(root, config_file, started)
    finally:
        mounted = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        if not any(point.startswith(str(root)) for point in mounted):
            shutil.rmtree(root, ignore_errors=True)  # ~600 MB: do not leave it to pytest's tmp rotation


def _install_and_check(root: Path, config_file: Path, started: float) -> None:
    boot = subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=systemd", "bookworm", str(root), DEBIAN_MIRROR],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert boot.returncode == 0, boot.stdout[-3000:] + boot.stderr[-3000:]
    bootstrapped = time.monotonic()
    env = _installer_env(root)

    result = install("--root", str(root), "--config", str(config_file), "--no-start", env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    installed = time.monotonic()
    assert "python3-picamera2 is not in this system's apt sources" in result.stderr

    link = root / "etc/systemd/system/multi-user.target.wants/edge-agent@cam1.service"
    assert link.is_symlink()
    assert os.readlink(link) == "/etc/systemd/system/edge-agent@.service"
    rule = (root / "etc/udev/rules.d/65-edge-agent-coral.rules").read_text()
    assert '"1a6e"' in rule and '"089a"' in rule and '"18d1"' in rule and '"9302"' in rule

    version = subprocess.run(
        ["chroot", str(root), "/opt/edge-agent/venv/bin/edge-agent", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"edge-agent {__version__}"
    command = root / "usr/local/bin/edge-agent"  # on PATH, for `sudo -u edge-agent edge-agent ...`
    assert command.is_symlink()
    assert os.readlink(command) == "/opt/edge-agent/venv/bin/edge-agent"
    assert "include-system-site-packages = true" in (root / "opt/edge-agent/venv/pyvenv.cfg").read_text()

    groups = subprocess.run(
        ["chroot", str(root), "id", "-nG", "edge-agent"], capture_output=True, text=True, check=True
    )
    assert {"edge-agent", "video", "plugdev"} <= set(groups.stdout.split())
    config = root / "etc/edge-agent/cam1.yaml"
    assert config.stat().st_mode & 0o777 == 0o640
    group_line = next(
        line for line in (root / "etc/group").read_text().splitlines() if line.startswith("edge-agent:")
    )
    assert config.stat().st_gid == int(group_line.split(":")[2])

    if shutil.which("systemd-analyze"):  # the installed unit, with the real venv binary in place
        verify = subprocess.run(
            [
                "systemd-analyze",
                f"--root={root}",
                "verify",
                "--man=no",
                "--recursive-errors=no",
                "edge-agent@cam1.service",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert verify.returncode == 0 and verify.stderr == "", verify.stderr

    # Idempotent: a second run keeps the (edited) config and leaves everything working.
    config.write_text("# edited by the user\n")
    again = install("--root", str(root), "--config", str(config_file), "--no-start", env=env, timeout=900)
    assert again.returncode == 0, again.stdout[-5000:] + again.stderr[-5000:]
    assert "keeping existing /etc/edge-agent/cam1.yaml" in again.stdout
    assert config.read_text() == "# edited by the user\n"
    assert not any(step.startswith(f"chroot {root} useradd") for step in steps(again.stdout))
    assert link.is_symlink()
    assert command.is_symlink()
    reinstalled = time.monotonic()
    _uninstall_and_check(root, env)
    print(
        f"debootstrap {bootstrapped - started:.0f} s, install {installed - bootstrapped:.0f} s, "
        f"second install {reinstalled - installed:.0f} s, uninstalls {time.monotonic() - reinstalled:.0f} s"
    )


def _service_user_exists(root: Path) -> bool:
    return (
        subprocess.run(["chroot", str(root), "id", "edge-agent"], capture_output=True, check=False).returncode
        == 0
    )


def _uninstall_and_check(root: Path, env: dict[str, str]) -> None:
    """--uninstall keeps configs, data and the user; a second one changes nothing; --purge removes them."""
    models = root / "var/lib/edge-agent/models"
    models.mkdir(exist_ok=True)
    (models / "fetched.tflite").write_bytes(b"a model the user fetched")
    gone = install("--uninstall", "--root", str(root), env=env, timeout=300)
    assert gone.returncode == 0, gone.stdout[-5000:] + gone.stderr[-5000:]
    units = root / "etc/systemd/system"
    assert not (units / "multi-user.target.wants/edge-agent@cam1.service").is_symlink()
    for removed in (
        units / "edge-agent@.service",
        units / "edge-agent-review.service",
        root / "opt/edge-agent",
    ):
        assert not removed.exists(), removed
    assert not (root / "usr/local/bin/edge-agent").is_symlink()
    assert not (root / "etc/udev/rules.d/65-edge-agent-coral.rules").exists()
    assert (root / "etc/edge-agent/cam1.yaml").read_text() == "# edited by the user\n"
    assert (models / "fetched.tflite").read_bytes() == b"a model the user fetched"
    assert _service_user_exists(root)

    again = install("--uninstall", "--root", str(root), env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert steps(again.stdout) == []

    purged = install("--uninstall", "--purge", "--root", str(root), env=env, timeout=300)
    assert purged.returncode == 0, purged.stdout[-5000:] + purged.stderr[-5000:]
    assert not (root / "etc/edge-agent").exists() and not (root / "var/lib/edge-agent").exists()
    assert not _service_user_exists(root)
