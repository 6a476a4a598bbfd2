"""What every doctor row is made of: the ``Check`` type, its statuses, the options, the context
the check functions share, and the exit code.

A check function takes the ``DoctorContext`` and returns the rows it found (usually one). Each
area module (``packages``, ``edgetpu``, ``camera``, ``runtime``, ``broker``, ``disk``) lists its
functions in ``CHECKS``, in the order the rows are printed; ``agent.doctor.run_checks`` runs the
areas in turn. A function may leave what a later one needs in the context (the source's first
frame, the loaded model).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import AgentConfig

if TYPE_CHECKING:
    from agent.detect.detector import Detector
    from agent.detect.model import ModelSpec
    from agent.frames import Frame

MB = 1024 * 1024


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


@dataclass
class LoadedModel:
    """The model row's result, for the timing rows: the resolved model and its detector."""

    spec: ModelSpec
    detector: Detector


@dataclass
class DoctorContext:
    """What the check functions read (the config, the options) and leave for each other."""

    config: AgentConfig
    options: DoctorOptions = field(default_factory=DoctorOptions)
    config_name: str = "config"
    frame: Frame | None = None  # the source's first frame: the timing rows invoke on it
    model: LoadedModel | None = None  # set by the model row when the model loads


CheckFunction = Callable[[DoctorContext], Iterable[Check]]


def check_config(context: DoctorContext) -> list[Check]:
    """The config row: it loaded and validated (a config error stops doctor before any row)."""
    return [Check("config", Status.OK, f"{context.config_name} is valid")]


def exit_code(checks: Iterable[Check]) -> int:
    """1 when any check failed, else 0."""
    return 1 if any(c.status == Status.FAIL for c in checks) else 0
