"""Doctor's packages area: Python, the core packages at usable versions, each TFLite runtime, the
JPEG decoder and picamera2."""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import re
import sys
from dataclasses import dataclass

from agent.config import AgentConfig
from agent.detect.runtime import RUNTIME_PREFERENCE, installed_runtimes
from agent.doctor.checks import Check, CheckFunction, DoctorContext, Status, problem

PIP_NAMES = {
    "ai_edge_litert": "ai-edge-litert",
    "tflite_runtime": "tflite-runtime",
    "tensorflow": "tensorflow",
}


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


def check_python(context: DoctorContext) -> list[Check]:
    """Which Python runs doctor, and where (the package needs 3.11 to import at all)."""
    version = platform.python_version()
    return [Check("python", Status.OK, f"{version} ({sys.executable})", required=True)]


def check_core_packages(context: DoctorContext) -> list[Check]:
    """numpy, OpenCV, paho-mqtt, pydantic and PyYAML import, at usable versions."""
    checks = []
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
    return checks


def check_jpeg_decoder(context: DoctorContext) -> list[Check]:
    """simplejpeg is optional: without it OpenCV decodes the same pixels at about twice the CPU."""
    error = _import_error("simplejpeg")
    if error is None:
        version = _dist_version("simplejpeg") or "installed"
        detail = f"{version} (decodes JPEG frames)"
        return [Check("package simplejpeg", Status.OK, detail, data={"version": version})]
    detail = f"does not import ({error}); OpenCV decodes JPEG frames instead, at about twice the CPU"
    fix = "pip install simplejpeg (wheels for x86_64 and aarch64; piwheels for 32-bit Raspberry Pi OS)"
    return [problem("package simplejpeg", False, detail, fix)]


def check_runtimes(context: DoctorContext) -> list[Check]:
    """Each TFLite runtime: installed, imports; FAIL when the one ``detector.runtime`` names does not."""
    wanted = context.config.detector.runtime
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


def check_picamera2(context: DoctorContext) -> list[Check]:
    """picamera2 imports; required only for a ``picamera2`` source."""
    source = context.config.source
    needed = source.url == "picamera2" or source.kind == "picamera2"
    error = _import_error("picamera2")
    if error is None:
        version = _dist_version("picamera2") or "installed"
        return [Check("package picamera2", Status.OK, version, required=needed)]
    if needed:
        return [
            problem(
                "package picamera2",
                True,
                f"source.url is picamera2 but it does not import ({error})",
                "sudo apt install python3-picamera2 python3-libcamera, and make the venv with "
                "--system-site-packages (scripts/install-pi.sh does both)",
            )
        ]
    return [Check("package picamera2", Status.SKIP, "not importable; only needed for source.url: picamera2")]


CHECKS: list[CheckFunction] = [
    check_python,
    check_core_packages,
    check_runtimes,
    check_jpeg_decoder,
    check_picamera2,
]


def check_python_and_packages(config: AgentConfig) -> list[Check]:
    """Every row of this area for ``config``."""
    context = DoctorContext(config)
    return [check for function in CHECKS for check in function(context)]
