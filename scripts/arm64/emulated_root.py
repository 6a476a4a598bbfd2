"""A Debian 12 (bookworm) arm64 root on this x86_64 machine, run under qemu-user-static.

What it takes (measured facts in ../shared/arm64/NOTES.md):

- ``qemu-user-static`` and ``binfmt-support``, with the qemu-aarch64 registration enabled. Debian
  registers it with the F flag (the interpreter is opened once, at registration), so
  ``debootstrap --arch=arm64`` runs its second stage directly and nothing is copied into the root.
- A Raspberry-Pi-like ``/proc/cpuinfo`` bind-mounted over the root's: qemu 7.2 shows aarch64
  programs the host's x86 one, and LiteRT's CPU probing then crashes in ``allocate_tensors()``.
- ``QEMU_CPU=cortex-a72`` (a Pi 4) that matches that cpuinfo: qemu's default CPU model ("max") has
  SME, and LiteRT's XNNPACK int8 kernels then return wrong outputs without any error.

``EmulatedRoot.ensure()`` builds the root once under the cache folder (``debootstrap`` into a
temporary folder, renamed when complete, so an interrupted build is never reused);
``with root.mounted(): root.run([...])`` runs commands in it with /proc, /dev, the fake cpuinfo,
a pip cache on the host and any extra read-only folders mounted, and unmounts on the way out.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PI4_CPUINFO = HERE / "cpuinfo-pi4.txt"
SUITE = "bookworm"
# What the README's install needs (python3 -m venv), what install-pi.sh installs anyway (so its apt
# step is quick), and systemd for the units it enables.
ROOT_PACKAGES = ("python3", "python3-venv", "ca-certificates", "systemd", "passwd")
RECIPE = f"{SUITE} arm64 minbase {' '.join(ROOT_PACKAGES)}"
HOST_PACKAGES = {"qemu-aarch64-static": "qemu-user-static", "update-binfmts": "binfmt-support"}
BINFMT = Path("/proc/sys/fs/binfmt_misc")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CA_IN_ROOT = "/etc/edge-agent-host-ca.crt"


class RootError(RuntimeError):
    """The emulated root cannot be built or entered; the message says what to install or fix."""


def _run_host(args: Sequence[str], timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        output = (result.stdout[-2000:] + result.stderr[-2000:]).strip()
        raise RootError(f"{' '.join(args)} failed with exit {result.returncode}: {output}")
    return result


def install_host_tools() -> list[str]:
    """apt-get install qemu-user-static, binfmt-support and debootstrap where missing; returns what
    was installed (empty when everything was there)."""
    missing = [pkg for tool, pkg in HOST_PACKAGES.items() if shutil.which(tool) is None]
    if shutil.which("debootstrap") is None:
        missing.append("debootstrap")
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            check=True,
            env=env,
            capture_output=True,
        )
    return missing


def enable_binfmt() -> str:
    """Make sure the kernel runs aarch64 ELF files through qemu; returns the registration's flags."""
    if not (BINFMT / "register").exists():
        _run_host(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)])
    entry = BINFMT / "qemu-aarch64"
    if not entry.exists() or "enabled" not in entry.read_text():
        _run_host(["update-binfmts", "--enable", "qemu-aarch64"])
    text = entry.read_text() if entry.exists() else ""
    match = re.search(r"^flags: *(\S*)", text, re.MULTILINE)
    flags = match.group(1) if match else ""
    if "enabled" not in text or "F" not in flags:
        raise RootError(
            f"qemu-aarch64 is not registered with the F flag ({entry}: {text.strip() or 'absent'}); "
            "reinstall qemu-user-static and binfmt-support"
        )
    return flags


def host_debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror in this machine's apt sources (deb822 ``URIs:`` or one-line ``deb``), for
    debootstrap; deb.debian.org when none is found."""
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for file in files:
        if not file.is_file() or file.suffix not in ("", ".list", ".sources"):
            continue
        for line in file.read_text(errors="replace").splitlines():
            found = re.match(r"^\s*(?:URIs:|deb(?:\s+\[[^]]*\])?)\s+(\S+)", line)
            if found and re.search(r"/debian/?$", found.group(1)):
                return found.group(1).rstrip("/")
    return "http://deb.debian.org/debian"


@dataclass
class EmulatedRoot:
    """A bookworm arm64 root at ``cache/root``; ``qemu_cpu`` is the CPU model qemu emulates."""

    cache: Path
    mirror: str = field(default_factory=host_debian_mirror)
    qemu_cpu: str = "cortex-a72"
    read_only: dict[str, Path] = field(default_factory=dict)  # path in the root -> host folder
    _mounted: list[Path] = field(default_factory=list)

    @property
    def path(self) -> Path:
        """The root folder."""
        return self.cache / "root"

    @property
    def pip_cache(self) -> Path:
        """pip's download cache, kept on the host so reruns download nothing."""
        return self.cache / "pip-cache"

    def ensure(self, rebuild: bool = False) -> float | None:
        """Build the root unless a complete one with the same recipe is cached; returns the seconds
        debootstrap took, or None when the cached root was used."""
        marker = self.path / ".edge-agent-root"
        if not rebuild and marker.is_file() and marker.read_text() == RECIPE:
            return None
        started = time.monotonic()
        building = self.cache / "root.partial"
        for old in (building, self.path):
            if old.exists():
                self._unmount_all(old)
                shutil.rmtree(old)
        self.cache.mkdir(parents=True, exist_ok=True)
        _run_host(
            [
                "debootstrap",
                "--arch=arm64",
                "--variant=minbase",
                f"--include={','.join(ROOT_PACKAGES)}",
                SUITE,
                str(building),
                self.mirror,
            ],
            timeout=3600,
        )
        (building / ".edge-agent-root").write_text(RECIPE)
        building.rename(self.path)
        return time.monotonic() - started

    @contextlib.contextmanager
    def mounted(self) -> Iterator[EmulatedRoot]:
        """/proc, /sys, /dev, the Pi 4 cpuinfo over /proc/cpuinfo, the pip cache, the host's CA bundle
        and DNS settings, and ``read_only`` folders; all unmounted on exit."""
        root = self.path
        try:
            self._mount(["-t", "proc", "proc"], root / "proc")
            # XNNPACK's cpuinfo reads /sys/devices/system/cpu/{possible,present}; without them it
            # fails ("Error in cpuinfo") and LiteRT's int8 results differ from a Pi's.
            self._mount(["-t", "sysfs", "sysfs"], root / "sys")
            self._mount(["--rbind", "/dev"], root / "dev", make_rslave=True)
            self._mount(["--bind", str(PI4_CPUINFO)], root / "proc/cpuinfo", is_file=True)
            self.pip_cache.mkdir(parents=True, exist_ok=True)
            self._mount(["--bind", str(self.pip_cache)], root / "root/.cache/pip")
            for inside, host in self.read_only.items():
                target = root / inside.lstrip("/")
                self._mount(["--bind", str(host)], target)
                _run_host(["mount", "-o", "remount,bind,ro", str(target)])
            shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
            if HOST_CA_BUNDLE.is_file():  # the host may reach PyPI through a proxy with its own CA
                shutil.copyfile(HOST_CA_BUNDLE, root / CA_IN_ROOT.lstrip("/"))
            yield self
        finally:
            self._unmount_all(root)

    def _mount(
        self, how: list[str], target: Path, *, is_file: bool = False, make_rslave: bool = False
    ) -> None:
        if not is_file:
            target.mkdir(parents=True, exist_ok=True)
        _run_host(["mount", *how, str(target)])
        self._mounted.append(target)
        if make_rslave:
            _run_host(["mount", "--make-rslave", str(target)])

    def _unmount_all(self, root: Path) -> None:
        """Unmount everything under ``root`` (ours and leftovers of a killed run), deepest first."""
        points = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        inside = sorted({p for p in points if p == str(root) or p.startswith(f"{root}/")}, reverse=True)
        for point in inside:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        self._mounted.clear()

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a command in the root: a clean PATH, the host's CA bundle for pip,
        and ``QEMU_CPU`` (read by qemu-aarch64-static, which binfmt runs for every program)."""
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "QEMU_CPU": self.qemu_cpu,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_DEFAULT_TIMEOUT": "180",
        }
        if (self.path / CA_IN_ROOT.lstrip("/")).is_file():
            env |= {"SSL_CERT_FILE": CA_IN_ROOT, "PIP_CERT": CA_IN_ROOT, "REQUESTS_CA_BUNDLE": CA_IN_ROOT}
        return env | dict(extra or {})

    def run(
        self,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 3600,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command line in the root (``chroot ROOT /bin/sh -c``); output is captured."""
        result = subprocess.run(
            ["chroot", str(self.path), "/bin/sh", "-c", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.environment(env),
            check=False,
        )
        if check and result.returncode != 0:
            output = (result.stdout[-3000:] + result.stderr[-3000:]).strip()
            raise RootError(f"in the arm64 root: {command!r} exited {result.returncode}: {output}")
        return result
