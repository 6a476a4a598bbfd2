"""``edge-agent doctor``: check that this machine can run a config, and say how to fix what cannot.

``run_checks(config, options)`` returns one ``Check`` per thing looked at, area by area, in this
order: the config; Python and packages (``packages``); the Edge TPU library, devices, udev rule,
plugdev and runtime pair (``edgetpu``); the source opens and yields a frame (``camera``); the model
loads as a detector, with invoke timings on every installed runtime and thread count taken
interleaved, the fastest plan and the Edge TPU delegate (``runtime``); the broker (``broker``); the
printer host answers with its key (``printer``); disk
space against the harvest quota and the writable folders (``disk``).

A check is ``OK``, ``WARN`` (works, but worth a look), ``FAIL`` (the agent cannot work like this) or
``SKIP`` (not used by this config). ``FAIL`` is kept for what the config needs: a missing Coral is a
``FAIL`` only when ``detector.edgetpu`` is set. ``exit_code(checks)`` is 1 when anything failed.

To add a row: write ``def check_x(context: DoctorContext) -> list[Check]`` in the area's module and
append it to that module's ``CHECKS`` list (a new area: a new module with its own ``CHECKS``, listed
in ``AREAS`` below). docs/checks.md lists the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from agent.config import AgentConfig
from agent.doctor import broker, camera, disk, edgetpu, packages, printer, runtime
from agent.doctor.broker import BrokerProbe, check_broker, probe_broker
from agent.doctor.camera import check_source
from agent.doctor.checks import (
    Check,
    CheckFunction,
    DoctorContext,
    DoctorOptions,
    Status,
    check_config,
    exit_code,
    problem,
)
from agent.doctor.disk import check_disk, check_writable, probe_writable
from agent.doctor.edgetpu import EdgeTpuDevice, check_edgetpu, find_edgetpu_devices, library_loads
from agent.doctor.packages import check_python_and_packages

# The areas in the order their rows are printed; each lists its check functions in ``CHECKS``.
AREAS: Sequence[Sequence[CheckFunction]] = (
    [check_config],
    packages.CHECKS,
    edgetpu.CHECKS,
    camera.CHECKS,
    runtime.CHECKS,
    broker.CHECKS,
    printer.CHECKS,
    disk.CHECKS,
)

__all__ = [
    "AREAS",
    "BrokerProbe",
    "Check",
    "CheckFunction",
    "DoctorContext",
    "DoctorOptions",
    "EdgeTpuDevice",
    "Status",
    "check_broker",
    "check_disk",
    "check_edgetpu",
    "check_python_and_packages",
    "check_source",
    "check_writable",
    "exit_code",
    "find_edgetpu_devices",
    "library_loads",
    "probe_broker",
    "probe_writable",
    "problem",
    "run_checks",
]


def run_checks(
    config: AgentConfig,
    options: DoctorOptions | None = None,
    *,
    config_name: str = "config",
    on_check: Callable[[Check], None] | None = None,
) -> list[Check]:
    """Run every check for ``config``; ``on_check`` sees each one as soon as it is done."""
    context = DoctorContext(config, options or DoctorOptions(), config_name)
    checks: list[Check] = []
    for area in AREAS:
        for function in area:
            found: Iterable[Check] = function(context)
            for check in found:
                checks.append(check)
                if on_check is not None:
                    on_check(check)
    return checks
