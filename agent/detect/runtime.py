"""TFLite interpreters: which runtimes are installed, the fastest one, and the Edge TPU.

Runtimes, fastest first on int8 graphs: ``ai_edge_litert`` (LiteRT, XNNPACK for int8),
``tflite_runtime`` (the classic Pi wheel), ``tensorflow`` (``tf.lite``). ``auto`` takes
the first one that imports. The Edge TPU delegate (``libedgetpu.so.1``) is loaded through
whichever runtime is in use.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import os
from collections.abc import Callable
from typing import Any

from agent.detect.edgetpu_pairs import runtime_for_edgetpu
from agent.detect.runtime_noise import load_delegate_quietly, native_stderr_to_log
from agent.detect.tflite_file import TfliteFileInfo
from agent.errors import ConfigError, UserError

log = logging.getLogger(__name__)

RUNTIME_PREFERENCE: tuple[str, ...] = ("ai_edge_litert", "tflite_runtime", "tensorflow")
EDGETPU_LIBRARY = "libedgetpu.so.1"
EDGETPU_HELP = (
    "install a matched Edge TPU runtime pair (`sudo scripts/install-pi.sh --edgetpu` installs the one "
    "pinned in agent/data/edgetpu-pairs.json: tflite-runtime and a libedgetpu1-std built for it; "
    "Coral's own libedgetpu1-std crashes with current runtimes, docs/coral.md), "
    "plug the USB Accelerator into a USB 3 port (on a Pi 4/5 use a powered hub if it resets), "
    "make sure the udev rule for 1a6e:089a and 18d1:9302 is installed and the user is in the "
    "plugdev group (PCIe: the gasket-dkms driver and /dev/apex_0); `edge-agent doctor` checks all of this"
)


def installed_runtimes() -> list[str]:
    """Runtimes whose Python package is installed, fastest first (not yet imported)."""
    modules = {
        "ai_edge_litert": "ai_edge_litert",
        "tflite_runtime": "tflite_runtime",
        "tensorflow": "tensorflow",
    }
    return [name for name in RUNTIME_PREFERENCE if importlib.util.find_spec(modules[name]) is not None]


# The pip distributions that provide each runtime's module, in the order they are looked for.
RUNTIME_DISTRIBUTIONS = {
    "ai_edge_litert": ("ai-edge-litert", "ai-edge-litert-nightly"),
    "tflite_runtime": ("tflite-runtime", "tflite-runtime-nightly"),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-aarch64"),
}


def runtime_version(runtime: str) -> str:
    """The installed version of ``runtime``'s package (e.g. ``2.3.0``), ``unknown`` when not found."""
    for dist in RUNTIME_DISTRIBUTIONS.get(runtime, ()):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def _interpreter_api(runtime: str) -> tuple[type[Any], Callable[..., Any]]:
    if runtime == "ai_edge_litert":
        module = importlib.import_module("ai_edge_litert.interpreter")
        return module.Interpreter, module.load_delegate
    if runtime == "tflite_runtime":
        module = importlib.import_module("tflite_runtime.interpreter")
        return module.Interpreter, module.load_delegate
    tf = importlib.import_module("tensorflow")
    return tf.lite.Interpreter, tf.lite.experimental.load_delegate


def choose_runtime(requested: str) -> str:
    """The runtime to use for ``requested`` (``auto`` picks the fastest installed)."""
    installed = installed_runtimes()
    if requested == "auto":
        if not installed:
            raise UserError(
                "no TensorFlow Lite runtime is installed; `pip install ai-edge-litert` "
                "(or tflite-runtime on older Pi OS releases)"
            )
        return installed[0]
    if requested not in RUNTIME_PREFERENCE:
        raise ConfigError(
            f"detector.runtime {requested!r} is not one of auto, {', '.join(RUNTIME_PREFERENCE)}"
        )
    if requested not in installed:
        package = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}.get(
            requested, "tensorflow-cpu"
        )
        raise UserError(f"detector.runtime is {requested} but it is not installed; `pip install {package}`")
    return requested


def make_interpreter(
    model_path: str,
    file_info: TfliteFileInfo,
    *,
    runtime: str,
    num_threads: int | None,
    edgetpu: str | None,
) -> tuple[Any, str]:
    """Build and allocate an interpreter; returns it and the runtime name actually used.

    Every failure is a ``UserError`` that says what to install or change: an Edge TPU model
    without the delegate, a missing ``libedgetpu``, an absent device, a model the runtime
    cannot load.
    """
    # With the Edge TPU, `auto` prefers the runtime libedgetpu is pinned with (edgetpu-pairs.json).
    name = choose_runtime(runtime_for_edgetpu(runtime, installed_runtimes()) if edgetpu else runtime)
    threads = num_threads or os.cpu_count() or 1
    if file_info.is_edgetpu and not edgetpu:
        raise UserError(
            f"{model_path} is compiled for the Edge TPU (it holds the edgetpu-custom-op) but "
            "detector.edgetpu is not set. Set detector.edgetpu: usb (or pci) and "
            f"{EDGETPU_HELP}; or use the CPU version of the model (the file without _edgetpu)"
        )
    interpreter_class, load_delegate = _interpreter_api(name)
    delegates = []
    if edgetpu:
        delegate, why = load_delegate_quietly(load_delegate, EDGETPU_LIBRARY, {"device": edgetpu})
        if delegate is None:
            raise UserError(f"cannot open the Edge TPU ({edgetpu}): {why}. To fix: {EDGETPU_HELP}")
        delegates.append(delegate)
        if not file_info.is_edgetpu:
            log.warning(
                "%s is not compiled for the Edge TPU; it will run on the CPU. Compile it with "
                "edgetpu_compiler to use the TPU",
                model_path,
            )
    try:
        with native_stderr_to_log():  # LiteRT's "INFO: Created ... XNNPACK delegate" line: DEBUG only
            interpreter = interpreter_class(
                model_path=model_path, num_threads=threads, experimental_delegates=delegates or None
            )
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        text = str(exc).strip().splitlines()
        detail = text[0] if text else type(exc).__name__
        if "edgetpu-custom-op" in str(exc):
            raise UserError(f"{model_path} needs the Edge TPU delegate: {EDGETPU_HELP}") from None
        raise UserError(
            f"{name} cannot load {model_path}: {detail}. Check that it is a complete TFLite model "
            "exported for TFLite (not a SavedModel, ONNX or truncated download)"
        ) from None
    return interpreter, name
