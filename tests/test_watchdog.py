"""The systemd watchdog tells the truth: pings stop when a part of the pipeline hangs for good, and
go on while the pipeline is merely idle.

Real threads, a real AF_UNIX notify socket standing in for systemd, the real detector and real
sources: a folder of JPEGs, and snapshot and MJPEG cameras served by HTTP servers on 127.0.0.1 that
stop answering halfway (a network read that never returns). The hanging detector and the hanging
output stage are fault injection: a stuck Coral or a hung file system cannot be made on purpose.
Nothing asserts on durations: each test waits (with a deadline) for the pings to be withheld, then
for several more replacement rounds or withheld ticks, and checks that no ping came back.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from agent.commands.run import supervise
from agent.config.detector import DetectorSettings
from agent.config.pipeline import PipelineSettings
from agent.config.source import SourceSettings
from agent.detect.detector import Detector
from agent.flow import Outputs, Stage
from agent.frames import FrameResult
from agent.pipeline import Pipeline
from agent.sdnotify import Watchdog
from agent.sources import open_source
from tests.helpers import serve_on_loopback
from tests.test_run import MODEL, HangingDetector, NotifyListener, make_frames

pytestmark = pytest.mark.timeout(180)

WAIT_S = 60.0  # an upper bound for anything to happen on a busy machine; never a timing assertion
WATCHDOG_USEC = "600000"  # WatchdogSec=0.6: a tick every 0.3 s
STALL = {"stall_timeout_s": 1.0}


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifyListener]:
    notify = NotifyListener()
    monkeypatch.setenv("NOTIFY_SOCKET", notify.path)
    monkeypatch.setenv("WATCHDOG_USEC", WATCHDOG_USEC)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield notify
    notify.close()


class Hang:
    """A switch shared by every detector (or server) of a test: once tripped, each call hangs until
    the test ends (``release``)."""

    def __init__(self) -> None:
        self.tripped = threading.Event()
        self.release = threading.Event()
        self.hung_calls = 0

    def point(self) -> None:
        if self.tripped.is_set():
            self.hung_calls += 1
            self.release.wait(WAIT_S * 2)


class HangsForGood(HangingDetector):
    """The real detector (built and warmed up, as the agent does); from the moment the switch
    trips, every detect never returns (a Coral that hangs hangs every interpreter on it, and every
    replacement opened on it)."""

    def __init__(self, hang: Hang) -> None:
        super().__init__(hang_on=0)
        self.hang = hang

    def detect(self, image: Any, timings: dict[str, float] | None = None) -> Any:
        self.hang.point()
        return self.real.detect(image, timings)


def run_supervised(pipeline: Pipeline, body: Callable[[Watchdog], None]) -> None:
    """Run ``pipeline`` on a thread under ``supervise`` (as ``edge-agent run`` does) while ``body`` runs."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            pipeline.run()
        except BaseException as exc:  # surfaced to the test
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    with supervise(pipeline, check_s=0.1) as watchdog:
        thread.start()
        try:
            body(watchdog)
        finally:
            pipeline.stop()
    thread.join(5)


def pings_then_silence(listener: NotifyListener, watchdog: Watchdog, trip: Callable[[], None]) -> int:
    """Wait for pings while healthy, ``trip`` the hang, wait until a ping is withheld; returns how
    many pings had come by then."""
    wait_until(lambda: len(listener.watchdog_times()) >= 3, "watchdog pings while healthy")
    withheld = watchdog.pings_withheld
    trip()
    wait_until(lambda: watchdog.pings_withheld > withheld, "a withheld ping after the hang")
    time.sleep(0.05)  # the listener thread may still be reading the last ping's datagram
    return len(listener.watchdog_times())


@pytest.mark.parametrize("interpreters", [1, 2])
def test_a_detector_that_hangs_for_good_stops_the_pings_while_replacements_are_built(
    tmp_path: Path, listener: NotifyListener, interpreters: int
) -> None:
    frames = tmp_path / "frames"
    make_frames(frames, 4)
    hang = Hang()
    pipeline = Pipeline(
        open_source(SourceSettings(url=str(frames), loop=True, interval_s=0.05)),
        [HangsForGood(hang) for _ in range(interpreters)],
        [],
        PipelineSettings(inference_timeout_s=0.5, max_detector_restarts=1000, **STALL),
        live=False,
        detector_factory=lambda: HangsForGood(hang),  # a real build and warm-up each time
    )

    def body(watchdog: Watchdog) -> None:
        pings = pings_then_silence(listener, watchdog, hang.tripped.set)
        restarts = pipeline.counters.detector_restarts
        wait_until(
            lambda: pipeline.counters.detector_restarts >= restarts + 3, "three more replacement detectors"
        )
        assert len(listener.watchdog_times()) == pings, "a replacement detector revived the pings"
        hang.release.set()

    try:
        run_supervised(pipeline, body)
    finally:
        hang.release.set()


JPEG = cv2.imencode(".jpg", np.full((48, 64, 3), (0, 128, 255), np.uint8))[1].tobytes()


class Camera:
    """A snapshot URL (``/snapshot``) and an MJPEG stream (``/stream``) on 127.0.0.1 that stop
    answering halfway through an image once ``hang`` trips (the connection stays open)."""

    def __init__(self, hang: Hang) -> None:
        outer = self
        self.hang = hang

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    if self.path == "/snapshot":
                        outer.snapshot(self)
                    else:
                        outer.stream(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server, self.base_url = serve_on_loopback(Handler)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def snapshot(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Content-Length", str(len(JPEG)))
        handler.end_headers()
        if self.hang.tripped.is_set():
            handler.wfile.write(JPEG[:100])
            handler.wfile.flush()
            self.hang.point()
            return
        handler.wfile.write(JPEG)

    def stream(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        handler.end_headers()
        while not self.hang.release.is_set():
            part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(JPEG)
            if self.hang.tripped.is_set():
                handler.wfile.write(part + JPEG[:100])
                handler.wfile.flush()
                self.hang.point()
                return
            handler.wfile.write(part + JPEG + b"\r\n")
            handler.wfile.flush()
            time.sleep(0.05)

    def close(self) -> None:
        self.hang.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def camera() -> Iterator[Camera]:
    served = Camera(Hang())
    yield served
    served.close()


def _camera_pipeline(url: str, interpreters: int, **source: Any) -> Pipeline:
    settings = SourceSettings(url=url, read_timeout_s=600, **source)  # the read itself never times out
    opened = open_source(settings)
    detectors = [Detector(DetectorSettings(model=MODEL)) for _ in range(interpreters)]
    return Pipeline(opened, detectors, [], PipelineSettings(**STALL), live=opened.live)


@pytest.mark.parametrize("interpreters", [1, 2])
@pytest.mark.parametrize("path", ["/snapshot", "/stream"])
def test_a_source_read_that_never_returns_stops_the_pings(
    listener: NotifyListener, camera: Camera, path: str, interpreters: int
) -> None:
    """``/snapshot``: the capture thread itself is stuck in the read; ``/stream``: the MJPEG reader
    thread is, while the capture thread waits for it."""
    pipeline = _camera_pipeline(camera.url(path), interpreters, interval_s=0.1)

    def body(watchdog: Watchdog) -> None:
        pings = pings_then_silence(listener, watchdog, camera.hang.tripped.set)
        withheld = watchdog.pings_withheld
        wait_until(lambda: watchdog.pings_withheld >= withheld + 5, "five more withheld ticks")
        assert len(listener.watchdog_times()) == pings, "the pings came back while the read hung"
        assert any("source thread" in part for part in pipeline.stalled_parts())
        camera.hang.release.set()

    run_supervised(pipeline, body)


def test_a_camera_sampled_less_often_than_the_stall_limit_keeps_the_pings(
    listener: NotifyListener, camera: Camera, monkeypatch: pytest.MonkeyPatch
) -> None:
    """interval_s 2.5 against stall_timeout_s 1: the capture thread waits between samples, beating."""
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # ticks every second: a busy machine misses none
    pipeline = _camera_pipeline(camera.url("/snapshot"), 1, interval_s=2.5)

    def body(watchdog: Watchdog) -> None:
        wait_until(lambda: pipeline.counters.processed >= 3, "three samples, two intervals apart")
        assert watchdog.pings_withheld == 0
        assert watchdog.pings_sent >= 4

    run_supervised(pipeline, body)


class StuckStage(Stage):
    """An output stage that never returns from its third frame (a writer on a hung file system)."""

    name = "stuck"

    def __init__(self, hang: Hang) -> None:
        self.hang = hang
        self.calls = 0

    def handle(self, result: FrameResult, outputs: Outputs) -> None:
        self.calls += 1
        if self.calls >= 3:
            self.hang.tripped.set()
        self.hang.point()


def test_a_stuck_output_stage_stops_the_pings(tmp_path: Path, listener: NotifyListener) -> None:
    frames = tmp_path / "frames"
    make_frames(frames, 4)
    hang = Hang()
    pipeline = Pipeline(
        open_source(SourceSettings(url=str(frames), loop=True, interval_s=0.05)),
        Detector(DetectorSettings(model=MODEL)),
        [StuckStage(hang)],
        PipelineSettings(**STALL),
        live=False,
    )

    def body(watchdog: Watchdog) -> None:
        wait_until(hang.tripped.is_set, "the stage to hang")
        withheld = watchdog.pings_withheld
        wait_until(lambda: watchdog.pings_withheld > withheld, "a withheld ping")
        time.sleep(0.05)
        pings = len(listener.watchdog_times())
        wait_until(lambda: watchdog.pings_withheld >= withheld + 5, "five more withheld ticks")
        assert len(listener.watchdog_times()) == pings
        assert any("output stages" in part for part in pipeline.stalled_parts())
        hang.release.set()

    try:
        run_supervised(pipeline, body)
    finally:
        hang.release.set()
