"""``Pipeline``: the threads and queues that carry frames from the source through the detectors
to the output stages (see the package docstring)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from agent.config.pipeline import PipelineSettings
from agent.flow import EventBus, Outputs, Stage, check_stage_order
from agent.frames import Frame, FrameResult
from agent.harvest.decision import KeepDecision
from agent.pipeline.contracts import DetectorLike, FrameSourceLike, GateLike, HandledFrame
from agent.pipeline.stats import Counters, log_stats, pipeline_stats
from agent.pipeline.workers import END, InferenceWorker, put_end
from agent.stall import Part, stalled

log = logging.getLogger(__name__)


class Pipeline:
    """Runs one source through one detector (or several copies of it, in parallel on successive
    frames) into the output stages until the source ends or ``stop()`` is called."""

    def __init__(  # noqa: PLR0913 (the collaborators, then keyword-only options with defaults)
        self,
        source: FrameSourceLike,
        detector: DetectorLike | Sequence[DetectorLike],
        stages: Iterable[Stage],
        settings: PipelineSettings,
        *,
        live: bool,
        gate: GateLike | None = None,
        on_result: Callable[[HandledFrame], None] | None = None,
        on_stats: Callable[[dict[str, Any]], None] | None = None,
        detector_factory: Callable[[], DetectorLike] | None = None,
        events: EventBus | None = None,
    ) -> None:
        detectors = list(detector) if isinstance(detector, Sequence) else [detector]
        if not detectors:
            raise ValueError("a pipeline needs at least one detector")
        self.source = source
        self.detector_factory = detector_factory
        self.stages = list(stages)
        check_stage_order(self.stages)
        self.events = events if events is not None else EventBus()
        self.settings = settings
        self.live = live
        self.gate = gate
        self.on_result = on_result
        self.on_stats = on_stats
        self.counters = Counters()
        self.started_monotonic = time.monotonic()
        self._stop = threading.Event()
        self._fatal: BaseException | None = None
        self._capture_q: queue.Queue[Any] = queue.Queue(maxsize=settings.capture_queue)
        self._result_q: queue.Queue[Any] = queue.Queue(maxsize=settings.result_queue)
        self._lock = threading.Lock()
        self._take_lock = threading.Lock()  # taking a frame and numbering it is one step
        self._next_seq = 0  # sequence number of the next frame a worker takes
        self._abandoned: set[int] = set()  # numbers that will never have a result
        self._next_out = 0  # sequence number of the next result the output stages see
        self._reorder_since: float | None = None  # monotonic time results began waiting for an earlier one
        self._workers = [InferenceWorker(i, d) for i, d in enumerate(detectors)]
        self._workers_running = len(self._workers)
        self._output_since: float | None = None  # monotonic start of the result in the output stages
        self._threads: list[threading.Thread] = []

    @property
    def detector(self) -> DetectorLike:
        """The first interpreter's detector (all run the same model)."""
        return self._workers[0].detector

    # ---- control ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the pipeline to finish: the source is closed, queued frames are completed."""
        if not self._stop.is_set():
            log.info("stopping: finishing queued frames")
        self._stop.set()
        try:
            self.source.close()
        except Exception:  # a source that fails to close must not block shutdown
            log.exception("closing the source failed")

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` was called or the source ended."""
        return self._stop.is_set()

    def run(self) -> dict[str, Any]:
        """Run to the end; returns the final stats. Re-raises a fatal error from a worker."""
        capture = threading.Thread(target=self._guard(self._capture_loop), name="capture", daemon=True)
        output = threading.Thread(target=self._guard(self._output_loop), name="output", daemon=True)
        self._threads = [capture, *(self._start_inference(w) for w in self._workers), output]
        capture.start()
        output.start()
        next_stats = time.monotonic() + self.settings.stats_interval_s
        while output.is_alive():
            output.join(timeout=0.2)
            self._check_detectors()
            if time.monotonic() >= next_stats:
                next_stats += self.settings.stats_interval_s
                self._report_stats()
        for thread in self._threads:
            thread.join(timeout=5.0)
        final = self.stats()
        if self._fatal is not None:
            raise self._fatal
        return final

    def _start_inference(self, worker: InferenceWorker) -> threading.Thread:
        generation = worker.generation
        thread = threading.Thread(
            target=self._guard(lambda: self._inference_loop(worker, generation)),
            name=f"inference-{worker.slot}.{generation}",
            daemon=True,
        )
        thread.start()
        return thread

    def _check_detectors(self) -> None:
        """Replace a detector whose inference has run longer than ``inference_timeout_s``."""
        limit = self.settings.inference_timeout_s
        if not limit or self._fatal is not None:
            return
        for worker in self._workers:
            since = worker.since
            if since is None or time.monotonic() - since < limit:
                continue
            if not self._can_restart():
                self._fatal = RuntimeError(
                    f"the detector has been stuck in one inference for over {limit:.0f} s (after "
                    f"{self.counters.detector_restarts} restarts); exiting so the service manager restarts us"
                )
                self.stop()
                put_end(self._result_q)
                return
            held = worker.replace_if_stuck(limit)
            if held is None:
                continue  # it finished in the meantime
            self.counters.detector_restarts += 1
            log.error(
                "inference stuck for over %.0f s: restarting the detector (restart %d of at most %d)",
                limit,
                self.counters.detector_restarts,
                self.settings.max_detector_restarts,
            )
            self.counters.dropped += 1  # the frame the hung detector holds
            if held >= 0:
                self._abandon(held)
            worker.detector = self.detector_factory()  # type: ignore[misc]
            self._threads.append(self._start_inference(worker))

    def _can_restart(self) -> bool:
        return (
            self.detector_factory is not None
            and self.counters.detector_restarts < self.settings.max_detector_restarts
        )

    def progressing(self) -> bool:
        """False when a part of the pipeline has been stuck for ``stall_timeout_s``: the systemd
        watchdog pings stop and systemd restarts the agent (see ``agent.stall``). An idle pipeline
        (waiting for a camera, between samples) is progressing."""
        return not self.stalled_parts()

    def stalled_parts(self) -> list[str]:
        """The parts stuck for ``stall_timeout_s`` or more (empty while the pipeline progresses)."""
        parts = [Part(f"interpreter {w.slot}", w.busy_since) for w in self._workers]
        parts += [Part("output stages", self._output_since), Part("reorder", self._reorder_since)]
        heartbeats = getattr(self.source, "heartbeats", None)
        return stalled(parts, heartbeats, self.settings.stall_timeout_s)

    def _guard(self, loop: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                loop()
            except BaseException as exc:
                if self._fatal is None:
                    self._fatal = exc
                self.stop()
                # unblock the other loops
                for q in (self._capture_q, self._result_q):
                    put_end(q)

        return run

    # ---- the loops ----------------------------------------------------------------------------
    def _capture_loop(self) -> None:
        limit = self.settings.max_frames
        try:
            for frame in self.source:
                if self._stop.is_set():
                    break
                self.counters.captured += 1
                if self.live:
                    self._put_dropping_oldest(frame)
                else:
                    self._put_waiting(self._capture_q, frame, on_wait=self._source_beat)
                if limit and self.counters.captured >= limit:
                    break
        finally:
            self._stop.set()
            self._put_waiting(self._capture_q, END)

    def _put_dropping_oldest(self, frame: Frame) -> None:
        while True:
            try:
                self._capture_q.put_nowait(frame)
                return
            except queue.Full:
                try:
                    self._capture_q.get_nowait()
                    self.counters.dropped += 1
                except queue.Empty:
                    pass

    def _put_waiting(self, q: queue.Queue[Any], item: Any, on_wait: Callable[[], None] | None = None) -> None:
        while True:
            try:
                q.put(item, timeout=0.5)
                return
            except queue.Full:
                if self._fatal is not None:
                    return
                if on_wait is not None:
                    on_wait()  # the capture thread waits for the detector: alive, not stuck

    def _source_beat(self) -> None:
        heartbeats = getattr(self.source, "heartbeats", None)
        if heartbeats is not None:
            heartbeats.beat()

    def _abandon(self, seq: int) -> None:
        """Frame ``seq`` will never have a result: the output loop stops waiting for it."""
        with self._lock:
            if seq >= self._next_out:  # an already skipped number stays out of the set
                self._abandoned.add(seq)

    def _take(self, worker: InferenceWorker, generation: int) -> tuple[int, Any]:
        """The next frame the gate lets through and its sequence number (or ``END``, left in
        place for the other workers). The gate runs here, under the lock, so it sees frames in
        capture order and only those a live source did not drop. While no frame waits, the
        worker's slot counts as idle."""
        while True:
            with self._take_lock:
                try:
                    frame = self._capture_q.get(timeout=0.2)
                except queue.Empty:
                    frame = None
                if frame is END:
                    put_end(self._capture_q)  # never blocks: for the other workers
                    return -1, END
                if frame is not None and self.gate is not None:
                    run_it, _reason = self.gate.should_infer(frame, time.monotonic())
                    if not run_it:
                        self.counters.skipped += 1
                        frame = None
                if frame is not None:
                    seq = self._next_seq
                    self._next_seq += 1
                    return seq, frame
            worker.idle(generation)

    def _inference_loop(self, worker: InferenceWorker, generation: int) -> None:
        errors_in_row = 0
        detector = worker.detector
        while True:
            seq, frame = self._take(worker, generation)
            if frame is END:
                break
            timings: dict[str, float] = {}
            if not worker.start(generation, seq):
                self._abandon(seq)  # replaced between frames: the new thread goes on from the next
                return
            try:
                detections = detector.detect(frame.image, timings)
                errors_in_row = 0
            except Exception as exc:
                self._abandon(seq)
                if not worker.finish(generation):
                    return  # replaced while hung; the frame is already counted as dropped
                self.counters.detector_errors += 1
                errors_in_row += 1
                log.error("detector failed on frame %s: %s", frame.frame_id, exc)
                if errors_in_row >= self.settings.max_consecutive_errors and self._can_restart():
                    # a failing device (an unplugged Coral): open the detector again, or its fallback
                    self.counters.detector_restarts += 1
                    log.error("the detector failed %d times in a row: opening it again", errors_in_row)
                    worker.busy(generation)  # opening and warming it up is not progress
                    detector = worker.detector = self.detector_factory()  # type: ignore[misc]
                    worker.idle(generation)
                    errors_in_row = 0
                elif errors_in_row >= self.settings.max_consecutive_errors:
                    raise RuntimeError(
                        f"the detector failed on {errors_in_row} frames in a row; last error: {exc}"
                    ) from exc
                continue
            if not worker.finish(generation):
                self._abandon(seq)  # hung on this frame and replaced (counted as dropped)
                return
            if frame.full_size is not None:  # decoded at reduced size: boxes in full-frame pixels
                height, width = frame.image.shape[:2]
                detections = detections.scaled(frame.width / width, frame.height / height).clipped(
                    frame.width, frame.height
                )
            result = FrameResult(
                frame=frame,
                detections=detections,
                model=detector.name,
                runtime=detector.runtime,
                inference_ms=timings.get("invoke", 0.0),
                timings_ms=timings,
            )
            self.counters.inference_ms.append(result.inference_ms)
            self._put_waiting(self._result_q, (seq, result))
        with self._lock:
            self._workers_running -= 1
            last = self._workers_running == 0
        if last:
            self._put_waiting(self._result_q, END)

    def _in_order(self, pending: dict[int, FrameResult], *, flush: bool = False) -> Iterator[FrameResult]:
        """Results from ``pending`` that are next in capture order (all of them when ``flush``)."""
        while pending:
            if self._next_out in pending:
                with self._lock:
                    self._abandoned.discard(self._next_out)
                yield pending.pop(self._next_out)
                self._next_out += 1
                continue
            with self._lock:
                skip = self._next_out in self._abandoned
                self._abandoned.discard(self._next_out)
            if skip or flush:  # abandoned, or (at the end) lost with a fatal error
                self._next_out = self._next_out + 1 if skip else max(self._next_out, min(pending))
            else:
                return

    def _output_loop(self) -> None:
        pending: dict[int, FrameResult] = {}  # results that came before an earlier frame's
        try:
            while True:
                try:
                    item = self._result_q.get(timeout=0.2)  # wakes up to see abandoned frames
                except queue.Empty:
                    item = None
                    self._idle()
                if item is END:
                    for result in self._in_order(pending, flush=True):
                        self._handle(result)
                    break
                if item is not None:
                    seq, result = item
                    if seq >= self._next_out:  # a late duplicate of an abandoned frame is ignored
                        pending[seq] = result
                for result in self._in_order(pending):
                    self._handle(result)
                if not pending:
                    self._reorder_since = None
                elif self._reorder_since is None:
                    self._reorder_since = time.monotonic()
        finally:
            self._report_stats()  # the final figures, while the stages can still report them
            # last stage first: the publisher's final acknowledgements still reach the harvest store
            for stage in reversed(self.stages):
                try:
                    stage.close()
                except Exception:
                    log.exception("closing %s failed", stage.name)

    def _handle(self, result: FrameResult) -> None:
        """Run one result through every output stage, then deliver the events they raised."""
        self._output_since = time.monotonic()
        outputs = Outputs()
        stage_ms: dict[str, float] = {}
        for stage in self.stages:
            t0 = time.perf_counter()
            try:
                produced = stage.handle(result, outputs)
                if produced is not None:
                    outputs.add(produced)
            except Exception as exc:
                with self._lock:
                    errors = self.counters.stage_errors
                    errors[stage.name] = errors.get(stage.name, 0) + 1
                log.error("%s failed on frame %s: %s", stage.name, result.frame.frame_id, exc)
            stage_ms[stage.name] = (time.perf_counter() - t0) * 1000.0
        self._deliver_events()
        self.counters.processed += 1
        decision = outputs.find(KeepDecision)
        if decision is not None and decision.keep:
            self.counters.kept += 1
        self.counters.completed_at.append(time.monotonic())
        self._output_since = None
        if self.on_result is not None:
            self.on_result(HandledFrame(result, outputs, stage_ms))

    def _idle(self) -> None:
        """No result for a while: let the stages do their periodic work, deliver events."""
        self._output_since = time.monotonic()  # a stage stuck in its periodic work is a stall too
        for stage in self.stages:
            try:
                stage.tick()
            except Exception:
                log.exception("%s failed in its periodic work", stage.name)
        self._deliver_events()
        self._output_since = None

    def _deliver_events(self) -> None:
        try:
            self.events.deliver(self.stages)
        except Exception:
            log.exception("delivering events failed")

    # ---- stats ----------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters, rates and queue depths now (``agent.pipeline.stats.pipeline_stats``)."""
        return pipeline_stats(
            self.counters,
            started=self.started_monotonic,
            queues=(self._capture_q.qsize(), self._result_q.qsize()),
            source=self.source,
            detector=self.detector,
            stages=self.stages,
        )

    def _report_stats(self) -> None:
        stats = self.stats()
        log_stats(stats, self.stages)
        if self.on_stats is not None:
            try:
                self.on_stats(stats)
            except Exception:
                log.exception("publishing stats failed")
