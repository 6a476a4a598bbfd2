"""Doctor's Edge TPU area: the library, the devices (USB ids, /dev/apex_N), the udev rule, plugdev
membership, and the runtime + libedgetpu pair (``agent.detect.edgetpu_probe``). Problems FAIL only
when ``detector.edgetpu`` is set; the delegate's timing is in the runtime area."""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from agent.detect.runtime import EDGETPU_LIBRARY
from agent.doctor.checks import Check, CheckFunction, DoctorContext, Status, problem

SERVICE_USER = "edge-agent"  # the user scripts/install-pi.sh creates and the systemd units run as
# Coral USB Accelerator: 1a6e:089a before its firmware is loaded, 18d1:9302 after.
CORAL_USB_IDS = {
    ("1a6e", "089a"): "USB Accelerator, firmware not loaded yet (loads on first use)",
    ("18d1", "9302"): "USB Accelerator, initialised",
}
UDEV_RULE_DIRS = ("etc/udev/rules.d", "lib/udev/rules.d", "usr/lib/udev/rules.d")


@dataclass(frozen=True)
class EdgeTpuDevice:
    """A Coral found on this machine: ``kind`` usb or pci, where it was seen, and what it is."""

    kind: str
    path: str
    description: str


def find_edgetpu_devices(root: Path = Path("/")) -> list[EdgeTpuDevice]:
    """USB Accelerators (by vendor:product in /sys/bus/usb/devices) and PCIe/M.2 Corals (/dev/apex_N)."""
    found = []
    usb = root / "sys" / "bus" / "usb" / "devices"
    for device in sorted(usb.glob("*")) if usb.is_dir() else []:
        try:
            ids = ((device / "idVendor").read_text().strip(), (device / "idProduct").read_text().strip())
        except OSError:
            continue
        if ids in CORAL_USB_IDS:
            found.append(EdgeTpuDevice("usb", str(device), f"{ids[0]}:{ids[1]} {CORAL_USB_IDS[ids]}"))
    for apex in sorted((root / "dev").glob("apex_*")):
        found.append(EdgeTpuDevice("pci", str(apex), "PCIe/M.2 Edge TPU"))
    return found


def find_udev_rules(root: Path = Path("/")) -> list[Path]:
    """udev rule files whose name mentions coral or edgetpu."""
    rules = []
    for folder in UDEV_RULE_DIRS:
        for path in sorted((root / folder).glob("*.rules")):
            if "coral" in path.name.lower() or "edgetpu" in path.name.lower():
                rules.append(path)
    return rules


def library_loads(name: str = EDGETPU_LIBRARY) -> str | None:
    """None when the shared library ``name`` loads, else why not."""
    try:
        ctypes.CDLL(name)
    except OSError as exc:
        return str(exc)
    return None


def _plugdev_members() -> tuple[list[str], str]:
    """(user names to check, who they are)."""
    if os.geteuid() != 0:
        try:
            return [pwd.getpwuid(os.geteuid()).pw_name], "this user"
        except KeyError:  # a uid without a passwd entry (containers)
            return [], f"uid {os.geteuid()}"
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return [], "root"
    return [SERVICE_USER], "the service user"


def _in_group(user: str, group: grp.struct_group) -> bool:
    if user in group.gr_mem:
        return True
    try:
        return pwd.getpwnam(user).pw_gid == group.gr_gid
    except KeyError:
        return False


@dataclass(frozen=True)
class _Wanted:
    """What the config asks of the Edge TPU: ``device`` (``detector.edgetpu``), its kind and index."""

    device: str | None

    @property
    def required(self) -> bool:
        return bool(self.device)

    @property
    def why(self) -> str:
        if self.device:
            return f"detector.edgetpu is {self.device}"
        return "not required: detector.edgetpu is not set"

    @property
    def kind(self) -> str | None:
        return self.device.split(":")[0] if self.device else None

    @property
    def index(self) -> int:
        return int(self.device.split(":")[1]) if self.device and ":" in self.device else 0


def _library_check(wanted: _Wanted, devices: list[EdgeTpuDevice]) -> Check:
    error = library_loads()
    if error is None:
        return Check("edgetpu library", Status.OK, f"{EDGETPU_LIBRARY} loads", required=wanted.required)
    if wanted.required or devices:
        return problem(
            "edgetpu library",
            wanted.required,
            f"{EDGETPU_LIBRARY} does not load ({error}); {wanted.why}",
            "install the matched pair pinned in agent/data/edgetpu-pairs.json (libedgetpu1-std built for "
            "the runtime; `sudo scripts/install-pi.sh --edgetpu` does it, docs/coral.md)",
        )
    return Check("edgetpu library", Status.SKIP, f"{EDGETPU_LIBRARY} not found; {wanted.why}")


def _device_check(wanted: _Wanted, devices: list[EdgeTpuDevice]) -> Check:
    matching = [d for d in devices if wanted.kind is None or d.kind == wanted.kind]
    listing = "; ".join(f"{d.description} ({d.path})" for d in devices)
    data = {"devices": [d.__dict__ for d in devices]}
    if wanted.required and len(matching) <= wanted.index:
        seen = f"found only: {listing}" if devices else "no USB 1a6e:089a or 18d1:9302, no /dev/apex_*"
        fix = (
            "plug the USB Accelerator into a USB 3 port (on a Pi use a powered hub if it resets) and check "
            "`lsusb` lists 1a6e:089a or 18d1:9302"
            if wanted.kind == "usb"
            else "install the gasket-dkms driver (PCIe/M.2 Coral) and reboot, then check /dev/apex_0 exists"
        )
        return problem("edgetpu device", True, f"no Coral for {wanted.device}: {seen}", fix, data)
    if devices:
        return Check("edgetpu device", Status.OK, listing, required=wanted.required, data=data)
    return Check(
        "edgetpu device", Status.SKIP, f"no Coral found (USB or /dev/apex_*); {wanted.why}", data=data
    )


def _udev_check(wanted: _Wanted, devices: list[EdgeTpuDevice], root: Path) -> Check:
    uses_usb = wanted.kind == "usb" or any(d.kind == "usb" for d in devices)
    rules = find_udev_rules(root)
    if rules:
        text = " ".join(_read_text(p) for p in rules).lower()
        missing = [f"{v}:{p}" for v, p in CORAL_USB_IDS if v not in text or p not in text]
        names = ", ".join(str(p) for p in rules)
        if missing and uses_usb:
            return problem(
                "edgetpu udev rule",
                wanted.required,
                f"{names} does not cover {', '.join(missing)} (the Coral changes its id after the first use)",
                "install systemd/65-edge-agent-coral.rules into /etc/udev/rules.d (scripts/install-pi.sh does)",
            )
        return Check("edgetpu udev rule", Status.OK, names, required=wanted.required)
    if wanted.required:
        return problem(
            "edgetpu udev rule",
            True,
            "no udev rule for the Coral (/etc/udev/rules.d/*coral* or *edgetpu*): only root can open it",
            "install systemd/65-edge-agent-coral.rules into /etc/udev/rules.d, run `udevadm control "
            "--reload-rules` and replug the Coral (scripts/install-pi.sh does this)",
        )
    return Check("edgetpu udev rule", Status.SKIP, f"none found; {wanted.why}")


def check_edgetpu(device: str | None, *, root: Path = Path("/")) -> list[Check]:
    """Library, devices, udev rule, plugdev membership; required only when ``device``
    (``detector.edgetpu``) is set. The delegate itself is tried in the runtime area."""
    wanted = _Wanted(device)
    devices = find_edgetpu_devices(root)
    return [
        _library_check(wanted, devices),
        _device_check(wanted, devices),
        _udev_check(wanted, devices, root),
        _plugdev_check(wanted.required, wanted.why),
    ]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _plugdev_check(required: bool, why: str) -> Check:
    users, who = _plugdev_members()
    try:
        group = grp.getgrnam("plugdev")
    except KeyError:
        if not required:
            return Check("plugdev group", Status.SKIP, f"no plugdev group; {why}")
        return problem(
            "plugdev group", True, "the plugdev group does not exist", "sudo groupadd --system plugdev"
        )
    if not users and who == "root":
        return Check(
            "plugdev group", Status.OK, "running as root, which can open the Coral", required=required
        )
    if not users:
        return Check("plugdev group", Status.SKIP, f"{who} has no user name to look up; {why}")
    outside = [u for u in users if not _in_group(u, group)]
    if not outside:
        return Check("plugdev group", Status.OK, f"{who} {', '.join(users)} is in plugdev", required=required)
    if not required:
        return Check("plugdev group", Status.SKIP, f"{who} {', '.join(outside)} is not in plugdev; {why}")
    return problem(
        "plugdev group",
        True,
        f"{who} {', '.join(outside)} is not in plugdev, so it cannot open the Coral",
        f"sudo usermod -aG plugdev {outside[0]} (then log in again / restart the service)",
    )


def check_edgetpu_setup(context: DoctorContext) -> list[Check]:
    """The library, device, udev rule and plugdev rows for the config's ``detector.edgetpu``."""
    return check_edgetpu(context.config.detector.edgetpu, root=context.options.root)


def check_edgetpu_pair(context: DoctorContext) -> list[Check]:
    """The installed runtime + libedgetpu pair, judged, and tried on a present Coral."""
    from agent.detect.edgetpu_probe import edgetpu_pair_checks

    return edgetpu_pair_checks(context.config.detector, root=context.options.root)


CHECKS: list[CheckFunction] = [check_edgetpu_setup, check_edgetpu_pair]
