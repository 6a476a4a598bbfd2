"""Doctor's runtime area: the model loads as a detector with the config's settings; an invoke timing
on every installed runtime and thread count (and the agent's parallel plans), taken interleaved;
the fastest plan and how sure that is; and the Edge TPU delegate when configured."""

from __future__ import annotations

import os
from typing import Any

from numpy.typing import NDArray

from agent.detect.model import resolve_model
from agent.detect.model_store import configured_model, with_installed_model
from agent.detect.runtime import EDGETPU_LIBRARY, installed_runtimes
from agent.doctor.checks import Check, CheckFunction, DoctorContext, LoadedModel, Status, problem
from agent.doctor.edgetpu import library_loads
from agent.doctor.known_answer import check_known_answer
from agent.doctor.timing import ADVICE_MARGIN, Advice, Plan, PlanRunner, Timing, advise, time_interleaved
from agent.errors import UserError


def check_model(context: DoctorContext) -> list[Check]:
    """The model (``--model`` or ``detector.model``) loads as a detector; leaves it in the context."""
    from agent.detect.detector import Detector

    settings = context.config.detector
    if context.options.model:
        settings = settings.model_copy(update={"model": context.options.model})
    try:
        settings, fallback = with_installed_model(settings)
        spec = resolve_model(configured_model(settings), settings.labels)
        # Without the TPU a CPU model is still checked on the CPU; the Edge TPU rows say what is missing.
        tpu_for_load = settings.edgetpu if spec.file_info.is_edgetpu else None
        detector = Detector(settings.model_copy(update={"edgetpu": tpu_for_load}))
    except UserError as exc:
        return [problem("model", True, str(exc))]
    context.model = LoadedModel(spec, detector)
    labels = f"{len(detector.labels)} labels" if detector.labels else "no labels"
    detail = (
        f"{spec.path}: {detector.layout.kind} layout, {detector.input_width}x{detector.input_height} "
        f"{detector.preprocess.dtype.name} input, {labels} ({spec.labels_source}), loads on {detector.runtime}"
    )
    # WARN when what runs is a fallback or the DEMO model (the notices say which and the fetch command)
    notice = "; ".join(n for n in (fallback, detector.demo_notice) if n)
    status, text = (Status.WARN, f"{notice}: {detail}") if notice else (Status.OK, detail)
    return [Check("model", status, text, required=True, data={"path": str(spec.path)})]


def _input_tensor(context: DoctorContext) -> NDArray[Any] | None:
    """The source's first frame as the model's input (None: the timings use zeros)."""
    if context.model is None or context.frame is None:
        return None
    tensor: NDArray[Any] = context.model.detector.preprocess(context.frame.image)[0].copy()
    return tensor


def _configured(context: DoctorContext) -> tuple[str, int, int]:
    """The config's plan: ``(runtime, interpreters, threads)``."""
    assert context.model is not None
    interpreters, threads = context.config.detector.parallelism()
    return context.model.detector.runtime, interpreters, threads


def _plans(context: DoctorContext) -> list[Plan]:
    """Every installed runtime at 1 .. cores threads, the agent's parallel plan (two interpreters
    side by side) and the config's own plan, each once."""
    runtime, interpreters, threads = _configured(context)
    counts = context.options.thread_counts or tuple(range(1, (os.cpu_count() or 1) + 1))
    plans = [Plan(rt, n) for rt in installed_runtimes() for n in counts]
    cores = os.cpu_count() or 1
    if cores >= 2:
        plans.append(Plan(runtime, cores // 2, 2))
    plans.append(Plan(runtime, threads, interpreters))
    return list(dict.fromkeys(plans))


def _build_runners(context: DoctorContext) -> tuple[list[PlanRunner], list[Check]]:
    """A runner per plan; a runtime that cannot build one is reported once and left out."""
    assert context.model is not None
    tensor = _input_tensor(context)
    runners: list[PlanRunner] = []
    failures: list[Check] = []
    broken: set[str] = set()
    for plan in _plans(context):
        if plan.runtime in broken:
            continue
        try:
            runners.append(PlanRunner(context.model.spec, plan, tensor))
        except UserError as exc:
            broken.add(plan.runtime)
            required = plan.runtime == context.model.detector.runtime
            failures.append(problem(_row_name(plan), required, str(exc)))
    return runners, failures


def _row_name(plan: Plan) -> str:
    if plan.interpreters > 1:
        return f"timing {plan.runtime} {plan.interpreters}x{plan.threads}"
    return f"timing {plan.runtime} x{plan.threads}"


def check_timings(context: DoctorContext) -> list[Check]:
    """A timing row per plan, timed interleaved, then the ``fastest`` row with its advice."""
    if context.model is None:
        return []
    if context.model.spec.file_info.is_edgetpu:
        detail = "the model is compiled for the Edge TPU; it cannot run on the CPU"
        return [Check("timing cpu", Status.SKIP, detail)]
    runners, checks = _build_runners(context)
    try:
        timings = time_interleaved(runners, context.options.invokes)
    except UserError as exc:
        return [*checks, problem("timing", True, str(exc))]
    configured = _configured(context)
    checks += [_timing_check(_row_name(t.plan), t, t.plan.key == configured) for t in timings]
    if timings:
        checks.append(_fastest_check(advise(timings, configured)))
    return checks


def _timing_check(name: str, timing: Timing, configured: bool) -> Check:
    rounds = len(timing.round_rates)
    detail = (
        f"median {timing.median_ms:.2f} ms, {timing.per_second:,.0f} invokes/s ({timing.invokes} invokes "
        f"in {rounds} round{'s' if rounds != 1 else ''})" + (" <- the config's choice" if configured else "")
    )
    data = {
        "runtime": timing.plan.runtime,
        "threads": timing.plan.threads,
        "interpreters": timing.plan.interpreters,
        "edgetpu": timing.plan.edgetpu,
        "median_ms": round(timing.median_ms, 4),
        "per_second": round(timing.per_second, 1),
        "invokes": timing.invokes,
        "round_rates": [round(rate, 1) for rate in timing.round_rates],
    }
    return Check(name, Status.OK, detail, data=data)


def _fastest_check(advice: Advice) -> Check:
    """The plan with the most invokes per second against the config's, and how sure that is."""
    best, current = advice.best, advice.current
    auto_pick = installed_runtimes()[0]
    runtime_value = "auto" if best.plan.runtime == auto_pick else best.plan.runtime
    data = {
        "runtime": best.plan.runtime,
        "threads": best.plan.threads,
        "interpreters": best.plan.interpreters,
        "median_ms": round(best.median_ms, 4),
        "per_second": round(best.per_second, 1),
        "recommended": {
            "runtime": runtime_value,
            "interpreters": best.plan.interpreters,
            "num_threads": best.plan.threads,
        },
        "ratio_to_config": [round(r, 3) for r in advice.ratios],
        "sure": advice.sure,
    }
    detail = f"{best.label}: {best.per_second:,.0f} invokes/s ({best.median_ms:.2f} ms each)"
    if current is None:
        return Check("fastest", Status.OK, detail + "; the config's plan was not timed", data=data)
    if best.plan == current.plan:
        return Check("fastest", Status.OK, detail + " is the config's choice", data=data)
    if not advice.sure:
        detail += (
            f"; the config's {current.label} is as fast within the noise: the best was {advice.spread()} "
            f"of it, not {1 + ADVICE_MARGIN:.2f}x or more in every round"
        )
        return Check("fastest", Status.OK, detail, data=data)
    detail += f"; {advice.spread()} the config's {current.label}"
    fix = (
        f"for the best speed set detector.runtime: {runtime_value}, detector.interpreters: "
        f"{best.plan.interpreters}, detector.num_threads: {best.plan.threads}"
    )
    return Check("fastest", Status.OK, detail, fix, data=data)


def check_edgetpu_delegate(context: DoctorContext) -> list[Check]:
    """With ``detector.edgetpu`` set: the delegate loads and the model runs on it (timed)."""
    device = context.config.detector.edgetpu
    if not device or context.model is None:
        return []
    name = f"edgetpu delegate {device}"
    if library_loads() is not None:
        return [problem(name, True, f"not tried: {EDGETPU_LIBRARY} does not load (see edgetpu library)")]
    spec = context.model.spec
    try:
        runner = PlanRunner(spec, Plan(context.model.detector.runtime, 1, 1, device), _input_tensor(context))
        timing = time_interleaved([runner], context.options.invokes)[0]
    except UserError as exc:
        return [problem(name, True, str(exc))]
    check = _timing_check(name, timing, True)
    check.required = True
    if not spec.file_info.is_edgetpu:
        check.status = Status.WARN
        check.detail += "; the model is not compiled for the Edge TPU, so it ran on the CPU"
        check.fix = "compile it with edgetpu_compiler and point detector.model at the *_edgetpu.tflite file"
    return [check]


CHECKS: list[CheckFunction] = [check_model, check_known_answer, check_timings, check_edgetpu_delegate]
