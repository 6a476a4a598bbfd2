"""Rounds that a noisy neighbour cannot pass off as the agent's: every run sits between two
measurements of the bare ``invoke()`` limit, and a run during which that limit moved by more
than a threshold (another process took the cores, the VM's clock changed) is run again, up to a
number of times, and flagged in the table and the JSON when it still moved.

Each run also records the machine it ran on as it was then: the CPU, the cores and the 1-minute
load average at its start and end.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_THRESHOLD = 0.05
DEFAULT_REPEATS = 2


def load_avg_1m() -> float:
    """The 1-minute load average now."""
    return round(os.getloadavg()[0], 2)


def machine_line(machine: dict[str, Any], load: tuple[float, float] | None = None) -> str:
    """``machine: <CPU>, N cores, load a -> b``: the line every table's header carries (``load``:
    the table's own start and end, else the bench's)."""
    start, end = load or (machine.get("load_avg_1m_start"), machine.get("load_avg_1m_end", "?"))
    return f"machine: {machine['cpu']}, {machine['cores']} cores, load {start} -> {end} (1 min avg)"


def limit_moved(before: float, after: float) -> float:
    """How far the limit moved between two measurements, as a share of the higher (0..1)."""
    high = max(before, after)
    return abs(after - before) / high if high > 0 else 0.0


@dataclass
class Around:
    """The bare measurements on each side of a run: ``limit`` (the best single interpreter, for
    the ratio and the stability) and ``agent_plan`` (the agent's interpreters x threads, for the
    CPU an ``invoke()`` costs)."""

    limit: dict[str, Any]
    agent_plan: dict[str, Any]


@dataclass
class StableRun:
    """A run kept after at most ``repeats`` repetitions, with the measurements around it."""

    result: dict[str, Any]
    before: Around
    after: Around
    moved: float
    flagged: bool
    load_avg_1m: tuple[float, float]
    discarded: list[dict[str, Any]] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        """The stability fields every run carries in the JSON."""
        return {
            "limit_around_fps": [self.before.limit["rate_fps"], self.after.limit["rate_fps"]],
            "limit_moved": round(self.moved, 4),
            "limit_moved_flag": self.flagged,
            "attempts": 1 + len(self.discarded),
            "discarded_attempts": self.discarded,
            "load_avg_1m": list(self.load_avg_1m),
        }


def run_stable(
    run: Callable[[], dict[str, Any]],
    remeasure: Callable[[], Around],
    before: Around,
    *,
    threshold: float,
    repeats: int,
    on_repeat: Callable[[float], None] | None = None,
) -> tuple[StableRun, Around]:
    """``run()`` between ``before`` and a fresh ``remeasure()``; again (up to ``repeats`` times)
    while the limit moved by more than ``threshold``. Returns the kept run and the last
    measurement (the next run's ``before``)."""
    discarded: list[dict[str, Any]] = []
    while True:
        load_start = load_avg_1m()
        result = run()
        after = remeasure()
        moved = limit_moved(before.limit["rate_fps"], after.limit["rate_fps"])
        load = (load_start, load_avg_1m())
        if moved <= threshold or len(discarded) >= repeats:
            kept = StableRun(result, before, after, moved, moved > threshold, load, discarded)
            return kept, after
        discarded.append(
            {
                "limit_around_fps": [before.limit["rate_fps"], after.limit["rate_fps"]],
                "limit_moved": round(moved, 4),
                "load_avg_1m": list(load),
            }
        )
        if on_repeat is not None:
            on_repeat(moved)
        before = after
