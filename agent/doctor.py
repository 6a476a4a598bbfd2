"""``edge-agent doctor``: check that this machine can run a config, and say how to fix what cannot.

``run_checks(config, options)`` returns one ``Check`` per thing looked at, in this order: the config,
Python and packages, the Edge TPU (library, devices, udev rule, plugdev, delegate), the source (opens
and yields a frame), the model (loads as a detector) with an invoke timing on every installed runtime
and thread count and the fastest combination, the broker (accepts our connection), disk space against
the harvest quota, and the output folders and outbox (writable).

A check is ``OK``, ``WARN`` (works, but worth a look), ``FAIL`` (the agent cannot work like this) or
``SKIP`` (not used by this config). ``FAIL`` is kept for what the config needs: a missing Coral is a
``FAIL`` only when ``detector.edgetpu`` is set. ``exit_code(checks)`` is 1 when anything failed.
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import importlib
import importlib.metadata
import os
import platform
import pwd
import re
import shutil
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.config import AgentConfig
from agent.config.mqtt import MqttSettings
from agent.detect.edgetpu_probe import edgetpu_pair_checks
from agent.detect.model import ModelSpec, resolve_model
from agent.detect.runtime import (
    EDGETPU_LIBRARY,
    RUNTIME_PREFERENCE,
    installed_runtimes,
    make_interpreter,
)
from agent.errors import UserError
from agent.frames import Frame
from agent.printer.check import check_printer

MB = 1024 * 1024
SERVICE_USER = "edge-agent"  # the user scripts/install-pi.sh creates and the systemd units run as
PIP_NAMES = {
    "ai_edge_litert": "ai-edge-litert",
    "tflite_runtime": "tflite-runtime",
    "tensorflow": "tensorflow",
}
# Coral USB Accelerator: 1a6e:089a before its firmware is loaded, 18d1:9302 after.
CORAL_USB_IDS = {
    ("1a6e", "089a"): "USB Accelerator, firmware not loaded yet (loads on first use)",
    ("18d1", "9302"): "USB Accelerator, initialised",
}
UDEV_RULE_DIRS = ("etc/udev/rules.d", "lib/udev/rules.d", "usr/lib/udev/rules.d")


class Status(StrEnum):
    """How a check came out."""

    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass
class Check:
    """One line of the doctor's table. ``fix`` says what to do (empty when nothing); ``data`` holds
    machine-readable facts for ``--json`` (timings in ms, sizes in MB)."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    required: bool = False
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The check as a JSON-ready dict."""
        return {
            "name": self.name,
            "status": str(self.status),
            "required": self.required,
            "detail": self.detail,
            "fix": self.fix,
            "data": self.data,
        }


def problem(
    name: str, required: bool, detail: str, fix: str = "", data: dict[str, Any] | None = None
) -> Check:
    """A check that found a problem: ``FAIL`` when the config needs the thing, else ``WARN``."""
    return Check(name, Status.FAIL if required else Status.WARN, detail, fix, required, data or {})


@dataclass(frozen=True)
class DoctorOptions:
    """How hard to look: ``invokes`` timed per runtime and thread count, ``timeout_s`` for the source's
    first frame and the broker's answer, ``model`` to time instead of ``detector.model``, ``root`` the
    file system root where /sys, /dev and /etc are read (tests point it at a fake tree)."""

    invokes: int = 20
    timeout_s: float = 20.0
    model: str | None = None
    thread_counts: tuple[int, ...] | None = None  # None: 1 .. cpu_count
    root: Path = Path("/")


def exit_code(checks: Iterable[Check]) -> int:
    """1 when any check failed, else 0."""
    return 1 if any(c.status == Status.FAIL for c in checks) else 0


def run_checks(
    config: AgentConfig,
    options: DoctorOptions | None = None,
    *,
    config_name: str = "config",
    on_check: Callable[[Check], None] | None = None,
) -> list[Check]:
    """Run every check for ``config``; ``on_check`` sees each one as soon as it is done."""
    options = options or DoctorOptions()
    checks: list[Check] = []

    def add(found: Iterable[Check]) -> None:
        for check in found:
            checks.append(check)
            if on_check is not None:
                on_check(check)

    add([Check("config", Status.OK, f"{config_name} is valid")])
    add(check_python_and_packages(config))
    add(check_edgetpu(config.detector.edgetpu, root=options.root))
    add(edgetpu_pair_checks(config.detector, root=options.root))
    source_check, frame = check_source(config, options.timeout_s)
    add([source_check])
    add(check_model(config, options, frame))
    add([check_broker(config.mqtt, options.timeout_s)])
    printer = check_printer(config.printer, min(options.timeout_s, config.printer.timeout_s))
    add(
        [
            Check(
                "printer",
                Status(printer.level),
                printer.detail,
                printer.fix,
                printer.level != "SKIP",
                printer.data,
            )
        ]
    )
    add([check_disk(config)])
    add(check_writable(config))
    return checks


# ---------------------------------------------------------------------------- Python and packages


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _import_error(module: str) -> str | None:
    """None when ``module`` imports, else the first line of why not."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # a broken install raises anything: ImportError, OSError, RuntimeError
        lines = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return None


@dataclass(frozen=True)
class _Package:
    label: str
    module: str
    dists: tuple[str, ...]
    minimum: tuple[int, ...]
    pip: str


CORE_PACKAGES = (
    _Package("numpy", "numpy", ("numpy",), (1, 24), "numpy<2"),
    _Package(
        "opencv",
        "cv2",
        (
            "opencv-python-headless",
            "opencv-python",
            "opencv-contrib-python-headless",
            "opencv-contrib-python",
        ),
        (4, 8),
        "opencv-python-headless",
    ),
    _Package("paho-mqtt", "paho.mqtt.client", ("paho-mqtt",), (2, 0), "paho-mqtt>=2"),
    _Package("pydantic", "pydantic", ("pydantic",), (2, 5), "pydantic>=2.5"),
    _Package("pyyaml", "yaml", ("PyYAML", "pyyaml"), (6, 0), "PyYAML"),
)


def check_python_and_packages(config: AgentConfig) -> list[Check]:
    """Python 3.11+, the core packages at usable versions, each TFLite runtime, and picamera2."""
    checks = []
    version = platform.python_version()
    # The package needs 3.11 to import at all; the row records which Python and where.
    checks.append(Check("python", Status.OK, f"{version} ({sys.executable})", required=True))
    for pkg in CORE_PACKAGES:
        name = f"package {pkg.label}"
        error = _import_error(pkg.module)
        found = _dist_version(*pkg.dists)
        if error is not None:
            checks.append(problem(name, True, f"does not import ({error})", f"pip install '{pkg.pip}'"))
        elif found is not None and _version_tuple(found) < pkg.minimum:
            minimum = ".".join(map(str, pkg.minimum))
            checks.append(problem(name, True, f"{found} is older than {minimum}", f"pip install '{pkg.pip}'"))
        else:
            checks.append(
                Check(name, Status.OK, found or "installed", required=True, data={"version": found})
            )
    checks.extend(_runtime_checks(config))
    checks.append(_jpeg_decoder_check())
    checks.append(_picamera2_check(config))
    return checks


def _jpeg_decoder_check() -> Check:
    """simplejpeg is optional: without it OpenCV decodes the same pixels at about twice the CPU."""
    error = _import_error("simplejpeg")
    if error is None:
        version = _dist_version("simplejpeg") or "installed"
        return Check(
            "package simplejpeg", Status.OK, f"{version} (decodes JPEG frames)", data={"version": version}
        )
    return problem(
        "package simplejpeg",
        False,
        f"does not import ({error}); OpenCV decodes JPEG frames instead, at about twice the CPU",
        "pip install simplejpeg (wheels for x86_64 and aarch64; piwheels for 32-bit Raspberry Pi OS)",
    )


def _runtime_checks(config: AgentConfig) -> list[Check]:
    wanted = config.detector.runtime
    checks = []
    working = []
    for runtime in RUNTIME_PREFERENCE:
        name = f"runtime {runtime}"
        required = wanted == runtime
        pip_name = PIP_NAMES[runtime]
        module = runtime if runtime == "tensorflow" else f"{runtime}.interpreter"
        if runtime not in installed_runtimes():
            if required:
                checks.append(
                    problem(
                        name, True, "not installed, but detector.runtime names it", f"pip install {pip_name}"
                    )
                )
            else:
                checks.append(Check(name, Status.SKIP, "not installed"))
            continue
        error = _import_error(module)
        version = _dist_version(pip_name, f"{pip_name}-cpu") or "installed"
        if error is not None:
            checks.append(
                problem(
                    name,
                    required,
                    f"{version} does not import ({error})",
                    f"pip install --force-reinstall {pip_name}",
                )
            )
            continue
        working.append(runtime)
        checks.append(Check(name, Status.OK, version, required=required, data={"version": version}))
    if not working:
        checks.append(
            problem(
                "tflite runtime",
                True,
                "no TensorFlow Lite runtime imports",
                "pip install ai-edge-litert (or tflite-runtime on 32-bit Raspberry Pi OS)",
            )
        )
    return checks


def _picamera2_check(config: AgentConfig) -> Check:
    needed = config.source.url == "picamera2" or config.source.kind == "picamera2"
    error = _import_error("picamera2")
    if error is None:
        version = _dist_version("picamera2") or "installed"
        return Check("package picamera2", Status.OK, version, required=needed)
    if needed:
        return problem(
            "package picamera2",
            True,
            f"source.url is picamera2 but it does not import ({error})",
            "sudo apt install python3-picamera2 python3-libcamera, and make the venv with "
            "--system-site-packages (scripts/install-pi.sh does both)",
        )
    return Check("package picamera2", Status.SKIP, "not importable; only needed for source.url: picamera2")


# ---------------------------------------------------------------------------- Edge TPU


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


def check_edgetpu(device: str | None, *, root: Path = Path("/")) -> list[Check]:
    """Library, devices, udev rule, plugdev membership; required only when ``device``
    (``detector.edgetpu``) is set. The delegate itself is tried in ``check_model``."""
    required = bool(device)
    why = f"detector.edgetpu is {device}" if required else "not required: detector.edgetpu is not set"
    checks = []
    devices = find_edgetpu_devices(root)

    error = library_loads()
    if error is None:
        checks.append(Check("edgetpu library", Status.OK, f"{EDGETPU_LIBRARY} loads", required=required))
    elif required or devices:
        checks.append(
            problem(
                "edgetpu library",
                required,
                f"{EDGETPU_LIBRARY} does not load ({error}); {why}",
                "install the matched pair pinned in agent/data/edgetpu-pairs.json (libedgetpu1-std built for "
                "the runtime; `sudo scripts/install-pi.sh --edgetpu` does it, docs/coral.md)",
            )
        )
    else:
        checks.append(Check("edgetpu library", Status.SKIP, f"{EDGETPU_LIBRARY} not found; {why}"))

    wanted_kind = device.split(":")[0] if device else None
    wanted_index = int(device.split(":")[1]) if device and ":" in device else 0
    matching = [d for d in devices if wanted_kind is None or d.kind == wanted_kind]
    listing = "; ".join(f"{d.description} ({d.path})" for d in devices)
    data = {"devices": [d.__dict__ for d in devices]}
    if required and len(matching) <= wanted_index:
        seen = f"found only: {listing}" if devices else "no USB 1a6e:089a or 18d1:9302, no /dev/apex_*"
        fix = (
            "plug the USB Accelerator into a USB 3 port (on a Pi use a powered hub if it resets) and check "
            "`lsusb` lists 1a6e:089a or 18d1:9302"
            if wanted_kind == "usb"
            else "install the gasket-dkms driver (PCIe/M.2 Coral) and reboot, then check /dev/apex_0 exists"
        )
        checks.append(problem("edgetpu device", True, f"no Coral for {device}: {seen}", fix, data))
    elif devices:
        checks.append(Check("edgetpu device", Status.OK, listing, required=required, data=data))
    else:
        checks.append(
            Check("edgetpu device", Status.SKIP, f"no Coral found (USB or /dev/apex_*); {why}", data=data)
        )

    uses_usb = wanted_kind == "usb" or any(d.kind == "usb" for d in devices)
    rules = find_udev_rules(root)
    if rules:
        text = " ".join(_read_text(p) for p in rules).lower()
        missing = [f"{v}:{p}" for v, p in CORAL_USB_IDS if v not in text or p not in text]
        names = ", ".join(str(p) for p in rules)
        if missing and uses_usb:
            checks.append(
                problem(
                    "edgetpu udev rule",
                    required,
                    f"{names} does not cover {', '.join(missing)} (the Coral changes its id after the first use)",
                    "install systemd/65-edge-agent-coral.rules into /etc/udev/rules.d (scripts/install-pi.sh does)",
                )
            )
        else:
            checks.append(Check("edgetpu udev rule", Status.OK, names, required=required))
    elif required:
        checks.append(
            problem(
                "edgetpu udev rule",
                True,
                "no udev rule for the Coral (/etc/udev/rules.d/*coral* or *edgetpu*): only root can open it",
                "install systemd/65-edge-agent-coral.rules into /etc/udev/rules.d, run `udevadm control "
                "--reload-rules` and replug the Coral (scripts/install-pi.sh does this)",
            )
        )
    else:
        checks.append(Check("edgetpu udev rule", Status.SKIP, f"none found; {why}"))

    checks.append(_plugdev_check(required, why))
    return checks


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


# ---------------------------------------------------------------------------- source


def check_source(config: AgentConfig, timeout_s: float) -> tuple[Check, Frame | None]:
    """Open the source and read one frame within ``timeout_s``; the source is closed again."""
    from agent.sources import FrameSource, open_source

    settings = config.source
    outcome: dict[str, Any] = {}
    done = threading.Event()
    started = time.monotonic()

    def read_one() -> None:
        source: FrameSource | None = None
        try:
            source = open_source(settings)
            outcome["source"] = source
            frames = iter(source)
            outcome["frame"] = next(frames, None)
            if isinstance(frames, Generator):
                frames.close()  # ends the iteration, so the source frees its device now
        except Exception as exc:
            outcome["error"] = exc
        finally:
            if source is not None:
                source.close()
            done.set()

    threading.Thread(target=read_one, name="doctor-source", daemon=True).start()
    finished = done.wait(timeout_s)
    elapsed = time.monotonic() - started
    where = settings.redacted_url
    if not finished:
        opened = outcome.get("source")
        if opened is not None:
            opened.close()
        if settings.watch:
            return (
                Check(
                    "source",
                    Status.WARN,
                    f"{where}: no frame within {timeout_s:g} s (watching for new images)",
                ),
                None,
            )
        stage = "opened but gave no frame" if opened is not None else "did not open"
        return (
            problem(
                "source",
                True,
                f"{where} {stage} within {timeout_s:g} s",
                "check the camera is connected / the URL answers (try it in a browser or with ffplay), "
                "or raise --timeout",
            ),
            None,
        )
    error = outcome.get("error")
    if isinstance(error, UserError):
        return problem("source", True, str(error)), None
    if error is not None:
        return problem("source", True, f"{where}: {type(error).__name__}: {error}"), None
    frame: Frame | None = outcome.get("frame")
    if frame is None:
        return (
            problem(
                "source", True, f"{where} opened but has no frames", "put images in the folder or fix the URL"
            ),
            None,
        )
    description = outcome["source"].description
    height, width = frame.image.shape[:2]
    detail = f"{description}: first frame {width}x{height} ({frame.name}) in {elapsed:.2f} s"
    data = {"width": width, "height": height, "seconds": round(elapsed, 3)}
    return Check("source", Status.OK, detail, required=True, data=data), frame


# ---------------------------------------------------------------------------- model and timing


@dataclass(frozen=True)
class Timing:
    """``invokes`` timed runs of one model on one runtime with ``threads`` threads, on each of
    ``interpreters`` interpreters invoking at the same time."""

    runtime: str
    threads: int
    edgetpu: str | None
    median_ms: float
    invokes: int
    interpreters: int = 1
    measured_per_second: float | None = None  # several interpreters: invokes / wall time, together

    @property
    def per_second(self) -> float:
        """Invokes per second (of all the interpreters together)."""
        if self.measured_per_second is not None:
            return self.measured_per_second
        return 1000.0 / self.median_ms if self.median_ms > 0 else float("inf")

    @property
    def plan(self) -> tuple[str, int, int]:
        """``(runtime, interpreters, threads)``."""
        return self.runtime, self.interpreters, self.threads

    @property
    def label(self) -> str:
        """e.g. ``ai_edge_litert, 4 threads``, ``ai_edge_litert, 2 interpreters x 1 thread`` or
        ``tflite_runtime + edgetpu usb``."""
        if self.edgetpu:
            return f"{self.runtime} + edgetpu {self.edgetpu}"
        threads = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        return f"{self.runtime}, " + (
            f"{self.interpreters} interpreters x {threads}" if self.interpreters > 1 else threads
        )


def time_model(
    spec: ModelSpec,
    runtime: str,
    threads: int,
    invokes: int,
    *,
    edgetpu: str | None = None,
    tensor: NDArray[Any] | None = None,
    interpreters: int = 1,
) -> Timing:
    """Median wall time (ms) of ``invokes`` invokes after one warm-up, on a blank input unless
    ``tensor`` (an input of the model's shape and type) is given; with ``interpreters`` > 1 that
    many interpreters invoke at the same time, each on its own thread. Raises ``UserError``."""
    made = [
        make_interpreter(
            str(spec.path), spec.file_info, runtime=runtime, num_threads=threads, edgetpu=edgetpu
        )
        for _ in range(interpreters)
    ]
    detail = made[0][0].get_input_details()[0]
    if tensor is None or tuple(tensor.shape) != tuple(detail["shape"]) or tensor.dtype != detail["dtype"]:
        tensor = np.zeros(detail["shape"], dtype=detail["dtype"])
    times: list[float] = []
    errors: list[BaseException] = []
    start_together = threading.Barrier(interpreters + 1)  # the workers and this thread

    def loop(interpreter: Any) -> None:
        try:
            interpreter.set_tensor(detail["index"], tensor)
            interpreter.invoke()  # warm-up
            start_together.wait()
            for _ in range(invokes):
                start = time.perf_counter()
                interpreter.set_tensor(detail["index"], tensor)
                interpreter.invoke()
                times.append((time.perf_counter() - start) * 1000.0)
        except BaseException as exc:  # surfaced below, in the caller's thread
            errors.append(exc)
            start_together.abort()

    workers = [threading.Thread(target=loop, args=(interpreter,)) for interpreter, _ in made]
    for worker in workers:
        worker.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        start_together.wait()  # every warm-up done: the timed part starts now
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    wall_s = time.perf_counter() - began
    real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    if real or not times:
        raise UserError(f"{spec.path}: invoke() failed on {runtime}: {real[0] if real else 'no timing'}")
    rate = len(times) / wall_s if interpreters > 1 else None  # all together, by the wall clock
    return Timing(made[0][1], threads, edgetpu, statistics.median(times), invokes, interpreters, rate)


def check_model(config: AgentConfig, options: DoctorOptions, frame: Frame | None = None) -> list[Check]:
    """The model loads as a detector with the config's settings, then an invoke timing on every
    installed runtime and thread count (and the Edge TPU when configured), and the fastest."""
    from agent.detect.detector import Detector

    settings = config.detector
    if options.model:
        settings = settings.model_copy(update={"model": options.model})
    path = settings.model_path()
    try:
        spec = resolve_model(path, settings.labels)
    except UserError as exc:
        return [problem("model", True, str(exc))]
    tpu = settings.edgetpu
    # Without the TPU a CPU model is still checked on the CPU; the Edge TPU rows say what is missing.
    tpu_for_load = tpu if spec.file_info.is_edgetpu else None
    try:
        detector = Detector(settings.model_copy(update={"edgetpu": tpu_for_load}))
    except UserError as exc:
        return [problem("model", True, str(exc))]
    labels = f"{len(detector.labels)} labels" if detector.labels else "no labels"
    detail = (
        f"{spec.path}: {detector.layout.kind} layout, {detector.input_width}x{detector.input_height} "
        f"{detector.preprocess.dtype.name} input, {labels} ({spec.labels_source}), loads on {detector.runtime}"
    )
    checks = [Check("model", Status.OK, detail, required=True, data={"path": str(spec.path)})]
    tensor = detector.preprocess(frame.image)[0].copy() if frame is not None else None

    interpreters_now, threads_now = settings.parallelism()
    configured = (detector.runtime, interpreters_now, threads_now)
    timings: list[Timing] = []
    if spec.file_info.is_edgetpu:
        checks.append(
            Check(
                "timing cpu", Status.SKIP, "the model is compiled for the Edge TPU; it cannot run on the CPU"
            )
        )
    else:
        counts = options.thread_counts or tuple(range(1, (os.cpu_count() or 1) + 1))
        for runtime in installed_runtimes():
            for threads in counts:
                name = f"timing {runtime} x{threads}"
                try:
                    timing = time_model(spec, runtime, threads, options.invokes, tensor=tensor)
                except UserError as exc:
                    checks.append(problem(name, runtime == detector.runtime, str(exc)))
                    break
                timings.append(timing)
                checks.append(_timing_check(name, timing, timing.plan == configured))
        cores = os.cpu_count() or 1
        if cores >= 2:  # the agent's parallel mode: interpreters side by side on successive frames
            plans = {(2, cores // 2), (interpreters_now, threads_now)} - {(1, t) for t in counts}
            for n, threads in sorted(plans):
                name = f"timing {detector.runtime} {n}x{threads}"
                try:
                    timing = time_model(
                        spec, detector.runtime, threads, options.invokes, tensor=tensor, interpreters=n
                    )
                except UserError as exc:
                    checks.append(problem(name, False, str(exc)))
                    continue
                timings.append(timing)
                checks.append(_timing_check(name, timing, timing.plan == configured))
    if tpu:
        checks.append(_edgetpu_delegate_check(spec, detector.runtime, tpu, options.invokes, tensor))
    if timings:
        checks.append(_fastest_check(timings, configured, settings.runtime))
    return checks


def _timing_check(name: str, timing: Timing, configured: bool) -> Check:
    detail = (
        f"median {timing.median_ms:.2f} ms, {timing.per_second:,.0f} invokes/s ({timing.invokes} invokes)"
        + (" <- the config's choice" if configured else "")
    )
    data = {
        "runtime": timing.runtime,
        "threads": timing.threads,
        "interpreters": timing.interpreters,
        "edgetpu": timing.edgetpu,
        "median_ms": round(timing.median_ms, 4),
        "per_second": round(timing.per_second, 1),
        "invokes": timing.invokes,
    }
    return Check(name, Status.OK, detail, data=data)


def _edgetpu_delegate_check(
    spec: ModelSpec, runtime: str, device: str, invokes: int, tensor: NDArray[Any] | None
) -> Check:
    name = f"edgetpu delegate {device}"
    if library_loads() is not None:
        return problem(name, True, f"not tried: {EDGETPU_LIBRARY} does not load (see edgetpu library)")
    try:
        timing = time_model(spec, runtime, 1, invokes, edgetpu=device, tensor=tensor)
    except UserError as exc:
        return problem(name, True, str(exc))
    check = _timing_check(name, timing, True)
    check.required = True
    if not spec.file_info.is_edgetpu:
        check.status = Status.WARN
        check.detail += "; the model is not compiled for the Edge TPU, so it ran on the CPU"
        check.fix = "compile it with edgetpu_compiler and point detector.model at the *_edgetpu.tflite file"
    return check


def _fastest_check(timings: list[Timing], configured: tuple[str, int, int], runtime_setting: str) -> Check:
    """The plan with the most invokes per second (all interpreters together) against the config's."""
    best = max(timings, key=lambda t: t.per_second)
    current = next((t for t in timings if t.plan == configured), None)
    auto_pick = installed_runtimes()[0]
    runtime_value = "auto" if best.runtime == auto_pick else best.runtime
    advice = (
        f"detector.runtime: {runtime_value}, detector.interpreters: {best.interpreters}, "
        f"detector.num_threads: {best.threads}"
    )
    detail = f"{best.label}: {best.per_second:,.0f} invokes/s ({best.median_ms:.2f} ms each)"
    data = {
        "runtime": best.runtime,
        "threads": best.threads,
        "interpreters": best.interpreters,
        "median_ms": round(best.median_ms, 4),
        "per_second": round(best.per_second, 1),
        "recommended": {
            "runtime": runtime_value,
            "interpreters": best.interpreters,
            "num_threads": best.threads,
        },
    }
    # Timings are noisy: within 10 % of the best counts as just as fast.
    if current is not None and current.per_second >= best.per_second / 1.10:
        detail += f"; the config's {current.label} is as fast ({current.per_second:,.0f} invokes/s)"
        return Check("fastest", Status.OK, detail, data=data)
    if current is not None:
        detail += f"; the config uses {current.label} ({current.per_second:,.0f} invokes/s)"
    return Check("fastest", Status.OK, detail, f"for the best speed set {advice}", data=data)


# ---------------------------------------------------------------------------- broker


@dataclass
class BrokerProbe:
    """What one connection attempt to the broker saw."""

    ok: bool
    message: str
    reason_code: int | None = None
    seconds: float = 0.0
    tls_version: str | None = None


def probe_broker(settings: MqttSettings, timeout_s: float) -> BrokerProbe:
    """Connect once with the publisher's TLS context and credentials, wait for CONNACK, disconnect.

    The client id is the agent's with ``-doctor`` appended, so a running agent is not thrown off,
    and no will is set, so its retained status is untouched. Raises ``ConfigError`` for TLS files
    or a password that cannot be read.
    """
    import paho.mqtt.client as mqtt

    from agent.mqtt.client import describe_exception, explain_refusal, explain_socket_failure, new_paho_client

    host, port = settings.host, settings.effective_port
    where = f"{host}:{port}"
    client_id = f"{settings.effective_client_id}-doctor"
    client = new_paho_client(settings, client_id, mqtt.Client, reconnect=False)
    client.connect_timeout = timeout_s
    seen: dict[str, Any] = {}
    client.on_connect = lambda c, u, flags, reason, props: seen.setdefault("connack", reason)
    client.on_disconnect = lambda c, u, flags, reason, props: seen.setdefault("disconnect", reason)
    client.on_log = lambda c, u, level, text: (
        seen.setdefault("error", text) if level == mqtt.MQTT_LOG_ERR else None
    )
    started = time.monotonic()
    try:
        client.connect(host, port, settings.keepalive_s)
    except ssl.SSLError as exc:
        return BrokerProbe(
            False, explain_socket_failure(settings, describe_exception(exc), tls_failed=True).message
        )
    except socket.gaierror as exc:
        return BrokerProbe(False, f"cannot resolve mqtt.host {host!r} ({exc.strerror}); fix the host name")
    except ConnectionRefusedError:
        return BrokerProbe(
            False,
            f"nothing listens on {where} (connection refused); start the broker or fix mqtt.host / mqtt.port",
        )
    except TimeoutError:
        return BrokerProbe(
            False,
            f"no answer from {where} within {timeout_s:g} s; check mqtt.host, the network and firewalls",
        )
    except OSError as exc:
        return BrokerProbe(False, f"cannot connect to {where}: {exc.strerror or exc}")
    try:
        deadline = started + timeout_s
        while "connack" not in seen and "disconnect" not in seen and time.monotonic() < deadline:
            if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                break
        elapsed = time.monotonic() - started
        sock = client.socket()
        tls_version = sock.version() if isinstance(sock, ssl.SSLSocket) else None
        reason = seen.get("connack")
        if reason is None:
            text = _explain_no_connack(settings, str(seen.get("error") or ""), timeout_s)
            return BrokerProbe(False, text, seconds=elapsed, tls_version=tls_version)
        if reason.is_failure:
            return BrokerProbe(
                False,
                explain_refusal(settings, reason, client_id),
                reason_code=reason.value,
                seconds=elapsed,
                tls_version=tls_version,
            )
        return BrokerProbe(True, "accepted", reason.value, elapsed, tls_version)
    finally:
        client.disconnect()
        client.loop(timeout=0.1)


def _explain_no_connack(settings: MqttSettings, error: str, timeout_s: float) -> str:
    """Why the broker closed the connection (or said nothing) before CONNACK, from paho's error log."""
    from agent.mqtt.client import clean_socket_detail, explain_socket_failure

    where = f"{settings.host}:{settings.effective_port}"
    cause = clean_socket_detail(error)
    failure = explain_socket_failure(settings, cause)
    if failure.kind == "tls-client-cert":
        return failure.message
    low = cause.lower()
    if settings.use_tls and ("eof" in low or "reset" in low):
        # TLS 1.3: a broker refusing the client sends its alert after the handshake; our CONNECT,
        # already on its way, often makes the alert arrive as a bare EOF or reset instead.
        if settings.cert_file:
            return (
                f"the broker at {where} closed the TLS connection ({cause}); it may not accept our client "
                "certificate (mqtt.cert_file must be signed by a CA in the broker's cafile); see its log"
            )
        return (
            f"the broker at {where} closed the TLS connection ({cause}); it probably requires a client "
            "certificate: set mqtt.cert_file and key_file"
        )
    if cause:
        hint = "" if settings.use_tls else "; if the port expects TLS, set mqtt.tls or mqtt.ca_file"
        return f"{where} closed the connection before answering ({cause}){hint}"
    if not settings.use_tls:
        return f"no MQTT answer from {where} within {timeout_s:g} s; is it a TLS port (set mqtt.tls)?"
    return f"no MQTT answer from {where} within {timeout_s:g} s"


def check_broker(settings: MqttSettings, timeout_s: float) -> Check:
    """The broker accepts our connection (TLS, credentials) when MQTT is enabled."""
    if not settings.enabled:
        return Check("broker", Status.SKIP, "mqtt.enabled is false")
    timeout = min(timeout_s, settings.connect_timeout_s)
    try:
        probe = probe_broker(settings, timeout)
    except UserError as exc:
        return problem("broker", True, str(exc))
    tls = f"TLS {probe.tls_version or 'on'}" if settings.use_tls else "no TLS"
    user = f"user {settings.username!r}" if settings.username else "anonymous"
    facts = f"MQTT {settings.protocol}, {tls}, {user}"
    data = {
        "host": settings.host,
        "port": settings.effective_port,
        "reason_code": probe.reason_code,
        "seconds": round(probe.seconds, 3),
        "tls": settings.use_tls,
    }
    if probe.ok:
        detail = f"{settings.host}:{settings.effective_port} accepted us ({facts}) in {probe.seconds:.2f} s"
        return Check("broker", Status.OK, detail, required=True, data=data)
    return problem(
        "broker",
        True,
        f"{probe.message} ({facts}). The agent would still run, keeping messages in its outbox",
        data=data,
    )


# ---------------------------------------------------------------------------- disk and folders


def _existing_ancestor(path: Path) -> Path:
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def check_disk(config: AgentConfig) -> Check:
    """Free space on the disk holding ``output.dir`` against ``harvest.quota_mb`` and ``min_free_mb``."""
    out = config.output
    harvest = config.harvest
    data_dir = out.data_dir()
    try:
        usage = shutil.disk_usage(_existing_ancestor(data_dir))
    except OSError as exc:
        return problem("disk space", True, f"cannot read free space for {data_dir}: {exc.strerror}")
    free_mb = usage.free / MB
    used_mb = (_folder_bytes(out.frames_dir()) + _folder_bytes(out.vott_dir())) / MB
    data = {
        "free_mb": round(free_mb, 1),
        "used_mb": round(used_mb, 1),
        "quota_mb": harvest.quota_mb,
        "min_free_mb": harvest.min_free_mb,
    }
    facts = (
        f"{free_mb:,.0f} MB free for {data_dir}; kept frames use {used_mb:,.1f} MB of harvest.quota_mb "
        f"{harvest.quota_mb:g}"
        + (" (no quota)" if harvest.quota_mb == 0 else "")
        + f", harvest.min_free_mb {harvest.min_free_mb:g}"
    )
    if free_mb < harvest.min_free_mb:
        return problem(
            "disk space",
            True,
            f"{facts}: below min_free_mb, so no frame would be kept",
            "free space on that disk, move output.dir to a bigger one, or lower harvest.min_free_mb",
            data=data,
        )
    room_mb = free_mb - harvest.min_free_mb
    if harvest.quota_mb and harvest.quota_mb - used_mb > room_mb:
        fits = max(0.0, used_mb + room_mb)
        return problem(
            "disk space",
            False,
            f"{facts}: the disk reaches min_free_mb after {room_mb:,.0f} MB more, before the quota is full",
            f"lower harvest.quota_mb to {fits:,.0f} or less (or free space), so the quota, not the "
            "free-space floor, decides what is evicted",
            data=data,
        )
    return Check("disk space", Status.OK, facts, required=True, data=data)


def probe_writable(folder: Path) -> tuple[bool, str]:
    """Whether files can be created in ``folder`` (a temp file is written and removed; a folder that does
    not exist yet is judged by the nearest existing parent, where the agent would create it)."""
    existing = _existing_ancestor(folder)
    if not existing.is_dir():
        return False, f"{existing} is a file, not a folder, so {folder} cannot be created"
    try:
        fd, name = tempfile.mkstemp(prefix=".edge-agent-doctor-", dir=existing)
        try:
            os.write(fd, b"edge-agent doctor\n")
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        return False, f"cannot write in {existing}: {exc.strerror}"
    if existing == folder:
        return True, f"{folder} is writable"
    return True, f"{folder} does not exist yet; the agent creates it in {existing} (writable)"


def check_writable(config: AgentConfig) -> list[Check]:
    """The output, frames and VoTT folders are writable, and the outbox (when MQTT is on)."""
    from agent.app import mqtt_settings

    out = config.output
    checks = []
    folders = [
        ("output folder", out.data_dir()),
        ("frames folder", out.frames_dir()),
        ("vott folder", out.vott_dir()),
    ]
    for name, folder in folders:
        ok, detail = probe_writable(folder)
        if ok:
            checks.append(Check(name, Status.OK, detail, required=True))
        else:
            checks.append(
                problem(
                    name,
                    True,
                    detail,
                    "set output.dir to a folder the agent's user can write (the systemd unit's "
                    "ReadWritePaths must include it)",
                )
            )
    if not config.mqtt.enabled:
        checks.append(Check("outbox", Status.SKIP, "mqtt.enabled is false"))
        return checks
    outbox = Path(mqtt_settings(config).outbox.path).expanduser()
    ok, detail = probe_writable(outbox.parent)
    if ok and outbox.exists():
        try:
            with open(outbox, "ab"):
                pass
            detail = f"{outbox} exists and is writable"
        except OSError as exc:
            ok, detail = False, f"{outbox} cannot be written: {exc.strerror}"
    elif ok:
        detail = f"{outbox} will be created ({detail})"
    if ok:
        checks.append(Check("outbox", Status.OK, detail, required=True))
    else:
        checks.append(
            problem(
                "outbox", True, detail, "set mqtt.outbox.path to a writable place (relative: in output.dir)"
            )
        )
    return checks
