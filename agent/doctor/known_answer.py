"""``edge-agent doctor``'s "known answer" row: the known-answer check, read-only, as a table row.

The doctor never records answers (it only looks); a model with none yet is a warning that says the
first ``edge-agent run`` records them. ``--json`` carries the whole comparison in the row's data:
what was expected, what the model gives now, what is missing and what is extra.
"""

from __future__ import annotations

from agent.detect.known_answer import known_answer
from agent.doctor.checks import Check, DoctorContext, Status, problem
from agent.errors import UserError

NAME = "known answer"
DRIFT_FIX = (
    "this runtime, delegate or CPU computes the model wrongly: try the other runtime "
    "(detector.runtime), reinstall or pin the runtime version the answers were made with, for an Edge "
    "TPU install the libedgetpu matched to the runtime; under qemu pin the CPU (QEMU_CPU=cortex-a72). "
    "docs/known-answers.md"
)


def check_known_answer(context: DoctorContext) -> list[Check]:
    """The loaded model's known answers (``FAIL`` on drift, ``WARN`` when unchecked); no row when
    the model did not load (its own row says why)."""
    if context.model is None:
        return []
    try:
        result = known_answer(context.model.detector, data_dir=context.config.output.data_dir(), record=False)
    except UserError as exc:
        return [problem(NAME, True, str(exc))]
    data = result.summary()
    if result.status == "drift":
        return [problem(NAME, True, result.detail, DRIFT_FIX, data)]
    if result.status == "unchecked":
        return [problem(NAME, False, result.detail, data=data)]
    return [Check(NAME, Status.OK, f"{result.detail} ({result.elapsed_ms:.0f} ms)", required=True, data=data)]
