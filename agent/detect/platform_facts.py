"""What runs a model here, in words a bug report needs: runtime and version, delegate, machine, CPU.

Known answers are keyed by these facts, and a failed check names them, because wrong inference
comes from a combination (qemu's SME CPU model with LiteRT's XNNPACK; a libedgetpu built for another
TensorFlow than the runtime), not from the model alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from agent.detect.known_answers_file import Platform
from agent.detect.runtime import runtime_version

if TYPE_CHECKING:
    from agent.detect.detector import Detector

# /proc/cpuinfo "CPU part" of ARM's own cores (implementer 0x41).
ARM_PARTS = {
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1",
    "0xd0d": "Cortex-A77",
    "0xd40": "Neoverse-V1",
    "0xd41": "Cortex-A78",
    "0xd44": "Cortex-X1",
    "0xd46": "Cortex-A510",
    "0xd47": "Cortex-A710",
    "0xd49": "Neoverse-N2",
    "0xd4f": "Neoverse-V2",
}
EDGETPU_PACKAGES = ("libedgetpu1-std", "libedgetpu1-max")
# getauxval(3) keys and the arm64 bits of the vector extensions XNNPACK picks kernels by.
AT_HWCAP, AT_HWCAP2 = 16, 26
HWCAP_SVE = 1 << 22
HWCAP2_SME = 1 << 23


def _cpuinfo_value(text: str, key: str) -> str | None:
    found = re.search(rf"^{re.escape(key)}\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else None


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU as /proc/cpuinfo names it (x86 ``model name``; on ARM the core from ``CPU part`` and
    the board from ``Model``), plus SVE/SME when the CPU reports them; ``unknown CPU`` without it."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        text = ""
    parts = []
    name = _cpuinfo_value(text, "model name")
    if name:
        parts.append(name)
    part = _cpuinfo_value(text, "CPU part")
    if part:
        parts.append(ARM_PARTS.get(part.lower(), f"ARM part {part}"))
    board = _cpuinfo_value(text, "Model")
    if board:
        parts.append(board)
    parts.extend(vector_extensions())
    return ", ".join(parts) or "unknown CPU"


@cache
def vector_extensions() -> tuple[str, ...]:
    """``SVE`` / ``SME`` when this arm64 CPU (or the CPU qemu emulates) reports them in its hwcaps."""
    if platform.machine() != "aarch64":
        return ()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.getauxval.restype = ctypes.c_ulong
        hwcap, hwcap2 = int(libc.getauxval(AT_HWCAP)), int(libc.getauxval(AT_HWCAP2))
    except (OSError, AttributeError):
        return ()
    return tuple(name for name, on in (("SVE", hwcap & HWCAP_SVE), ("SME", hwcap2 & HWCAP2_SME)) if on)


def installed_deb_version(
    packages: tuple[str, ...], status: Path = Path("/var/lib/dpkg/status")
) -> str | None:
    """``package version`` of the first of ``packages`` dpkg has installed, else None."""
    try:
        text = status.read_text(errors="replace")
    except OSError:
        return None
    for block in text.split("\n\n"):
        name = _cpuinfo_value(block, "Package")
        if name in packages and "install ok installed" in (_cpuinfo_value(block, "Status") or ""):
            return f"{name} {_cpuinfo_value(block, 'Version')}"
    return None


def platform_facts(detector: Detector) -> Platform:
    """The platform ``detector`` runs on: its runtime (and version), the Edge TPU delegate when the
    model runs on it (with the installed libedgetpu package), the machine and the CPU."""
    on_tpu = bool(detector.settings.edgetpu) and detector.spec.file_info.is_edgetpu
    return Platform(
        runtime=detector.runtime,
        runtime_version=runtime_version(detector.runtime),
        delegate="edgetpu" if on_tpu else "none",
        delegate_version=installed_deb_version(EDGETPU_PACKAGES) if on_tpu else None,
        machine=platform.machine(),
        cpu=cpu_description(),
    )
