"""Invoke timings for doctor, taken interleaved, and the advice drawn from them.

Every plan (a runtime, a thread count, a number of interpreters side by side) gets its interpreters
built and warmed up first; then the plans are timed in rounds, A B C A B C ..., each round a few
invokes of every plan. A machine that is busier in one part of the measurement slows every plan in
that part alike, so the per-round ratio of two plans is steadier than either plan's rate. The advice
to change the config's plan is given only when the best plan beat it by ``ADVICE_MARGIN`` in every
round (at least ``MIN_ROUNDS`` of them); otherwise the difference is reported as noise.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.detect.model import ModelSpec
from agent.detect.runtime import make_interpreter
from agent.errors import UserError

MAX_ROUNDS = 5  # rounds an --invokes budget is spread over
MIN_ROUNDS = 3  # fewer rounds than this never give advice
ADVICE_MARGIN = 0.10  # the best must be this much faster than the config's in every round


@dataclass(frozen=True)
class Plan:
    """How the detector would run: ``runtime``, ``threads`` per interpreter, ``interpreters`` side by
    side on successive frames, optionally on the Edge TPU ``edgetpu``."""

    runtime: str
    threads: int
    interpreters: int = 1
    edgetpu: str | None = None

    @property
    def key(self) -> tuple[str, int, int]:
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


@dataclass(frozen=True)
class Timing:
    """A plan's timings: the median wall time of one invoke (ms), the invokes timed per interpreter,
    and the rate of each round (invokes per second of all interpreters together)."""

    plan: Plan
    median_ms: float
    invokes: int
    round_rates: tuple[float, ...]

    @property
    def per_second(self) -> float:
        """Invokes per second of all the interpreters together: the median over the rounds."""
        return statistics.median(self.round_rates) if self.round_rates else 0.0

    @property
    def label(self) -> str:
        """The plan's label."""
        return self.plan.label


class PlanRunner:
    """The interpreters of one plan, built, fed one input and warmed up once, then timed round by
    round. Raises ``UserError`` when an interpreter cannot be built or invoked."""

    def __init__(self, spec: ModelSpec, plan: Plan, tensor: NDArray[Any] | None = None) -> None:
        made = [
            make_interpreter(
                str(spec.path),
                spec.file_info,
                runtime=plan.runtime,
                num_threads=plan.threads,
                edgetpu=plan.edgetpu,
            )
            for _ in range(plan.interpreters)
        ]
        self.plan = Plan(made[0][1], plan.threads, plan.interpreters, plan.edgetpu)  # auto resolved
        self.spec = spec
        self._interpreters = [interpreter for interpreter, _ in made]
        detail = self._interpreters[0].get_input_details()[0]
        shape, dtype = tuple(detail["shape"]), detail["dtype"]
        if tensor is None or tuple(tensor.shape) != shape or tensor.dtype != dtype:
            tensor = np.zeros(shape, dtype=dtype)
        self._times_ms: list[float] = []
        self._rates: list[float] = []
        for interpreter in self._interpreters:
            interpreter.set_tensor(detail["index"], tensor)
            self._invoke(interpreter)  # warm-up, untimed

    def _invoke(self, interpreter: Any) -> None:
        try:
            interpreter.invoke()
        except (RuntimeError, ValueError) as exc:
            raise UserError(f"{self.spec.path}: invoke() failed on {self.plan.runtime}: {exc}") from None

    def run_round(self, invokes: int) -> None:
        """``invokes`` timed invokes on each interpreter, all interpreters at the same time."""
        if len(self._interpreters) == 1:
            began = time.perf_counter()
            self._timed(self._interpreters[0], invokes)
            self._rates.append(invokes / max(time.perf_counter() - began, 1e-9))
            return
        errors: list[BaseException] = []
        start_together = threading.Barrier(len(self._interpreters) + 1)

        def loop(interpreter: Any) -> None:
            try:
                start_together.wait()
                self._timed(interpreter, invokes)
            except BaseException as exc:  # surfaced below, in the caller's thread
                errors.append(exc)
                start_together.abort()

        workers = [threading.Thread(target=loop, args=(i,), daemon=True) for i in self._interpreters]
        for worker in workers:
            worker.start()
        with contextlib.suppress(threading.BrokenBarrierError):
            start_together.wait()
        began = time.perf_counter()
        for worker in workers:
            worker.join()
        wall_s = max(time.perf_counter() - began, 1e-9)
        real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
        if real:
            raise real[0] if isinstance(real[0], UserError) else UserError(str(real[0]))
        self._rates.append(invokes * len(self._interpreters) / wall_s)

    def _timed(self, interpreter: Any, invokes: int) -> None:
        times = []
        for _ in range(invokes):
            start = time.perf_counter()
            self._invoke(interpreter)
            times.append((time.perf_counter() - start) * 1000.0)
        self._times_ms.extend(times)  # list.extend is atomic under the GIL

    def timing(self) -> Timing:
        """What the rounds so far measured."""
        invokes = len(self._times_ms) // len(self._interpreters)
        median = statistics.median(self._times_ms) if self._times_ms else 0.0
        return Timing(self.plan, median, invokes, tuple(self._rates))


def rounds_for(invokes: int) -> tuple[int, int]:
    """``(rounds, invokes per round)`` for a budget of ``invokes`` per plan (at least one each)."""
    rounds = max(1, min(invokes, MAX_ROUNDS))
    return rounds, -(-invokes // rounds)


def time_interleaved(runners: Sequence[PlanRunner], invokes: int) -> list[Timing]:
    """Time every runner in rounds, A B C, B C A, C A B, ... (the order turns so that no plan
    always goes first); about ``invokes`` invokes per interpreter in all."""
    rounds, per_round = rounds_for(invokes)
    for r in range(rounds):
        turn = r % len(runners) if runners else 0
        for runner in [*runners[turn:], *runners[:turn]]:
            runner.run_round(per_round)
    return [runner.timing() for runner in runners]


@dataclass(frozen=True)
class Advice:
    """The best plan against the config's: ``ratios`` of their rates round by round (best / config),
    and whether the best was faster by the margin in every round (``sure``)."""

    best: Timing
    current: Timing | None
    ratios: tuple[float, ...]

    @property
    def sure(self) -> bool:
        """True when the best beat the config's plan by ``ADVICE_MARGIN`` in each of at least
        ``MIN_ROUNDS`` rounds: then (and only then) doctor advises a change."""
        return (
            self.current is not None
            and self.best.plan != self.current.plan
            and len(self.ratios) >= MIN_ROUNDS
            and min(self.ratios) >= 1.0 + ADVICE_MARGIN
        )

    def spread(self) -> str:
        """e.g. ``1.32x (1.25-1.41x over 5 interleaved rounds)``."""
        if not self.ratios:
            return "not compared"
        low, mid, high = min(self.ratios), statistics.median(self.ratios), max(self.ratios)
        rounds = f"{len(self.ratios)} interleaved round{'s' if len(self.ratios) != 1 else ''}"
        return f"{mid:.2f}x ({low:.2f}-{high:.2f}x over {rounds})"


def advise(timings: Sequence[Timing], configured: tuple[str, int, int]) -> Advice:
    """The plan with the most invokes per second, and how sure it is to beat the ``configured``
    ``(runtime, interpreters, threads)``."""
    best = max(timings, key=lambda t: t.per_second)
    current = next((t for t in timings if t.plan.key == configured), None)
    ratios: tuple[float, ...] = ()
    if current is not None:
        pairs = zip(best.round_rates, current.round_rates, strict=False)
        ratios = tuple(b / c for b, c in pairs if c > 0)
    return Advice(best, current, ratios)
