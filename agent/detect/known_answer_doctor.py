"""``edge-agent doctor``'s "known answer" row: the known-answer check, read-only, as a table row.

The doctor never records answers (it only looks); a model with none yet is a warning that says the
first ``edge-agent run`` records them. ``--json`` carries the whole comparison in the row's data:
what was expected, what the model gives now, what is missing and what is extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from agent.detect.known_answer import known_answer
from agent.errors import UserError

if TYPE_CHECKING:
    from agent.detect.detector import Detector
    from agent.doctor import Check

NAME = "known answer"
DRIFT_FIX = (
    "this runtime, delegate or CPU computes the model wrongly: try the other runtime "
    "(detector.runtime), reinstall or pin the runtime version the answers were made with, for an Edge "
    "TPU install the libedgetpu matched to the runtime; under qemu pin the CPU (QEMU_CPU=cortex-a72). "
    "docs/known-answers.md"
)


def known_answer_check(detector: Detector, data_dir: Path | None) -> Check:
    """The doctor row for ``detector``'s known answers (``FAIL`` on drift, ``WARN`` when unchecked)."""
    from agent.doctor import Check, Status, problem

    try:
        result = known_answer(detector, data_dir=data_dir, record=False)
    except UserError as exc:
        return problem(NAME, True, str(exc))
    data = result.summary()
    if result.status == "drift":
        return problem(NAME, True, result.detail, DRIFT_FIX, data)
    if result.status == "unchecked":
        return problem(NAME, False, result.detail, data=data)
    return Check(NAME, Status.OK, f"{result.detail} ({result.elapsed_ms:.0f} ms)", required=True, data=data)
