"""Doctor's Edge TPU pair rows: name the installed pair, judge it, and try it on a present Coral.

The try (load the delegate, one invoke) runs in a child process: a runtime and a libedgetpu that do
not match segfault instead of raising, and a crash in a child is a finding to report, not the end of
``edge-agent doctor``. The child is this module::

    python -m agent.detect.edgetpu_probe --model M --device usb [--runtime R] [--library L]

which prints one JSON line: ``{"ok": true, "runtime": ..., "invoke_ms": ...}`` or
``{"ok": false, "error": ...}``.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.bundled import BUNDLED_MODEL
from agent.detect.edgetpu_pairs import (
    installed_library,
    installed_runtime_versions,
    judge_pair,
    pinned_summary,
    runtime_for_edgetpu,
)
from agent.detect.model_store import configured_model
from agent.detect.runtime import EDGETPU_LIBRARY, choose_runtime
from agent.detect.tflite_file import read_tflite_file
from agent.errors import UserError

if TYPE_CHECKING:
    from agent.config.detector import DetectorSettings
    from agent.doctor import Check

PROBE_TIMEOUT_S = 90.0  # the first invoke on a USB Accelerator also uploads its firmware
FIX = "sudo scripts/install-pi.sh --edgetpu installs the pinned pair ({pair}); see docs/coral.md"


@dataclass(frozen=True)
class ProbeResult:
    """How the try went: ``ok``; the runtime used; one invoke's time in ms; the error text, or the
    signal name when the child crashed."""

    ok: bool
    runtime: str = ""
    invoke_ms: float | None = None
    error: str = ""
    crashed: str = ""


def probe_in_child(args: argparse.Namespace) -> dict[str, Any]:
    """Load the delegate, build the interpreter, run one invoke on zeros; the JSON-ready outcome."""
    from agent.detect.runtime import _interpreter_api

    runtime = choose_runtime(args.runtime)
    interpreter_class, load_delegate = _interpreter_api(runtime)
    delegate = load_delegate(args.library, {"device": args.device})
    interpreter = interpreter_class(model_path=args.model, experimental_delegates=[delegate], num_threads=1)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
    started = time.perf_counter()
    interpreter.invoke()
    return {"ok": True, "runtime": runtime, "invoke_ms": round((time.perf_counter() - started) * 1000, 2)}


def main(argv: list[str] | None = None) -> int:
    """The child process: print the outcome as one JSON line; exit 0 when the invoke ran."""
    parser = argparse.ArgumentParser(prog="python -m agent.detect.edgetpu_probe")
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="usb")
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--library", default=EDGETPU_LIBRARY)
    args = parser.parse_args(argv)
    try:
        outcome = probe_in_child(args)
    except Exception as exc:  # every failure is the finding: report it, whatever its type
        text = str(exc).strip().splitlines()
        outcome = {"ok": False, "error": f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")}
    print(json.dumps(outcome), flush=True)
    return 0 if outcome["ok"] else 1


def _no_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash must not leave a core file on the SD card


def run_probe(
    model: Path, device: str, runtime: str, library: str = EDGETPU_LIBRARY, timeout_s: float = PROBE_TIMEOUT_S
) -> ProbeResult:
    """Try the delegate and one invoke in a child process (see the module docstring)."""
    command = [sys.executable, "-m", "agent.detect.edgetpu_probe", "--model", str(model), "--device", device]
    command += ["--runtime", runtime, "--library", library]
    try:
        child = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False, preexec_fn=_no_core_dumps
        )
    except subprocess.TimeoutExpired:
        return ProbeResult(False, error=f"no answer within {timeout_s:.0f} s (the device or library hangs)")
    if child.returncode < 0:
        return ProbeResult(False, crashed=signal.Signals(-child.returncode).name)
    lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
    if not lines:
        stderr = child.stderr.strip().splitlines()
        return ProbeResult(False, error=stderr[-1] if stderr else f"exit {child.returncode}, no answer")
    outcome = json.loads(lines[-1])
    return ProbeResult(
        outcome["ok"], outcome.get("runtime", ""), outcome.get("invoke_ms"), outcome.get("error", "")
    )


def probe_model(detector: DetectorSettings) -> tuple[Path, bool]:
    """The model to try: the configured one when it is compiled for the Edge TPU, else the bundled
    CPU model (the delegate then attaches but runs nothing). Returns it and whether it is for the TPU."""
    path = Path(configured_model(detector))
    try:
        if read_tflite_file(str(path)).is_edgetpu:
            return path, True
    except UserError:  # unreadable or not a model: the model row says so; try the bundled one here
        pass
    return BUNDLED_MODEL, False


def edgetpu_pair_checks(
    detector: DetectorSettings, *, root: Path = Path("/"), library: str = EDGETPU_LIBRARY
) -> list[Check]:
    """Doctor's rows ``edgetpu pair`` (what is installed, and whether it is a known pair) and
    ``edgetpu invoke`` (the delegate and one invoke, when a Coral is present). Problems FAIL only when
    ``detector.edgetpu`` is set, else WARN."""
    from agent.doctor import Check, Status, find_edgetpu_devices, problem

    required = bool(detector.edgetpu)
    devices = find_edgetpu_devices(root)
    fix = FIX.format(pair=pinned_summary())
    found = installed_library(root)
    runtimes = {r.module: r for r in installed_runtime_versions()}
    if found is None:
        detail = "libedgetpu is not installed"
        pair = problem("edgetpu pair", required, detail, fix) if required or devices else None
        return [
            pair or Check("edgetpu pair", Status.SKIP, detail + "; no Coral and detector.edgetpu is not set")
        ]
    try:
        module = choose_runtime(runtime_for_edgetpu(detector.runtime, list(runtimes)))
    except UserError as exc:  # no runtime at all, or the configured one is not installed
        return [problem("edgetpu pair", required, f"{found.label()} without a usable runtime: {exc}", fix)]
    judgement = judge_pair(runtimes[module], found)
    name = f"{module} {runtimes[module].version} + {found.label()}"
    data = {"runtime": module, "runtime_version": runtimes[module].version, "library": found.__dict__}
    data |= {"verdict": judgement.verdict, "sources": judgement.sources}
    if judgement.verdict in ("pinned", "good"):
        what = "the pinned pair" if judgement.verdict == "pinned" else "a matched pair"
        checks = [Check("edgetpu pair", Status.OK, f"{name}: {what}", required=required, data=data)]
    elif judgement.verdict == "bad":
        sources = "; ".join(judgement.sources)
        checks = [
            problem("edgetpu pair", required, f"{name}: known bad: {judgement.why} ({sources})", fix, data)
        ]
    else:
        checks = [Check("edgetpu pair", Status.WARN, f"{name}: {judgement.why}", fix, required, data)]
    checks.append(_invoke_check(detector, devices, module, library, required))
    return checks


def _invoke_check(
    detector: DetectorSettings, devices: list[Any], runtime: str, library: str, required: bool
) -> Check:
    from agent.doctor import Check, Status, problem

    if not devices:
        return Check("edgetpu invoke", Status.SKIP, "no Coral found: the delegate was not tried")
    device = detector.edgetpu or devices[0].kind
    model, for_tpu = probe_model(detector)
    result = run_probe(model, device, runtime, library)
    data = {"model": str(model), "device": device, "runtime": runtime, "invoke_ms": result.invoke_ms}
    if result.crashed:
        detail = f"{runtime} crashed ({result.crashed}) loading the delegate or invoking {model.name}: the pair does not match"
        return problem("edgetpu invoke", required, detail, FIX.format(pair=pinned_summary()), data)
    if not result.ok:
        return problem("edgetpu invoke", required, f"{device}: {result.error}", "", data)
    detail = f"{device}: delegate loaded, one invoke of {model.name} took {result.invoke_ms} ms on {runtime}"
    if not for_tpu:
        detail += " (a CPU model: this proves the library and delegate load, not that the TPU computes)"
    return Check("edgetpu invoke", Status.OK, detail, required=required, data=data)


if __name__ == "__main__":
    sys.exit(main())
